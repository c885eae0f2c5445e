//! Kafka faults against a real broker (scripts/kafka.sh): result messages the brokers refuse,
//! failed records of Parquet -> Kafka jobs, and exactly-once output while members join and leave
//! (incremental rebalancing). Every wait is a bounded poll for an outcome.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kafka::*;
use common::*;

/// `len` characters that compress badly (a simple linear congruential generator).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let c = (x >> 33) % 62;
            (match c {
                0..=9 => b'0' + c as u8,
                10..=35 => b'a' + (c - 10) as u8,
                _ => b'A' + (c - 36) as u8,
            }) as char
        })
        .collect()
}

/// JSON records `d<i>` with a `note`; the records in `big` carry a note of 60,000 characters
/// that no compression brings under the output topic's limit.
fn json_msgs(n: usize, big: &[usize]) -> Vec<Msg> {
    (0..n)
        .map(|i| {
            let note = if big.contains(&i) {
                noise(i as u64, 60_000)
            } else {
                format!("n{i}")
            };
            Msg::text(
                &format!("k{i}"),
                &serde_json::json!({"id": format!("d{i}"), "text": format!("great service {i}"), "note": note})
                    .to_string(),
            )
        })
        .collect()
}

fn refused_case(exactly_once: bool) {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("refuse-in");
    let out = unique("refuse-out");
    let dlq = unique("refuse-dlq");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 1), (&dlq, 1)]);
    // The output topic takes record batches of up to 20 kB.
    create_topic_with(&servers, &out, 1, &[("max.message.bytes", "20000")]);
    let big = [5usize, 17];
    produce(&servers, &topic, &json_msgs(30, &big));
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:
  kafka:
    bootstrap_servers: {servers}
    topics: [{topic}]
    group_id: {group}
    format: json
    json: {{id: id, text: text}}
    max_wait_ms: 200
    properties: {{session.timeout.ms: '6000'}}
tasks:
  sentiment: {{model: {}}}
batching: {{window_records: 8}}
metrics: {{listen: 127.0.0.1:0}}
sink:
  passthrough: [note]
  kafka: {{topic: {out}, exactly_once: {exactly_once}, transactional_id: {group}-t}}
  errors: {{topic: {dlq}}}
",
            fixture_model("bert-sentiment")
        ),
    )
    .unwrap();
    let mut w = Worker::start(&p, "w", &[]);
    // Every record is processed once the group has committed past all 30 (the refused ones
    // included); the output topics are then read to their ends, so a duplicate cannot hide.
    assert!(
        wait_until(Duration::from_secs(90), || committed_offsets(
            &servers, &group, &topic
        )
        .get(&0)
            == Some(&30)),
        "offsets not committed past the refused records: {:?}\n{}",
        committed_offsets(&servers, &group, &topic),
        w.log_text()
    );
    // The worker goes on after refused records.
    assert!(w.is_running(), "{}", w.log_text());
    let log = w.log_text();
    assert!(w.stop(), "{log}");
    let got = read_topic_to_end(&servers, &out, true, Duration::from_secs(60));
    let dead = read_topic_to_end(&servers, &dlq, true, Duration::from_secs(60));
    let ids: Vec<String> = got
        .iter()
        .map(|g| g.json()["id"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = (0..30)
        .filter(|i| !big.contains(i))
        .map(|i| format!("d{i}"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    want.sort();
    // Each accepted record exactly once (at least once would allow duplicates only after a
    // crash or rebalance, neither of which happens here).
    assert_eq!(sorted, want, "results:\n{log}");
    let mut dead_keys: Vec<String> = dead
        .iter()
        .map(|d| String::from_utf8(d.key.clone().unwrap()).unwrap())
        .collect();
    dead_keys.sort();
    assert_eq!(dead_keys, ["k17", "k5"], "dead letters:\n{log}");
    for d in &dead {
        let reason = d.header("bertflow.error.reason").unwrap();
        assert!(reason.contains("refused"), "{reason}");
        assert_eq!(d.header("bertflow.error.stage").as_deref(), Some("sink"));
    }
    delete_topics(&servers, &[&topic, &out, &dlq]);
}

#[test]
fn a_result_the_brokers_refuse_goes_to_the_dead_letter_topic_at_least_once() {
    refused_case(false);
}

#[test]
fn a_result_the_brokers_refuse_goes_to_the_dead_letter_topic_exactly_once() {
    refused_case(true);
}

#[test]
fn parquet_to_kafka_keeps_failed_records_in_an_error_file() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let out = unique("pq-out");
    create_topics(&servers, &[(&out, 1)]);
    let input = dir.path().join("in.parquet");
    texts_parquet(
        &input,
        &["a", "b", "c"],
        &[Some("good food"), None, Some("bad service")],
    );
    let errors = dir.path().join("failed.parquet");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet: {{path: {}, id_column: id}}\ntasks:\n  sentiment: {{model: {}}}\nsink:\n  kafka: {{bootstrap_servers: {servers}, topic: {out}}}\n  errors: {{path: {}}}\n",
            input.display(),
            fixture_model("bert-sentiment"),
            errors.display()
        ),
    )
    .unwrap();
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    let got = read_topic_to_end(&servers, &out, true, Duration::from_secs(30));
    let mut keys: Vec<Vec<u8>> = got.iter().map(|g| g.key.clone().unwrap()).collect();
    keys.sort();
    assert_eq!(keys, [b"a".to_vec(), b"c".to_vec()]);
    let e = read_parquet(&errors);
    assert_eq!(strings(&e, "id"), vec![Some("b".to_string())]);
    assert!(strings(&e, "reason")[0]
        .as_deref()
        .unwrap()
        .contains("null"));
    let s = stdout(&o);
    assert!(summary_count(&s, "written") == 2, "{s}");
    assert!(summary_count(&s, "errors") == 1, "{s}");
    assert!(
        s.contains(&format!("error output  {}", errors.display())),
        "{s}"
    );
    assert!(s.contains(&format!("kafka topic {out}")), "{s}");
    delete_topics(&servers, &[&out]);
}

