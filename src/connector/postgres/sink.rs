//! The Postgres sink: each chunk is one transaction.
//!
//! - `insert`: the rows are loaded with binary `COPY` straight into the table.
//! - `upsert`: binary `COPY` into a temporary staging table, then one
//!   `INSERT ... SELECT DISTINCT ON (id) ... ON CONFLICT (id) DO UPDATE` (the last record of an id
//!   in a chunk wins).
//! - A row Postgres refuses (invalid data, a constraint, a size limit) fails the set-based load;
//!   the chunk is then written again row by row under savepoints, and each refused record goes
//!   to the error output with Postgres's reason while the rest commits.
//! - Exactly-once (Kafka source): the offsets are locked, filtered against and stored in the
//!   same transaction ([`super::offsets`]); failed records are handed to the error output before
//!   the commit.
//! - A lost connection, a server that restarts or refuses connections: the chunk is tried again
//!   on a new connection with exponential backoff, the source waiting meanwhile; nothing is
//!   committed before it succeeds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::client::{self, classify, reason, Failure, Target};
use super::config::{IndexMethod, PostgresSinkConfig, WriteMode};
use super::offsets::{OffsetsTable, Partition, StoredPositions};
use super::table::{ident, Cell, Encoded, Plan};
use crate::connector::{
    log_failures, ChunkOutput, ErrorOutput, PositionStore, Sink, SinkReport, Written,
};
use crate::error::{Error, Result};
use crate::lifecycle::Shutdown;
use crate::telemetry::{Event, SinkAvailable, SinkRetried};

const STAGE: &str = "pg_temp.bertflow_stage";
const ORD: &str = "bertflow_ord";

/// What the sink needs besides its configuration.
pub struct PostgresSinkOptions {
    /// The consumer group of a Kafka source (the offsets' key with `exactly_once`).
    pub group: Option<String>,
    /// Where failed records go.
    pub errors: Option<Box<dyn ErrorOutput>>,
    /// The source is a stream (retries then default to "until stopped").
    pub streaming: bool,
    /// Set when the worker is asked to stop: retries give up.
    pub shutdown: Shutdown,
}

struct Statements {
    create_stage: Option<String>,
    /// Before the merge: remove the rows of the records being written (passage rows: a record
    /// written again may have fewer passages than before).
    prune: Option<String>,
    copy: String,
    /// Columns of the `COPY`, to learn their types.
    probe: String,
    merge: Option<String>,
    clear_stage: Option<String>,
}

struct Conn {
    client: Client,
    types: Vec<Type>,
}

pub struct PostgresSink {
    target: Target,
    plan: Plan,
    sql: Statements,
    rt: tokio::runtime::Runtime,
    conn: Option<Conn>,
    offsets: Option<OffsetsTable>,
    positions: Option<Arc<StoredPositions>>,
    errors: Option<Box<dyn ErrorOutput>>,
    backoff: (Duration, Duration),
    retry_timeout: Option<Duration>,
    shutdown: Shutdown,
    report: SinkReport,
    /// Exactly-once: the chunk whose failed records the error output already has (a retried
    /// transaction does not send them again).
    errors_kept_for: Option<u64>,
}

/// Why an attempt to write a chunk failed.
enum Attempt {
    /// Try again on a new connection.
    Transient(String),
    Fatal(Error),
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Attempt {
        Attempt::Fatal(e)
    }
}

