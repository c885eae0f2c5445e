//! The Postgres connector's seams: how its sink configuration is checked and opens.

use super::config::PostgresSinkConfig;
use super::{PostgresSink, PostgresSinkOptions};
use crate::connector::{chunk_rows, ErrorSinkConfig, Sink, SinkContext, SinkSpec, SourceFacts};
use crate::error::{Error, Result};

impl SinkSpec for PostgresSinkConfig {
    fn validate(&self, source: &SourceFacts, _errors: Option<&ErrorSinkConfig>) -> Result<()> {
        if self.exactly_once && source.stream.is_none() {
            return Err(Error::config(
                "sink.postgres.exactly_once needs a Kafka source (with a Parquet source, mode: upsert makes re-runs idempotent)",
            ));
        }
        if self.table.trim().is_empty() {
            return Err(Error::config("sink.postgres.table must name a table"));
        }
        Ok(())
    }

    fn open(&self, ctx: SinkContext<'_>) -> Result<Box<dyn Sink>> {
        if !ctx.passages.is_empty() && !chunk_rows::is_flat(&ctx.schema) {
            // Passages go to Postgres one row each, keyed by id and passage index.
            let schema = ctx.schema.clone();
            return chunk_rows::one_row_per_chunk(&schema, ctx.passages, "sink.postgres", |flat| {
                self.open(SinkContext {
                    schema: flat,
                    ..ctx
                })
            });
        }
        let errors = match ctx.error_outputs.dead_letter_topic()? {
            Some(topic) => Some(topic),
            None => ctx.error_outputs.error_file()?,
        };
        if errors.is_none() {
            crate::connector::warn_not_kept(
                "set sink.errors.path, or sink.errors.topic with a Kafka source",
            );
        }
        Ok(Box::new(PostgresSink::new(
            self,
            ctx.schema,
            PostgresSinkOptions {
                group: ctx.source.stream.as_ref().map(|s| s.group.clone()),
                errors,
                streaming: ctx.source.streaming,
                shutdown: ctx.shutdown,
            },
        )?))
    }
}
