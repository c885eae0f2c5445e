//! The Parquet connector: everything bertflow does with Parquet files.
//!
//! - [`config`]: `source.parquet`, `sink.parquet` and sharding;
//! - [`source`]: reading files, globs and directories in row batches;
//! - [`file`]: one output file written under a temporary name and renamed when complete;
//! - [`sink`]: the batch sink (one file or part files, and the error file);
//! - [`rolling`]: per-partition rolling files for streaming sources;
//! - [`error_file`]: an error file beside a sink that has none (a Kafka sink of a batch job);
//! - [`store`]: object storage (`s3://`, `gs://`, `az://`): locations, listing, multipart writes.
//!
//! Every path may be a local path or an object store URL; outputs may be Parquet or Arrow IPC.

pub mod config;
pub mod error_file;
pub mod file;
pub mod rolling;
pub mod sink;
pub mod source;
pub mod spec;

pub use self::config::{FileFormat, Shard};
pub use self::error_file::ErrorFile;
pub use self::rolling::RollingParquetSink;
pub use self::sink::ParquetSink;
pub use self::source::ParquetSource;
