//! Typed telemetry events. Each knows its metric names and labels; emitting one updates the
//! metrics (a no-op when no recorder is installed) and, where useful, logs.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Something that happened, recorded as metrics.
pub trait Event {
    fn emit(self);
}

/// `bertflow_build_info{version}` = 1.
pub struct BuildInfo;

impl Event for BuildInfo {
    fn emit(self) {
        gauge!("bertflow_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    }
}

/// A chunk of records was read from the source.
pub struct RecordsRead {
    pub source: &'static str,
    pub count: usize,
}

impl Event for RecordsRead {
    fn emit(self) {
        counter!("bertflow_records_in_total", "source" => self.source).increment(self.count as u64);
    }
}

/// Records written to the results.
pub struct RecordsWritten {
    pub count: usize,
}

impl Event for RecordsWritten {
    fn emit(self) {
        counter!("bertflow_records_out_total").increment(self.count as u64);
    }
}

/// Records sent to the error output, by stage and task (`none` for source errors).
pub struct RecordsFailed<'a> {
    pub stage: &'a str,
    pub task: &'a str,
    pub count: usize,
}

impl Event for RecordsFailed<'_> {
    fn emit(self) {
        counter!(
            "bertflow_records_errored_total",
            "stage" => self.stage.to_string(),
            "task" => self.task.to_string()
        )
        .increment(self.count as u64);
    }
}

/// Dead letters acknowledged by the brokers.
pub struct DeadLettered {
    pub topic: String,
    pub count: usize,
}

impl Event for DeadLettered {
    fn emit(self) {
        counter!("bertflow_dead_letters_total", "topic" => self.topic).increment(self.count as u64);
    }
}

/// One model call.
pub struct BatchRun {
    pub task: &'static str,
    pub sequences: usize,
    pub real_tokens: usize,
    pub padded_tokens: usize,
    pub model_time: Duration,
}

impl Event for BatchRun {
    fn emit(self) {
        let t = self.task;
        histogram!("bertflow_batch_size", "task" => t).record(self.sequences as f64);
        histogram!("bertflow_batch_tokens", "task" => t).record(self.padded_tokens as f64);
        histogram!("bertflow_model_seconds", "task" => t).record(self.model_time.as_secs_f64());
        counter!("bertflow_tokens_total", "task" => t, "kind" => "real")
            .increment(self.real_tokens as u64);
        counter!("bertflow_tokens_total", "task" => t, "kind" => "padded")
            .increment(self.padded_tokens as u64);
        if self.padded_tokens > 0 {
            gauge!("bertflow_padding_ratio", "task" => t)
                .set(1.0 - self.real_tokens as f64 / self.padded_tokens as f64);
        }
    }
}

/// Time one chunk spent in a stage (`tokenize`, `infer`, `postprocess`, `write`).
pub struct StageTime {
    pub stage: &'static str,
    pub elapsed: Duration,
}

impl Event for StageTime {
    fn emit(self) {
        histogram!("bertflow_stage_seconds", "stage" => self.stage)
            .record(self.elapsed.as_secs_f64());
    }
}

/// Chunks waiting in the queue in front of a stage.
pub struct QueueDepth {
    pub queue: &'static str,
    pub depth: usize,
}

impl Event for QueueDepth {
    fn emit(self) {
        gauge!("bertflow_queue_depth", "queue" => self.queue).set(self.depth as f64);
    }
}

/// The execution provider a task's model runs on.
pub struct ExecutionProviderInUse {
    pub task: &'static str,
    pub provider: String,
}

impl Event for ExecutionProviderInUse {
    fn emit(self) {
        gauge!("bertflow_execution_provider", "task" => self.task, "provider" => self.provider)
            .set(1.0);
    }
}

/// Consumer lag of a partition (from librdkafka statistics).
pub struct ConsumerLag<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub lag: i64,
}

impl Event for ConsumerLag<'_> {
    fn emit(self) {
        gauge!(
            "bertflow_kafka_consumer_lag",
            "topic" => self.topic.to_string(),
            "partition" => self.partition.to_string()
        )
        .set(self.lag as f64);
    }
}

/// An offset committed for a partition.
pub struct OffsetCommitted<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl Event for OffsetCommitted<'_> {
    fn emit(self) {
        gauge!(
            "bertflow_kafka_committed_offset",
            "topic" => self.topic.to_string(),
            "partition" => self.partition.to_string()
        )
        .set(self.offset as f64);
    }
}

/// Partitions assigned to this worker now.
pub struct PartitionsAssigned {
    pub count: usize,
}

impl Event for PartitionsAssigned {
    fn emit(self) {
        gauge!("bertflow_kafka_assigned_partitions").set(self.count as f64);
    }
}

/// An exactly-once transaction was aborted (the source rewinds).
pub struct TransactionAborted;

impl Event for TransactionAborted {
    fn emit(self) {
        counter!("bertflow_kafka_transactions_aborted_total").increment(1);
    }
}

/// A write to a sink's destination failed for a reason that may pass (the destination is
/// unreachable or restarting) and is tried again after `backoff`.
pub struct SinkRetried<'a> {
    pub sink: &'static str,
    pub destination: &'a str,
    pub reason: &'a str,
    pub backoff: Duration,
}

impl Event for SinkRetried<'_> {
    fn emit(self) {
        counter!("bertflow_sink_retries_total", "sink" => self.sink).increment(1);
        gauge!("bertflow_sink_available", "sink" => self.sink).set(0.0);
        tracing::warn!(
            sink = self.sink,
            destination = self.destination,
            reason = self.reason,
            retry_in_ms = self.backoff.as_millis() as u64,
            "cannot write; retrying (nothing of the micro-batch is committed before it succeeds)"
        );
    }
}

/// A sink's destination took a write.
pub struct SinkAvailable {
    pub sink: &'static str,
}

impl Event for SinkAvailable {
    fn emit(self) {
        gauge!("bertflow_sink_available", "sink" => self.sink).set(1.0);
    }
}
