//! The connector registry: the list of source and sink connectors a pipeline file can name, one
//! line each. Everything else of a connector lives in its own folder: its configuration type,
//! its checks and its `open` (the [`SourceSpec`] and [`SinkSpec`] it implements), and its section
//! of the configuration reference (generated from the configuration type).
//!
//! Adding a sink: a folder under `connector/` whose configuration type implements [`SinkSpec`],
//! and one line in the `sinks!` list below.

use serde::{Deserialize, Serialize};

use super::kafka::config::{KafkaSinkConfig, KafkaSourceConfig};
use super::parquet::config::{ParquetSinkConfig, ParquetSourceConfig};
use super::postgres::config::PostgresSinkConfig;
use super::python::config::{PythonSinkConfig, PythonSourceConfig};
use super::{ErrorSinkConfig, ReferenceNotes, SinkSpec, SourceSpec, NO_NOTES};

/// One registered connector, as the configuration reference lists it.
#[derive(Debug)]
pub struct Connector {
    /// Its key under `source:` or `sink:`.
    pub key: &'static str,
    /// The schema name of its configuration type.
    pub def: String,
    pub notes: &'static ReferenceNotes,
}

/// One registry entry as the configuration reference lists it.
macro_rules! connector {
    ($key:ident, $ty:ty, $notes:expr) => {
        Connector {
            key: stringify!($key),
            def: <$ty as schemars::JsonSchema>::schema_name().into_owned(),
            notes: &$notes,
        }
    };
}

