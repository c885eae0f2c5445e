//! Configuration of the Kafka connector: `source.kafka` and `sink.kafka`.

use serde::{Deserialize, Serialize};

use crate::connector::default_text_column;

/// How a Kafka record's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// The whole value is the text (UTF-8).
    Text,
    /// The value is a JSON object; `json` says where the id, text and question are.
    Json,
}

/// Where the fields of a JSON value are: dotted paths (`doc.body`) or JSON pointers (`/doc/body`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonFields {
    /// Field holding the text: a dotted path (`doc.body`, array items by index: `items.0`) or a
    /// JSON pointer (`/doc/body`). Must be a string.
    ///
    /// Type: path
    #[serde(default = "default_text_column")]
    pub text: String,
    /// Field holding the record id (string or number). When absent the id is
    /// `<topic>/<partition>/<offset>`.
    ///
    /// Type: path
    #[serde(default)]
    pub id: Option<String>,
    /// Field holding the question, for `tasks.qa.question_column` (any name there: with a Kafka
    /// source the question comes from this path).
    ///
    /// Type: path
    #[serde(default)]
    pub question: Option<String>,
    /// Fields holding further text columns that tasks read beside the text, by column name
    /// (e.g. `{question: q}`); a column asked for as a question falls back to `question`.
    ///
    /// Type: map of column name to path
    /// Default: `{}`
    #[serde(default)]
    pub columns: std::collections::BTreeMap<String, String>,
}

impl Default for JsonFields {
    fn default() -> Self {
        JsonFields {
            text: default_text_column(),
            id: None,
            question: None,
            columns: Default::default(),
        }
    }
}

/// Where a new consumer group starts reading a partition with no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// A long-running consumer-group member: `bertflow run` consumes until SIGTERM or SIGINT (then it
/// stops fetching, abandons the micro-batches in flight, flushes and commits what its output
/// holds and leaves the group; a second signal exits at once). Delivery guarantees and scaling: [streaming.md](streaming.md).
///
/// bertflow's consumer defaults: `enable.auto.commit=false` (offsets are committed by bertflow
/// after the output is durable), `isolation.level=read_committed`,
/// `partition.assignment.strategy=cooperative-sticky` (a rebalance moves only the partitions that
/// change owner; the others keep their work in flight), `queued.max.messages.kbytes=16384` (bounded
/// prefetch), `enable.partition.eof=false`.
///
/// Passthrough with a Kafka source (`sink.passthrough`): `key` (Binary), `headers` (`Map<Utf8,
/// Binary>`), `topic` (Utf8), `partition` (Int32), `offset` (Int64), `timestamp` (Int64, ms since
/// the epoch); with `format: json` any other name is a JSON path whose value is copied as a string
/// (non-string values as JSON text).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topics to consume. An entry starting with `^` is a regular expression (`^docs\..*`), matched
    /// against topics as they appear.
    pub topics: Vec<String>,
    /// Consumer group. Workers with the same group share the partitions.
    pub group_id: String,
    /// `text`: the whole value is the text (UTF-8). `json`: the value is a JSON object, fields
    /// found by `json`.
    #[serde(default = "default_value_format")]
    pub format: ValueFormat,
    #[serde(default)]
    pub json: JsonFields,
    /// Where a group with no committed offset starts (`auto.offset.reset`).
    #[serde(default = "default_start_from")]
    pub start_from: StartFrom,
    /// A micro-batch closes this long after its first record even when it holds fewer than
    /// `batching.window_records`; the tokenizer then cuts it into model batches by `max_batch_size`
    /// / `max_batch_tokens`. Bounds latency at low traffic.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Accepted for older pipeline files and ignored (with a warning): a rebalance does not wait
    /// for work in flight. What is durable when partitions are revoked is committed; records of
    /// the revoked partitions still in flight are read again by their next owner (duplicates,
    /// never losses; with `sink.kafka.exactly_once` they are left out of the output).
    #[serde(default)]
    pub revoke_wait_ms: Option<u64>,
    /// Larger values go to the error output (reason says the size) instead of the model.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Any librdkafka consumer property (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, `session.timeout.ms`, ...). They override bertflow's
    /// defaults. Values of keys that look secret (`password`, `secret`, `token`, `sasl.jaas`, ...)
    /// are never logged.
    ///
    /// Type: map string → string
    /// Default: `{}`
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_value_format() -> ValueFormat {
    ValueFormat::Text
}
fn default_start_from() -> StartFrom {
    StartFrom::Earliest
}
fn default_max_wait_ms() -> u64 {
    500
}
fn default_max_value_bytes() -> usize {
    1 << 20
}

/// How results are encoded in Kafka messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaOutputFormat {
    /// One JSON object per input record (docs/schema.md).
    Json,
    /// One Arrow IPC stream per micro-batch.
    Arrow,
}

/// A Kafka topic.
///
/// Producer defaults: `enable.idempotence=true`, `acks=all`, `compression.type=zstd`,
/// `linger.ms=5`, `message.max.bytes=10485760`. In at-least-once mode a micro-batch is durable (and
/// its offsets are committed) once the brokers acknowledged every message of it; up to 8
/// micro-batches are sent before the oldest is acknowledged, and they become durable in order. A
/// result message the brokers refuse (larger than the topic's `max.message.bytes`, an invalid
/// record) sends its record to the error output with the brokers' reason; the rest of the
/// micro-batch is written.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Brokers of the output topic. Required with a Parquet source.
    ///
    /// Default: the source's
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// Output topic.
    pub topic: String,
    /// `json`: one message per input record, keyed by the input key (Parquet source: by the id).
    /// `arrow`: one Arrow IPC stream per micro-batch. Shapes: [schema.md](schema.md#kafka-output).
    #[serde(default = "default_kafka_output_format")]
    pub format: KafkaOutputFormat,
    /// Each micro-batch is one Kafka transaction holding its results, its dead letters and its
    /// input offsets (`send_offsets_to_transaction`): `read_committed` consumers of the output see
    /// each input exactly once. Needs a Kafka source and `sink.errors.topic`.
    ///
    /// Default: false
    #[serde(default)]
    pub exactly_once: bool,
    /// Transactional id of this worker instance. Keep it stable across restarts of one instance
    /// (e.g. the pod name of a StatefulSet) and unique across instances: a restarted instance then
    /// fences its previous incarnation and aborts its open transaction at once.
    ///
    /// Default: `bertflow-<group_id>-<host name>`
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Any librdkafka producer property; overrides the defaults. Secret values are never logged.
    ///
    /// Type: map string → string
    /// Default: `{}`
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn default_kafka_output_format() -> KafkaOutputFormat {
    KafkaOutputFormat::Json
}
