//! Connectors: the systems records come from and results go to. Each connector is one folder
//! holding everything of its system (configuration, reading, writing, codecs); the pipeline sees
//! only the small traits of this module:
//!
//! - a [`Source`] yields [`Chunk`]s of records in order;
//! - a [`Sink`] writes each chunk's [`ChunkOutput`] (results as Arrow, failed records as typed
//!   [`ErrorRow`]s) and says which chunks are durable;
//! - [`Feedback`] messages carry durable positions (and rewind requests) from the writer back to
//!   a streaming source, over the channel of a [`SourceLink`];
//! - an [`ErrorOutput`] keeps failed records beside a sink that has no place of its own for them.
//!
//! The [`registry`] lists the connectors a pipeline file can name; each connector's
//! configuration opens it through [`SourceSpec::open`] or [`SinkSpec::open`], and a sink's place
//! for failed records is chosen in [`errors`].

pub mod chunk_rows;
pub mod errors;
pub mod kafka;
pub mod parquet;
pub mod postgres;
pub mod python;
pub mod registry;
pub mod storage;
pub mod text;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::lifecycle::{Readiness, Shutdown};
pub use crate::record::TextColumnRequest;
use crate::record::{Chunk, Origin, Stage};

pub trait Source: Send {
    /// Kind of source, as metrics label it (`parquet`, `kafka`).
    fn kind(&self) -> &'static str;

    /// Short description for logs and the summary (e.g. the file list).
    fn describe(&self) -> String;

    /// Total number of records, when known up front (drives the progress bar).
    fn size_hint(&self) -> Option<u64>;

    /// Output fields the source contributes: `id` first, then the passthrough columns.
    fn fields(&self) -> Vec<FieldRef>;

    /// The next chunk of records, or `None` at the end of the input.
    fn next_chunk(&mut self) -> Result<Option<Chunk>>;

    /// How often the source needs [`Source::idle`] while the next stage cannot take a chunk;
    /// `None` (the default): it needs nothing while it waits.
    fn idle_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// The next stage cannot take a chunk yet: do what keeps the source alive without reading
    /// ahead (a streaming source pauses fetching and serves its group). Must not block; called
    /// every [`Source::idle_interval`] while the read stage waits.
    fn idle(&mut self) {}

    /// The end of a run, after the sink finished: every chunk reported durable through the
    /// [`SourceLink`] is final (a streaming source commits it and leaves its group).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }

    /// The channel the writer reports durable chunks on, for sources that acknowledge them.
    fn link(&self) -> Option<SourceLink> {
        None
    }

    /// Readiness: the source has work assigned (a streaming source is in its group); `None`
    /// for a source that is ready once open.
    fn readiness(&self) -> Option<Readiness> {
        None
    }

    /// The sink stores the source's positions with its output (exactly-once into a database):
    /// resume from them whenever partitions are assigned.
    fn resume_from(&mut self, _store: Arc<dyn PositionStore>) -> Result<()> {
        Err(Error::config(
            "this source has no positions to store: exactly-once output needs a Kafka source",
        ))
    }
}

/// Positions of a streaming source kept by its sink in the same transactions as the output
/// (e.g. Kafka offsets in a Postgres table): where the source resumes.
pub trait PositionStore: Send + Sync {
    /// The stored next positions (offsets) of some partitions of a stream; partitions with
    /// nothing stored are left out.
    fn load(&self, stream: &str, partitions: &[i32]) -> Result<Vec<(i32, i64)>>;

    /// Where the positions are, for messages.
    fn describe(&self) -> String;
}

/// What the writer tells a streaming source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// The output of every chunk up to and including `seq` is durable: its positions may be
    /// committed.
    Durable(u64),
    /// The output of the chunks in flight was discarded (an aborted transaction): read again
    /// from the last committed positions. Chunks read before are stale from epoch `epoch` on.
    Rewind { epoch: u64 },
}

/// The writer's end of a streaming source's feedback channel.
#[derive(Debug, Clone)]
pub struct SourceLink {
    tx: Sender<Feedback>,
}

