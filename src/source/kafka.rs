//! Kafka source: a consumer-group member that turns messages into chunks (micro-batches).
//!
//! - A chunk closes when it holds `batching.window_records` messages or `max_wait_ms` after its
//!   first message, whichever comes first; the tokenize stage then cuts it into model batches by
//!   `max_batch_size` and `max_batch_tokens`.
//! - Offsets are committed only for chunks the sink reports durable ([`KafkaAcker`]), through
//!   the [`OffsetTracker`]; auto-commit is off.
//! - When the pipeline falls behind (the queue to the tokenizer is full) the assigned partitions
//!   are paused and the consumer keeps serving the group (heartbeats, rebalances) without
//!   fetching, so memory stays flat under any backlog.
//! - On revoke, durable offsets of the revoked partitions are committed before they are given
//!   up, and their records not yet emitted are dropped (the next owner reads them again).
//! - Exactly-once mode: nothing is committed here; the sink sends offsets in its transaction and
//!   asks for a rewind (to the committed offsets) after an aborted transaction.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, MapBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::{OffsetTracker, Partition};
use super::Source;
use crate::config::{KafkaSourceConfig, StartFrom, ValueFormat};
use crate::error::{Error, Result};
use crate::record::{Chunk, KafkaMessage, KafkaRecords, Origin, RecordError, Stage};
use crate::telemetry::{ConsumerLag, Event, OffsetCommitted, PartitionsAssigned};

/// Names of the message attributes that `sink.passthrough` can copy to the output; any other
/// name is read from the JSON value.
pub const MESSAGE_FIELDS: &[&str] = &[
    "key",
    "headers",
    "topic",
    "partition",
    "offset",
    "timestamp",
];

/// State shared by the source thread, the rebalance callbacks and the writer (acknowledgements,
/// exactly-once rewinds).
#[derive(Debug, Default)]
pub struct StreamState {
    tracker: Mutex<OffsetTracker>,
    /// Partitions revoked since the source last looked (records of them still buffered are
    /// dropped).
    revoked: Mutex<Vec<Partition>>,
    /// Rewind epoch the source reads in.
    epoch: AtomicU64,
    /// Epoch asked for by the sink after an aborted transaction.
    rewind_to: AtomicU64,
    /// The consumer has an assignment (for readiness).
    pub joined: Arc<AtomicBool>,
    /// Commit offsets here (at-least-once); false when the sink commits them in transactions.
    commit: bool,
    /// Chunks handed to the pipeline (highest seq + 1).
    sent: AtomicU64,
    /// Chunks durable in the sink (highest seq + 1).
    acked: AtomicU64,
    /// Set while a revoke waits for in-flight chunks: the writer makes its output durable now.
    flush_requested: AtomicBool,
    /// Longest wait for in-flight chunks on revoke.
    revoke_wait: Duration,
}

impl StreamState {
    /// Ask the source to drop everything in flight and read again from the committed offsets.
    /// Chunks read before the rewind are then stale.
    pub fn request_rewind(&self) {
        let cur = self.rewind_to.load(Ordering::SeqCst);
        let e = self.epoch.load(Ordering::SeqCst).max(cur) + 1;
        self.rewind_to.store(e, Ordering::SeqCst);
    }

    /// A chunk read in `epoch` was read before a requested rewind and must not be written.
    pub fn is_stale(&self, epoch: u64) -> bool {
        epoch < self.rewind_to.load(Ordering::SeqCst)
    }

    /// A revoke is waiting for in-flight output to become durable.
    pub fn flush_requested(&self) -> bool {
        self.flush_requested.load(Ordering::SeqCst)
    }

