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
}

// ------------------------------------------------------------------------------------ source

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub parquet: Option<ParquetSourceConfig>,
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
}

fn default_text_column() -> String {
    "text".into()
}

// ------------------------------------------------------------------------------------ tasks

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    pub embed: Option<EmbedConfig>,
}

impl TasksConfig {
    pub fn is_empty(&self) -> bool {
        self.embed.is_none()
    }
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

fn default_max_batch_size() -> usize {
    64
}
fn default_max_batch_tokens() -> usize {
    16384
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
    /// Threads used to tokenize; 0 = number of CPUs.
    #[serde(default)]
    pub tokenizer_threads: usize,
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
            tokenizer_threads: 0,
            ort_lib: None,
        }
    }
}

// ------------------------------------------------------------------------------------ sink

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub parquet: Option<ParquetSinkConfig>,
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
    /// Parquet file receiving one row per failed record (id, reason, stage, source, row).
    pub path: PathBuf,
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
        if self.source.parquet.is_none() {
            return Err(Error::config(
                "source: configure exactly one source, e.g. `source: {parquet: {path: data.parquet}}`",
            ));
        }
        if self.tasks.is_empty() {
            return Err(Error::config(
                "tasks: configure at least one task, e.g. `tasks: {embed: {model: models/all-MiniLM-L6-v2}}`",
            ));
        }
        if self.sink.parquet.is_none() {
            return Err(Error::config(
                "sink: configure exactly one sink, e.g. `sink: {parquet: {path: out.parquet}}`",
            ));
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
        if let Some(e) = &self.tasks.embed {
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
        assert_eq!(c.batching.max_batch_size, 64);
        assert_eq!(c.source.parquet.as_ref().unwrap().text_column, "text");
        assert_eq!(c.runtime.execution_provider, ExecutionProvider::Cpu);
        assert_eq!(c.tasks.embed.as_ref().unwrap().pooling, PoolingMode::Auto);
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
