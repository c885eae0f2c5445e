//! Kafka sink: one output message per input record (JSON) or one Arrow IPC stream per chunk,
//! and the dead-letter topic.
//!
//! - At-least-once (default): idempotent producer with `acks=all`; a chunk is durable once every
//!   one of its messages (results and dead letters) is acknowledged by the brokers.
//! - Exactly-once (`exactly_once: true`): each chunk is one transaction holding its results, its
//!   dead letters and its input offsets (`send_offsets_to_transaction` with the consumer group
//!   state read with the chunk). A transaction that cannot commit is aborted and the source
//!   rewinds to the committed offsets; chunks read before the rewind are dropped.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::{ChunkOutput, Sink, SinkReport};
use crate::config::{KafkaOutputFormat, KafkaSinkConfig};
use crate::error::{Error, Result};
use crate::record::{KafkaMessage, Origin};
use crate::source::kafka::StreamState;
use crate::telemetry::{DeadLettered, Event, TransactionAborted};

/// Largest dead-letter value sent as is; a longer original value is cut to this size and the
/// message says so in its `bertflow.error.value_bytes` header (brokers refuse messages above
/// `message.max.bytes`, 1 MB by default).
pub const DLQ_MAX_VALUE_BYTES: usize = 900 * 1024;

const TXN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ProducerLog;

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::kafka::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::kafka::error(error, reason);
    }
}

impl ProducerContext for ProducerLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

pub type KafkaProducer = FutureProducer<ProducerLog>;

/// Create an idempotent (`acks=all`) producer, transactional when `transactional_id` is given.
pub fn make_producer(
    bootstrap: &str,
    user: &std::collections::BTreeMap<String, String>,
    transactional_id: Option<&str>,
) -> Result<KafkaProducer> {
    let mut defaults = vec![
        ("enable.idempotence", "true".to_string()),
        ("acks", "all".to_string()),
        ("compression.type", "zstd".to_string()),
        ("linger.ms", "5".to_string()),
        ("message.max.bytes", "10485760".to_string()),
    ];
    if let Some(id) = transactional_id {
        defaults.push(("transactional.id", id.to_string()));
    }
    tracing::info!(
        servers = %bootstrap,
        transactional_id = transactional_id.unwrap_or("-"),
        properties = %crate::kafka::redacted(user),
        "kafka producer"
    );
    let producer: KafkaProducer = crate::kafka::client_config(bootstrap, &defaults, user)
        .create_with_context(ProducerLog)
        .map_err(|e| {
            Error::sink(
                format!("kafka {bootstrap}"),
                format!("cannot create the producer: {e} (check sink.kafka.properties)"),
            )
        })?;
    if transactional_id.is_some() {
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| {
            Error::sink(
                format!("kafka {bootstrap}"),
                format!("cannot initialise transactions: {e} (the brokers must be reachable and support transactions)"),
            )
        })?;
    }
    Ok(producer)
}

/// One message to send.
pub struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Send messages and wait until the brokers acknowledge every one.
pub fn send_all(producer: &KafkaProducer, messages: Vec<Outgoing>) -> Result<()> {
    let mut pending = Vec::with_capacity(messages.len());
    for m in &messages {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&m.topic)
            .payload(m.value.as_slice())
            .headers(headers);
        if let Some(k) = &m.key {
            rec = rec.key(k.as_slice());
        }
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push((m.topic.as_str(), f));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    return Err(Error::sink(
                        format!("kafka topic {}", m.topic),
                        format!("cannot send: {e}"),
                    ))
                }
            }
        }
    }
    for (topic, f) in pending {
        match futures::executor::block_on(f) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(Error::sink(
                    format!("kafka topic {topic}"),
                    format!("delivery failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(Error::sink(
                    format!("kafka topic {topic}"),
                    "delivery result lost (producer closed)",
                ))
            }
        }
    }
    Ok(())
}

/// Dead letters of a chunk: original key, value and headers plus why and where.
pub fn dead_letters(topic: &str, out: &ChunkOutput) -> Vec<Outgoing> {
    let Origin::Kafka(k) = &out.origin else {
        return Vec::new();
    };
    let reason = out.errors.column(1).as_string::<i32>();
    let stage = out.errors.column(2).as_string::<i32>();
    let task = out.errors.column(3).as_string::<i32>();
    out.error_rows
        .iter()
        .enumerate()
        .map(|(i, &row)| {
            let m: &KafkaMessage = &k.messages[row as usize];
            let value = m.value.clone().unwrap_or_default();
            let mut headers: Vec<(String, Vec<u8>)> = m
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect();
            headers.push((
                "bertflow.error.reason".into(),
                reason.value(i).as_bytes().to_vec(),
            ));
            headers.push((
                "bertflow.error.stage".into(),
                stage.value(i).as_bytes().to_vec(),
            ));
            if task.is_valid(i) {
                headers.push((
                    "bertflow.error.task".into(),
                    task.value(i).as_bytes().to_vec(),
                ));
            }
            headers.extend(provenance(m));
            let value = if value.len() > DLQ_MAX_VALUE_BYTES {
                headers.push((
                    "bertflow.error.value_bytes".into(),
                    value.len().to_string().into_bytes(),
                ));
                value[..DLQ_MAX_VALUE_BYTES].to_vec()
            } else {
                value
            };
            Outgoing {
                topic: topic.to_string(),
                key: m.key.clone(),
                value,
                headers,
            }
        })
        .collect()
}

