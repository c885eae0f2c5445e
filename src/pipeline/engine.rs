//! An engine: a pipeline's models loaded once, run again and again over record batches a host
//! program hands in (the Python package, and through it Spark and Ray), through the same stages
//! as a run from the command line: the Python connector's source and sink take the place of the
//! configured ones.

use std::path::Path;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use crossbeam_channel::{Receiver, Sender};

use super::build::{describe_providers, load_tasks, output_schema};
use super::summary::Summary;
use crate::config::PipelineConfig;
use crate::connector::chunk_rows;
use crate::connector::python::sink::output_schema as handed_back_schema;
use crate::connector::python::{
    BatchOutput, BatchSink, BatchSource, Columns, ErrorMode, PythonSourceConfig,
};
use crate::connector::registry::{SinkKind, SourceConfig};
use crate::connector::{error_schema, Sink, TextColumnRequest};
use crate::error::{Error, Result};
use crate::lifecycle::Shutdown;
use crate::model::OrtRuntime;
use crate::task::LoadedTask;

/// What a host asks of one run besides its batches.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The text column, instead of the pipeline's.
    pub text_column: Option<String>,
    /// The id column, instead of the pipeline's (`Some("")`: none, row numbers).
    pub id_column: Option<String>,
    /// Input columns copied to the output, instead of `sink.passthrough`.
    pub passthrough: Option<Vec<String>>,
    pub errors: ErrorMode,
    /// Types every engine reads (see [`crate::connector::python::sink::portable_type`]).
    pub portable: bool,
    /// Names the input in error rows (`input`, `spark partition 3`).
    pub label: String,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            text_column: None,
            id_column: None,
            passthrough: None,
            errors: ErrorMode::Separate,
            portable: false,
            label: "input".into(),
        }
    }
}

/// The schemas of a run, known before any data.
#[derive(Debug, Clone)]
pub struct HostSchemas {
    /// The batches handed back.
    pub results: SchemaRef,
    /// The error rows (empty with [`ErrorMode::Column`]).
    pub errors: SchemaRef,
}

/// A pipeline with its models loaded.
pub struct Engine {
    cfg: PipelineConfig,
    tasks: Vec<LoadedTask>,
    /// Optional tasks skipped (their model is missing), with why.
    pub skipped: Vec<String>,
    provider: String,
}

