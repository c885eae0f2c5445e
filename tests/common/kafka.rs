//! Kafka helpers for the streaming tests: they talk to the real broker that `scripts/kafka.sh`
//! starts (127.0.0.1:9092 unless `BERTFLOW_TEST_KAFKA` says otherwise).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{bin, read_parquet, root, strings};

pub fn bootstrap() -> String {
    std::env::var("BERTFLOW_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn admin(servers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("admin client")
}

/// Create topics; fails with instructions when no broker answers.
pub fn create_topics(servers: &str, topics: &[(&str, i32)]) {
    let admin = admin(servers);
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| {
            NewTopic::new(t, *p, TopicReplication::Fixed(1)).set("max.message.bytes", "10485760")
        })
        .collect();
    create(servers, &admin, &new);
}

fn create(servers: &str, admin: &AdminClient<DefaultClientContext>, new: &[NewTopic<'_>]) {
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let res = futures::executor::block_on(admin.create_topics(new, &opts)).unwrap_or_else(|e| {
        panic!("no Kafka broker at {servers} ({e}): start one with `scripts/kafka.sh start`")
    });
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// Create one topic with topic configuration (e.g. a small `max.message.bytes`).
pub fn create_topic_with(servers: &str, topic: &str, partitions: i32, config: &[(&str, &str)]) {
    let admin = admin(servers);
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in config {
        t = t.set(k, v);
    }
    create(servers, &admin, &[t]);
}

/// The partitions of `topic`.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// The offsets committed by `group` on every partition of `topic` (missing: none committed).
pub fn committed_offsets(servers: &str, group: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, topic) {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

pub fn delete_topics(servers: &str, topics: &[&str]) {
    let admin = admin(servers);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let _ = futures::executor::block_on(admin.delete_topics(topics, &opts));
}

/// A short review-like text, different for each `i`.
pub fn words(i: usize) -> String {
    const W: &[&str] = &[
        "great", "service", "terrible", "delivery", "Alice", "Paris", "love", "the", "product",
        "never", "again", "Berlin", "support", "fast",
    ];
    (0..(3 + i % 11))
        .map(|k| W[(i * 7 + k * 3) % W.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// `n` text records keyed `k<i>`, spread over the partitions by key.
pub fn text_msgs(range: std::ops::Range<usize>) -> Vec<Msg> {
    range
        .map(|i| Msg::text(&format!("k{i}"), &words(i)))
        .collect()
}

/// A message to produce: explicit partition, key, value (None = tombstone), headers.
pub struct Msg {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Msg {
    pub fn text(key: &str, value: &str) -> Self {
        Msg {
            partition: None,
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }
}

pub fn produce(servers: &str, topic: &str, msgs: &[Msg]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("message.max.bytes", "10485760")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for m in msgs {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(k) = &m.key {
            rec = rec.key(k.as_slice());
        }
        if let Some(v) = &m.value {
            rec = rec.payload(v.as_slice());
        }
        if let Some(p) = m.partition {
            rec = rec.partition(p);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// A consumed message.
#[derive(Debug, Clone)]
pub struct Got {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, Vec<u8>>,
}

impl Got {
    pub fn header(&self, k: &str) -> Option<String> {
        self.headers
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or_default()).expect("JSON output")
    }
}

/// A consumer reading `topic` from the beginning of every partition, outside any group's
/// commits, with the given isolation level; and the topic's partitions.
fn reader(servers: &str, topic: &str, read_committed: bool) -> (BaseConsumer, Vec<i32>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("fetch.max.bytes", "52428800")
        .create()
        .expect("consumer");
    let parts = partitions(&consumer, topic);
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    (consumer, parts)
}

fn got(m: &rdkafka::message::BorrowedMessage<'_>) -> Got {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Got {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        value: m.payload().map(|v| v.to_vec()),
        headers,
    }
}

/// Read every message of `topic` (all partitions, from the beginning) with the given isolation
/// level, until `expect` messages arrived or nothing new came for `idle`.
pub fn read_topic(
    servers: &str,
    topic: &str,
    read_committed: bool,
    expect: usize,
    idle: Duration,
) -> Vec<Got> {
    let (consumer, _) = reader(servers, topic, read_committed);
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(180);
    while out.len() < expect && last.elapsed() < idle && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(got(&m));
            last = Instant::now();
        }
    }
    out
}

/// Every message of `topic` up to the end it has now: the high watermark of each partition is
/// taken first, then messages are read until every partition's position reaches it (with
/// `read_committed`, aborted messages and transaction markers are passed over). Call it once
/// the writers are done: an open transaction holds the read back until `timeout` (a panic).
pub fn read_topic_to_end(
    servers: &str,
    topic: &str,
    read_committed: bool,
    timeout: Duration,
) -> Vec<Got> {
    let (consumer, parts) = reader(servers, topic, read_committed);
    let ends: HashMap<i32, i64> = parts
        .iter()
        .map(|&p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect();
    let reached = |c: &BaseConsumer| {
        let pos = c.position().expect("position");
        ends.iter().all(|(p, end)| {
            *end == 0
                || matches!(
                    pos.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *end
                )
        })
    };
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while !reached(&consumer) {
        assert!(
            Instant::now() < deadline,
            "{topic}: not read to its end ({ends:?}) within {timeout:?}; {} messages read",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(got(&m));
        }
    }
    out
}

/// A worker process (`bertflow run`), its logs in files beside its pipeline.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(pipeline: &Path, name: &str, extra: &[&str]) -> Worker {
        let log = pipeline.with_file_name(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = bin()
            .arg("run")
            .arg(pipeline)
            .arg("--no-progress")
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("BERTFLOW_TEST_RUST_LOG")
                    .unwrap_or_else(|_| "warn,bertflow=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start worker");
        Worker { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded) for a clean exit; returns whether it exited with success.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no chance to flush or commit.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A failed test must not leave its worker running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Complete Parquet files of a streaming output directory (temporary `.name.inprogress` files
/// are not output).
pub fn output_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension().is_some_and(|e| e == "parquet")
                        && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Ids of every row in the complete output files of `dir`.
pub fn output_ids(dir: &Path) -> Vec<String> {
    output_files(dir)
        .iter()
        .flat_map(|p| strings(&read_parquet(p), "id"))
        .map(|s| s.expect("id"))
        .collect()
}

/// Poll `f` until it returns true or `limit` passes; returns the last answer.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A TCP port no one listens on now, chosen by the OS.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A second broker for tests that stop and restart it.
pub struct Broker {
    pub name: String,
    pub port: u16,
}

impl Broker {
    pub fn start(name: &str, port: u16) -> Broker {
        let b = Broker {
            name: name.into(),
            port,
        };
        b.run("start");
        b
    }

    pub fn servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn run(&self, cmd: &str) {
        let st = Command::new("bash")
            .arg(root().join("scripts/kafka.sh"))
            .arg(cmd)
            .args(["--name", &self.name, "--port", &self.port.to_string()])
            .status()
            .expect("scripts/kafka.sh");
        assert!(
            st.success(),
            "scripts/kafka.sh {cmd} --name {} failed",
            self.name
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/kafka.sh"))
            .args(["reset", "--name", &self.name])
            .status();
    }
}

/// The `source:` section of a test pipeline reading `topic` as a member of `group`, with short
/// session timeouts (a killed worker's partitions move on within seconds).
pub fn kafka_source_yaml(servers: &str, topic: &str, group: &str) -> String {
    format!(
        "source:
  kafka:
    bootstrap_servers: {servers}
    topics: [{topic}]
    group_id: {group}
    max_wait_ms: 200
    properties:
      session.timeout.ms: '6000'
      heartbeat.interval.ms: '500'
"
    )
}

/// The ids bertflow gives the `n` records of `topic` (`topic/partition/offset`): the input read
/// back to know where each record landed.
pub fn expected_ids(topic: &str, servers: &str, n: usize) -> std::collections::HashSet<String> {
    read_topic(servers, topic, false, n, Duration::from_secs(5))
        .into_iter()
        .map(|g| format!("{topic}/{}/{}", g.partition, g.offset))
        .collect()
}
