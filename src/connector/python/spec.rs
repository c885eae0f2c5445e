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
