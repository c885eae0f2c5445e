//! A small HTTP endpoint for operators: `GET /metrics` (Prometheus text format), `GET /health`
//! (liveness: the process serves requests) and `GET /ready` (readiness: models loaded and, for a
//! Kafka source, partitions assigned by the group). One thread, blocking I/O: it serves
//! scrapes and probes, nothing else.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::{Error, Result};

/// What `/ready` reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Models are loaded.
    pub models_loaded: AtomicBool,
    /// Set when the source has no group to join (batch jobs); else see `joined`.
    pub no_group: AtomicBool,
    /// The consumer has partitions assigned.
    joined: std::sync::Mutex<Option<Arc<AtomicBool>>>,
}

impl Health {
    /// Readiness follows this flag (a Kafka consumer's "partitions assigned").
    pub fn set_joined(&self, flag: Arc<AtomicBool>) {
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
                .is_some_and(|j| j.load(Ordering::SeqCst));
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
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Bind `listen` (e.g. `127.0.0.1:9464`; port 0 picks a free one) and serve in a thread.
    pub fn start(
        listen: &str,
        handle: Option<PrometheusHandle>,
        health: Arc<Health>,
    ) -> Result<Self> {
        let listener = TcpListener::bind(listen).map_err(|e| {
            Error::config(format!(
                "metrics.listen: cannot listen on {listen}: {e} (choose a free address, or metrics.listen: null to turn the endpoint off)"
            ))
        })?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_t = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !stop_t.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, handle.as_ref(), &health),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .map_err(Error::Io)?;
        tracing::info!(%addr, "metrics and health on http://{addr}/metrics, /health, /ready");
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, handle: Option<&PrometheusHandle>, health: &Health) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let body = match handle {
                Some(h) => {
                    h.run_upkeep();
                    h.render()
                }
                None => String::new(),
            };
            ("200 OK", "text/plain; version=0.0.4", body)
        }
        ("GET", "/health") | ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/ready") | ("GET", "/readyz") => {
            let (ok, msg) = health.ready();
            (
                if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "text/plain",
                msg,
            )
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /health or /ready\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", String::new()),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}
