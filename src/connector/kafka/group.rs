//! Consumer-group membership. librdkafka calls back on the source's own thread (inside `poll`);
//! the callbacks here keep the [`OffsetTracker`] and the [`GroupView`] current, commit what is
//! durable when partitions are revoked, and hand the rebalance to the source as a
//! [`GroupEvent`] message.
//!
//! Partitions are assigned incrementally (`cooperative-sticky` by default): a rebalance revokes
//! only the partitions that move, and the work in flight for the others goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::{OffsetTracker, Partition, ReadPositions};
use crate::connector::{Feedback, PositionStore};
use crate::lifecycle::Readiness;
use crate::telemetry::{ConsumerLag, Event, OffsetCommitted, PartitionsAssigned};

/// A rebalance, as the source learns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

/// The group as it is now: the state to send offsets in a transaction with, and the partitions
/// owned with the generation of their assignment. An exactly-once sink reads it when it commits,
/// so that only work of partitions still owned (under the same assignment) is committed.
#[derive(Default)]
pub struct GroupView {
    pub metadata: Option<Arc<ConsumerGroupMetadata>>,
    pub assigned: HashMap<Partition, u64>,
}

impl std::fmt::Debug for GroupView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupView")
            .field("has_metadata", &self.metadata.is_some())
            .field("assigned", &self.assigned)
            .finish()
    }
}

/// A shared, read-mostly handle on the [`GroupView`].
pub type GroupHandle = Arc<Mutex<GroupView>>;

pub type KafkaConsumer = BaseConsumer<GroupContext>;

pub struct GroupContext {
    pub(crate) tracker: Mutex<OffsetTracker>,
    feedback: Receiver<Feedback>,
    events: Sender<GroupEvent>,
    /// Commit offsets here (at-least-once); false when the sink commits them in transactions.
    pub(crate) commit: bool,
    /// The consumer has an assignment (readiness).
    pub(crate) joined: Readiness,
    pub(crate) view: GroupHandle,
    /// Highest rewind epoch asked for by the sink and not yet carried out.
    rewind: Mutex<Option<u64>>,
    last_commit: Mutex<Option<std::time::Instant>>,
    /// Offsets stored by the sink with its output: assigned partitions start there.
    pub(crate) positions: Mutex<Option<Arc<dyn PositionStore>>>,
    /// What the source has read of each partition in the current assignment.
    pub(crate) read: Mutex<ReadPositions>,
}

/// Shortest time between two offset commits while consuming.
pub const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

impl GroupContext {
    pub fn new(
        feedback: Receiver<Feedback>,
        events: Sender<GroupEvent>,
        commit: bool,
    ) -> GroupContext {
        GroupContext {
            tracker: Mutex::new(OffsetTracker::default()),
            feedback,
            events,
            commit,
            joined: Readiness::new(),
            view: Arc::new(Mutex::new(GroupView::default())),
            rewind: Mutex::new(None),
            last_commit: Mutex::new(None),
            positions: Mutex::new(None),
            read: Mutex::new(ReadPositions::default()),
        }
    }

    /// Apply the writer's feedback received so far: durable chunks move their offsets to the
    /// tracker's committable set; a rewind request is kept for the source.
    pub fn drain_feedback(&self) {
        let mut tracker = self.tracker.lock().expect("tracker");
        for f in self.feedback.try_iter() {
            match f {
                Feedback::Durable(seq) => tracker.ack_only(seq),
                Feedback::Rewind { epoch } => {
                    let mut r = self.rewind.lock().expect("rewind");
                    *r = Some(r.map_or(epoch, |e| e.max(epoch)));
                }
            }
        }
    }

    /// The rewind epoch asked for, once.
    pub fn take_rewind(&self) -> Option<u64> {
        self.rewind.lock().expect("rewind").take()
    }

