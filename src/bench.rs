//! `bertflow bench`: run a pipeline end to end, then run exactly the batches it formed through
//! bare ONNX Runtime sessions of the same models, and report both side by side. What separates
//! the two is bertflow's own overhead (reading, tokenizing, batching, post-processing, writing,
//! minus what overlaps with inference).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::PipelineConfig;
use crate::error::Result;
use crate::model::OrtRuntime;
use crate::pipeline::{load_tasks, run, RunOptions, Summary};

/// Figures of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub tasks: Vec<String>,
    pub records: u64,
    pub errors: u64,
    pub batches: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    pub padding_ratio: f64,
    pub seconds: f64,
    pub records_per_second: f64,
    pub tokens_per_second: f64,
    pub tokenize_seconds: f64,
    pub model_seconds: f64,
    pub postprocess_seconds: f64,
    pub write_seconds: f64,
    /// The same batches through bare sessions (tensor creation + `Session::run`), all tasks.
    pub raw_ort_seconds: f64,
    /// raw_ort_seconds / seconds: 1.0 means no overhead at all.
    pub ratio_to_raw_ort: f64,
    /// Of `seconds`, the start-up before the first record is read: loading the library and the
    /// models (sessions, and on a GPU the device's initialisation), opening source and sink.
    pub startup_seconds: f64,
    /// raw_ort_seconds / (seconds - startup_seconds): the overhead once running, which is what
    /// a long job sees (the raw sessions' own creation is not in raw_ort_seconds either).
    pub ratio_to_raw_ort_after_startup: f64,
    pub peak_rss_mib: f64,
    pub provider: String,
}

/// Run `cfg` end to end, then its recorded batches through fresh sessions.
pub fn bench(cfg: &PipelineConfig, opts: &RunOptions) -> Result<(Summary, BenchReport)> {
    let mut o = opts.clone();
    o.record_batches = true;
    let summary = run(cfg, &o)?;
    let rt = OrtRuntime::init(opts.ort_lib.as_deref(), &cfg.runtime)?;
    let (mut tasks, _) = load_tasks(cfg, &rt)?;
    // One warm-up call per model, as the pipeline's first batch also paid for it.
    for (t, batches) in tasks.iter_mut().zip(&summary.recorded) {
        if let Some(b) = batches.first() {
            t.model.run(b, |_| Ok(()))?;
        }
    }
    let mut raw = Duration::ZERO;
    for (t, batches) in tasks.iter_mut().zip(&summary.recorded) {
        let start = Instant::now();
        for b in batches {
            t.model.run(b, |_| Ok(()))?;
        }
        raw += start.elapsed();
    }
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    let report = BenchReport {
        tasks: summary.tasks.clone(),
        records: summary.records,
        errors: summary.errors,
        batches: summary.batches,
        real_tokens: summary.real_tokens,
        padded_tokens: summary.padded_tokens,
        padding_ratio: summary.padding_ratio(),
        seconds: secs,
        records_per_second: summary.records as f64 / secs,
        tokens_per_second: summary.real_tokens as f64 / secs,
        tokenize_seconds: summary.tokenize_time.as_secs_f64(),
        model_seconds: summary.model_time.as_secs_f64(),
        postprocess_seconds: summary.postprocess_time.as_secs_f64(),
        write_seconds: summary.write_time.as_secs_f64(),
        raw_ort_seconds: raw.as_secs_f64(),
        ratio_to_raw_ort: raw.as_secs_f64() / secs,
        startup_seconds: summary.startup.as_secs_f64(),
        ratio_to_raw_ort_after_startup: raw.as_secs_f64()
            / (secs - summary.startup.as_secs_f64()).max(1e-9),
        peak_rss_mib: crate::telemetry::peak_rss_mib(),
        provider: summary.provider.clone(),
    };
    Ok((summary, report))
}
