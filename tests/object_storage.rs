//! Object storage against a real S3 server (SeaweedFS, scripts/s3.sh) with signed requests:
//! Parquet in and out of a bucket, prefixes, globs and shards, Arrow IPC output, multipart
//! uploads that leave nothing behind when they fail, wrong credentials and missing buckets, and
//! Kafka -> rolling files in a bucket with offsets committed only after the object is complete.
//! No timing assertions: every wait is a bounded poll for an outcome.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use bertflow::connector::storage::{Location, ObjectWriter};
use bytes::Bytes;
use common::kafka::{self as k, Worker};
use common::s3;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const SENTIMENT: &str = "bert-sentiment";

fn tasks() -> String {
    format!(
        "tasks:\n  sentiment:\n    model: {}\n",
        fixture_model(SENTIMENT)
    )
}

/// `storage_options` with the test credentials, as YAML at `indent`.
fn options_yaml(endpoint: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut s = format!("{pad}storage_options:\n");
    for (k, v) in s3::options(endpoint) {
        s.push_str(&format!("{pad}  {k}: \"{v}\"\n"));
    }
    s
}

fn ids_texts(range: std::ops::Range<usize>) -> (Vec<String>, Vec<String>) {
    let ids = range.clone().map(|i| format!("d{i:04}")).collect();
    let texts = range.map(k::words).collect();
    (ids, texts)
}

