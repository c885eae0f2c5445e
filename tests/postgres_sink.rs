//! The Postgres (pgvector) sink against a real PostgreSQL server with pgvector
//! (`scripts/postgres.sh start`) and, for the streaming cases, the real Kafka broker.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray};
use common::kafka::{
    bootstrap, committed_offsets, create_topics, expected_ids, free_port, kafka_source_yaml,
    produce, text_msgs, unique, wait_until, Worker,
};
use common::postgres::{table, url, Db, Server};
use common::*;

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Review {i}: {}", common::kafka::words(i)))
        .collect()
}

fn write_input(path: &Path, ids: &[String], texts: &[Option<String>], lang: &[Option<String>]) {
    write_parquet(
        path,
        vec![
            ("id", Arc::new(StringArray::from(ids.to_vec())) as ArrayRef),
            ("text", Arc::new(StringArray::from(texts.to_vec()))),
            ("lang", Arc::new(StringArray::from(lang.to_vec()))),
        ],
    );
}

fn parquet_pipeline(dir: &Path, input: &Path, sink: &str) -> std::path::PathBuf {
    let p = dir.join(format!("p{}.yaml", sink.len()));
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n  embed:\n    model: {}\n  sentiment:\n    model: {}\n    top_k: 2\nsink:\n  passthrough: [lang]\n{sink}",
            input.display(),
            model("all-MiniLM-L6-v2").display(),
            model("sentiment").display(),
        ),
    )
    .unwrap();
    p
}

/// The same pipeline into a Parquet file: what the table must hold.
fn parquet_reference(dir: &Path, input: &Path) -> arrow::array::RecordBatch {
    let out = dir.join("out.parquet");
    let p = parquet_pipeline(
        dir,
        input,
        &format!("  parquet:\n    path: {}\n", out.display()),
    );
    assert_ok(&run_pipeline(&p, &[]));
    read_parquet(&out)
}

#[test]
fn parquet_to_pgvector_equals_the_parquet_output_and_reruns_idempotently() {
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let mut t: Vec<Option<String>> = texts(n).into_iter().map(Some).collect();
    t[7] = None; // a source error
    let lang: Vec<Option<String>> = (0..n).map(|i| (i % 3 != 0).then(|| "en".into())).collect();
    let input = dir.path().join("in.parquet");
    write_input(&input, &ids, &t, &lang);

    let expected = parquet_reference(dir.path(), &input);

    let tbl = table("reviews");
    let errors = dir.path().join("errors.parquet");
    let p = parquet_pipeline(
        dir.path(),
        &input,
        &format!(
            "  postgres:\n    url: {}\n    table: {tbl}\n    create_table: true\n    index: {{method: hnsw, distance: cosine}}\n  errors:\n    path: {}\n",
            url(),
            errors.display()
        ),
    );
    for run in 0..2 {
        let o = run_pipeline(&p, &[]);
        assert_ok(&o);
        let s = stdout(&o);
        assert!(s.contains(&format!("table {tbl}")), "summary:\n{s}");
        assert_eq!(
            db.count(&format!("SELECT count(*) FROM \"{tbl}\"")),
            (n - 1) as i64,
            "run {run}"
        );
    }
    // The error file holds the failed record; records = written + errors.
    let err = read_parquet(&errors);
    assert_eq!(strings(&err, "id"), vec![Some("r7".to_string())]);

    let rows = db.query(&format!(
        "SELECT id, embedding::real[], sentiment_label, sentiment_scores->0->>'label', lang FROM \"{tbl}\""
    ));
    let exp_ids = strings(&expected, "id");
    let exp_emb = embeddings(&expected, "embedding");
    let exp_label = strings(&expected, "sentiment_label");
    let exp_lang = strings(&expected, "lang");
    assert_eq!(rows.len(), exp_ids.len());
    for r in rows {
        let id: String = r.get(0);
        let i = exp_ids
            .iter()
            .position(|x| x.as_deref() == Some(&id))
            .unwrap();
        let v: Vec<f32> = r.get(1);
        assert_eq!(v, exp_emb[i], "embedding of {id}");
        let label: Option<String> = r.get(2);
        assert_eq!(label, exp_label[i]);
        // The list of scores is a jsonb array, best label first.
        let best: Option<String> = r.get(3);
        assert_eq!(best, exp_label[i]);
        let lang: Option<String> = r.get(4);
        assert_eq!(lang, exp_lang[i]);
    }
    // The index serves nearest-neighbour queries by cosine distance.
    db.execute("SET enable_seqscan = off");
    let plan: Vec<String> = db
        .query(&format!(
            "EXPLAIN SELECT id FROM \"{tbl}\" ORDER BY embedding <=> (SELECT embedding FROM \"{tbl}\" WHERE id = 'r1') LIMIT 3"
        ))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter()
            .any(|l| l.contains(&format!("{tbl}_embedding_hnsw"))),
        "{plan:?}"
    );
    let nearest: Vec<String> = db
        .query(&format!(
            "SELECT id FROM \"{tbl}\" ORDER BY embedding <=> (SELECT embedding FROM \"{tbl}\" WHERE id = 'r1') LIMIT 1"
        ))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(nearest, vec!["r1".to_string()]);
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}

