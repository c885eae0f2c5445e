//! An error file beside a sink that has no error output of its own (a Kafka sink of a batch
//! job): one row per failed record, the file renamed into place when the job ends.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use parquet::file::properties::WriterProperties;

use super::config::{Compression, ParquetSinkConfig};
use super::file::{writer_properties, OpenFile};
use crate::connector::{ChunkOutput, ErrorOutput};
use crate::error::Result;

pub struct ErrorFile {
    path: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    open: Option<OpenFile>,
}

impl ErrorFile {
    pub fn new(path: PathBuf, schema: SchemaRef) -> Result<Self> {
        let props = writer_properties(&ParquetSinkConfig {
            path: path.clone(),
            compression: Compression::Zstd,
            rows_per_file: None,
            row_group_rows: 8192,
            roll_interval_ms: 0,
            max_file_bytes: None,
        });
        Ok(ErrorFile {
            path,
            schema,
            props,
            open: None,
        })
    }

    fn file(&mut self) -> Result<&mut OpenFile> {
        if self.open.is_none() {
            self.open = Some(OpenFile::create(
                self.path.clone(),
                &self.schema,
                &self.props,
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
