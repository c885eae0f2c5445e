//! Batch execution: a task's features through its model in length-sorted, budgeted batches,
//! with a failed batch retried one feature at a time so that a single bad input fails alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::flow::{recv_or_stop, send_or_stop, FeatureResult, Flow, Inferred, Tokenized};
use crate::batch::{plan, Feature, PaddedBatch};
use crate::error::Result;
use crate::lifecycle::Shutdown;
use crate::model::session::OwnedOutputs;
use crate::model::OnnxModel;
use crate::task::Task;
use crate::telemetry::{BatchRun, Event, QueueDepth, StageTime};

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
    recorder: Option<&mut Vec<PaddedBatch>>,
) -> Vec<Option<FeatureResult>> {
    let never = Shutdown::new();
    let limits = (max_batch_size, max_batch_tokens);
    infer_features_until(task, model, features, limits, stats, recorder, &never)
        .expect("a token nobody holds is never triggered")
}

/// [`infer_features`] that stops between two model batches once `stop` is triggered
/// (`None`: the features were abandoned).
pub fn infer_features_until(
    task: &dyn Task,
    model: &mut OnnxModel,
    features: &[Feature],
    (max_batch_size, max_batch_tokens): (usize, usize),
    stats: &mut InferStats,
    mut recorder: Option<&mut Vec<PaddedBatch>>,
    stop: &Shutdown,
) -> Option<Vec<Option<FeatureResult>>> {
    let lengths: Vec<usize> = features.iter().map(|f| f.encoding.len()).collect();
    let mut results: Vec<Option<FeatureResult>> = vec![None; features.len()];
    let batches = plan(&lengths, max_batch_size, max_batch_tokens);
    if model.overlaps_postprocess() && batches.len() > 1 {
        let done = overlapped(
            task,
            model,
            features,
            batches,
            &mut results,
            stats,
            recorder,
            stop,
        );
        return done.then_some(results);
    }
    for idx in batches {
        if stop.is_triggered() {
            return None;
        }
        let rec = recorder.as_deref_mut();
        run_batch(task, model, features, &idx, &mut results, stats, true, rec);
    }
    Some(results)
}

/// [`infer_features`]' batches with each batch's post-processing on a second thread (from a copy
/// of its outputs) while the model runs the next one. Same results: a batch whose model call
/// fails is retried one feature at a time at once, a batch whose post-processing fails once all
/// batches have run. Returns `false` when `stop` ended it before the last batch.
#[allow(clippy::too_many_arguments)]
fn overlapped(
    task: &dyn Task,
    model: &mut OnnxModel,
    features: &[Feature],
    batches: Vec<Vec<usize>>,
    results: &mut [Option<FeatureResult>],
    stats: &mut InferStats,
    mut recorder: Option<&mut Vec<PaddedBatch>>,
    stop: &Shutdown,
) -> bool {
    let mut stopped = false;
    type Done = (Vec<usize>, Result<Vec<FeatureResult>>);
    let (done, post) = std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<(Vec<usize>, PaddedBatch, OwnedOutputs)>(1);
        let worker = s.spawn(move || {
            let mut done: Vec<Done> = Vec::new();
            let mut post = Duration::ZERO;
            for (idx, padded, outputs) in rx {
                let feats: Vec<&Feature> = idx.iter().map(|&i| &features[i]).collect();
                let t = Instant::now();
                let r = task.postprocess(&feats, &padded, &outputs.view());
                post += t.elapsed();
                done.push((idx, r));
            }
            (done, post)
        });
        for idx in batches {
            if stop.is_triggered() {
                stopped = true;
                break;
            }
            let (_, padded) = prepare(task, features, &idx, stats, recorder.as_deref_mut());
            let t = Instant::now();
            let out = model.run_owned(&padded);
            let model_time = t.elapsed();
            stats.model_time += model_time;
            emit_batch(task, &padded, model_time);
            match out {
                Ok(outputs) => {
                    if tx.send((idx, padded, outputs)).is_err() {
                        break; // the worker panicked; join reports it
                    }
                }
                Err(e) => settle(task, model, features, &idx, Err(e), results, stats, true),
            }
        }
        drop(tx);
        worker.join().unwrap_or_else(|_| {
            tracing::error!("post-processing thread panicked");
            (Vec::new(), Duration::ZERO)
        })
    });
    stats.postprocess_time += post;
    if stopped {
        return false;
    }
    for (idx, r) in done {
        settle(task, model, features, &idx, r, results, stats, true);
    }
    true
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
    let (feats, padded) = prepare(task, features, idx, stats, recorder);
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
    emit_batch(task, &padded, model_time);
    settle(
        task,
        model,
        features,
        idx,
        out,
        results,
        stats,
        retry_singly,
    );
}

