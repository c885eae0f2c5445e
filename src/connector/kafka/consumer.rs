//! Kafka source: a consumer-group member that turns messages into chunks (micro-batches).
//!
//! - A chunk closes when it holds `batching.window_records` messages or `max_wait_ms` after its
//!   first message, whichever comes first; the tokenize stage then cuts it into model batches by
//!   `max_batch_size` and `max_batch_tokens`.
//! - Offsets are committed only for chunks the writer reports durable: [`Feedback`] messages on
//!   the source's channel, applied to the [`super::offsets::OffsetTracker`]; auto-commit is off.
//! - When the pipeline falls behind (the queue to the tokenizer is full) the assigned partitions
//!   are paused and the consumer keeps serving the group (heartbeats, rebalances) without
//!   fetching, so memory stays flat under any backlog.
//! - Rebalances arrive as [`GroupEvent`]s: records of revoked partitions not yet emitted are
//!   dropped (the next owner reads them); what was durable was committed by the callback.
//! - Exactly-once mode: nothing is committed here; the sink sends offsets in its transaction and
//!   asks for a rewind (to the committed offsets) after an aborted transaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::StringArray;
use arrow::datatypes::FieldRef;
use crossbeam_channel::Receiver;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::codec::{
    decode, passthrough_column, passthrough_plan, ColumnField, Decoded, Passthrough,
};
use super::config::{KafkaSourceConfig, StartFrom, ValueFormat};
use super::group::{GroupContext, GroupEvent, GroupHandle, KafkaConsumer};
use super::offsets::Partition;
use super::KafkaMessage;
use crate::connector::{PositionStore, Source, SourceLink, SourceOptions, TextColumnRequest};
use crate::error::{Error, Result};
use crate::lifecycle::{Readiness, Shutdown};
use crate::record::{Chunk, Origin, Position, RecordError, Stage, StreamOrigin, TextColumn};

/// The Kafka messages of one chunk and what is needed to commit them.
#[derive(Debug)]
pub struct KafkaRecords {
    pub messages: Vec<KafkaMessage>,
    /// Per partition, the offset to commit once every record of the chunk is durable (the
    /// highest offset + 1).
    pub next_offsets: Vec<(Arc<str>, i32, i64)>,
    /// Rewind epoch the chunk was read in; chunks of an older epoch are discarded (exactly-once).
    pub epoch: u64,
    /// Per partition of the chunk, the generation of its assignment when the chunk was read.
    pub generations: Vec<(Partition, u64)>,
    /// The consumer group as it is now (not as it was when the chunk was read): an exactly-once
    /// sink commits only work of partitions still owned, with the group's current state.
    pub group: GroupHandle,
}