impl SourceLink {
    /// A link and the receiving end the source keeps.
    pub fn channel() -> (SourceLink, Receiver<Feedback>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (SourceLink { tx }, rx)
    }

    /// Every chunk up to `seq` is durable.
    pub fn durable(&self, seq: u64) {
        let _ = self.tx.send(Feedback::Durable(seq));
    }

    /// Discard in-flight work and read again from the committed positions.
    pub fn rewind(&self, epoch: u64) {
        let _ = self.tx.send(Feedback::Rewind { epoch });
    }
}

/// One record that failed, or one task that failed for a record, as the error output holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRow {
    /// The record's row in its chunk.
    pub row: u32,
    pub reason: String,
    pub stage: Stage,
    /// The task that failed, when one did.
    pub task: Option<&'static str>,
    /// Where the record came from (file and row, or topic/partition/offset).
    pub source: String,
    /// The record was still written, with this task's columns null.
    pub written: bool,
}

/// The output of one chunk: results of the records written (in input order) and one error row
/// per failed record or failed task of a written record.
#[derive(Debug, Clone)]
pub struct ChunkOutput {
    pub seq: u64,
    pub results: RecordBatch,
    /// For each result row, the record's row in the chunk.
    pub result_rows: Vec<u32>,
    pub errors: Vec<ErrorRow>,
    /// The ids of the error rows' records, one per error row.
    pub error_ids: ArrayRef,
    /// Where the chunk came from.
    pub origin: Origin,
}

impl ChunkOutput {
    /// Records that failed as a whole (not written).
    pub fn failed_records(&self) -> usize {
        self.errors.iter().filter(|e| !e.written).count()
    }

    /// The chunk with the result rows of some records moved to the error rows: `gone` holds
    /// each such record's row in the chunk and why the destination refused it.
    pub fn refuse(&self, gone: &[(u32, String)]) -> Result<ChunkOutput> {
        let keep: Vec<u32> = (0..self.result_rows.len() as u32)
            .filter(|&i| {
                !gone
                    .iter()
                    .any(|(row, _)| *row == self.result_rows[i as usize])
            })
            .collect();
        let results = take_rows(&self.results, &keep)?;
        let mut errors = self.errors.clone();
        let mut id_rows: Vec<u32> = Vec::new();
        for (row, reason) in gone {
            let Some(i) = self.result_rows.iter().position(|r| r == row) else {
                continue;
            };
            errors.push(ErrorRow {
                row: *row,
                reason: reason.clone(),
                stage: Stage::Sink,
                task: None,
                source: self.origin.describe(*row as usize),
                written: false,
            });
            id_rows.push(i as u32);
        }
        let new_ids = arrow::compute::take(
            self.results.column(0).as_ref(),
            &arrow::array::UInt32Array::from(id_rows),
            None,
        )
        .map_err(|e| Error::sink("output", e.to_string()))?;
        let error_ids = arrow::compute::concat(&[self.error_ids.as_ref(), new_ids.as_ref()])
            .map_err(|e| Error::sink("output", e.to_string()))?;
        crate::telemetry::Event::emit(crate::telemetry::RecordsFailed {
            stage: "sink",
            task: "none",
            count: gone.len(),
        });
        Ok(ChunkOutput {
            seq: self.seq,
            results,
            result_rows: keep.iter().map(|&i| self.result_rows[i as usize]).collect(),
            errors,
            error_ids,
            origin: self.origin.clone(),
        })
    }

    /// The error rows as an Arrow batch of [`error_schema`].
    pub fn error_batch(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        error_batch(schema, self.error_ids.clone(), &self.errors)
    }
}

/// What a sink wrote, for the summary.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub files: Vec<PathBuf>,
    pub error_file: Option<PathBuf>,
    pub rows: u64,
    pub error_rows: u64,
    /// Result rows the destination refused after they were counted as written (they went to
    /// the error output instead).
    pub refused: u64,
    /// Other places output went (topics), for the summary.
    pub destinations: Vec<String>,
}

