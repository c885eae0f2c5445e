//! Kafka sink: one output message per input record (JSON) or one Arrow IPC stream per chunk,
//! and the dead-letter topic.
//!
//! - At-least-once (default): idempotent producer with `acks=all`; a chunk is durable once every
//!   one of its messages (results and dead letters) is acknowledged by the brokers. Chunks are
//!   sent without waiting for the previous ones' acknowledgements (up to
//!   [`MAX_CHUNKS_IN_FLIGHT`]); they become durable in order.
//! - Exactly-once (`exactly_once: true`): each chunk is one transaction holding its results, its
//!   dead letters and its input offsets (`send_offsets_to_transaction` with the consumer group's
//!   current state). Records of partitions this worker no longer owns (an incremental rebalance
//!   moved them) are left out: their next owner reads them. A transaction that cannot commit is
//!   aborted and the source rewinds to the committed offsets; chunks read before the rewind are
//!   dropped.
//! - A result message the brokers refuse (larger than the topic's `max.message.bytes`, an
//!   invalid record) sends its record to the error output with the brokers' reason; the rest of
//!   the chunk is written.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt32Array};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::config::{KafkaOutputFormat, KafkaSinkConfig};
use super::dead_letter::{dead_letters, kafka_records, provenance};
use super::producer::{
    make_producer, refused_alone, send, send_all, KafkaProducer, Limits, Outgoing, Pending,
    Refused, TXN_TIMEOUT,
};
use crate::connector::{
    json_rows, log_failures, take_rows, ChunkOutput, ErrorOutput, Sink, SinkReport, SourceLink,
    Written,
};
use crate::error::{Error, Result};
use crate::lifecycle::Shutdown;
use crate::record::Stage;
use crate::telemetry::{DeadLettered, Event, TransactionAborted};

/// The part of a chunk still owned, the group state to commit it with, and its offsets.
type OwnedPart = (
    Option<ChunkOutput>,
    Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>,
    Vec<(Arc<str>, i32, i64)>,
);

/// Chunks sent and not yet acknowledged, at most (at-least-once).
pub const MAX_CHUNKS_IN_FLIGHT: usize = 8;

fn arrow_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema())
        .map_err(|e| Error::sink("kafka output", e.to_string()))?;
    w.write(batch)
        .map_err(|e| Error::sink("kafka output", e.to_string()))?;
    w.into_inner()
        .map_err(|e| Error::sink("kafka output", e.to_string()))
}

/// What each message of a chunk carries: the records (rows of the chunk) it holds.
struct Sent {
    seq: u64,
    out: ChunkOutput,
    /// Per message sent: the chunk rows of its records (results), or none (dead letters).
    rows: Vec<Vec<u32>>,
    pending: Pending,
}

pub struct KafkaSink {
    cfg: KafkaSinkConfig,
    producer: KafkaProducer,
    dlq_topic: Option<String>,
    error_file: Option<Box<dyn ErrorOutput>>,
    /// Exactly-once: the source's feedback channel (rewinds); the group's state comes with each
    /// chunk's records.
    link: Option<SourceLink>,
    /// Chunks of an older rewind epoch are stale.
    min_epoch: u64,
    in_flight: VecDeque<Sent>,
    /// Largest message each topic takes.
    limits: Limits,
    report: SinkReport,
    aborted_transactions: u64,
    /// Ends retry back-offs early.
    shutdown: Shutdown,
}

impl KafkaSink {
    pub fn new(
        cfg: &KafkaSinkConfig,
        bootstrap: &str,
        dlq_topic: Option<String>,
        error_file: Option<Box<dyn ErrorOutput>>,
        transactional_id: Option<String>,
        link: Option<SourceLink>,
        shutdown: Shutdown,
    ) -> Result<Self> {
        let mut topics = vec![cfg.topic.as_str()];
        topics.extend(dlq_topic.as_deref());
        let limits = Limits::describe(bootstrap, &cfg.properties, &topics);
        let smallest = topics.iter().filter_map(|t| limits.get(t)).min();
        let producer = make_producer(
            bootstrap,
            &cfg.properties,
            transactional_id.as_deref(),
            smallest,
        )?;
        let link = if cfg.exactly_once { link } else { None };
        if cfg.exactly_once && link.is_none() {
            return Err(Error::config(
                "sink.kafka.exactly_once needs a Kafka source",
            ));
        }
        let mut report = SinkReport::default();
        report
            .destinations
            .push(format!("kafka topic {}", cfg.topic));
        if let Some(t) = &dlq_topic {
            report
                .destinations
                .push(format!("kafka dead-letter topic {t}"));
        }
        Ok(KafkaSink {
            cfg: cfg.clone(),
            producer,
            dlq_topic,
            error_file,
            link,
            min_epoch: 0,
            in_flight: VecDeque::new(),
            limits,
            report,
            aborted_transactions: 0,
            shutdown,
        })
    }