#[test]
fn rows_postgres_refuses_go_to_the_error_output_and_the_rest_commits() {
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let tbl = table("events");
    // An existing table of the user's: a short language code, append-only.
    db.execute(&format!(
        "CREATE TABLE \"{tbl}\" (id text NOT NULL, lang varchar(8), embedding vector(384), sentiment_label text, sentiment_score real, sentiment_scores json, loaded_at timestamptz NOT NULL DEFAULT now())"
    ));
    let n = 12;
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let t: Vec<Option<String>> = texts(n).into_iter().map(Some).collect();
    let mut lang: Vec<Option<String>> = vec![Some("en".into()); n];
    lang[3] = Some("e\0n".into()); // Postgres text cannot hold NUL bytes
    lang[5] = Some("a language name far too long".into()); // longer than varchar(8)
    let input = dir.path().join("in.parquet");
    write_input(&input, &ids, &t, &lang);
    let errors = dir.path().join("errors.parquet");
    let p = parquet_pipeline(
        dir.path(),
        &input,
        &format!(
            "  postgres:\n    url: {}\n    table: {tbl}\n    mode: insert\n  errors:\n    path: {}\n",
            url(),
            errors.display()
        ),
    );
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    let s = stdout(&o);
    assert!(summary_count(&s, "written") == 10, "{s}");
    assert!(summary_count(&s, "errors") == 2, "{s}");
    let got: HashSet<String> = db
        .query(&format!("SELECT id FROM \"{tbl}\""))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: HashSet<String> = ids
        .iter()
        .filter(|i| *i != "r3" && *i != "r5")
        .cloned()
        .collect();
    assert_eq!(got, want);
    let err = read_parquet(&errors);
    let eids = strings(&err, "id");
    let reasons = strings(&err, "reason");
    let stages = strings(&err, "stage");
    assert_eq!(eids.len(), 2, "{eids:?} {reasons:?}");
    for (id, r, st) in itertools(&eids, &reasons, &stages) {
        assert_eq!(st, "sink");
        match id.as_str() {
            "r3" => assert!(r.contains("0x00"), "{r}"),
            "r5" => assert!(r.contains("too long"), "{r}"),
            other => panic!("unexpected error row {other}: {r}"),
        }
        assert!(r.contains("SQLSTATE"), "{r}");
    }
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}

fn itertools(
    a: &[Option<String>],
    b: &[Option<String>],
    c: &[Option<String>],
) -> Vec<(String, String, String)> {
    a.iter()
        .zip(b)
        .zip(c)
        .map(|((a, b), c)| (a.clone().unwrap(), b.clone().unwrap(), c.clone().unwrap()))
        .collect()
}