/// Store a batch's results by feature index; a failed batch is retried one feature at a time
/// (when `retry_singly`) so that a single bad input fails alone.
#[allow(clippy::too_many_arguments)]
fn settle(
    task: &dyn Task,
    model: &mut OnnxModel,
    features: &[Feature],
    idx: &[usize],
    out: Result<Vec<FeatureResult>>,
    results: &mut [Option<FeatureResult>],
    stats: &mut InferStats,
    retry_singly: bool,
) {
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn infer_stage(
    rx: Receiver<Tokenized>,
    tx: Sender<Inferred>,
    tasks: Vec<Arc<dyn Task>>,
    mut models: Vec<&mut OnnxModel>,
    max_bs: usize,
    max_tok: usize,
    record: bool,
    stop: &Shutdown,
) -> Result<(Vec<Vec<PaddedBatch>>, Flow)> {
    let mut recorded: Vec<Vec<PaddedBatch>> = vec![Vec::new(); tasks.len()];
    loop {
        let tok = match recv_or_stop(&rx, stop) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok((recorded, Flow::Done)),
            Err(flow) => return Ok((recorded, flow)),
        };
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
            let Some(results) = infer_features_until(
                task.as_ref(),
                model,
                &feats.features,
                (max_bs, max_tok),
                &mut stats,
                record.then(|| &mut recorded[ti]),
                stop,
            ) else {
                return Ok((recorded, Flow::Stopped));
            };
            // Group feature results by record and combine them.
            let mut parts: Vec<Vec<FeatureResult>> = vec![Vec::new(); n];
            for (f, r) in feats.features.iter().zip(results) {
                parts[f.row].push(r.unwrap_or_else(|| Err("internal: feature not run".into())));
            }
            let mut failed = vec![false; n];
            for e in &feats.errors {
                failed[e.row] = true;
            }
            let rows: Vec<Option<FeatureResult>> = parts
                .into_iter()
                .enumerate()
                .map(|(row, p)| {
                    if p.is_empty() {
                        // A record with a text and no features (nothing to embed).
                        return (tok.chunk.texts[row].is_some() && !failed[row])
                            .then(|| task.empty_result().map(Ok))
                            .flatten();
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
        if send_or_stop(&tx, msg, stop, "write")? == Flow::Stopped {
            return Ok((recorded, Flow::Stopped));
        }
    }
}

/// Pad the features `idx` into a batch, count it, and keep a copy in `recorder`.
fn prepare<'f>(
    task: &dyn Task,
    features: &'f [Feature],
    idx: &[usize],
    stats: &mut InferStats,
    recorder: Option<&mut Vec<PaddedBatch>>,
) -> (Vec<&'f Feature>, PaddedBatch) {
    let feats: Vec<&Feature> = idx.iter().map(|&i| &features[i]).collect();
    let padded = PaddedBatch::new(feats.iter().map(|f| &f.encoding), task.pad_id());
    if let Some(r) = recorder {
        r.push(padded.clone());
    }
    stats.batches += 1;
    stats.real_tokens += padded.real_tokens as u64;
    stats.padded_tokens += padded.padded_tokens() as u64;
    (feats, padded)
}

fn emit_batch(task: &dyn Task, padded: &PaddedBatch, model_time: Duration) {
    BatchRun {
        task: task.name(),
        sequences: padded.rows,
        real_tokens: padded.real_tokens,
        padded_tokens: padded.padded_tokens(),
        model_time,
    }
    .emit();
}
