//! The target table: which output column goes to which table column with which SQL type, the
//! DDL of `create_table`, the start-up check of an existing table, and the binary encoding of
//! Arrow values for `COPY`.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float16Array, Float32Array,
    Float64Array, RecordBatch,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::config::{PostgresSinkConfig, WriteMode};
use crate::error::{Error, Result};

pub use super::kind::Kind;

/// The most non-zero elements pgvector stores in one `sparsevec`.
pub const SPARSEVEC_MAX_NNZ: usize = 16_000;
/// The most non-zero elements of a `sparsevec` an HNSW index takes.
pub const SPARSEVEC_INDEX_MAX_NNZ: usize = 1_000;

/// One column written: where it comes from in the output and where it goes.
#[derive(Debug, Clone)]
pub struct Column {
    /// Index of the output column in the results batch.
    pub output: usize,
    pub output_name: String,
    /// Table column name (as written, quoted in SQL).
    pub name: String,
    pub kind: Kind,
    /// SQL type of the table column (`format_type`), e.g. `vector(384)`.
    pub sql_type: String,
    /// `pg_type.typname` of the table column, which decides the binary encoding.
    pub typname: String,
}

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn parse(s: &str) -> Result<TableName> {
        let parts: Vec<&str> = s.split('.').collect();
        let bad = || {
            Error::config(format!(
                "sink.postgres.table {s:?}: give `table` or `schema.table` (names are used as written, case-sensitive)"
            ))
        };
        match parts.as_slice() {
            [t] if !t.trim().is_empty() => Ok(TableName {
                schema: None,
                name: t.to_string(),
            }),
            [sc, t] if !sc.trim().is_empty() && !t.trim().is_empty() => Ok(TableName {
                schema: Some(sc.to_string()),
                name: t.to_string(),
            }),
            _ => Err(bad()),
        }
    }

    /// The quoted SQL name.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", ident(s), ident(&self.name)),
            None => ident(&self.name),
        }
    }

    /// A table beside this one (same schema).
    pub fn sibling(&self, name: &str) -> TableName {
        TableName {
            schema: self.schema.clone(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// What is written to the table and how.
#[derive(Debug, Clone)]
pub struct Plan {
    pub table: TableName,
    pub columns: Vec<Column>,
    /// The columns (indices into `columns`) that identify a row: the id, and the passage index
    /// when the rows are passages of chunked embeddings.
    pub key: Vec<usize>,
    pub mode: WriteMode,
    /// Output schema of the results batches.
    pub output: SchemaRef,
}

impl Plan {
    /// Map the output columns to table columns (types as `create_table` would make them; an
    /// existing table's actual types are filled in by [`Plan::check`]).
    pub fn new(cfg: &PostgresSinkConfig, output: SchemaRef) -> Result<Plan> {
        let table = TableName::parse(&cfg.table)?;
        for k in cfg.columns.keys() {
            if output.index_of(k).is_err() {
                let names: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(Error::config(format!(
                    "sink.postgres.columns: the output has no column {k:?} (its columns: {})",
                    names.join(", ")
                )));
            }
        }
        let mut columns = Vec::new();
        for (i, f) in output.fields().iter().enumerate() {
            let name = match cfg.columns.get(f.name()) {
                Some(Some(n)) => n.clone(),
                Some(None) if i == 0 => return Err(Error::config(
                    "sink.postgres.columns: the id column cannot be left out (rename it instead)",
                )),
                Some(None) => continue,
                None => f.name().clone(),
            };
            if let Some(t @ ("int8" | "uint8")) = f
                .metadata()
                .get(crate::record::EMBEDDING_TYPE_KEY)
                .map(String::as_str)
            {
                return Err(Error::config(format!(
                    "tasks.embed.output is {t}: pgvector has no {t} vector type; with sink.postgres use float32, float16 (halfvec) or binary / ubinary (bit), and keep {t} for Parquet and Kafka"
                )));
            }
            let kind = Kind::of(f);
            let vt = Kind::vector_type(f, cfg.vector_type);
            let sql_type = kind.create_type(f.data_type(), vt);
            let typname = kind.create_typname(vt);
            columns.push(Column {
                output: i,
                output_name: f.name().clone(),
                name,
                kind,
                sql_type,
                typname,
            });
        }
        let mut seen = HashMap::new();
        for c in &columns {
            if let Some(other) = seen.insert(c.name.clone(), c.output_name.clone()) {
                return Err(Error::config(format!(
                    "sink.postgres.columns: output columns {other:?} and {:?} both go to table column {:?}",
                    c.output_name, c.name
                )));
            }
        }
        let mut key = vec![0];
        if let Some(k) = columns
            .iter()
            .position(|c| c.output_name == crate::connector::chunk_rows::FLAT_COLUMNS[0])
        {
            key.push(k);
        }
        Ok(Plan {
            table,
            columns,
            key,
            mode: cfg.mode,
            output,
        })
    }

    /// The key columns' table names.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&k| self.columns[k].name.clone())
            .collect()
    }

    /// The key columns, quoted and comma-separated.
    pub fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|&k| ident(&self.columns[k].name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn id(&self) -> &Column {
        &self.columns[0]
    }

    /// The embedding columns.
    pub fn vectors(&self) -> impl Iterator<Item = &Column> {
        self.columns
            .iter()
            .filter(|c| matches!(c.kind, Kind::Vector(_) | Kind::Bits(_) | Kind::Sparse(_)))
    }

    /// `CREATE TABLE IF NOT EXISTS` for this plan.
    pub fn create_sql(&self) -> String {
        let mut cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", ident(&c.name), c.sql_type))
            .collect();
        if self.mode == WriteMode::Upsert {
            if self.key.len() == 1 {
                cols[0].push_str(" PRIMARY KEY");
            } else {
                cols.push(format!("PRIMARY KEY ({})", self.key_list()));
            }
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.table.sql(),
            cols.join(", ")
        )
    }

    /// Quoted column names, in plan order.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Check an existing table against the plan (and take its actual column types).
    /// `table` holds the table's columns: name → (format_type, typname, required), where
    /// required means NOT NULL without a default, identity or generated value.
    pub fn check(
        &mut self,
        table: &BTreeMap<String, (String, String, bool)>,
        unique_id: bool,
    ) -> Result<()> {
        let mut problems = Vec::new();
        for c in &mut self.columns {
            match table.get(&c.name) {
                None => problems.push(format!(
                    "has no column {:?} for output column {:?} (add it: ALTER TABLE {} ADD COLUMN {} {}; or map it elsewhere or to null with sink.postgres.columns)",
                    c.name,
                    c.output_name,
                    self.table.sql(),
                    ident(&c.name),
                    c.sql_type
                )),
                Some((sql_type, typname, _)) => {
                    if !c.kind.accepts(typname) {
                        let hint = match c.kind {
                            Kind::Bits(_) => " (tasks.embed.output binary/ubinary writes bit strings)",
                            Kind::Vector(_) if typname == "bit" => {
                                " (bit columns take tasks.embed.output: binary or ubinary)"
                            }
                            _ => "",
                        };
                        problems.push(format!(
                            "column {:?} is {sql_type}, which cannot hold output column {:?} (expected {}){hint}",
                            c.name, c.output_name, c.sql_type
                        ));
                        continue;
                    }
                    if let Kind::Vector(n) | Kind::Bits(n) | Kind::Sparse(n) = c.kind {
                        if let Some(dim) = type_dimension(sql_type) {
                            if dim != n {
                                problems.push(format!(
                                    "column {:?} is {sql_type}, but the model's embeddings have {n} dimensions (recreate the column as {}({n}), or use another table)",
                                    c.name, typname
                                ));
                                continue;
                            }
                        }
                    }
                    c.sql_type = sql_type.clone();
                    c.typname = typname.clone();
                }
            }
        }
        for (name, (sql_type, _, required)) in table {
            if *required && !self.columns.iter().any(|c| &c.name == name) {
                problems.push(format!(
                    "column {name:?} ({sql_type}) is NOT NULL without a default and no output column goes there (give it a default, or map an output column to it with sink.postgres.columns)"
                ));
            }
        }
        if self.mode == WriteMode::Upsert && !unique_id {
            problems.push(format!(
                "mode upsert needs a primary key or unique index on {} (ALTER TABLE {} ADD PRIMARY KEY ({})), or use mode: insert",
                self.key_list(),
                self.table.sql(),
                self.key_list()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "postgres table {} does not fit the output: {}",
                self.table,
                problems.join("; ")
            )))
        }
    }
}

/// The dimension of `vector(384)` / `halfvec(384)`, if it has one.
pub fn type_dimension(sql_type: &str) -> Option<usize> {
    let open = sql_type.find('(')?;
    let close = sql_type.find(')')?;
    sql_type[open + 1..close].trim().parse().ok()
}

/// One SQL value of a row, encoded for the table column's type (checked at start-up).
#[derive(Debug)]
pub enum Cell<'a> {
    Null,
    Text(&'a str),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Bytes(&'a [u8]),
    /// JSON text of a `json` / `jsonb` column.
    Json(&'a [u8]),
    Vector(pgvector::Vector),
    HalfVec(pgvector::HalfVector),
    /// A `bit(n)` value: its length in bits and its bytes (first bit in the highest bit).
    Bits(usize, Vec<u8>),
    /// A `sparsevec(n)` value: its dimension, ascending indices and their values.
    Sparse(usize, Vec<u32>, Vec<f32>),
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Text(s) => s.to_sql(ty, out),
            Cell::I16(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::F32(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
            Cell::Json(v) => {
                // jsonb's binary form is a version byte, then the JSON text; json's is the text.
                if *ty == Type::JSONB {
                    out.extend_from_slice(&[1]);
                }
                out.extend_from_slice(v);
                Ok(IsNull::No)
            }
            Cell::Vector(v) => v.to_sql(ty, out),
            Cell::HalfVec(v) => v.to_sql(ty, out),
            Cell::Sparse(dim, indices, values) => {
                // sparsevec's binary form: dimension, non-zero count, 0, indices, values.
                out.extend_from_slice(&(*dim as i32).to_be_bytes());
                out.extend_from_slice(&(indices.len() as i32).to_be_bytes());
                out.extend_from_slice(&0i32.to_be_bytes());
                for i in indices {
                    out.extend_from_slice(&(*i as i32).to_be_bytes());
                }
                for v in values {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                Ok(IsNull::No)
            }
            Cell::Bits(len, bytes) => {
                // bit's binary form: the length in bits, then the bytes.
                out.extend_from_slice(&(*len as i32).to_be_bytes());
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The values of one batch, column by column, ready to be encoded row by row.
pub struct Encoded<'a> {
    columns: Vec<ColumnValues<'a>>,
}

enum ColumnValues<'a> {
    Arrow {
        array: &'a ArrayRef,
        kind: Kind,
        typname: &'a str,
    },
    /// JSON text, one per row (`None`: null).
    Json(Vec<Option<Vec<u8>>>),
}

impl<'a> Encoded<'a> {
    pub fn new(plan: &'a Plan, batch: &'a RecordBatch) -> Result<Encoded<'a>> {
        let mut columns = Vec::with_capacity(plan.columns.len());
        for c in &plan.columns {
            let array = batch.column(c.output);
            columns.push(match c.kind {
                Kind::Json => ColumnValues::Json(json_values(&c.output_name, array)?),
                kind => ColumnValues::Arrow {
                    array,
                    kind,
                    typname: &c.typname,
                },
            });
        }
        Ok(Encoded { columns })
    }

    /// The cells of row `row`, or why a value cannot be stored.
    pub fn row(&self, plan: &Plan, row: usize) -> std::result::Result<Vec<Cell<'_>>, String> {
        let mut cells = Vec::with_capacity(self.columns.len());
        for (c, values) in plan.columns.iter().zip(&self.columns) {
            cells.push(match values {
                ColumnValues::Json(v) => match &v[row] {
                    Some(j) => Cell::Json(j),
                    None => Cell::Null,
                },
                ColumnValues::Arrow {
                    array,
                    kind,
                    typname,
                } => cell(array, *kind, typname, row)
                    .map_err(|e| format!("column {:?}: {e}", c.name))?,
            });
        }
        Ok(cells)
    }
}

fn cell<'a>(
    array: &'a ArrayRef,
    kind: Kind,
    typname: &str,
    row: usize,
) -> std::result::Result<Cell<'a>, String> {
    if array.is_null(row) {
        return Ok(Cell::Null);
    }
    Ok(match kind {
        Kind::Text => Cell::Text(match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().value(row),
            DataType::LargeUtf8 => array.as_string::<i64>().value(row),
            DataType::Utf8View => array.as_string_view().value(row),
            other => return Err(format!("unexpected type {other}")),
        }),
        Kind::Int => {
            let v = int_value(array, row)?;
            match typname {
                "int2" => Cell::I16(
                    i16::try_from(v).map_err(|_| format!("{v} is out of range for smallint"))?,
                ),
                "int4" => Cell::I32(
                    i32::try_from(v).map_err(|_| format!("{v} is out of range for integer"))?,
                ),
                _ => Cell::I64(
                    i64::try_from(v).map_err(|_| format!("{v} is out of range for bigint"))?,
                ),
            }
        }
        Kind::Float => {
            let v = match array.data_type() {
                DataType::Float16 => array
                    .as_primitive::<arrow::datatypes::Float16Type>()
                    .value(row)
                    .to_f64(),
                DataType::Float32 => array
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .expect("float32")
                    .value(row) as f64,
                _ => array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("float64")
                    .value(row),
            };
            if typname == "float4" {
                Cell::F32(v as f32)
            } else {
                Cell::F64(v)
            }
        }
        Kind::Bool => Cell::Bool(
            array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .expect("boolean")
                .value(row),
        ),
        Kind::Bytes => Cell::Bytes(match array.data_type() {
            DataType::Binary => array.as_binary::<i32>().value(row),
            DataType::LargeBinary => array.as_binary::<i64>().value(row),
            DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().value(row),
            other => return Err(format!("unexpected type {other}")),
        }),
        Kind::Vector(_) => {
            let list = array
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .expect("fixed-size list");
            let n = list.value_length() as usize;
            if let Some(halves) = list.values().as_any().downcast_ref::<Float16Array>() {
                let v = &halves.values()[row * n..(row + 1) * n];
                if v.iter().any(|x| !x.is_finite()) {
                    return Err("the embedding holds NaN or infinite values".into());
                }
                return Ok(Cell::HalfVec(pgvector::HalfVector::from(v.to_vec())));
            }
            let values = list
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .expect("float32 items");
            let v = &values.values()[row * n..(row + 1) * n];
            if v.iter().any(|x| !x.is_finite()) {
                return Err("the embedding holds NaN or infinite values".into());
            }
            if typname == "halfvec" {
                Cell::HalfVec(pgvector::HalfVector::from_f32_slice(v))
            } else {
                Cell::Vector(pgvector::Vector::from(v.to_vec()))
            }
        }
        Kind::Sparse(dim) => {
            let s = array.as_struct();
            let indices = s.column(0).as_list::<i32>().value(row);
            let values = s.column(1).as_list::<i32>().value(row);
            let indices = indices
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values();
            let values = values
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values();
            if indices.len() > SPARSEVEC_MAX_NNZ {
                return Err(format!(
                    "the sparse vector has {} non-zero weights; sparsevec stores at most {SPARSEVEC_MAX_NNZ} (set tasks.sparse.max_active_dims)",
                    indices.len()
                ));
            }
            Cell::Sparse(dim, indices.to_vec(), values.to_vec())
        }
        Kind::Bits(dims) => {
            let list = array
                .as_any()
                .downcast_ref::<FixedSizeListArray>()
                .expect("fixed-size list");
            let item = list.value(row);
            // ubinary bytes as they are; binary's int8 values are the bytes minus 128.
            let bytes: Vec<u8> = match item.data_type() {
                DataType::UInt8 => item
                    .as_primitive::<arrow::datatypes::UInt8Type>()
                    .values()
                    .to_vec(),
                DataType::Int8 => item
                    .as_primitive::<arrow::datatypes::Int8Type>()
                    .values()
                    .iter()
                    .map(|&b| (b as i16 + 128) as u8)
                    .collect(),
                other => return Err(format!("unexpected bit vector type {other}")),
            };
            Cell::Bits(dims, bytes)
        }
        Kind::Json => unreachable!("JSON columns are encoded beforehand"),
    })
}

