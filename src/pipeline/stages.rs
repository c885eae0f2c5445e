//! Threading: one thread per stage (`source -> tokenize -> infer -> write`), connected by
//! bounded queues so that memory stays bounded and tokenization of the next window overlaps
//! inference of the current one. The writer reports durable chunks back to a streaming source
//! over the source's [`SourceLink`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::assemble::{assemble, emit_failures};
use super::infer::infer_stage;
use super::summary::Summary;
use crate::batch::BatchLimits;
use crate::config::PipelineConfig;
use crate::connector::{Sink, Source, SourceLink};
use crate::error::{Error, Result};
use crate::model::tokenizer::TokenCache;
use crate::model::OnnxModel;
use crate::record::{Chunk, RecordError};
use crate::task::{Featurized, LoadedTask, Task, TaskOutput};
use crate::telemetry::{Event, QueueDepth, RecordsRead, RecordsWritten, StageTime};

/// A chunk with every task's features.
pub(crate) struct Tokenized {
    pub(crate) chunk: Chunk,
    pub(crate) per_task: Vec<Featurized>,
    pub(crate) elapsed: Duration,
}

/// A chunk with every task's per-record results.
pub(crate) struct Inferred {
    pub(crate) chunk: Chunk,
    /// Per task: one entry per record of the chunk.
    pub(crate) per_task: Vec<Vec<Option<std::result::Result<TaskOutput, String>>>>,
    /// Per task: records that failed before inference.
    pub(crate) early_errors: Vec<Vec<RecordError>>,
    pub(crate) truncated: u64,
    pub(crate) batches: u64,
    pub(crate) real_tokens: u64,
    pub(crate) padded_tokens: u64,
    pub(crate) tokenize_time: Duration,
    pub(crate) model_time: Duration,
    pub(crate) postprocess_time: Duration,
}

/// Run the stages to the end of the input (or a requested stop). On success every chunk is
/// durable in the sink and the source has been told so and closed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_stages(
    mut source: Box<dyn Source>,
    tasks: Vec<LoadedTask>,
    mut sink: Box<dyn Sink>,
    link: Option<SourceLink>,
    interrupt: Option<Arc<AtomicBool>>,
    stop_source: Option<Arc<AtomicBool>>,
    schema: SchemaRef,
    cfg: &PipelineConfig,
    limits: BatchLimits,
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
    let (max_bs, max_tok) = (limits.max_batch_size, limits.max_batch_tokens);
    let partial = cfg.sink.partial_results;

    let outcome = thread::scope(|s| {
        let stop_r = stop.clone();
        let reader = thread::Builder::new()
            .name("source".into())
            .spawn_scoped(s, move || -> (Box<dyn Source>, Result<bool>) {
                let r = read_stage(source.as_mut(), &chunk_tx, &stop_r, interrupt.as_deref());
                (source, r)
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
            link.as_ref(),
            &schema,
            partial,
            summary,
            progress,
        );
        if write_result.is_err() {
            stop.store(true, Ordering::Relaxed);
            // A streaming source waits for records inside `next_chunk`: tell it to return.
            if let Some(f) = &stop_source {
                f.store(true, Ordering::SeqCst);
            }
        }
        let infer_result = match infer.join() {
            Ok(Ok(recorded)) => {
                summary.recorded = recorded;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::StageStopped("infer")),
        };
        let (source_back, read_result, interrupted) = match reader.join() {
            Ok((src, Ok(interrupted))) => (Some(src), Ok(()), interrupted),
            Ok((src, Err(e))) => (Some(src), Err(e), false),
            Err(_) => (None, Err(Error::StageStopped("source")), false),
        };
        let results = [
            write_result,
            infer_result,
            tokenizer
                .join()
                .unwrap_or(Err(Error::StageStopped("tokenize"))),
            read_result,
        ];
        (source_back, results, interrupted)
    });
    let (source_back, results, interrupted) = outcome;
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
    if interrupted {
        // Nothing partial under a final name: unfinished files are removed.
        sink.abort();
        summary.interrupted = true;
        return Ok(());
    }
    let t = Instant::now();
    let report = sink.finish();
    summary.write_time += t.elapsed();
    match report {
        Ok(r) => {
            // Everything written is durable now.
            if let (Some(l), Some(seq)) = (&link, summary.last_seq) {
                l.durable(seq);
            }
            summary.written = summary.written.saturating_sub(r.refused);
            summary.errors += r.refused;
            summary.output = r;
            if let Some(mut src) = source_back {
                src.close()?;
            }
            Ok(())
        }
        Err(e) => {
            sink.abort();
            Err(e)
        }
    }
}

