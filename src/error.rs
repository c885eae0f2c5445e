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

    #[error("inference failed: {0}")]
    Inference(String),

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
