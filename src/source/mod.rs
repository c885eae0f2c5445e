//! Sources: where records come from. A source yields [`Chunk`]s of records in order and is told
//! when the output holding a chunk is durable ([`Source::ack`]).

pub mod parquet;

use arrow::datatypes::FieldRef;

use crate::error::Result;
use crate::record::Chunk;

pub use self::parquet::ParquetSource;

pub trait Source: Send {
    /// Short description for logs and the summary (e.g. the file list).
    fn describe(&self) -> String;

    /// Total number of records, when known up front (drives the progress bar).
    fn size_hint(&self) -> Option<u64>;

    /// Output fields the source contributes: `id` first, then the passthrough columns.
    fn fields(&self) -> Vec<FieldRef>;

    /// The next chunk of records, or `None` at the end of the input.
    fn next_chunk(&mut self) -> Result<Option<Chunk>>;

    /// Every record of every chunk up to and including `seq` is durable in the sink.
    fn ack(&mut self, seq: u64) -> Result<()>;
}
