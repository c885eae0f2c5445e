//! Streaming against a real Apache Kafka broker (scripts/kafka.sh): consumer groups, crashes,
//! exactly-once, broker outages and poison records. No timing assertions: every wait is a
//! bounded poll for an outcome.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kafka::*;
use common::*;

const SENTIMENT: &str = "bert-sentiment";
const NER: &str = "bert-ner";

/// A pipeline: Kafka topic -> sentiment + NER (tiny fixture models) -> `sink_yaml`.
fn pipeline(
    dir: &Path,
    name: &str,
    servers: &str,
    topic: &str,
    group: &str,
    sink_yaml: &str,
) -> PathBuf {
    let tasks = format!(
        "  sentiment:\n    model: {}\n  ner:\n    model: {}\n",
        fixture_model(SENTIMENT),
        fixture_model(NER)
    );
    pipeline_with(dir, name, servers, topic, group, &tasks, sink_yaml)
}

/// A pipeline with the real embedding model: slow enough on CPU that a worker can be killed in
/// the middle of a stream.
fn embed_pipeline_kafka(
    dir: &Path,
    servers: &str,
    topic: &str,
    group: &str,
    sink_yaml: &str,
) -> PathBuf {
    let tasks = format!(
        "  embed:\n    model: {}\n",
        model("all-MiniLM-L6-v2").display()
    );
    pipeline_with(dir, "w", servers, topic, group, &tasks, sink_yaml)
}

fn pipeline_with(
    dir: &Path,
    name: &str,
    servers: &str,
    topic: &str,
    group: &str,
    tasks: &str,
    sink_yaml: &str,
) -> PathBuf {
    let text = format!(
        "{source}tasks:
{tasks}batching:
  window_records: 64
metrics:
  listen: 127.0.0.1:0
{sink_yaml}",
        source = kafka_source_yaml(servers, topic, group)
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn parquet_sink(out: &Path) -> String {
    format!(
        "sink:\n  passthrough: [key, partition, offset]\n  parquet:\n    path: {}\n    roll_interval_ms: 300\n",
        out.display()
    )
}

/// A topic holding `n` text records and a sentiment + NER pipeline from it into a Parquet
/// directory.
struct Case {
    dir: tempfile::TempDir,
    topic: String,
    out: PathBuf,
    pipeline: PathBuf,
}

fn parquet_case(servers: &str, prefix: &str, partitions: i32, msgs: &[Msg]) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique(prefix);
    let group = unique("g");
    create_topics(servers, &[(&topic, partitions)]);
    produce(servers, &topic, msgs);
    let out = dir.path().join("out");
    let pipeline = pipeline(
        dir.path(),
        "w",
        servers,
        &topic,
        &group,
        &parquet_sink(&out),
    );
    Case {
        dir,
        topic,
        out,
        pipeline,
    }
}

/// The consumer group of a pipeline file.
fn group_of(pipeline: &Path) -> String {
    let text = std::fs::read_to_string(pipeline).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("group_id: "))
        .expect("group_id in the pipeline")
        .to_string()
}

/// Records committed by `group` on `topic` (the sum of its committed offsets).
fn committed(servers: &str, group: &str, topic: &str) -> usize {
    committed_offsets(servers, group, topic)
        .values()
        .sum::<i64>() as usize
}

fn counts(ids: &[String]) -> HashMap<&str, usize> {
    let mut m = HashMap::new();
    for i in ids {
        *m.entry(i.as_str()).or_insert(0) += 1;
    }
    m
}

fn assert_all_present(expected: &HashSet<String>, got: &[String], what: &str) -> usize {
    let c = counts(got);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|i| !c.contains_key(i.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} records lost, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
    let unexpected: Vec<&&str> = c.keys().filter(|i| !expected.contains(**i)).collect();
    assert!(
        unexpected.is_empty(),
        "{what}: ids not in the input: {unexpected:?}"
    );
    c.values().map(|&n| n - 1).sum()
}

