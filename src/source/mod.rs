//! Sources: where records come from. A source yields [`Chunk`]s of records in order ;
//! streaming sources are told which chunks are durable through their acker.

pub mod kafka;
pub mod offsets;
pub mod parquet;

use arrow::datatypes::FieldRef;

use crate::error::Result;
use crate::record::Chunk;

pub use self::kafka::KafkaSource;
pub use self::parquet::ParquetSource;

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

    /// The chunk `seq` was handed to the next stage.
    fn sent(&mut self, _seq: u64) {}

    /// The next stage cannot take a chunk yet: wait a little without reading ahead (a streaming
    /// source pauses fetching and keeps its group membership alive).
    fn wait(&mut self) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
