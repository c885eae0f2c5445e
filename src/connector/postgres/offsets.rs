//! Exactly-once from Kafka: the consumed offsets live in a table of bertflow's, written in the
//! same transaction as the rows they produced.
//!
//! Each transaction locks the rows of its partitions (`SELECT ... FOR UPDATE`), leaves out the
//! records whose offset is below the stored next offset (another worker, or an earlier run of
//! this one, already committed them), writes the rest and moves the stored offsets forward.
//! A worker that was assigned a partition resumes from the stored offset; a worker that lost a
//! partition without noticing cannot write its records twice, as the lock and the filter fence
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::{Client, GenericClient};

use super::client::{self, Target};
use super::table::TableName;
use crate::connector::PositionStore;
use crate::error::{Error, Result};

pub type Partition = (Arc<str>, i32);

/// The offsets table and the key of this sink's rows in it.
#[derive(Debug, Clone)]
pub struct OffsetsTable {
    pub table: TableName,
    /// The target table, as the key's first part.
    pub target: String,
    pub group: String,
}

impl OffsetsTable {
    pub fn create_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                target_table text NOT NULL,
                group_id text NOT NULL,
                topic text NOT NULL,
                kafka_partition integer NOT NULL,
                next_offset bigint NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (target_table, group_id, topic, kafka_partition))",
            self.table.sql()
        )
    }

    /// Lock the rows of `parts` (creating missing ones) for the rest of the transaction and
    /// return their stored next offsets (absent: nothing stored yet).
    pub async fn lock(
        &self,
        tx: &impl GenericClient,
        parts: &[Partition],
    ) -> std::result::Result<HashMap<Partition, i64>, tokio_postgres::Error> {
        let mut sorted: Vec<&Partition> = parts.iter().collect();
        sorted.sort();
        sorted.dedup();
        let topics: Vec<&str> = sorted.iter().map(|(t, _)| t.as_ref()).collect();
        let ids: Vec<i32> = sorted.iter().map(|(_, p)| *p).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} (target_table, group_id, topic, kafka_partition, next_offset)
                 SELECT $1, $2, t, p, -1 FROM unnest($3::text[], $4::int4[]) AS u(t, p)
                 ON CONFLICT DO NOTHING",
                self.table.sql()
            ),
            &[&self.target, &self.group, &topics, &ids],
        )
        .await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT o.topic, o.kafka_partition, o.next_offset FROM {} o
                     JOIN unnest($3::text[], $4::int4[]) AS u(t, p)
                       ON o.topic = u.t AND o.kafka_partition = u.p
                     WHERE o.target_table = $1 AND o.group_id = $2
                     ORDER BY o.topic, o.kafka_partition
                     FOR UPDATE OF o",
                    self.table.sql()
                ),
                &[&self.target, &self.group, &topics, &ids],
            )
            .await?;
        let mut out = HashMap::new();
        for r in rows {
            let topic: String = r.get(0);
            let part: i32 = r.get(1);
            let next: i64 = r.get(2);
            if next >= 0 {
                out.insert((Arc::from(topic.as_str()), part), next);
            }
        }
        Ok(out)
    }

    /// Move the stored offsets forward to `next` (never back).
    pub async fn store(
        &self,
        tx: &impl GenericClient,
        next: &[(Arc<str>, i32, i64)],
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let topics: Vec<&str> = next.iter().map(|(t, _, _)| t.as_ref()).collect();
        let ids: Vec<i32> = next.iter().map(|(_, p, _)| *p).collect();
        let offs: Vec<i64> = next.iter().map(|(_, _, o)| *o).collect();
        tx.execute(
            &format!(
                "UPDATE {} o SET next_offset = GREATEST(o.next_offset, u.n), updated_at = now()
                 FROM unnest($3::text[], $4::int4[], $5::int8[]) AS u(t, p, n)
                 WHERE o.target_table = $1 AND o.group_id = $2
                   AND o.topic = u.t AND o.kafka_partition = u.p",
                self.table.sql()
            ),
            &[&self.target, &self.group, &topics, &ids, &offs],
        )
        .await?;
        Ok(())
    }

    /// The stored next offsets of some partitions of a topic (outside a transaction).
    async fn load(
        &self,
        c: &Client,
        topic: &str,
        parts: &[i32],
    ) -> std::result::Result<Vec<(i32, i64)>, tokio_postgres::Error> {
        let rows = c
            .query(
                &format!(
                    "SELECT kafka_partition, next_offset FROM {}
                     WHERE target_table = $1 AND group_id = $2 AND topic = $3
                       AND kafka_partition = ANY($4::int4[]) AND next_offset >= 0",
                    self.table.sql()
                ),
                &[&self.target, &self.group, &topic, &parts],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// Where a Kafka source resumes: the offsets stored with the rows. Has its own connection (it
/// is asked from the source's thread, during rebalances).
pub struct StoredPositions {
    target: Target,
    offsets: OffsetsTable,
    conn: Mutex<Option<(tokio::runtime::Runtime, Client)>>,
    backoff: (Duration, Duration),
    shutdown: crate::lifecycle::Shutdown,
}

impl StoredPositions {
    pub fn new(
        target: Target,
        offsets: OffsetsTable,
        backoff: (Duration, Duration),
        shutdown: crate::lifecycle::Shutdown,
    ) -> StoredPositions {
        StoredPositions {
            target,
            offsets,
            conn: Mutex::new(None),
            backoff,
            shutdown,
        }
    }

    fn try_load(&self, topic: &str, parts: &[i32]) -> std::result::Result<Vec<(i32, i64)>, String> {
        let mut guard = self.conn.lock().expect("positions connection");
        if !matches!(guard.as_ref(), Some((_, c)) if !c.is_closed()) {
            let rt = client::runtime().map_err(|e| e.to_string())?;
            let c = client::connect(&rt, &self.target).map_err(|e| client::reason(&e))?;
            *guard = Some((rt, c));
        }
        let (rt, c) = guard.as_ref().expect("connected above");
        let r = rt.block_on(self.offsets.load(c, topic, parts));
        r.map_err(|e| {
            *guard = None;
            client::reason(&e)
        })
    }
}

impl PositionStore for StoredPositions {
    fn load(&self, topic: &str, partitions: &[i32]) -> Result<Vec<(i32, i64)>> {
        // Reading from an older offset would only cost time (the transactions leave out what is
        // stored), reading from a newer one would lose records: wait until Postgres answers.
        let mut wait = self.backoff.0;
        loop {
            match self.try_load(topic, partitions) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if self.shutdown.is_triggered() {
                        return Err(Error::sink(
                            self.target.describe.clone(),
                            format!("cannot read the stored offsets of {topic}: {e}"),
                        ));
                    }
                    tracing::warn!(
                        postgres = %self.target.describe,
                        topic,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot read the stored offsets; partitions wait until Postgres answers"
                    );
                    // The back-off ends early on shutdown (the next failure then gives up).
                    self.shutdown.wait_timeout(wait);
                    wait = (wait * 2).min(self.backoff.1);
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("{} table {}", self.target.describe, self.offsets.table)
    }
}