fn provenance(m: &KafkaMessage) -> Vec<(String, Vec<u8>)> {
    vec![
        ("bertflow.source.topic".into(), m.topic.as_bytes().to_vec()),
        (
            "bertflow.source.partition".into(),
            m.partition.to_string().into_bytes(),
        ),
        (
            "bertflow.source.offset".into(),
            m.offset.to_string().into_bytes(),
        ),
    ]
}

/// Without a dead-letter topic, failed records are not kept: each is logged with where it came
/// from and why, so that none disappears silently.
fn log_unkept_failures(out: &ChunkOutput) {
    if out.errors.num_rows() == 0 {
        return;
    }
    let reason = out.errors.column(1).as_string::<i32>();
    let stage = out.errors.column(2).as_string::<i32>();
    let source = out.errors.column(4).as_string::<i32>();
    for i in 0..out.errors.num_rows() {
        tracing::warn!(
            record = source.value(i),
            stage = stage.value(i),
            reason = reason.value(i),
            "record failed and is not kept (set sink.errors.topic to keep failed records)"
        );
    }
}

/// Rows of a batch as JSON objects, one per row.
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    w.write(batch)
        .map_err(|e| Error::sink("kafka output", format!("cannot encode JSON: {e}")))?;
    w.finish()
        .map_err(|e| Error::sink("kafka output", format!("cannot encode JSON: {e}")))?;
    let buf = w.into_inner();
    let rows: Vec<Vec<u8>> = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect();
    if rows.len() != batch.num_rows() {
        return Err(Error::sink(
            "kafka output",
            format!(
                "internal: {} JSON lines for {} rows",
                rows.len(),
                batch.num_rows()
            ),
        ));
    }
    Ok(rows)
}

fn arrow_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema())
        .map_err(|e| Error::sink("kafka output", e.to_string()))?;
    w.write(batch)
        .map_err(|e| Error::sink("kafka output", e.to_string()))?;
    w.into_inner()
        .map_err(|e| Error::sink("kafka output", e.to_string()))
}

/// Why a transaction did not commit.
#[derive(Debug)]
enum TxnFailure {
    Kafka(KafkaError),
    Send(Error),
}

impl std::fmt::Display for TxnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnFailure::Kafka(e) => write!(f, "{e}"),
            TxnFailure::Send(e) => write!(f, "{e}"),
        }
    }
}

pub struct KafkaSink {
    cfg: KafkaSinkConfig,
    producer: KafkaProducer,
    dlq_topic: Option<String>,
    /// Exactly-once: the source's state, to drop stale chunks and ask for rewinds.
    stream: Option<Arc<StreamState>>,
    report: SinkReport,
    aborted_transactions: u64,
}

impl KafkaSink {
    pub fn new(
        cfg: &KafkaSinkConfig,
        bootstrap: &str,
        dlq_topic: Option<String>,
        transactional_id: Option<String>,
        stream: Option<Arc<StreamState>>,
    ) -> Result<Self> {
        let producer = make_producer(bootstrap, &cfg.properties, transactional_id.as_deref())?;
        Ok(KafkaSink {
            cfg: cfg.clone(),
            producer,
            dlq_topic,
            stream: if cfg.exactly_once { stream } else { None },
            report: SinkReport::default(),
            aborted_transactions: 0,
        })
    }

    fn messages(&self, out: &ChunkOutput) -> Result<Vec<Outgoing>> {
        let mut msgs = Vec::new();
        let kafka = out.origin.kafka();
        match self.cfg.format {
            KafkaOutputFormat::Json => {
                let rows = json_rows(&out.results)?;
                let ids = out.results.column(0);
                for (i, value) in rows.into_iter().enumerate() {
                    let row = out.result_rows[i] as usize;
                    let (key, headers) = match kafka {
                        Some(k) => {
                            let m = &k.messages[row];
                            (m.key.clone(), provenance(m))
                        }
                        None => {
                            let id = arrow::util::display::array_value_to_string(ids, i)
                                .unwrap_or_default();
                            (
                                Some(id.into_bytes()),
                                vec![(
                                    "bertflow.source".to_string(),
                                    out.origin.describe(row).into_bytes(),
                                )],
                            )
                        }
                    };
                    msgs.push(Outgoing {
                        topic: self.cfg.topic.clone(),
                        key,
                        value,
                        headers,
                    });
                }
            }
            KafkaOutputFormat::Arrow => {
                if out.results.num_rows() > 0 {
                    let mut headers = vec![
                        ("bertflow.format".to_string(), b"arrow-ipc-stream".to_vec()),
                        (
                            "bertflow.rows".to_string(),
                            out.results.num_rows().to_string().into_bytes(),
                        ),
                    ];
                    if let Some(k) = kafka {
                        let offs: Vec<String> = k
                            .next_offsets
                            .iter()
                            .map(|(t, p, o)| format!("{t}/{p}/{o}"))
                            .collect();
                        headers.push((
                            "bertflow.source.next_offsets".into(),
                            offs.join(",").into_bytes(),
                        ));
                    }
                    msgs.push(Outgoing {
                        topic: self.cfg.topic.clone(),
                        key: None,
                        value: arrow_ipc(&out.results)?,
                        headers,
                    });
                }
            }
        }
        if let Some(t) = &self.dlq_topic {
            msgs.extend(dead_letters(t, out));
        }
        Ok(msgs)
    }

