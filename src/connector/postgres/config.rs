//! `sink.postgres`: a Postgres table (with pgvector for embeddings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Postgres table. Embeddings become pgvector `vector(dim)` (or `halfvec(dim)`), sentiment
/// labels and scores `text` and `real`, entity, answer and score lists `jsonb`, passthrough
/// columns their SQL equivalents. Each micro-batch is one transaction: rows are loaded with
/// binary `COPY` (into a temporary staging table for `upsert`), then merged with one statement.
/// The connection is checked at start-up, before any record is read; a lost connection is
/// retried with backoff (the source waits meanwhile) and nothing is lost. Guarantees:
/// [vector-databases.md](vector-databases.md).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Connection URL (`postgres://user@host:5432/db?sslmode=require`) or libpq key/value string
    /// (`host=... dbname=...`). Parts left out come from the libpq environment: `PGHOST`,
    /// `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGAPPNAME`,
    /// `PGCONNECT_TIMEOUT`. Put the password in `PGPASSWORD` rather than in the URL; it is never
    /// logged either way.
    ///
    /// Default: the libpq environment only (`PGHOST` or `localhost`, port 5432)
    #[serde(default)]
    pub url: Option<String>,
    /// Target table, optionally schema-qualified (`search.documents`).
    pub table: String,
    /// `upsert`: insert or update by `id` (re-running a job is idempotent; needs a primary key or
    /// unique index on the id column, which `create_table` makes). `insert`: append every record
    /// (e.g. feedback events); no key needed.
    #[serde(default)]
    pub mode: WriteMode,
    /// Create the table (and `index`, when given) if it does not exist. An existing table is
    /// checked against the output (columns, types, vector dimension) either way.
    ///
    /// Default: false
    #[serde(default)]
    pub create_table: bool,
    /// Vector column type of embeddings: `vector` (float4) or `halfvec` (float2, half the
    /// storage, pgvector >= 0.7).
    #[serde(default)]
    pub vector_type: VectorType,
    /// Vector index made with `create_table` on the embedding column.
    ///
    /// Default: none
    #[serde(default)]
    pub index: Option<IndexConfig>,
    /// Output column → table column, for the columns whose names differ
    /// (e.g. `{id: doc_id, embedding: vec}`). Other output columns keep their names. Map a column
    /// to `null` to leave it out of the table (the id cannot be left out).
    ///
    /// Type: map string → string or null
    /// Default: `{}`
    #[serde(default)]
    pub columns: BTreeMap<String, Option<String>>,
    /// Kafka source only: store the consumed offsets in `offsets_table` in the same transaction
    /// as the rows, and resume from them when partitions are assigned. Each input record is then
    /// in the table exactly once, also in `insert` mode, across crashes and rebalances. Failed
    /// records go to the error output before the transaction commits (at least once).
    ///
    /// Default: false
    #[serde(default)]
    pub exactly_once: bool,
    /// Table of the offsets stored with `exactly_once` (created when missing), keyed by target
    /// table, consumer group, topic and partition.
    ///
    /// Default: `bertflow_offsets` (in the target table's schema)
    #[serde(default)]
    pub offsets_table: Option<String>,
    /// Backoff between attempts while Postgres cannot be reached (connection refused or lost,
    /// server restarting or shutting down, too many connections, serialization failures).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Seconds to wait for a connection at start-up and on each reconnect attempt.
    ///
    /// Default: 10
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
}

/// How rows are written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Insert, or update the row with the same id.
    #[default]
    Upsert,
    /// Append.
    Insert,
}

/// Column type of embeddings.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VectorType {
    /// `vector(dim)`: 4-byte floats.
    #[default]
    Vector,
    /// `halfvec(dim)`: 2-byte floats.
    Halfvec,
}

impl VectorType {
    pub fn sql_name(self) -> &'static str {
        match self {
            VectorType::Vector => "vector",
            VectorType::Halfvec => "halfvec",
        }
    }
}

/// A pgvector index on the embedding column.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// `hnsw` (better recall/speed trade-off, any time) or `ivfflat` (faster to build; make it
    /// after loading, as its lists come from the rows present).
    pub method: IndexMethod,
    /// Distance the index serves; queries must use its operator (`<=>` cosine, `<->` l2,
    /// `<#>` negative inner product; for bit columns of `tasks.embed.output: binary / ubinary`:
    /// `<~>` hamming, `<%>` jaccard).
    ///
    /// Default: cosine
    #[serde(default)]
    pub distance: Distance,
    /// HNSW: links per node.
    ///
    /// Default: 16
    #[serde(default)]
    pub m: Option<u32>,
    /// HNSW: candidate list size while building.
    ///
    /// Default: 64
    #[serde(default)]
    pub ef_construction: Option<u32>,
    /// IVFFlat: number of lists.
    ///
    /// Default: 100
    #[serde(default)]
    pub lists: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexMethod {
    Hnsw,
    Ivfflat,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    #[default]
    Cosine,
    L2,
    InnerProduct,
    /// Bit columns (`tasks.embed.output: binary / ubinary`): `<~>`.
    Hamming,
    /// Bit columns: `<%>`.
    Jaccard,
}

impl Distance {
    /// The pgvector operator class for a column of type `typname` (`vector`, `halfvec`, `bit`);
    /// `Err` when the distance does not apply to it.
    pub fn opclass_for(self, typname: &str) -> std::result::Result<String, String> {
        let d = match self {
            Distance::Cosine => "cosine",
            Distance::L2 => "l2",
            Distance::InnerProduct => "ip",
            Distance::Hamming => "hamming",
            Distance::Jaccard => "jaccard",
        };
        let bits = matches!(self, Distance::Hamming | Distance::Jaccard);
        match (typname, bits) {
            ("bit", true) | ("vector" | "halfvec" | "sparsevec", false) => {
                Ok(format!("{typname}_{d}_ops"))
            }
            ("bit", false) => Err(format!(
                "{d} does not apply to bit vectors: use hamming or jaccard"
            )),
            (_, true) => Err(format!(
                "{d} applies to bit vectors only (tasks.embed.output: binary or ubinary): use cosine, l2 or inner_product"
            )),
            (other, _) => Err(format!("no vector index for column type {other}")),
        }
    }
}

/// Backoff while Postgres cannot be reached.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait, doubled after each failed attempt.
    ///
    /// Default: 200
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts.
    ///
    /// Default: 10000
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Give up (the job fails, nothing of the unfinished micro-batch is committed) after this
    /// many seconds without success; `0` retries until the worker is stopped.
    ///
    /// Default: 0 with a Kafka source, 600 with a Parquet source
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            timeout_s: None,
        }
    }
}

fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_connect_timeout_s() -> u64 {
    10
}

/// The configuration reference's notes on this sink (see the connector registry).
pub const REFERENCE: crate::connector::ReferenceNotes = crate::connector::ReferenceNotes {
    intro: "Guarantees, schema, index advice: [vector-databases.md](vector-databases.md).",
    subsections: &[("index", "IndexConfig"), ("retry", "RetryConfig")],
};