    /// Before giving partitions up: let the pipeline finish the chunks it holds and make them
    /// durable (bounded by `revoke_wait`), so the next owner does not read them again.
    fn finish_in_flight(&self) {
        let sent = self.sent.load(Ordering::SeqCst);
        if self.acked.load(Ordering::SeqCst) >= sent {
            return;
        }
        self.flush_requested.store(true, Ordering::SeqCst);
        let started = Instant::now();
        while self.acked.load(Ordering::SeqCst) < sent && started.elapsed() < self.revoke_wait {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.flush_requested.store(false, Ordering::SeqCst);
        let acked = self.acked.load(Ordering::SeqCst);
        if acked < sent {
            tracing::warn!(
                chunks = sent - acked,
                waited_ms = started.elapsed().as_millis() as u64,
                "in-flight chunks not durable before the revoke deadline (source.kafka.revoke_wait_ms); their records will be read again by the next owner"
            );
        }
    }
}

/// Consumer callbacks: logs, errors and rebalances.
pub struct SourceContext {
    state: Arc<StreamState>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" partition.
                if *id >= 0 && p.consumer_lag >= 0 {
                    ConsumerLag {
                        topic,
                        partition: *id,
                        lag: p.consumer_lag,
                    }
                    .emit();
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::error(error, reason);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn offsets_list(offsets: &[(Partition, i64)]) -> Option<TopicPartitionList> {
    if offsets.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
            return None;
        }
    }
    Some(tpl)
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions_of(tpl);
            if self.state.commit {
                self.state.finish_in_flight();
            }
            let durable = self.state.tracker.lock().expect("tracker").revoke(&parts);
            if self.state.commit {
                if let Some(list) = offsets_list(&durable) {
                    match consumer.commit(&list, CommitMode::Sync) {
                        Ok(()) => {
                            emit_committed(&durable);
                            tracing::info!(
                                partitions = parts.len(),
                                "committed durable offsets of revoked partitions"
                            )
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot commit offsets of revoked partitions; their records will be read again by the next owner")
                        }
                    }
                }
            }
            tracing::info!(partitions = ?describe(&parts), "partitions revoked");
            self.state.revoked.lock().expect("revoked").extend(parts);
            let left = self.state.tracker.lock().expect("tracker").assigned_count();
            self.state.joined.store(left > 0, Ordering::SeqCst);
            PartitionsAssigned { count: left }.emit();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions_of(tpl);
                tracing::info!(partitions = ?describe(&parts), "partitions assigned");
                let mut tracker = self.state.tracker.lock().expect("tracker");
                tracker.assign(parts);
                PartitionsAssigned {
                    count: tracker.assigned_count(),
                }
                .emit();
                drop(tracker);
                self.state.joined.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => {
                for e in offsets.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        OffsetCommitted {
                            topic: e.topic(),
                            partition: e.partition(),
                            offset: o,
                        }
                        .emit();
                    }
                }
                tracing::debug!(offsets = ?offsets.to_topic_map(), "offsets committed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; it is retried with the next commit");
                let offsets: Vec<(Partition, i64)> = offsets
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((Arc::from(e.topic()), e.partition()), o)),
                        _ => None,
                    })
                    .collect();
                self.state
                    .tracker
                    .lock()
                    .expect("tracker")
                    .restore(&offsets);
            }
        }
    }
}

fn emit_committed(offsets: &[(Partition, i64)]) {
    for ((topic, partition), offset) in offsets {
        OffsetCommitted {
            topic,
            partition: *partition,
            offset: *offset,
        }
        .emit();
    }
}

fn describe(parts: &[Partition]) -> Vec<String> {
    parts.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}

pub type KafkaConsumer = BaseConsumer<SourceContext>;

/// Acknowledges durable chunks: commits their offsets (at-least-once).
pub struct KafkaAcker {
    consumer: Arc<KafkaConsumer>,
    state: Arc<StreamState>,
}