fn int_value(array: &ArrayRef, row: usize) -> std::result::Result<i128, String> {
    use arrow::datatypes::*;
    Ok(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row) as i128,
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row) as i128,
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row) as i128,
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row) as i128,
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row) as i128,
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row) as i128,
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row) as i128,
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row) as i128,
        other => return Err(format!("unexpected type {other}")),
    })
}

/// The JSON text of each value of a column (as the Kafka JSON output writes it), from one
/// encoding of the column as rows `{"v":<value>}` (`{}` for a null).
fn json_values(name: &str, array: &ArrayRef) -> Result<Vec<Option<Vec<u8>>>> {
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![array.clone()])
        .map_err(|e| Error::sink("postgres output", e.to_string()))?;
    let rows = crate::connector::json_rows(&batch)?;
    rows.into_iter()
        .map(|r| {
            if r == b"{}" {
                return Ok(None);
            }
            r.strip_prefix(br#"{"v":"#)
                .and_then(|v| v.strip_suffix(b"}"))
                .map(|v| Some(v.to_vec()))
                .ok_or_else(|| {
                    Error::sink(
                        "postgres output",
                        format!("column {name}: unexpected JSON encoding"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::connector::postgres::config::PostgresSinkConfig;

    fn cfg(yaml: &str) -> PostgresSinkConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn output() -> SchemaRef {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let ent = DataType::List(Arc::new(Field::new(
            "item",
            DataType::Struct(
                vec![
                    Field::new("entity_group", DataType::Utf8, true),
                    Field::new("start", DataType::Int64, true),
                ]
                .into(),
            ),
            true,
        )));
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("lang", DataType::Utf8, true),
            Field::new("embedding", DataType::FixedSizeList(item, 3), true),
            Field::new("sentiment_score", DataType::Float32, true),
            Field::new("entities", ent, true),
        ]))
    }

    #[test]
    fn plan_types_and_ddl() {
        let p = Plan::new(
            &cfg(
                "{table: search.docs, vector_type: halfvec, columns: {embedding: vec, lang: null}}",
            ),
            output(),
        )
        .unwrap();
        assert_eq!(
            p.create_sql(),
            "CREATE TABLE IF NOT EXISTS \"search\".\"docs\" (\"id\" bigint PRIMARY KEY, \"vec\" halfvec(3), \"sentiment_score\" real, \"entities\" jsonb)"
        );
        let e = Plan::new(&cfg("{table: t, columns: {nope: x}}"), output()).unwrap_err();
        assert!(e.to_string().contains("no column \"nope\""), "{e}");
        let e = Plan::new(&cfg("{table: t, columns: {id: null}}"), output()).unwrap_err();
        assert!(
            e.to_string().contains("id column cannot be left out"),
            "{e}"
        );
        let e = Plan::new(&cfg("{table: t, columns: {lang: id}}"), output()).unwrap_err();
        assert!(e.to_string().contains("both go to table column"), "{e}");
        assert!(TableName::parse("a.b.c").is_err());
    }

    #[test]
    fn existing_table_checked() {
        let mut p = Plan::new(&cfg("{table: docs}"), output()).unwrap();
        let mut t: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
        t.insert("id".into(), ("bigint".into(), "int8".into(), true));
        t.insert("lang".into(), ("text".into(), "text".into(), false));
        t.insert(
            "embedding".into(),
            ("vector(4)".into(), "vector".into(), false),
        );
        t.insert(
            "sentiment_score".into(),
            ("text".into(), "text".into(), false),
        );
        t.insert(
            "created".into(),
            ("timestamp".into(), "timestamp".into(), true),
        );
        let e = p.check(&t, false).unwrap_err().to_string();
        assert!(e.contains("has no column \"entities\""), "{e}");
        assert!(e.contains("embeddings have 3 dimensions"), "{e}");
        assert!(e.contains("\"sentiment_score\" is text"), "{e}");
        assert!(e.contains("\"created\" (timestamp) is NOT NULL"), "{e}");
        assert!(e.contains("upsert needs a primary key"), "{e}");
        let mut t2: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
        t2.insert("id".into(), ("integer".into(), "int4".into(), true));
        t2.insert(
            "lang".into(),
            ("character varying(8)".into(), "varchar".into(), false),
        );
        t2.insert(
            "embedding".into(),
            ("halfvec(3)".into(), "halfvec".into(), false),
        );
        t2.insert(
            "sentiment_score".into(),
            ("double precision".into(), "float8".into(), false),
        );
        t2.insert("entities".into(), ("json".into(), "json".into(), false));
        p.check(&t2, true).unwrap();
        assert_eq!(p.columns[2].typname, "halfvec");
        assert_eq!(p.columns[0].typname, "int4");
    }

    #[test]
    fn json_columns_are_their_json_text_and_nulls_stay_null() {
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let mut b =
            arrow::array::ListBuilder::new(arrow::array::Int64Builder::new()).with_field(item);
        b.append_value([Some(1), Some(2)]);
        b.append_null();
        b.append_value([None::<i64>]);
        let a: ArrayRef = Arc::new(b.finish());
        let v = json_values("entities", &a).unwrap();
        assert_eq!(v[0].as_deref(), Some(&b"[1,2]"[..]));
        assert_eq!(v[1], None);
        assert_eq!(v[2].as_deref(), Some(&b"[null]"[..]));
        let mut out = BytesMut::new();
        Cell::Json(b"[1,2]").to_sql(&Type::JSONB, &mut out).unwrap();
        assert_eq!(&out[..], b"\x01[1,2]");
        out.clear();
        Cell::Json(b"[1,2]").to_sql(&Type::JSON, &mut out).unwrap();
        assert_eq!(&out[..], b"[1,2]");
    }

    #[test]
    fn cells_follow_the_table_types() {
        let mut p = Plan::new(&cfg("{table: docs, mode: insert}"), output()).unwrap();
        p.columns[0].typname = "int2".into();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let emb = FixedSizeListArray::try_new(
            item,
            3,
            Arc::new(Float32Array::from(vec![0.1, 0.2, 0.3, f32::NAN, 0.0, 0.0])),
            None,
        )
        .unwrap();
        let ents = arrow::array::new_null_array(p.output.field(4).data_type(), 2);
        let batch = RecordBatch::try_new(
            p.output.clone(),
            vec![
                Arc::new(arrow::array::UInt64Array::from(vec![7, 70000])),
                Arc::new(arrow::array::StringArray::from(vec![Some("en"), None])),
                Arc::new(emb),
                Arc::new(Float32Array::from(vec![0.5, 0.25])),
                ents,
            ],
        )
        .unwrap();
        let enc = Encoded::new(&p, &batch).unwrap();
        let row = enc.row(&p, 0).unwrap();
        assert!(matches!(row[0], Cell::I16(7)));
        assert!(matches!(row[1], Cell::Text("en")));
        assert!(matches!(row[2], Cell::Vector(_)));
        assert!(matches!(row[4], Cell::Null));
        let e = enc.row(&p, 1).unwrap_err();
        assert!(e.contains("70000 is out of range for smallint"), "{e}");
    }
}
