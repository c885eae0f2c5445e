//! An error file beside a sink that has no error output of its own (a Kafka sink of a batch
//! job): one row per failed record, the file renamed into place when the job ends.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;

use super::config::{Compression, FileFormat};
use super::file::{OpenFile, OutputFormat};
use super::sink::check_output;
use crate::connector::storage::StorageOptions;
use crate::connector::{ChunkOutput, ErrorOutput};
use crate::error::Result;

pub struct ErrorFile {
    path: PathBuf,
    schema: SchemaRef,
    format: OutputFormat,
    open: Option<OpenFile>,
}

impl ErrorFile {
    /// A Parquet error file (Arrow IPC when the name ends in `.arrow`, `.feather` or `.ipc`), a
    /// local path or a store URL (checked now, before any work).
    pub fn new(path: PathBuf, schema: SchemaRef, storage_options: StorageOptions) -> Result<Self> {
        let format = OutputFormat::with(
            FileFormat::Parquet,
            Compression::Zstd,
            8192,
            storage_options,
        )?
        .for_path(&path);
        check_output(&path, &format.storage_options)?;
        Ok(ErrorFile {
            path,
            schema,
            format,
            open: None,
        })
    }

    fn file(&mut self) -> Result<&mut OpenFile> {
        if self.open.is_none() {
            self.open = Some(OpenFile::create(
                &self.path,
                &self.schema,
                &self.format,
                false,
            )?);
        }
        Ok(self.open.as_mut().expect("opened above"))
    }
}

impl ErrorOutput for ErrorFile {
    fn write(&mut self, out: &ChunkOutput) -> Result<()> {
        if out.errors.is_empty() {
            return Ok(());
        }
        let batch = out.error_batch(&self.schema)?;
        self.file()?.write(&batch)
    }

    fn finish(&mut self) -> Result<Option<PathBuf>> {
        // An empty error file still says "no failures" with the schema.
        self.file()?;
        let f = self.open.take().expect("opened above");
        f.commit().map(Some)
    }

    fn abort(&mut self) {
        if let Some(f) = self.open.take() {
            f.discard();
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
