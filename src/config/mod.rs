//! Pipeline configuration: one YAML file, overridden by `BERTFLOW__*` environment variables and
//! by `--set key=value` on the command line (in that order of precedence, lowest first).
//!
//! Every struct denies unknown fields so that a typo fails loudly. Every key is documented in
//! `docs/configuration.md`.

pub mod reference;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::batch::BatchingConfig;
pub use crate::connector::kafka::config::{
    JsonFields, KafkaOutputFormat, KafkaSinkConfig, KafkaSourceConfig, StartFrom, ValueFormat,
};
pub use crate::connector::parquet::config::{
    Compression, FileFormat, ParquetSinkConfig, ParquetSourceConfig, Shard,
};
pub use crate::connector::postgres::config::{
    Distance, IndexConfig, IndexMethod, PostgresSinkConfig, RetryConfig, VectorType, WriteMode,
};
pub use crate::model::config::{
    ExecutionProvider, Fallback, GraphOptimization, RuntimeConfig, Switch,
};
pub use crate::task::config::*;
pub use crate::telemetry::{MetricsConfig, DEFAULT_METRICS_LISTEN};

/// Prefix of environment variables that override configuration keys. Nested keys are separated
/// by a double underscore: `BERTFLOW__BATCHING__MAX_BATCH_SIZE=64` sets `batching.max_batch_size`.
pub const ENV_PREFIX: &str = "BERTFLOW__";

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
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

// ------------------------------------------------------------------------------------ source

/// Where records come from: exactly one connector, named by its key
/// (`source: {parquet: {...}}` or `source: {kafka: {...}}`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Parquet files (a file, a glob or a directory).
    Parquet(ParquetSourceConfig),
    /// Kafka topics, read as a consumer-group member.
    Kafka(KafkaSourceConfig),
}

impl SourceConfig {
    /// A streaming source: it runs until stopped and acknowledges durable output.
    pub fn is_streaming(&self) -> bool {
        matches!(self, SourceConfig::Kafka(_))
    }

    pub fn kafka(&self) -> Option<&KafkaSourceConfig> {
        match self {
            SourceConfig::Kafka(k) => Some(k),
            SourceConfig::Parquet(_) => None,
        }
    }

    pub fn parquet(&self) -> Option<&ParquetSourceConfig> {
        match self {
            SourceConfig::Parquet(p) => Some(p),
            SourceConfig::Kafka(_) => None,
        }
    }

    pub fn parquet_mut(&mut self) -> Option<&mut ParquetSourceConfig> {
        match self {
            SourceConfig::Parquet(p) => Some(p),
            SourceConfig::Kafka(_) => None,
        }
    }
}

pub(crate) fn default_text_column() -> String {
    "text".into()
}

// ------------------------------------------------------------------------------------ sink

/// Where results go: exactly one connector, named by its key (`parquet` or `kafka`), beside the
/// keys every sink shares.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(try_from = "SinkFile", into = "SinkFile")]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Input columns copied to the output unchanged.
    pub passthrough: Vec<String>,
    /// Where records that could not be processed go.
    pub errors: Option<ErrorSinkConfig>,
    /// When one task fails for a record, still write the record with that task's columns null
    /// (and an error row naming the task); `false` sends the whole record to the error output.
    pub partial_results: bool,
}

/// The sink connector.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// A Parquet file or a directory of part files (rolling files for streaming sources).
    Parquet(ParquetSinkConfig),
    /// A Kafka topic.
    Kafka(KafkaSinkConfig),
    /// A Postgres table (pgvector for embeddings).
    Postgres(PostgresSinkConfig),
}

/// Where results go: exactly one of `parquet`, `kafka` and `postgres`, beside the keys every
/// sink shares.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkFile {
    /// A Parquet file or a directory of part files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<ParquetSinkConfig>,
    /// A Kafka topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSinkConfig>,
    /// A Postgres table; embeddings as pgvector columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSinkConfig>,
    /// Input columns copied unchanged to the output (after `id`).
    ///
    /// Default: `[]`
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Where records that could not be processed go.
    #[serde(default)]
    pub errors: Option<ErrorSinkConfig>,
    /// When one task fails for a record, still write the record with that task's columns null
    /// and an error row naming the task (default). `false`: the whole record goes to the error
    /// output, as no task result is written for it.
    #[serde(default = "default_true")]
    pub partial_results: bool,
}

