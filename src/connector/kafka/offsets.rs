//! Which Kafka offsets may be committed: per partition, only offsets whose records (and every
//! record before them) are durable in the sink.
//!
//! The source registers each chunk's highest offset per partition when it emits the chunk; the
//! writer acknowledges chunk sequence numbers once their output is durable. Chunks are written
//! in order, so acknowledging `seq` makes every chunk up to `seq` durable; a chunk still in
//! flight holds back the commit of every later one. Each assignment of a partition gets a new
//! generation: acknowledgements of chunks read under an earlier assignment are ignored, so a
//! partition that was revoked and handed to another worker is never committed past what that
//! worker has done.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub type Partition = (Arc<str>, i32);

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Generation of each partition currently assigned.
    assigned: HashMap<Partition, u64>,
    next_generation: u64,
    /// Chunks emitted and not yet durable: per chunk, (partition, generation, next offset).
    pending: BTreeMap<u64, Vec<(Partition, u64, i64)>>,
    /// Durable offsets not yet committed.
    durable: HashMap<Partition, i64>,
    /// Last offsets handed to a commit, per partition.
    committed: HashMap<Partition, i64>,
}

impl OffsetTracker {
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = Partition>) {
        for p in partitions {
            self.next_generation += 1;
            self.assigned.insert(p.clone(), self.next_generation);
            self.committed.remove(&p);
        }
    }

    /// Stop tracking `partitions`; returns their durable offsets not yet committed, to commit
    /// before the partitions are given up.
    pub fn revoke(&mut self, partitions: &[Partition]) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for p in partitions {
            self.assigned.remove(p);
            if let Some(o) = self.durable.remove(p) {
                out.push((p.clone(), o));
            }
            self.committed.remove(p);
        }
        out
    }

    pub fn is_assigned(&self, p: &Partition) -> bool {
        self.assigned.contains_key(p)
    }

    /// The partitions assigned, with the generation of their assignment.
    pub fn assignment(&self) -> HashMap<Partition, u64> {
        self.assigned.clone()
    }

    /// The generation of a partition's current assignment.
    pub fn generation(&self, p: &Partition) -> Option<u64> {
        self.assigned.get(p).copied()
    }

    pub fn assigned_count(&self) -> usize {
        self.assigned.len()
    }

    /// A chunk was emitted holding records up to `next - 1` of each partition.
    pub fn register(&mut self, seq: u64, next_offsets: &[(Arc<str>, i32, i64)]) {
        let entries = next_offsets
            .iter()
            .filter_map(|(t, p, o)| {
                let key = (t.clone(), *p);
                self.assigned.get(&key).map(|g| (key, *g, *o))
            })
            .collect();
        self.pending.insert(seq, entries);
    }

    /// Every chunk up to `seq` is durable. Returns the offsets that can now be committed.
    pub fn ack(&mut self, seq: u64) -> Vec<(Partition, i64)> {
        self.ack_only(seq);
        self.take_durable()
    }

    /// Like [`ack`](Self::ack), leaving the offsets for a later [`take_durable`](Self::take_durable)
    /// or [`revoke`](Self::revoke).
    pub fn ack_only(&mut self, seq: u64) {
        let rest = self.pending.split_off(&(seq + 1));
        let done = std::mem::replace(&mut self.pending, rest);
        for (_, entries) in done {
            for (p, generation, o) in entries {
                if self.assigned.get(&p) == Some(&generation) {
                    let e = self.durable.entry(p).or_insert(o);
                    *e = (*e).max(o);
                }
            }
        }
    }

    /// Durable offsets not yet committed (and marks them committed).
    pub fn take_durable(&mut self) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (p, o) in self.durable.drain() {
            if self.committed.get(&p).is_some_and(|c| *c >= o) {
                continue;
            }
            self.committed.insert(p.clone(), o);
            out.push((p, o));
        }
        out.sort();
        out
    }

    /// Put offsets back after a failed commit so that the next commit retries them.
    pub fn restore(&mut self, offsets: &[(Partition, i64)]) {
        for (p, o) in offsets {
            if self.assigned.contains_key(p) {
                let e = self.durable.entry(p.clone()).or_insert(*o);
                *e = (*e).max(*o);
                self.committed.remove(p);
            }
        }
    }
}