    /// The result messages of a chunk, each with the chunk rows of its records.
    fn result_messages(&self, out: &ChunkOutput) -> Result<Vec<(Outgoing, Vec<u32>)>> {
        let mut msgs = Vec::new();
        let kafka = kafka_records(out);
        match self.cfg.format {
            KafkaOutputFormat::Json => {
                let rows = json_rows(&out.results)?;
                let ids = out.results.column(0);
                for (i, value) in rows.into_iter().enumerate() {
                    let row = out.result_rows[i];
                    let (key, headers) = match kafka {
                        Some(k) => {
                            let m = &k.messages[row as usize];
                            (m.key.clone(), provenance(m))
                        }
                        None => {
                            let id = arrow::util::display::array_value_to_string(ids, i)
                                .unwrap_or_default();
                            (
                                Some(id.into_bytes()),
                                vec![(
                                    "bertflow.source".to_string(),
                                    out.origin.describe(row as usize).into_bytes(),
                                )],
                            )
                        }
                    };
                    msgs.push((
                        Outgoing {
                            topic: self.cfg.topic.clone(),
                            key,
                            value,
                            headers,
                        },
                        vec![row],
                    ));
                }
            }
            KafkaOutputFormat::Arrow => {
                if out.results.num_rows() > 0 {
                    let mut headers = vec![
                        ("bertflow.format".to_string(), b"arrow-ipc-stream".to_vec()),
                        (
                            "bertflow.rows".to_string(),
                            out.results.num_rows().to_string().into_bytes(),
                        ),
                    ];
                    if let Some(k) = kafka {
                        let offs: Vec<String> = k
                            .next_offsets
                            .iter()
                            .map(|(t, p, o)| format!("{t}/{p}/{o}"))
                            .collect();
                        headers.push((
                            "bertflow.source.next_offsets".into(),
                            offs.join(",").into_bytes(),
                        ));
                    }
                    msgs.push((
                        Outgoing {
                            topic: self.cfg.topic.clone(),
                            key: None,
                            value: arrow_ipc(&out.results)?,
                            headers,
                        },
                        out.result_rows.clone(),
                    ));
                }
            }
        }
        Ok(msgs)
    }

    /// Every message of a chunk: results, then dead letters.
    fn messages(&self, out: &ChunkOutput) -> Result<(Vec<Outgoing>, Vec<Vec<u32>>)> {
        let mut msgs = Vec::new();
        let mut rows = Vec::new();
        for (m, r) in self.result_messages(out)? {
            msgs.push(m);
            rows.push(r);
        }
        if let Some(t) = &self.dlq_topic {
            for m in dead_letters(t, out, self.limits.get(t)) {
                msgs.push(m);
                rows.push(Vec::new());
            }
        }
        Ok((msgs, rows))
    }

    /// Keep the failed records of a chunk where they go besides the topic (error file).
    fn keep_failures(&mut self, out: &ChunkOutput) -> Result<()> {
        log_failures(out, self.dlq_topic.is_some() || self.error_file.is_some());
        if let Some(f) = &mut self.error_file {
            f.write(out)?;
        }
        let dead = out.failed_records();
        if let (Some(t), true) = (&self.dlq_topic, dead > 0) {
            DeadLettered {
                topic: t.clone(),
                count: dead,
            }
            .emit();
        }
        Ok(())
    }

    /// Move the records of refused result messages from the results to the error rows.
    fn refuse(out: &ChunkOutput, rows: &[Vec<u32>], refused: &[Refused]) -> Result<ChunkOutput> {
        let mut gone: Vec<(u32, String)> = Vec::new();
        for r in refused {
            if rows[r.index].is_empty() {
                return Err(Error::sink(
                    "kafka dead-letter topic",
                    format!("a dead letter was refused: {} (the dead-letter topic must take messages of up to {} bytes plus headers)", r.reason, super::dead_letter::DLQ_MAX_VALUE_BYTES),
                ));
            }
            for &row in &rows[r.index] {
                gone.push((row, r.reason.clone()));
            }
        }
        out.refuse(&gone)
    }

