//! A job: `source -> tokenize -> infer (+ post-process) -> assemble -> sink`.
//!
//! - [`build`]: loading the tasks (one registry), the output schema, sharding;
//! - [`stages`]: one thread per stage and the bounded queues between them;
//! - `flow`: the messages between stages and the hand-offs that also wait on the shutdown token;
//! - [`infer`]: batches through the model, with one-by-one retry of a failed batch;
//! - [`assemble`]: result rows and typed error rows of a chunk;
//! - [`summary`]: the run report;
//! - [`scan`]: reading a source without models (`validate --scan`).
//!
//! The pipeline knows connectors only through the traits of [`crate::connector`].

pub mod assemble;
pub mod build;
pub mod engine;
mod flow;
pub mod infer;
pub mod preflight;
pub mod scan;
pub mod stages;
pub mod summary;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::PipelineConfig;
use crate::connector::parquet::config::Shard;
use crate::connector::{self, error_schema, SourceOptions};
use crate::error::Result;
use crate::lifecycle::Shutdown;
use crate::model::OrtRuntime;
use crate::telemetry::{self, Event, ExecutionProviderInUse, Health, MetricsServer};

pub use build::{load_tasks, output_schema};
pub use engine::{Engine, HostOptions, HostSchemas};
pub use infer::{infer_features, infer_features_until, InferStats};
pub use preflight::preflight;
pub use scan::{scan, ScanReport};
pub use summary::Summary;

/// Options of a run that are not part of the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--ort-lib`: explicit ONNX Runtime library.
    pub ort_lib: Option<PathBuf>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Keep a copy of every model batch (per task) in the summary, for benchmarks that re-run
    /// exactly the batches the pipeline formed.
    pub record_batches: bool,
    /// Triggered (e.g. by SIGTERM) to stop a streaming job gracefully (stop fetching, abandon
    /// the work in flight, flush and commit what is durable, leave the group), or to interrupt
    /// a batch job (abandon the work in flight, discard the unfinished output; the summary says
    /// so). Either way the run returns within about one model batch.
    pub shutdown: Option<Shutdown>,
}

/// Open the source of a pipeline, reading what its tasks and sink need.
pub(crate) fn open_source(
    cfg: &PipelineConfig,
    sink_commits: bool,
    shutdown: Shutdown,
) -> Result<Box<dyn connector::Source>> {
    let text_columns: Vec<connector::TextColumnRequest> = cfg
        .tasks
        .all()
        .into_iter()
        .flat_map(|t| t.text_columns())
        .collect();
    cfg.source.spec().open(SourceOptions {
        passthrough: &cfg.sink.passthrough,
        text_columns: &text_columns,
        window: cfg.tasks.window_records(cfg.batching.window_records),
        sink_commits,
        shutdown,
    })
}

/// Before any work (models load only after this): the sink's destinations and its error file
/// answer, so a wrong secret or bucket fails at once.
pub(crate) fn check_destinations(cfg: &PipelineConfig) -> Result<()> {
    let sink = cfg.sink.spec();
    sink.check_destinations()?;
    connector::errors::check_error_file(cfg.sink.errors.as_ref(), sink.file_storage())
}

/// Open the sink of a pipeline with its error outputs.
fn open_sink(
    cfg: &PipelineConfig,
    schema: arrow::datatypes::SchemaRef,
    error_schema: arrow::datatypes::SchemaRef,
    link: Option<connector::SourceLink>,
    shutdown: Shutdown,
) -> Result<Box<dyn connector::Sink>> {
    let facts = cfg.source.spec().facts();
    let passages: Vec<String> = cfg
        .tasks
        .all()
        .into_iter()
        .filter_map(|t| t.passages_column())
        .collect();
    let errors = cfg.sink.errors.as_ref();
    let outputs = connector::errors::PipelineErrors {
        errors,
        source: &facts,
        schema: error_schema.clone(),
        sink_storage: cfg.sink.spec().file_storage().cloned(),
    };
    cfg.sink.spec().open(connector::SinkContext {
        schema,
        error_schema,
        link,
        shutdown,
        source: &facts,
        errors,
        error_outputs: &outputs,
        passages: &passages,
    })
}