/// What a sink did with one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The highest chunk `seq` whose output is durable now, if any.
    pub durable: Option<u64>,
    /// The chunk's output was kept; `false` when it was dropped (read before a rewind, so it
    /// is read and written again).
    pub kept: bool,
}

impl Written {
    pub fn kept(durable: Option<u64>) -> Written {
        Written {
            durable,
            kept: true,
        }
    }

    pub fn dropped() -> Written {
        Written {
            durable: None,
            kept: false,
        }
    }
}

pub trait Sink: Send {
    /// Write one chunk's output.
    fn write(&mut self, out: &ChunkOutput) -> Result<Written>;

    /// Flush and close everything; every chunk written is durable when this returns `Ok`.
    fn finish(&mut self) -> Result<SinkReport>;

    /// How often the writer calls [`Sink::tick`]; `None` (the default): never.
    fn tick_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Called every [`Sink::tick_interval`]: a sink may close files that are old enough or
    /// collect acknowledgements. Returns the highest chunk `seq` that became durable, if any.
    fn tick(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Discard unfinished output after a failure (temporary files are removed).
    fn abort(&mut self);

    /// The positions this sink stores with its output, for the source to resume from.
    fn position_store(&self) -> Option<Arc<dyn PositionStore>> {
        None
    }
}

/// A place for failed records beside a sink that has none of its own (an error file beside a
/// Kafka sink, a dead-letter topic beside a Parquet sink).
pub trait ErrorOutput: Send {
    /// Keep the failed records of one chunk; they are durable when this returns, or (a file of a
    /// batch job) when [`ErrorOutput::finish`] returns.
    fn write(&mut self, out: &ChunkOutput) -> Result<()>;

    /// Where the failed records went, once everything is durable.
    fn finish(&mut self) -> Result<Option<PathBuf>>;

    /// Discard unfinished output.
    fn abort(&mut self) {}

    /// Where this output is, for messages.
    fn describe(&self) -> String;
}

/// Schema of the error output: the record id (same type as in the results), why it failed, at
/// which stage and task, where it came from, and whether the record was still written (with the
/// failed task's columns null).
pub fn error_schema(id: &FieldRef) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Arc::new(id.as_ref().clone().with_nullable(true)),
        Arc::new(Field::new("reason", DataType::Utf8, false)),
        Arc::new(Field::new("stage", DataType::Utf8, false)),
        Arc::new(Field::new("task", DataType::Utf8, true)),
        Arc::new(Field::new("source", DataType::Utf8, false)),
        Arc::new(Field::new("written", DataType::Boolean, false)),
    ]))
}

/// Build an error batch from the ids of its records and the typed rows.
pub fn error_batch(schema: &SchemaRef, ids: ArrayRef, rows: &[ErrorRow]) -> Result<RecordBatch> {
    let reason = StringArray::from_iter_values(rows.iter().map(|r| r.reason.as_str()));
    let stage = StringArray::from_iter_values(rows.iter().map(|r| r.stage.as_str()));
    let task: StringArray = rows.iter().map(|r| r.task).collect();
    let source = StringArray::from_iter_values(rows.iter().map(|r| r.source.as_str()));
    let written = BooleanArray::from(rows.iter().map(|r| r.written).collect::<Vec<_>>());
    RecordBatch::try_new(
        schema.clone(),
        vec![
            ids,
            Arc::new(reason),
            Arc::new(stage),
            Arc::new(task),
            Arc::new(source),
            Arc::new(written),
        ],
    )
    .map_err(|e| Error::sink("error output", e.to_string()))
}

/// The columns of a schema, for messages naming what is there (`id, text, source`).
pub fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows `rows` of a batch, in that order.
pub fn take_rows(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    let idx = arrow::array::UInt32Array::from(rows.to_vec());
    let cols = batch
        .columns()
        .iter()
        .map(|c| arrow::compute::take(c.as_ref(), &idx, None))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::sink("output", e.to_string()))?;
    RecordBatch::try_new(batch.schema(), cols).map_err(|e| Error::sink("output", e.to_string()))
}

