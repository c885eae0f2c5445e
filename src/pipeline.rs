//! Wiring of a batch job: `source -> tokenize -> infer (+ post-process) -> assemble -> sink`,
//! each stage on its own thread, connected by bounded queues so that memory stays bounded and
//! tokenization of the next window overlaps inference of the current one.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::batch::{plan, Feature, PaddedBatch};
use crate::config::{PipelineConfig, Shard};
use crate::error::{Error, Result};
use crate::model::tokenizer::TokenCache;
use crate::model::{ModelDir, OnnxModel, OrtRuntime, ProviderInfo};
use crate::record::{Chunk, RecordError, Stage};
use crate::sink::kafka::make_producer;
use crate::sink::rolling::DeadLetterTopic;
use crate::sink::{
    error_batch, error_schema, ChunkOutput, ErrorRow, KafkaSink, ParquetSink, RollingParquetSink,
    Sink, SinkReport,
};
use crate::source::kafka::KafkaAcker;
use crate::source::{KafkaSource, ParquetSource, Source};
use crate::task::{
    EmbedTask, Featurized, LoadedTask, NerTask, QaTask, SentimentTask, Task, TaskOutput,
};
use crate::telemetry::{
    self, BatchRun, Event, ExecutionProviderInUse, Health, MetricsServer, QueueDepth,
    RecordsFailed, RecordsRead, RecordsWritten, StageTime,
};

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
    /// Set (e.g. by SIGTERM) to stop a streaming job gracefully: stop fetching, finish what is in
    /// flight, flush, commit, leave the group.
    pub shutdown: Option<Arc<AtomicBool>>,
}

/// What a run did, printed at its end.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub source: String,
    pub tasks: Vec<String>,
    /// Optional tasks skipped because their model is missing, with why.
    pub skipped: Vec<String>,
    pub provider: String,
    pub records: u64,
    pub written: u64,
    pub errors: u64,
    pub truncated: u64,
    pub batches: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    pub elapsed: Duration,
    pub tokenize_time: Duration,
    pub model_time: Duration,
    pub postprocess_time: Duration,
    pub write_time: Duration,
    pub output: SinkReport,
    /// Per task, every batch run (only with `RunOptions::record_batches`).
    pub recorded: Vec<Vec<PaddedBatch>>,
    /// Sequence number of the last chunk written.
    pub last_seq: Option<u64>,
}

impl Summary {
    pub fn records_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.records as f64 / s
        } else {
            0.0
        }
    }

    /// Fraction of model tokens that were padding.
    pub fn padding_ratio(&self) -> f64 {
        if self.padded_tokens == 0 {
            0.0
        } else {
            1.0 - self.real_tokens as f64 / self.padded_tokens as f64
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
        writeln!(f, "bertflow summary")?;
        writeln!(f, "  source        {}", self.source)?;
        writeln!(
            f,
            "  tasks         {} on {}",
            self.tasks.join(", "),
            self.provider
        )?;
        for s in &self.skipped {
            writeln!(f, "  skipped       {s}")?;
        }
        writeln!(f, "  records       {}", self.records)?;
        writeln!(f, "  written       {}", self.written)?;
        writeln!(f, "  errors        {}", self.errors)?;
        writeln!(f, "  truncated     {}", self.truncated)?;
        writeln!(
            f,
            "  throughput    {:.1} records/s ({} in {} batches, padding {:.1}%)",
            self.records_per_second(),
            secs(self.elapsed),
            self.batches,
            self.padding_ratio() * 100.0
        )?;
        writeln!(
            f,
            "  time          tokenize {}, model {}, post-process {}, write {}",
            secs(self.tokenize_time),
            secs(self.model_time),
            secs(self.postprocess_time),
            secs(self.write_time)
        )?;
        for p in &self.output.files {
            writeln!(f, "  output        {}", p.display())?;
        }
        if let Some(p) = &self.output.error_file {
            writeln!(
                f,
                "  error output  {} ({} rows)",
                p.display(),
                self.output.error_rows
            )?;
        }
        Ok(())
    }
}

