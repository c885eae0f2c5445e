//! Configuration of the tasks: `tasks.embed`, `tasks.sentiment`, `tasks.ner`, `tasks.qa`,
//! `tasks.zero_shot`, `tasks.cross_encoder`, `tasks.sparse`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::record::TextColumnRequest;

mod pairs;
mod sparse;

pub use pairs::{Activation, CrossEncoderConfig, ZeroShotConfig};
pub use sparse::{SparseConfig, SpladeActivation, SpladePoolingMode};

/// At least one task. Each task key takes one mapping, or a list of mappings to run the same kind
/// of task with several models (give each its own output column), or `null` (to remove it with an
/// override, e.g. `--set tasks.qa=null`). Semantics of each task: [tasks.md](tasks.md).
///
/// A model whose head does not fit the task (e.g. a token classifier configured as `sentiment`) or
/// whose `id2label` disagrees with its output width is refused at start-up.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
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
    #[serde(default)]
    pub zero_shot: OneOrMany<ZeroShotConfig>,
    #[serde(default)]
    pub cross_encoder: OneOrMany<CrossEncoderConfig>,
    #[serde(default)]
    pub sparse: OneOrMany<SparseConfig>,
}

/// One configured task instance: what the pipeline asks of every task's configuration, and
/// how it becomes a [`Task`](crate::task::Task). Each task's configuration implements it beside
/// its task; [`TasksConfig::all`] lists the instances.
pub trait TaskSpec: std::fmt::Debug + Send + Sync {
    /// The task's name in the configuration (`embed`, `sentiment`, ...).
    fn kind(&self) -> &'static str;

    fn model(&self) -> &std::path::Path;

    fn precision(&self) -> crate::model::Precision;

    /// Skip the task (with a warning) when its model is missing.
    fn optional(&self) -> bool;

    /// Input columns read beside the record's text (e.g. a question column).
    fn text_columns(&self) -> Vec<TextColumnRequest> {
        Vec::new()
    }

    /// Checks of the task's settings against its model folder that need no session (lengths the
    /// folder's configuration gives); `validate` and `run` both make them before any model loads.
    fn preflight(&self, _dir: &crate::model::ModelDir) -> crate::error::Result<()> {
        Ok(())
    }

    /// Model inputs one record becomes, as far as the configuration says (pair tasks: one per
    /// fixed label or query, one more for a column); a window of `batching.window_records`
    /// records is cut so that it holds about that many model inputs.
    fn inputs_per_record(&self) -> usize {
        1
    }

    /// The column of passages this task writes (chunked embeddings), which sinks that store one
    /// row per passage flatten.
    fn passages_column(&self) -> Option<String> {
        None
    }

    /// Build the task from its model directory and loaded session.
    fn load(
        &self,
        dir: &crate::model::ModelDir,
        model: &crate::model::OnnxModel,
    ) -> crate::error::Result<std::sync::Arc<dyn crate::task::Task>>;
}