/// Generates the `source:` key: an enum of the source connectors (externally tagged: the key
/// names the connector), its [`SourceSpec`] dispatch and the list of keys for the reference.
macro_rules! sources {
    ($($(#[$doc:meta])* $key:ident => $variant:ident($ty:ty, $notes:expr),)+) => {
        /// Where records come from: exactly one connector, named by its key
        /// (`source: {parquet: {...}}` or `source: {kafka: {...}}`).
        #[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        pub enum SourceConfig {
            $($(#[$doc])* $variant($ty),)+
        }

        impl SourceConfig {
            /// The connector's own configuration, through the seam every source implements.
            pub fn spec(&self) -> &dyn SourceSpec {
                match self {
                    $(SourceConfig::$variant(c) => c,)+
                }
            }

            /// Every source connector, for the configuration reference.
            pub fn connectors() -> Vec<Connector> {
                vec![$(connector!($key, $ty, $notes),)+]
            }
        }
    };
}

/// Generates the `sink:` key: the sink connector keys beside the keys every sink shares, the
/// enum of the connector configured, its [`SinkSpec`] dispatch and the list of keys.
macro_rules! sinks {
    ($($(#[$doc:meta])* $key:ident => $variant:ident($ty:ty, $notes:expr),)+) => {
        /// The sink connector.
        #[derive(Debug, Clone, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum SinkKind {
            $($(#[$doc])* $variant($ty),)+
        }

        /// Where results go: exactly one sink connector, named by its key, beside the keys every
        /// sink shares.
        #[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct SinkFile {
            $(
                $(#[$doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $key: Option<$ty>,
            )+
            /// Input columns copied unchanged to the output (after `id`).
            ///
            /// Default: `[]`
            #[serde(default)]
            pub passthrough: Vec<String>,
            /// Where records that could not be processed go.
            #[serde(default)]
            pub errors: Option<ErrorSinkConfig>,
            /// When one task fails for a record, still write the record with that task's columns
            /// null and an error row naming the task (default). `false`: the whole record goes to
            /// the error output, as no task result is written for it.
            #[serde(default = "default_true")]
            pub partial_results: bool,
        }

        impl SinkKind {
            /// The connector's own configuration, through the seam every sink implements.
            pub fn spec(&self) -> &dyn SinkSpec {
                match self {
                    $(SinkKind::$variant(c) => c,)+
                }
            }

            /// Every sink connector, for the configuration reference.
            pub fn connectors() -> Vec<Connector> {
                vec![$(connector!($key, $ty, $notes),)+]
            }
        }

        impl TryFrom<SinkFile> for SinkConfig {
            type Error = String;
            fn try_from(f: SinkFile) -> std::result::Result<Self, String> {
                let mut kinds = Vec::new();
                $(if let Some(c) = f.$key {
                    kinds.push(SinkKind::$variant(c));
                })+
                if kinds.len() != 1 {
                    let keys = [$(stringify!($key),)+];
                    return Err(format!(
                        "configure exactly one sink connector, one of {} (e.g. `sink: {{parquet: {{path: out.parquet}}}}`); found {}",
                        keys.join(", "),
                        if kinds.is_empty() { "none".to_string() } else { kinds.len().to_string() }
                    ));
                }
                Ok(SinkConfig {
                    kind: kinds.remove(0),
                    passthrough: f.passthrough,
                    errors: f.errors,
                    partial_results: f.partial_results,
                })
            }
        }

        impl From<SinkConfig> for SinkFile {
            fn from(c: SinkConfig) -> SinkFile {
                let mut f = SinkFile {
                    $($key: None,)+
                    passthrough: c.passthrough,
                    errors: c.errors,
                    partial_results: c.partial_results,
                };
                match c.kind {
                    $(SinkKind::$variant(x) => f.$key = Some(x),)+
                }
                f
            }
        }
    };
}

// ------------------------------------------------------------------------------ the registry

sources! {
    /// Parquet files (a file, a glob or a directory).
    parquet => Parquet(ParquetSourceConfig, NO_NOTES),
    /// Kafka topics, read as a consumer-group member.
    kafka => Kafka(KafkaSourceConfig, NO_NOTES),
    /// Arrow batches handed in by the Python package (Spark, Ray, pyarrow).
    python => Python(PythonSourceConfig, NO_NOTES),
}

sinks! {
    /// A Parquet file or a directory of part files.
    parquet => Parquet(ParquetSinkConfig, NO_NOTES),
    /// A Kafka topic.
    kafka => Kafka(KafkaSinkConfig, NO_NOTES),
    /// A Postgres table; embeddings as pgvector columns.
    postgres => Postgres(PostgresSinkConfig, super::postgres::config::REFERENCE),
    /// Arrow batches handed back to the Python package.
    python => Python(PythonSinkConfig, NO_NOTES),
}

// -------------------------------------------------------------------------- shared sink keys

/// Where results go: the sink connector and the keys every sink shares.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(try_from = "SinkFile", into = "SinkFile")]
pub struct SinkConfig {
    pub kind: SinkKind,
    /// Input columns copied to the output unchanged.
    pub passthrough: Vec<String>,
    /// Where records that could not be processed go.
    pub errors: Option<ErrorSinkConfig>,
    /// When one task fails for a record, still write the record with that task's columns null
    /// (and an error row naming the task); `false` sends the whole record to the error output.
    pub partial_results: bool,
}

fn default_true() -> bool {
    true
}

impl schemars::JsonSchema for SinkConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        SinkFile::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SinkFile::json_schema(generator)
    }
}

impl SinkConfig {
    pub fn spec(&self) -> &dyn SinkSpec {
        self.kind.spec()
    }

    /// The sink commits the source's positions itself, with its output (exactly-once
    /// transactions), so the source must not.
    pub fn commits_source_positions(&self) -> bool {
        self.spec().commits_source_positions()
    }

    /// The file sink's configuration, for the command line's file options (`--output`,
    /// `--shard`).
    pub fn parquet(&self) -> Option<&ParquetSinkConfig> {
        match &self.kind {
            SinkKind::Parquet(p) => Some(p),
            _ => None,
        }
    }

    pub fn parquet_mut(&mut self) -> Option<&mut ParquetSinkConfig> {
        match &mut self.kind {
            SinkKind::Parquet(p) => Some(p),
            _ => None,
        }
    }
}

impl SourceConfig {
    /// A streaming source: it runs until stopped and acknowledges durable output.
    pub fn is_streaming(&self) -> bool {
        self.spec().facts().streaming
    }

    /// The file source's configuration, for the command line's file options (`--input`,
    /// `--shard`, `validate --scan`).
    pub fn parquet(&self) -> Option<&ParquetSourceConfig> {
        match self {
            SourceConfig::Parquet(p) => Some(p),
            _ => None,
        }
    }

    pub fn parquet_mut(&mut self) -> Option<&mut ParquetSourceConfig> {
        match self {
            SourceConfig::Parquet(p) => Some(p),
            _ => None,
        }
    }
}