fn default_true() -> bool {
    true
}

impl schemars::JsonSchema for SinkConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        SinkFile::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SinkFile::json_schema(generator)
    }
}

impl TryFrom<SinkFile> for SinkConfig {
    type Error = String;
    fn try_from(f: SinkFile) -> std::result::Result<Self, String> {
        let kind = match (f.parquet, f.kafka, f.postgres) {
            (Some(p), None, None) => SinkKind::Parquet(p),
            (None, Some(k), None) => SinkKind::Kafka(k),
            (None, None, Some(p)) => SinkKind::Postgres(p),
            _ => return Err("sink: configure exactly one sink, e.g. `sink: {parquet: {path: out.parquet}}`, `sink: {kafka: {topic: enriched}}` or `sink: {postgres: {table: documents}}`".into()),
        };
        Ok(SinkConfig {
            kind,
            passthrough: f.passthrough,
            errors: f.errors,
            partial_results: f.partial_results,
        })
    }
}

impl From<SinkConfig> for SinkFile {
    fn from(c: SinkConfig) -> SinkFile {
        let (parquet, kafka, postgres) = match c.kind {
            SinkKind::Parquet(p) => (Some(p), None, None),
            SinkKind::Kafka(k) => (None, Some(k), None),
            SinkKind::Postgres(p) => (None, None, Some(p)),
        };
        SinkFile {
            parquet,
            kafka,
            postgres,
            passthrough: c.passthrough,
            errors: c.errors,
            partial_results: c.partial_results,
        }
    }
}

impl SinkConfig {
    /// The sink commits the source's positions itself, with its output (exactly-once
    /// transactions), so the source must not.
    pub fn commits_source_positions(&self) -> bool {
        self.kafka().is_some_and(|k| k.exactly_once)
    }

    pub fn kafka(&self) -> Option<&KafkaSinkConfig> {
        match &self.kind {
            SinkKind::Kafka(k) => Some(k),
            _ => None,
        }
    }

    pub fn parquet(&self) -> Option<&ParquetSinkConfig> {
        match &self.kind {
            SinkKind::Parquet(p) => Some(p),
            _ => None,
        }
    }

    pub fn parquet_mut(&mut self) -> Option<&mut ParquetSinkConfig> {
        match &mut self.kind {
            SinkKind::Parquet(p) => Some(p),
            _ => None,
        }
    }

    pub fn postgres(&self) -> Option<&PostgresSinkConfig> {
        match &self.kind {
            SinkKind::Postgres(p) => Some(p),
            _ => None,
        }
    }
}

