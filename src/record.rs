//! What flows between stages: a [`Chunk`] of records read together, and the per-record errors
//! that go to the error output instead of the results.

use std::fmt;
use std::sync::Arc;

use arrow::array::ArrayRef;

/// The pipeline stage at which a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Source,
    Tokenize,
    Model,
    Task,
    Sink,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Tokenize => "tokenize",
            Stage::Model => "model",
            Stage::Task => "task",
            Stage::Sink => "sink",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one record could not be processed. `row` indexes the record inside its chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    pub row: usize,
    pub stage: Stage,
    pub reason: String,
}

impl RecordError {
    pub fn new(row: usize, stage: Stage, reason: impl Into<String>) -> Self {
        RecordError {
            row,
            stage,
            reason: reason.into(),
        }
    }
}

/// Where a record of a stream is: stream (topic), partition and offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub stream: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.stream, self.partition, self.offset)
    }
}

/// The records of one chunk of a streaming source, as the source's own connector knows them
/// (its sink downcasts through [`StreamOrigin::as_any`] for what only it needs).
pub trait StreamOrigin: fmt::Debug + Send + Sync + 'static {
    /// Where the record at `row` of the chunk is.
    fn position(&self, row: usize) -> Position;

    /// Rewind epoch the chunk was read in (chunks of an older epoch are stale).
    fn epoch(&self) -> u64;

    /// Per partition of the chunk, the position after its last record (where reading goes on
    /// once the chunk is durable).
    fn next_positions(&self) -> Vec<Position>;

    fn as_any(&self) -> &dyn std::any::Any;
}

/// Where a chunk's records came from, to name them in messages and in the error output.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Rows `first_row..` of a file.
    File { path: Arc<str>, first_row: u64 },
    /// Records of a stream's partitions, one entry per record.
    Stream(Arc<dyn StreamOrigin>),
}

impl Origin {
    /// Human-readable position of the record at `row` inside the chunk.
    pub fn describe(&self, row: usize) -> String {
        match self {
            Origin::File { path, first_row } => format!("{path} row {}", first_row + row as u64),
            Origin::Stream(s) => s.position(row).to_string(),
        }
    }

    pub fn stream(&self) -> Option<&Arc<dyn StreamOrigin>> {
        match self {
            Origin::Stream(s) => Some(s),
            Origin::File { .. } => None,
        }
    }
}

/// Records read together from a source. Every vector and array has one entry per record, in
/// source order; the chunk's `seq` orders chunks within a job and is what the source is
/// acknowledged with once the output holding it is durable.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub seq: u64,
    pub origin: Origin,
    /// Record ids, as in the input (or row numbers).
    pub ids: ArrayRef,
    /// Text of each record; `None` where the source already failed the record (see `errors`).
    pub texts: Vec<Option<Arc<str>>>,
    /// Further text columns the tasks read beside the text (a question, a hypothesis, a query),
    /// by name; `None` where the value is null or not text.
    pub columns: Vec<TextColumn>,
    /// Input columns passed through to the output, in `sink.passthrough` order.
    pub passthrough: Vec<ArrayRef>,
    /// Records that failed at the source.
    pub errors: Vec<RecordError>,
}

/// A text column a task reads beside the record's text, as a source is asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumnRequest {
    /// The column (or, with a JSON stream, the field) name.
    pub name: String,
    /// What the task reads in it, for messages (`question`).
    pub role: &'static str,
    /// The configuration key that names it, for messages (`tasks.qa.question_column`).
    pub key: String,
}

/// One named text column of a chunk, one value per record.
#[derive(Debug, Clone)]
pub struct TextColumn {
    pub name: Arc<str>,
    pub values: Vec<Option<Arc<str>>>,
}

impl Chunk {
    /// The values of the text column `name`, when the source read it.
    pub fn column(&self, name: &str) -> Option<&[Option<Arc<str>>]> {
        self.columns
            .iter()
            .find(|c| &*c.name == name)
            .map(|c| c.values.as_slice())
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Field metadata key naming an embedding column's element type for sinks (`float16`,
/// `binary`, `ubinary`; absent for float32).
pub const EMBEDDING_TYPE_KEY: &str = "bertflow.embedding";
/// Field metadata key with the number of dimensions a packed bit vector holds.
pub const EMBEDDING_DIMENSIONS_KEY: &str = "bertflow.dimensions";
/// Field metadata key with the dimension (vocabulary size) of a sparse vector column.
pub const SPARSE_DIMENSIONS_KEY: &str = "bertflow.sparse_dimensions";
/// Field metadata key with a sparse vector column's `max_active_dims`, when set.
pub const SPARSE_MAX_ACTIVE_KEY: &str = "bertflow.max_active_dims";
