//! Pipeline configuration: one YAML file, overridden by `BERTFLOW__*` environment variables and
//! by `--set key=value` on the command line (in that order of precedence, lowest first).
//!
//! Every struct denies unknown fields so that a typo fails loudly. Every key is documented in
//! `docs/configuration.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Prefix of environment variables that override configuration keys. Nested keys are separated
/// by a double underscore: `BERTFLOW__BATCHING__MAX_BATCH_SIZE=64` sets `batching.max_batch_size`.
pub const ENV_PREFIX: &str = "BERTFLOW__";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where records come from.
    pub source: SourceConfig,
    /// Which enrichments to compute.
    pub tasks: TasksConfig,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where results go.
    pub sink: SinkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The operator endpoint: Prometheus `/metrics`, `/health`, `/ready`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve the endpoint. Default: on for streaming (Kafka) sources, off for batch jobs.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Address to listen on; `127.0.0.1` keeps it off the network, `0.0.0.0:9464` exposes it
    /// (e.g. to a Prometheus scraper in Kubernetes). Port 0 picks a free port (logged).
    /// Default: [`DEFAULT_METRICS_LISTEN`]; when that address is taken (several workers on one
    /// host) the worker runs without the endpoint and says so, while an address given here that
    /// cannot be bound stops it.
    #[serde(default)]
    pub listen: Option<String>,
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

// ------------------------------------------------------------------------------------ source

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub parquet: Option<ParquetSourceConfig>,
    pub kafka: Option<KafkaSourceConfig>,
}

/// How a Kafka record's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// The whole value is the text (UTF-8).
    Text,
    /// The value is a JSON object; `json` says where the id, text and question are.
    Json,
}

/// Where the fields of a JSON value are: dotted paths (`doc.body`) or JSON pointers (`/doc/body`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFields {
    #[serde(default = "default_text_column")]
    pub text: String,
    /// Record id; when absent the id is `topic/partition/offset`.
    #[serde(default)]
    pub id: Option<String>,
    /// Question for question answering (with `tasks.qa.question_column`).
    #[serde(default)]
    pub question: Option<String>,
}

impl Default for JsonFields {
    fn default() -> Self {
        JsonFields {
            text: default_text_column(),
            id: None,
            question: None,
        }
    }
}

/// Where a new consumer group starts reading a partition with no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topics to consume; an entry starting with `^` is a regular expression.
    pub topics: Vec<String>,
    /// Consumer group: workers with the same group share the partitions.
    pub group_id: String,
    #[serde(default = "default_value_format")]
    pub format: ValueFormat,
    #[serde(default)]
    pub json: JsonFields,
    #[serde(default = "default_start_from")]
    pub start_from: StartFrom,
    /// A micro-batch closes after this long even when it is not full.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// On a rebalance, how long to wait for in-flight records of the revoked partitions to
    /// become durable (and be committed) before giving the partitions up.
    #[serde(default = "default_revoke_wait_ms")]
    pub revoke_wait_ms: u64,
    /// Larger values go to the error output instead of the model.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Any librdkafka consumer property (`security.protocol`, `sasl.*`, `ssl.*`, ...). Values of
    /// keys that look secret are never logged.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_value_format() -> ValueFormat {
    ValueFormat::Text
}
fn default_start_from() -> StartFrom {
    StartFrom::Earliest
}
fn default_max_wait_ms() -> u64 {
    500
}
fn default_revoke_wait_ms() -> u64 {
    10_000
}
fn default_max_value_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// A Parquet file, a glob (`data/*.parquet`) or a directory (every `*.parquet` inside).
    pub path: String,
    /// Column holding the text to enrich.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column holding the record id. When absent, the id is the row number (0-based, counted
    /// across all input files in name order).
    #[serde(default)]
    pub id_column: Option<String>,
    /// `i/N`: this worker reads only shard i (0-based) of N: the input files whose position in
    /// name order is i modulo N. Also `--shard i/N`.
    #[serde(default)]
    pub shard: Option<String>,
}