/// A chunk with every task's features.
struct Tokenized {
    chunk: Chunk,
    per_task: Vec<Featurized>,
    elapsed: Duration,
}

/// A chunk with every task's per-record results.
struct Inferred {
    chunk: Chunk,
    /// Per task: one entry per record of the chunk.
    per_task: Vec<Vec<Option<std::result::Result<TaskOutput, String>>>>,
    /// Per task: records that failed before inference.
    early_errors: Vec<Vec<RecordError>>,
    truncated: u64,
    batches: u64,
    real_tokens: u64,
    padded_tokens: u64,
    tokenize_time: Duration,
    model_time: Duration,
    postprocess_time: Duration,
}

/// Builds a task from its model directory and loaded session.
type MakeTask<'a> = dyn Fn(&ModelDir, &OnnxModel) -> Result<Arc<dyn Task>> + 'a;

/// Load every configured task: model session and task post-processing. Optional tasks whose
/// model directory is missing are skipped; their names and reasons are returned.
pub fn load_tasks(
    cfg: &PipelineConfig,
    rt: &Arc<OrtRuntime>,
) -> Result<(Vec<LoadedTask>, Vec<String>)> {
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    let t = &cfg.tasks;
    let mut load = |kind: &str,
                    model_dir: &std::path::Path,
                    optional: bool,
                    make: &MakeTask<'_>|
     -> Result<()> {
        let resolved = match crate::model::hub::resolve_model(model_dir) {
            Ok(p) => p,
            Err(e) if optional => {
                let msg = format!("{kind}: {e}; task skipped (it is marked optional)");
                tracing::warn!("{msg}");
                skipped.push(msg);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let model_dir = resolved.as_path();
        if optional && !model_dir.exists() {
            let msg = format!(
                "{kind}: model {} not found, task skipped (it is marked optional)",
                model_dir.display()
            );
            tracing::warn!("{msg}");
            skipped.push(msg);
            return Ok(());
        }
        let dir = ModelDir::open(model_dir)?;
        let model = OnnxModel::load(rt, &dir.onnx)?;
        crate::model::inspect::check_for_task(kind, &dir, &model)?;
        let task = make(&dir, &model)?;
        tasks.push(LoadedTask { task, model });
        Ok(())
    };
    for c in t.embed.iter() {
        load("embed", &c.model, c.optional, &|d, m| {
            Ok(Arc::new(EmbedTask::new(c, d, m)?))
        })?;
    }
    for c in t.sentiment.iter() {
        load("sentiment", &c.model, c.optional, &|d, m| {
            Ok(Arc::new(SentimentTask::new(c, d, m)?))
        })?;
    }
    for c in t.ner.iter() {
        load("ner", &c.model, c.optional, &|d, m| {
            Ok(Arc::new(NerTask::new(c, d, m)?))
        })?;
    }
    for c in t.qa.iter() {
        load("qa", &c.model, c.optional, &|d, m| {
            Ok(Arc::new(QaTask::new(c, d, m)?))
        })?;
    }
    if tasks.is_empty() {
        return Err(Error::config(format!(
            "no task left to run: {}",
            skipped.join("; ")
        )));
    }
    Ok((tasks, skipped))
}

/// Output schema: source fields (id, passthrough) then each task's fields; names must be unique.
pub fn output_schema(source: &[FieldRef], tasks: &[LoadedTask]) -> Result<SchemaRef> {
    let mut fields: Vec<FieldRef> = source.to_vec();
    for t in tasks {
        fields.extend(t.task.fields());
    }
    let mut seen = HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().clone()) {
            return Err(Error::config(format!(
                "output column '{}' would appear twice; rename the passthrough column or the task's `column`",
                f.name()
            )));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Run a pipeline: a batch job (Parquet source) to completion, or a streaming job (Kafka source)
/// until `RunOptions::shutdown` is set.
pub fn run(cfg: &PipelineConfig, opts: &RunOptions) -> Result<Summary> {
    let started = Instant::now();
    let health = Arc::new(Health::default());
    let _server = if cfg.metrics.enabled.unwrap_or(cfg.source.kafka.is_some()) {
        let listen = cfg
            .metrics
            .listen
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_METRICS_LISTEN);
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
    let question_column = cfg
        .tasks
        .qa
        .first()
        .and_then(|q| q.question_column.as_deref());
    let shutdown = opts
        .shutdown
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    let exactly_once = cfg.sink.kafka.as_ref().is_some_and(|k| k.exactly_once);
    let mut cfg_owned = cfg.clone();
    let mut acker = None;
    let mut stream_state = None;
    let source: Box<dyn Source> = if let Some(k) = &cfg.source.kafka {
        let s = KafkaSource::open(
            k,
            &cfg.sink.passthrough,
            question_column.is_some(),
            cfg.batching.window_records,
            exactly_once,
            shutdown.clone(),
        )?;
        acker = Some(s.acker());
        stream_state = Some(s.state());
        Box::new(s)
    } else {
        let src_cfg = cfg
            .source
            .parquet
            .as_ref()
            .ok_or_else(|| Error::config("source.parquet is required"))?;
        let source = ParquetSource::open(
            src_cfg,
            &cfg.sink.passthrough,
            question_column,
            cfg.batching.window_records,
        )?;
        match src_cfg.shard.as_deref().map(Shard::parse).transpose()? {
            Some(shard) => {
                shard_outputs(&mut cfg_owned, shard);
                Box::new(source.with_shard(shard))
            }
            None => Box::new(source),
        }
    };
    let cfg = &cfg_owned;
    let (tasks, skipped) = load_tasks(cfg, &rt)?;
    for t in &tasks {
        ExecutionProviderInUse {
            task: t.task.name(),
            provider: t.model.provider.to_string(),
        }
        .emit();
    }
    match &stream_state {
        // Readiness follows the group membership.
        Some(s) => health.set_joined(s.joined.clone()),
        None => health.no_group.store(true, Ordering::SeqCst),
    }
    health.models_loaded.store(true, Ordering::SeqCst);
    let source_fields = source.fields();
    let schema = output_schema(&source_fields, &tasks)?;
    let err_schema = error_schema(&source_fields[0]);
    let sink = make_sink(cfg, schema.clone(), err_schema.clone(), stream_state)?;
    let provider = describe_providers(tasks.iter().map(|t| &t.model.provider));
    let mut summary = Summary {
        source: source.describe(),
        tasks: tasks.iter().map(|t| t.task.name().to_string()).collect(),
        provider,
        skipped,
        ..Summary::default()
    };
    let progress = make_progress(opts.progress, source.size_hint());
    let result = run_stages(
        source,
        tasks,
        sink,
        acker.as_ref(),
        schema,
        err_schema,
        cfg,
        opts.record_batches,
        &mut summary,
        &progress,
    );
    progress.finish_and_clear();
    if let Some(a) = &acker {
        if result.is_ok() {
            a.flush();
        }
    }
    summary.elapsed = started.elapsed();
    result.map(|_| summary)
}

/// Give a shard its own output and error paths.
fn shard_outputs(cfg: &mut PipelineConfig, shard: Shard) {
    if let Some(p) = &mut cfg.sink.parquet {
        let is_dir = p.rows_per_file.is_some();
        p.path = shard.path(&p.path, is_dir);
    }
    if let Some(e) = cfg.sink.errors.as_mut().and_then(|e| e.path.as_mut()) {
        *e = shard.path(e, false);
    }
}

fn make_sink(
    cfg: &PipelineConfig,
    schema: SchemaRef,
    err_schema: SchemaRef,
    stream: Option<Arc<crate::source::kafka::StreamState>>,
) -> Result<Box<dyn Sink>> {
    let source_servers = cfg
        .source
        .kafka
        .as_ref()
        .map(|k| k.bootstrap_servers.clone());
    let errors = cfg.sink.errors.as_ref();
    let dlq_topic = errors.and_then(|e| e.topic.clone());
    if let Some(k) = &cfg.sink.kafka {
        let servers = k
            .bootstrap_servers
            .clone()
            .or(source_servers)
            .ok_or_else(|| Error::config("sink.kafka.bootstrap_servers is required"))?;
        let txn_id = k.exactly_once.then(|| {
            k.transactional_id.clone().unwrap_or_else(|| {
                let group = cfg
                    .source
                    .kafka
                    .as_ref()
                    .map(|s| s.group_id.as_str())
                    .unwrap_or("bertflow");
                format!("bertflow-{group}-{}", crate::kafka::host_name())
            })
        });
        if dlq_topic.is_none() && errors.and_then(|e| e.path.as_ref()).is_some() {
            return Err(Error::config(
                "sink.errors.path is for Parquet sinks; with sink.kafka give sink.errors.topic (dead-letter topic)",
            ));
        }
        if dlq_topic.is_none() {
            tracing::warn!(
                "sink.errors.topic is not set: failed records are counted and logged but not kept"
            );
        }
        return Ok(Box::new(KafkaSink::new(
            k, &servers, dlq_topic, txn_id, stream,
        )?));
    }
    let sink_cfg = cfg
        .sink
        .parquet
        .as_ref()
        .ok_or_else(|| Error::config("sink.parquet is required"))?;
    if let Some(kafka) = &cfg.source.kafka {
        let dlq = match &dlq_topic {
            Some(t) => Some(DeadLetterTopic {
                topic: t.clone(),
                producer: make_producer(&kafka.bootstrap_servers, &kafka.properties, None)?,
            }),
            None => None,
        };
        return Ok(Box::new(RollingParquetSink::new(
            sink_cfg,
            schema,
            err_schema,
            errors.and_then(|e| e.path.clone()),
            dlq,
        )?));
    }
    Ok(Box::new(ParquetSink::new(
        sink_cfg,
        schema,
        err_schema,
        errors.and_then(|e| e.path.clone()),
    )?))
}

fn describe_providers<'a>(it: impl Iterator<Item = &'a ProviderInfo>) -> String {
    let mut names: Vec<String> = it.map(|p| p.to_string()).collect();
    names.dedup();
    names.join(", ")
}

fn make_progress(enabled: bool, total: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    pb.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

#[allow(clippy::too_many_arguments)]
fn run_stages(
    mut source: Box<dyn Source>,
    tasks: Vec<LoadedTask>,
    mut sink: Box<dyn Sink>,
    acker: Option<&KafkaAcker>,
    schema: SchemaRef,
    err_schema: SchemaRef,
    cfg: &PipelineConfig,
    record: bool,
    summary: &mut Summary,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let depth = cfg.batching.queue_depth;
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(depth);
    let (tok_tx, tok_rx) = bounded::<Tokenized>(depth);
    let (inf_tx, inf_rx) = bounded::<Inferred>(depth);
    let stop = Arc::new(AtomicBool::new(false));
    let task_defs: Vec<Arc<dyn Task>> = tasks.iter().map(|t| t.task.clone()).collect();
    let models: Vec<OnnxModel> = tasks.into_iter().map(|t| t.model).collect();
    let (max_bs, max_tok) = (cfg.batching.max_batch_size, cfg.batching.max_batch_tokens);

    thread::scope(|s| {
        let stop_r = stop.clone();
        let reader = thread::Builder::new()
            .name("source".into())
            .spawn_scoped(s, move || -> Result<()> {
                while !stop_r.load(Ordering::Relaxed) {
                    let Some(mut c) = source.next_chunk()? else {
                        break;
                    };
                    RecordsRead {
                        source: source.kind(),
                        count: c.len(),
                    }
                    .emit();
                    QueueDepth {
                        queue: "tokenize",
                        depth: chunk_tx.len(),
                    }
                    .emit();
                    // When the tokenizer is behind, wait without reading ahead.
                    loop {
                        let seq = c.seq;
                        match chunk_tx.send_timeout(c, Duration::from_millis(100)) {
                            Ok(()) => {
                                source.sent(seq);
                                break;
                            }
                            Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                                if stop_r.load(Ordering::Relaxed) {
                                    return Ok(());
                                }
                                c = back;
                                source.wait();
                            }
                            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                                return Err(Error::StageStopped("tokenize"));
                            }
                        }
                    }
                }
                Ok(())
            })
            .expect("spawn source thread");

        let tdefs = task_defs.clone();
        let tokenizer = thread::Builder::new()
            .name("tokenize".into())
            .spawn_scoped(s, move || tokenize_stage(chunk_rx, tok_tx, tdefs))
            .expect("spawn tokenize thread");

        let tdefs = task_defs.clone();
        let infer = thread::Builder::new()
            .name("infer".into())
            .spawn_scoped(s, move || {
                infer_stage(tok_rx, inf_tx, tdefs, models, max_bs, max_tok, record)
            })
            .expect("spawn infer thread");

        // The writer runs here.
        let write_result = write_stage(
            inf_rx,
            &task_defs,
            sink.as_mut(),
            acker,
            &schema,
            &err_schema,
            summary,
            progress,
        );
        if write_result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let infer_result = match infer.join() {
            Ok(Ok(recorded)) => {
                summary.recorded = recorded;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::StageStopped("infer")),
        };
        let results = [
            write_result,
            infer_result,
            tokenizer
                .join()
                .unwrap_or(Err(Error::StageStopped("tokenize"))),
            reader.join().unwrap_or(Err(Error::StageStopped("source"))),
        ];
        // Report the root cause: a real error rather than a downstream "stage stopped".
        let mut first_stop = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(Error::StageStopped(s)) => {
                    first_stop.get_or_insert(Error::StageStopped(s));
                }
                Err(e) => {
                    sink.abort();
                    return Err(e);
                }
            }
        }
        if let Some(e) = first_stop {
            sink.abort();
            return Err(e);
        }
        let t = Instant::now();
        let report = sink.finish();
        summary.write_time += t.elapsed();
        match report {
            Ok(r) => {
                if let Some(a) = acker {
                    // Everything written is durable now.
                    if let Some(seq) = summary.last_seq {
                        a.ack(seq);
                    }
                }
                summary.output = r;
                Ok(())
            }
            Err(e) => {
                sink.abort();
                Err(e)
            }
        }
    })
}