impl PostgresSink {
    /// Connect, create or check the table, and prepare the statements. Fails before any record
    /// is read when the server cannot be reached, the credentials are wrong or the table does
    /// not fit.
    pub fn new(
        cfg: &PostgresSinkConfig,
        schema: SchemaRef,
        opts: PostgresSinkOptions,
    ) -> Result<PostgresSink> {
        let target = client::target(
            cfg.url.as_deref(),
            Duration::from_secs(cfg.connect_timeout_s.max(1)),
        )?;
        let mut plan = Plan::new(cfg, schema)?;
        let offsets = if cfg.exactly_once {
            let group = opts
                .group
                .clone()
                .ok_or_else(|| Error::config("sink.postgres.exactly_once needs a Kafka source"))?;
            Some(OffsetsTable {
                table: plan
                    .table
                    .sibling(cfg.offsets_table.as_deref().unwrap_or("bertflow_offsets")),
                target: plan.table.to_string(),
                group,
            })
        } else {
            None
        };
        tracing::info!(
            postgres = %target.describe,
            table = %plan.table,
            mode = ?cfg.mode,
            exactly_once = cfg.exactly_once,
            "postgres sink"
        );
        let rt = client::runtime()?;
        let c = client::connect(&rt, &target).map_err(|e| {
            Error::sink(
                target.describe.clone(),
                format!(
                    "cannot connect: {} (check sink.postgres.url and PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE; is the server running?)",
                    reason(&e)
                ),
            )
        })?;
        rt.block_on(prepare_table(&c, cfg, &mut plan, offsets.as_ref()))
            .map_err(|e| Error::sink(format!("{} table {}", target.describe, plan.table), e))?;
        let sql = statements(&plan);
        let backoff = (
            Duration::from_millis(cfg.retry.initial_backoff_ms.max(1)),
            Duration::from_millis(cfg.retry.max_backoff_ms.max(cfg.retry.initial_backoff_ms)),
        );
        let timeout_s = cfg
            .retry
            .timeout_s
            .unwrap_or(if opts.streaming { 0 } else { 600 });
        let positions = offsets.as_ref().map(|o| {
            Arc::new(StoredPositions::new(
                target.clone(),
                o.clone(),
                backoff,
                opts.shutdown.clone(),
            ))
        });
        let mut sink = PostgresSink {
            target,
            plan,
            sql,
            rt,
            conn: None,
            offsets,
            positions,
            errors: opts.errors,
            backoff,
            retry_timeout: (timeout_s > 0).then(|| Duration::from_secs(timeout_s)),
            shutdown: opts.shutdown,
            report: SinkReport::default(),
            errors_kept_for: None,
        };
        let conn = sink.setup(c).map_err(|e| match e {
            Attempt::Fatal(e) => e,
            Attempt::Transient(m) => Error::sink(sink.target.describe.clone(), m),
        })?;
        sink.conn = Some(conn);
        sink.report.destinations = vec![format!(
            "postgres {} table {}",
            sink.target.describe, sink.plan.table
        )];
        Ok(sink)
    }

    /// Per-connection set-up: the staging table and the column types of the `COPY`.
    fn setup(&self, client: Client) -> std::result::Result<Conn, Attempt> {
        let r: std::result::Result<Vec<Type>, tokio_postgres::Error> = self.rt.block_on(async {
            if let Some(s) = &self.sql.create_stage {
                client.batch_execute(s).await?;
            }
            let stmt = client.prepare(&self.sql.probe).await?;
            Ok(stmt.columns().iter().map(|c| c.type_().clone()).collect())
        });
        match r {
            Ok(types) => Ok(Conn { client, types }),
            Err(e) => Err(self.pg_failure(&e)),
        }
    }

    fn pg_failure(&self, e: &tokio_postgres::Error) -> Attempt {
        match classify(e) {
            Failure::Transient => Attempt::Transient(reason(e)),
            _ => Attempt::Fatal(Error::sink(
                format!("{} table {}", self.target.describe, self.plan.table),
                reason(e),
            )),
        }
    }

    fn connection(&mut self) -> std::result::Result<(), Attempt> {
        if matches!(&self.conn, Some(c) if !c.client.is_closed()) {
            return Ok(());
        }
        self.conn = None;
        let c = client::connect(&self.rt, &self.target).map_err(|e| match classify(&e) {
            // Authentication and other refusals while reconnecting may pass too (a server
            // coming back); keep trying.
            Failure::Fatal | Failure::Row => Attempt::Transient(reason(&e)),
            Failure::Transient => Attempt::Transient(reason(&e)),
        })?;
        self.conn = Some(self.setup(c)?);
        Ok(())
    }