impl StreamOrigin for KafkaRecords {
    fn position(&self, row: usize) -> Position {
        let m = &self.messages[row];
        Position {
            stream: m.topic.clone(),
            partition: m.partition,
            offset: m.offset,
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn next_positions(&self) -> Vec<Position> {
        self.next_offsets
            .iter()
            .map(|(t, p, o)| Position {
                stream: t.clone(),
                partition: *p,
                offset: *o,
            })
            .collect()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

pub struct KafkaSource {
    consumer: KafkaConsumer,
    events: Receiver<GroupEvent>,
    link: SourceLink,
    cfg: KafkaSourceConfig,
    /// Further text fields the tasks read, and the column name each fills (same order).
    column_fields: Vec<ColumnField>,
    column_names: Vec<Arc<str>>,
    passthrough: Vec<(String, Passthrough)>,
    fields: Vec<FieldRef>,
    window: usize,
    shutdown: Shutdown,
    next_seq: u64,
    /// Messages read but not yet in a chunk (kept while paused).
    buffered: Vec<KafkaMessage>,
    paused: bool,
    epoch: u64,
    exactly_once: bool,
}

impl KafkaSource {
    /// Create the consumer and subscribe.
    pub fn open(cfg: &KafkaSourceConfig, opts: &SourceOptions<'_>) -> Result<Self> {
        let where_ = format!(
            "kafka {} topics {}",
            cfg.bootstrap_servers,
            cfg.topics.join(",")
        );
        let columns = column_fields(cfg, opts.text_columns)?;
        if cfg.revoke_wait_ms.is_some() {
            tracing::warn!("source.kafka.revoke_wait_ms is ignored: a rebalance commits what is durable and does not wait for work in flight");
        }
        let (passthrough, fields) = passthrough_plan(cfg, opts.passthrough)?;
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
            // Incremental rebalancing: only the partitions that move are revoked, the others
            // keep their work in flight.
            (
                "partition.assignment.strategy",
                "cooperative-sticky".to_string(),
            ),
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
            properties = %super::client::redacted(&cfg.properties),
            "kafka source"
        );
        let (link, feedback) = SourceLink::channel();
        let (events_tx, events) = crossbeam_channel::unbounded();
        let context = GroupContext::new(feedback, events_tx, !opts.sink_commits);
        let consumer: KafkaConsumer =
            super::client::client_config(&cfg.bootstrap_servers, &defaults, &cfg.properties)
                .create_with_context(context)
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
            consumer,
            events,
            link,
            cfg: cfg.clone(),
            column_names: columns.iter().map(|(n, _)| n.clone()).collect(),
            column_fields: columns.into_iter().map(|(_, f)| f).collect(),
            passthrough,
            fields,
            window: opts.window.max(1),
            shutdown: opts.shutdown.clone(),
            next_seq: 0,
            buffered: Vec::new(),
            paused: false,
            epoch: 0,
            exactly_once: opts.sink_commits,
        })
    }

    /// The group as it is now (for an exactly-once sink).
    pub fn group(&self) -> GroupHandle {
        self.consumer.context().view.clone()
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

    /// Apply what the writer and the group said: commit durable offsets, drop buffered records
    /// of revoked partitions, rewind when asked.
    fn handle_messages(&mut self) -> Result<()> {
        let ctx = self.consumer.context();
        ctx.drain_feedback();
        ctx.commit_durable(&self.consumer, false);
        // In order: records buffered before a revoke are dropped even when the partition comes
        // back (it is then read again from its committed offset).
        let events: Vec<GroupEvent> = self.events.try_iter().collect();
        for e in events {
            match e {
                GroupEvent::Revoked(parts) => {
                    let revoked: HashSet<Partition> = parts.into_iter().collect();
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
                GroupEvent::Assigned(parts) => {
                    // Newly assigned partitions follow the source's pause state (a partition
                    // paused before it was revoked must not stay paused when it comes back).
                    self.set_partitions_paused(&parts, self.paused);
                }
            }
        }
        if let Some(epoch) = ctx.take_rewind() {
            self.rewind(epoch)?;
        }
        Ok(())
    }

    /// After an aborted transaction: forget everything read and seek every assigned partition
    /// back to its committed offset. Chunks read before are stale from `epoch` on.
    fn rewind(&mut self, epoch: u64) -> Result<()> {
        if epoch <= self.epoch {
            return Ok(());
        }
        self.epoch = epoch;
        self.buffered.clear();
        self.consumer.context().read.lock().expect("read").clear();
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
            epoch,
            "rewound to the committed offsets after an aborted transaction"
        );
        Ok(())
    }

    fn err(&self, e: KafkaError) -> Error {
        Error::unavailable(
            format!("kafka group {}", self.cfg.group_id),
            "request failed",
            e,
        )
    }

    fn poll_once(&mut self, timeout: Duration) -> bool {
        match self.consumer.poll(timeout) {
            Some(Ok(m)) => {
                let msg = self.take_message(&m);
                let part = (msg.topic.clone(), msg.partition);
                let new = self
                    .consumer
                    .context()
                    .read
                    .lock()
                    .expect("read")
                    .admit(&part, msg.offset);
                if new {
                    self.buffered.push(msg);
                } else {
                    tracing::debug!(
                        topic = %msg.topic,
                        partition = msg.partition,
                        offset = msg.offset,
                        "record fetched again after a pause; already read, skipped"
                    );
                }
                true
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka consumer error; retrying");
                false
            }
            None => false,
        }
    }

    fn set_partitions_paused(&self, parts: &[Partition], pause: bool) {
        if parts.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            tpl.add_partition(t, *p);
        }
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot pause/resume newly assigned partitions");
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
        decode(&self.cfg, &self.column_fields, m)
    }

    fn build_chunk(&mut self, messages: Vec<KafkaMessage>) -> Chunk {
        let n = messages.len();
        let mut ids = Vec::with_capacity(n);
        let mut texts = Vec::with_capacity(n);
        let mut columns: Vec<Vec<Option<Arc<str>>>> =
            vec![Vec::with_capacity(n); self.column_names.len()];
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
            for (c, v) in columns.iter_mut().zip(d.columns) {
                c.push(v);
            }
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
        let generations = {
            let mut tracker = self.consumer.context().tracker.lock().expect("tracker");
            tracker.register(seq, &next);
            next.iter()
                .filter_map(|(t, p, _)| {
                    let key = (t.clone(), *p);
                    tracker.generation(&key).map(|g| (key, g))
                })
                .collect()
        };
        Chunk {
            seq,
            origin: Origin::Stream(Arc::new(KafkaRecords {
                messages,
                next_offsets: next,
                epoch: self.epoch,
                generations,
                group: self.group(),
            })),
            ids: Arc::new(StringArray::from(ids)),
            texts,
            columns: self
                .column_names
                .iter()
                .zip(columns)
                .map(|(name, values)| TextColumn {
                    name: name.clone(),
                    values,
                })
                .collect(),
            passthrough,
            errors,
        }
    }
}

/// Where each further text column comes from in the JSON values: `json.columns[name]`, or for a
/// question `json.question`.
fn column_fields(
    cfg: &KafkaSourceConfig,
    requests: &[TextColumnRequest],
) -> Result<Vec<(Arc<str>, ColumnField)>> {
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let path = cfg.json.columns.get(&r.name).cloned().or_else(|| {
            (r.role == "question")
                .then(|| cfg.json.question.clone())
                .flatten()
        });
        match path {
            Some(path) if cfg.format == ValueFormat::Json => out.push((
                Arc::from(r.name.as_str()),
                ColumnField { role: r.role, path },
            )),
            _ => {
                return Err(Error::config(format!(
                    "{} with a Kafka source needs source.kafka.format: json and the field of the {} in source.kafka.json.{}",
                    r.key,
                    r.role,
                    if r.role == "question" {
                        "question".to_string()
                    } else {
                        format!("columns.{}", r.name)
                    }
                )))
            }
        }
    }
    Ok(out)
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
        if self.exactly_once {
            // The group's state for the sink's transactions, once per chunk (the rebalance
            // callbacks refresh it too).
            self.consumer
                .context()
                .view
                .lock()
                .expect("group view")
                .metadata = self.consumer.group_metadata().map(Arc::new);
        }
        let max_wait = Duration::from_millis(self.cfg.max_wait_ms);
        let mut first_at: Option<Instant> = (!self.buffered.is_empty()).then(Instant::now);
        loop {
            self.handle_messages()?;
            if self.shutdown.is_triggered() {
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

    fn idle_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(50))
    }

    fn idle(&mut self) {
        // The next stage is full: stop fetching, keep serving the group. Pausing partitions
        // already paused again makes librdkafka restart their fetchers: pause once.
        if !self.paused {
            self.set_paused(true);
        }
        if self.poll_once(Duration::ZERO) {
            // A message fetched before the pause took effect: kept for the next chunk.
        }
        if let Err(e) = self.handle_messages() {
            tracing::warn!(error = %e, "while waiting for the pipeline");
        }
    }

    fn close(&mut self) -> Result<()> {
        // Everything the writer reported durable is committed, waiting for the broker.
        let ctx = self.consumer.context();
        ctx.drain_feedback();
        ctx.commit_durable(&self.consumer, true);
        self.consumer.unsubscribe();
        Ok(())
    }

    fn link(&self) -> Option<SourceLink> {
        Some(self.link.clone())
    }

    fn readiness(&self) -> Option<Readiness> {
        Some(self.consumer.context().joined.clone())
    }

    fn resume_from(&mut self, store: Arc<dyn PositionStore>) -> Result<()> {
        *self.consumer.context().positions.lock().expect("positions") = Some(store);
        Ok(())
    }
}
