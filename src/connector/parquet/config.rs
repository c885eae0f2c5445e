//! Configuration of the Parquet connector: `source.parquet` and `sink.parquet`, and sharding.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::default_text_column;
use crate::error::{Error, Result};

/// Parquet files: one file, a glob or a directory, read in name order.
///
/// Every file is checked before work starts: readable, holds the text, id and passthrough columns,
/// and the id and passthrough columns have the same type in every file. A file that fails the
/// check, or that turns out to be corrupt while reading, stops the job with a message naming it; no
/// output file is left behind. Per-record problems (null text, non-string column, invalid UTF-8) go
/// to the error output.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// A Parquet file, a glob (`data/*.parquet`) or a directory (every `*.parquet` in it). Files
    /// are read in name order.
    pub path: String,
    /// Column with the text. Strings (`Utf8`, `LargeUtf8`, `Utf8View`, dictionary) or binary
    /// holding UTF-8.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column with the record id, written to the output `id` column with its type. When absent,
    /// `id` is the row number (`UInt64`, 0-based, counted across all files in name order).
    #[serde(default)]
    pub id_column: Option<String>,
    /// Read only shard `i` (0-based) of `N`: the files whose position in name order is `i` modulo
    /// `N` (row-number ids stay those of the whole input). The output and error paths get the
    /// shard: `{shard}` in a path becomes `i`; without it a file gets `.shard-i-of-N` before its
    /// extension and a directory a `shard-i-of-N/` subdirectory. Also `--shard i/N` or
    /// `BERTFLOW_SHARD`. See [scaling.md](scaling.md).
    ///
    /// Type: `i/N`
    #[serde(default)]
    pub shard: Option<String>,
}

/// One of `count` workers of a sharded batch job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            Error::config(format!(
                "shard '{s}': write i/N with 0 <= i < N, e.g. 0/4 (in a Kubernetes Indexed Job: $JOB_COMPLETION_INDEX/N)"
            ))
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// The output path of this shard: `{shard}` in `path` becomes the index; without it, a
    /// file gets `.shard-i-of-N` before its extension and a directory a `shard-i-of-N`
    /// subdirectory, so that shards never write to the same place.
    pub fn path(&self, path: &Path, is_dir: bool) -> PathBuf {
        let s = path.to_string_lossy();
        if s.contains("{shard}") {
            return PathBuf::from(s.replace("{shard}", &self.index.to_string()));
        }
        let tag = format!("shard-{}-of-{}", self.index, self.count);
        if is_dir {
            return path.join(tag);
        }
        let stem = path
            .file_stem()
            .map(|x| x.to_string_lossy().into_owned())
            .unwrap_or_default();
        match path.extension() {
            Some(ext) => path.with_file_name(format!("{stem}.{tag}.{}", ext.to_string_lossy())),
            None => path.with_file_name(format!("{stem}.{tag}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Snappy,
    Zstd,
}

/// A Parquet file, a directory of part files, or (Kafka source) rolling per-partition files.
///
/// Files are written as `.<name>.inprogress` and renamed into place once complete and synced.
///
/// With a Kafka source the directory receives one file per partition and roll, named
/// `<topic>-<partition>-<first offset>-<last offset>.parquet` (offsets zero-padded to 20 digits); a
/// name that exists already (a restart that read the same offsets again) gets `.1`, `.2`, ... so
/// nothing is ever overwritten. All open files roll together; the offsets of their records are
/// committed only after the rename. Temporary files of a killed worker stay as hidden
/// `.…inprogress` files (readers that skip dot-files, such as Arrow datasets and Spark, ignore
/// them).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Output file. With `rows_per_file`, a directory that receives `part-00000.parquet`,
    /// `part-00001.parquet`, ... (part files of an earlier run beyond the new last one are
    /// removed). With a Kafka source, always a directory (see below).
    ///
    /// Type: path
    pub path: PathBuf,
    /// Parquet compression.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Start a new part file after this many rows. With a Kafka source: roll once the open files
    /// hold this many rows.
    #[serde(default)]
    pub rows_per_file: Option<usize>,
    /// Rows per Parquet row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Kafka source only: roll at least this often, so offsets are committed at low traffic.
    #[serde(default = "default_roll_interval_ms")]
    pub roll_interval_ms: u64,
    /// Kafka source only: roll once the open files hold about this many bytes.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
}

fn default_roll_interval_ms() -> u64 {
    10_000
}

fn default_compression() -> Compression {
    Compression::Zstd
}
fn default_row_group_rows() -> usize {
    8192
}
