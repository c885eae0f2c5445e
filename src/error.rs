//! Library errors. Every variant says what was wrong, where, and what to do about it.

use std::path::PathBuf;

/// Errors that stop a pipeline (as opposed to per-record errors, which go to the error output).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error: {0}")]
    Config(String),

    #[error("cannot read pipeline file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Runtime(String),

    #[error("model {dir}: {message}")]
    Model { dir: PathBuf, message: String },

    #[error("source {location}: {message}")]
    Source { location: String, message: String },

    #[error("sink {location}: {message}")]
    Sink { location: String, message: String },

    /// An object store (S3, GCS, Azure) refused or failed a request, after its retries.
    #[error("object store {location}: {message}")]
    Store { location: String, message: String },

    #[error("inference failed: {0}")]
    Inference(String),

    /// A system bertflow talks to cannot be reached or did not answer in time (a broker, a
    /// store): trying again later can help.
    #[error("{location} unavailable: {message}")]
    Unavailable {
        location: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    #[error("pipeline stage '{0}' stopped unexpectedly")]
    StageStopped(&'static str),

    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    pub fn model(dir: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Model {
            dir: dir.into(),
            message: msg.into(),
        }
    }

    pub fn source(location: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Source {
            location: location.into(),
            message: msg.into(),
        }
    }

    pub fn sink(location: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Sink {
            location: location.into(),
            message: msg.into(),
        }
    }

    pub fn store(location: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Store {
            location: location.into(),
            message: msg.into(),
        }
    }

    /// `location` cannot be reached now, because of `source`.
    pub fn unavailable(
        location: impl Into<String>,
        msg: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Unavailable {
            location: location.into(),
            message: msg.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Whether running the job again later can help (a system was unreachable), as opposed to
    /// errors that need a change (configuration, input, model).
    pub fn retryable(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            Error::Unavailable { .. } => true,
            Error::Io(e) => matches!(
                e.kind(),
                Interrupted | TimedOut | ConnectionRefused | ConnectionReset | ConnectionAborted
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_keeps_its_cause_and_is_retryable() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 30 s");
        let e = Error::unavailable("kafka 127.0.0.1:9092", "cannot commit", cause);
        assert!(e.retryable());
        let chain = std::error::Error::source(&e)
            .expect("cause kept")
            .to_string();
        assert_eq!(chain, "no answer in 30 s");
        assert!(!Error::config("bad key").retryable());
    }
}