fn tokenize_stage(
    rx: Receiver<Chunk>,
    tx: Sender<Tokenized>,
    tasks: Vec<Arc<dyn Task>>,
) -> Result<()> {
    for chunk in rx {
        let t = Instant::now();
        let cache = TokenCache::default();
        let per_task = tasks
            .iter()
            .map(|task| task.featurize(&chunk, &cache))
            .collect();
        let elapsed = t.elapsed();
        StageTime {
            stage: "tokenize",
            elapsed,
        }
        .emit();
        QueueDepth {
            queue: "infer",
            depth: tx.len(),
        }
        .emit();
        let msg = Tokenized {
            chunk,
            per_task,
            elapsed,
        };
        if tx.send(msg).is_err() {
            return Err(Error::StageStopped("infer"));
        }
    }
    Ok(())
}

type FeatureResult = std::result::Result<TaskOutput, String>;

/// Run one task's features through its model in length-sorted, budgeted batches. Returns one
/// result per feature, in feature order. A failed batch is retried one feature at a time so a
/// single bad input fails alone. With a `recorder`, every batch formed is also kept there.
pub fn infer_features(
    task: &dyn Task,
    model: &mut OnnxModel,
    features: &[Feature],
    max_batch_size: usize,
    max_batch_tokens: usize,
    stats: &mut InferStats,
    mut recorder: Option<&mut Vec<PaddedBatch>>,
) -> Vec<Option<FeatureResult>> {
    let lengths: Vec<usize> = features.iter().map(|f| f.encoding.len()).collect();
    let mut results: Vec<Option<FeatureResult>> = vec![None; features.len()];
    for idx in plan(&lengths, max_batch_size, max_batch_tokens) {
        let rec = recorder.as_deref_mut();
        run_batch(task, model, features, &idx, &mut results, stats, true, rec);
    }
    results
}

