//! The Python connector's configuration seams: checks, and why the command line cannot open it.

use super::config::{PythonSinkConfig, PythonSourceConfig};
use crate::connector::{
    ErrorSinkConfig, Sink, SinkContext, SinkSpec, Source, SourceFacts, SourceOptions, SourceSpec,
};
use crate::error::{Error, Result};

const HOST_ONLY: &str = "is fed by the bertflow Python package (bertflow.Pipeline(...).enrich, bertflow.spark, bertflow.ray); to run from the command line, use the parquet or kafka connector";

impl SourceSpec for PythonSourceConfig {
    fn facts(&self) -> SourceFacts {
        SourceFacts {
            kind: "python",
            streaming: false,
            stream: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.text_column.is_empty() {
            return Err(Error::config("source.python.text_column is empty"));
        }
        Ok(())
    }

    fn open(&self, _opts: SourceOptions<'_>) -> Result<Box<dyn Source>> {
        Err(Error::config(format!("source.python {HOST_ONLY}")))
    }
}

impl SinkSpec for PythonSinkConfig {
    fn validate(&self, _source: &SourceFacts, errors: Option<&ErrorSinkConfig>) -> Result<()> {
        if errors.is_some_and(|e| e.topic.is_some() || e.path.is_some()) {
            return Err(Error::config(
                "sink.errors: the python sink hands failed records back to Python (Pipeline.enrich(..., errors=...)); remove sink.errors",
            ));
        }
        Ok(())
    }

    fn open(&self, _ctx: SinkContext<'_>) -> Result<Box<dyn Sink>> {
        Err(Error::config(format!("sink.python {HOST_ONLY}")))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::PipelineConfig;

    fn load(yaml: &str) -> crate::error::Result<PipelineConfig> {
        PipelineConfig::from_yaml_str(yaml, &[], &[])
    }

    #[test]
    fn the_command_line_cannot_open_the_python_connectors() {
        let cfg = load(
            "source: {python: {text_column: body}}\ntasks: {embed: {model: m}}\nsink: {python: {}}\n",
        )
        .unwrap();
        let shutdown = crate::lifecycle::Shutdown::new();
        let e = cfg
            .source
            .spec()
            .open(crate::connector::SourceOptions {
                passthrough: &[],
                text_columns: &[],
                window: 8,
                sink_commits: false,
                shutdown,
            })
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("source.python is fed by the bertflow Python package"),
            "{e}"
        );
    }

    #[test]
    fn an_error_file_or_topic_is_refused_beside_the_python_sink() {
        let e = load(
            "source: {python: {}}\ntasks: {embed: {model: m}}\nsink: {python: {}, errors: {path: e.parquet}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hands failed records back to Python"), "{e}");
    }
}
