//! What kind of SQL value an output column becomes, from its Arrow type and the embedding
//! metadata the tasks set (`float16` -> `halfvec`, `binary` / `ubinary` -> `bit(n)`, sparse
//! vectors -> `sparsevec(n)`).

use arrow::datatypes::{DataType, Field};

use super::config::VectorType;
use crate::record::{EMBEDDING_DIMENSIONS_KEY, EMBEDDING_TYPE_KEY, SPARSE_DIMENSIONS_KEY};

/// What kind of SQL value an output column becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Bool,
    Bytes,
    /// An embedding of this dimension (`vector`, or `halfvec` for float16 embeddings).
    Vector(usize),
    /// A binary-quantized embedding of this many dimensions (`bit(n)`).
    Bits(usize),
    /// A sparse vector over a vocabulary of this size (`sparsevec(n)`), from `tasks.sparse`.
    Sparse(usize),
    /// Lists, structs and anything else: their JSON form.
    Json,
}

impl Kind {
    /// The kind of an output field (embedding metadata first, then the Arrow type).
    pub(super) fn of(field: &Field) -> Kind {
        let meta = field.metadata();
        if let Some(n) = meta.get(SPARSE_DIMENSIONS_KEY).and_then(|d| d.parse().ok()) {
            return Kind::Sparse(n);
        }
        if let Some("binary" | "ubinary") = meta.get(EMBEDDING_TYPE_KEY).map(String::as_str) {
            if let Some(n) = meta
                .get(EMBEDDING_DIMENSIONS_KEY)
                .and_then(|d| d.parse().ok())
            {
                return Kind::Bits(n);
            }
        }
        match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Kind::Int,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::Boolean => Kind::Bool,
            DataType::Binary | DataType::LargeBinary | DataType::FixedSizeBinary(_) => Kind::Bytes,
            DataType::FixedSizeList(item, n)
                if matches!(item.data_type(), DataType::Float32 | DataType::Float16) =>
            {
                Kind::Vector(*n as usize)
            }
            _ => Kind::Json,
        }
    }

    /// The vector type of a `Vector` field: `halfvec` for float16 embeddings, else `configured`.
    pub(super) fn vector_type(field: &Field, configured: VectorType) -> VectorType {
        match field.data_type() {
            DataType::FixedSizeList(item, _) if item.data_type() == &DataType::Float16 => {
                VectorType::Halfvec
            }
            _ => configured,
        }
    }

    /// The `pg_type.typname` `create_table` gives the column (`""` where it does not matter).
    pub(super) fn create_typname(self, vt: VectorType) -> String {
        match self {
            Kind::Vector(_) => vt.sql_name().to_string(),
            Kind::Bits(_) => "bit".into(),
            Kind::Sparse(_) => "sparsevec".into(),
            Kind::Json => "jsonb".into(),
            _ => String::new(),
        }
    }

    /// The SQL type `create_table` gives the column.
    pub(super) fn create_type(self, dt: &DataType, vt: VectorType) -> String {
        match self {
            Kind::Text => "text".into(),
            Kind::Int => match dt {
                DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
                DataType::Int32 | DataType::UInt16 => "integer".into(),
                _ => "bigint".into(),
            },
            Kind::Float => match dt {
                DataType::Float64 => "double precision".into(),
                _ => "real".into(),
            },
            Kind::Bool => "boolean".into(),
            Kind::Bytes => "bytea".into(),
            Kind::Vector(n) => format!("{}({n})", vt.sql_name()),
            Kind::Bits(n) => format!("bit({n})"),
            Kind::Sparse(n) => format!("sparsevec({n})"),
            Kind::Json => "jsonb".into(),
        }
    }

    /// Table column types (`pg_type.typname`) that take this kind.
    pub(super) fn accepts(self, typname: &str) -> bool {
        match self {
            Kind::Text => matches!(typname, "text" | "varchar" | "bpchar" | "citext"),
            Kind::Int => matches!(typname, "int2" | "int4" | "int8"),
            Kind::Float => matches!(typname, "float4" | "float8"),
            Kind::Bool => typname == "bool",
            Kind::Bytes => typname == "bytea",
            Kind::Vector(_) => matches!(typname, "vector" | "halfvec"),
            Kind::Bits(_) => typname == "bit",
            Kind::Sparse(_) => typname == "sparsevec",
            Kind::Json => matches!(typname, "json" | "jsonb"),
        }
    }
}