#[test]
fn group_members_split_partitions_and_survive_join_and_leave() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("reviews");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 4)]);
    produce(&servers, &topic, &text_msgs(0..400));

    let outs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("out{i}"))).collect();
    let pipes: Vec<PathBuf> = (0..3)
        .map(|i| {
            pipeline(
                dir.path(),
                &format!("w{i}"),
                &servers,
                &topic,
                &group,
                &parquet_sink(&outs[i]),
            )
        })
        .collect();
    let a = Worker::start(&pipes[0], "a", &[]);
    let b = Worker::start(&pipes[1], "b", &[]);
    let all = |n: usize| {
        move |outs: &[PathBuf]| outs.iter().map(|o| output_ids(o).len()).sum::<usize>() >= n
    };
    assert!(
        wait_until(Duration::from_secs(120), || all(400)(&outs)),
        "two workers did not process the first 400 records:\n{}\n{}",
        a.log_text(),
        b.log_text()
    );
    // A third member joins, then leaves; more records arrive meanwhile.
    // Offsets are committed while the workers run (once the rolled files are durable).
    assert!(
        wait_until(Duration::from_secs(30), || committed(
            &servers, &group, &topic
        ) == 400),
        "the first 400 records were not committed: {}",
        committed(&servers, &group, &topic)
    );
    let c = Worker::start(&pipes[2], "c", &[]);
    produce(&servers, &topic, &text_msgs(400..600));
    assert!(
        wait_until(Duration::from_secs(120), || c
            .log_text()
            .lines()
            .any(|l| l.contains("partitions assigned") && l.contains("[\""))),
        "the third member got no partitions:\n{}\n-- first member:\n{}",
        c.log_text(),
        a.log_text()
    );
    produce(&servers, &topic, &text_msgs(600..700));
    // Records of its partitions arrive after it joined: it writes some of them.
    assert!(
        wait_until(Duration::from_secs(120), || !output_files(&outs[2])
            .is_empty()),
        "the third member wrote nothing:\n{}",
        c.log_text()
    );
    let lc = c.log_text();
    assert!(c.stop(), "third worker did not stop cleanly:\n{lc}");
    produce(&servers, &topic, &text_msgs(700..800));
    let expected = expected_ids(&topic, &servers, 800);
    assert_eq!(expected.len(), 800);
    let ok = wait_until(Duration::from_secs(120), || {
        let ids: HashSet<String> = outs.iter().flat_map(|o| output_ids(o)).collect();
        expected.iter().all(|i| ids.contains(i))
    });
    let (la, lb) = (a.log_text(), b.log_text());
    assert!(ok, "not every record was written:\n{la}\n{lb}");
    assert!(a.stop() && b.stop(), "workers did not stop cleanly");

    let got: Vec<String> = outs.iter().flat_map(|o| output_ids(o)).collect();
    let dups = assert_all_present(&expected, &got, "join/leave");
    // Only records that arrived after the first 400 were committed can be written twice.
    assert!(
        dups <= 400,
        "{dups} duplicates: rebalances re-read committed work"
    );
    println!(
        "join/leave: {} records, {} duplicates",
        expected.len(),
        dups
    );
    if std::env::var("BERTFLOW_TEST_LOGS").is_ok() {
        println!("{la}\n----\n{lb}");
    }
    // Both original members owned partitions: each wrote files for some partition.
    for o in &outs[..2] {
        assert!(!output_files(o).is_empty(), "{} wrote nothing", o.display());
    }
    // File names carry topic, partition and offset range; no temporary file is left.
    for o in &outs {
        for f in output_files(o) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(&topic), "{name}");
        }
        let leftovers = std::fs::read_dir(o)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "temporary files left in {}", o.display());
    }
    // Passthrough columns and results are in the output.
    let f = &output_files(&outs[0])[0];
    let batch = read_parquet(f);
    for col in [
        "id",
        "key",
        "partition",
        "offset",
        "sentiment_label",
        "entities",
    ] {
        assert!(batch.column_by_name(col).is_some(), "missing column {col}");
    }
    delete_topics(&servers, &[&topic]);
}

#[test]
fn kill_9_loses_nothing_and_duplicates_only_the_uncommitted_tail() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("crash");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 2)]);
    let n = 3000;
    produce(&servers, &topic, &text_msgs(0..n));
    let out = dir.path().join("out");
    let p = embed_pipeline_kafka(dir.path(), &servers, &topic, &group, &parquet_sink(&out));
    let mut crashes = 0;
    // Records that could be written twice: at each crash, those on disk past the committed
    // offsets (the next run reads them again).
    let mut uncommitted_at_crashes = 0;
    let mut committed_at_crash = Vec::new();
    // Crash as soon as a worker has made progress, while records are still unprocessed.
    while crashes < 3 && output_ids(&out).len() < n {
        let before = output_ids(&out).len();
        let mut w = Worker::start(&p, "w", &[]);
        wait_until(Duration::from_secs(60), || {
            output_ids(&out).len() > before || !w.is_running()
        });
        // Let a commit follow the first durable output, then crash.
        let c0 = committed(&servers, &group, &topic);
        wait_until(Duration::from_secs(5), || {
            committed(&servers, &group, &topic) > c0 || !w.is_running()
        });
        w.crash();
        crashes += 1;
        let on_disk: HashSet<String> = output_ids(&out).into_iter().collect();
        let c = committed(&servers, &group, &topic);
        uncommitted_at_crashes += on_disk.len().saturating_sub(c);
        committed_at_crash.push(c);
        println!(
            "crash {crashes}: {} records on disk, {c} committed",
            on_disk.len()
        );
    }
    assert!(
        crashes >= 2,
        "the workers finished before they could be crashed twice"
    );
    // Offsets were committed while the workers ran, not only at their end.
    assert!(
        committed_at_crash.windows(2).all(|w| w[1] >= w[0]) && committed_at_crash[crashes - 1] > 0,
        "committed offsets did not advance between crashes: {committed_at_crash:?}"
    );
    let expected = expected_ids(&topic, &servers, n);
    let w = Worker::start(&p, "w", &[]);
    let ok = wait_until(Duration::from_secs(180), || {
        let ids: HashSet<String> = output_ids(&out).into_iter().collect();
        expected.iter().all(|i| ids.contains(i))
    });
    let log = w.log_text();
    assert!(ok, "records lost after {crashes} crashes:\n{log}");
    assert!(w.stop());
    let got = output_ids(&out);
    let dups = assert_all_present(&expected, &got, "kill -9");
    assert!(
        dups <= uncommitted_at_crashes,
        "{dups} duplicates, more than the {uncommitted_at_crashes} records uncommitted at the crashes"
    );
    println!("kill -9 x{crashes}: {n} records, {dups} duplicates (bound {uncommitted_at_crashes})");
    delete_topics(&servers, &[&topic]);
}