/// Rows of a batch as JSON objects, one per row.
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)
        .map_err(|e| Error::sink("JSON output", format!("cannot encode JSON: {e}")))?;
    w.finish()
        .map_err(|e| Error::sink("JSON output", format!("cannot encode JSON: {e}")))?;
    let buf = w.into_inner();
    let rows: Vec<Vec<u8>> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    if rows.len() != batch.num_rows() {
        return Err(Error::sink(
            "JSON output",
            format!(
                "internal: {} JSON lines for {} rows",
                rows.len(),
                batch.num_rows()
            ),
        ));
    }
    Ok(rows)
}

/// Log the failed tasks of records that were still written, and (without a place for failed
/// records) the failed records themselves, so that none disappears silently.
pub fn log_failures(out: &ChunkOutput, kept: bool) {
    for e in &out.errors {
        if e.written {
            tracing::warn!(
                record = %e.source,
                task = e.task.unwrap_or("-"),
                reason = %e.reason,
                "task failed; the record was written with this task's columns null"
            );
        } else if !kept {
            tracing::warn!(
                record = %e.source,
                stage = e.stage.as_str(),
                reason = %e.reason,
                "record failed and is not kept (set sink.errors.topic or sink.errors.path to keep failed records)"
            );
        }
    }
}

/// What a source needs to know of the rest of the pipeline.
pub struct SourceOptions<'a> {
    /// Input columns passed through to the output, in order.
    pub passthrough: &'a [String],
    /// Further text columns the tasks read (a question column, ...).
    pub text_columns: &'a [TextColumnRequest],
    /// Records per chunk.
    pub window: usize,
    /// The sink commits positions itself (exactly-once transactions).
    pub sink_commits: bool,
    /// Triggered to stop a streaming source gracefully.
    pub shutdown: Shutdown,
}

/// What a sink's configuration may know of the source it is paired with, in words every
/// connector shares.
#[derive(Debug, Clone)]
pub struct SourceFacts {
    /// The source connector's key (`parquet`, `kafka`).
    pub kind: &'static str,
    /// It streams until stopped and acknowledges durable output.
    pub streaming: bool,
    /// The stream's cluster and consumer group, when the source reads one.
    pub stream: Option<StreamFacts>,
}

/// The streaming system a source reads: a sink that writes to the same system, or stores the
/// source's positions with its output, uses these.
#[derive(Debug, Clone)]
pub struct StreamFacts {
    /// The cluster's bootstrap servers.
    pub servers: String,
    /// The consumer group.
    pub group: String,
    /// The client properties of the source (security settings a dead-letter producer shares).
    pub properties: std::collections::BTreeMap<String, String>,
}

/// A source connector's configuration: its checks and how it opens.
pub trait SourceSpec {
    /// What a sink may know of this source.
    fn facts(&self) -> SourceFacts;

    /// Checks serde cannot express, before anything is opened.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Start-up checks that need no data and no network (`validate` makes them too): a local
    /// input exists.
    fn preflight(&self) -> Result<()> {
        Ok(())
    }

    /// Open the source (files are listed and checked, a consumer subscribes).
    fn open(&self, opts: SourceOptions<'_>) -> Result<Box<dyn Source>>;
}

/// What opening a sink needs beside its own configuration.
pub struct SinkContext<'a> {
    /// The results' schema.
    pub schema: SchemaRef,
    /// The error output's schema ([`error_schema`]).
    pub error_schema: SchemaRef,
    /// The source's feedback channel (exactly-once sinks ask it for rewinds).
    pub link: Option<SourceLink>,
    /// Ends the sink's retries.
    pub shutdown: Shutdown,
    pub source: &'a SourceFacts,
    /// `sink.errors`.
    pub errors: Option<&'a ErrorSinkConfig>,
    /// Opens the error outputs `sink.errors` names.
    pub error_outputs: &'a dyn ErrorOutputs,
    /// The passages columns of the tasks that cut texts into passages (sinks that store one
    /// row per passage flatten the one there may be).
    pub passages: &'a [String],
}

