//! What the Kafka source and sink share: client configuration (with secrets kept out of logs)
//! and librdkafka's log and error callbacks routed to `tracing`.

use std::collections::BTreeMap;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

/// Property names whose values must never be logged.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "sasl.jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `key=value` pairs for a log line, secrets replaced by `***`.
pub fn redacted(props: &BTreeMap<String, String>) -> String {
    props
        .iter()
        .map(|(k, v)| {
            if is_secret(k) {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A client configuration: our defaults, then the user's properties (which win).
pub fn client_config(
    bootstrap: &str,
    defaults: &[(&str, String)],
    user: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for (k, v) in user {
        c.set(k, v);
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Route a librdkafka log line to `tracing`.
pub fn log(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {msg}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac}: {msg}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
    }
}

/// Route a librdkafka client error to `tracing`. Broker outages surface here and are retried by
/// the client; they are warnings, not failures of the worker.
pub fn error(error: KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", error = %error, "{reason}");
}

/// Host name of this machine, for default transactional ids.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let mut p = BTreeMap::new();
        p.insert("sasl.password".to_string(), "hunter2".to_string());
        p.insert("security.protocol".to_string(), "SASL_SSL".to_string());
        p.insert("ssl.key.password".to_string(), "k".to_string());
        let s = redacted(&p);
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("security.protocol=SASL_SSL"), "{s}");
        assert!(s.contains("sasl.password=***"), "{s}");
    }
}