#[test]
fn exactly_once_to_kafka_survives_kill_9() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("eos-in");
    let out_topic = unique("eos-out");
    let dlq = unique("eos-dlq");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 2), (&out_topic, 2), (&dlq, 1)]);
    let n = 4000;
    let mut msgs = text_msgs(0..n);
    // Two poison records: they must reach the dead-letter topic exactly once too.
    msgs[100].value = Some(vec![0xff, 0xfe, 0x41]);
    msgs[1500].value = None;
    produce(&servers, &topic, &msgs);
    let sink = format!(
        "sink:\n  kafka:\n    topic: {out_topic}\n    exactly_once: true\n    transactional_id: {group}-worker-0\n  errors:\n    topic: {dlq}\n"
    );
    let p = embed_pipeline_kafka(dir.path(), &servers, &topic, &group, &sink);
    let mut crashes = 0;
    // Messages in the output log, aborted ones included, counting at most `limit`.
    let written = |limit: usize| {
        read_topic(
            &servers,
            &out_topic,
            false,
            limit,
            Duration::from_millis(800),
        )
        .len()
    };
    let mut seen = 0;
    while crashes < 3 && seen < n {
        let mut w = Worker::start(&p, "w", &[]);
        wait_until(Duration::from_secs(60), || {
            written(seen + 1) > seen || !w.is_running()
        });
        w.crash();
        crashes += 1;
        seen = written(usize::MAX);
        println!("crash {crashes}: {seen} messages in the output log (aborted ones included)");
    }
    assert!(
        crashes >= 2,
        "the workers finished before they could be crashed twice"
    );
    let w = Worker::start(&p, "w", &[]);
    let ok = wait_until(Duration::from_secs(180), || {
        read_topic(&servers, &out_topic, true, n - 2, Duration::from_secs(2)).len() >= n - 2
    });
    let log = w.log_text();
    assert!(ok, "exactly-once output incomplete:\n{log}");
    // Stopped first, so that no further (wrong) output can appear after the read.
    assert!(w.stop(), "worker did not stop cleanly:\n{}", log);
    let got = read_topic_to_end(&servers, &out_topic, true, Duration::from_secs(60));
    let ids: Vec<String> = got
        .iter()
        .map(|g| g.json()["id"].as_str().expect("id").to_string())
        .collect();
    let mut expected = expected_ids(&topic, &servers, n);
    let dead = read_topic_to_end(&servers, &dlq, true, Duration::from_secs(60));
    let dead_ids: Vec<String> = dead
        .iter()
        .map(|g| {
            format!(
                "{}/{}/{}",
                g.header("bertflow.source.topic").unwrap(),
                g.header("bertflow.source.partition").unwrap(),
                g.header("bertflow.source.offset").unwrap()
            )
        })
        .collect();
    assert_eq!(dead_ids.len(), 2, "dead letters: {dead_ids:?}");
    for d in &dead_ids {
        expected.remove(d);
    }
    let dups = assert_all_present(&expected, &ids, "exactly-once");
    assert_eq!(dups, 0, "read_committed consumer saw duplicates");
    // Output messages are keyed by the input key and carry provenance headers.
    let g = &got[0];
    let src_off: i64 = g.header("bertflow.source.offset").unwrap().parse().unwrap();
    assert!(src_off >= 0);
    assert!(g.key.as_deref().is_some_and(|k| k.starts_with(b"k")));
    assert_eq!(
        g.json()["embedding"].as_array().map(|a| a.len()),
        Some(384),
        "{}",
        g.json()
    );
    delete_topics(&servers, &[&topic, &out_topic, &dlq]);
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_and_good_ones_flow() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("poison");
    let dlq = unique("poison-dlq");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 1), (&dlq, 1)]);
    let good = |i: usize| -> Msg {
        let mut m = Msg::text(
            &format!("k{i}"),
            &serde_json::json!({"doc": {"id": format!("d{i}"), "body": words(i)}}).to_string(),
        );
        m.headers
            .push(("trace".into(), format!("t{i}").into_bytes()));
        m
    };
    let mut msgs: Vec<Msg> = Vec::new();
    let mut bad: BTreeMap<String, &str> = BTreeMap::new();
    for i in 0..10 {
        msgs.push(good(i));
    }
    let mut poison =
        |key: &str, value: Option<Vec<u8>>, reason: &'static str, msgs: &mut Vec<Msg>| {
            msgs.push(Msg {
                partition: None,
                key: Some(key.as_bytes().to_vec()),
                value,
                headers: vec![("trace".into(), b"poison".to_vec())],
            });
            bad.insert(key.to_string(), reason);
        };
    poison(
        "utf8",
        Some(vec![b'{', 0xc3, 0x28, b'}']),
        "UTF-8",
        &mut msgs,
    );
    poison(
        "json",
        Some(b"{not json".to_vec()),
        "not valid JSON",
        &mut msgs,
    );
    poison(
        "missing",
        Some(br#"{"doc": {"id": "x"}}"#.to_vec()),
        "missing",
        &mut msgs,
    );
    poison(
        "wrongtype",
        Some(br#"{"doc": {"id": "y", "body": 42}}"#.to_vec()),
        "a number",
        &mut msgs,
    );
    poison("null", None, "no value", &mut msgs);
    let big =
        serde_json::json!({"doc": {"id": "big", "body": "word ".repeat(1_000_000)}}).to_string();
    poison("big", Some(big.into_bytes()), "max_value_bytes", &mut msgs);
    for i in 10..20 {
        msgs.push(good(i));
    }
    produce(&servers, &topic, &msgs);

    let out = dir.path().join("out");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:
  kafka:
    bootstrap_servers: {servers}
    topics: ['^{topic}$']
    group_id: {group}
    format: json
    json: {{id: doc.id, text: /doc/body}}
    max_wait_ms: 200
tasks:
  sentiment: {{model: {m}}}
metrics: {{listen: '127.0.0.1:0'}}
sink:
  passthrough: [headers, key]
  parquet: {{path: {out}, roll_interval_ms: 300}}
  errors: {{topic: {dlq}}}
",
            m = fixture_model(SENTIMENT),
            out = out.display()
        ),
    )
    .unwrap();
    let w = Worker::start(&p, "w", &[]);
    let ok = wait_until(Duration::from_secs(90), || output_ids(&out).len() >= 20);
    assert!(ok, "good records not written:\n{}", w.log_text());
    let dead = read_topic(&servers, &dlq, false, bad.len(), Duration::from_secs(20));
    assert!(w.stop());
    let mut ids = output_ids(&out);
    ids.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
    want.sort();
    assert_eq!(
        ids, want,
        "good records around the poison ones are all processed"
    );
    let mut dead_keys: Vec<String> = dead
        .iter()
        .map(|d| String::from_utf8(d.key.clone().unwrap()).unwrap())
        .collect();
    dead_keys.sort();
    let want_dead: Vec<String> = bad.keys().cloned().collect();
    assert_eq!(dead_keys, want_dead, "one dead letter per poison record");
    for d in &dead {
        let key = String::from_utf8(d.key.clone().unwrap()).unwrap();
        let reason = d.header("bertflow.error.reason").unwrap();
        assert!(reason.contains(bad[&key]), "{key}: {reason}");
        assert_eq!(d.header("bertflow.error.stage").as_deref(), Some("source"));
        assert_eq!(
            d.header("trace").as_deref(),
            Some("poison"),
            "original headers kept"
        );
        assert!(d.header("bertflow.source.offset").is_some());
        let original = msgs
            .iter()
            .find(|m| m.key.as_deref() == Some(key.as_bytes()))
            .unwrap();
        match (&original.value, &d.value) {
            (Some(o), Some(v)) if o.len() <= v.len() => assert_eq!(o, v, "original bytes kept"),
            (Some(o), Some(v)) => {
                assert_eq!(
                    &o[..v.len()],
                    v.as_slice(),
                    "oversized value cut, prefix kept"
                );
                assert_eq!(
                    d.header("bertflow.error.value_bytes"),
                    Some(o.len().to_string())
                );
            }
            (None, v) => assert!(v.as_deref().unwrap_or_default().is_empty()),
            (Some(_), None) => panic!("{key}: dead letter lost the value"),
        }
    }
    // Headers and key passed through to the output.
    let batch = read_parquet(&output_files(&out)[0]);
    assert!(batch.column_by_name("headers").is_some() && batch.column_by_name("key").is_some());
    delete_topics(&servers, &[&topic, &dlq]);
}