#[test]
fn start_up_problems_stop_the_job_before_any_work_with_a_clear_message() {
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..3).map(|i| format!("r{i}")).collect();
    let t: Vec<Option<String>> = texts(3).into_iter().map(Some).collect();
    let input = dir.path().join("in.parquet");
    write_input(&input, &ids, &t, &[None, None, None]);
    let run = |sink: &str| {
        let p = parquet_pipeline(dir.path(), &input, sink);
        let o = run_pipeline(&p, &[]);
        assert!(!o.status.success(), "{}", stdout(&o));
        stderr(&o)
    };
    // Nothing listens there.
    let e = run(&format!(
        "  postgres:\n    url: postgres://postgres@127.0.0.1:{}/bertflow\n    table: t\n    connect_timeout_s: 3\n",
        free_port()
    ));
    assert!(e.contains("cannot connect"), "{e}");
    // A role that does not exist; the password is never printed.
    let e = run(&format!(
        "  postgres:\n    url: postgres://nobody:pa55word@127.0.0.1:{}/bertflow\n    table: t\n",
        url().rsplit(':').next().unwrap().split('/').next().unwrap()
    ));
    assert!(e.contains("nobody") && e.contains("cannot connect"), "{e}");
    assert!(!e.contains("pa55word"), "{e}");
    // A table whose vectors have another dimension, and no key for upserts.
    let tbl = table("mismatch");
    db.execute(&format!(
        "CREATE TABLE \"{tbl}\" (id text, lang text, embedding vector(3), sentiment_label text, sentiment_score real, sentiment_scores jsonb)"
    ));
    let e = run(&format!(
        "  postgres:\n    url: {}\n    table: {tbl}\n",
        url()
    ));
    assert!(e.contains("384 dimensions"), "{e}");
    assert!(e.contains("upsert needs a primary key"), "{e}");
    // A missing table without create_table.
    let e = run(&format!(
        "  postgres:\n    url: {}\n    table: {}\n",
        url(),
        table("missing")
    ));
    assert!(
        e.contains("does not exist") && e.contains("create_table"),
        "{e}"
    );
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}

fn kafka_pg_pipeline(
    dir: &Path,
    topic: &str,
    group: &str,
    pg: &str,
    tbl: &str,
    extra: &str,
) -> std::path::PathBuf {
    let p = dir.join("w.yaml");
    std::fs::write(
        &p,
        format!(
            "{source}tasks:
  embed:
    model: {model}
batching:
  window_records: 64
metrics:
  listen: 127.0.0.1:0
sink:
  passthrough: [partition, offset]
  postgres:
    url: {pg}
    table: {tbl}
    create_table: true
{extra}",
            source = kafka_source_yaml(&bootstrap(), topic, group),
            model = model("all-MiniLM-L6-v2").display(),
        ),
    )
    .unwrap();
    p
}

/// What five crashes left in the table.
struct AfterKills {
    /// Every id in the table, duplicates included.
    ids: Vec<String>,
    /// The ids of the records sent.
    expected: HashSet<String>,
    /// At each crash, records in the table past the offsets committed to Kafka: what an
    /// at-least-once restart may write again.
    uncommitted_at_crashes: usize,
    /// Per crash and partition: the committed offset and the records past it.
    history: Vec<String>,
    log: String,
}