/// The next offset expected of each partition in the current assignment: a record below it was
/// already read and is not read again. librdkafka can fetch a partition again from an older
/// position when it is paused and resumed around its first fetch (the source pauses fetching
/// whenever the pipeline is full); without this, such records would be processed twice.
#[derive(Debug, Default)]
pub struct ReadPositions {
    next: HashMap<Partition, i64>,
}

impl ReadPositions {
    /// Whether the record at `offset` is new (and remember it); `false`: read before.
    pub fn admit(&mut self, p: &Partition, offset: i64) -> bool {
        match self.next.get_mut(p) {
            Some(next) if offset < *next => false,
            Some(next) => {
                *next = offset + 1;
                true
            }
            None => {
                self.next.insert(p.clone(), offset + 1);
                true
            }
        }
    }

    /// A new assignment (or a revoke) of `partitions`: they start wherever the group says.
    pub fn forget(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.next.remove(p);
        }
    }

    /// A rewind: every partition starts again at its committed offset.
    pub fn clear(&mut self) {
        self.next.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("t"), n)
    }

    fn offs(v: &[(i32, i64)]) -> Vec<(Arc<str>, i32, i64)> {
        v.iter().map(|(n, o)| (Arc::from("t"), *n, *o)).collect()
    }

    #[test]
    fn commits_only_acknowledged_chunks_in_order() {
        let mut t = OffsetTracker::default();
        t.assign([p(0), p(1)]);
        t.register(0, &offs(&[(0, 10), (1, 5)]));
        t.register(1, &offs(&[(0, 20)]));
        t.register(2, &offs(&[(1, 9)]));
        assert_eq!(t.ack(0), vec![(p(0), 10), (p(1), 5)]);
        // Chunk 2 is not acknowledged: partition 1 stays at 5.
        assert_eq!(t.ack(1), vec![(p(0), 20)]);
        assert_eq!(t.ack(2), vec![(p(1), 9)]);
        assert!(t.ack(2).is_empty());
    }

    #[test]
    fn revoked_partitions_are_not_committed_later() {
        let mut t = OffsetTracker::default();
        t.assign([p(0), p(1)]);
        t.register(0, &offs(&[(0, 10), (1, 5)]));
        t.register(1, &offs(&[(0, 30), (1, 8)]));
        assert_eq!(t.ack(0).len(), 2);
        assert!(t.revoke(&[p(0)]).is_empty());
        // Partition 0 comes back under a new assignment: chunk 1's offsets for it are stale.
        t.assign([p(0)]);
        assert_eq!(t.ack(1), vec![(p(1), 8)]);
    }

    #[test]
    fn revoke_returns_durable_offsets_and_restore_retries() {
        let mut t = OffsetTracker::default();
        t.assign([p(0)]);
        t.register(0, &offs(&[(0, 4)]));
        let got = t.ack(0);
        t.restore(&got);
        assert_eq!(t.revoke(&[p(0)]), vec![(p(0), 4)]);
        t.register(1, &offs(&[(0, 9)]));
        assert!(t.ack(1).is_empty());
    }

    #[test]
    fn records_read_again_within_an_assignment_are_skipped() {
        let mut r = ReadPositions::default();
        assert!(r.admit(&p(0), 0));
        assert!(r.admit(&p(0), 1));
        assert!(r.admit(&p(1), 7));
        // Fetched again from the start after a pause/resume.
        assert!(!r.admit(&p(0), 0));
        assert!(!r.admit(&p(0), 1));
        assert!(r.admit(&p(0), 2));
        // Gaps (compacted topics, transaction markers) are fine.
        assert!(r.admit(&p(1), 10));
        // Reassigned or rewound: read from wherever the group's offset is.
        r.forget(&[p(0)]);
        assert!(r.admit(&p(0), 0));
        r.clear();
        assert!(r.admit(&p(1), 3));
    }
}