    /// The oldest chunk's messages are all acknowledged (or `wait`): refused records go to the
    /// error output, and the chunk is durable.
    fn complete_front(&mut self, wait: bool) -> Result<Option<u64>> {
        let Some(front) = self.in_flight.front_mut() else {
            return Ok(None);
        };
        if !wait && !front.pending.is_done()? {
            return Ok(None);
        }
        let sent = self.in_flight.pop_front().expect("front exists");
        let refused = sent.pending.wait()?;
        let refused = if refused.is_empty() {
            refused
        } else {
            // Messages refused with others in one record batch are sent again alone.
            let (msgs, _) = self.messages(&sent.out)?;
            refused_alone(&self.producer, &msgs, refused, &self.limits)?
        };
        if refused.is_empty() {
            self.keep_failures(&sent.out)?;
            return Ok(Some(sent.seq));
        }
        let out = Self::refuse(&sent.out, &sent.rows, &refused)?;
        let n_refused: u64 = refused
            .iter()
            .map(|r| sent.rows[r.index].len() as u64)
            .sum();
        self.report.refused += n_refused;
        self.report.rows = self.report.rows.saturating_sub(n_refused);
        // The refused records' dead letters, acknowledged before the chunk counts as durable.
        if let Some(t) = &self.dlq_topic {
            let k = kafka_records(&out);
            let letters: Vec<Outgoing> = out
                .errors
                .iter()
                .filter(|e| e.stage == Stage::Sink)
                .filter_map(|e| {
                    k.map(|k| {
                        super::dead_letter::dead_letter(
                            t,
                            &k.messages[e.row as usize],
                            e,
                            self.limits.get(t),
                        )
                    })
                })
                .collect();
            if let Some(r) = send_all(&self.producer, &letters, &self.limits)?.first() {
                return Err(Error::sink(
                    format!("kafka dead-letter topic {t}"),
                    format!("a dead letter was refused: {}", r.reason),
                ));
            }
        }
        self.report.error_rows += n_refused;
        self.keep_failures(&out)?;
        Ok(Some(sent.seq))
    }

    /// Complete acknowledged chunks in order; `block` waits for the oldest one.
    fn collect(&mut self, block: bool) -> Result<Option<u64>> {
        let mut durable = None;
        let mut wait = block;
        while let Some(seq) = self.complete_front(wait)? {
            durable = Some(seq);
            wait = false;
        }
        Ok(durable)
    }

    fn txn_error(&self, what: &str, e: KafkaError) -> Error {
        Error::sink(
            format!("kafka topic {}", self.cfg.topic),
            format!("{what}: {e}"),
        )
    }

    /// The chunk without the records of partitions this worker no longer owns under the same
    /// assignment; `None` when none is left. Also the group state to commit with.
    fn owned_part(&self, out: &ChunkOutput) -> Result<OwnedPart> {
        let k = kafka_records(out)
            .ok_or_else(|| Error::config("sink.kafka.exactly_once needs a Kafka source"))?;
        let view = k.group.lock().expect("group view");
        let owned = |t: &Arc<str>, p: i32| -> bool {
            let key = (t.clone(), p);
            k.generations
                .iter()
                .find(|(q, _)| *q == key)
                .is_some_and(|(_, g)| view.assigned.get(&key) == Some(g))
        };
        let next: Vec<(Arc<str>, i32, i64)> = k
            .next_offsets
            .iter()
            .filter(|(t, p, _)| owned(t, *p))
            .cloned()
            .collect();
        let metadata = view.metadata.clone();
        if next.len() == k.next_offsets.len() {
            return Ok((Some(out.clone()), metadata, next));
        }
        if next.is_empty() {
            return Ok((None, metadata, next));
        }
        // Keep the rows of owned partitions only.
        let keep_row = |row: u32| -> bool {
            let m = &k.messages[row as usize];
            owned(&m.topic, m.partition)
        };
        let keep: Vec<u32> = (0..out.result_rows.len() as u32)
            .filter(|&i| keep_row(out.result_rows[i as usize]))
            .collect();
        let results = take_rows(&out.results, &keep)?;
        let err_keep: Vec<u32> = (0..out.errors.len() as u32)
            .filter(|&i| keep_row(out.errors[i as usize].row))
            .collect();
        let error_ids = arrow::compute::take(
            out.error_ids.as_ref(),
            &UInt32Array::from(err_keep.clone()),
            None,
        )
        .map_err(|e| Error::sink("kafka output", e.to_string()))?;
        Ok((
            Some(ChunkOutput {
                seq: out.seq,
                results,
                result_rows: keep.iter().map(|&i| out.result_rows[i as usize]).collect(),
                errors: err_keep
                    .iter()
                    .map(|&i| out.errors[i as usize].clone())
                    .collect(),
                error_ids,
                origin: out.origin.clone(),
            }),
            metadata,
            next,
        ))
    }

