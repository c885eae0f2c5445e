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
//! [`open_source`] and [`open_sink`] build the connectors a pipeline file names.

pub mod chunk_rows;
pub mod kafka;
pub mod parquet;
pub mod postgres;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use crossbeam_channel::{Receiver, Sender};

use crate::config::{PipelineConfig, SinkKind, SourceConfig};
use crate::error::{Error, Result};
use crate::record::{Chunk, Origin, Stage};

pub use self::kafka::{KafkaSink, KafkaSource};
pub use self::parquet::{ParquetSink, ParquetSource, RollingParquetSink};
pub use self::postgres::PostgresSink;

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

    /// The next stage cannot take a chunk yet: wait a little without reading ahead (a streaming
    /// source pauses fetching and keeps its group membership alive).
    fn wait(&mut self) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    /// The end of a run, after the sink finished: every chunk reported durable through the
    /// [`SourceLink`] is final (a streaming source commits it and leaves its group).
    fn close(&mut self) -> Result<()> {
        Ok(())
    }

    /// The channel the writer reports durable chunks on, for sources that acknowledge them.
    fn link(&self) -> Option<SourceLink> {
        None
    }

    /// Readiness: the source has work assigned (a streaming source is in its group).
    fn ready_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
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

/// The writer's end of a streaming source's feedback channel, with what the source's own
/// connector shares with its sink (e.g. the consumer group's state, for transactions).
#[derive(Clone)]
pub struct SourceLink {
    tx: Sender<Feedback>,
    context: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for SourceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLink").finish_non_exhaustive()
    }
}

impl SourceLink {
    /// A link and the receiving end the source keeps.
    pub fn channel() -> (SourceLink, Receiver<Feedback>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (SourceLink { tx, context: None }, rx)
    }

    /// Attach what the source's connector shares with its sink.
    pub fn with_context(mut self, context: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.context = Some(context);
        self
    }

    /// The shared context, if it is of type `T`.
    pub fn context<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.context.clone()?.downcast::<T>().ok()
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

    /// Called when no chunk arrived for a while: a sink may close files that are old enough or
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
    /// The question column of question answering, if any.
    pub question_column: Option<&'a str>,
    /// Records per chunk.
    pub window: usize,
    /// The sink commits positions itself (exactly-once transactions).
    pub sink_commits: bool,
    /// Set to stop a streaming source gracefully.
    pub shutdown: Arc<std::sync::atomic::AtomicBool>,
}

/// Open the source a pipeline names.
pub fn open_source(cfg: &PipelineConfig, opts: SourceOptions<'_>) -> Result<Box<dyn Source>> {
    match &cfg.source {
        SourceConfig::Kafka(k) => Ok(Box::new(KafkaSource::open(k, &opts)?)),
        SourceConfig::Parquet(p) => {
            let source =
                ParquetSource::open(p, opts.passthrough, opts.question_column, opts.window)?;
            Ok(
                match p.shard.as_deref().map(parquet::Shard::parse).transpose()? {
                    Some(shard) => Box::new(source.with_shard(shard)),
                    None => Box::new(source),
                },
            )
        }
    }
}

/// The passages column of chunked embeddings, when the pipeline has one.
fn chunks_column(cfg: &PipelineConfig) -> Option<String> {
    cfg.tasks
        .embed
        .iter()
        .find_map(|e| e.chunking.as_ref().map(|c| c.column.clone()))
}

/// Results already flattened to one row per passage.
fn schema_is_flat(schema: &SchemaRef) -> bool {
    schema.index_of(chunk_rows::FLAT_COLUMNS[0]).is_ok()
}

/// Before any work (models are loaded only after this): object store outputs must answer with
/// the configured credentials and their buckets exist, so a wrong secret or bucket fails at once.
pub fn check_destinations(cfg: &PipelineConfig) -> Result<()> {
    let errors = cfg.sink.errors.as_ref();
    let sink_options = cfg.sink.parquet().map(|p| p.storage_options.clone());
    if let Some(p) = cfg.sink.parquet() {
        parquet::sink::check_output(&p.path, &p.storage_options)?;
    }
    if let Some(path) = errors.and_then(|e| e.path.as_ref()) {
        let options = errors
            .and_then(|e| e.storage_options.clone())
            .or(sink_options)
            .unwrap_or_default();
        parquet::sink::check_output(path, &options)?;
    }
    Ok(())
}