/// A stream of `n` records into an `insert` table without a unique key, the worker killed with
/// SIGKILL five times at different points after a commit, then run to the end.
fn five_kills_then_drain(sink_yaml: &str, tbl: &str, group: &str, n: usize) -> AfterKills {
    let servers = bootstrap();
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-kill");
    create_topics(&servers, &[(&topic, 3)]);
    produce(&servers, &topic, &text_msgs(0..n));
    let expected = expected_ids(&topic, &servers, n);
    assert_eq!(expected.len(), n);
    // The workers' connections carry the table's name, to see when a killed one is gone.
    let pg_url = format!("{}?application_name={tbl}", url());
    let p = kafka_pg_pipeline(dir.path(), &topic, group, &pg_url, tbl, sink_yaml);
    let connected = || {
        db.count(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{tbl}'"
        ))
    };
    let distinct = || db.try_count(&format!("SELECT count(DISTINCT id) FROM \"{tbl}\""));
    let committed = || committed_offsets(&servers, group, &topic);
    let mut crashes = 0;
    let mut uncommitted_at_crashes = 0;
    let mut history = Vec::new();
    let delays_ms = [0u64, 170, 340, 510, 680];
    while crashes < 5 && distinct() < n as i64 {
        let before = distinct();
        let mut w = Worker::start(&p, "w", &[]);
        let progressed = wait_until(Duration::from_secs(90), || {
            distinct() > before.max(0) || !w.is_running()
        });
        assert!(
            progressed && w.is_running(),
            "no progress:\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(delays_ms[crashes]));
        w.crash();
        crashes += 1;
        // A transaction whose COMMIT was on its way still lands: look at the table once the
        // server has ended the killed worker's sessions.
        assert!(wait_until(Duration::from_secs(30), || connected() == 0));
        let offsets = committed();
        // Per partition: every record before the committed offset is in the table (offsets are
        // committed only once their output is durable), and the records at or past it are what
        // the next worker may write again.
        for part in 0..3 {
            let c = offsets.get(&part).copied().unwrap_or(0);
            let below = db.count(&format!(
                "SELECT count(DISTINCT id) FROM \"{tbl}\" WHERE split_part(id, '/', 2)::int = {part} AND split_part(id, '/', 3)::int8 < {c}"
            ));
            assert_eq!(
                below, c,
                "crash {crashes}: partition {part} committed at {c} but only {below} of the records before it are in the table\n{history:?}"
            );
            let past = db.count(&format!(
                "SELECT count(DISTINCT id) FROM \"{tbl}\" WHERE split_part(id, '/', 2)::int = {part} AND split_part(id, '/', 3)::int8 >= {c}"
            ));
            uncommitted_at_crashes += past as usize;
            history.push(format!(
                "crash {crashes} p{part}: committed {c}, {past} past it"
            ));
        }
        println!(
            "crash {crashes}: {} records in the table, committed {offsets:?}",
            distinct()
        );
    }
    assert_eq!(crashes, 5, "the stream ended before five crashes");
    let w = Worker::start(&p, "w", &[]);
    let done = wait_until(Duration::from_secs(240), || distinct() >= n as i64);
    let log = w.log_text();
    assert!(done, "only {} of {n} records:\n{log}", distinct());
    // A clean stop: what is in flight is written and committed, nothing more is read.
    assert!(w.stop());
    let ids = db
        .query(&format!("SELECT id FROM \"{tbl}\""))
        .iter()
        .map(|r| r.get(0))
        .collect();
    AfterKills {
        ids,
        expected,
        uncommitted_at_crashes,
        history,
        log,
    }
}

#[test]
fn exactly_once_into_postgres_under_kill_9() {
    let db = Db::connect(&url());
    let (n, tbl, group) = (2400, table("eos"), unique("g"));
    // Append-only, no unique key: only the stored offsets keep records from being written twice.
    let r = five_kills_then_drain(
        "    mode: insert\n    exactly_once: true\n",
        &tbl,
        &group,
        n,
    );
    assert!(
        r.log
            .contains("resume from the offsets stored with the output"),
        "{}",
        r.log
    );
    // Every record sent, each exactly once.
    assert_eq!(r.ids.len(), n, "rows in the table");
    let got: HashSet<String> = r.ids.into_iter().collect();
    assert_eq!(got, r.expected);
    // The stored offsets are the end of every partition.
    let stored = db.count(&format!(
        "SELECT sum(next_offset)::int8 FROM bertflow_offsets WHERE target_table = '{tbl}' AND group_id = '{group}'"
    ));
    assert_eq!(stored, n as i64);
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}

