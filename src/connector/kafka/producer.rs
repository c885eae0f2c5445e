//! Producers: idempotent (`acks=all`) and transactional, with librdkafka's logs routed to
//! `tracing`; sending messages with their delivery reports, which tell refused messages (one
//! record's problem) from failures of the connection (the sink's).

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, ProducerContext};

use crate::error::{Error, Result};

/// Longest wait of a transaction call.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ProducerLog;

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        super::client::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::client::error(error, reason);
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
    max_batch_bytes: Option<usize>,
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
    // Record batches no larger than the smallest topic limit, so that good messages are never
    // refused for sharing a batch.
    if let Some(b) = max_batch_bytes.filter(|b| *b < 1_000_000) {
        defaults.push((
            "batch.size",
            b.saturating_sub(BATCH_OVERHEAD).max(1).to_string(),
        ));
    }
    tracing::info!(
        servers = %bootstrap,
        transactional_id = transactional_id.unwrap_or("-"),
        properties = %super::client::redacted(user),
        "kafka producer"
    );
    let producer: KafkaProducer = super::client::client_config(bootstrap, &defaults, user)
        .create_with_context(ProducerLog)
        .map_err(|e| {
            Error::sink(
                format!("kafka {bootstrap}"),
                format!("cannot create the producer: {e} (check sink.kafka.properties)"),
            )
        })?;
    if transactional_id.is_some() {
        producer.init_transactions(TXN_TIMEOUT).map_err(|e| {
            Error::unavailable(
                format!("kafka {bootstrap}"),
                "cannot initialise transactions (the brokers must be reachable and support transactions)",
                e,
            )
        })?;
    }
    Ok(producer)
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outgoing {
    /// Bytes of the message in a record batch of its own, uncompressed (an upper bound).
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
            + BATCH_OVERHEAD
    }
}

/// The largest record batch each topic takes (`max.message.bytes`), as the brokers report it.
/// A message larger than its topic's limit is refused before it is sent.
#[derive(Debug, Clone, Default)]
pub struct Limits(std::collections::HashMap<String, usize>);

/// Bytes a record batch adds around one message (batch and record headers), rounded up.
const BATCH_OVERHEAD: usize = 128;

impl Limits {
    /// Ask the brokers for the `max.message.bytes` of `topics`; a topic that cannot be
    /// described (missing, not allowed) has no limit here and is left to the brokers.
    pub fn describe(
        bootstrap: &str,
        user: &std::collections::BTreeMap<String, String>,
        topics: &[&str],
    ) -> Limits {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        let admin: AdminClient<ProducerLog> =
            match super::client::client_config(bootstrap, &[], user)
                .create_with_context(ProducerLog)
            {
                Ok(a) => a,
                Err(_) => return Limits::default(),
            };
        let specs: Vec<ResourceSpecifier<'_>> =
            topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let mut limits = Limits::default();
        if let Ok(results) = futures::executor::block_on(admin.describe_configs(&specs, &opts)) {
            for (topic, r) in topics.iter().zip(results) {
                let value = r.ok().and_then(|c| {
                    c.entries
                        .iter()
                        .find(|e| e.name == "max.message.bytes")
                        .and_then(|e| e.value.as_deref())
                        .and_then(|v| v.parse::<usize>().ok())
                });
                if let Some(v) = value {
                    limits.0.insert(topic.to_string(), v);
                }
            }
        }
        limits
    }

    pub fn get(&self, topic: &str) -> Option<usize> {
        self.0.get(topic).copied()
    }

    /// Why `m` cannot go to its topic, if it is larger than the topic takes.
    pub fn check(&self, m: &Outgoing) -> Option<String> {
        let limit = self.get(&m.topic)?;
        let size = m.size();
        (size > limit).then(|| {
            format!(
                "kafka topic {} refused the message: {size} bytes, above the topic's max.message.bytes ({limit}) (raise it, or send less: fewer passthrough columns)",
                m.topic
            )
        })
    }
}

/// Why the brokers (or the producer) refused one message.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Index of the message in the list sent.
    pub index: usize,
    pub reason: String,
}

/// Errors that concern one message alone (its size or content), not the connection: such a
/// message is refused and its record goes to the error output; anything else stops the sink.
pub fn refuses_the_message(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::MessageProduction(c) => *c,
        _ => return false,
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
    )
}