#[test]
fn broker_outage_of_30_seconds_loses_nothing() {
    let broker = Broker::start(&unique("outage").replace('-', "_"), free_port());
    let servers = broker.servers();
    let Case {
        dir: _dir,
        topic,
        out,
        pipeline: p,
    } = parquet_case(&servers, "outage", 2, &text_msgs(0..300));
    let w = Worker::start(&p, "w", &[]);
    assert!(
        wait_until(Duration::from_secs(90), || output_ids(&out).len() >= 300),
        "first records not processed:\n{}",
        w.log_text()
    );
    let group = group_of(&p);
    // What was written but not committed when the broker went away may be written again.
    let uncommitted = 300 - committed(&servers, &group, &topic).min(300);
    broker.run("stop");
    // The fault itself: the broker stays away for the 30 s the test is named after (longer
    // than the consumer's 6 s session timeout, so the group is lost and joined again).
    std::thread::sleep(Duration::from_secs(30));
    let mut w = w;
    assert!(
        w.is_running(),
        "the worker exited during the outage:\n{}",
        w.log_text()
    );
    broker.run("start");
    produce(&servers, &topic, &text_msgs(300..600));
    let expected = expected_ids(&topic, &servers, 600);
    let ok = wait_until(Duration::from_secs(120), || {
        let ids: HashSet<String> = output_ids(&out).into_iter().collect();
        expected.iter().all(|i| ids.contains(i))
    });
    let log = w.log_text();
    assert!(ok, "records lost across the outage:\n{log}");
    assert!(
        w.stop(),
        "worker did not stop cleanly after the outage:\n{log}"
    );
    let dups = assert_all_present(&expected, &output_ids(&out), "outage");
    println!("broker outage: 600 records, {dups} duplicates (bound {uncommitted})");
    assert!(
        dups <= uncommitted,
        "{dups} duplicates, more than the {uncommitted} records uncommitted at the outage"
    );
}