#[test]
fn at_least_once_into_postgres_loses_nothing_under_kill_9() {
    let (n, tbl) = (1800, table("alo_kill"));
    let r = five_kills_then_drain("    mode: insert\n", &tbl, &unique("g"), n);
    // Every record is there; only the tails uncommitted at the crashes may be there twice.
    let got: HashSet<String> = r.ids.iter().cloned().collect();
    assert_eq!(got, r.expected);
    let dups = r.ids.len() - got.len();
    if dups > r.uncommitted_at_crashes {
        // Which records were written more than twice or outside the uncommitted tails.
        let mut count: std::collections::HashMap<&str, usize> = Default::default();
        for id in &r.ids {
            *count.entry(id.as_str()).or_default() += 1;
        }
        let mut repeated: Vec<(&str, usize)> = count.into_iter().filter(|(_, c)| *c > 1).collect();
        repeated.sort();
        let rebalances: Vec<&str> = r
            .log
            .lines()
            .filter(|l| l.contains("partitions") || l.contains("WARN") || l.contains("ERROR"))
            .collect();
        panic!(
            "{dups} duplicates, more than the {} records uncommitted at the crashes\n{:#?}\nrepeated: {repeated:?}\n{}",
            r.uncommitted_at_crashes,
            r.history,
            rebalances.join("\n")
        );
    }
    println!(
        "at least once, kill -9 x5: {n} records, {dups} duplicates (bound {})",
        r.uncommitted_at_crashes
    );
    Db::connect(&url()).execute(&format!("DROP TABLE \"{tbl}\""));
}

/// A backlog read while the pipeline is full (the source pauses and resumes its partitions over
/// and over, from their first fetch on), with no crash and no rebalance: every record is written
/// exactly once, even into an append-only table.
#[test]
fn a_backlog_under_backpressure_is_written_exactly_once() {
    let servers = bootstrap();
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let (n, tbl, group) = (900, table("backlog"), unique("g"));
    let topic = unique("pg-backlog");
    create_topics(&servers, &[(&topic, 3)]);
    produce(&servers, &topic, &text_msgs(0..n));
    let expected = expected_ids(&topic, &servers, n);
    // Small micro-batches and one-chunk queues: the source waits on the pipeline all the time.
    let p = kafka_pg_pipeline(
        dir.path(),
        &topic,
        &group,
        &url(),
        &tbl,
        "    mode: insert\n",
    );
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("window_records: 64", "window_records: 16\n  queue_depth: 1");
    std::fs::write(&p, text).unwrap();
    let w = Worker::start(&p, "w", &[]);
    let count = || db.try_count(&format!("SELECT count(*) FROM \"{tbl}\""));
    let done = wait_until(Duration::from_secs(240), || count() >= n as i64);
    assert!(done, "only {} of {n} rows:\n{}", count(), w.log_text());
    assert!(w.stop());
    let ids: Vec<String> = db
        .query(&format!("SELECT id FROM \"{tbl}\""))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let got: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(got, expected);
    assert_eq!(ids.len(), n, "{} records written twice", ids.len() - n);
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}