/// Counters of the inference stage.
#[derive(Debug, Default, Clone)]
pub struct InferStats {
    pub batches: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    pub model_time: Duration,
    pub postprocess_time: Duration,
}

#[allow(clippy::too_many_arguments)]
fn run_batch(
    task: &dyn Task,
    model: &mut OnnxModel,
    features: &[Feature],
    idx: &[usize],
    results: &mut [Option<FeatureResult>],
    stats: &mut InferStats,
    retry_singly: bool,
    recorder: Option<&mut Vec<PaddedBatch>>,
) {
    let feats: Vec<&Feature> = idx.iter().map(|&i| &features[i]).collect();
    let padded = PaddedBatch::new(feats.iter().map(|f| &f.encoding), task.pad_id());
    if let Some(r) = recorder {
        r.push(padded.clone());
    }
    stats.batches += 1;
    stats.real_tokens += padded.real_tokens as u64;
    stats.padded_tokens += padded.padded_tokens() as u64;
    let t = Instant::now();
    let mut post = Duration::ZERO;
    let out = model.run(&padded, |outputs| {
        let p = Instant::now();
        let r = task.postprocess(&feats, &padded, outputs);
        post = p.elapsed();
        r
    });
    let model_time = t.elapsed().saturating_sub(post);
    stats.model_time += model_time;
    stats.postprocess_time += post;
    BatchRun {
        task: task.name(),
        sequences: idx.len(),
        real_tokens: padded.real_tokens,
        padded_tokens: padded.padded_tokens(),
        model_time,
    }
    .emit();
    match out {
        Ok(values) if values.len() == idx.len() => {
            for (&i, v) in idx.iter().zip(values) {
                results[i] = Some(v);
            }
        }
        Ok(values) => {
            let msg = format!(
                "internal: post-processing returned {} results for {} inputs",
                values.len(),
                idx.len()
            );
            for &i in idx {
                results[i] = Some(Err(msg.clone()));
            }
        }
        Err(e) if retry_singly && idx.len() > 1 => {
            tracing::warn!(error = %e, size = idx.len(), "batch failed; retrying its inputs one by one");
            for &i in idx {
                run_batch(task, model, features, &[i], results, stats, false, None);
            }
        }
        Err(e) => {
            for &i in idx {
                results[i] = Some(Err(e.to_string()));
            }
        }
    }
}