#[test]
fn graceful_shutdown_commits_everything_written() {
    let servers = bootstrap();
    let Case {
        dir: _dir,
        topic,
        out,
        pipeline: p,
    } = parquet_case(&servers, "shutdown", 2, &text_msgs(0..500));
    let group = group_of(&p);
    let w = Worker::start(&p, "w", &[]);
    assert!(
        wait_until(Duration::from_secs(60), || !output_ids(&out).is_empty()),
        "nothing written:\n{}",
        w.log_text()
    );
    assert!(w.stop(), "SIGTERM did not stop the worker cleanly");
    let first = output_ids(&out).len();
    // Everything it wrote was committed.
    let committed: i64 = committed_offsets(&servers, &group, &topic).values().sum();
    assert_eq!(
        committed as usize, first,
        "written but not committed at a clean stop"
    );
    // A restart reads only what it had not written.
    let w = Worker::start(&p, "w2", &[]);
    assert!(wait_until(Duration::from_secs(90), || output_ids(&out)
        .len()
        >= 500));
    assert!(
        wait_until(Duration::from_secs(30), || committed_offsets(
            &servers, &group, &topic
        )
        .values()
        .sum::<i64>()
            == 500),
        "the second run did not commit everything"
    );
    assert!(w.stop());
    let got = output_ids(&out);
    let expected = expected_ids(&topic, &servers, 500);
    let dups = assert_all_present(&expected, &got, "shutdown");
    assert_eq!(
        dups, 0,
        "a clean stop after {first} records left an uncommitted tail"
    );
    delete_topics(&servers, &[&topic]);
}

