//! The Kafka connector: everything bertflow does with Kafka.
//!
//! - [`config`]: `source.kafka` and `sink.kafka`;
//! - [`client`]: client configuration shared by consumer and producers (secrets kept out of
//!   logs) and librdkafka's logs routed to `tracing`;
//! - [`consumer`]: the source, a consumer-group member turning messages into chunks;
//! - [`group`]: rebalance callbacks, delivered to the source as [`group::GroupEvent`] messages;
//! - [`offsets`]: which offsets are durable, per partition and assignment;
//! - [`codec`]: decoding message values into texts, ids and passthrough columns;
//! - [`producer`]: idempotent and transactional producers and sending with acknowledgements;
//! - [`sink`]: the Kafka sink (JSON or Arrow IPC messages, exactly-once transactions);
//! - [`dead_letter`]: dead-letter messages and the dead-letter topic as an error output.

pub mod client;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod group;
pub mod offsets;
pub mod producer;
pub mod sink;
pub mod spec;

use std::sync::Arc;

pub use self::consumer::KafkaSource;
pub use self::dead_letter::DeadLetterTopic;
pub use self::sink::KafkaSink;

/// One consumed Kafka message as it arrived: where it was and its original bytes (for the
/// dead-letter output and for keying results).
#[derive(Debug, Clone)]
pub struct KafkaMessage {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch, when the message has a timestamp.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl KafkaMessage {
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}
