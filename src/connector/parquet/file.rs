//! One output Parquet file, written under a temporary name (`.<name>.inprogress`) and renamed
//! into place when complete, so a reader never sees a partial file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::{Compression, ParquetSinkConfig};
use crate::error::{Error, Result};

/// A Parquet file being written under a temporary name.
pub(crate) struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    pub(crate) dest: PathBuf,
    pub(crate) rows: usize,
}

fn tmp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output.parquet".into());
    dest.with_file_name(format!(".{name}.inprogress"))
}

impl OpenFile {
    pub(crate) fn create(
        dest: PathBuf,
        schema: &SchemaRef,
        props: &WriterProperties,
    ) -> Result<Self> {
        let loc = dest.display().to_string();
        if let Some(parent) = dest.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::sink(
                        &loc,
                        format!("cannot create directory {}: {e}", parent.display()),
                    )
                })?;
            }
        }
        let tmp = tmp_path(&dest);
        let file = File::create(&tmp)
            .map_err(|e| Error::sink(&loc, format!("cannot create {}: {e}", tmp.display())))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))
            .map_err(|e| Error::sink(&loc, e.to_string()))?;
        Ok(OpenFile {
            writer,
            tmp,
            dest,
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        self.writer
            .write(batch)
            .map_err(|e| Error::sink(self.dest.display().to_string(), e.to_string()))
    }

    /// Bytes written so far plus those buffered for the current row group.
    pub(crate) fn bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    /// Close, sync and rename into place.
    pub(crate) fn commit(self) -> Result<PathBuf> {
        let loc = self.dest.display().to_string();
        let file = self
            .writer
            .into_inner()
            .map_err(|e| Error::sink(&loc, e.to_string()))?;
        file.sync_all()
            .map_err(|e| Error::sink(&loc, format!("cannot sync: {e}")))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| Error::sink(&loc, format!("cannot rename into place: {e}")))?;
        Ok(self.dest)
    }

    pub(crate) fn discard(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.tmp);
    }
}

pub(crate) fn writer_properties(cfg: &ParquetSinkConfig) -> WriterProperties {
    let compression = match cfg.compression {
        Compression::None => PqCompression::UNCOMPRESSED,
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(cfg.row_group_rows))
        .set_created_by(format!("bertflow {}", env!("CARGO_PKG_VERSION")))
        .build()
}
