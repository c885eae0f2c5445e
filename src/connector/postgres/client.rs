//! Connecting: the connection settings (URL plus the libpq environment), TLS, and which server
//! errors are worth retrying.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};

/// Where to connect, and how to name it in messages (never with the password).
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    pub describe: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

/// Read the connection settings: the URL (or key/value string) first, then the libpq
/// environment variables for what it leaves out.
pub fn target(url: Option<&str>, connect_timeout: Duration) -> Result<Target> {
    target_with_env(url, connect_timeout, |k| std::env::var(k).ok())
}

pub(crate) fn target_with_env(
    url: Option<&str>,
    connect_timeout: Duration,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Target> {
    let mut config = match url {
        Some(u) => Config::from_str(u).map_err(|e| {
            // The URL may hold a password: the message names the problem, not the URL.
            Error::config(format!(
                "sink.postgres.url is not a valid connection URL or key/value string: {e} (e.g. postgres://user@host:5432/db)"
            ))
        })?,
        None => Config::new(),
    };
    if config.get_hosts().is_empty() {
        let hosts = env("PGHOST").unwrap_or_else(|| "localhost".into());
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            config.host(h);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            let port = p
                .trim()
                .parse::<u16>()
                .map_err(|_| Error::config(format!("PGPORT={p:?} is not a port number")))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(user);
    }
    if config.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            config.password(p);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            config.dbname(d);
        }
    }
    let url_sets_ssl = url.is_some_and(|u| u.contains("sslmode"));
    if !url_sets_ssl {
        if let Some(m) = env("PGSSLMODE") {
            config.ssl_mode(match m.as_str() {
                "disable" => SslMode::Disable,
                "require" | "verify-ca" | "verify-full" => SslMode::Require,
                _ => SslMode::Prefer,
            });
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "bertflow".into()));
    }
    let timeout = env("PGCONNECT_TIMEOUT")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(connect_timeout);
    config.connect_timeout(timeout);
    let describe = describe(&config);
    Ok(Target { config, describe })
}

/// `postgres://user@host:port/db`, without the password.
fn describe(c: &Config) -> String {
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        c.get_user().unwrap_or(""),
        c.get_dbname().or(c.get_user()).unwrap_or("")
    )
}

fn tls() -> Result<postgres_native_tls::MakeTlsConnector> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Ok(path) = std::env::var("PGSSLROOTCERT") {
        let pem = std::fs::read(&path)
            .map_err(|e| Error::config(format!("PGSSLROOTCERT {path}: {e}")))?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| Error::config(format!("PGSSLROOTCERT {path}: {e}")))?;
        builder.add_root_certificate(cert);
    }
    let connector = builder
        .build()
        .map_err(|e| Error::config(format!("cannot set up TLS for Postgres: {e}")))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// Open a connection; its background task runs on `rt` (driven by every `block_on`).
pub fn connect(
    rt: &tokio::runtime::Runtime,
    target: &Target,
) -> std::result::Result<Client, tokio_postgres::Error> {
    let tls = match tls() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "TLS is not available; connecting without it");
            return rt.block_on(async {
                let (client, conn) = target.config.connect(tokio_postgres::NoTls).await?;
                rt.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "postgres connection ended");
                    }
                });
                Ok(client)
            });
        }
    };
    rt.block_on(async {
        let (client, conn) = target.config.connect(tls).await?;
        rt.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    })
}

/// A runtime for one connection's I/O, driven from the calling thread.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the Postgres I/O runtime: {e}")))
}

/// What to do about a failed statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server cannot be reached, restarts, or asked to try again: retry with backoff.
    Transient,
    /// A value of one row was refused (invalid data, a constraint, a size limit): the row goes
    /// to the error output, the rest of the batch is written.
    Row,
    /// Anything else (permissions, a changed table): the job stops with the message.
    Fatal,
}

pub fn classify(e: &tokio_postgres::Error) -> Failure {
    if e.is_closed() {
        return Failure::Transient;
    }
    let Some(code) = e.code() else {
        // No server error: I/O, timeout, a lost connection.
        return Failure::Transient;
    };
    let c = code.code();
    if c.starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::IDLE_SESSION_TIMEOUT
    {
        return Failure::Transient;
    }
    if c.starts_with("22") || c.starts_with("23") || c.starts_with("54") {
        return Failure::Row;
    }
    Failure::Fatal
}

/// The server's message with its SQLSTATE, or the client's.
pub fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn url_first_then_libpq_environment() {
        let t = target_with_env(
            Some("postgres://app@db.internal:6543/search"),
            Duration::from_secs(5),
            env(&[
                ("PGHOST", "other"),
                ("PGPASSWORD", "s3cret"),
                ("PGDATABASE", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(t.describe, "postgres://app@db.internal:6543/search");
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = target_with_env(
            None,
            Duration::from_secs(5),
            env(&[
                ("PGHOST", "pg"),
                ("PGPORT", "5433"),
                ("PGUSER", "loader"),
                ("PGDATABASE", "vectors"),
                ("PGSSLMODE", "require"),
            ]),
        )
        .unwrap();
        assert_eq!(t.describe, "postgres://loader@pg:5433/vectors");
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn password_in_url_never_in_descriptions_or_errors() {
        let t = target_with_env(
            Some("postgres://app:hunter2@h/db"),
            Duration::from_secs(1),
            env(&[]),
        )
        .unwrap();
        assert!(!t.describe.contains("hunter2"));
        let e = target_with_env(
            Some("postgres://app:hunter2@h:notaport/db"),
            Duration::from_secs(1),
            env(&[]),
        )
        .err()
        .unwrap();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = target_with_env(None, Duration::from_secs(1), env(&[("PGPORT", "x")]))
            .err()
            .unwrap();
        assert!(e.to_string().contains("PGPORT"));
    }
}
