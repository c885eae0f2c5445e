//! The Kafka connector's seams: how its source and sink configurations are checked and open.

use super::config::{KafkaSinkConfig, KafkaSourceConfig, ValueFormat};
use super::{client, KafkaSink, KafkaSource};
use crate::connector::{
    ErrorSinkConfig, Sink, SinkContext, SinkSpec, Source, SourceFacts, SourceOptions, SourceSpec,
    StreamFacts,
};
use crate::error::{Error, Result};

impl SourceSpec for KafkaSourceConfig {
    fn facts(&self) -> SourceFacts {
        SourceFacts {
            kind: "kafka",
            streaming: true,
            stream: Some(StreamFacts {
                servers: self.bootstrap_servers.clone(),
                group: self.group_id.clone(),
                properties: self.properties.clone(),
            }),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(Error::config(
                "source.kafka.bootstrap_servers is empty: give host:port[,host:port...]",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(Error::config(
                "source.kafka.group_id is empty: name the consumer group",
            ));
        }
        if self.max_wait_ms == 0 {
            return Err(Error::config("source.kafka.max_wait_ms must be at least 1"));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::config(
                "source.kafka.topics: give at least one topic name (or a regex starting with ^)",
            ));
        }
        if self.format == ValueFormat::Json && self.json.text.trim().is_empty() {
            return Err(Error::config("source.kafka.json.text must name a field"));
        }
        Ok(())
    }

    fn open(&self, opts: SourceOptions<'_>) -> Result<Box<dyn Source>> {
        Ok(Box::new(KafkaSource::open(self, &opts)?))
    }
}

impl SinkSpec for KafkaSinkConfig {
    fn validate(&self, source: &SourceFacts, errors: Option<&ErrorSinkConfig>) -> Result<()> {
        if self.topic.trim().is_empty() {
            return Err(Error::config(
                "sink.kafka.topic is empty: name the output topic",
            ));
        }
        if self
            .bootstrap_servers
            .as_ref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(Error::config(
                "sink.kafka.bootstrap_servers is empty: give host:port[,host:port...], or leave it out to use the source's",
            ));
        }
        if errors.is_some_and(|e| e.path.is_some()) && source.stream.is_some() {
            return Err(Error::config(
                "sink.errors.path with a Kafka source and a Kafka sink: give sink.errors.topic (dead-letter topic), so that failed records are committed with the results",
            ));
        }
        if source.stream.is_none() && self.bootstrap_servers.is_none() {
            return Err(Error::config(
                "sink.kafka.bootstrap_servers is required when the source is not Kafka",
            ));
        }
        if self.exactly_once {
            if source.stream.is_none() {
                return Err(Error::config(
                    "sink.kafka.exactly_once needs a Kafka source (offsets are committed in the output transaction)",
                ));
            }
            if errors.and_then(|e| e.topic.as_ref()).is_none() {
                return Err(Error::config(
                    "sink.kafka.exactly_once needs `sink.errors.topic`: dead letters must be written in the same transaction as the results",
                ));
            }
        }
        Ok(())
    }

    fn commits_source_positions(&self) -> bool {
        self.exactly_once
    }

    fn open(&self, ctx: SinkContext<'_>) -> Result<Box<dyn Sink>> {
        let stream = ctx.source.stream.as_ref();
        let servers = self
            .bootstrap_servers
            .clone()
            .or_else(|| stream.map(|s| s.servers.clone()))
            .ok_or_else(|| Error::config("sink.kafka.bootstrap_servers is required"))?;
        let txn_id = self.exactly_once.then(|| {
            self.transactional_id.clone().unwrap_or_else(|| {
                let group = stream.map(|s| s.group.as_str()).unwrap_or("bertflow");
                format!("bertflow-{group}-{}", client::host_name())
            })
        });
        // Dead letters go to the topic within the sink's own transactions; a file is kept beside.
        let dlq_topic = ctx.errors.and_then(|e| e.topic.clone());
        let error_file = ctx.error_outputs.error_file()?;
        if dlq_topic.is_none() && error_file.is_none() {
            crate::connector::warn_not_kept("set sink.errors.topic or sink.errors.path");
        }
        Ok(Box::new(KafkaSink::new(
            self,
            &servers,
            dlq_topic,
            error_file,
            txn_id,
            ctx.link,
            ctx.shutdown,
        )?))
    }
}