/// Where records that could not be processed go (schema: [schema.md](schema.md)).
///
/// Give `path` or `topic`, not both. Without `sink.errors`, a Kafka sink counts and logs failed
/// records but does not keep them. A task that failed for a record still written
/// (`sink.partial_results`) is an error row with `written: true` in an error file, and a log line
/// (not a dead letter) with a dead-letter topic.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorSinkConfig {
    /// Parquet file with one row per record that could not be processed (see docs/schema.md).
    /// Always written, empty when nothing failed. With a Kafka source, a directory of per-partition
    /// error files named like the results. A local path or a URL (`s3://...`); a name ending in
    /// `.arrow`, `.feather` or `.ipc` is written as an Arrow IPC file.
    ///
    /// Type: path or URL
    /// Default: `<output stem>.errors.parquet` beside the output file, or `errors.parquet` inside the output directory (`.arrow` with `format: arrow_ipc`); with a Kafka source `<output dir>/errors/`
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Options of the object store client for a URL `path` (see
    /// `source.parquet.storage_options`). Default: those of `sink.parquet`.
    ///
    /// Type: map of string to string
    #[serde(default)]
    pub storage_options: Option<crate::connector::parquet::store::StorageOptions>,
    /// Kafka source only, instead of `path`: dead-letter topic receiving each failed record's
    /// original key, value and headers plus the reason (see [schema.md](schema.md#dead-letters)).
    /// Required with `sink.kafka.exactly_once`.
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
        if self.tasks.is_empty() {
            return Err(Error::config(
                "tasks: configure at least one task, e.g. `tasks: {embed: {model: models/all-MiniLM-L6-v2}}`",
            ));
        }
        let kafka_source = self.source.kafka();
        if let Some(e) = &self.sink.errors {
            if e.path.is_some() == e.topic.is_some() {
                return Err(Error::config(
                    "sink.errors: give either `path` (error Parquet) or `topic` (dead-letter topic)",
                ));
            }
            if e.topic.is_some() && kafka_source.is_none() {
                return Err(Error::config(
                    "sink.errors.topic needs a Kafka source (its brokers receive the dead letters); use sink.errors.path with a Parquet source",
                ));
            }
            if e.path.is_some() && kafka_source.is_some() && self.sink.kafka().is_some() {
                return Err(Error::config(
                    "sink.errors.path with a Kafka source and a Kafka sink: give sink.errors.topic (dead-letter topic), so that failed records are committed with the results",
                ));
            }
        }
        if let Some(s) = self.source.parquet().and_then(|p| p.shard.as_ref()) {
            Shard::parse(s)?;
        }
        if let Some(k) = kafka_source {
            if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
                return Err(Error::config(
                    "source.kafka.topics: give at least one topic name (or a regex starting with ^)",
                ));
            }
            if k.format == ValueFormat::Json && k.json.text.trim().is_empty() {
                return Err(Error::config("source.kafka.json.text must name a field"));
            }
        }
        if let Some(p) = self.sink.postgres() {
            if p.exactly_once && kafka_source.is_none() {
                return Err(Error::config(
                    "sink.postgres.exactly_once needs a Kafka source (with a Parquet source, mode: upsert makes re-runs idempotent)",
                ));
            }
            if p.table.trim().is_empty() {
                return Err(Error::config("sink.postgres.table must name a table"));
            }
        }
        if let Some(k) = self.sink.kafka() {
            if kafka_source.is_none() && k.bootstrap_servers.is_none() {
                return Err(Error::config(
                    "sink.kafka.bootstrap_servers is required when the source is not Kafka",
                ));
            }
            if k.exactly_once {
                if kafka_source.is_none() {
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
        if b.max_batch_size == Some(0) || b.max_batch_tokens == Some(0) || b.window_records == 0 {
            return Err(Error::config(
                "batching: max_batch_size, max_batch_tokens and window_records must be at least 1",
            ));
        }
        if b.queue_depth == 0 {
            return Err(Error::config("batching.queue_depth must be at least 1"));
        }
        if let Some(p) = self.sink.parquet() {
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
        assert_eq!(c.batching.max_batch_size, None);
        let cpu = c.batching.limits("cpu");
        assert_eq!((cpu.max_batch_size, cpu.max_batch_tokens), (16, 2048));
        assert_eq!(cpu.defaults_of, Some("cpu"));
        let gpu = c.batching.limits("cuda");
        assert_eq!((gpu.max_batch_size, gpu.max_batch_tokens), (128, 32768));
        assert_eq!(
            gpu.to_string(),
            "at most 128 sequences / 32768 tokens (cuda defaults)"
        );
        assert_eq!(c.source.parquet().unwrap().text_column, "text");
        assert_eq!(c.runtime.execution_provider, ExecutionProvider::Cpu);
        assert_eq!(c.tasks.embed.first().unwrap().pooling, PoolingMode::Auto);
        assert_eq!(c.sink.parquet().unwrap().compression, Compression::Zstd);
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
        assert_eq!(c.batching.max_batch_size, Some(16));
        assert_eq!(c.sink.passthrough, vec!["title", "url"]);
        assert_eq!(c.runtime.execution_provider, ExecutionProvider::Cuda);

        let c = PipelineConfig::from_yaml_str(BASE, &env, &[]).unwrap();
        assert_eq!(c.batching.max_batch_size, Some(8));
        // A configured limit wins over the provider's default; the other keeps its default.
        let gpu = c.batching.limits("cuda");
        assert_eq!((gpu.max_batch_size, gpu.max_batch_tokens), (8, 32768));
        let sets = vec![("batching.max_batch_tokens".to_string(), "4096".to_string())];
        let c = PipelineConfig::from_yaml_str(BASE, &env, &sets).unwrap();
        let both = c.batching.limits("cuda");
        assert_eq!(
            (both.max_batch_size, both.max_batch_tokens, both.defaults_of),
            (8, 4096, None)
        );
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
