//! The Python connector: records handed in by a host program in the same process (the `bertflow`
//! Python package, and through it Spark's `mapInArrow` and Ray Data's `map_batches`), as Arrow
//! record batches, and results handed back the same way. Nothing is copied at the boundary: the
//! host passes batches through the Arrow C data interface.
//!
//! - [`config`]: `source.python` (text and id columns) and `sink.python`;
//! - [`source`]: a [`BatchSource`] cutting the host's batches into chunks;
//! - [`sink`]: a [`BatchSink`] handing each chunk's results and error rows back, either apart
//!   ([`ErrorMode::Separate`]) or with every record in one batch and an `errors` column
//!   ([`ErrorMode::Column`], for engines whose output is one table).
//!
//! The command line cannot run these connectors: a pipeline file naming them is run from Python
//! (`bertflow.Pipeline.from_yaml`), which also reads a file written for the Parquet source.

pub mod config;
pub mod sink;
pub mod source;
mod spec;

pub use self::config::{PythonSinkConfig, PythonSourceConfig};
pub use self::sink::{error_list_field, BatchOutput, BatchSink, ErrorMode, ERRORS_COLUMN};
pub use self::source::{BatchSource, Columns};
