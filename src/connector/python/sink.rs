//! A sink handing each chunk's output back to the host over a channel, as Arrow record batches:
//! the results and the error rows apart ([`ErrorMode::Separate`], the command line's two
//! outputs), or every record in one batch with an `errors` column ([`ErrorMode::Column`]) for
//! engines whose output is a single table (Spark's `mapInArrow`, Ray's `map_batches`). Optionally
//! the types are made portable: those every engine reads (no unsigned integers, no float16, no
//! fixed-size lists).

use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanBuilder, ListBuilder, RecordBatch, StringBuilder,
    StructBuilder, UInt32Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use crossbeam_channel::Sender;

use crate::connector::{ChunkOutput, Sink, SinkReport, Written};
use crate::error::{Error, Result};

/// The column holding a record's error rows in [`ErrorMode::Column`].
pub const ERRORS_COLUMN: &str = "errors";

/// Where failed records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    /// Results and error rows (the schema of the command line's error output) apart.
    Separate,
    /// One row per record, failed ones included (task columns null), and a column `errors`:
    /// the record's error rows (empty when all went well).
    Column,
}

/// One chunk's output.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    pub results: RecordBatch,
    /// The error rows ([`crate::connector::error_schema`]); empty in [`ErrorMode::Column`].
    pub errors: RecordBatch,
}

/// The `errors` column: a list of `{reason, stage, task, source, written}`.
pub fn error_list_field() -> FieldRef {
    let item = Fields::from(vec![
        Field::new("reason", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("task", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("written", DataType::Boolean, false),
    ]);
    Arc::new(Field::new(
        ERRORS_COLUMN,
        DataType::List(Arc::new(Field::new("item", DataType::Struct(item), true))),
        false,
    ))
}

/// A type every engine reads in place of `t`: unsigned integers widened to signed ones, float16
/// to float32, fixed-size lists to lists, views to plain strings and binaries, dictionaries to
/// their values.
pub fn portable_type(t: &DataType) -> DataType {
    let field = |f: &FieldRef| {
        Arc::new(
            Field::new(f.name(), portable_type(f.data_type()), f.is_nullable())
                .with_metadata(f.metadata().clone()),
        )
    };
    match t {
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => portable_type(v),
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::ListView(f) => {
            DataType::List(field(f))
        }
        DataType::LargeList(f) | DataType::LargeListView(f) => DataType::LargeList(field(f)),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// The schema of the batches the sink hands back for results of schema `schema`.
pub fn output_schema(schema: &SchemaRef, mode: ErrorMode, portable: bool) -> SchemaRef {
    let mut fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut g = f.as_ref().clone();
            if portable {
                g = g.with_data_type(portable_type(f.data_type()));
            }
            if mode == ErrorMode::Column {
                // A failed record's task columns are null.
                g = g.with_nullable(true);
            }
            Arc::new(g)
        })
        .collect();
    if mode == ErrorMode::Column {
        fields.push(error_list_field());
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Hands each chunk's output to the host.
pub struct BatchSink {
    tx: Sender<BatchOutput>,
    /// The results' schema before any change.
    results: SchemaRef,
    error_schema: SchemaRef,
    schema: SchemaRef,
    mode: ErrorMode,
    portable: bool,
    rows: u64,
    error_rows: u64,
}

impl BatchSink {
    pub fn new(
        tx: Sender<BatchOutput>,
        results: SchemaRef,
        error_schema: SchemaRef,
        mode: ErrorMode,
        portable: bool,
    ) -> BatchSink {
        BatchSink {
            schema: output_schema(&results, mode, portable),
            tx,
            results,
            error_schema,
            mode,
            portable,
            rows: 0,
            error_rows: 0,
        }
    }

    /// The schema of the result batches handed back.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn cast(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let cols = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    arrow::compute::cast(c.as_ref(), f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::sink("python", format!("cannot convert the results: {e}")))?;
        let fields: Vec<FieldRef> = self
            .schema
            .fields()
            .iter()
            .take(cols.len())
            .cloned()
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
            .map_err(|e| Error::sink("python", e.to_string()))
    }

    /// Every record of the chunk in input order, failed ones with null task columns, and the
    /// `errors` column.
    fn with_error_column(&self, out: &ChunkOutput) -> Result<RecordBatch> {
        let results = if self.portable {
            self.cast(&out.results)?
        } else {
            out.results.clone()
        };
        let failed: Vec<usize> = (0..out.errors.len())
            .filter(|&i| !out.errors[i].written)
            .collect();
        // Chunk rows, each with where its values are: result row i, or failed record j (after
        // the results).
        let mut rows: Vec<(u32, u32)> = out
            .result_rows
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, i as u32))
            .collect();
        let n_results = results.num_rows() as u32;
        rows.extend(
            failed
                .iter()
                .enumerate()
                .map(|(j, &e)| (out.errors[e].row, n_results + j as u32)),
        );
        rows.sort_unstable();
        let take = UInt32Array::from_iter_values(rows.iter().map(|r| r.1));
        let failed_idx = UInt32Array::from_iter_values(failed.iter().map(|&e| e as u32));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        let sink = |e: arrow::error::ArrowError| Error::sink("python", e.to_string());
        for (i, c) in results.columns().iter().enumerate() {
            let tail: ArrayRef = if i == 0 {
                // The failed records' ids.
                let ids = arrow::compute::take(out.error_ids.as_ref(), &failed_idx, None)
                    .map_err(sink)?;
                if ids.data_type() == c.data_type() {
                    ids
                } else {
                    arrow::compute::cast(ids.as_ref(), c.data_type()).map_err(sink)?
                }
            } else {
                new_null_array(c.data_type(), failed.len())
            };
            let all = arrow::compute::concat(&[c.as_ref(), tail.as_ref()]).map_err(sink)?;
            cols.push(arrow::compute::take(all.as_ref(), &take, None).map_err(sink)?);
        }
        // The errors of each chunk row.
        let item = match error_list_field().data_type() {
            DataType::List(f) => f.clone(),
            _ => unreachable!("a list"),
        };
        let DataType::Struct(fields) = item.data_type().clone() else {
            unreachable!("a struct")
        };
        let mut list = ListBuilder::new(StructBuilder::from_fields(fields, 0)).with_field(item);
        let mut by_row: Vec<Vec<usize>> = vec![Vec::new(); rows.len()];
        let position: std::collections::HashMap<u32, usize> = rows
            .iter()
            .enumerate()
            .map(|(k, (row, _))| (*row, k))
            .collect();
        for (i, e) in out.errors.iter().enumerate() {
            if let Some(k) = position.get(&e.row) {
                by_row[*k].push(i);
            }
        }
        for errs in &by_row {
            let s = list.values();
            for &i in errs {
                let e = &out.errors[i];
                s.field_builder::<StringBuilder>(0)
                    .expect("reason")
                    .append_value(&e.reason);
                s.field_builder::<StringBuilder>(1)
                    .expect("stage")
                    .append_value(e.stage.as_str());
                s.field_builder::<StringBuilder>(2)
                    .expect("task")
                    .append_option(e.task);
                s.field_builder::<StringBuilder>(3)
                    .expect("source")
                    .append_value(&e.source);
                s.field_builder::<BooleanBuilder>(4)
                    .expect("written")
                    .append_value(e.written);
                s.append(true);
            }
            list.append(true);
        }
        cols.push(Arc::new(list.finish()));
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| Error::sink("python", e.to_string()))
    }
}