#[test]
fn metrics_health_and_readiness_of_a_streaming_worker() {
    let servers = bootstrap();
    let mut msgs = text_msgs(0..50);
    msgs[7].value = Some(vec![0xff]);
    let Case {
        dir: _dir,
        topic,
        out,
        pipeline: p,
    } = parquet_case(&servers, "metrics", 2, &msgs);
    let w = Worker::start(&p, "w", &["--set", "metrics.listen=127.0.0.1:0"]);
    // The bound address is logged.
    let mut addr = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let log = w.log_text();
            match log.split("metrics and health on http://").nth(1) {
                Some(rest) => {
                    addr = rest.split('/').next().unwrap().to_string();
                    true
                }
                None => false,
            }
        }),
        "no metrics address logged:\n{}",
        w.log_text()
    );
    assert_eq!(http_get(&addr, "/health").0, 200);
    assert!(
        wait_until(Duration::from_secs(60), || http_get(&addr, "/ready").0
            == 200),
        "never ready"
    );
    assert!(wait_until(Duration::from_secs(60), || output_ids(&out)
        .len()
        >= 49));
    let want = [
        "bertflow_records_in_total{source=\"kafka\"} 50",
        "bertflow_records_out_total 49",
        "bertflow_records_errored_total{stage=\"source\",task=\"none\"} 1",
        "bertflow_batch_size_bucket",
        "bertflow_batch_tokens_bucket",
        "bertflow_padding_ratio{task=\"sentiment\"}",
        "bertflow_stage_seconds_bucket{stage=\"tokenize\"",
        "bertflow_model_seconds_bucket{task=\"ner\"",
        "bertflow_queue_depth{queue=\"tokenize\"}",
        "bertflow_execution_provider{task=\"sentiment\",provider=\"cpu\"} 1",
        "bertflow_kafka_assigned_partitions 2",
        "bertflow_kafka_committed_offset{topic=",
        "bertflow_kafka_consumer_lag{topic=",
    ];
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        body = http_get(&addr, "/metrics").1;
        want.iter().all(|w| body.contains(w))
    });
    let missing: Vec<&&str> = want.iter().filter(|w| !body.contains(**w)).collect();
    assert!(ok, "missing metrics {missing:?} in:\n{body}");
    assert_eq!(http_get(&addr, "/nope").0, 404);
    assert!(w.stop());
    delete_topics(&servers, &[&topic]);
}

#[test]
fn bad_input_corpus_through_kafka_reconciles() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("corpus");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 1)]);
    let mut corpus = bad_input_corpus();
    corpus.push(Some(one_megabyte_text()));
    let mut msgs: Vec<Msg> = corpus
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let value = match t {
                Some(t) => serde_json::json!({"id": format!("c{i}"), "text": t}).to_string(),
                None => serde_json::json!({"id": format!("c{i}"), "text": null}).to_string(),
            };
            Msg::text(&format!("c{i}"), &value)
        })
        .collect();
    // JSON with wrong types and broken encodings.
    for (k, v) in [
        ("w1", br#"{"id": "w1", "text": 12}"#.to_vec()),
        ("w2", br#"{"id": ["w2"], "text": "x"}"#.to_vec()),
        ("w3", br#"["not", "an", "object"]"#.to_vec()),
        ("w4", vec![b'"', 0xf0, 0x28, 0x8c, 0x28, b'"']),
        ("w5", Vec::new()),
    ] {
        msgs.push(Msg {
            partition: None,
            key: Some(k.as_bytes().to_vec()),
            value: Some(v),
            headers: Vec::new(),
        });
    }
    produce(&servers, &topic, &msgs);
    let out = dir.path().join("out");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  kafka: {{bootstrap_servers: {servers}, topics: [{topic}], group_id: {group}, format: json, json: {{id: id}}, max_wait_ms: 200, max_value_bytes: 2000000}}\ntasks:\n  embed: {{model: {}}}\n  sentiment: {{model: {}}}\nsink:\n  parquet: {{path: {}, roll_interval_ms: 300}}\nmetrics: {{listen: '127.0.0.1:0'}}\n",
            model("all-MiniLM-L6-v2").display(),
            fixture_model(SENTIMENT),
            out.display()
        ),
    )
    .unwrap();
    let w = Worker::start(&p, "w", &[]);
    let errors_dir = out.join("errors");
    let n = msgs.len();
    let ok = wait_until(Duration::from_secs(120), || {
        output_ids(&out).len() + output_ids(&errors_dir).len() >= n
    });
    assert!(ok, "records missing:\n{}", w.log_text());
    assert!(w.stop());
    let good = output_ids(&out);
    let bad = output_ids(&errors_dir);
    assert_eq!(
        good.len() + bad.len(),
        n,
        "records in = written + errors: {good:?} {bad:?}"
    );
    // The null text and the five malformed values fail; the odd texts (and the 1 MB one,
    // truncated) are processed. Ids compared as sets: nothing twice, nothing in both.
    let good_set: HashSet<String> = good.iter().cloned().collect();
    let bad_set: HashSet<String> = bad.iter().cloned().collect();
    let want_good: HashSet<String> = (0..=bad_input_corpus().len())
        .filter(|&i| i != 1)
        .map(|i| format!("c{i}"))
        .collect();
    assert_eq!(good_set, want_good, "written records");
    assert_eq!(
        good_set.len(),
        good.len(),
        "a record written twice: {good:?}"
    );
    assert_eq!(bad_set.len(), 6, "{bad:?}");
    assert!(bad_set.contains("c1") && bad_set.contains("w1"), "{bad:?}");
    assert!(good_set.is_disjoint(&bad_set));
    delete_topics(&servers, &[&topic]);
}

