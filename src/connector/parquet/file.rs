//! One output file (Parquet or Arrow IPC), local or in an object store, that a reader never sees
//! partial: a local file is written under a temporary name (`.<name>.inprogress`) and renamed
//! into place when complete; an object is written by multipart upload, which makes it appear
//! only when complete (or under a temporary key, moved into place, when its final name is known
//! only at the end).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::{FileWriter as IpcWriter, IpcWriteOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::config::{Compression, FileFormat, ParquetSinkConfig};
use crate::connector::storage::{self as store, Location, ObjectWriter, StorageOptions};
use crate::error::{Error, Result};

/// How output files are written: format, compression, row groups, store options.
#[derive(Clone)]
pub(crate) struct OutputFormat {
    pub(crate) format: FileFormat,
    props: WriterProperties,
    ipc: IpcWriteOptions,
    row_group_rows: usize,
    pub(crate) storage_options: StorageOptions,
}

impl OutputFormat {
    pub(crate) fn new(cfg: &ParquetSinkConfig) -> Result<Self> {
        Self::with(
            cfg.format,
            cfg.compression,
            cfg.row_group_rows,
            cfg.storage_options.clone(),
        )
    }

    pub(crate) fn with(
        format: FileFormat,
        compression: Compression,
        row_group_rows: usize,
        storage_options: StorageOptions,
    ) -> Result<Self> {
        let pq = match compression {
            Compression::None => PqCompression::UNCOMPRESSED,
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Zstd => PqCompression::ZSTD(ZstdLevel::default()),
        };
        let props = WriterProperties::builder()
            .set_compression(pq)
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_created_by(format!("bertflow {}", env!("CARGO_PKG_VERSION")))
            .build();
        let ipc_compression =
            match (format, compression) {
                (FileFormat::ArrowIpc, Compression::Snappy) => return Err(Error::config(
                    "sink.parquet.compression: Arrow IPC files support zstd or none, not snappy",
                )),
                (_, Compression::Zstd) => Some(arrow::ipc::CompressionType::ZSTD),
                _ => None,
            };
        let ipc = IpcWriteOptions::default()
            .try_with_compression(ipc_compression)
            .map_err(|e| Error::config(format!("Arrow IPC compression: {e}")))?;
        Ok(OutputFormat {
            format,
            props,
            ipc,
            row_group_rows: row_group_rows.max(1),
            storage_options,
        })
    }

    /// The same settings for a file named explicitly: its extension picks the format.
    pub(crate) fn for_path(&self, path: &Path) -> Self {
        let mut f = self.clone();
        if let Some(format) = FileFormat::from_path(path) {
            f.format = format;
        }
        f
    }

    pub(crate) fn extension(&self) -> &'static str {
        self.format.extension()
    }
}

/// Where the bytes go: a local temporary file, or an upload.
enum Target {
    Local(File),
    Object(ObjectWriter),
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Local(f) => f.write(buf),
            Target::Object(o) => o.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::Local(f) => f.flush(),
            Target::Object(o) => o.flush(),
        }
    }
}

enum Writer {
    Parquet(ArrowWriter<Target>),
    Ipc {
        writer: IpcWriter<Counted>,
        /// Batches gathered into one record batch of `row_group_rows`.
        pending: Vec<RecordBatch>,
        pending_rows: usize,
    },
}