/// Read chunks and hand them on; when the tokenizer is behind, wait without reading ahead.
/// Returns `true` when `interrupt` stopped the reading before the end of the input.
fn read_stage(
    source: &mut dyn Source,
    tx: &Sender<Chunk>,
    stop: &AtomicBool,
    interrupt: Option<&AtomicBool>,
) -> Result<bool> {
    let interrupted = || interrupt.is_some_and(|i| i.load(Ordering::SeqCst));
    while !stop.load(Ordering::Relaxed) {
        if interrupted() {
            tracing::warn!("interrupted: no more records are read; the output will be discarded");
            return Ok(true);
        }
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
            depth: tx.len(),
        }
        .emit();
        loop {
            match tx.send_timeout(c, Duration::from_millis(100)) {
                Ok(()) => break,
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    if interrupted() {
                        return Ok(true);
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
    Ok(false)
}

pub(crate) fn tokenize_stage(
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

#[allow(clippy::too_many_arguments)]
fn write_stage(
    rx: Receiver<Inferred>,
    tasks: &[Arc<dyn Task>],
    sink: &mut dyn Sink,
    link: Option<&SourceLink>,
    schema: &SchemaRef,
    partial: bool,
    summary: &mut Summary,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let ack = |durable: Option<u64>| {
        if let (Some(l), Some(seq)) = (link, durable) {
            l.durable(seq);
        }
    };
    loop {
        let inf = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(inf) => inf,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Idle: let the sink close files that are old enough, collect acknowledgements.
                ack(sink.tick()?);
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        let n = inf.chunk.len() as u64;
        let stats = (
            inf.truncated,
            inf.batches,
            inf.real_tokens,
            inf.padded_tokens,
            inf.tokenize_time,
            inf.model_time,
            inf.postprocess_time,
        );
        let t = Instant::now();
        let out = assemble(inf, tasks, schema, partial)?;
        let written = sink.write(&out)?;
        ack(written.durable);
        StageTime {
            stage: "write",
            elapsed: t.elapsed(),
        }
        .emit();
        summary.write_time += t.elapsed();
        summary.batches += stats.1;
        summary.real_tokens += stats.2;
        summary.padded_tokens += stats.3;
        summary.tokenize_time += stats.4;
        summary.model_time += stats.5;
        summary.postprocess_time += stats.6;
        if !written.kept {
            // Read before a rewind: read, processed and written again later.
            continue;
        }
        summary.records += n;
        summary.truncated += stats.0;
        let failed = out.failed_records() as u64;
        summary.written += out.results.num_rows() as u64;
        summary.errors += failed;
        summary.task_errors += out.errors.len() as u64 - failed;
        RecordsWritten {
            count: out.results.num_rows(),
        }
        .emit();
        emit_failures(&out.errors);
        summary.last_seq = Some(out.seq);
        progress.inc(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{ChunkOutput, SinkReport, Written};
    use crate::record::Origin;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    /// Keeps every chunk but those in `drop` (as an exactly-once sink drops chunks read before a
    /// rewind).
    struct Dropping {
        drop: Vec<u64>,
        kept: Vec<u64>,
    }

    impl Sink for Dropping {
        fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
            if self.drop.contains(&out.seq) {
                return Ok(Written::dropped());
            }
            self.kept.push(out.seq);
            Ok(Written::kept(Some(out.seq)))
        }
        fn finish(&mut self) -> Result<SinkReport> {
            Ok(SinkReport::default())
        }
        fn abort(&mut self) {}
    }

    fn inferred(seq: u64, n: usize) -> Inferred {
        let ids: Vec<String> = (0..n).map(|i| format!("{seq}-{i}")).collect();
        Inferred {
            chunk: Chunk {
                seq,
                origin: Origin::File {
                    path: Arc::from("in"),
                    first_row: 0,
                },
                ids: Arc::new(StringArray::from(ids)),
                texts: (0..n).map(|_| Some(Arc::from("t"))).collect(),
                questions: None,
                passthrough: Vec::new(),
                errors: Vec::new(),
            },
            per_task: Vec::new(),
            early_errors: Vec::new(),
            truncated: 0,
            batches: 1,
            real_tokens: 0,
            padded_tokens: 0,
            tokenize_time: Duration::ZERO,
            model_time: Duration::ZERO,
            postprocess_time: Duration::ZERO,
        }
    }

    #[test]
    fn chunks_the_sink_drops_are_not_counted_as_read_or_written() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let (tx, rx) = bounded(4);
        for (seq, n) in [(0, 3), (1, 5), (2, 2)] {
            tx.send(inferred(seq, n)).unwrap();
        }
        drop(tx);
        let mut sink = Dropping {
            drop: vec![1],
            kept: Vec::new(),
        };
        let (link, feedback) = SourceLink::channel();
        let mut summary = Summary::default();
        write_stage(
            rx,
            &[],
            &mut sink,
            Some(&link),
            &schema,
            true,
            &mut summary,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(sink.kept, [0, 2]);
        assert_eq!(summary.records, 5);
        assert_eq!(summary.written, 5);
        assert_eq!(summary.last_seq, Some(2));
        // Durable chunks were reported back to the source, the dropped one not.
        let acks: Vec<_> = feedback.try_iter().collect();
        assert_eq!(
            acks,
            [
                crate::connector::Feedback::Durable(0),
                crate::connector::Feedback::Durable(2)
            ]
        );
    }
}
