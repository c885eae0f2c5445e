//! Pipeline configuration: one YAML file, overridden by `BERTFLOW__*` environment variables and
//! by `--set key=value` on the command line (in that order of precedence, lowest first).
//!
//! Every struct denies unknown fields so that a typo fails loudly. Every key is documented in
//! `docs/configuration.md`.

pub mod load;
pub mod reference;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use crate::batch::BatchingConfig;
use crate::connector::registry::{SinkConfig, SourceConfig};
use crate::model::config::RuntimeConfig;
use crate::task::config::{TasksConfig, TopK};
use crate::telemetry::MetricsConfig;

pub use load::ENV_PREFIX;

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

// ------------------------------------------------------------------------------------ loading

impl PipelineConfig {
    /// Load a pipeline file, apply `BERTFLOW__*` environment overrides, then `--set` overrides.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Self> {
        let sets: Vec<load::Override> = overrides
            .iter()
            .map(|(k, v)| load::Override::set(k, v))
            .collect();
        Self::load_with(path, &sets)
    }

    /// [`PipelineConfig::load`] with overrides that say where they came from (`--set`, or an
    /// option such as `--output`).
    pub fn load_with(path: &Path, overrides: &[load::Override]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut all = load::env_overrides();
        all.extend(overrides.iter().cloned());
        Self::from_sources(&text, &path.display().to_string(), &all)
    }

    /// Parse YAML text and apply overrides (`env` first, then `overrides`), each `key.path=value`
    /// with the value read as YAML (so `64`, `true`, `[a, b]` and `null` keep their types).
    pub fn from_yaml_str(
        text: &str,
        env: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Self> {
        let mut all: Vec<load::Override> = env
            .iter()
            .map(|(k, v)| load::Override {
                key: k.clone(),
                value: v.clone(),
                origin: load::Origin::Env(format!(
                    "{ENV_PREFIX}{}",
                    k.to_uppercase().replace('.', "__")
                )),
            })
            .collect();
        all.extend(overrides.iter().map(|(k, v)| load::Override::set(k, v)));
        Self::from_sources(text, "the pipeline file", &all)
    }

    /// The file's text with `overrides` applied in order; `file` names it in messages.
    pub fn from_sources(text: &str, file: &str, overrides: &[load::Override]) -> Result<Self> {
        let tree = load::merged(text, file, overrides)?;
        let parsed: PipelineConfig =
            load::deserialize(tree, file, overrides).map_err(|e| match e {
                // Which connectors there are, from the registry.
                Error::Config(msg) if msg.contains("source: give exactly one key") => {
                    let keys: Vec<&str> =
                        SourceConfig::connectors().iter().map(|c| c.key).collect();
                    Error::Config(msg.replacen(
                        "the connector's name",
                        &format!("the connector's name ({})", keys.join(" or ")),
                        1,
                    ))
                }
                other => other,
            })?;
        parsed.validate().map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!(
                "{}: {msg}",
                load::blame_message(&msg, file, overrides)
            )),
            other => other,
        })?;
        Ok(parsed)
    }

    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.tasks.is_empty() {
            return Err(Error::config(
                "tasks: configure at least one task, e.g. `tasks: {embed: {model: models/all-MiniLM-L6-v2}}`",
            ));
        }
        self.source.spec().validate()?;
        let facts = self.source.spec().facts();
        crate::connector::ErrorSinkConfig::check(self.sink.errors.as_ref(), &facts)?;
        self.sink
            .spec()
            .validate(&facts, self.sink.errors.as_ref())?;
        let b = &self.batching;
        if b.max_batch_size == Some(0) || b.max_batch_tokens == Some(0) || b.window_records == 0 {
            return Err(Error::config(
                "batching: max_batch_size, max_batch_tokens and window_records must be at least 1",
            ));
        }
        if b.queue_depth == 0 {
            return Err(Error::config("batching.queue_depth must be at least 1"));
        }
        if self.sink.passthrough.iter().any(|c| c == "id") {
            return Err(Error::config(
                "sink.passthrough: 'id' is always written; remove it from the passthrough list",
            ));
        }
        if let Some(dup) = self
            .sink
            .passthrough
            .iter()
            .enumerate()
            .find(|(i, c)| self.sink.passthrough[..*i].contains(c))
        {
            return Err(Error::config(format!(
                "sink.passthrough names '{}' twice",
                dup.1
            )));
        }
        if let Some(listen) = &self.metrics.listen {
            let ok = listen
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(Error::config(format!(
                    "metrics.listen is '{listen}': write host:port, e.g. 127.0.0.1:9464 or 0.0.0.0:9464 (port 0 picks a free one)"
                )));
            }
        }
        if let Some(lib) = &self.runtime.ort_lib {
            if !lib.is_file() {
                return Err(Error::config(format!(
                    "runtime.ort_lib is {}, which is not a file: give the path of libonnxruntime.so (or leave the key out to search the usual places)",
                    lib.display()
                )));
            }
        }
        for (i, q) in self
            .tasks
            .qa
            .iter()
            .flat_map(|q| q.questions.iter())
            .enumerate()
        {
            if q.trim().is_empty() {
                return Err(Error::config(format!("tasks.qa.questions[{i}] is empty")));
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
        for z in self.tasks.zero_shot.iter() {
            crate::task::zero_shot::check_settings(z)?;
        }
        for c in self.tasks.cross_encoder.iter() {
            crate::task::cross_encoder::check_settings(c)?;
        }
        for c in self.tasks.sparse.iter() {
            crate::task::sparse::check_settings(c)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::parquet::config::Compression;
    use crate::model::config::ExecutionProvider;
    use crate::task::config::PoolingMode;

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
