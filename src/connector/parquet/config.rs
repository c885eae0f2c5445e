//! Configuration of the Parquet connector: `source.parquet` and `sink.parquet`, and sharding.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::connector::default_text_column;
use crate::connector::storage::StorageOptions;
use crate::error::{Error, Result};

/// Parquet files: one file, a glob or a directory, read in name order, on local disk or in an
/// object store (`s3://`, `gs://`, `az://`; see [object-storage.md](object-storage.md)).
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
    /// are read in name order. Also a URL: `s3://bucket/key`, `gs://...`, `az://...` or
    /// `file://...`, where a prefix (`s3://bucket/docs/`) means every `*.parquet` object directly
    /// under it and a glob may hold `*`, `?` and `[...]` (`s3://bucket/docs/2026-*/*.parquet`).
    /// Objects are read by row group with ranged requests, never downloaded whole.
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
    /// Options of the object store client for a URL `path`: `endpoint`, `region`, `allow_http`,
    /// `virtual_hosted_style_request`, credentials, ... (the keys of the `object_store` crate for
    /// the URL's scheme; unknown keys are refused), and `max_retries` / `retry_timeout`
    /// (seconds). Credentials otherwise come from the environment, `~/.aws` profiles or instance
    /// metadata. See [object-storage.md](object-storage.md).
    ///
    /// Type: map of string to string
    #[serde(default)]
    pub storage_options: StorageOptions,
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

/// The file format of an output.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Apache Parquet (`.parquet`).
    #[default]
    Parquet,
    /// Arrow IPC file, also called Feather v2 (`.arrow`): the same schema, read by pyarrow
    /// (`pyarrow.ipc.open_file`, `pyarrow.feather.read_table`), Polars (`read_ipc`) and DuckDB.
    ArrowIpc,
}

impl FileFormat {
    /// The file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::ArrowIpc => "arrow",
        }
    }

    /// The format an explicitly named file asks for by its extension (`.arrow`, `.feather`,
    /// `.ipc` are Arrow IPC), if any.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(FileFormat::Parquet),
            "arrow" | "feather" | "ipc" => Some(FileFormat::ArrowIpc),
            _ => None,
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

/// A Parquet (or Arrow IPC) file, a directory of part files, or (Kafka source) rolling
/// per-partition files, on local disk or in an object store (`s3://`, `gs://`, `az://`).
///
/// Local files are written as `.<name>.inprogress` and renamed into place once complete and
/// synced. Objects are written by multipart upload and appear only once complete; a failed or
/// stopped job aborts its uploads (rolling files of a Kafka source are uploaded under a hidden
/// `.<name>.inprogress` key and moved to their final key when they roll).
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
    /// removed). With a Kafka source, always a directory (see below). Also a URL:
    /// `s3://bucket/key`, `gs://...`, `az://...`, `file://...` (a "directory" is then a prefix).
    ///
    /// Type: path or URL
    pub path: PathBuf,
    /// With chunked embeddings (`tasks.embed.chunking`): one row per passage instead of a
    /// nested list per record: the record's other columns repeated, then `chunk_index`,
    /// `chunk_start`, `chunk_end`, `chunk_embedding` in place of the passages column. A record
    /// with no passage has no row.
    #[serde(default)]
    pub one_row_per_chunk: bool,
    /// `parquet`, or `arrow_ipc` for Arrow IPC files (Feather v2, `.arrow`) with the same
    /// schema. Part files, rolling files and the default error file take the format's extension.
    #[serde(default)]
    pub format: FileFormat,
    /// Compression: of Parquet pages, or of Arrow IPC buffers (`zstd` or `none`; Arrow IPC has
    /// no `snappy`).
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// Start a new part file after this many rows. With a Kafka source: roll once the open files
    /// hold this many rows.
    #[serde(default)]
    pub rows_per_file: Option<usize>,
    /// Rows per Parquet row group (per record batch of an Arrow IPC file).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Kafka source only: roll at least this often, so offsets are committed at low traffic.
    #[serde(default = "default_roll_interval_ms")]
    pub roll_interval_ms: u64,
    /// Kafka source only: roll once the open files hold about this many bytes.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// Options of the object store client for a URL `path`, as for `source.parquet.storage_options`.
    ///
    /// Type: map of string to string
    #[serde(default)]
    pub storage_options: StorageOptions,
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
