//! What passes between the stages (a [`Tokenized`] chunk, an [`Inferred`] chunk), how a stage
//! ended ([`Flow`]), and the blocking hand-offs every stage uses: a message or the run's
//! shutdown token, whichever comes first.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Error, Result};
use crate::lifecycle::Shutdown;
use crate::record::{Chunk, RecordError};
use crate::task::{Featurized, TaskOutput};

/// One feature's (or one record's) result of a task, or why it failed.
pub(crate) type FeatureResult = std::result::Result<TaskOutput, String>;

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
    pub(crate) per_task: Vec<Vec<Option<FeatureResult>>>,
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

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Its input ended and everything it took was handed on.
    Done,
    /// The run's shutdown token stopped it; what it held was abandoned.
    Stopped,
}

/// Wait for the next message of `rx` or the token: `Ok(Some)` a message, `Ok(None)` the input
/// ended, `Err(Flow::Stopped)` the token.
pub(crate) fn recv_or_stop<T>(
    rx: &Receiver<T>,
    stop: &Shutdown,
) -> std::result::Result<Option<T>, Flow> {
    crossbeam_channel::select! {
        recv(rx) -> m => Ok(m.ok()),
        recv(stop.receiver()) -> _ => Err(Flow::Stopped),
    }
}

/// Hand `msg` on, blocking until the next stage takes it or the token is triggered.
/// `next` names the next stage for the error when it stopped on its own.
pub(crate) fn send_or_stop<T>(
    tx: &Sender<T>,
    msg: T,
    stop: &Shutdown,
    next: &'static str,
) -> Result<Flow> {
    let mut sel = crossbeam_channel::Select::new();
    let send = sel.send(tx);
    sel.recv(stop.receiver());
    let op = sel.select();
    if op.index() == send {
        return match op.send(tx, msg) {
            Ok(()) => Ok(Flow::Done),
            Err(_) if stop.is_triggered() => Ok(Flow::Stopped),
            Err(_) => Err(Error::StageStopped(next)),
        };
    }
    let _ = op.recv(stop.receiver());
    Ok(Flow::Stopped)
}