/// One of `count` workers of a sharded batch job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            Error::config(format!(
                "shard '{s}': write i/N with 0 <= i < N, e.g. 0/4 (in a Kubernetes Indexed Job: $JOB_COMPLETION_INDEX/N)"
            ))
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The output path of this shard: `{shard}` in `path` becomes the index; without it, a
    /// file gets `.shard-i-of-N` before its extension and a directory a `shard-i-of-N`
    /// subdirectory, so that shards never write to the same place.
    pub fn path(&self, path: &Path, is_dir: bool) -> PathBuf {
        let s = path.to_string_lossy();
        if s.contains("{shard}") {
            return PathBuf::from(s.replace("{shard}", &self.index.to_string()));
        }
        let tag = format!("shard-{}-of-{}", self.index, self.count);
        if is_dir {
            return path.join(tag);
        }
        let stem = path
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_default();
        match path.extension() {
            Some(ext) => path.with_file_name(format!("{stem}.{tag}.{}", ext.to_string_lossy())),
            None => path.with_file_name(format!("{stem}.{tag}")),
        }
    }
}

fn default_text_column() -> String {
    "text".into()
}

// ------------------------------------------------------------------------------------ tasks

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    #[serde(default)]
    pub embed: OneOrMany<EmbedConfig>,
    #[serde(default)]
    pub sentiment: OneOrMany<SentimentConfig>,
    #[serde(default)]
    pub ner: OneOrMany<NerConfig>,
    #[serde(default)]
    pub qa: OneOrMany<QaConfig>,
}

impl TasksConfig {
    pub fn is_empty(&self) -> bool {
        self.embed.is_empty()
            && self.sentiment.is_empty()
            && self.ner.is_empty()
            && self.qa.is_empty()
    }
}

/// A task configured once (a mapping) or several times with different models (a list); each
/// instance needs its own output column names.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn first(&self) -> Option<&T> {
        self.0.first()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a task mapping, a list of them, or null")
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(OneOrMany(Vec::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(OneOrMany(Vec::new()))
            }
            fn visit_some<D2: serde::Deserializer<'de>>(
                self,
                d: D2,
            ) -> std::result::Result<Self::Value, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| OneOrMany(vec![t]))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// How sequence-classification logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassFunction {
    /// As transformers chooses: `problem_type` regression -> none; multi-label or one label ->
    /// sigmoid; otherwise softmax.
    Auto,
    Softmax,
    Sigmoid,
    None,
}

/// How many label scores the sentiment task writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TopK {
    Count(usize),
    All(AllLabels),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllLabels {
    All,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SentimentConfig {
    /// Model directory with a sequence-classification head.
    pub model: PathBuf,
    /// Skip this task, with a warning, when the model directory does not exist.
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "default_class_function")]
    pub function: ClassFunction,
    /// `1`: label and score of the best class. `all` or a number k: also the list of the k best
    /// labels with their scores, best first.
    #[serde(default = "default_top_k")]
    pub top_k: TopK,
    /// Tokens per input; longer inputs are truncated and counted. Default: the tokenizer's
    /// `model_max_length`, else the model's position limit (at most 512).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Output columns are `<prefix>_label`, `<prefix>_score` (and `<prefix>_scores`).
    #[serde(default = "default_sentiment_prefix")]
    pub column_prefix: String,
}