impl Engine {
    /// Check the pipeline and load its models (once; every run reuses them). `ort_lib`: the
    /// ONNX Runtime library, when the caller found it (else the usual search).
    pub fn load(cfg: &PipelineConfig, ort_lib: Option<&Path>) -> Result<Engine> {
        super::preflight(cfg)?;
        let rt = OrtRuntime::init(ort_lib, &cfg.runtime)?;
        let (tasks, skipped) = load_tasks(cfg, &rt)?;
        let provider = describe_providers(tasks.iter().map(|t| &t.model.provider));
        Ok(Engine {
            cfg: cfg.clone(),
            tasks,
            skipped,
            provider,
        })
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    /// The execution providers the models run on (`cpu`, `cuda`, ...).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Each task's name and precision.
    pub fn tasks(&self) -> Vec<(String, String)> {
        self.tasks
            .iter()
            .map(|t| (t.task.name().to_string(), t.precision.clone()))
            .collect()
    }

    /// The input columns of a run: the options', else the pipeline source's.
    pub fn columns(&self, opts: &HostOptions) -> Columns {
        let base = match &self.cfg.source {
            SourceConfig::Python(p) => p.clone(),
            SourceConfig::Parquet(p) => PythonSourceConfig {
                text_column: p.text_column.clone(),
                id_column: p.id_column.clone(),
            },
            SourceConfig::Kafka(_) => PythonSourceConfig {
                text_column: "text".into(),
                id_column: None,
            },
        };
        let cfg = PythonSourceConfig {
            text_column: opts.text_column.clone().unwrap_or(base.text_column),
            id_column: match &opts.id_column {
                Some(id) if id.is_empty() => None,
                Some(id) => Some(id.clone()),
                None => base.id_column,
            },
        };
        let text_columns: Vec<TextColumnRequest> = self
            .cfg
            .tasks
            .all()
            .into_iter()
            .flat_map(|t| t.text_columns())
            .collect();
        let passthrough = opts
            .passthrough
            .clone()
            .unwrap_or_else(|| self.cfg.sink.passthrough.clone());
        Columns::new(&cfg, &passthrough, &text_columns)
    }

    /// The passages column to flatten, when the sink writes one row per passage.
    fn flat_column(&self, opts: &HostOptions) -> Result<Option<String>> {
        let flat = match &self.cfg.sink.kind {
            SinkKind::Python(p) => p.one_row_per_chunk,
            SinkKind::Parquet(p) => p.one_row_per_chunk,
            _ => false,
        };
        if !flat {
            return Ok(None);
        }
        if opts.errors == ErrorMode::Column {
            return Err(Error::config(
                "one_row_per_chunk with the errors column: a record's errors would have no row when it has no passage; use separate errors, or explode the passages column yourself",
            ));
        }
        let passages: Vec<String> = self
            .cfg
            .tasks
            .all()
            .into_iter()
            .filter_map(|t| t.passages_column())
            .collect();
        match passages.as_slice() {
            [one] => Ok(Some(one.clone())),
            [] => Err(Error::config(
                "one_row_per_chunk needs a task that cuts texts into passages (tasks.embed.chunking or tasks.sparse.chunking)",
            )),
            many => Err(Error::config(format!(
                "one_row_per_chunk, but several tasks write passages ({}); keep chunking on one task",
                many.join(", ")
            ))),
        }
    }

    /// The results' schema before any change, and the error rows' schema.
    fn base_schemas(&self, columns: &Columns, input: &Schema) -> Result<(SchemaRef, SchemaRef)> {
        let fields = columns.fields(input)?;
        let results = output_schema(&fields, &self.tasks)?;
        Ok((results, error_schema(&fields[0])))
    }

    /// The schemas of a run over batches of schema `input`, before any data.
    pub fn schemas(&self, input: &Schema, opts: &HostOptions) -> Result<HostSchemas> {
        let columns = self.columns(opts);
        let (mut results, errors) = self.base_schemas(&columns, input)?;
        if let Some(col) = self.flat_column(opts)? {
            results = chunk_rows::flat_schema(&results, &col)?;
        }
        Ok(HostSchemas {
            results: handed_back_schema(&results, opts.errors, opts.portable),
            errors,
        })
    }

    /// Run the batches received on `input` (of schema `schema`, until the host closes the
    /// channel) through the pipeline, handing each chunk's output back on `output`, in order.
    /// `stop` abandons the run (the host went away).
    pub fn run(
        &mut self,
        schema: &Schema,
        opts: &HostOptions,
        input: Receiver<RecordBatch>,
        output: Sender<BatchOutput>,
        stop: &Shutdown,
    ) -> Result<Summary> {
        let started = Instant::now();
        let columns = self.columns(opts);
        let (results, errors) = self.base_schemas(&columns, schema)?;
        let flat = self.flat_column(opts)?;
        let window = self
            .cfg
            .tasks
            .window_records(self.cfg.batching.window_records);
        let source = BatchSource::new(schema, columns, window, &opts.label, input)?;
        let sink: Box<dyn Sink> = match &flat {
            Some(col) => chunk_rows::one_row_per_chunk(
                &results,
                std::slice::from_ref(col),
                "sink.python",
                |flat| {
                    Ok(Box::new(BatchSink::new(
                        output,
                        flat,
                        errors,
                        opts.errors,
                        opts.portable,
                    )))
                },
            )?,
            None => Box::new(BatchSink::new(
                output,
                results.clone(),
                errors,
                opts.errors,
                opts.portable,
            )),
        };
        let on = if !self.tasks.is_empty()
            && self.tasks.iter().all(|t| t.model.provider.name == "cuda")
        {
            "cuda"
        } else {
            "cpu"
        };
        let limits = self.cfg.batching.limits(on);
        let mut summary = Summary {
            source: opts.label.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|t| t.task.name().to_string())
                .collect(),
            precision: self.tasks.iter().map(|t| t.precision.clone()).collect(),
            provider: self.provider.clone(),
            skipped: self.skipped.clone(),
            batch_limits: Some(limits),
            ..Summary::default()
        };
        let result = super::stages::run_stages(
            Box::new(source),
            &mut self.tasks,
            sink,
            None,
            stop,
            false,
            results.clone(),
            &self.cfg,
            limits,
            false,
            &mut summary,
            &indicatif::ProgressBar::hidden(),
        );
        summary.elapsed = started.elapsed();
        result?;
        if summary.interrupted {
            return Err(Error::Runtime(
                "the run was stopped before the end of its input".into(),
            ));
        }
        Ok(summary)
    }
}
