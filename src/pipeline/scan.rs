//! `bertflow validate --scan`: read every record of a Parquet source, no models, to check the
//! input (readable, text column usable) and to measure reading alone (throughput, peak memory).

use std::time::Instant;

use crate::config::PipelineConfig;
use crate::connector::parquet::config::Shard;
use crate::error::{Error, Result};

/// What a scan found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanReport {
    /// The inputs, as the source describes them.
    pub inputs: String,
    /// Records read.
    pub records: u64,
    /// Records the source could not use (null or non-text text column, invalid UTF-8).
    pub bad_records: u64,
    /// The first few reasons, with the record's location.
    pub examples: Vec<String>,
    pub seconds: f64,
    pub records_per_second: f64,
    /// Peak resident memory of the process (Linux), MiB.
    pub peak_rss_mib: f64,
}

/// Read the pipeline's source to the end (Parquet sources; a shard reads its own files).
pub fn scan(cfg: &PipelineConfig) -> Result<ScanReport> {
    let Some(p) = cfg.source.parquet() else {
        return Err(Error::config(
            "--scan reads Parquet sources; a Kafka source is checked by running the pipeline",
        ));
    };
    if let Some(s) = &p.shard {
        Shard::parse(s)?;
    }
    let started = Instant::now();
    let mut source = super::open_source(cfg, false, Default::default())?;
    let mut report = ScanReport {
        inputs: source.describe(),
        records: 0,
        bad_records: 0,
        examples: Vec::new(),
        seconds: 0.0,
        records_per_second: 0.0,
        peak_rss_mib: 0.0,
    };
    while let Some(chunk) = source.next_chunk()? {
        report.records += chunk.texts.len() as u64;
        report.bad_records += chunk.errors.len() as u64;
        for e in chunk.errors.iter().take(5 - report.examples.len().min(5)) {
            report
                .examples
                .push(format!("{}: {}", chunk.origin.describe(e.row), e.reason));
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.records_per_second = report.records as f64 / report.seconds.max(1e-9);
    report.peak_rss_mib = crate::telemetry::peak_rss_mib();
    Ok(report)
}
