//! The HTTP endpoint for operators (axum on a single-threaded tokio runtime): `GET /metrics`
//! (Prometheus text format), `GET /health` (liveness: the process serves requests) and
//! `GET /ready` (readiness: models loaded and, for a Kafka source, partitions assigned by the
//! group).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::{Error, Result};
use crate::lifecycle::Readiness;

/// What `/ready` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Models are loaded.
    pub models_loaded: AtomicBool,
    /// Set when the source has no group to join (batch jobs); else see `joined`.
    pub no_group: AtomicBool,
    /// The consumer has partitions assigned.
    joined: std::sync::Mutex<Option<Readiness>>,
}

impl Health {
    /// Readiness follows the source's handle (a Kafka consumer's "partitions assigned").
    pub fn set_joined(&self, flag: Readiness) {
        *self.joined.lock().expect("health") = Some(flag);
    }

    pub fn ready(&self) -> (bool, String) {
        let models = self.models_loaded.load(Ordering::SeqCst);
        let joined = self.no_group.load(Ordering::SeqCst)
            || self
                .joined
                .lock()
                .expect("health")
                .as_ref()
                .is_some_and(Readiness::is_ready);
        let msg = format!(
            "models_loaded={models} group_joined={}\n",
            if self.no_group.load(Ordering::SeqCst) {
                "n/a".to_string()
            } else {
                joined.to_string()
            }
        );
        (models && joined, msg)
    }
}

pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the handlers share.
#[derive(Clone)]
struct State {
    handle: Option<PrometheusHandle>,
    health: Arc<Health>,
}

impl MetricsServer {
    /// Bind `listen` (e.g. `127.0.0.1:9464`; port 0 picks a free one) and serve on a thread of
    /// its own (a single-threaded tokio runtime).
    pub fn start(
        listen: &str,
        handle: Option<PrometheusHandle>,
        health: Arc<Health>,
    ) -> Result<Self> {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| {
            Error::config(format!(
                "metrics.listen: cannot listen on {listen}: {e} (choose a free address, or metrics.enabled: false to turn the endpoint off)"
            ))
        })?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(Error::Io)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(live))
            .route("/healthz", get(live))
            .route("/ready", get(ready))
            .route("/readyz", get(ready))
            .fallback(not_found)
            .with_state(State { handle, health });
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: cannot serve");
                            return;
                        }
                    };
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::warn!(error = %e, "metrics endpoint stopped");
                    }
                })
            })
            .map_err(Error::Io)?;
        tracing::info!(%addr, "metrics and health on http://{addr}/metrics, /health, /ready");
        Ok(MetricsServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn metrics(AxState(s): AxState<State>) -> impl IntoResponse {
    let body = match &s.handle {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(AxState(s): AxState<State>) -> impl IntoResponse {
    let (ok, msg) = s.health.ready();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, msg)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "try /metrics, /health or /ready\n")
}
