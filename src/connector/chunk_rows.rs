//! One output row per passage: for sinks that want flat rows (`sink.parquet.one_row_per_chunk`,
//! Postgres), the passages list of a task that cuts texts into passages (`tasks.embed.chunking`,
//! `tasks.sparse.chunking`) is flattened before the sink sees the results. Each passage row
//! repeats the record's other columns and holds `chunk_index`, `chunk_start`, `chunk_end` and
//! the passage's vector, `chunk_embedding` (dense) or `chunk_sparse` (sparse); a record with no
//! passage has no row.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

use super::{ChunkOutput, PositionStore, Sink, SinkReport, Written};
use crate::error::{Error, Result};

/// Names of the flat columns, in order, replacing the passages column (the vector's is
/// `chunk_` and its field's name: `chunk_embedding`, `chunk_sparse`).
pub const FLAT_COLUMNS: [&str; 4] = ["chunk_index", "chunk_start", "chunk_end", "chunk_embedding"];

fn passage_fields(schema: &Schema, column: &str) -> Result<(usize, arrow::datatypes::Fields)> {
    let idx = schema.index_of(column).map_err(|_| {
        Error::config(format!(
            "one row per chunk: the output has no passages column '{column}' (set tasks.embed.chunking or tasks.sparse.chunking)"
        ))
    })?;
    match schema.field(idx).data_type() {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(f) if f.len() == 4 => Ok((idx, f.clone())),
            other => Err(Error::config(format!(
                "column '{column}' holds {other}, not passages"
            ))),
        },
        other => Err(Error::config(format!(
            "column '{column}' is {other}, not a list of passages"
        ))),
    }
}

/// The schema of the flattened rows.
pub fn flat_schema(schema: &SchemaRef, column: &str) -> Result<SchemaRef> {
    let (idx, fields) = passage_fields(schema, column)?;
    let mut out: Vec<FieldRef> = Vec::with_capacity(schema.fields().len() + 3);
    for (i, f) in schema.fields().iter().enumerate() {
        if i == idx {
            for pf in fields.iter() {
                out.push(Arc::new(
                    Field::new(
                        format!("chunk_{}", pf.name()),
                        pf.data_type().clone(),
                        false,
                    )
                    .with_metadata(pf.metadata().clone()),
                ));
            }
        } else {
            out.push(f.clone());
        }
    }
    Ok(Arc::new(Schema::new_with_metadata(
        out,
        schema.metadata().clone(),
    )))
}

/// The results of a chunk with one row per passage.
pub fn flatten(out: &ChunkOutput, column: &str, flat: &SchemaRef) -> Result<ChunkOutput> {
    let batch = &out.results;
    let (idx, _) = passage_fields(&batch.schema(), column)?;
    let list = batch.column(idx).as_list::<i32>();
    let offsets = list.value_offsets();
    let mut take = Vec::new();
    let mut rows = Vec::new();
    for r in 0..batch.num_rows() {
        let n = (offsets[r + 1] - offsets[r]) as usize;
        if list.is_null(r) {
            continue;
        }
        for _ in 0..n {
            take.push(r as u32);
            rows.push(out.result_rows[r]);
        }
    }
    let take = UInt32Array::from(take);
    let lo = offsets[0] as usize;
    let hi = offsets[batch.num_rows()] as usize;
    // The passages of every row, rows with null lists (the task failed for the record) skipped
    // above; such a list spans no values.
    let values = list.values().slice(lo, hi - lo);
    let passages = values.as_struct();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(flat.fields().len());
    for (i, c) in batch.columns().iter().enumerate() {
        if i == idx {
            cols.extend(passages.columns().iter().cloned());
        } else {
            cols.push(
                arrow::compute::take(c.as_ref(), &take, None)
                    .map_err(|e| Error::Inference(e.to_string()))?,
            );
        }
    }
    let results =
        RecordBatch::try_new(flat.clone(), cols).map_err(|e| Error::Inference(e.to_string()))?;
    Ok(ChunkOutput {
        seq: out.seq,
        results,
        result_rows: rows,
        errors: out.errors.clone(),
        error_ids: out.error_ids.clone(),
        origin: out.origin.clone(),
    })
}

/// A sink that receives one row per passage.
/// Results already flattened to one row per passage.
pub fn is_flat(schema: &SchemaRef) -> bool {
    schema.index_of(FLAT_COLUMNS[0]).is_ok()
}

/// A sink writing one row per passage of the passages column (`columns`: the passages columns
/// of the pipeline's tasks; one row per passage needs exactly one): `open` opens the inner sink
/// for the flat schema. `sink` names the sink for errors.
pub fn one_row_per_chunk(
    schema: &SchemaRef,
    columns: &[String],
    sink: &str,
    open: impl FnOnce(SchemaRef) -> Result<Box<dyn Sink>>,
) -> Result<Box<dyn Sink>> {
    let column = match columns {
        [one] => one.as_str(),
        [] => {
            return Err(Error::config(format!(
                "{sink} writes one row per passage but no task cuts texts into passages (set tasks.embed.chunking or tasks.sparse.chunking)"
            )))
        }
        many => {
            return Err(Error::config(format!(
                "{sink} writes one row per passage, but several tasks write passages ({}): passages of different tasks need not line up, so keep chunking on one task, or write to Parquet without one_row_per_chunk (one list column per task)",
                many.join(", ")
            )))
        }
    };
    let flat = flat_schema(schema, column)?;
    let inner = open(flat.clone())?;
    Ok(Box::new(OneRowPerChunk {
        inner,
        column: column.to_string(),
        schema: flat,
    }))
}

pub struct OneRowPerChunk {
    pub inner: Box<dyn Sink>,
    pub column: String,
    pub schema: SchemaRef,
}

impl Sink for OneRowPerChunk {
    fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
        let flat = flatten(out, &self.column, &self.schema)?;
        self.inner.write(&flat)
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.inner.finish()
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        self.inner.tick_interval()
    }

    fn tick(&mut self) -> Result<Option<u64>> {
        self.inner.tick()
    }

    fn abort(&mut self) {
        self.inner.abort()
    }

    fn position_store(&self) -> Option<Arc<dyn PositionStore>> {
        self.inner.position_store()
    }
}
