//! The Postgres connector: results into a Postgres table, embeddings as pgvector columns.
//!
//! - [`config`]: the keys of `sink.postgres`;
//! - [`client`]: connection settings (URL and libpq environment), TLS, which errors to retry;
//! - [`kind`]: the SQL kind of an output column (text, number, vector, bits, JSON);
//! - [`table`]: output columns → table columns, `create_table`, the start-up check, and the
//!   binary encoding of values;
//! - [`offsets`]: Kafka offsets stored with the rows (exactly-once) and where a source resumes;
//! - [`sink`]: one transaction per chunk (binary `COPY`, set-based merge, rejected rows to the
//!   error output, retries with backoff).

pub mod client;
pub mod config;
pub mod kind;
pub mod offsets;
pub mod sink;
pub mod spec;
pub mod table;

pub use self::config::PostgresSinkConfig;
pub use self::sink::{PostgresSink, PostgresSinkOptions};