fn default_class_function() -> ClassFunction {
    ClassFunction::Auto
}
fn default_top_k() -> TopK {
    TopK::Count(1)
}
fn default_sentiment_prefix() -> String {
    "sentiment".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    None,
    Simple,
    First,
    Average,
    Max,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NerConfig {
    /// Model directory with a token-classification head.
    pub model: PathBuf,
    /// Skip this task, with a warning, when the model directory does not exist.
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "default_aggregation")]
    pub aggregation: Aggregation,
    /// Labels (or entity groups) left out of the output.
    #[serde(default = "default_ignore_labels")]
    pub ignore_labels: Vec<String>,
    /// Tokens per window. Default: the tokenizer's `model_max_length`, else the model's position
    /// limit (at most 512).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Overlap, in tokens, of consecutive windows over a text longer than `max_length`.
    /// Default (unset): a quarter of `max_length`. 0: no windows, the text is truncated.
    #[serde(default)]
    pub stride: Option<usize>,
    #[serde(default = "default_entities_column")]
    pub column: String,
}

fn default_aggregation() -> Aggregation {
    Aggregation::Simple
}
fn default_ignore_labels() -> Vec<String> {
    vec!["O".into()]
}
fn default_entities_column() -> String {
    "entities".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QaConfig {
    /// Model directory with a question-answering head.
    pub model: PathBuf,
    /// Skip this task, with a warning, when the model directory does not exist.
    #[serde(default)]
    pub optional: bool,
    /// Questions asked of every record's text (the context).
    #[serde(default)]
    pub questions: Vec<String>,
    /// Input column holding a question per record (asked in addition to `questions`).
    #[serde(default)]
    pub question_column: Option<String>,
    /// Answers per question, best first.
    #[serde(default = "default_qa_top_k")]
    pub top_k: usize,
    /// Tokens per window (question + context + special tokens). Default: min(384,
    /// the tokenizer's `model_max_length`).
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    /// Overlap, in tokens, of consecutive context windows. Default: min(max_seq_len / 2, 128).
    #[serde(default)]
    pub doc_stride: Option<usize>,
    /// Questions longer than this many tokens are cut.
    #[serde(default = "default_max_question_len")]
    pub max_question_len: usize,
    /// Longest answer, in tokens.
    #[serde(default = "default_max_answer_len")]
    pub max_answer_len: usize,
    /// Also score "no answer" (empty answer at 0..0) and rank it with the others.
    #[serde(default)]
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words.
    #[serde(default = "default_true")]
    pub align_to_words: bool,
    #[serde(default = "default_answers_column")]
    pub column: String,
}

fn default_qa_top_k() -> usize {
    1
}
fn default_max_question_len() -> usize {
    64
}
fn default_max_answer_len() -> usize {
    15
}
fn default_true() -> bool {
    true
}
fn default_answers_column() -> String {
    "answers".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    /// Read `1_Pooling/config.json` (sentence-transformers layout); `mean` when absent.
    Auto,
    Mean,
    Cls,
    Max,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, optional
    /// `config.json`, `1_Pooling/config.json`, `sentence_bert_config.json`, `modules.json`.
    pub model: PathBuf,
    /// Skip this task, with a warning, when the model directory does not exist.
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "default_pooling")]
    pub pooling: PoolingMode,
    /// L2-normalise the embedding. Default: true when the model's `modules.json` has a
    /// Normalize module, else false.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Maximum tokens per input (special tokens included); longer inputs are truncated and counted.
    /// Default: `max_seq_length` of `sentence_bert_config.json`, else the model's position limit
    /// (at most 512).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Name of the output column.
    #[serde(default = "default_embedding_column")]
    pub column: String,
}

fn default_pooling() -> PoolingMode {
    PoolingMode::Auto
}
fn default_embedding_column() -> String {
    "embedding".into()
}

// ------------------------------------------------------------------------------------ batching

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most sequences in one model call.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Most padded tokens (sequences x longest length) in one model call.
    #[serde(default = "default_max_batch_tokens")]
    pub max_batch_tokens: usize,
    /// Records sorted by length together before batches are cut; output order is restored.
    #[serde(default = "default_window_records")]
    pub window_records: usize,
    /// Windows buffered between stages (bounds memory).
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
}