/// Messages handed to the producer, their delivery reports still to come.
pub struct Pending {
    futures: Vec<(usize, String, DeliveryFuture)>,
    refused: Vec<Refused>,
}

impl Pending {
    /// Every delivery report has arrived (without blocking).
    pub fn is_done(&mut self) -> Result<bool> {
        use futures::FutureExt;
        let mut i = 0;
        while i < self.futures.len() {
            let f = &mut self.futures[i].2;
            match f.now_or_never() {
                Some(r) => {
                    let (index, topic, _) = self.futures.swap_remove(i);
                    if let Some(reason) = delivery_failure(&topic, r) {
                        self.refused.push(Refused {
                            index,
                            reason: reason?,
                        });
                    }
                }
                None => i += 1,
            }
        }
        Ok(self.futures.is_empty())
    }

    /// Wait for every delivery report. Returns the messages refused one by one (their size or
    /// content); any other failure is an error.
    ///
    /// In a transaction, one refused message fails the others still queued (purged): then
    /// only the refusals are returned, as they are the cause.
    pub fn wait(mut self) -> Result<Vec<Refused>> {
        let mut other = None;
        for (index, topic, f) in std::mem::take(&mut self.futures) {
            match delivery_failure(&topic, futures::executor::block_on(f)) {
                None => {}
                Some(Ok(reason)) => self.refused.push(Refused { index, reason }),
                Some(Err(e)) => {
                    other.get_or_insert(e);
                }
            }
        }
        match other {
            Some(e) if self.refused.is_empty() => Err(e),
            _ => {
                self.refused.sort_by_key(|r| r.index);
                Ok(self.refused)
            }
        }
    }
}

/// `None`: delivered; `Some(Ok(reason))`: this message was refused; `Some(Err)`: the sink
/// cannot go on.
fn delivery_failure(
    topic: &str,
    r: std::result::Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
) -> Option<Result<String>> {
    match r {
        Ok(Ok(_)) => None,
        Ok(Err((e, _))) if refuses_the_message(&e) => {
            Some(Ok(format!("kafka topic {topic} refused the result message: {e} (raise the topic's max.message.bytes, or send less: fewer passthrough columns, format: json)")))
        }
        Ok(Err((e, _))) => Some(Err(Error::unavailable(
            format!("kafka topic {topic}"),
            "delivery failed",
            e,
        ))),
        Err(_) => Some(Err(Error::sink(
            format!("kafka topic {topic}"),
            "delivery result lost (producer closed)",
        ))),
    }
}

/// Hand messages to the producer without waiting for their delivery reports. Messages larger
/// than their topic takes (`limits`) are refused without being sent.
pub fn send(producer: &KafkaProducer, messages: &[Outgoing], limits: &Limits) -> Result<Pending> {
    let mut pending = Pending {
        futures: Vec::with_capacity(messages.len()),
        refused: Vec::new(),
    };
    for (index, m) in messages.iter().enumerate() {
        if let Some(reason) = limits.check(m) {
            pending.refused.push(Refused { index, reason });
            continue;
        }
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
                    pending.futures.push((index, m.topic.clone(), f));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) if refuses_the_message(&e) => {
                    pending.refused.push(Refused {
                        index,
                        reason: format!(
                            "kafka topic {} refused the message: {e} (it is larger than the producer's message.max.bytes)",
                            m.topic
                        ),
                    });
                    break;
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
    Ok(pending)
}

/// Of the messages `indices` that the brokers refused together, the ones they refuse alone: a
/// refused record batch takes every message in it down, so each is sent again on its own.
pub fn refused_alone(
    producer: &KafkaProducer,
    messages: &[Outgoing],
    refused: Vec<Refused>,
    limits: &Limits,
) -> Result<Vec<Refused>> {
    let mut alone = Vec::new();
    for r in refused {
        let again = send(producer, std::slice::from_ref(&messages[r.index]), limits)?.wait()?;
        if let Some(a) = again.into_iter().next() {
            alone.push(Refused {
                index: r.index,
                reason: a.reason,
            });
        }
    }
    Ok(alone)
}

/// Send messages and wait until the brokers acknowledge every one; returns the messages
/// refused one by one.
pub fn send_all(
    producer: &KafkaProducer,
    messages: &[Outgoing],
    limits: &Limits,
) -> Result<Vec<Refused>> {
    send(producer, messages, limits)?.wait()
}