    /// One try at writing a chunk in one transaction. Returns the number of rows written.
    fn attempt(&mut self, out: &ChunkOutput) -> std::result::Result<usize, Attempt> {
        self.connection()?;
        let eos = self.offsets.is_some();
        let enc = Encoded::new(&self.plan, &out.results)?;
        // Every row is encoded once; rows that cannot be stored are refused before the load.
        let mut refused: Vec<(u32, String)> = Vec::new();
        let mut rows: Vec<usize> = Vec::with_capacity(out.results.num_rows());
        let cells: Vec<Option<Vec<Cell<'_>>>> = (0..out.results.num_rows())
            .map(|i| match enc.row(&self.plan, i) {
                Ok(c) => {
                    rows.push(i);
                    Some(c)
                }
                Err(e) => {
                    refused.push((out.result_rows[i], format!("cannot store the result: {e}")));
                    None
                }
            })
            .collect();
        let (parts, next) = if eos {
            let s = out.origin.stream().ok_or_else(|| {
                Attempt::Fatal(Error::config(
                    "sink.postgres.exactly_once needs a Kafka source",
                ))
            })?;
            let next: Vec<(Arc<str>, i32, i64)> = s
                .next_positions()
                .into_iter()
                .map(|p| (p.stream, p.partition, p.offset))
                .collect();
            let parts: Vec<Partition> = next.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
            (parts, next)
        } else {
            (Vec::new(), Vec::new())
        };
        let PostgresSink {
            ref rt,
            ref mut conn,
            ref plan,
            ref sql,
            ref offsets,
            ref mut errors,
            ref mut errors_kept_for,
            ref target,
            ..
        } = *self;
        let conn = conn.as_mut().expect("connected above");
        let types = conn.types.clone();
        let fail = |e: tokio_postgres::Error| match classify(&e) {
            Failure::Transient => Attempt::Transient(reason(&e)),
            _ => Attempt::Fatal(Error::sink(
                format!("{} table {}", target.describe, plan.table),
                reason(&e),
            )),
        };
        let fresh = |stored: &HashMap<Partition, i64>, row: u32| -> bool {
            match out.origin.stream() {
                Some(s) if eos => {
                    let p = s.position(row as usize);
                    not_stored(stored.get(&(p.stream.clone(), p.partition)), p.offset)
                }
                _ => true,
            }
        };

        let mut tx = rt.block_on(conn.client.transaction()).map_err(fail)?;
        let mut stored = HashMap::new();
        if let Some(o) = offsets.as_ref() {
            stored = rt.block_on(o.lock(&tx, &parts)).map_err(fail)?;
        }
        let mut keep: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&i| fresh(&stored, out.result_rows[i]))
            .collect();
        let mut row_refused = 0usize;
        match rt.block_on(write_rows(&tx, plan, sql, &types, &cells, &keep)) {
            Ok(()) => {}
            Err(e) if classify(&e) == Failure::Row => {
                tracing::info!(
                    reason = %reason(&e),
                    rows = keep.len(),
                    "postgres refused a row of the micro-batch; writing it row by row"
                );
                rt.block_on(tx.rollback()).map_err(fail)?;
                tx = rt.block_on(conn.client.transaction()).map_err(fail)?;
                if let Some(o) = offsets.as_ref() {
                    // Another worker may have stored records of these partitions meanwhile.
                    stored = rt.block_on(o.lock(&tx, &parts)).map_err(fail)?;
                    keep.retain(|&i| fresh(&stored, out.result_rows[i]));
                }
                for &i in &keep {
                    let sp = rt.block_on(tx.savepoint("bertflow_row")).map_err(fail)?;
                    match rt.block_on(write_rows(&sp, plan, sql, &types, &cells, &[i])) {
                        Ok(()) => rt.block_on(sp.commit()).map_err(fail)?,
                        Err(e) if classify(&e) == Failure::Row => {
                            rt.block_on(sp.rollback()).map_err(fail)?;
                            row_refused += 1;
                            refused.push((
                                out.result_rows[i],
                                format!("postgres refused the row: {}", reason(&e)),
                            ));
                        }
                        Err(e) => return Err(fail(e)),
                    }
                }
            }
            Err(e) => return Err(fail(e)),
        }
        let written = keep.len() - row_refused;
        let failed = if refused.is_empty() {
            std::borrow::Cow::Borrowed(out)
        } else {
            std::borrow::Cow::Owned(out.refuse(&refused)?)
        };
        if let Some(o) = offsets.as_ref() {
            // Failed records are kept before the transaction commits (at least once); those
            // of records already stored are not sent again.
            let failed = only_errors(&failed, |row| fresh(&stored, row))?;
            if *errors_kept_for != Some(out.seq) {
                keep_failures(errors, &failed)?;
                *errors_kept_for = Some(out.seq);
            }
            rt.block_on(o.store(&tx, &next)).map_err(fail)?;
            rt.block_on(tx.commit()).map_err(fail)?;
            self.report.error_rows += failed.errors.len() as u64;
        } else {
            rt.block_on(tx.commit()).map_err(fail)?;
            keep_failures(errors, &failed)?;
            self.report.error_rows += failed.errors.len() as u64;
        }
        self.report.refused += refused.len() as u64;
        Ok(written)
    }
}

