//! Parquet sink: results to one file, or to rolling `part-NNNNN.parquet` files in a directory;
//! error rows to their own file. Local paths or object store URLs; Parquet or Arrow IPC. A reader
//! never sees a partial file: local files are renamed into place when complete, objects appear
//! when their upload completes.

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;

use super::config::ParquetSinkConfig;
use super::file::{OpenFile, OutputFormat};
use crate::connector::storage::{self as store, Location, StorageOptions};
use crate::connector::{ChunkOutput, Sink, SinkReport, Written};
use crate::error::{Error, Result};

pub struct ParquetSink {
    cfg: ParquetSinkConfig,
    format: OutputFormat,
    error_format: OutputFormat,
    schema: SchemaRef,
    error_schema: SchemaRef,
    error_path: PathBuf,
    current: Option<OpenFile>,
    errors: Option<OpenFile>,
    next_part: usize,
    report: SinkReport,
    /// Highest chunk seq fully written to the current (not yet committed) file.
    last_seq: Option<u64>,
}

/// Default error file: beside the output file (`out.errors.parquet`), or `errors.parquet` inside
/// the output directory (`.arrow` for Arrow IPC output).
pub fn default_error_path(cfg: &ParquetSinkConfig) -> PathBuf {
    let ext = cfg.format.extension();
    if cfg.rows_per_file.is_some() {
        cfg.path.join(format!("errors.{ext}"))
    } else {
        let stem = cfg
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        cfg.path.with_file_name(format!("{stem}.errors.{ext}"))
    }
}

/// Before any work: a store URL must answer with these credentials, and its bucket exist.
pub(crate) fn check_output(path: &std::path::Path, options: &StorageOptions) -> Result<()> {
    let spec = path.to_string_lossy();
    if store::is_remote(&spec) {
        Location::parse(&spec, options)?.check_reachable()?;
    }
    Ok(())
}

impl ParquetSink {
    /// `error_path` and `error_options`: `sink.errors.path` and its storage options, if given.
    pub fn new(
        cfg: &ParquetSinkConfig,
        schema: SchemaRef,
        error_schema: SchemaRef,
        error_path: Option<PathBuf>,
        error_options: Option<StorageOptions>,
    ) -> Result<Self> {
        let format = OutputFormat::new(cfg)?;
        if cfg.rows_per_file.is_some() && cfg.path.is_file() {
            return Err(Error::sink(
                cfg.path.display().to_string(),
                "is a file, but sink.parquet.rows_per_file makes the path a directory of part files",
            ));
        }
        if cfg.rows_per_file.is_none() && cfg.path.is_dir() {
            return Err(Error::sink(
                cfg.path.display().to_string(),
                "is a directory; give a file name (e.g. out.parquet), or set sink.parquet.rows_per_file to write part files into it",
            ));
        }
        let mut error_format = match &error_path {
            Some(p) => format.for_path(p),
            None => format.clone(),
        };
        if let Some(o) = error_options {
            error_format.storage_options = o;
        }
        let error_path = error_path.unwrap_or_else(|| default_error_path(cfg));
        check_output(&cfg.path, &format.storage_options)?;
        check_output(&error_path, &error_format.storage_options)?;
        Ok(ParquetSink {
            cfg: cfg.clone(),
            format,
            error_format,
            schema,
            error_schema,
            error_path,
            current: None,
            errors: None,
            next_part: 0,
            report: SinkReport::default(),
            last_seq: None,
        })
    }

    fn next_dest(&mut self) -> PathBuf {
        match self.cfg.rows_per_file {
            None => self.cfg.path.clone(),
            Some(_) => {
                let p = self.cfg.path.join(format!(
                    "part-{:05}.{}",
                    self.next_part,
                    self.format.extension()
                ));
                self.next_part += 1;
                p
            }
        }
    }

    fn open_current(&mut self) -> Result<&mut OpenFile> {
        if self.current.is_none() {
            let dest = self.next_dest();
            self.current = Some(OpenFile::create(&dest, &self.schema, &self.format, false)?);
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    fn commit_current(&mut self) -> Result<()> {
        if let Some(f) = self.current.take() {
            let path = f.commit()?;
            self.report.files.push(path);
        }
        Ok(())
    }

    /// Remove part files of an earlier run that this run did not overwrite.
    fn remove_stale_parts(&self) -> Result<()> {
        if self.cfg.rows_per_file.is_none() {
            return Ok(());
        }
        let dir = Location::parse(
            &self.cfg.path.to_string_lossy(),
            &self.format.storage_options,
        )?;
        let ext = format!(".{}", self.format.extension());
        for name in dir.list_names()? {
            let idx = name
                .strip_prefix("part-")
                .and_then(|r| r.strip_suffix(ext.as_str()))
                .and_then(|n| n.parse::<usize>().ok());
            if idx.is_some_and(|i| i >= self.next_part) {
                dir.join(&name).remove()?;
            }
        }
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
        let mut durable = None;
        if !out.errors.is_empty() {
            if self.errors.is_none() {
                self.errors = Some(OpenFile::create(
                    &self.error_path,
                    &self.error_schema,
                    &self.error_format,
                    false,
                )?);
            }
            let batch = out.error_batch(&self.error_schema)?;
            self.errors.as_mut().expect("opened").write(&batch)?;
            self.report.error_rows += batch.num_rows() as u64;
        }
        let mut batch = out.results.clone();
        while batch.num_rows() > 0 {
            let limit = self.cfg.rows_per_file.unwrap_or(usize::MAX);
            let file = self.open_current()?;
            let room = limit - file.rows;
            let take = room.min(batch.num_rows());
            file.write(&batch.slice(0, take))?;
            self.report.rows += take as u64;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.current.as_ref().is_some_and(|f| f.rows >= limit) {
                self.commit_current()?;
                // Chunks before this one are complete in committed files.
                if batch.num_rows() == 0 {
                    durable = Some(out.seq);
                } else if out.seq > 0 {
                    durable = Some(out.seq - 1);
                }
            }
        }
        self.last_seq = Some(out.seq);
        Ok(Written::kept(durable))
    }

    fn finish(&mut self) -> Result<SinkReport> {
        if self.current.is_none() && self.report.files.is_empty() {
            // No results at all: still write a file with the schema.
            self.open_current()?;
        }
        self.commit_current()?;
        self.remove_stale_parts()?;
        if self.errors.is_none() {
            self.errors = Some(OpenFile::create(
                &self.error_path,
                &self.error_schema,
                &self.error_format,
                false,
            )?);
        }
        if let Some(e) = self.errors.take() {
            self.report.error_file = Some(e.commit()?);
        }
        Ok(self.report.clone())
    }

    fn abort(&mut self) {
        if let Some(f) = self.current.take() {
            f.discard();
        }
        if let Some(f) = self.errors.take() {
            f.discard();
        }
    }
}