#[test]
fn kafka_sink_in_arrow_format_writes_one_ipc_stream_per_micro_batch() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("arrow-in");
    let out_topic = unique("arrow-out");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 1), (&out_topic, 1)]);
    let mut msgs = text_msgs(0..101);
    // Without a dead-letter topic a failed record is not kept, but it is logged.
    msgs[50].value = Some(vec![0xff]);
    produce(&servers, &topic, &msgs);
    let sink = format!("sink:\n  kafka: {{topic: {out_topic}, format: arrow}}\n");
    let p = pipeline(dir.path(), "w", &servers, &topic, &group, &sink);
    let w = Worker::start(&p, "w", &[]);
    let mut rows = 0;
    let ok = wait_until(Duration::from_secs(60), || {
        rows = read_topic(
            &servers,
            &out_topic,
            false,
            usize::MAX,
            Duration::from_secs(1),
        )
        .iter()
        .map(|g| g.header("bertflow.rows").unwrap().parse::<usize>().unwrap())
        .sum();
        rows >= 100
    });
    assert!(ok, "{rows} rows:\n{}", w.log_text());
    let log = w.log_text();
    assert!(w.stop());
    assert!(
        log.contains("record failed and is not kept") && log.contains(&format!("{topic}/0/50")),
        "{log}"
    );
    let got = read_topic(
        &servers,
        &out_topic,
        false,
        usize::MAX,
        Duration::from_secs(2),
    );
    let mut ids = Vec::new();
    for g in &got {
        assert_eq!(
            g.header("bertflow.format").as_deref(),
            Some("arrow-ipc-stream")
        );
        let reader = arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(g.value.clone().unwrap()),
            None,
        )
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            assert!(b.column_by_name("sentiment_label").is_some());
            ids.extend(strings(&b, "id").into_iter().flatten());
        }
    }
    let mut expected = expected_ids(&topic, &servers, 101);
    expected.remove(&format!("{topic}/0/50"));
    let dups = assert_all_present(&expected, &ids, "arrow");
    assert_eq!(dups, 0);
    delete_topics(&servers, &[&topic, &out_topic]);
}

#[test]
fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("fence-in");
    let out_topic = unique("fence-out");
    let dlq = unique("fence-dlq");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 2), (&out_topic, 2), (&dlq, 1)]);
    produce(&servers, &topic, &text_msgs(0..200));
    let sink = format!(
        "sink:\n  kafka:\n    topic: {out_topic}\n    exactly_once: true\n    transactional_id: {group}-same\n  errors:\n    topic: {dlq}\n"
    );
    let p = pipeline(dir.path(), "w", &servers, &topic, &group, &sink);
    let mut zombie = Worker::start(&p, "zombie", &[]);
    let committed =
        |n: usize| read_topic(&servers, &out_topic, true, n, Duration::from_secs(1)).len() >= n;
    assert!(
        wait_until(Duration::from_secs(60), || committed(200)),
        "{}",
        zombie.log_text()
    );
    // The same instance id starts again elsewhere: the first one must not commit any more.
    let successor = Worker::start(&p, "successor", &[]);
    let fenced = wait_until(Duration::from_secs(90), || {
        // Keep records coming to every partition, so that the first instance, whichever
        // partition it still owns, tries to commit (a fenced producer learns it only then).
        let msgs: Vec<Msg> = (0..2)
            .map(|p| Msg {
                partition: Some(p),
                ..Msg::text("k", "more feedback")
            })
            .collect();
        produce(&servers, &topic, &msgs);
        !zombie.is_running()
    });
    let zlog = zombie.log_text();
    assert!(fenced, "the first instance kept running:\n{zlog}");
    assert!(
        !zombie.child.wait().unwrap().success(),
        "a fenced worker exits with an error:\n{zlog}"
    );
    assert!(zlog.contains("fenced"), "{zlog}");
    // The successor takes every partition and the output stays exactly once.
    produce(&servers, &topic, &text_msgs(0..10));
    let total = read_topic(&servers, &topic, false, usize::MAX, Duration::from_secs(2)).len();
    assert!(
        wait_until(Duration::from_secs(90), || committed(total)),
        "{}",
        successor.log_text()
    );
    // Stopped first, so that nothing more can reach the output after the read.
    assert!(successor.stop());
    let got = read_topic_to_end(&servers, &out_topic, true, Duration::from_secs(60));
    let ids: Vec<String> = got
        .iter()
        .map(|g| g.json()["id"].as_str().unwrap().to_string())
        .collect();
    let expected = expected_ids(&topic, &servers, total);
    let dups = assert_all_present(&expected, &ids, "fencing");
    assert_eq!(
        dups, 0,
        "a fenced instance's output leaked into read_committed"
    );
    delete_topics(&servers, &[&topic, &out_topic, &dlq]);
}

