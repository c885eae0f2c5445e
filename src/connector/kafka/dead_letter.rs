//! Dead letters: a failed record's original key, value and headers, plus why, where and at
//! which stage it failed (`bertflow.error.*` headers), sent to the dead-letter topic. Only
//! records that were not written become dead letters; a task that failed for a record still
//! written (its columns null) is logged and counted instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::producer::Producer;

use super::consumer::KafkaRecords;
use super::producer::{make_producer, send_all, KafkaProducer, Limits, Outgoing};
use super::KafkaMessage;
use crate::connector::{ChunkOutput, ErrorOutput, ErrorRow};
use crate::error::{Error, Result};
use crate::telemetry::{DeadLettered, Event};

/// Largest dead-letter value sent as is; a longer original value is cut to this size and the
/// message says so in its `bertflow.error.value_bytes` header (brokers refuse messages above
/// `message.max.bytes`, 1 MB by default).
pub const DLQ_MAX_VALUE_BYTES: usize = 900 * 1024;

/// The Kafka records of a chunk, when it came from Kafka.
pub(crate) fn kafka_records(out: &ChunkOutput) -> Option<&KafkaRecords> {
    out.origin
        .stream()
        .and_then(|s| s.as_any().downcast_ref::<KafkaRecords>())
}

/// Dead letters of a chunk's records that were not written; `limit`: the dead-letter topic's
/// `max.message.bytes`, when known.
pub fn dead_letters(topic: &str, out: &ChunkOutput, limit: Option<usize>) -> Vec<Outgoing> {
    let Some(k) = kafka_records(out) else {
        return Vec::new();
    };
    out.errors
        .iter()
        .filter(|e| !e.written)
        .map(|e| dead_letter(topic, &k.messages[e.row as usize], e, limit))
        .collect()
}

/// One dead letter for the message of a failed record. A value longer than the dead-letter
/// topic takes (or than [`DLQ_MAX_VALUE_BYTES`]) is cut, and the message says so.
pub fn dead_letter(topic: &str, m: &KafkaMessage, e: &ErrorRow, limit: Option<usize>) -> Outgoing {
    let value = m.value.clone().unwrap_or_default();
    let mut headers: Vec<(String, Vec<u8>)> = m
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    headers.push(("bertflow.error.reason".into(), e.reason.as_bytes().to_vec()));
    headers.push((
        "bertflow.error.stage".into(),
        e.stage.as_str().as_bytes().to_vec(),
    ));
    if let Some(t) = e.task {
        headers.push(("bertflow.error.task".into(), t.as_bytes().to_vec()));
    }
    headers.extend(provenance(m));
    let mut letter = Outgoing {
        topic: topic.to_string(),
        key: m.key.clone(),
        value: Vec::new(),
        headers,
    };
    // Room for the value: the topic's limit less what the rest of the message takes.
    let room = limit.map_or(DLQ_MAX_VALUE_BYTES, |l| {
        l.saturating_sub(letter.size() + 64)
            .min(DLQ_MAX_VALUE_BYTES)
    });
    let value = if value.len() > room {
        letter.headers.push((
            "bertflow.error.value_bytes".into(),
            value.len().to_string().into_bytes(),
        ));
        value[..room].to_vec()
    } else {
        value
    };
    letter.value = value;
    letter
}

/// The dead-letter topic as the error output of a sink that writes elsewhere (rolling Parquet
/// files of a Kafka source), with its own producer.
pub struct DeadLetterTopic {
    topic: String,
    producer: KafkaProducer,
    limits: Limits,
    sent: u64,
}

impl DeadLetterTopic {
    pub fn new(
        topic: &str,
        bootstrap: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let limits = Limits::describe(bootstrap, properties, &[topic]);
        Ok(DeadLetterTopic {
            topic: topic.to_string(),
            producer: make_producer(bootstrap, properties, None, limits.get(topic))?,
            limits,
            sent: 0,
        })
    }
}

impl ErrorOutput for DeadLetterTopic {
    fn write(&mut self, out: &ChunkOutput) -> Result<()> {
        crate::connector::log_failures(out, true);
        let msgs = dead_letters(&self.topic, out, self.limits.get(&self.topic));
        if msgs.is_empty() {
            return Ok(());
        }
        let refused = send_all(&self.producer, &msgs, &self.limits)?;
        if let Some(r) = refused.first() {
            return Err(Error::sink(
                format!("kafka dead-letter topic {}", self.topic),
                format!("a dead letter was refused: {} (the dead-letter topic must take messages of up to {DLQ_MAX_VALUE_BYTES} bytes plus headers)", r.reason),
            ));
        }
        self.sent += msgs.len() as u64;
        DeadLettered {
            topic: self.topic.clone(),
            count: msgs.len(),
        }
        .emit();
        Ok(())
    }

    fn finish(&mut self) -> Result<Option<PathBuf>> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Error::sink(format!("kafka topic {}", self.topic), e.to_string()))?;
        Ok(None)
    }

    fn describe(&self) -> String {
        format!("kafka topic {} ({} dead letters)", self.topic, self.sent)
    }
}

pub(crate) fn provenance(m: &KafkaMessage) -> Vec<(String, Vec<u8>)> {
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
