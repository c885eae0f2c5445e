//! Threading: one thread per stage (`source -> tokenize -> infer -> write`), connected by
//! bounded queues so that memory stays bounded and tokenization of the next window overlaps
//! inference of the current one. The writer reports durable chunks back to a streaming source
//! over the source's [`SourceLink`].

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use crossbeam_channel::{bounded, Receiver, Sender};

use super::assemble::{assemble, emit_failures};
use super::flow::{recv_or_stop, send_or_stop, Flow, Inferred, Tokenized};
use super::infer::infer_stage;
use super::summary::Summary;
use crate::batch::BatchLimits;
use crate::config::PipelineConfig;
use crate::connector::{Sink, Source, SourceLink};
use crate::error::{Error, Result};
use crate::lifecycle::Shutdown;
use crate::model::tokenizer::TokenCache;
use crate::model::OnnxModel;
use crate::record::Chunk;
use crate::task::{LoadedTask, Task};
use crate::telemetry::{Event, QueueDepth, RecordsRead, RecordsWritten, StageTime};

/// Run the stages to the end of the input or until `stop` is triggered (by a signal or a failed
/// stage: every stage then abandons what it holds within about one model batch). On success
/// every chunk written is durable in the sink and the source has been told so and closed; a
/// batch job stopped before the end discards its output (`summary.interrupted`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_stages(
    mut source: Box<dyn Source>,
    tasks: &mut [LoadedTask],
    mut sink: Box<dyn Sink>,
    link: Option<SourceLink>,
    stop: &Shutdown,
    streaming: bool,
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
    let task_defs: Vec<Arc<dyn Task>> = tasks.iter().map(|t| t.task.clone()).collect();
    let models: Vec<&mut OnnxModel> = tasks.iter_mut().map(|t| &mut t.model).collect();
    let (max_bs, max_tok) = (limits.max_batch_size, limits.max_batch_tokens);
    let partial = cfg.sink.partial_results;
    // A failed stage stops the others at once.
    let stop_on_error = |r: Result<Flow>| {
        if r.is_err() {
            stop.trigger();
        }
        r
    };

    let (source_back, results) = thread::scope(|s| {
        let reader = thread::Builder::new()
            .name("source".into())
            .spawn_scoped(s, move || -> (Box<dyn Source>, Result<Flow>) {
                let r = stop_on_error(read_stage(source.as_mut(), &chunk_tx, stop));
                (source, r)
            })
            .expect("spawn source thread");

        let tdefs = task_defs.clone();
        let tokenizer = thread::Builder::new()
            .name("tokenize".into())
            .spawn_scoped(s, move || {
                stop_on_error(tokenize_stage(chunk_rx, tok_tx, tdefs, stop))
            })
            .expect("spawn tokenize thread");

        let tdefs = task_defs.clone();
        let infer = thread::Builder::new()
            .name("infer".into())
            .spawn_scoped(s, move || {
                let r = infer_stage(tok_rx, inf_tx, tdefs, models, max_bs, max_tok, record, stop);
                if r.is_err() {
                    stop.trigger();
                }
                r
            })
            .expect("spawn infer thread");

        // The writer runs here.
        let write_result = stop_on_error(write_stage(
            inf_rx,
            &task_defs,
            sink.as_mut(),
            link.as_ref(),
            &schema,
            partial,
            stop,
            summary,
            progress,
        ));
        let infer_result = match infer.join() {
            Ok(Ok((recorded, flow))) => {
                summary.recorded = recorded;
                Ok(flow)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::StageStopped("infer")),
        };
        let (source_back, read_result) = match reader.join() {
            Ok((src, r)) => (Some(src), r),
            Err(_) => (None, Err(Error::StageStopped("source"))),
        };
        let results = [
            write_result,
            infer_result,
            tokenizer
                .join()
                .unwrap_or(Err(Error::StageStopped("tokenize"))),
            read_result,
        ];
        (source_back, results)
    });
    // Report the root cause: a real error rather than a downstream "stage stopped".
    let mut first_stop = None;
    let mut abandoned = false;
    for r in results {
        match r {
            Ok(flow) => abandoned |= flow == Flow::Stopped,
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
    if abandoned && !streaming {
        // Nothing partial under a final name: unfinished files are removed.
        tracing::warn!("interrupted: the work in flight was abandoned and the output discarded");
        sink.abort();
        summary.interrupted = true;
        return Ok(());
    }
    // A streaming job stopped by its token abandoned the chunks in flight: what was written is
    // made durable and committed below; the rest is read again by the next owner.
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

/// Read chunks and hand them on; while the tokenizer is behind, wait without reading ahead
/// (calling the source's [`Source::idle`] on its interval).
fn read_stage(source: &mut dyn Source, tx: &Sender<Chunk>, stop: &Shutdown) -> Result<Flow> {
    let idle = source
        .idle_interval()
        .map(crossbeam_channel::tick)
        .unwrap_or_else(crossbeam_channel::never);
    loop {
        if stop.is_triggered() {
            return Ok(Flow::Stopped);
        }
        let Some(c) = source.next_chunk()? else {
            return Ok(Flow::Done);
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
        let mut sel = crossbeam_channel::Select::new();
        let send = sel.send(tx);
        let stopped = sel.recv(stop.receiver());
        sel.recv(&idle);
        let mut chunk = Some(c);
        loop {
            let op = sel.select();
            match op.index() {
                i if i == send => {
                    let c = chunk.take().expect("sent once");
                    match op.send(tx, c) {
                        Ok(()) => break,
                        Err(_) if stop.is_triggered() => return Ok(Flow::Stopped),
                        Err(_) => return Err(Error::StageStopped("tokenize")),
                    }
                }
                i if i == stopped => {
                    let _ = op.recv(stop.receiver());
                    return Ok(Flow::Stopped);
                }
                _ => {
                    let _ = op.recv(&idle);
                    source.idle();
                }
            }
        }
    }
}

pub(crate) fn tokenize_stage(
    rx: Receiver<Chunk>,
    tx: Sender<Tokenized>,
    tasks: Vec<Arc<dyn Task>>,
    stop: &Shutdown,
) -> Result<Flow> {
    // Tokenizers none of whose tasks maps tokens back to the text skip offset tracking.
    let fast: std::collections::HashSet<u64> = tasks
        .iter()
        .map(|t| t.tokenizer().key())
        .filter(|k| {
            !tasks
                .iter()
                .any(|t| t.tokenizer().key() == *k && t.needs_offsets())
        })
        .collect();
    loop {
        let chunk = match recv_or_stop(&rx, stop) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Flow::Done),
            Err(flow) => return Ok(flow),
        };
        let t = Instant::now();
        let cache = TokenCache::without_offsets(fast.clone());
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
        if send_or_stop(&tx, msg, stop, "infer")? == Flow::Stopped {
            return Ok(Flow::Stopped);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_stage(
    rx: Receiver<Inferred>,
    tasks: &[Arc<dyn Task>],
    sink: &mut dyn Sink,
    link: Option<&SourceLink>,
    schema: &SchemaRef,
    partial: bool,
    stop: &Shutdown,
    summary: &mut Summary,
    progress: &indicatif::ProgressBar,
) -> Result<Flow> {
    let ack = |durable: Option<u64>| {
        if let (Some(l), Some(seq)) = (link, durable) {
            l.durable(seq);
        }
    };
    // The sink's clock: it closes files that are old enough, collects acknowledgements.
    let ticks = sink
        .tick_interval()
        .map(crossbeam_channel::tick)
        .unwrap_or_else(crossbeam_channel::never);
    loop {
        let inf = crossbeam_channel::select! {
            recv(rx) -> m => match m {
                Ok(inf) => inf,
                Err(_) => return Ok(Flow::Done),
            },
            recv(ticks) -> _ => {
                ack(sink.tick()?);
                continue;
            }
            recv(stop.receiver()) -> _ => return Ok(Flow::Stopped),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{ChunkOutput, SinkReport, Written};
    use crate::record::Origin;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::time::Duration;

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
                columns: Vec::new(),
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
            &Shutdown::new(),
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