// Measured on CPU (docs/benchmarks.md): small batches keep activations in cache and peak
// memory low; raise both for GPUs.
fn default_max_batch_size() -> usize {
    16
}
fn default_max_batch_tokens() -> usize {
    2048
}
fn default_window_records() -> usize {
    2048
}
fn default_queue_depth() -> usize {
    2
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_size: default_max_batch_size(),
            max_batch_tokens: default_max_batch_tokens(),
            window_records: default_window_records(),
            queue_depth: default_queue_depth(),
        }
    }
}

// ------------------------------------------------------------------------------------ runtime

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Fail when the requested execution provider cannot be used.
    None,
    /// Run on CPU, with a warning and a note in the summary, when CUDA cannot be used.
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    All,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default = "default_ep")]
    pub execution_provider: ExecutionProvider,
    #[serde(default = "default_fallback")]
    pub fallback: Fallback,
    /// CUDA device ordinal.
    #[serde(default)]
    pub device_id: i32,
    /// Threads inside one operator; 0 = ONNX Runtime's default (one per physical core).
    #[serde(default)]
    pub intra_op_threads: usize,
    /// Threads across independent operators; 0 = ONNX Runtime's default.
    #[serde(default)]
    pub inter_op_threads: usize,
    #[serde(default = "default_graph_opt")]
    pub graph_optimization_level: GraphOptimization,
    /// Path of `libonnxruntime.so`; see `bertflow --help` for the search order when unset.
    #[serde(default)]
    pub ort_lib: Option<PathBuf>,
}

fn default_ep() -> ExecutionProvider {
    ExecutionProvider::Cpu
}
fn default_fallback() -> Fallback {
    Fallback::None
}
fn default_graph_opt() -> GraphOptimization {
    GraphOptimization::All
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            execution_provider: default_ep(),
            fallback: default_fallback(),
            device_id: 0,
            intra_op_threads: 0,
            inter_op_threads: 0,
            graph_optimization_level: default_graph_opt(),
            ort_lib: None,
        }
    }
}

// ------------------------------------------------------------------------------------ sink

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub parquet: Option<ParquetSinkConfig>,
    pub kafka: Option<KafkaSinkConfig>,
    /// Input columns copied to the output unchanged.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Where records that could not be processed go.
    #[serde(default)]
    pub errors: Option<ErrorSinkConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Snappy,
    Zstd,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Output file. With `rows_per_file`, a directory that receives `part-00000.parquet`, ...
    pub path: PathBuf,
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Start a new file after this many rows (the path is then a directory).
    #[serde(default)]
    pub rows_per_file: Option<usize>,
    /// Rows per Parquet row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Streaming sources only: close the open files after this long, so that their records
    /// become durable and their offsets are committed even when traffic is low.
    #[serde(default = "default_roll_interval_ms")]
    pub roll_interval_ms: u64,
    /// Streaming sources only: close the open files once they hold about this many bytes.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
}

fn default_roll_interval_ms() -> u64 {
    10_000
}

/// How results are encoded in Kafka messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaOutputFormat {
    /// One JSON object per input record (docs/schema.md).
    Json,
    /// One Arrow IPC stream per micro-batch.
    Arrow,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Default: the source's `bootstrap_servers`.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    pub topic: String,
    #[serde(default = "default_kafka_output_format")]
    pub format: KafkaOutputFormat,
    /// Consume-transform-produce in Kafka transactions: read_committed consumers of the output
    /// see each input record exactly once. Needs a Kafka source and `sink.errors.topic`.
    #[serde(default)]
    pub exactly_once: bool,
    /// Transactional id of this worker instance (exactly-once); stable across restarts so that a
    /// restarted worker fences its previous incarnation. Default: `bertflow-<group_id>-<host name>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Any librdkafka producer property. Values of keys that look secret are never logged.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_kafka_output_format() -> KafkaOutputFormat {
    KafkaOutputFormat::Json
}