fn eos_pipeline(
    dir: &Path,
    name: &str,
    servers: &str,
    topic: &str,
    group: &str,
    out: &str,
    dlq: &str,
) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "source:
  kafka:
    bootstrap_servers: {servers}
    topics: [{topic}]
    group_id: {group}
    max_wait_ms: 200
    properties: {{session.timeout.ms: '6000', heartbeat.interval.ms: '500'}}
tasks:
  sentiment: {{model: {}}}
batching: {{window_records: 16}}
metrics: {{listen: 127.0.0.1:0}}
sink:
  kafka: {{topic: {out}, exactly_once: true, transactional_id: {group}-{name}}}
  errors: {{topic: {dlq}}}
",
            fixture_model("bert-sentiment")
        ),
    )
    .unwrap();
    p
}

#[test]
fn exactly_once_output_stays_exact_while_members_join_and_leave() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("eos-rb");
    let out = unique("eos-rb-out");
    let dlq = unique("eos-rb-dlq");
    let group = unique("g");
    create_topics(&servers, &[(&topic, 6), (&out, 3), (&dlq, 1)]);
    let msgs = text_msgs;
    produce(&servers, &topic, &msgs(0..600));
    let pa = eos_pipeline(dir.path(), "a", &servers, &topic, &group, &out, &dlq);
    let pb = eos_pipeline(dir.path(), "b", &servers, &topic, &group, &out, &dlq);
    let a = Worker::start(&pa, "a", &[]);
    // A second member joins while the first is busy, then leaves; records keep arriving.
    let b = Worker::start(&pb, "b", &[]);
    produce(&servers, &topic, &msgs(600..900));
    assert!(
        wait_until(Duration::from_secs(60), || b
            .log_text()
            .contains("partitions assigned")),
        "the second member never got partitions:\n{}",
        b.log_text()
    );
    produce(&servers, &topic, &msgs(900..1000));
    // Records produced while the second member holds partitions are processed (some by it)
    // before it leaves.
    assert!(
        wait_until(Duration::from_secs(90), || committed_offsets(
            &servers, &group, &topic
        )
        .values()
        .sum::<i64>()
            == 1000),
        "the first 1,000 records were not committed: {:?}",
        committed_offsets(&servers, &group, &topic)
    );
    assert!(b.stop(), "second member did not stop cleanly");
    let lb = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(
        summary_count(&lb, "written") > 0,
        "the second member wrote nothing:\n{lb}"
    );
    produce(&servers, &topic, &msgs(1000..1200));
    // Everything is processed and committed, then the output is read to its end.
    assert!(
        wait_until(Duration::from_secs(120), || committed_offsets(
            &servers, &group, &topic
        )
        .values()
        .sum::<i64>()
            == 1200),
        "not everything was committed: {:?}\n{}",
        committed_offsets(&servers, &group, &topic),
        a.log_text()
    );
    let la = a.log_text();
    assert!(a.stop(), "{la}");
    let got = read_topic_to_end(&servers, &out, true, Duration::from_secs(60));
    let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
    for g in &got {
        *count.entry(g.key.clone().unwrap()).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<usize> = (0..1200)
        .filter(|i| !count.contains_key(format!("k{i}").as_bytes()))
        .collect();
    let rewinds = la.matches("rewound to the committed offsets").count();
    println!(
        "exactly-once join/leave: {} results, {} duplicates, {} missing, {rewinds} rewinds of the first member",
        got.len(),
        dups.len(),
        missing.len()
    );
    assert!(
        dups.is_empty(),
        "duplicates in read_committed output: {dups:?}"
    );
    assert!(missing.is_empty(), "missing: {missing:?}\n{la}");
    assert_eq!(got.len(), 1200, "results beyond the 1,200 records");
    // The rebalance reached the first member: it lost partitions to the second and got them
    // back when the second left.
    assert!(
        la.matches("partitions assigned").count() >= 2 || la.contains("partitions revoked"),
        "the first member saw no rebalance:\n{la}"
    );
    delete_topics(&servers, &[&topic, &out, &dlq]);
}

#[test]
fn secrets_in_client_properties_never_reach_the_log() {
    let servers = bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let out = unique("secret-out");
    create_topics(&servers, &[(&out, 1)]);
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a"], &[Some("good food")]);
    let secret = "s3cret-Pa55-word-7731";
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet: {{path: {}, id_column: id}}\ntasks:\n  sentiment: {{model: {}}}\nsink:\n  kafka:\n    bootstrap_servers: {servers}\n    topic: {out}\n    properties: {{sasl.password: '{secret}', ssl.key.password: '{secret}', debug: 'conf,generic'}}\n",
            input.display(),
            fixture_model("bert-sentiment"),
        ),
    )
    .unwrap();
    let o = bin()
        .args(["run", p.to_str().unwrap(), "--no-progress"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_ok(&o);
    let log = format!("{}{}", stdout(&o), stderr(&o));
    assert!(log.contains("sasl.password=***"), "{log}");
    assert!(!log.contains(secret), "the secret is in the log:\n{log}");
    delete_topics(&servers, &[&out]);
}
