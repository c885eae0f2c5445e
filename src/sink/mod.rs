//! Sinks: where results go. A sink writes the output of each chunk (results and error rows) and
//! says which chunks are durable, so that sources only acknowledge what can no longer be lost.

pub mod kafka;
pub mod parquet;
pub mod rolling;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::record::Origin;

pub use self::kafka::KafkaSink;
pub use self::parquet::ParquetSink;
pub use self::rolling::RollingParquetSink;

/// The output of one chunk: results of the records that succeeded (in input order) and one
/// error row per record that failed.
#[derive(Debug, Clone)]
pub struct ChunkOutput {
    pub seq: u64,
    pub results: RecordBatch,
    pub errors: RecordBatch,
    /// Where the chunk came from.
    pub origin: Origin,
    /// For each result row, the record's row in the chunk.
    pub result_rows: Vec<u32>,
    /// For each error row, the record's row in the chunk.
    pub error_rows: Vec<u32>,
}

/// What a sink wrote, for the summary.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub files: Vec<PathBuf>,
    pub error_file: Option<PathBuf>,
    pub rows: u64,
    pub error_rows: u64,
}

pub trait Sink: Send {
    /// Write one chunk's output. Returns the highest chunk `seq` whose output became durable with
    /// this call, if any.
    fn write(&mut self, out: &ChunkOutput) -> Result<Option<u64>>;

    /// Flush and close everything; every chunk written is durable when this returns `Ok`.
    fn finish(&mut self) -> Result<SinkReport>;

    /// Called when no chunk arrived for a while: a sink may close files that are old enough.
    /// Returns the highest chunk `seq` that became durable, if any.
    fn tick(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Make everything written so far durable now (a rebalance is waiting). Returns the highest
    /// chunk `seq` that is durable, if any.
    fn flush(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Discard unfinished output after a failure (temporary files are removed).
    fn abort(&mut self);
}

/// Schema of the error output: the record id (same type as in the results), why it failed, at
/// which stage and task, and where it came from.
pub fn error_schema(id: &FieldRef) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Arc::new(id.as_ref().clone().with_nullable(true)),
        Arc::new(Field::new("reason", DataType::Utf8, false)),
        Arc::new(Field::new("stage", DataType::Utf8, false)),
        Arc::new(Field::new("task", DataType::Utf8, true)),
        Arc::new(Field::new("source", DataType::Utf8, false)),
    ]))
}

/// One failed record, as the error output holds it.
#[derive(Debug, Clone)]
pub struct ErrorRow {
    pub row: usize,
    pub reason: String,
    pub stage: &'static str,
    pub task: Option<&'static str>,
    pub source: String,
}

/// Build the error batch of a chunk from its ids (already taken for the failed rows).
pub fn error_batch(schema: &SchemaRef, ids: ArrayRef, rows: &[ErrorRow]) -> Result<RecordBatch> {
    let reason = StringArray::from_iter_values(rows.iter().map(|r| r.reason.as_str()));
    let stage = StringArray::from_iter_values(rows.iter().map(|r| r.stage));
    let task: StringArray = rows.iter().map(|r| r.task).collect();
    let source = StringArray::from_iter_values(rows.iter().map(|r| r.source.as_str()));
    RecordBatch::try_new(
        schema.clone(),
        vec![
            ids,
            Arc::new(reason),
            Arc::new(stage),
            Arc::new(task),
            Arc::new(source),
        ],
    )
    .map_err(|e| Error::sink("error output", e.to_string()))
}