/// Counts the bytes an Arrow IPC writer has written.
struct Counted {
    inner: Target,
    bytes: u64,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An output file being written.
pub(crate) struct OpenFile {
    writer: Writer,
    /// Where the bytes are being written (a temporary name, or the destination itself).
    tmp: Location,
    /// The final place; may be changed before [`OpenFile::commit`] when staged.
    pub(crate) dest: Location,
    row_group_rows: usize,
    pub(crate) rows: usize,
}

fn tmp_name(dest: &Location) -> String {
    let name = dest.file_name();
    let name = if name.is_empty() {
        "output".to_string()
    } else {
        name
    };
    format!(".{name}.inprogress")
}

impl OpenFile {
    /// Start writing `dest`. `staged`: the final name is decided at commit (set `dest` before),
    /// so an object is uploaded under a temporary key and moved into place.
    pub(crate) fn create(
        dest: &Path,
        schema: &SchemaRef,
        format: &OutputFormat,
        staged: bool,
    ) -> Result<Self> {
        let dest = Location::parse(&dest.to_string_lossy(), &format.storage_options)?;
        let loc = dest.to_string();
        let (tmp, target) = match &dest {
            Location::Local(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::sink(
                            &loc,
                            format!("cannot create directory {}: {e}", parent.display()),
                        )
                    })?;
                }
                let tmp = dest.with_file_name(&tmp_name(&dest));
                let Location::Local(tmp_path) = &tmp else {
                    unreachable!("local")
                };
                let file = File::create(tmp_path).map_err(|e| {
                    Error::sink(&loc, format!("cannot create {}: {e}", tmp_path.display()))
                })?;
                (tmp, Target::Local(file))
            }
            Location::Object(_) => {
                let tmp = if staged {
                    dest.with_file_name(&tmp_name(&dest))
                } else {
                    dest.clone()
                };
                let Location::Object(o) = &tmp else {
                    unreachable!("object")
                };
                (tmp.clone(), Target::Object(ObjectWriter::new(o.clone())))
            }
        };
        let writer = match format.format {
            FileFormat::Parquet => Writer::Parquet(
                ArrowWriter::try_new(target, schema.clone(), Some(format.props.clone()))
                    .map_err(|e| Error::sink(&loc, e.to_string()))?,
            ),
            FileFormat::ArrowIpc => Writer::Ipc {
                writer: IpcWriter::try_new_with_options(
                    Counted {
                        inner: target,
                        bytes: 0,
                    },
                    schema,
                    format.ipc.clone(),
                )
                .map_err(|e| Error::sink(&loc, e.to_string()))?,
                pending: Vec::new(),
                pending_rows: 0,
            },
        };
        Ok(OpenFile {
            writer,
            tmp,
            dest,
            row_group_rows: format.row_group_rows,
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        let loc = || self.dest.to_string();
        match &mut self.writer {
            Writer::Parquet(w) => w
                .write(batch)
                .map_err(|e| Error::sink(loc(), e.to_string())),
            Writer::Ipc {
                pending,
                pending_rows,
                ..
            } => {
                pending.push(batch.clone());
                *pending_rows += batch.num_rows();
                if *pending_rows >= self.row_group_rows {
                    self.flush_ipc()?;
                }
                Ok(())
            }
        }
    }

    fn flush_ipc(&mut self) -> Result<()> {
        let loc = self.dest.to_string();
        if let Writer::Ipc {
            writer,
            pending,
            pending_rows,
        } = &mut self.writer
        {
            if pending.is_empty() {
                return Ok(());
            }
            let schema = pending[0].schema();
            let batch = arrow::compute::concat_batches(&schema, pending.iter())
                .map_err(|e| Error::sink(&loc, e.to_string()))?;
            pending.clear();
            *pending_rows = 0;
            writer
                .write(&batch)
                .map_err(|e| Error::sink(&loc, e.to_string()))?;
        }
        Ok(())
    }

    /// Bytes written so far plus those buffered for the current row group.
    pub(crate) fn bytes(&self) -> u64 {
        match &self.writer {
            Writer::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            Writer::Ipc {
                writer, pending, ..
            } => {
                writer.get_ref().bytes
                    + pending
                        .iter()
                        .map(|b| b.get_array_memory_size() as u64)
                        .sum::<u64>()
            }
        }
    }

    /// Close and put into place: sync and rename a local file; complete an upload (and move a
    /// staged object to `dest`). Returns where the file went. On failure nothing is left: the
    /// local temporary file is removed, an upload aborted.
    pub(crate) fn commit(self) -> Result<PathBuf> {
        let tmp = self.tmp.clone();
        let r = self.commit_inner();
        if r.is_err() && !tmp.is_remote() {
            let _ = tmp.remove();
        }
        r
    }

    fn commit_inner(mut self) -> Result<PathBuf> {
        let loc = self.dest.to_string();
        self.flush_ipc()?;
        let target = match self.writer {
            Writer::Parquet(w) => w
                .into_inner()
                .map_err(|e| Error::sink(&loc, e.to_string()))?,
            Writer::Ipc { mut writer, .. } => {
                writer
                    .finish()
                    .map_err(|e| Error::sink(&loc, e.to_string()))?;
                writer
                    .into_inner()
                    .map_err(|e| Error::sink(&loc, e.to_string()))?
                    .inner
            }
        };
        match target {
            Target::Local(file) => {
                file.sync_all()
                    .map_err(|e| Error::sink(&loc, format!("cannot sync: {e}")))?;
                drop(file);
                let (Location::Local(tmp), Location::Local(dest)) = (&self.tmp, &self.dest) else {
                    unreachable!("local file, local places")
                };
                std::fs::rename(tmp, dest)
                    .map_err(|e| Error::sink(&loc, format!("cannot rename into place: {e}")))?;
            }
            Target::Object(upload) => {
                upload.finish()?;
                if let (Location::Object(tmp), Location::Object(dest)) = (&self.tmp, &self.dest) {
                    if tmp.key != dest.key {
                        if let Err(e) = store::rename_object(tmp, dest) {
                            let _ = self.tmp.remove();
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(self.dest.to_path_buf())
    }

    /// Drop the file: remove the local temporary file, abort an upload. Nothing is left.
    pub(crate) fn discard(self) {
        let tmp = self.tmp.clone();
        // Dropping the writer drops an upload, which aborts it.
        drop(self.writer);
        if !tmp.is_remote() {
            let _ = tmp.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(n: i32) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("t{i}")),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn arrow_ipc_files_hold_the_rows_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.arrow");
        let format = OutputFormat::with(
            FileFormat::ArrowIpc,
            Compression::Zstd,
            7,
            StorageOptions::new(),
        )
        .unwrap();
        let b = batch(10);
        let mut f = OpenFile::create(&dest, &b.schema(), &format, false).unwrap();
        f.write(&b).unwrap();
        f.write(&b.slice(0, 3)).unwrap();
        assert!(!dest.exists(), "not in place before commit");
        assert_eq!(f.commit().unwrap(), dest);
        let reader =
            arrow::ipc::reader::FileReader::try_new(File::open(&dest).unwrap(), None).unwrap();
        assert_eq!(reader.schema(), b.schema());
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 13);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn discarded_files_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let format = OutputFormat::with(
            FileFormat::Parquet,
            Compression::Zstd,
            100,
            StorageOptions::new(),
        )
        .unwrap();
        let b = batch(5);
        let mut f =
            OpenFile::create(&dir.path().join("x.parquet"), &b.schema(), &format, false).unwrap();
        f.write(&b).unwrap();
        f.discard();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn snappy_is_refused_for_arrow_ipc() {
        let e = OutputFormat::with(
            FileFormat::ArrowIpc,
            Compression::Snappy,
            10,
            StorageOptions::new(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("snappy"), "{e}");
    }

    #[test]
    fn explicit_names_pick_the_format() {
        let f = OutputFormat::with(
            FileFormat::Parquet,
            Compression::Zstd,
            10,
            StorageOptions::new(),
        )
        .unwrap();
        assert_eq!(
            f.for_path(Path::new("e.arrow")).format,
            FileFormat::ArrowIpc
        );
        assert_eq!(
            f.for_path(Path::new("e.parquet")).format,
            FileFormat::Parquet
        );
        assert_eq!(f.for_path(Path::new("e")).format, FileFormat::Parquet);
    }
}