/// Run a pipeline: a batch job to completion, or a streaming job until `RunOptions::shutdown`
/// is set.
pub fn run(cfg: &PipelineConfig, opts: &RunOptions) -> Result<Summary> {
    let started = Instant::now();
    // The checks `validate` makes, before anything is opened or loaded.
    preflight(cfg)?;
    let health = Arc::new(Health::default());
    let streaming = cfg.source.is_streaming();
    let _server = if cfg.metrics.enabled.unwrap_or(streaming) {
        let listen = cfg
            .metrics
            .listen
            .as_deref()
            .unwrap_or(telemetry::DEFAULT_METRICS_LISTEN);
        match MetricsServer::start(listen, telemetry::install(), health.clone()) {
            Ok(s) => Some(s),
            Err(e) if cfg.metrics.listen.is_none() => {
                tracing::warn!(error = %e, "running without the metrics endpoint; set metrics.listen to another address (port 0 picks a free one)");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let rt = OrtRuntime::init(opts.ort_lib.as_deref(), &cfg.runtime)?;
    // The run's own token: triggered by the caller's (a signal) or by a failed stage.
    let shutdown = opts
        .shutdown
        .as_ref()
        .map_or_else(Shutdown::new, Shutdown::child);
    let sink_commits = cfg.sink.commits_source_positions();
    let mut cfg_owned = cfg.clone();
    if let Some(shard) = cfg
        .source
        .parquet()
        .and_then(|p| p.shard.as_deref())
        .map(Shard::parse)
        .transpose()?
    {
        build::shard_outputs(&mut cfg_owned, shard);
    }
    let cfg = &cfg_owned;
    let mut source = open_source(cfg, sink_commits, shutdown.clone())?;
    let link = source.link();
    check_destinations(cfg)?;
    let (mut tasks, skipped) = load_tasks(cfg, &rt)?;
    for t in &tasks {
        ExecutionProviderInUse {
            task: t.task.name(),
            provider: t.model.provider.to_string(),
        }
        .emit();
    }
    match source.readiness() {
        // Readiness follows the group membership.
        Some(r) => health.set_joined(r),
        None => health.no_group.store(true, Ordering::SeqCst),
    }
    health.models_loaded.store(true, Ordering::SeqCst);
    let source_fields = source.fields();
    let schema = output_schema(&source_fields, &tasks)?;
    let err_schema = error_schema(&source_fields[0]);
    let sink = open_sink(
        cfg,
        schema.clone(),
        err_schema,
        link.clone(),
        shutdown.clone(),
    )?;
    if let Some(store) = sink.position_store() {
        source.resume_from(store)?;
    }
    let provider = build::describe_providers(tasks.iter().map(|t| &t.model.provider));
    // GPU batch defaults only when every model really runs on CUDA (not after a fallback).
    let on = if !tasks.is_empty() && tasks.iter().all(|t| t.model.provider.name == "cuda") {
        "cuda"
    } else {
        "cpu"
    };
    let limits = cfg.batching.limits(on);
    let mut summary = Summary {
        source: source.describe(),
        tasks: tasks.iter().map(|t| t.task.name().to_string()).collect(),
        precision: tasks.iter().map(|t| t.precision.clone()).collect(),
        provider,
        skipped,
        batch_limits: Some(limits),
        ..Summary::default()
    };
    let progress = build::make_progress(opts.progress, source.size_hint());
    summary.startup = started.elapsed();
    let result = stages::run_stages(
        source,
        &mut tasks,
        sink,
        link,
        &shutdown,
        streaming,
        schema,
        cfg,
        limits,
        opts.record_batches,
        &mut summary,
        &progress,
    );
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    result.map(|_| summary)
}