fn parquet_bytes(ids: &[String], texts: &[String]) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(ids.to_vec())) as ArrayRef),
        (
            "text",
            Arc::new(StringArray::from(texts.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

fn read_parquet_bytes(bytes: Vec<u8>) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

fn read_ipc_bytes(bytes: Vec<u8>) -> RecordBatch {
    let r = arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let schema = r.schema();
    let batches: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// Upload three input objects (20 records each) under `prefix/in/`; returns all ids.
fn upload_inputs(prefix: &str, endpoint: &str) -> Vec<String> {
    let mut all = Vec::new();
    for f in 0..3 {
        let (ids, texts) = ids_texts(f * 20..(f + 1) * 20);
        s3::put(
            &format!("{prefix}/in/part-{f}.parquet"),
            endpoint,
            parquet_bytes(&ids, &texts),
        );
        all.extend(ids);
    }
    // Not inputs: another extension, and a hidden in-progress object.
    s3::put(&format!("{prefix}/in/notes.txt"), endpoint, b"x".to_vec());
    s3::put(
        &format!("{prefix}/in/.part-9.parquet.inprogress"),
        endpoint,
        b"partial".to_vec(),
    );
    all
}

fn write_pipeline(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// Run with the test credentials in the standard AWS environment variables.
fn run_with_env(pipeline: &Path, endpoint: &str, extra: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.arg("run").arg(pipeline).arg("--no-progress").args(extra);
    for (k, v) in s3::env(endpoint) {
        c.env(k, v);
    }
    c.output().expect("run bertflow")
}

#[test]
fn a_bucket_prefix_in_and_part_files_out_equal_the_local_run() {
    let endpoint = s3::endpoint();
    let prefix = s3::prefix("roundtrip");
    let ids = upload_inputs(&prefix, &endpoint);
    let dir = tempfile::tempdir().unwrap();

    // The same inputs on local disk, for the reference run.
    let local_in = dir.path().join("in");
    std::fs::create_dir_all(&local_in).unwrap();
    for f in 0..3 {
        let bytes = s3::get(&format!("{prefix}/in/part-{f}.parquet"), &endpoint);
        std::fs::write(local_in.join(format!("part-{f}.parquet")), bytes).unwrap();
    }
    let local = write_pipeline(
        dir.path(),
        "local",
        &format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\n{}sink:\n  parquet:\n    path: {}\n",
            local_in.display(),
            tasks(),
            dir.path().join("local.parquet").display()
        ),
    );
    assert_ok(&run_pipeline(&local, &[]));
    let reference = read_parquet(&dir.path().join("local.parquet"));

    // Credentials from the environment, the endpoint too: nothing store-specific in the file.
    let remote = write_pipeline(
        dir.path(),
        "remote",
        &format!(
            "source:\n  parquet:\n    path: {prefix}/in/\n    id_column: id\n{}batching:\n  window_records: 16\nsink:\n  parquet:\n    path: {prefix}/out\n    rows_per_file: 25\n",
            tasks(),
        ),
    );
    let o = run_with_env(&remote, &endpoint, &[]);
    assert_ok(&o);
    let summary = stdout(&o);
    let parts = s3::list(&format!("{prefix}/out"), &endpoint);
    assert_eq!(
        parts,
        vec![
            format!("{prefix}/out/errors.parquet"),
            format!("{prefix}/out/part-00000.parquet"),
            format!("{prefix}/out/part-00001.parquet"),
            format!("{prefix}/out/part-00002.parquet"),
        ],
        "summary:\n{summary}"
    );
    for p in &parts {
        assert!(
            summary.contains(p.as_str()),
            "summary does not name {p}:\n{summary}"
        );
    }
    let mut got_ids = Vec::new();
    let mut got_labels = Vec::new();
    for p in &parts[1..] {
        let b = read_parquet_bytes(s3::get(p, &endpoint));
        assert_eq!(b.schema(), reference.schema(), "same schema as a local run");
        got_ids.extend(strings(&b, "id").into_iter().flatten());
        got_labels.extend(strings(&b, "sentiment_label"));
    }
    assert_eq!(got_ids, ids, "every record once, in input order");
    assert_eq!(got_labels, strings(&reference, "sentiment_label"));
    let errors = read_parquet_bytes(s3::get(&parts[0], &endpoint));
    assert_eq!(errors.num_rows(), 0);

    // A second run with fewer records removes the part files it no longer writes.
    let o = run_with_env(
        &remote,
        &endpoint,
        &["--set", "source.parquet.path=PLACEHOLDER"]
            .map(|a| a.replace("PLACEHOLDER", &format!("{prefix}/in/part-0.parquet")))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_ok(&o);
    let parts = s3::list(&format!("{prefix}/out"), &endpoint);
    assert_eq!(
        parts,
        vec![
            format!("{prefix}/out/errors.parquet"),
            format!("{prefix}/out/part-00000.parquet"),
        ],
        "stale part files removed"
    );
    // The one part left holds exactly the records of the one input file.
    let b = read_parquet_bytes(s3::get(&parts[1], &endpoint));
    let part0 = read_parquet_bytes(s3::get(&format!("{prefix}/in/part-0.parquet"), &endpoint));
    assert_eq!(strings(&b, "id"), strings(&part0, "id"));
}

#[test]
fn globs_and_shards_split_a_bucket_prefix_between_workers() {
    let endpoint = s3::endpoint();
    let prefix = s3::prefix("shards");
    let ids = upload_inputs(&prefix, &endpoint);
    let dir = tempfile::tempdir().unwrap();
    let p = write_pipeline(
        dir.path(),
        "sharded",
        &format!(
            "source:\n  parquet:\n    path: \"{prefix}/in/part-*.parquet\"\n    id_column: id\n{opts}{}sink:\n  parquet:\n    path: {prefix}/out/result.parquet\n{sopts}",
            tasks(),
            opts = options_yaml(&endpoint, 4),
            sopts = options_yaml(&endpoint, 4),
        ),
    );
    let mut seen = BTreeSet::new();
    for shard in ["0/2", "1/2"] {
        let o = run_pipeline(&p, &["--shard", shard]);
        assert_ok(&o);
        let i = &shard[..1];
        let out = format!("{prefix}/out/result.shard-{i}-of-2.parquet");
        let b = read_parquet_bytes(s3::get(&out, &endpoint));
        for id in strings(&b, "id").into_iter().flatten() {
            assert!(seen.insert(id.clone()), "{id} read by two shards");
        }
        assert!(stdout(&o).contains(&out), "{}", stdout(&o));
    }
    assert_eq!(
        seen,
        ids.into_iter().collect::<BTreeSet<_>>(),
        "every record in one shard"
    );

    // `validate --scan` reads the same objects without models.
    let mut c = bin();
    c.args(["validate"]).arg(&p).arg("--scan");
    let o = c.output().unwrap();
    assert_ok(&o);
    assert!(
        stdout(&o).contains("60 records, 0 unusable"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn arrow_ipc_output_has_the_parquet_schema_locally_and_in_a_bucket() {
    let endpoint = s3::endpoint();
    let prefix = s3::prefix("ipc");
    upload_inputs(&prefix, &endpoint);
    let dir = tempfile::tempdir().unwrap();
    let input = format!("{prefix}/in/part-1.parquet");
    let pq = dir.path().join("out.parquet");
    let ipc = dir.path().join("out.arrow");
    for (name, out, format) in [
        ("pq", pq.display().to_string(), "parquet"),
        ("ipc", ipc.display().to_string(), "arrow_ipc"),
        ("ipc-s3", format!("{prefix}/out.arrow"), "arrow_ipc"),
    ] {
        let p = write_pipeline(
            dir.path(),
            name,
            &format!(
                "source:\n  parquet:\n    path: {input}\n    id_column: id\n{opts}{}sink:\n  parquet:\n    path: {out}\n    format: {format}\n{sopts}",
                tasks(),
                opts = options_yaml(&endpoint, 4),
                sopts = options_yaml(&endpoint, 4),
            ),
        );
        assert_ok(&run_pipeline(&p, &[]));
    }
    let reference = read_parquet(&pq);
    let local = read_ipc_bytes(std::fs::read(&ipc).unwrap());
    let remote = read_ipc_bytes(s3::get(&format!("{prefix}/out.arrow"), &endpoint));
    for b in [&local, &remote] {
        assert_eq!(b.schema(), reference.schema());
        assert_eq!(strings(b, "id"), strings(&reference, "id"));
        assert_eq!(
            strings(b, "sentiment_label"),
            strings(&reference, "sentiment_label")
        );
    }
    // The error file follows the format: an Arrow IPC file of the error schema (no record of
    // these inputs fails), locally and in the bucket.
    let local_errors = read_ipc_bytes(std::fs::read(dir.path().join("out.errors.arrow")).unwrap());
    let remote_errors = read_ipc_bytes(s3::get(&format!("{prefix}/out.errors.arrow"), &endpoint));
    for e in [&local_errors, &remote_errors] {
        let schema = e.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["id", "reason", "stage", "task", "source", "written"]
        );
        assert_eq!(e.num_rows(), 0);
    }
}

#[test]
fn wrong_credentials_and_a_missing_bucket_fail_before_any_work() {
    let endpoint = s3::endpoint();
    let prefix = s3::prefix("faults");
    upload_inputs(&prefix, &endpoint);
    let dir = tempfile::tempdir().unwrap();
    let local_in = dir.path().join("in.parquet");
    let (ids, texts) = ids_texts(0..5);
    std::fs::write(&local_in, parquet_bytes(&ids, &texts)).unwrap();
    let cases = [
        // Wrong secret reading.
        (
            format!("{prefix}/in/part-0.parquet"),
            dir.path().join("o1.parquet").display().to_string(),
            "wrong-secret",
            format!("{prefix}/in/part-0.parquet"),
            "credentials",
        ),
        // Wrong secret writing.
        (
            local_in.display().to_string(),
            format!("{prefix}/out/o2.parquet"),
            "wrong-secret",
            format!("{prefix}/out/o2.parquet"),
            "credentials",
        ),
        // Missing bucket writing.
        (
            local_in.display().to_string(),
            "s3://no-such-bucket-bertflow/out.parquet".to_string(),
            s3::SECRET_KEY,
            "s3://no-such-bucket-bertflow/out.parquet".to_string(),
            "bucket",
        ),
        // Missing bucket reading.
        (
            "s3://no-such-bucket-bertflow/in/".to_string(),
            dir.path().join("o4.parquet").display().to_string(),
            s3::SECRET_KEY,
            "s3://no-such-bucket-bertflow/in".to_string(),
            "bucket",
        ),
    ];
    for (i, (input, output, secret, url, hint)) in cases.iter().enumerate() {
        let p = write_pipeline(
            dir.path(),
            &format!("f{i}"),
            &format!(
                "source:\n  parquet:\n    path: {input}\n    id_column: id\n{}sink:\n  parquet:\n    path: {output}\n",
                tasks()
            ),
        );
        let mut c = bin();
        c.arg("run").arg(&p).arg("--no-progress");
        for (k, v) in s3::env(&endpoint) {
            c.env(k, v);
        }
        c.env("AWS_SECRET_ACCESS_KEY", secret);
        c.env(
            "BERTFLOW__SOURCE__PARQUET__STORAGE_OPTIONS__MAX_RETRIES",
            "1",
        );
        // Model loading logs each model at info level: the line must not appear.
        c.env("RUST_LOG", "warn,bertflow=info");
        let o = c.output().unwrap();
        let err = stderr(&o);
        assert!(!o.status.success(), "case {i} succeeded:\n{err}");
        assert!(
            err.contains(url.as_str()),
            "case {i}: no URL {url} in:\n{err}"
        );
        assert!(err.contains(hint), "case {i}: no '{hint}' in:\n{err}");
        assert!(
            !err.contains(s3::SECRET_KEY),
            "case {i}: secret in the message"
        );
        assert!(!err.contains("panicked"), "case {i}:\n{err}");
        assert!(
            !err.contains("model loaded"),
            "case {i}: the error came after loading models:\n{err}"
        );
    }
    assert!(
        s3::list(&format!("{prefix}/out"), &endpoint).is_empty(),
        "nothing written"
    );
    // The control: a run that gets past its checks logs each model it loads, so the absence
    // of that line above means the faults stopped the runs before any model was loaded.
    let p = write_pipeline(
        dir.path(),
        "control",
        &format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\n{}sink:\n  parquet:\n    path: {}\n",
            local_in.display(),
            tasks(),
            dir.path().join("control.parquet").display()
        ),
    );
    let o = bin()
        .arg("run")
        .arg(&p)
        .arg("--no-progress")
        .env("RUST_LOG", "warn,bertflow=info")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(stderr(&o).contains("model loaded"), "{}", stderr(&o));
}

/// Multipart upload: an object of several parts appears only when complete; an aborted upload,
/// and one whose store stopped in the middle, leave no object and no pending upload.
#[test]
fn multipart_uploads_appear_complete_or_not_at_all() {
    let server = s3::Server::start("objstore-multipart");
    let endpoint = server.endpoint();
    let options = s3::options(&endpoint);
    let object =
        |key: &str| match Location::parse(&format!("s3://bertflow/{key}"), &options).unwrap() {
            Location::Object(o) => o,
            Location::Local(_) => unreachable!(),
        };
    let data: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();

    let mut w = ObjectWriter::new(object("mp/complete.bin"));
    for chunk in data.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    assert!(
        s3::list("s3://bertflow/mp", &endpoint).is_empty(),
        "visible before complete"
    );
    assert_eq!(s3::pending_uploads(&endpoint, "mp/complete.bin"), 1);
    w.finish().unwrap();
    assert_eq!(s3::get("s3://bertflow/mp/complete.bin", &endpoint), data);
    assert_eq!(s3::pending_uploads(&endpoint, "mp/"), 0);

    let mut w = ObjectWriter::new(object("mp/aborted.bin"));
    w.write_all(&data).unwrap();
    w.abort();
    drop(w);
    assert_eq!(s3::list("s3://bertflow/mp", &endpoint).len(), 1);
    assert_eq!(s3::pending_uploads(&endpoint, "mp/aborted.bin"), 0);

    // The store stops in the middle: retries, then a clear failure; nothing appears.
    let mut w = ObjectWriter::new(object("mp/interrupted.bin"));
    w.write_all(&data[..10 << 20]).unwrap();
    server.run("stop");
    let mut failed = w.write_all(&data[10 << 20..]).err().map(|e| e.to_string());
    if failed.is_none() {
        failed = w.finish().err().map(|e| e.to_string());
    } else {
        w.abort();
    }
    let msg = failed.expect("writing to a stopped store failed");
    assert!(msg.contains("s3://bertflow/mp/interrupted.bin"), "{msg}");
    server.run("start");
    assert_eq!(
        s3::list("s3://bertflow/mp", &endpoint),
        vec!["s3://bertflow/mp/complete.bin".to_string()]
    );
}

/// Kafka -> rolling Parquet in a bucket: offsets are committed only once the object holding
/// their records is complete. The store stops mid-stream: the worker retries, then fails
/// clearly with nothing committed past the objects; a restarted worker completes the output.
#[test]
fn kafka_to_rolling_objects_commits_only_complete_objects() {
    let servers = k::bootstrap();
    let server = s3::Server::start("objstore-kafka");
    let endpoint = server.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let topic = k::unique("s3roll");
    let group = k::unique("g");
    k::create_topics(&servers, &[(&topic, 2)]);
    k::produce(&servers, &topic, &k::text_msgs(0..100));
    let out = "s3://bertflow/stream/out";
    let p = write_pipeline(
        dir.path(),
        "w",
        &format!(
            "{}{}batching:\n  window_records: 32\nmetrics:\n  listen: 127.0.0.1:0\nsink:\n  passthrough: [key, partition, offset]\n  parquet:\n    path: {out}\n    roll_interval_ms: 500\n{}",
            k::kafka_source_yaml(&servers, &topic, &group),
            tasks(),
            options_yaml(&endpoint, 4),
        ),
    );
    let committed = || -> usize {
        k::committed_offsets(&servers, &group, &topic)
            .values()
            .map(|&o| o.max(0) as usize)
            .sum()
    };
    let stored_ids = || -> Vec<String> {
        s3::list(out, &endpoint)
            .iter()
            .filter(|u| !u.contains("/errors/"))
            .flat_map(|u| {
                strings(&read_parquet_bytes(s3::get(u, &endpoint)), "id")
                    .into_iter()
                    .flatten()
            })
            .collect()
    };
    let w = Worker::start(&p, "w", &[]);
    assert!(
        k::wait_until(Duration::from_secs(90), || committed() == 100),
        "first 100 not committed:\n{}",
        w.log_text()
    );
    let sent: Vec<String> = {
        let mut v: Vec<String> = k::expected_ids(&topic, &servers, 100).into_iter().collect();
        v.sort();
        v
    };
    let mut first = stored_ids();
    first.sort();
    assert_eq!(first, sent, "the first 100 records, each once");
    for u in s3::list(out, &endpoint) {
        let name = u.rsplit('/').next().unwrap();
        assert!(
            name.starts_with(&topic) && !name.starts_with('.'),
            "unexpected object {u}"
        );
    }

    // The store stops; more records arrive: nothing more is committed.
    server.run("stop");
    k::produce(&servers, &topic, &k::text_msgs(100..160));
    let mut w = w;
    let failed = k::wait_until(Duration::from_secs(120), || !w.is_running());
    assert!(
        failed,
        "worker still running after its retries:\n{}",
        w.log_text()
    );
    let log = w.log_text();
    assert!(log.contains("s3://bertflow/stream/out"), "{log}");
    assert_eq!(committed(), 100, "committed past the complete objects");
    server.run("start");
    assert!(
        s3::list(out, &endpoint)
            .iter()
            .all(|u| !u.contains(".inprogress")),
        "a partial object was left"
    );

    // A new worker reads from the committed offsets and completes the output.
    let w = Worker::start(&p, "w2", &[]);
    assert!(
        k::wait_until(Duration::from_secs(90), || committed() == 160),
        "not all committed after the restart:\n{}",
        w.log_text()
    );
    assert!(w.stop());
    let ids: BTreeSet<String> = stored_ids().into_iter().collect();
    let all: BTreeSet<String> = k::expected_ids(&topic, &servers, 160).into_iter().collect();
    assert_eq!(ids, all, "every record in a complete object");
    k::delete_topics(&servers, &[&topic]);
}