impl KafkaAcker {
    /// Every chunk up to `seq` is durable.
    pub fn ack(&self, seq: u64) {
        let mut tracker = self.state.tracker.lock().expect("tracker");
        if self.state.flush_requested() {
            // A revoke is waiting: it commits these offsets itself, synchronously.
            tracker.ack_only(seq);
            drop(tracker);
        } else {
            let offsets = tracker.ack(seq);
            drop(tracker);
            if self.state.commit {
                self.commit(offsets, CommitMode::Async);
            }
        }
        self.state.acked.fetch_max(seq + 1, Ordering::SeqCst);
    }

    /// A revoke is waiting for in-flight output: the sink should make it durable now.
    pub fn flush_requested(&self) -> bool {
        self.state.flush_requested()
    }

    fn commit(&self, offsets: Vec<(Partition, i64)>, mode: CommitMode) {
        if let Some(list) = offsets_list(&offsets) {
            match self.consumer.commit(&list, mode) {
                Ok(()) => emit_committed(&offsets),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot commit offsets; retrying with the next commit");
                    self.state
                        .tracker
                        .lock()
                        .expect("tracker")
                        .restore(&offsets);
                }
            }
        }
    }

    /// At the end of a run: commit everything durable, waiting for the broker's answer.
    pub fn flush(&self) {
        if !self.state.commit {
            return;
        }
        let offsets = self.state.tracker.lock().expect("tracker").take_durable();
        self.commit(offsets, CommitMode::Sync);
    }
}

/// Where each output column of a passthrough comes from.
#[derive(Debug, Clone)]
enum Passthrough {
    Key,
    Headers,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Json(String),
}

/// One decoded message.
pub(crate) struct Decoded {
    id: String,
    text: std::result::Result<Arc<str>, String>,
    question: Option<Arc<str>>,
    json: Option<serde_json::Value>,
}

pub struct KafkaSource {
    consumer: Arc<KafkaConsumer>,
    state: Arc<StreamState>,
    cfg: KafkaSourceConfig,
    read_question: bool,
    passthrough: Vec<(String, Passthrough)>,
    fields: Vec<FieldRef>,
    window: usize,
    shutdown: Arc<AtomicBool>,
    next_seq: u64,
    /// Messages read but not yet in a chunk (kept while paused).
    buffered: Vec<KafkaMessage>,
    paused: bool,
    epoch: u64,
    exactly_once: bool,
}

