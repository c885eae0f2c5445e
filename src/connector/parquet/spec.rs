//! The Parquet connector's seams: how its source and sink configurations are checked and open.

use super::config::{ParquetSinkConfig, ParquetSourceConfig, Shard};
use super::{sink, ParquetSink, ParquetSource, RollingParquetSink};
use crate::connector::storage::StorageOptions;
use crate::connector::{
    chunk_rows, ErrorSinkConfig, Sink, SinkContext, SinkSpec, Source, SourceFacts, SourceOptions,
    SourceSpec,
};
use crate::error::{Error, Result};

impl SourceSpec for ParquetSourceConfig {
    fn facts(&self) -> SourceFacts {
        SourceFacts {
            kind: "parquet",
            streaming: false,
            stream: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if let Some(s) = &self.shard {
            Shard::parse(s).map_err(|e| match e {
                Error::Config(m) => {
                    Error::config(format!("source.parquet.shard (or --shard): {m}"))
                }
                other => other,
            })?;
        }
        Ok(())
    }

    fn preflight(&self) -> Result<()> {
        if crate::connector::storage::is_remote(&self.path) {
            return Ok(());
        }
        super::source::resolve_inputs(&self.path, &self.storage_options).map(|_| ())
    }

    fn open(&self, opts: SourceOptions<'_>) -> Result<Box<dyn Source>> {
        let source = ParquetSource::open(self, opts.passthrough, opts.text_columns, opts.window)?;
        Ok(match self.shard.as_deref().map(Shard::parse).transpose()? {
            Some(shard) => Box::new(source.with_shard(shard)),
            None => Box::new(source),
        })
    }
}

impl SinkSpec for ParquetSinkConfig {
    fn validate(&self, _source: &SourceFacts, _errors: Option<&ErrorSinkConfig>) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config(
                "sink.parquet.path is empty: give the output file (or, with rows_per_file or a Kafka source, directory)",
            ));
        }
        // The format and compression fit together.
        super::file::OutputFormat::new(self)?;
        if self.rows_per_file == Some(0) || self.row_group_rows == 0 {
            return Err(Error::config(
                "sink.parquet: rows_per_file and row_group_rows must be at least 1",
            ));
        }
        Ok(())
    }

    fn check_destinations(&self) -> Result<()> {
        sink::check_output(&self.path, &self.storage_options)
    }

    fn file_storage(&self) -> Option<&StorageOptions> {
        Some(&self.storage_options)
    }

    fn open(&self, ctx: SinkContext<'_>) -> Result<Box<dyn Sink>> {
        if self.one_row_per_chunk && !chunk_rows::is_flat(&ctx.schema) {
            let schema = ctx.schema.clone();
            return chunk_rows::one_row_per_chunk(
                &schema,
                ctx.passages,
                "sink.parquet.one_row_per_chunk",
                |flat| {
                    self.open(SinkContext {
                        schema: flat,
                        ..ctx
                    })
                },
            );
        }
        let error_path = ctx.errors.and_then(|e| e.path.clone());
        let error_options = ctx.errors.and_then(|e| e.storage_options.clone());
        if ctx.source.streaming {
            let dlq = ctx.error_outputs.dead_letter_topic()?;
            return Ok(Box::new(RollingParquetSink::new(
                self,
                ctx.schema,
                ctx.error_schema,
                error_path,
                error_options,
                dlq,
            )?));
        }
        Ok(Box::new(ParquetSink::new(
            self,
            ctx.schema,
            ctx.error_schema,
            error_path,
            error_options,
        )?))
    }
}