    /// One chunk in one transaction. `Ok(false)`: aborted (the source rewinds).
    fn write_transaction(&mut self, out: &ChunkOutput) -> Result<bool> {
        let mut out = out.clone();
        // A result larger than the topic takes is refused before it is sent (record batches are
        // kept under the topic's limit, so no other message shares its fate); its transaction
        // is aborted, its record goes to the dead-letter topic and the chunk is written again
        // without it. A refusal by the brokers themselves (limit unknown here) is handled the
        // same way. A commit refused because the group's generation moved on (a rebalance
        // between reading the group's state and committing) is tried again with the new state
        // and the partitions still owned, after a short pause.
        for attempt in 0..6u32 {
            let (part, metadata, next) = self.owned_part(&out)?;
            let Some(part) = part else {
                tracing::info!(
                    seq = out.seq,
                    "chunk left out: its partitions moved to another worker, which reads them"
                );
                return Ok(false);
            };
            out = part;
            let metadata = metadata.ok_or_else(|| {
                Error::sink(
                    "kafka",
                    "internal: no consumer group state for an exactly-once chunk",
                )
            })?;
            let (msgs, rows) = self.messages(&out)?;
            self.producer
                .begin_transaction()
                .map_err(|e| self.txn_error("cannot begin a transaction", e))?;
            let result = (|| -> std::result::Result<(), TxnFailure> {
                let refused =
                    send_all(&self.producer, &msgs, &self.limits).map_err(TxnFailure::Send)?;
                if !refused.is_empty() {
                    return Err(TxnFailure::Refused(refused));
                }
                let mut tpl = TopicPartitionList::new();
                for (t, p, o) in &next {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                        .map_err(TxnFailure::Kafka)?;
                }
                self.producer
                    .send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT)
                    .map_err(TxnFailure::Kafka)?;
                let mut tries = 0;
                loop {
                    match self.producer.commit_transaction(TXN_TIMEOUT) {
                        Ok(()) => return Ok(()),
                        Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 10 => {
                            tries += 1;
                            tracing::warn!(error = %e, "transaction commit timed out; retrying");
                        }
                        Err(e) => return Err(TxnFailure::Kafka(e)),
                    }
                }
            })();
            match result {
                Ok(()) => {
                    self.keep_failures(&out)?;
                    self.report.rows += out.results.num_rows() as u64;
                    self.report.error_rows += out.errors.len() as u64;
                    return Ok(true);
                }
                Err(TxnFailure::Refused(refused)) => {
                    self.abort_transaction()?;
                    tracing::warn!(
                        refused = refused.len(),
                        "result messages refused by the brokers; their records go to the dead-letter topic and the chunk is written again"
                    );
                    out = Self::refuse(&out, &rows, &refused)?;
                    self.report.refused += refused
                        .iter()
                        .map(|r| rows[r.index].len() as u64)
                        .sum::<u64>();
                }
                Err(TxnFailure::Kafka(KafkaError::Transaction(e)))
                    if !e.is_fatal() && group_moved_on(e.code()) && attempt < 5 =>
                {
                    tracing::info!(error = %e, "the group changed during the transaction; writing the chunk again with the group's new state");
                    self.abort_transaction()?;
                    if self.shutdown.wait_timeout(Duration::from_millis(100 << attempt)) {
                        return Err(self.txn_error(
                            "stopped while the group changed (nothing of the chunk was committed; it is read again)",
                            KafkaError::Transaction(e),
                        ));
                    }
                }
                Err(TxnFailure::Kafka(KafkaError::Transaction(e))) if e.is_fatal() => {
                    return Err(self.txn_error(
                        "fatal transaction error (another worker with the same transactional id may have fenced this one)",
                        KafkaError::Transaction(e),
                    ))
                }
                Err(e) => {
                    // A fenced or otherwise fatally failed producer can surface as a failed
                    // delivery; it must stop, never abort and go on.
                    if let Some((code, reason)) = self.producer.client().fatal_error() {
                        return Err(Error::sink(
                            format!("kafka topic {}", self.cfg.topic),
                            format!(
                                "fatal producer error {code:?}: {reason} (another worker with the same transactional id may have fenced this one; give each instance its own sink.kafka.transactional_id)"
                            ),
                        ));
                    }
                    tracing::warn!(error = %e, "transaction failed; aborting it and rewinding to the committed offsets");
                    self.abort_transaction()?;
                    self.request_rewind(&out);
                    return Ok(false);
                }
            }
        }
        tracing::warn!(
            "the chunk could not be written in six attempts; rewinding to the committed offsets"
        );
        self.request_rewind(&out);
        Ok(false)
    }

    fn abort_transaction(&mut self) -> Result<()> {
        self.producer
            .abort_transaction(TXN_TIMEOUT)
            .map_err(|e| self.txn_error("cannot abort the transaction", e))?;
        self.aborted_transactions += 1;
        TransactionAborted.emit();
        Ok(())
    }

    /// Ask the source to read again from the committed offsets; chunks read before are stale.
    fn request_rewind(&mut self, out: &ChunkOutput) {
        let epoch = out
            .origin
            .stream()
            .map_or(0, |s| s.epoch())
            .max(self.min_epoch)
            + 1;
        self.min_epoch = epoch;
        if let Some(l) = &self.link {
            l.rewind(epoch);
        }
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
        if self.link.is_some() {
            if let Some(s) = out.origin.stream() {
                if s.epoch() < self.min_epoch {
                    return Ok(Written::dropped());
                }
            }
            return Ok(if self.write_transaction(out)? {
                Written::kept(Some(out.seq))
            } else {
                Written::dropped()
            });
        }
        let (msgs, rows) = self.messages(out)?;
        let pending = send(&self.producer, &msgs, &self.limits)?;
        self.report.rows += out.results.num_rows() as u64;
        self.report.error_rows += out.errors.len() as u64;
        self.in_flight.push_back(Sent {
            seq: out.seq,
            out: out.clone(),
            rows,
            pending,
        });
        let block = self.in_flight.len() > MAX_CHUNKS_IN_FLIGHT;
        Ok(Written::kept(self.collect(block)?))
    }

    fn tick_interval(&self) -> Option<Duration> {
        // Delivery reports are collected while no chunk arrives.
        Some(Duration::from_millis(50))
    }

    fn tick(&mut self) -> Result<Option<u64>> {
        self.collect(false)
    }

    fn finish(&mut self) -> Result<SinkReport> {
        while !self.in_flight.is_empty() {
            self.collect(true)?;
        }
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| self.txn_error("cannot flush", e))?;
        if self.aborted_transactions > 0 {
            tracing::info!(
                aborted = self.aborted_transactions,
                "aborted transactions in this run"
            );
        }
        if let Some(f) = &mut self.error_file {
            self.report.error_file = f.finish()?;
        }
        Ok(self.report.clone())
    }

    fn abort(&mut self) {
        self.in_flight.clear();
        let _ = self.producer.flush(Duration::from_secs(10));
        if let Some(f) = &mut self.error_file {
            f.abort();
        }
    }
}

/// The consumer group's generation moved on (a rebalance): the transaction can be tried again
/// with the group's new state.
fn group_moved_on(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        code,
        IllegalGeneration | UnknownMemberId | RebalanceInProgress
    )
}

/// Why a transaction did not commit.
#[derive(Debug)]
enum TxnFailure {
    Kafka(KafkaError),
    Send(Error),
    /// Messages refused together (with the rest of their record batch).
    Refused(Vec<Refused>),
}

impl std::fmt::Display for TxnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnFailure::Kafka(e) => write!(f, "{e}"),
            TxnFailure::Send(e) => write!(f, "{e}"),
            TxnFailure::Refused(r) => write!(f, "{} messages refused", r.len()),
        }
    }
}