fn default_compression() -> Compression {
    Compression::Zstd
}
fn default_row_group_rows() -> usize {
    8192
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorSinkConfig {
    /// Parquet file (a directory for streaming sources) receiving one row per failed record.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Dead-letter topic: one message per failed record with the original key, value and headers
    /// plus the reason (Kafka sources).
    #[serde(default)]
    pub topic: Option<String>,
}

// ------------------------------------------------------------------------------------ loading

impl PipelineConfig {
    /// Load a pipeline file, apply `BERTFLOW__*` environment overrides, then `--set` overrides.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
            path: path.to_path_buf(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| env_key(&k).map(|key| (key, v)))
            .collect();
        Self::from_yaml_str(&text, &env, overrides).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parse YAML text and apply overrides (`env` first, then `overrides`), each `key.path=value`
    /// with the value read as YAML (so `64`, `true`, `[a, b]` and `null` keep their types).
    pub fn from_yaml_str(
        text: &str,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Self> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml));
        for (key, value) in env.iter().chain(overrides) {
            let value = yaml_to_config(parse_override_value(key, value)?);
            builder = builder
                .set_override(key.as_str(), value)
                .map_err(|e| Error::config(format!("override {key}: {e}")))?;
        }
        let cfg = builder.build().map_err(|e| Error::config(e.to_string()))?;
        let parsed: PipelineConfig = cfg.try_deserialize().map_err(|e| {
            Error::config(format!(
                "{e} (see docs/configuration.md for every key and its type)"
            ))
        })?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.source.parquet.is_some() == self.source.kafka.is_some() {
            return Err(Error::config(
                "source: configure exactly one source, e.g. `source: {parquet: {path: data.parquet}}` or `source: {kafka: {bootstrap_servers: ..., topics: [...], group_id: ...}}`",
            ));
        }
        if self.tasks.is_empty() {
            return Err(Error::config(
                "tasks: configure at least one task, e.g. `tasks: {embed: {model: models/all-MiniLM-L6-v2}}`",
            ));
        }
        if self.sink.parquet.is_some() == self.sink.kafka.is_some() {
            return Err(Error::config(
                "sink: configure exactly one sink, e.g. `sink: {parquet: {path: out.parquet}}` or `sink: {kafka: {topic: enriched}}`",
            ));
        }
        if let Some(e) = &self.sink.errors {
            if e.path.is_some() == e.topic.is_some() {
                return Err(Error::config(
                    "sink.errors: give either `path` (error Parquet) or `topic` (dead-letter topic)",
                ));
            }
            if e.topic.is_some() && self.source.kafka.is_none() {
                return Err(Error::config(
                    "sink.errors.topic needs a Kafka source (its brokers receive the dead letters); use sink.errors.path with a Parquet source",
                ));
            }
        }
        if let Some(s) = self.source.parquet.as_ref().and_then(|p| p.shard.as_ref()) {
            Shard::parse(s)?;
        }
        if let Some(k) = &self.source.kafka {
            if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
                return Err(Error::config(
                    "source.kafka.topics: give at least one topic name (or a regex starting with ^)",
                ));
            }
            if k.format == ValueFormat::Json && k.json.text.trim().is_empty() {
                return Err(Error::config("source.kafka.json.text must name a field"));
            }
        }
        if let Some(k) = &self.sink.kafka {
            if self.source.kafka.is_none() && k.bootstrap_servers.is_none() {
                return Err(Error::config(
                    "sink.kafka.bootstrap_servers is required when the source is not Kafka",
                ));
            }
            if k.exactly_once {
                if self.source.kafka.is_none() {
                    return Err(Error::config(
                        "sink.kafka.exactly_once needs a Kafka source (offsets are committed in the output transaction)",
                    ));
                }
                if self
                    .sink
                    .errors
                    .as_ref()
                    .and_then(|e| e.topic.as_ref())
                    .is_none()
                {
                    return Err(Error::config(
                        "sink.kafka.exactly_once needs `sink.errors.topic`: dead letters must be written in the same transaction as the results",
                    ));
                }
            }
        }
        let b = &self.batching;
        if b.max_batch_size == 0 || b.max_batch_tokens == 0 || b.window_records == 0 {
            return Err(Error::config(
                "batching: max_batch_size, max_batch_tokens and window_records must be at least 1",
            ));
        }
        if b.queue_depth == 0 {
            return Err(Error::config("batching.queue_depth must be at least 1"));
        }
        if let Some(p) = &self.sink.parquet {
            if p.rows_per_file == Some(0) || p.row_group_rows == 0 {
                return Err(Error::config(
                    "sink.parquet: rows_per_file and row_group_rows must be at least 1",
                ));
            }
        }
        for s in self.tasks.sentiment.iter() {
            if s.top_k == TopK::Count(0) {
                return Err(Error::config(
                    "tasks.sentiment.top_k must be at least 1, or `all`",
                ));
            }
        }
        for n in self.tasks.ner.iter() {
            if let (Some(m), Some(st)) = (n.max_length, n.stride) {
                if st > 0 && st + 4 >= m {
                    return Err(Error::config(format!(
                        "tasks.ner.stride ({st}) must be well below max_length ({m})"
                    )));
                }
            }
        }
        if self.tasks.qa.0.len() > 1 {
            return Err(Error::config(
                "tasks.qa: configure one question-answering task",
            ));
        }
        for q in self.tasks.qa.iter() {
            if q.questions.is_empty() && q.question_column.is_none() {
                return Err(Error::config(
                    "tasks.qa: give `questions` (asked of every record) or `question_column`",
                ));
            }
            if q.top_k == 0 || q.max_answer_len == 0 || q.max_question_len == 0 {
                return Err(Error::config(
                    "tasks.qa: top_k, max_answer_len and max_question_len must be at least 1",
                ));
            }
            if let (Some(m), Some(d)) = (q.max_seq_len, q.doc_stride) {
                if d > m {
                    return Err(Error::config(format!(
                        "tasks.qa.doc_stride ({d}) is larger than max_seq_len ({m})"
                    )));
                }
            }
        }
        for e in self.tasks.embed.iter() {
            if e.max_length == Some(0) || e.max_length.is_some_and(|m| m < 2) {
                return Err(Error::config(
                    "tasks.embed.max_length must be at least 2 (room for the special tokens)",
                ));
            }
        }
        Ok(())
    }
}