/// Open the sink a pipeline names, with its error output. `link` is the source's feedback
/// channel (exactly-once sinks ask it for rewinds); `shutdown` stops a sink's retries.
pub fn open_sink(
    cfg: &PipelineConfig,
    schema: SchemaRef,
    err_schema: SchemaRef,
    link: Option<SourceLink>,
    shutdown: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Box<dyn Sink>> {
    let errors = cfg.sink.errors.as_ref();
    let dlq_topic = errors.and_then(|e| e.topic.clone());
    let error_path = errors.and_then(|e| e.path.clone());
    let error_options = errors.and_then(|e| e.storage_options.clone());
    let source_kafka = cfg.source.kafka();
    match &cfg.sink.kind {
        SinkKind::Kafka(k) => {
            let servers = k
                .bootstrap_servers
                .clone()
                .or_else(|| source_kafka.map(|s| s.bootstrap_servers.clone()))
                .ok_or_else(|| Error::config("sink.kafka.bootstrap_servers is required"))?;
            let txn_id = k.exactly_once.then(|| {
                k.transactional_id.clone().unwrap_or_else(|| {
                    let group = source_kafka
                        .map(|s| s.group_id.as_str())
                        .unwrap_or("bertflow");
                    format!("bertflow-{group}-{}", kafka::client::host_name())
                })
            });
            let error_file: Option<Box<dyn ErrorOutput>> = match &error_path {
                Some(p) => Some(Box::new(parquet::ErrorFile::new(
                    p.clone(),
                    err_schema,
                    error_options.unwrap_or_default(),
                )?)),
                None => None,
            };
            if dlq_topic.is_none() && error_file.is_none() {
                tracing::warn!(
                    "sink.errors is not set: failed records are counted and logged but not kept (set sink.errors.topic or sink.errors.path)"
                );
            }
            Ok(Box::new(KafkaSink::new(
                k, &servers, dlq_topic, error_file, txn_id, link,
            )?))
        }
        SinkKind::Postgres(_) if !schema_is_flat(&schema) && chunks_column(cfg).is_some() => {
            // Passages go to Postgres one row each, keyed by id and passage index.
            let column = chunks_column(cfg).expect("checked");
            let flat = chunk_rows::flat_schema(&schema, &column)?;
            let inner = open_sink(cfg, flat.clone(), err_schema, link, shutdown)?;
            Ok(Box::new(chunk_rows::OneRowPerChunk {
                inner,
                column,
                schema: flat,
            }))
        }
        SinkKind::Postgres(p) => {
            let errors: Option<Box<dyn ErrorOutput>> = match (&dlq_topic, &error_path, source_kafka)
            {
                (Some(t), _, Some(k)) => Some(Box::new(kafka::DeadLetterTopic::new(
                    t,
                    &k.bootstrap_servers,
                    &k.properties,
                )?)),
                (_, Some(path), _) => Some(Box::new(parquet::ErrorFile::new(
                    path.clone(),
                    err_schema,
                    error_options.unwrap_or_default(),
                )?)),
                _ => None,
            };
            if errors.is_none() {
                tracing::warn!(
                    "sink.errors is not set: failed records are counted and logged but not kept (set sink.errors.path, or sink.errors.topic with a Kafka source)"
                );
            }
            Ok(Box::new(PostgresSink::new(
                p,
                schema,
                postgres::PostgresSinkOptions {
                    group: source_kafka.map(|k| k.group_id.clone()),
                    errors,
                    streaming: cfg.source.is_streaming(),
                    shutdown,
                },
            )?))
        }
        SinkKind::Parquet(p) if p.one_row_per_chunk => {
            let column = chunks_column(cfg).ok_or_else(|| {
                    Error::config(
                        "sink.parquet.one_row_per_chunk needs tasks.embed.chunking (passages to write one per row)",
                    )
                })?;
            let flat = chunk_rows::flat_schema(&schema, &column)?;
            let mut plain = cfg.clone();
            if let SinkKind::Parquet(q) = &mut plain.sink.kind {
                q.one_row_per_chunk = false;
            }
            let inner = open_sink(&plain, flat.clone(), err_schema, link, shutdown)?;
            Ok(Box::new(chunk_rows::OneRowPerChunk {
                inner,
                column,
                schema: flat,
            }))
        }
        SinkKind::Parquet(p) => {
            if let Some(kafka_src) = source_kafka {
                let dlq: Option<Box<dyn ErrorOutput>> = match &dlq_topic {
                    Some(t) => Some(Box::new(kafka::DeadLetterTopic::new(
                        t,
                        &kafka_src.bootstrap_servers,
                        &kafka_src.properties,
                    )?)),
                    None => None,
                };
                return Ok(Box::new(RollingParquetSink::new(
                    p,
                    schema,
                    err_schema,
                    error_path,
                    error_options,
                    dlq,
                )?));
            }
            Ok(Box::new(ParquetSink::new(
                p,
                schema,
                err_schema,
                error_path,
                error_options,
            )?))
        }
    }
}