fn infer_stage(
    rx: Receiver<Tokenized>,
    tx: Sender<Inferred>,
    tasks: Vec<Arc<dyn Task>>,
    mut models: Vec<OnnxModel>,
    max_bs: usize,
    max_tok: usize,
    record: bool,
) -> Result<Vec<Vec<PaddedBatch>>> {
    let mut recorded: Vec<Vec<PaddedBatch>> = vec![Vec::new(); tasks.len()];
    for tok in rx {
        let n = tok.chunk.len();
        let mut stats = InferStats::default();
        let mut per_task = Vec::with_capacity(tasks.len());
        let mut early_errors = Vec::with_capacity(tasks.len());
        let mut truncated = 0u64;
        for (ti, ((task, model), feats)) in tasks
            .iter()
            .zip(models.iter_mut())
            .zip(tok.per_task)
            .enumerate()
        {
            truncated += feats.truncated as u64;
            let results = infer_features(
                task.as_ref(),
                model,
                &feats.features,
                max_bs,
                max_tok,
                &mut stats,
                record.then(|| &mut recorded[ti]),
            );
            // Group feature results by record and combine them.
            let mut parts: Vec<Vec<FeatureResult>> = vec![Vec::new(); n];
            for (f, r) in feats.features.iter().zip(results) {
                parts[f.row].push(r.unwrap_or_else(|| Err("internal: feature not run".into())));
            }
            let rows: Vec<Option<FeatureResult>> = parts
                .into_iter()
                .map(|p| {
                    if p.is_empty() {
                        return None;
                    }
                    let mut ok = Vec::with_capacity(p.len());
                    for r in p {
                        match r {
                            Ok(v) => ok.push(v),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    Some(task.combine(ok))
                })
                .collect();
            per_task.push(rows);
            early_errors.push(feats.errors);
        }
        StageTime {
            stage: "infer",
            elapsed: stats.model_time + stats.postprocess_time,
        }
        .emit();
        QueueDepth {
            queue: "write",
            depth: tx.len(),
        }
        .emit();
        let msg = Inferred {
            chunk: tok.chunk,
            per_task,
            early_errors,
            truncated,
            batches: stats.batches,
            real_tokens: stats.real_tokens,
            padded_tokens: stats.padded_tokens,
            tokenize_time: tok.elapsed,
            model_time: stats.model_time,
            postprocess_time: stats.postprocess_time,
        };
        if tx.send(msg).is_err() {
            return Err(Error::StageStopped("write"));
        }
    }
    Ok(recorded)
}

/// Split a chunk's records into results (in input order) and error rows.
fn assemble(
    inf: Inferred,
    tasks: &[Arc<dyn Task>],
    schema: &SchemaRef,
    err_schema: &SchemaRef,
) -> Result<ChunkOutput> {
    let Inferred {
        chunk,
        per_task,
        early_errors,
        ..
    } = inf;
    let n = chunk.len();
    let mut failed: Vec<Option<ErrorRow>> = vec![None; n];
    let mut fail = |row: usize, stage: Stage, task: Option<&'static str>, reason: String| {
        let slot = &mut failed[row];
        match slot {
            None => {
                *slot = Some(ErrorRow {
                    row,
                    reason,
                    stage: stage.as_str(),
                    task,
                    source: chunk.origin.describe(row),
                })
            }
            Some(existing) => {
                existing.reason.push_str("; ");
                if let Some(t) = task {
                    existing.reason.push_str(t);
                    existing.reason.push_str(": ");
                }
                existing.reason.push_str(&reason);
            }
        }
    };
    for e in &chunk.errors {
        fail(e.row, e.stage, None, e.reason.clone());
    }
    for (task, errs) in tasks.iter().zip(&early_errors) {
        for e in errs {
            fail(e.row, e.stage, Some(task.name()), e.reason.clone());
        }
    }
    let mut failed_early = vec![false; n];
    for e in early_errors.iter().flatten() {
        failed_early[e.row] = true;
    }
    for (task, rows) in tasks.iter().zip(&per_task) {
        for (row, r) in rows.iter().enumerate() {
            match r {
                Some(Err(reason)) => fail(row, Stage::Model, Some(task.name()), reason.clone()),
                None if chunk.texts[row].is_some() && !failed_early[row] => fail(
                    row,
                    Stage::Task,
                    Some(task.name()),
                    "internal: no result".to_string(),
                ),
                _ => {}
            }
        }
    }
    let ok: Vec<u32> = (0..n as u32)
        .filter(|&i| failed[i as usize].is_none())
        .collect();
    let bad: Vec<ErrorRow> = failed.into_iter().flatten().collect();

    let take = |a: &ArrayRef, rows: &UInt32Array| -> Result<ArrayRef> {
        arrow::compute::take(a.as_ref(), rows, None)
            .map_err(|e| Error::sink("output", e.to_string()))
    };
    let ok_idx = UInt32Array::from(ok.clone());
    let mut columns = vec![take(&chunk.ids, &ok_idx)?];
    for p in &chunk.passthrough {
        columns.push(take(p, &ok_idx)?);
    }
    for (task, rows) in tasks.iter().zip(per_task) {
        let mut rows: Vec<Option<FeatureResult>> = rows;
        let outputs: Vec<TaskOutput> = ok
            .iter()
            .map(|&i| match rows[i as usize].take() {
                Some(Ok(v)) => v,
                _ => unreachable!("rows without a result are failed above"),
            })
            .collect();
        columns.extend(task.columns(outputs)?);
    }
    let results = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::sink("output", format!("cannot build output batch: {e}")))?;
    let bad_idx = UInt32Array::from_iter_values(bad.iter().map(|r| r.row as u32));
    let errors = error_batch(err_schema, take(&chunk.ids, &bad_idx)?, &bad)?;
    Ok(ChunkOutput {
        seq: chunk.seq,
        results,
        errors,
        origin: chunk.origin,
        result_rows: ok,
        error_rows: bad.iter().map(|r| r.row as u32).collect(),
    })
}

