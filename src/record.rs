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
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Tokenize => "tokenize",
            Stage::Model => "model",
            Stage::Task => "task",
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

/// Where a chunk's records came from, to name them in messages and in the error output.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Rows `first_row..` of a file.
    File { path: Arc<str>, first_row: u64 },
    /// Messages of Kafka partitions, one entry per record.
    Kafka(Arc<KafkaRecords>),
}

impl Origin {
    /// Human-readable position of the record at `row` inside the chunk.
    pub fn describe(&self, row: usize) -> String {
        match self {
            Origin::File { path, first_row } => format!("{path} row {}", first_row + row as u64),
            Origin::Kafka(k) => k.messages[row].position(),
        }
    }

    pub fn kafka(&self) -> Option<&Arc<KafkaRecords>> {
        match self {
            Origin::Kafka(k) => Some(k),
            Origin::File { .. } => None,
        }
    }
}

/// One consumed Kafka message as it arrived: where it was and its original bytes (for the
/// dead-letter output and for keying results).
#[derive(Debug, Clone)]
pub struct KafkaMessage {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the message has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaMessage {
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// The Kafka messages of one chunk and what is needed to commit them.
pub struct KafkaRecords {
    pub messages: Vec<KafkaMessage>,
    /// Per partition, the offset to commit once every record of the chunk is durable (the
    /// highest offset + 1).
    pub next_offsets: Vec<(Arc<str>, i32, i64)>,
    /// Rewind epoch the chunk was read in; chunks of an older epoch are discarded (exactly-once).
    pub epoch: u64,
    /// Consumer group state when the chunk was read, for offsets sent in a transaction.
    pub group: Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>,
}

impl fmt::Debug for KafkaRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaRecords")
            .field("messages", &self.messages.len())
            .field("next_offsets", &self.next_offsets)
            .field("epoch", &self.epoch)
            .finish()
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
    /// Question of each record, when the source reads a question column (question answering).
    pub questions: Option<Vec<Option<Arc<str>>>>,
    /// Input columns passed through to the output, in `sink.passthrough` order.
    pub passthrough: Vec<ArrayRef>,
    /// Records that failed at the source.
    pub errors: Vec<RecordError>,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}
