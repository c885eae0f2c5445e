//! Configuration of the Python connector: `source.python` and `sink.python`.

use serde::{Deserialize, Serialize};

use crate::connector::default_text_column;

/// Arrow record batches handed in by Python (`bertflow.Pipeline.enrich`, Spark, Ray); see
/// [python.md](python.md). The command line cannot read this source.
///
/// Per-record problems (null text, a non-string column, invalid UTF-8) go to the error output as
/// with Parquet; a batch without the text or id column is refused with a Python exception naming
/// the column.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonSourceConfig {
    /// Column with the text. Strings (`Utf8`, `LargeUtf8`, `Utf8View`, dictionary) or binary
    /// holding UTF-8.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column with the record id, written to the output `id` column with its type. When absent,
    /// `id` is the row number within the call (`UInt64`, 0-based).
    #[serde(default)]
    pub id_column: Option<String>,
}

/// Results handed back to Python as Arrow record batches (`pyarrow`), one per chunk, in input
/// order; failed records come back beside them (see [python.md](python.md)). The command line
/// cannot write this sink.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonSinkConfig {
    /// One row per passage instead of one per record, as `sink.parquet.one_row_per_chunk`
    /// (needs a task with `chunking`).
    ///
    /// Default: `false`
    #[serde(default)]
    pub one_row_per_chunk: bool,
}