/// Count error rows by stage and task.
fn emit_failures(errors: &RecordBatch) {
    use arrow::array::{Array, AsArray};
    if errors.num_rows() == 0 {
        return;
    }
    let stage = errors.column(2).as_string::<i32>();
    let task = errors.column(3).as_string::<i32>();
    let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for i in 0..errors.num_rows() {
        let t = if task.is_valid(i) {
            task.value(i)
        } else {
            "none"
        };
        *counts.entry((stage.value(i), t)).or_default() += 1;
    }
    for ((stage, task), count) in counts {
        RecordsFailed { stage, task, count }.emit();
    }
}

#[allow(clippy::too_many_arguments)]
fn write_stage(
    rx: Receiver<Inferred>,
    tasks: &[Arc<dyn Task>],
    sink: &mut dyn Sink,
    acker: Option<&KafkaAcker>,
    schema: &SchemaRef,
    err_schema: &SchemaRef,
    summary: &mut Summary,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let ack = |durable: Option<u64>| {
        if let (Some(a), Some(seq)) = (acker, durable) {
            a.ack(seq);
        }
    };
    loop {
        if acker.is_some_and(|a| a.flush_requested()) {
            ack(sink.flush()?);
        }
        let inf = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(inf) => inf,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Idle: let the sink close files that are old enough.
                ack(sink.tick()?);
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        summary.records += inf.chunk.len() as u64;
        summary.truncated += inf.truncated;
        summary.batches += inf.batches;
        summary.real_tokens += inf.real_tokens;
        summary.padded_tokens += inf.padded_tokens;
        summary.tokenize_time += inf.tokenize_time;
        summary.model_time += inf.model_time;
        summary.postprocess_time += inf.postprocess_time;
        let n = inf.chunk.len() as u64;
        let t = Instant::now();
        let out = assemble(inf, tasks, schema, err_schema)?;
        summary.written += out.results.num_rows() as u64;
        summary.errors += out.errors.num_rows() as u64;
        RecordsWritten {
            count: out.results.num_rows(),
        }
        .emit();
        emit_failures(&out.errors);
        summary.last_seq = Some(out.seq);
        ack(sink.write(&out)?);
        StageTime {
            stage: "write",
            elapsed: t.elapsed(),
        }
        .emit();
        summary.write_time += t.elapsed();
        progress.inc(n);
    }
    Ok(())
}
