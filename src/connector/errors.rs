//! Choosing where failed records go beside a sink: the dead-letter topic of `sink.errors.topic`
//! on the source's cluster, or the error file of `sink.errors.path` (Parquet or Arrow IPC, local
//! or in an object store). Sinks ask for them through [`ErrorOutputs`]; the file sinks also keep
//! a default error file of their own.

use arrow::datatypes::SchemaRef;

use super::kafka::DeadLetterTopic;
use super::parquet::ErrorFile;
use super::{ErrorOutput, ErrorOutputs, ErrorSinkConfig, SourceFacts};
use crate::error::{Error, Result};

/// The error outputs of one pipeline: its `sink.errors`, its source and the error schema.
pub struct PipelineErrors<'a> {
    pub errors: Option<&'a ErrorSinkConfig>,
    pub source: &'a SourceFacts,
    pub schema: SchemaRef,
    /// The storage options of the sink's own files (an error file in the same store uses
    /// them unless `sink.errors.storage_options` is given).
    pub sink_storage: Option<super::storage::StorageOptions>,
}

impl ErrorOutputs for PipelineErrors<'_> {
    fn dead_letter_topic(&self) -> Result<Option<Box<dyn ErrorOutput>>> {
        let Some(topic) = self.errors.and_then(|e| e.topic.as_ref()) else {
            return Ok(None);
        };
        let stream = self.source.stream.as_ref().ok_or_else(|| {
            Error::config(
                "sink.errors.topic needs a Kafka source (its brokers receive the dead letters); use sink.errors.path",
            )
        })?;
        Ok(Some(Box::new(DeadLetterTopic::new(
            topic,
            &stream.servers,
            &stream.properties,
        )?)))
    }

    fn error_file(&self) -> Result<Option<Box<dyn ErrorOutput>>> {
        let Some(e) = self.errors else {
            return Ok(None);
        };
        let Some(path) = &e.path else {
            return Ok(None);
        };
        let options = e
            .storage_options
            .clone()
            .or_else(|| self.sink_storage.clone())
            .unwrap_or_default();
        Ok(Some(Box::new(ErrorFile::new(
            path.clone(),
            self.schema.clone(),
            options,
        )?)))
    }
}

/// Before any work: the error file of `sink.errors.path`, when in an object store, answers with
/// its credentials and its bucket exists.
pub fn check_error_file(
    errors: Option<&ErrorSinkConfig>,
    sink_storage: Option<&super::storage::StorageOptions>,
) -> Result<()> {
    let Some(e) = errors else {
        return Ok(());
    };
    if let Some(path) = &e.path {
        let options = e
            .storage_options
            .clone()
            .or_else(|| sink_storage.cloned())
            .unwrap_or_default();
        super::parquet::sink::check_output(path, &options)?;
    }
    Ok(())
}