#[test]
fn nothing_is_committed_before_its_output_file_is_complete() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("held");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 2)]);
    produce(&servers, &topic, &text_msgs(0..100));
    let out = dir.path().join("out");
    // The files roll only at the end (no row, byte or time limit is reached).
    let sink = format!(
        "sink:\n  parquet:\n    path: {}\n    roll_interval_ms: 3600000\n",
        out.display()
    );
    let p = pipeline(dir.path(), "held", &servers, &topic, &group, &sink);
    let w = Worker::start(&p, "w", &[]);
    // Every record is read and in an open (temporary) file.
    let in_progress = |d: &Path| {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
            })
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(60), || in_progress(&out)
            && w.log_text().contains("partitions assigned")),
        "no open output file:\n{}",
        w.log_text()
    );
    // Every record has gone through the writer (into the open files): the metrics say so.
    let addr = w
        .log_text()
        .split("metrics and health on http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .map(str::to_string)
        .expect("metrics address logged");
    assert!(
        wait_until(Duration::from_secs(60), || http_get(&addr, "/metrics")
            .1
            .contains("bertflow_records_out_total 100")),
        "not every record was written:\n{}",
        w.log_text()
    );
    // The negative check: offsets are committed at most every 500 ms (COMMIT_INTERVAL), on
    // each durable chunk and on idle ticks every 50 ms; 3 s after the last record was written
    // is six commit intervals and sixty idle ticks, so a commit of records whose file is still
    // open would have happened within it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(output_files(&out).is_empty(), "a file rolled early");
    assert_eq!(
        committed(&servers, &group, &topic),
        0,
        "offsets committed before their output was durable"
    );
    // A clean stop rolls the files, then commits.
    assert!(w.stop());
    assert_eq!(output_ids(&out).len(), 100);
    assert_eq!(committed(&servers, &group, &topic), 100);
    delete_topics(&servers, &[&topic]);
}

/// SIGTERM to a worker with a full pipeline: it abandons the micro-batches in flight instead of
/// running them through the model first, exits within `max_wait` (500 ms) plus one micro-batch
/// (here at most 5 s), and commits exactly what its output holds. Windows of 1,024 records in
/// queues 4 deep keep over 10,000 records (tens of seconds of embedding on a CPU) in flight.
#[test]
fn sigterm_stops_a_busy_worker_promptly_committing_only_durable_output() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("busy");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 2)]);
    let n = 30_000;
    produce(&servers, &topic, &text_msgs(0..n));
    let out = dir.path().join("out");
    let p = embed_pipeline_kafka(dir.path(), &servers, &topic, &group, &parquet_sink(&out));
    let sets = [
        "--set",
        "batching.window_records=1024",
        "--set",
        "batching.queue_depth=4",
    ];
    let w = Worker::start(&p, "w", &sets);
    assert!(
        wait_until(Duration::from_secs(120), || !output_ids(&out).is_empty()),
        "nothing written:\n{}",
        w.log_text()
    );
    let signalled = std::time::Instant::now();
    assert!(w.stop(), "SIGTERM did not stop the worker cleanly");
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(dir.path().join("w.log")).unwrap();
    assert!(
        took < Duration::from_secs(5),
        "stopped {:.1} s after SIGTERM (at most 5 s)\n{log}",
        took.as_secs_f64()
    );
    let written = output_ids(&out);
    assert!(
        written.len() < n,
        "all {n} records were processed before the stop: the test proves nothing"
    );
    // Committed exactly what the output holds: per partition, the records below the committed
    // offset are the records in the output (ids are topic/partition/offset), each once.
    let offsets = committed_offsets(&servers, &group, &topic);
    let want: HashSet<String> = offsets
        .iter()
        .flat_map(|(p, &end)| (0..end).map(move |o| (*p, o)))
        .map(|(p, o)| format!("{topic}/{p}/{o}"))
        .collect();
    let got: HashSet<String> = written.iter().cloned().collect();
    assert_eq!(got.len(), written.len(), "a record written twice");
    assert!(
        got == want,
        "committed offsets {offsets:?} differ from the output: {} written, {} committed, {} written but not committed, {} committed but not written\n{log}",
        got.len(),
        want.len(),
        got.difference(&want).count(),
        want.difference(&got).count()
    );
    delete_topics(&servers, &[&topic]);
}