/// A sink connector's configuration: its checks against the source and the shared sink keys,
/// and how it opens.
pub trait SinkSpec {
    /// Checks serde cannot express, before anything is opened (`sink.errors` itself is checked
    /// for every sink by [`ErrorSinkConfig::check`] before this).
    fn validate(&self, source: &SourceFacts, errors: Option<&ErrorSinkConfig>) -> Result<()>;

    /// The sink commits the source's positions itself, with its output (exactly-once
    /// transactions), so the source must not.
    fn commits_source_positions(&self) -> bool {
        false
    }

    /// Before any work (models load only after this): destinations that can be checked cheaply
    /// (an object store's credentials and bucket) answer, so a wrong secret fails at once.
    fn check_destinations(&self) -> Result<()> {
        Ok(())
    }

    /// The object store options of the sink's own files: an error file uses them unless
    /// `sink.errors.storage_options` is given.
    fn file_storage(&self) -> Option<&storage::StorageOptions> {
        None
    }

    /// Open the sink, with its place for failed records.
    fn open(&self, ctx: SinkContext<'_>) -> Result<Box<dyn Sink>>;
}

/// The text column read when none is configured.
pub(crate) fn default_text_column() -> String {
    "text".into()
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
    pub storage_options: Option<storage::StorageOptions>,
    /// Kafka source only, instead of `path`: dead-letter topic receiving each failed record's
    /// original key, value and headers plus the reason (see [schema.md](schema.md#dead-letters)).
    /// Required with `sink.kafka.exactly_once`.
    #[serde(default)]
    pub topic: Option<String>,
}

impl ErrorSinkConfig {
    /// Checks of `sink.errors` that hold for every sink.
    pub fn check(errors: Option<&ErrorSinkConfig>, source: &SourceFacts) -> Result<()> {
        let Some(e) = errors else {
            return Ok(());
        };
        if e.path.as_ref().is_some_and(|p| p.as_os_str().is_empty())
            || e.topic.as_ref().is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::config(
                "sink.errors: `path` or `topic` is empty; name the error file or the dead-letter topic, or remove sink.errors",
            ));
        }
        if e.path.is_some() == e.topic.is_some() {
            return Err(Error::config(
                "sink.errors: give either `path` (error Parquet) or `topic` (dead-letter topic)",
            ));
        }
        if e.topic.is_some() && source.stream.is_none() {
            return Err(Error::config(
                "sink.errors.topic needs a Kafka source (its brokers receive the dead letters); use sink.errors.path with a Parquet source",
            ));
        }
        Ok(())
    }
}

/// Failed records are counted and logged but kept nowhere: say so once at start-up.
pub fn warn_not_kept(fix: &str) {
    tracing::warn!(
        "sink.errors is not set: failed records are counted and logged but not kept ({fix})"
    );
}

/// Opens the places for failed records that a sink keeps beside its output
/// ([`errors`] implements it over `sink.errors` and the source).
pub trait ErrorOutputs {
    /// The dead-letter topic of `sink.errors.topic` on the source's cluster, when configured.
    fn dead_letter_topic(&self) -> Result<Option<Box<dyn ErrorOutput>>>;

    /// The error file of `sink.errors.path`, when configured.
    fn error_file(&self) -> Result<Option<Box<dyn ErrorOutput>>>;
}

/// What the configuration reference says of a connector beyond its own table: an introduction
/// and the mappings documented in sections of their own (key, schema name).
#[derive(Debug)]
pub struct ReferenceNotes {
    pub intro: &'static str,
    pub subsections: &'static [(&'static str, &'static str)],
}

/// A connector with nothing to add to its table.
pub const NO_NOTES: ReferenceNotes = ReferenceNotes {
    intro: "",
    subsections: &[],
};