/// `BERTFLOW__BATCHING__MAX_BATCH_SIZE` -> `batching.max_batch_size`.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// Parse a `key=value` argument of `--set`.
pub fn parse_set_arg(arg: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("'{arg}' is not of the form key.path=value"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("'{arg}' has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_override_value(key: &str, value: &str) -> Result<serde_yaml::Value> {
    if value.trim().is_empty() {
        return Ok(serde_yaml::Value::String(value.to_string()));
    }
    serde_yaml::from_str(value)
        .map_err(|e| Error::config(format!("override {key}={value}: not a valid value: {e}")))
}

fn yaml_to_config(v: serde_yaml::Value) -> config::Value {
    use config::{Value, ValueKind};
    let kind = match v {
        serde_yaml::Value::Null => ValueKind::Nil,
        serde_yaml::Value::Bool(b) => ValueKind::Boolean(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ValueKind::I64(i)
            } else if let Some(u) = n.as_u64() {
                ValueKind::U64(u)
            } else {
                ValueKind::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_yaml::Value::String(s) => ValueKind::String(s),
        serde_yaml::Value::Sequence(items) => {
            ValueKind::Array(items.into_iter().map(yaml_to_config).collect())
        }
        serde_yaml::Value::Mapping(m) => ValueKind::Table(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        serde_yaml::Value::String(s) => s,
                        other => serde_yaml::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, yaml_to_config(v))
                })
                .collect(),
        ),
        serde_yaml::Value::Tagged(t) => return yaml_to_config(t.value),
    };
    Value::new(None, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
source:
  parquet:
    path: in.parquet
tasks:
  embed:
    model: models/all-MiniLM-L6-v2
sink:
  parquet:
    path: out.parquet
"#;

    #[test]
    fn defaults_apply() {
        let c = PipelineConfig::from_yaml_str(BASE, &[], &[]).unwrap();
        assert_eq!(c.batching.max_batch_size, 16);
        assert_eq!(c.source.parquet.as_ref().unwrap().text_column, "text");
        assert_eq!(c.runtime.execution_provider, ExecutionProvider::Cpu);
        assert_eq!(c.tasks.embed.first().unwrap().pooling, PoolingMode::Auto);
        assert_eq!(
            c.sink.parquet.as_ref().unwrap().compression,
            Compression::Zstd
        );
    }

    #[test]
    fn unknown_key_is_an_error() {
        let text = BASE.replace(
            "path: in.parquet",
            "path: in.parquet\n    txet_column: body",
        );
        let err = PipelineConfig::from_yaml_str(&text, &[], &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("txet_column"), "{msg}");
    }

    #[test]
    fn overrides_keep_types_and_env_comes_first() {
        let env = vec![("batching.max_batch_size".to_string(), "8".to_string())];
        let sets = vec![
            ("batching.max_batch_size".to_string(), "16".to_string()),
            ("sink.passthrough".to_string(), "[title, url]".to_string()),
            ("runtime.execution_provider".to_string(), "cuda".to_string()),
        ];
        let c = PipelineConfig::from_yaml_str(BASE, &env, &sets).unwrap();
        assert_eq!(c.batching.max_batch_size, 16);
        assert_eq!(c.sink.passthrough, vec!["title", "url"]);
        assert_eq!(c.runtime.execution_provider, ExecutionProvider::Cuda);

        let c = PipelineConfig::from_yaml_str(BASE, &env, &[]).unwrap();
        assert_eq!(c.batching.max_batch_size, 8);
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let sets = vec![("tasks.embed.pooling".to_string(), "median".to_string())];
        let err = PipelineConfig::from_yaml_str(BASE, &[], &sets).unwrap_err();
        assert!(err.to_string().contains("median"), "{err}");
    }

    #[test]
    fn tasks_take_one_or_many_and_null() {
        let text = BASE.replace(
            "tasks:\n  embed:\n    model: models/all-MiniLM-L6-v2\n",
            "tasks:\n  ner:\n    - {model: a, column: entities}\n    - {model: b, column: pii}\n  embed: null\n",
        );
        let c = PipelineConfig::from_yaml_str(&text, &[], &[]).unwrap();
        assert_eq!(c.tasks.ner.0.len(), 2);
        assert!(c.tasks.embed.is_empty());
        // A typo inside a list entry is still named.
        let bad = text.replace("column: pii", "colunm: pii");
        let err = PipelineConfig::from_yaml_str(&bad, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("colunm"), "{err}");
        // A task can be removed by an override.
        let sets = vec![("tasks.ner".to_string(), "null".to_string())];
        let err = PipelineConfig::from_yaml_str(&text, &[], &sets).unwrap_err();
        assert!(err.to_string().contains("at least one task"), "{err}");
    }

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(
            env_key("BERTFLOW__BATCHING__MAX_BATCH_SIZE").as_deref(),
            Some("batching.max_batch_size")
        );
        assert_eq!(env_key("BERTFLOW_CACHE"), None);
        assert_eq!(env_key("PATH"), None);
    }

    #[test]
    fn set_arg_parsing() {
        assert_eq!(
            parse_set_arg("a.b=c=d").unwrap(),
            ("a.b".to_string(), "c=d".to_string())
        );
        assert!(parse_set_arg("novalue").is_err());
    }

    #[test]
    fn missing_task_is_explained() {
        let text = BASE.replace("  embed:\n    model: models/all-MiniLM-L6-v2\n", "  {}\n");
        let err = PipelineConfig::from_yaml_str(&text, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("at least one task"), "{err}");
    }
}