/// No offset is stored for the record's partition, or the record is at or past it (not yet
/// in the table).
fn not_stored(stored: Option<&i64>, offset: i64) -> bool {
    match stored {
        None => true,
        Some(next) => offset >= *next,
    }
}

/// The chunk output with only the error rows of records for which `keep` holds.
fn only_errors(out: &ChunkOutput, keep: impl Fn(u32) -> bool) -> Result<ChunkOutput> {
    let idx: Vec<u32> = (0..out.errors.len() as u32)
        .filter(|&i| keep(out.errors[i as usize].row))
        .collect();
    if idx.len() == out.errors.len() {
        return Ok(out.clone());
    }
    let ids = arrow::compute::take(
        out.error_ids.as_ref(),
        &arrow::array::UInt32Array::from(idx.clone()),
        None,
    )
    .map_err(|e| Error::sink("error output", e.to_string()))?;
    let mut o = out.clone();
    o.errors = idx
        .iter()
        .map(|&i| out.errors[i as usize].clone())
        .collect();
    o.error_ids = ids;
    Ok(o)
}

fn keep_failures(errors: &mut Option<Box<dyn ErrorOutput>>, out: &ChunkOutput) -> Result<()> {
    log_failures(out, errors.is_some());
    if let Some(e) = errors {
        e.write(out)?;
    }
    Ok(())
}