    /// Commit the durable offsets not yet committed, waiting for the broker's answer (so that
    /// the committed-offset gauge says what the broker has). Manual asynchronous commits
    /// report no result in librdkafka, hence synchronous ones, at most every
    /// [`COMMIT_INTERVAL`] unless `now`.
    pub fn commit_durable(&self, consumer: &KafkaConsumer, now: bool) {
        if !self.commit {
            return;
        }
        {
            let mut last = self.last_commit.lock().expect("last commit");
            if !now && last.is_some_and(|t| t.elapsed() < COMMIT_INTERVAL) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let offsets = self.tracker.lock().expect("tracker").take_durable();
        commit(self, consumer, &offsets, CommitMode::Sync);
    }

    fn refresh_view(&self, consumer: &KafkaConsumer) {
        let assigned = self.tracker.lock().expect("tracker").assignment();
        let mut v = self.view.lock().expect("group view");
        v.metadata = consumer.group_metadata().map(Arc::new);
        v.assigned = assigned;
    }
}

fn commit(
    ctx: &GroupContext,
    consumer: &KafkaConsumer,
    offsets: &[(Partition, i64)],
    mode: CommitMode,
) -> bool {
    let Some(list) = offsets_list(offsets) else {
        return true;
    };
    tracing::debug!(
        ?offsets,
        sync = matches!(mode, CommitMode::Sync),
        "committing offsets"
    );
    match consumer.commit(&list, mode) {
        Ok(()) => {
            if matches!(mode, CommitMode::Sync) {
                emit_committed(offsets);
            }
            tracing::debug!(?offsets, "offsets committed");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot commit offsets; retrying with the next commit");
            ctx.tracker.lock().expect("tracker").restore(offsets);
            false
        }
    }
}

impl ClientContext for GroupContext {
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
        super::client::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::client::error(error, reason);
    }
}

pub(crate) fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
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

impl GroupContext {
    /// Start newly assigned partitions at the offsets the sink stored with its output (the
    /// assignment list's offsets are what librdkafka starts fetching at).
    fn start_at_stored(&self, tpl: &TopicPartitionList) {
        let Some(store) = self.positions.lock().expect("positions").clone() else {
            return;
        };
        let mut by_topic: HashMap<String, Vec<i32>> = HashMap::new();
        for e in tpl.elements() {
            by_topic
                .entry(e.topic().to_string())
                .or_default()
                .push(e.partition());
        }
        for (topic, parts) in by_topic {
            match store.load(&topic, &parts) {
                Ok(stored) => {
                    for mut e in tpl.elements() {
                        if e.topic() != topic {
                            continue;
                        }
                        if let Some((_, off)) = stored.iter().find(|(p, _)| *p == e.partition()) {
                            if let Err(err) = e.set_offset(Offset::Offset(*off)) {
                                tracing::warn!(error = %err, "cannot set the start offset");
                            }
                        }
                    }
                    tracing::info!(
                        topic,
                        stored = ?stored,
                        store = %store.describe(),
                        "assigned partitions resume from the offsets stored with the output"
                    );
                }
                Err(e) => tracing::error!(
                    error = %e,
                    topic,
                    "cannot read the stored offsets; the partitions start at the group's committed offsets (records already stored are left out when written)"
                ),
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.start_at_stored(tpl);
            self.read.lock().expect("read").forget(&partitions_of(tpl));
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions_of(tpl);
            // What is durable now is committed; the rest is read again by the next owner.
            // Nothing waits here: the group's rebalance is not held up by work in flight.
            self.drain_feedback();
            let durable = self.tracker.lock().expect("tracker").revoke(&parts);
            self.read.lock().expect("read").forget(&parts);
            if self.commit
                && commit(self, consumer, &durable, CommitMode::Sync)
                && !durable.is_empty()
            {
                tracing::info!(
                    partitions = durable.len(),
                    "committed durable offsets of revoked partitions"
                );
            }
            tracing::info!(partitions = ?describe(&parts), "partitions revoked");
            let left = self.tracker.lock().expect("tracker").assigned_count();
            self.joined.set(left > 0);
            PartitionsAssigned { count: left }.emit();
            self.refresh_view(consumer);
            let _ = self.events.send(GroupEvent::Revoked(parts));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions_of(tpl);
                tracing::info!(partitions = ?describe(&parts), "partitions assigned");
                let count = {
                    let mut tracker = self.tracker.lock().expect("tracker");
                    tracker.assign(parts.clone());
                    tracker.assigned_count()
                };
                PartitionsAssigned { count }.emit();
                self.joined.set(count > 0);
                self.refresh_view(consumer);
                let _ = self.events.send(GroupEvent::Assigned(parts));
            }
            Rebalance::Revoke(_) => self.refresh_view(consumer),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
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

pub(crate) fn describe(parts: &[Partition]) -> Vec<String> {
    parts.iter().map(|(t, p)| format!("{t}/{p}")).collect()
}