/// A task's configuration with the keys every task has first: `model` and `precision` (each
/// with the task's own documentation, given before the bare names) and `optional`, then the
/// task's own keys. [`task_spec_basics`] reads them for [`TaskSpec`].
macro_rules! task_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(#[$model_doc:meta])*
            model,
            $(#[$precision_doc:meta])*
            precision,
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $(#[$model_doc])*
            pub model: std::path::PathBuf,
            /// When the model directory does not exist, skip the task with a warning and a
            /// `skipped` line in the summary instead of failing.
            ///
            /// Default: `false`
            #[serde(default)]
            pub optional: bool,
            $(#[$precision_doc])*
            #[serde(default)]
            pub precision: crate::model::Precision,
            $($(#[$field_meta])* pub $field: $ty,)*
        }
    };
}
pub(crate) use task_config;

/// The fields every task configuration has, read through [`TaskSpec`].
macro_rules! task_spec_basics {
    ($kind:literal) => {
        fn kind(&self) -> &'static str {
            $kind
        }
        fn model(&self) -> &std::path::Path {
            &self.model
        }
        fn precision(&self) -> crate::model::Precision {
            self.precision
        }
        fn optional(&self) -> bool {
            self.optional
        }
    };
}
pub(crate) use task_spec_basics;

impl TasksConfig {
    /// Every task instance, in output order: embed, sentiment, ner, qa, zero_shot,
    /// cross_encoder, sparse (the task registry: a new task adds its key above and one line here).
    pub fn all(&self) -> Vec<&dyn TaskSpec> {
        let mut v: Vec<&dyn TaskSpec> = Vec::new();
        v.extend(self.embed.iter().map(|c| c as &dyn TaskSpec));
        v.extend(self.sentiment.iter().map(|c| c as &dyn TaskSpec));
        v.extend(self.ner.iter().map(|c| c as &dyn TaskSpec));
        v.extend(self.qa.iter().map(|c| c as &dyn TaskSpec));
        v.extend(self.zero_shot.iter().map(|c| c as &dyn TaskSpec));
        v.extend(self.cross_encoder.iter().map(|c| c as &dyn TaskSpec));
        v.extend(self.sparse.iter().map(|c| c as &dyn TaskSpec));
        v
    }

    pub fn is_empty(&self) -> bool {
        self.all().is_empty()
    }

    /// Records per window for `window_records` model inputs: fewer when a pair task turns each
    /// record into many inputs, so that memory stays bounded whatever the number of labels.
    pub fn window_records(&self, window_inputs: usize) -> usize {
        let per_record = self
            .all()
            .iter()
            .map(|t| t.inputs_per_record())
            .max()
            .unwrap_or(1)
            .max(1);
        (window_inputs / per_record).max(1)
    }
}

/// A task configured once (a mapping) or several times with different models (a list); each
/// instance needs its own output column names.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T: schemars::JsonSchema> schemars::JsonSchema for OneOrMany<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let one = generator.subschema_for::<T>();
        schemars::json_schema!({
            "anyOf": [one, {"type": "array", "items": one}, {"type": "null"}]
        })
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TopK {
    Count(usize),
    All(AllLabels),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllLabels {
    All,
}

crate::task::config::task_config! {
/// Text classification (transformers' `text-classification` pipeline).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SentimentConfig {
    /// Model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, `config.json`
    /// (labels, positions), optional `tokenizer_config.json` / `special_tokens_map.json` (special
    /// tokens, `model_max_length`).
    ///
    /// Type: path
    model,
    /// Numeric precision of the model: `fp32` (the exported graph, or its fused form once
    /// `bertflow models optimize DIR --precision fp32` made it), `int8`, `fp16` or `bf16` (variants
    /// made by `bertflow models optimize DIR --precision P`, which measures each against fp32 and
    /// refuses one below its quality threshold). See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// `auto` as transformers: regression → none, multi-label or one label → sigmoid, else softmax.
    #[serde(default = "default_class_function")]
    pub function: ClassFunction,
    /// `1`: label and score only. k > 1 or `all`: also `<prefix>_scores`, the k best labels with
    /// scores, best first.
    ///
    /// Type: int or `all`
    #[serde(default = "default_top_k")]
    pub top_k: TopK,
    /// Tokens per input; longer inputs are truncated and counted. Default: `model_max_length` of
    /// `tokenizer_config.json`, capped by the model's positions (512 when unknown).
    ///
    /// Default: from model
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Output columns `<prefix>_label`, `<prefix>_score`, `<prefix>_scores`.
    #[serde(default = "default_sentiment_prefix")]
    pub column_prefix: String,
}
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    None,
    Simple,
    First,
    Average,
    Max,
}

crate::task::config::task_config! {
/// Named entities (transformers' `token-classification` pipeline).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NerConfig {
    /// Model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, `config.json`
    /// (labels, positions), optional `tokenizer_config.json` / `special_tokens_map.json` (special
    /// tokens, `model_max_length`).
    ///
    /// Type: path
    model,
    /// Numeric precision of the model: `fp32` (the exported graph, or its fused form once
    /// `bertflow models optimize DIR --precision fp32` made it), `int8`, `fp16` or `bf16` (variants
    /// made by `bertflow models optimize DIR --precision P`, which measures each against fp32 and
    /// refuses one below its quality threshold). See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// How tokens become entities (see tasks.md).
    #[serde(default = "default_aggregation")]
    pub aggregation: Aggregation,
    /// Labels / entity groups left out.
    #[serde(default = "default_ignore_labels")]
    pub ignore_labels: Vec<String>,
    /// Tokens per window (as for sentiment).
    ///
    /// Default: from model
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Overlap of consecutive windows over a longer text. `0`: no windows, the text is truncated
    /// (transformers' default).
    ///
    /// Default: `max_length / 4`
    #[serde(default)]
    pub stride: Option<usize>,
    /// Output column.
    #[serde(default = "default_entities_column")]
    pub column: String,
}
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

crate::task::config::task_config! {
/// Extractive question answering (transformers' `question-answering` pipeline). One
/// question-answering task per pipeline.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QaConfig {
    /// Model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, `config.json`
    /// (labels, positions), optional `tokenizer_config.json` / `special_tokens_map.json` (special
    /// tokens, `model_max_length`).
    ///
    /// Type: path
    model,
    /// Numeric precision of the model: `fp32` (the exported graph, or its fused form once
    /// `bertflow models optimize DIR --precision fp32` made it), `int8`, `fp16` or `bf16` (variants
    /// made by `bertflow models optimize DIR --precision P`, which measures each against fp32 and
    /// refuses one below its quality threshold). See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// Asked of every record's text.
    ///
    /// Default: `[]`
    #[serde(default)]
    pub questions: Vec<String>,
    /// Input column with one more question per record. `questions` or `question_column` is
    /// required.
    #[serde(default)]
    pub question_column: Option<String>,
    /// Answers per question, best first.
    #[serde(default = "default_qa_top_k")]
    pub top_k: usize,
    /// Tokens per window (question, context, special tokens).
    ///
    /// Default: min(384, model_max_length)
    #[serde(default)]
    pub max_seq_len: Option<usize>,
    /// Overlap of consecutive context windows.
    ///
    /// Default: min(max_seq_len / 2, 128)
    #[serde(default)]
    pub doc_stride: Option<usize>,
    /// Questions longer than this many tokens are cut.
    #[serde(default = "default_max_question_len")]
    pub max_question_len: usize,
    /// Longest answer, in tokens.
    #[serde(default = "default_max_answer_len")]
    pub max_answer_len: usize,
    /// Score "no answer" (empty string at 0..0) with the others.
    ///
    /// Default: `false`
    #[serde(default)]
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words.
    #[serde(default = "default_true")]
    pub align_to_words: bool,
    /// Output column.
    #[serde(default = "default_answers_column")]
    pub column: String,
}
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    /// Read `1_Pooling/config.json` (sentence-transformers layout); `mean` when absent.
    Auto,
    Mean,
    Cls,
    Max,
}

crate::task::config::task_config! {
/// Sentence embeddings, as sentence-transformers computes them.
///
/// The model's inputs are read from the ONNX graph: `input_ids` (required), `attention_mask` and
/// `token_type_ids` (when the graph has them), int64 or int32. The output used is
/// `sentence_embedding` when present (already pooled), else `last_hidden_state` /
/// `token_embeddings`, else the first output.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Model directory: `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`; optional
    /// `config.json`, `1_Pooling/config.json`, `modules.json`, `sentence_bert_config.json`
    /// (sentence-transformers layout).
    ///
    /// Type: path
    model,
    /// Numeric precision of the model: `fp32` (the exported graph, or its fused form once
    /// `bertflow models optimize DIR --precision fp32` made it), `int8`, `fp16` or `bf16` (variants
    /// made by `bertflow models optimize DIR --precision P`, which measures each against fp32 and
    /// refuses one below its quality threshold). See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// `auto` reads `1_Pooling/config.json` (cls, max, mean, mean_sqrt_len, lasttoken; several
    /// modes are concatenated as sentence-transformers does), else `mean`. Ignored when the graph
    /// itself outputs `sentence_embedding`.
    #[serde(default = "default_pooling")]
    pub pooling: PoolingMode,
    /// L2-normalise each embedding. Default: true when `modules.json` lists a `Normalize` module,
    /// else false. The `Dense` modules `modules.json` lists after pooling run in their order
    /// (weights from each module folder's `model.safetensors`); any other module there is
    /// refused at start-up, naming it.
    ///
    /// Default: from model
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Tokens per input, special tokens included; longer inputs are truncated and counted in the
    /// summary. Default: `max_seq_length` of `sentence_bert_config.json`, else
    /// `max_position_embeddings` of `config.json` (at most 512).
    ///
    /// Default: from model
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Text put before every input, as sentence-transformers' `encode(prompt=...)` (e.g.
    /// `"query: "` for E5 models). `""`: no prompt, also over the model's default one. With
    /// `chunking`, every passage gets it (offsets stay those of the text). When the model's
    /// `1_Pooling/config.json` says `include_prompt: false`, the prompt's tokens are left out of
    /// the pooling, as sentence-transformers does.
    ///
    /// Default: from `prompt_name`
    #[serde(default)]
    pub prompt: Option<String>,
    /// One of the model's prompts by name (`prompts` of `config_sentence_transformers.json`,
    /// e.g. `query` or `passage`), as sentence-transformers' `prompt_name`. An unknown name is
    /// refused, naming the model's prompts. Give `prompt` or `prompt_name`, not both.
    ///
    /// Default: the model's `default_prompt_name`, else no prompt
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Name of the output column (with `chunking`: the document embedding, when
    /// `chunking.document_embedding` is on).
    #[serde(default = "default_embedding_column")]
    pub column: String,
    /// Cut each text into passages and embed every passage (off by default: the text is cut at
    /// `max_length` as sentence-transformers does). See [tasks.md](tasks.md#chunked-embeddings).
    #[serde(default)]
    pub chunking: Option<ChunkingConfig>,
    /// Keep the first N dimensions (Matryoshka models), as sentence-transformers' `truncate_dim`:
    /// after pooling and the model's normalisation. At most the model's dimension.
    ///
    /// Default: every dimension
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// With `dimensions`: L2-normalise the cut vector again (sentence-transformers'
    /// `normalize_embeddings=True`); without it the cut vector of a normalising model is shorter
    /// than 1, as `encode(truncate_dim=N)` returns it.
    ///
    /// Default: `false`
    #[serde(default)]
    pub normalize_dimensions: bool,
    /// Element type written: `float32`, `float16` (Postgres `halfvec`), `binary` or `ubinary`
    /// (one bit per dimension, `> 0`, packed as sentence-transformers' `quantize_embeddings`;
    /// Postgres `bit(n)`), `int8` or `uint8` (one byte per dimension from `output_ranges`;
    /// Parquet and Kafka only). Passages (`chunking`) are written as float32.
    ///
    /// Default: `float32`
    #[serde(default)]
    pub output: EmbeddingOutput,
    /// For `output: int8 / uint8`: a JSON file `{"min": [...], "max": [...]}` with each written
    /// dimension's range (sentence-transformers' `ranges`), as `bertflow models ranges` makes it
    /// from calibration texts.
    ///
    /// Type: path
    #[serde(default)]
    pub output_ranges: Option<PathBuf>,
}
}

/// Passages of long texts, one embedding each: `chunks` column of `{index, start, end,
/// embedding}` (character offsets into the text, as entities use).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Tokens per passage, special tokens included; at most the model's limit (`max_length`).
    ///
    /// Default: the model's `max_length`
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Tokens consecutive passages may share (at most; passages start on word, sentence or
    /// paragraph boundaries). Below `max_tokens`.
    #[serde(default)]
    pub overlap: usize,
    /// `token`: windows of up to `max_tokens` that never cut a word; `sentence`: Unicode
    /// sentences packed up to `max_tokens`; `paragraph`: paragraphs (blank-line separated) packed
    /// up to `max_tokens`, a longer one by sentences. A sentence longer than `max_tokens` falls
    /// back to word-bounded token windows.
    #[serde(default = "default_boundary")]
    pub boundary: crate::task::chunking::Boundary,
    /// Also write the document's vector in the task's `column` (null for a text with no
    /// passages): for `embed` the mean of the passage embeddings, L2-normalised; for `sparse` the
    /// passages' vectors pooled as the model pools tokens (max or sum), then cut to
    /// `max_active_dims`.
    #[serde(default)]
    pub document_embedding: bool,
    /// Name of the passages column.
    #[serde(default = "default_chunks_column")]
    pub column: String,
}

fn default_boundary() -> crate::task::chunking::Boundary {
    crate::task::chunking::Boundary::Sentence
}

fn default_chunks_column() -> String {
    "chunks".into()
}

fn default_pooling() -> PoolingMode {
    PoolingMode::Auto
}
fn default_embedding_column() -> String {
    "embedding".into()
}

/// The element type of written embeddings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingOutput {
    /// 4 bytes per dimension (Postgres `vector`).
    #[default]
    Float32,
    /// 2 bytes per dimension, rounded to nearest (Postgres `halfvec`).
    Float16,
    /// One bit per dimension (`> 0`), packed, each byte stored minus 128 as int8
    /// (sentence-transformers' `binary`; Postgres `bit(n)`).
    Binary,
    /// One bit per dimension (`> 0`), packed into uint8 (sentence-transformers' `ubinary`;
    /// Postgres `bit(n)`).
    Ubinary,
    /// One byte per dimension: the value's bucket of 256 between the dimension's calibrated
    /// minimum and maximum, minus 128 (sentence-transformers' `int8`; needs `output_ranges`).
    Int8,
    /// The same bucket as uint8 (sentence-transformers' `uint8`; needs `output_ranges`).
    Uint8,
}