/// Load rows `rows` of the encoded batch: `COPY` (into the staging table for `upsert`, then
/// merged).
async fn write_rows(
    tx: &Transaction<'_>,
    plan: &Plan,
    sql: &Statements,
    types: &[Type],
    cells: &[Option<Vec<Cell<'_>>>],
    rows: &[usize],
) -> std::result::Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = tx.copy_in(&sql.copy).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = std::pin::pin!(writer);
    let upsert = plan.mode == WriteMode::Upsert;
    for &i in rows {
        let row = cells[i].as_ref().expect("only encoded rows are loaded");
        let ord = i as i32;
        let mut refs: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        if upsert {
            refs.push(&ord);
        }
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    if let Some(p) = &sql.prune {
        tx.execute(p.as_str(), &[]).await?;
    }
    if let Some(m) = &sql.merge {
        tx.execute(m.as_str(), &[]).await?;
    }
    if let Some(c) = &sql.clear_stage {
        tx.execute(c.as_str(), &[]).await?;
    }
    Ok(())
}

fn statements(plan: &Plan) -> Statements {
    let cols = plan.column_list();
    let table = plan.table.sql();
    match plan.mode {
        WriteMode::Insert => Statements {
            create_stage: None,
            prune: None,
            copy: format!("COPY {table} ({cols}) FROM STDIN (FORMAT binary)"),
            probe: format!("SELECT {cols} FROM {table} LIMIT 0"),
            merge: None,
            clear_stage: None,
        },
        WriteMode::Upsert => {
            let defs: Vec<String> = plan
                .columns
                .iter()
                .map(|c| format!("{} {}", ident(&c.name), c.sql_type))
                .collect();
            let id = ident(&plan.id().name);
            let key = plan.key_list();
            let updates: Vec<String> = plan
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| !plan.key.contains(i))
                .map(|(_, c)| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
                .collect();
            let prune = (plan.key.len() > 1).then(|| {
                format!("DELETE FROM {table} t USING (SELECT DISTINCT {id} FROM {STAGE}) s WHERE t.{id} = s.{id}")
            });
            let on_conflict = if updates.is_empty() {
                "DO NOTHING".to_string()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            };
            Statements {
                create_stage: Some(format!(
                    "DROP TABLE IF EXISTS {STAGE}; CREATE TEMP TABLE bertflow_stage ({}, {ORD} integer NOT NULL) ON COMMIT DELETE ROWS",
                    defs.join(", ")
                )),
                prune,
                copy: format!("COPY {STAGE} ({cols}, {ORD}) FROM STDIN (FORMAT binary)"),
                probe: format!("SELECT {cols}, {ORD} FROM {STAGE} LIMIT 0"),
                merge: Some(format!(
                    "INSERT INTO {table} ({cols}) SELECT {cols} FROM (SELECT DISTINCT ON ({key}) * FROM {STAGE} ORDER BY {key}, {ORD} DESC) s ON CONFLICT ({key}) {on_conflict}"
                )),
                clear_stage: Some(format!("TRUNCATE {STAGE}")),
            }
        }
    }
}

/// Create (when asked) and check the target table and the offsets table.
async fn prepare_table(
    c: &Client,
    cfg: &PostgresSinkConfig,
    plan: &mut Plan,
    offsets: Option<&OffsetsTable>,
) -> std::result::Result<(), String> {
    let err = |what: &str, e: tokio_postgres::Error| format!("{what}: {}", reason(&e));
    let has_vectors = plan.vectors().next().is_some();
    if cfg.create_table {
        if has_vectors {
            c.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
                .await
                .map_err(|e| err("cannot create the pgvector extension (install pgvector on the server, or have a superuser run CREATE EXTENSION vector in this database)", e))?;
        }
        if let Some(s) = &plan.table.schema {
            c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(s)))
                .await
                .map_err(|e| err("cannot create the schema", e))?;
        }
        c.batch_execute(&plan.create_sql())
            .await
            .map_err(|e| err("cannot create the table", e))?;
    } else if has_vectors {
        let n = c
            .query(
                "SELECT 1 FROM pg_type WHERE typname IN ('vector', 'halfvec')",
                &[],
            )
            .await
            .map_err(|e| err("cannot read the catalog", e))?;
        if n.is_empty() {
            return Err("the pgvector extension is not installed in this database (CREATE EXTENSION vector; or set sink.postgres.create_table: true)".into());
        }
    }
    let name = plan.table.sql();
    let rows = c
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text,
                    a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&name],
        )
        .await
        .map_err(|e| err("cannot read the table's columns", e))?;
    if rows.is_empty() {
        return Err(format!(
            "the table does not exist (create it, see docs/vector-databases.md, or set sink.postgres.create_table: true); names are used as written: {name}"
        ));
    }
    let mut table = BTreeMap::new();
    for r in rows {
        table.insert(
            r.get::<_, String>(0),
            (
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, bool>(3),
            ),
        );
    }
    // A unique index (or primary key) on exactly the key columns, in any order.
    let unique: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL
                 AND i.indnkeyatts = cardinality($2::text[])
                 AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                        FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       WHERE k.ord <= i.indnkeyatts)
                     = (SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) AS x))",
            &[&name, &plan.key_names()],
        )
        .await
        .map_err(|e| err("cannot read the table's indexes", e))?
        .get(0);
    plan.check(&table, unique).map_err(|e| match e {
        Error::Config(m) => m,
        other => other.to_string(),
    })?;
    if let (true, Some(index)) = (cfg.create_table, &cfg.index) {
        for col in plan.vectors() {
            if col.typname == "sparsevec" {
                sparse_index_fits(index, &plan.output.fields()[col.output])?;
            }
            let opclass = index.distance.opclass_for(&col.typname).map_err(|e| {
                format!(
                    "sink.postgres.index.distance: {e} (column {:?} is {})",
                    col.name, col.sql_type
                )
            })?;
            let (method, with) = match index.method {
                IndexMethod::Hnsw => (
                    "hnsw",
                    format!(
                        "m = {}, ef_construction = {}",
                        index.m.unwrap_or(16),
                        index.ef_construction.unwrap_or(64)
                    ),
                ),
                IndexMethod::Ivfflat => {
                    ("ivfflat", format!("lists = {}", index.lists.unwrap_or(100)))
                }
            };
            let mut idx_name = format!("{}_{}_{method}", plan.table.name, col.name);
            idx_name.truncate(63);
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS {} ON {name} USING {method} ({} {}) WITH ({with})",
                ident(&idx_name),
                ident(&col.name),
                opclass
            );
            c.batch_execute(&sql)
                .await
                .map_err(|e| err("cannot create the vector index", e))?;
        }
    }
    if let Some(o) = offsets {
        c.batch_execute(&o.create_sql())
            .await
            .map_err(|e| err(&format!("cannot create the offsets table {}", o.table), e))?;
    }
    Ok(())
}