impl Sink for BatchSink {
    fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
        let output = match self.mode {
            ErrorMode::Separate => BatchOutput {
                results: if self.portable {
                    self.cast(&out.results)?
                } else {
                    out.results.clone()
                },
                errors: out.error_batch(&self.error_schema)?,
            },
            ErrorMode::Column => BatchOutput {
                results: self.with_error_column(out)?,
                errors: RecordBatch::new_empty(self.error_schema.clone()),
            },
        };
        debug_assert_eq!(
            out.results.schema().fields().len(),
            self.results.fields().len()
        );
        self.rows += out.results.num_rows() as u64;
        self.error_rows += out.errors.len() as u64;
        self.tx
            .send(output)
            .map_err(|_| Error::sink("python", "the caller stopped reading the results"))?;
        Ok(Written::kept(Some(out.seq)))
    }

    fn finish(&mut self) -> Result<SinkReport> {
        Ok(SinkReport {
            rows: self.rows,
            error_rows: self.error_rows,
            destinations: vec!["python".into()],
            ..SinkReport::default()
        })
    }

    fn abort(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{error_schema, ErrorRow};
    use crate::record::{Origin, Stage};
    use arrow::array::{AsArray, FixedSizeListArray, Float32Array, Int64Array, UInt64Array};

    fn output() -> (ChunkOutput, SchemaRef) {
        let emb = Arc::new(Field::new("item", DataType::Float32, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, true),
            Field::new("embedding", DataType::FixedSizeList(emb.clone(), 2), true),
        ]));
        let vectors = FixedSizeListArray::new(
            emb,
            2,
            Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            None,
        );
        let results = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(UInt64Array::from(vec![0, 2])), Arc::new(vectors)],
        )
        .unwrap();
        let err = |row, written| ErrorRow {
            row,
            reason: format!("bad {row}"),
            stage: Stage::Source,
            task: None,
            source: format!("input row {row}"),
            written,
        };
        let out = ChunkOutput {
            seq: 0,
            results,
            result_rows: vec![0, 2],
            errors: vec![err(1, false), err(2, true)],
            error_ids: Arc::new(UInt64Array::from(vec![1, 2])),
            origin: Origin::File {
                path: Arc::from("input"),
                first_row: 0,
            },
        };
        (out, schema)
    }

    #[test]
    fn the_error_column_keeps_every_record_in_order() {
        let (out, schema) = output();
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = schema.field(0).clone();
        let mut sink = BatchSink::new(
            tx,
            schema,
            error_schema(&Arc::new(id)),
            ErrorMode::Column,
            true,
        );
        sink.write(&out).unwrap();
        let b = rx.recv().unwrap().results;
        assert_eq!(b.schema(), sink.schema());
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values(), &[0, 1, 2]);
        let emb = b.column(1).as_list::<i32>();
        assert!(emb.is_valid(0) && emb.is_null(1) && emb.is_valid(2));
        let errs = b.column(2).as_list::<i32>();
        let lens: Vec<usize> = (0..3).map(|i| errs.value(i).len()).collect();
        assert_eq!(lens, [0, 1, 1]);
    }

    #[test]
    fn separate_errors_have_the_error_output_schema() {
        let (out, schema) = output();
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = schema.field(0).clone();
        let es = error_schema(&Arc::new(id));
        let mut sink = BatchSink::new(tx, schema.clone(), es.clone(), ErrorMode::Separate, false);
        sink.write(&out).unwrap();
        let o = rx.recv().unwrap();
        assert_eq!(o.results.schema(), schema);
        assert_eq!(o.errors.schema(), es);
        assert_eq!(o.errors.num_rows(), 2);
    }
}
