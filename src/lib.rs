//! bertflow: enrich text records with BERT-family models through ONNX Runtime.
//!
//! Data flows `source -> batcher -> tokenize -> infer -> post-process -> sink`: a
//! [`connector`] (Parquet, Kafka) reads records in chunks, [`task`] tokenizes them into
//! features, [`batch`] cuts length-sorted, token-budgeted batches, [`model`] runs them, [`task`]
//! post-processes the outputs into Arrow columns, and a [`connector`] writes them.
//! [`pipeline`] wires the stages; they meet through the traits of [`connector`] and [`task`].

pub mod batch;
pub mod bench;
pub mod config;
pub mod connector;
pub mod error;
pub mod export;
pub mod lifecycle;
pub mod model;
pub mod optimize;
pub mod pipeline;
pub mod record;
pub mod task;
pub mod telemetry;

pub use config::PipelineConfig;
pub use error::{Error, Result};
pub use lifecycle::{Readiness, Shutdown};
pub use pipeline::{run, RunOptions, Summary};