    fn txn_error(&self, what: &str, e: KafkaError) -> Error {
        Error::sink(
            format!("kafka topic {}", self.cfg.topic),
            format!("{what}: {e}"),
        )
    }

    /// One chunk in one transaction. `Ok(false)`: aborted (the source rewinds).
    fn write_transaction(&mut self, out: &ChunkOutput, msgs: Vec<Outgoing>) -> Result<bool> {
        let stream = self
            .stream
            .clone()
            .expect("exactly-once has the stream state");
        let Some(k) = out.origin.kafka() else {
            return Err(Error::config(
                "sink.kafka.exactly_once needs a Kafka source",
            ));
        };
        let group = k.group.clone().ok_or_else(|| {
            Error::sink(
                "kafka",
                "internal: no consumer group state for an exactly-once chunk",
            )
        })?;
        self.producer
            .begin_transaction()
            .map_err(|e| self.txn_error("cannot begin a transaction", e))?;
        let result = (|| -> std::result::Result<(), TxnFailure> {
            send_all(&self.producer, msgs).map_err(TxnFailure::Send)?;
            let mut tpl = TopicPartitionList::new();
            for (t, p, o) in &k.next_offsets {
                tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                    .map_err(TxnFailure::Kafka)?;
            }
            self.producer
                .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)
                .map_err(TxnFailure::Kafka)?;
            let mut tries = 0;
            loop {
                match self.producer.commit_transaction(TXN_TIMEOUT) {
                    Ok(()) => return Ok(()),
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 10 => {
                        tries += 1;
                        tracing::warn!(error = %e, "transaction commit timed out; retrying");
                    }
                    Err(e) => return Err(TxnFailure::Kafka(e)),
                }
            }
        })();
        match result {
            Ok(()) => Ok(true),
            Err(TxnFailure::Kafka(KafkaError::Transaction(e))) if e.is_fatal() => Err(self.txn_error(
                "fatal transaction error (another worker with the same transactional id may have fenced this one)",
                KafkaError::Transaction(e),
            )),
            Err(e) => {
                // A fenced or otherwise fatally failed producer can surface as a failed delivery;
                // it must stop, never abort and go on.
                if let Some((code, reason)) = self.producer.client().fatal_error() {
                    return Err(Error::sink(
                        format!("kafka topic {}", self.cfg.topic),
                        format!(
                            "fatal producer error {code:?}: {reason} (another worker with the same transactional id may have fenced this one; give each instance its own sink.kafka.transactional_id)"
                        ),
                    ));
                }
                tracing::warn!(error = %e, "transaction failed; aborting it and rewinding to the committed offsets");
                self.producer
                    .abort_transaction(TXN_TIMEOUT)
                    .map_err(|e| self.txn_error("cannot abort the transaction", e))?;
                self.aborted_transactions += 1;
                TransactionAborted.emit();
                stream.request_rewind();
                Ok(false)
            }
        }
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, out: &ChunkOutput) -> Result<Option<u64>> {
        if let (Some(stream), Some(k)) = (&self.stream, out.origin.kafka()) {
            if stream.is_stale(k.epoch) {
                return Ok(None);
            }
        }
        if self.dlq_topic.is_none() {
            log_unkept_failures(out);
        }
        let msgs = self.messages(out)?;
        if self.stream.is_some() {
            if !self.write_transaction(out, msgs)? {
                return Ok(None);
            }
        } else {
            send_all(&self.producer, msgs)?;
        }
        self.report.rows += out.results.num_rows() as u64;
        self.report.error_rows += out.errors.num_rows() as u64;
        if let Some(t) = &self.dlq_topic {
            if out.errors.num_rows() > 0 {
                DeadLettered {
                    topic: t.clone(),
                    count: out.errors.num_rows(),
                }
                .emit();
            }
        }
        Ok(Some(out.seq))
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| self.txn_error("cannot flush", e))?;
        if self.aborted_transactions > 0 {
            tracing::info!(
                aborted = self.aborted_transactions,
                "aborted transactions in this run"
            );
        }
        Ok(self.report.clone())
    }

    fn abort(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
