//! Telemetry: typed events (`events.rs`) that update Prometheus metrics and log through
//! `tracing`, and the HTTP endpoint (`server.rs`) serving `/metrics`, `/health` and `/ready`.
//!
//! Every metric bertflow exports is declared by an event here, so the list in
//! docs/operations.md and the code cannot drift apart: an event's `emit` is the only place that
//! names its metrics.

pub mod events;
pub mod server;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

pub use events::*;
pub use server::{Health, MetricsServer};

/// The operator endpoint: `GET /metrics` (Prometheus), `/health` (liveness), `/ready`
/// (readiness). Metric names and probes: [operations.md](operations.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve the endpoint.
    ///
    /// Default: on for Kafka sources, off for batch jobs
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Address to bind. `127.0.0.1` keeps it local; `0.0.0.0:9464` exposes it (containers,
    /// Kubernetes). Port 0 picks a free port, logged at start. When the default address is taken
    /// (several workers on one host), the worker runs without the endpoint and logs a warning; an
    /// address given explicitly that cannot be bound stops the worker.
    ///
    /// Type: `host:port`
    /// Default: `127.0.0.1:9464`
    #[serde(default)]
    pub listen: Option<String>,
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// Histogram buckets: batch sizes (sequences), tokens, and seconds.
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
const TOKEN_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0,
];
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide Prometheus recorder (once); returns its handle for rendering.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_batch_size".into()),
                    SIZE_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_batch_tokens".into()),
                        TOKEN_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                        SECONDS_BUCKETS,
                    )
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(h) => {
                    BuildInfo.emit();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

/// Peak resident memory of this process (Linux), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