impl KafkaSource {
    /// Create the consumer and subscribe. `question` asks for the JSON question field.
    pub fn open(
        cfg: &KafkaSourceConfig,
        passthrough: &[String],
        read_question: bool,
        window: usize,
        exactly_once: bool,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Self> {
        let where_ = format!(
            "kafka {} topics {}",
            cfg.bootstrap_servers,
            cfg.topics.join(",")
        );
        let mut pass = Vec::new();
        for name in passthrough {
            let p = match name.as_str() {
                "key" => Passthrough::Key,
                "headers" => Passthrough::Headers,
                "topic" => Passthrough::Topic,
                "partition" => Passthrough::Partition,
                "offset" => Passthrough::Offset,
                "timestamp" => Passthrough::Timestamp,
                other if cfg.format == ValueFormat::Json => Passthrough::Json(other.to_string()),
                other => {
                    return Err(Error::config(format!(
                        "sink.passthrough: '{other}' is not a message attribute ({}); JSON fields can be passed through only with source.kafka.format: json",
                        MESSAGE_FIELDS.join(", ")
                    )))
                }
            };
            pass.push((name.clone(), p));
        }
        if read_question && (cfg.format != ValueFormat::Json || cfg.json.question.is_none()) {
            return Err(Error::config(
                "tasks.qa.question_column with a Kafka source needs source.kafka.format: json and source.kafka.json.question",
            ));
        }
        let mut fields: Vec<FieldRef> = vec![Arc::new(Field::new("id", DataType::Utf8, false))];
        for (name, p) in &pass {
            let dt = match p {
                Passthrough::Key => DataType::Binary,
                Passthrough::Headers => headers_type(),
                Passthrough::Topic | Passthrough::Json(_) => DataType::Utf8,
                Passthrough::Partition => DataType::Int32,
                Passthrough::Offset | Passthrough::Timestamp => DataType::Int64,
            };
            fields.push(Arc::new(Field::new(name, dt, true)));
        }

        let state = Arc::new(StreamState {
            commit: !exactly_once,
            revoke_wait: Duration::from_millis(cfg.revoke_wait_ms),
            ..StreamState::default()
        });
        let defaults = [
            ("group.id", cfg.group_id.clone()),
            ("enable.auto.commit", "false".to_string()),
            ("enable.auto.offset.store", "false".to_string()),
            (
                "auto.offset.reset",
                match cfg.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                }
                .to_string(),
            ),
            ("isolation.level", "read_committed".to_string()),
            // Bound what librdkafka prefetches: backpressure pauses fetching, the prefetch
            // queue is what remains in memory.
            ("queued.max.messages.kbytes", "16384".to_string()),
            ("enable.partition.eof", "false".to_string()),
            // Consumer lag per partition for the metrics endpoint.
            ("statistics.interval.ms", "5000".to_string()),
        ];
        tracing::info!(
            servers = %cfg.bootstrap_servers,
            group = %cfg.group_id,
            topics = ?cfg.topics,
            properties = %crate::kafka::redacted(&cfg.properties),
            "kafka source"
        );
        let consumer: KafkaConsumer =
            crate::kafka::client_config(&cfg.bootstrap_servers, &defaults, &cfg.properties)
                .create_with_context(SourceContext {
                    state: state.clone(),
                })
                .map_err(|e| {
                    Error::source(
                        &where_,
                        format!("cannot create the consumer: {e} (check source.kafka.properties)"),
                    )
                })?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            Error::source(
                &where_,
                format!(
                    "cannot subscribe: {e} (topic names, or regular expressions starting with ^)"
                ),
            )
        })?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            state,
            cfg: cfg.clone(),
            read_question,
            passthrough: pass,
            fields,
            window: window.max(1),
            shutdown,
            next_seq: 0,
            buffered: Vec::new(),
            paused: false,
            epoch: 0,
            exactly_once,
        })
    }

    pub fn state(&self) -> Arc<StreamState> {
        self.state.clone()
    }

    pub fn acker(&self) -> KafkaAcker {
        KafkaAcker {
            consumer: self.consumer.clone(),
            state: self.state.clone(),
        }
    }

    fn take_message(&self, m: &BorrowedMessage<'_>) -> KafkaMessage {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        KafkaMessage {
            topic: Arc::from(m.topic()),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|v| v.to_vec()),
            headers,
        }
    }

    /// Drop buffered records of partitions revoked since the last look.
    fn drop_revoked(&mut self) {
        let revoked: HashSet<Partition> = self
            .state
            .revoked
            .lock()
            .expect("revoked")
            .drain(..)
            .collect();
        if revoked.is_empty() {
            return;
        }
        let before = self.buffered.len();
        self.buffered
            .retain(|m| !revoked.contains(&(m.topic.clone(), m.partition)));
        if before != self.buffered.len() {
            tracing::info!(
                dropped = before - self.buffered.len(),
                "records of revoked partitions dropped before processing; their next owner reads them"
            );
        }
    }

    /// After an aborted transaction: forget everything read and seek every assigned partition
    /// back to its committed offset.
    fn rewind_if_asked(&mut self) -> Result<()> {
        let want = self.state.rewind_to.load(Ordering::SeqCst);
        if want <= self.epoch {
            return Ok(());
        }
        self.epoch = want;
        self.state.epoch.store(want, Ordering::SeqCst);
        self.buffered.clear();
        let assignment = self.consumer.assignment().map_err(|e| self.err(e))?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = self
            .consumer
            .committed_offsets(assignment, Duration::from_secs(30))
            .map_err(|e| self.err(e))?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let off = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => match self.cfg.start_from {
                    StartFrom::Earliest => Offset::Beginning,
                    StartFrom::Latest => Offset::End,
                },
            };
            let _ = seek.add_partition_offset(e.topic(), e.partition(), off);
        }
        let result = self
            .consumer
            .seek_partitions(seek, Duration::from_secs(30))
            .map_err(|e| self.err(e))?;
        for e in result.elements() {
            if let Err(err) = e.error() {
                return Err(self.err(err));
            }
        }
        tracing::warn!(
            epoch = want,
            "rewound to the committed offsets after an aborted transaction"
        );
        Ok(())
    }

    fn err(&self, e: KafkaError) -> Error {
        Error::source(format!("kafka group {}", self.cfg.group_id), e.to_string())
    }

    fn poll_once(&mut self, timeout: Duration) -> bool {
        match self.consumer.poll(timeout) {
            Some(Ok(m)) => {
                let msg = self.take_message(&m);
                self.buffered.push(msg);
                true
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error; retrying");
                false
            }
            None => false,
        }
    }

    fn set_paused(&mut self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let r = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match r {
            Ok(()) => {
                if pause != self.paused {
                    tracing::debug!(paused = pause, "backpressure");
                }
                self.paused = pause;
            }
            Err(e) => tracing::warn!(error = %e, "cannot pause/resume partitions"),
        }
    }

    fn decode(&self, m: &KafkaMessage) -> Decoded {
        decode(&self.cfg, self.read_question, m)
    }

    fn build_chunk(&mut self, messages: Vec<KafkaMessage>) -> Chunk {
        let n = messages.len();
        let mut ids = Vec::with_capacity(n);
        let mut texts = Vec::with_capacity(n);
        let mut questions = Vec::with_capacity(n);
        let mut errors = Vec::new();
        let mut jsons = Vec::with_capacity(n);
        for (row, m) in messages.iter().enumerate() {
            let d = self.decode(m);
            ids.push(d.id);
            match d.text {
                Ok(t) => texts.push(Some(t)),
                Err(reason) => {
                    texts.push(None);
                    errors.push(RecordError::new(row, Stage::Source, reason));
                }
            }
            questions.push(d.question);
            jsons.push(d.json);
        }
        let passthrough = self
            .passthrough
            .iter()
            .map(|(_, p)| passthrough_column(p, &messages, &jsons))
            .collect();
        let mut next: Vec<(Arc<str>, i32, i64)> = Vec::new();
        for m in &messages {
            match next
                .iter_mut()
                .find(|(t, p, _)| *p == m.partition && **t == *m.topic)
            {
                Some(e) => e.2 = e.2.max(m.offset + 1),
                None => next.push((m.topic.clone(), m.partition, m.offset + 1)),
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.state
            .tracker
            .lock()
            .expect("tracker")
            .register(seq, &next);
        let group = if self.exactly_once {
            self.consumer.group_metadata().map(Arc::new)
        } else {
            None
        };
        Chunk {
            seq,
            origin: Origin::Kafka(Arc::new(KafkaRecords {
                messages,
                next_offsets: next,
                epoch: self.epoch,
                group,
            })),
            ids: Arc::new(StringArray::from(ids)),
            texts,
            questions: self.read_question.then_some(questions),
            passthrough,
            errors,
        }
    }
}

/// Read one message into an id, a text (or why not) and, for JSON, the parsed value.
pub(crate) fn decode(cfg: &KafkaSourceConfig, read_question: bool, m: &KafkaMessage) -> Decoded {
    let position = m.position();
    let mut d = Decoded {
        id: position.clone(),
        text: Err(String::new()),
        question: None,
        json: None,
    };
    let Some(value) = &m.value else {
        d.text = Err("message has no value (null or tombstone)".into());
        return d;
    };
    if value.len() > cfg.max_value_bytes {
        d.text = Err(format!(
            "value of {} bytes exceeds source.kafka.max_value_bytes ({})",
            value.len(),
            cfg.max_value_bytes
        ));
        return d;
    }
    let s = match std::str::from_utf8(value) {
        Ok(s) => s,
        Err(e) => {
            d.text = Err(format!(
                "value is not valid UTF-8 (first bad byte at {})",
                e.valid_up_to()
            ));
            return d;
        }
    };
    match cfg.format {
        ValueFormat::Text => d.text = Ok(Arc::from(s)),
        ValueFormat::Json => {
            let v: serde_json::Value = match serde_json::from_str(s) {
                Ok(v) => v,
                Err(e) => {
                    d.text = Err(format!("value is not valid JSON: {e}"));
                    return d;
                }
            };
            let j = &cfg.json;
            if let Some(idp) = &j.id {
                match lookup(&v, idp) {
                    Some(serde_json::Value::String(s)) => d.id = s.clone(),
                    Some(serde_json::Value::Number(n)) => d.id = n.to_string(),
                    Some(other) => {
                        d.text = Err(format!(
                            "id field '{idp}' is {}, expected a string or a number",
                            kind(other)
                        ));
                        d.json = Some(v);
                        return d;
                    }
                    None => {
                        d.text = Err(format!("id field '{idp}' is missing"));
                        d.json = Some(v);
                        return d;
                    }
                }
            }
            d.text = match lookup(&v, &j.text) {
                Some(serde_json::Value::String(s)) => Ok(Arc::from(s.as_str())),
                Some(serde_json::Value::Null) => Err(format!("text field '{}' is null", j.text)),
                Some(other) => Err(format!(
                    "text field '{}' is {}, expected a string",
                    j.text,
                    kind(other)
                )),
                None => Err(format!("text field '{}' is missing", j.text)),
            };
            if read_question {
                if let Some(qp) = &j.question {
                    match lookup(&v, qp) {
                        Some(serde_json::Value::String(s)) => {
                            d.question = Some(Arc::from(s.as_str()))
                        }
                        other => {
                            if d.text.is_ok() {
                                d.text = Err(format!(
                                    "question field '{qp}' is {}, expected a string",
                                    other.map(kind).unwrap_or("missing")
                                ));
                            }
                        }
                    }
                }
            }
            d.json = Some(v);
        }
    }
    d
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A field of a JSON value by dotted path (`doc.body`) or JSON pointer (`/doc/body`).
pub fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.starts_with('/') {
        return v.pointer(path);
    }
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(m) => m.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn headers_type() -> DataType {
    let mut b = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
    use arrow::array::Array;
    b.finish().data_type().clone()
}

fn passthrough_column(
    p: &Passthrough,
    messages: &[KafkaMessage],
    jsons: &[Option<serde_json::Value>],
) -> ArrayRef {
    match p {
        Passthrough::Key => {
            let mut b = BinaryBuilder::new();
            for m in messages {
                b.append_option(m.key.as_deref());
            }
            Arc::new(b.finish())
        }
        Passthrough::Headers => {
            let mut b = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new());
            for m in messages {
                for (k, v) in &m.headers {
                    b.keys().append_value(k);
                    b.values().append_option(v.as_deref());
                }
                b.append(true).expect("keys and values appended together");
            }
            Arc::new(b.finish())
        }
        Passthrough::Topic => Arc::new(StringArray::from_iter_values(
            messages.iter().map(|m| m.topic.as_ref()),
        )),
        Passthrough::Partition => Arc::new(Int32Array::from_iter_values(
            messages.iter().map(|m| m.partition),
        )),
        Passthrough::Offset => Arc::new(Int64Array::from_iter_values(
            messages.iter().map(|m| m.offset),
        )),
        Passthrough::Timestamp => {
            Arc::new(Int64Array::from_iter(messages.iter().map(|m| m.timestamp)))
        }
        Passthrough::Json(path) => Arc::new(StringArray::from_iter(jsons.iter().map(|j| {
            j.as_ref()
                .and_then(|v| lookup(v, path))
                .and_then(|f| match f {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
        }))),
    }
}

impl Source for KafkaSource {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        format!(
            "kafka {} topics {} group {}",
            self.cfg.bootstrap_servers,
            self.cfg.topics.join(","),
            self.cfg.group_id
        )
    }

    fn size_hint(&self) -> Option<u64> {
        None
    }

    fn fields(&self) -> Vec<FieldRef> {
        self.fields.clone()
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.paused {
            self.set_paused(false);
        }
        let max_wait = Duration::from_millis(self.cfg.max_wait_ms);
        let mut first_at: Option<Instant> = (!self.buffered.is_empty()).then(Instant::now);
        loop {
            self.rewind_if_asked()?;
            self.drop_revoked();
            if self.shutdown.load(Ordering::SeqCst) {
                if self.buffered.is_empty() {
                    return Ok(None);
                }
                let n = self.buffered.len().min(self.window);
                let msgs: Vec<KafkaMessage> = self.buffered.drain(..n).collect();
                return Ok(Some(self.build_chunk(msgs)));
            }
            if self.buffered.len() >= self.window {
                break;
            }
            if let Some(t) = first_at {
                if t.elapsed() >= max_wait {
                    break;
                }
            }
            let timeout = match first_at {
                Some(t) => max_wait
                    .saturating_sub(t.elapsed())
                    .min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            if self.poll_once(timeout) && first_at.is_none() {
                first_at = Some(Instant::now());
            }
            if self.buffered.is_empty() {
                first_at = None;
            }
        }
        let n = self.buffered.len().min(self.window);
        let msgs: Vec<KafkaMessage> = self.buffered.drain(..n).collect();
        Ok(Some(self.build_chunk(msgs)))
    }

    fn sent(&mut self, seq: u64) {
        self.state.sent.fetch_max(seq + 1, Ordering::SeqCst);
    }

    fn wait(&mut self) {
        // The next stage is full: stop fetching, keep serving the group.
        self.set_paused(true);
        if self.poll_once(Duration::from_millis(50)) {
            // A message fetched before the pause took effect: kept for the next chunk.
        }
        self.drop_revoked();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn cfg(format: ValueFormat) -> KafkaSourceConfig {
        let mut c: KafkaSourceConfig = serde_yaml::from_str(
            "{bootstrap_servers: x, topics: [t], group_id: g, max_value_bytes: 64}",
        )
        .unwrap();
        c.format = format;
        c
    }

    fn msg(value: Option<&[u8]>) -> KafkaMessage {
        KafkaMessage {
            topic: Arc::from("t"),
            partition: 3,
            offset: 42,
            timestamp: None,
            key: None,
            value: value.map(|v| v.to_vec()),
            headers: Vec::new(),
        }
    }

    fn reason(d: &Decoded) -> &str {
        d.text.as_ref().err().map(String::as_str).unwrap_or("")
    }

    #[test]
    fn text_values_and_their_failures() {
        let c = cfg(ValueFormat::Text);
        let d = decode(&c, false, &msg(Some("héllo".as_bytes())));
        assert_eq!(d.id, "t/3/42");
        assert_eq!(d.text.as_deref().ok(), Some("héllo"));
        assert!(reason(&decode(&c, false, &msg(None))).contains("no value"));
        assert!(reason(&decode(&c, false, &msg(Some(&[b'a', 0xff]))))
            .contains("UTF-8 (first bad byte at 1)"));
        assert!(
            reason(&decode(&c, false, &msg(Some(&[b'a'; 65])))).contains("max_value_bytes (64)")
        );
        // Empty text is a valid record.
        assert_eq!(
            decode(&c, false, &msg(Some(b""))).text.as_deref().ok(),
            Some("")
        );
    }

    #[test]
    fn json_fields_by_path_and_pointer() {
        let mut c = cfg(ValueFormat::Json);
        c.json.text = "/doc/body".into();
        c.json.id = Some("doc.id".into());
        c.json.question = Some("q".into());
        let d = decode(
            &c,
            true,
            &msg(Some(br#"{"doc":{"id":7,"body":"b"},"q":"why?"}"#)),
        );
        assert_eq!(d.id, "7");
        assert_eq!(d.text.as_deref().ok(), Some("b"));
        assert_eq!(d.question.as_deref(), Some("why?"));
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not valid JSON"),
            (
                br#"{"doc":{"id":"a"}}"#,
                "text field '/doc/body' is missing",
            ),
            (br#"{"doc":{"id":"a","body":null}}"#, "is null"),
            (
                br#"{"doc":{"id":"a","body":[1]}}"#,
                "is an array, expected a string",
            ),
            (br#"{"doc":{"body":"x"}}"#, "id field 'doc.id' is missing"),
            (
                br#"{"doc":{"id":{},"body":"x"}}"#,
                "id field 'doc.id' is an object",
            ),
            (
                br#"{"doc":{"id":1,"body":"x"}}"#,
                "question field 'q' is missing",
            ),
        ];
        for (v, want) in cases {
            let d = decode(&c, true, &msg(Some(v)));
            assert!(
                reason(&d).contains(want),
                "{}: {}",
                String::from_utf8_lossy(v),
                reason(&d)
            );
        }
    }

    #[test]
    fn lookup_paths() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a":{"b":[{"c":1}]}}"#).unwrap();
        assert_eq!(lookup(&v, "a.b.0.c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "/a/b/0/c"), Some(&serde_json::json!(1)));
        assert_eq!(lookup(&v, "a.x"), None);
        assert_eq!(lookup(&v, "a.b.9"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any value, in either format, gives a text or a reason; never a panic. A text value
        /// is kept byte for byte.
        #[test]
        fn any_value_decodes_to_a_text_or_a_reason(
            v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            json in proptest::prelude::any::<bool>(),
        ) {
            let mut c = cfg(if json { ValueFormat::Json } else { ValueFormat::Text });
            c.json.id = Some("a.b".into());
            let d = decode(&c, false, &msg(Some(&v)));
            match &d.text {
                Ok(t) => {
                    let s = std::str::from_utf8(&v).expect("a text comes from valid UTF-8");
                    if !json {
                        proptest::prop_assert_eq!(&**t, s);
                    }
                }
                Err(r) => proptest::prop_assert!(!r.is_empty()),
            }
        }

        /// JSON objects with arbitrary field values: a string text field is taken as is,
        /// anything else is a reason naming the field.
        #[test]
        fn json_text_field_of_any_type(
            text in proptest::prop_oneof![
                proptest::prelude::any::<String>().prop_map(serde_json::Value::String),
                proptest::prelude::any::<i64>().prop_map(serde_json::Value::from),
                proptest::prelude::any::<bool>().prop_map(serde_json::Value::Bool),
                proptest::prelude::Just(serde_json::Value::Null),
            ],
        ) {
            let mut c = cfg(ValueFormat::Json);
            c.max_value_bytes = 1 << 20;
            let v = serde_json::json!({"text": text.clone()}).to_string();
            let d = decode(&c, false, &msg(Some(v.as_bytes())));
            match (&text, &d.text) {
                (serde_json::Value::String(s), Ok(t)) => proptest::prop_assert_eq!(&**t, s.as_str()),
                (serde_json::Value::String(_), Err(r)) => proptest::prop_assert!(false, "{}", r),
                (_, Ok(t)) => proptest::prop_assert!(false, "non-string accepted: {}", t),
                (_, Err(r)) => proptest::prop_assert!(r.contains("text field 'text'")),
            }
        }
    }
}