#[test]
fn at_least_once_waits_out_a_postgres_restart_and_loses_nothing() {
    let servers = bootstrap();
    let pg = Server::start("restart-test", free_port());
    let db = Db::connect(&pg.url());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("pg-restart");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 2)]);
    let n = 1500;
    produce(&servers, &topic, &text_msgs(0..n));
    let tbl = table("alo");
    let p = kafka_pg_pipeline(
        dir.path(),
        &topic,
        &group,
        &pg.url(),
        &tbl,
        "    retry: {initial_backoff_ms: 200, max_backoff_ms: 2000}\n",
    );
    let mut w = Worker::start(&p, "w", &[]);
    assert!(
        wait_until(Duration::from_secs(90), || db
            .try_count(&format!("SELECT count(*) FROM \"{tbl}\""))
            > 0),
        "no rows:\n{}",
        w.log_text()
    );
    drop(db);
    pg.run("stop");
    // The worker meets the outage and retries with back-off instead of exiting: wait until it
    // has logged three retries (200 ms, 400 ms, 800 ms back-off: under 2 s once it writes).
    let retried = wait_until(Duration::from_secs(60), || {
        w.log_text().matches("retrying").count() >= 3 || !w.is_running()
    });
    assert!(
        retried && w.is_running(),
        "the worker did not keep retrying while Postgres was down:\n{}",
        w.log_text()
    );
    pg.run("start");
    let db = Db::connect(&pg.url());
    let count = || db.try_count(&format!("SELECT count(DISTINCT id) FROM \"{tbl}\""));
    let ok = wait_until(Duration::from_secs(180), || count() >= n as i64);
    let log = w.log_text();
    assert!(ok, "only {} of {n} records:\n{log}", count());
    assert!(log.contains("retrying"), "no retry logged:\n{log}");
    // The retries are in the metrics.
    let addr = log
        .split("metrics and health on http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .map(str::to_string);
    let addr = addr.expect("metrics address logged");
    let (_, body) = http_get(&addr, "/metrics");
    assert!(body.contains("bertflow_sink_retries_total"), "{body}");
    assert!(w.stop());
    // Upsert by id: every record sent, each once.
    let ids: Vec<String> = db
        .query(&format!("SELECT id FROM \"{tbl}\""))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), n);
    let got: HashSet<String> = ids.into_iter().collect();
    assert_eq!(got, expected_ids(&topic, &servers, n));
}

#[test]
fn halfvec_columns_and_an_ivfflat_index_when_asked() {
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let n = 20;
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let t: Vec<Option<String>> = texts(n).into_iter().map(Some).collect();
    let input = dir.path().join("in.parquet");
    write_input(&input, &ids, &t, &vec![None; n]);
    let expected = parquet_reference(dir.path(), &input);
    let tbl = table("half");
    let p = parquet_pipeline(
        dir.path(),
        &input,
        &format!(
            "  postgres:\n    url: {}\n    table: {tbl}\n    create_table: true\n    vector_type: halfvec\n    columns: {{embedding: vec, lang: null}}\n    index: {{method: ivfflat, distance: l2, lists: 2}}\n",
            url()
        ),
    );
    assert_ok(&run_pipeline(&p, &[]));
    let ty: String = db.query(&format!(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '\"{tbl}\"'::regclass AND attname = 'vec'"
    ))[0]
        .get(0);
    assert_eq!(ty, "halfvec(384)");
    let idx: String = db.query(&format!(
        "SELECT indexdef FROM pg_indexes WHERE tablename = '{tbl}' AND indexname LIKE '%ivfflat'"
    ))[0]
        .get(0);
    assert!(
        idx.contains("ivfflat") && idx.contains("halfvec_l2_ops") && idx.contains("lists='2'"),
        "{idx}"
    );
    // The column mapped to null is not there; the vectors are the Parquet ones at half precision.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = '\"{tbl}\"'::regclass AND attname = 'lang'"
        )),
        0
    );
    let exp_ids = strings(&expected, "id");
    let exp = embeddings(&expected, "embedding");
    let rows = db.query(&format!("SELECT id, vec::vector::real[] FROM \"{tbl}\""));
    // Every record is in the table, once.
    let mut got_ids: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    got_ids.sort();
    let mut want_ids = ids.clone();
    want_ids.sort();
    assert_eq!(got_ids, want_ids);
    for r in rows {
        let id: String = r.get(0);
        let v: Vec<f32> = r.get(1);
        let i = exp_ids
            .iter()
            .position(|x| x.as_deref() == Some(&id))
            .unwrap();
        assert!(cosine(&v, &exp[i]) > 0.9999, "{id}");
        assert!(
            v.iter().zip(&exp[i]).all(|(a, b)| (a - b).abs() < 2e-3),
            "{id}"
        );
    }
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}