/// pgvector indexes sparse vectors with HNSW only, of at most 1,000 non-zero elements: the
/// task must cap them (`tasks.sparse.max_active_dims`).
fn sparse_index_fits(
    index: &super::config::IndexConfig,
    field: &arrow::datatypes::Field,
) -> std::result::Result<(), String> {
    use super::table::SPARSEVEC_INDEX_MAX_NNZ;
    if index.method != IndexMethod::Hnsw {
        return Err(format!(
            "sink.postgres.index: pgvector indexes sparsevec column {:?} with hnsw only; set method: hnsw",
            field.name()
        ));
    }
    let cap: Option<usize> = field
        .metadata()
        .get(crate::record::SPARSE_MAX_ACTIVE_KEY)
        .and_then(|v| v.parse().ok());
    match cap {
        Some(k) if k <= SPARSEVEC_INDEX_MAX_NNZ => Ok(()),
        Some(k) => Err(format!(
            "sink.postgres.index: an HNSW index on sparsevec takes at most {SPARSEVEC_INDEX_MAX_NNZ} non-zero elements, but tasks.sparse.max_active_dims is {k}; lower it to {SPARSEVEC_INDEX_MAX_NNZ} or less"
        )),
        None => Err(format!(
            "sink.postgres.index: an HNSW index on sparsevec takes at most {SPARSEVEC_INDEX_MAX_NNZ} non-zero elements, but tasks.sparse.max_active_dims is not set, so vectors may hold more; set it (e.g. 256), or leave out the index"
        )),
    }
}

impl Sink for PostgresSink {
    fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
        let started = Instant::now();
        let mut wait = self.backoff.0;
        loop {
            match self.attempt(out) {
                Ok(n) => {
                    SinkAvailable { sink: "postgres" }.emit();
                    self.report.rows += n as u64;
                    return Ok(Written::kept(Some(out.seq)));
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Transient(why)) => {
                    self.conn = None;
                    let stop = self.shutdown.is_triggered();
                    let late = self.retry_timeout.is_some_and(|t| started.elapsed() >= t);
                    if stop || late {
                        return Err(Error::Unavailable {
                            location: self.target.describe.clone(),
                            message: format!(
                                "{} after {:.0} s of retries: {why} (nothing of the unfinished micro-batch was committed; sink.postgres.retry.timeout_s sets how long to retry)",
                                if stop { "stopped" } else { "gave up" },
                                started.elapsed().as_secs_f64()
                            ),
                            source: None,
                        });
                    }
                    SinkRetried {
                        sink: "postgres",
                        destination: &self.target.describe,
                        reason: &why,
                        backoff: wait,
                    }
                    .emit();
                    // The back-off ends early on shutdown (the next attempt then gives up).
                    self.shutdown.wait_timeout(wait);
                    wait = (wait * 2).min(self.backoff.1);
                }
            }
        }
    }

    fn finish(&mut self) -> Result<SinkReport> {
        if let Some(e) = &mut self.errors {
            self.report.error_file = e.finish()?;
            if self.report.error_file.is_none() {
                self.report
                    .destinations
                    .push(format!("errors: {}", e.describe()));
            }
        }
        Ok(self.report.clone())
    }

    fn abort(&mut self) {
        // An open transaction was rolled back when it was dropped.
        if let Some(e) = &mut self.errors {
            e.abort();
        }
    }

    fn position_store(&self) -> Option<Arc<dyn PositionStore>> {
        self.positions.clone().map(|p| p as Arc<dyn PositionStore>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_below_the_stored_offset_are_already_in_the_table() {
        assert!(not_stored(None, 0));
        assert!(not_stored(Some(&10), 10));
        assert!(not_stored(Some(&10), 11));
        assert!(!not_stored(Some(&10), 9));
    }

    #[test]
    fn upsert_merges_the_last_record_of_an_id() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("sentiment_label", arrow::datatypes::DataType::Utf8, true),
        ]));
        let cfg: PostgresSinkConfig = serde_yaml::from_str("{table: s.docs}").unwrap();
        let plan = Plan::new(&cfg, schema.clone()).unwrap();
        let sql = statements(&plan);
        assert_eq!(
            sql.merge.as_deref(),
            Some("INSERT INTO \"s\".\"docs\" (\"id\", \"sentiment_label\") SELECT \"id\", \"sentiment_label\" FROM (SELECT DISTINCT ON (\"id\") * FROM pg_temp.bertflow_stage ORDER BY \"id\", bertflow_ord DESC) s ON CONFLICT (\"id\") DO UPDATE SET \"sentiment_label\" = EXCLUDED.\"sentiment_label\"")
        );
        let cfg: PostgresSinkConfig = serde_yaml::from_str("{table: docs, mode: insert}").unwrap();
        let sql = statements(&Plan::new(&cfg, schema).unwrap());
        assert_eq!(
            sql.copy,
            "COPY \"docs\" (\"id\", \"sentiment_label\") FROM STDIN (FORMAT binary)"
        );
        assert!(sql.merge.is_none() && sql.create_stage.is_none());
    }
}
