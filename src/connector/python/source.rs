//! A source of Arrow record batches handed in by the host, cut into chunks of `window` records
//! in order: small batches are joined and large ones cut, so model batches are formed over whole
//! windows whatever the host's batch size. The first batch's schema fixes the id and passthrough types;
//! a later batch that lacks a column or changes its type stops the run with a message naming the
//! column and the batch.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use crossbeam_channel::Receiver;

use super::config::PythonSourceConfig;
use crate::connector::text::extract_texts;
use crate::connector::{column_names, Source, TextColumnRequest};
use crate::error::{Error, Result};
use crate::record::{Chunk, Origin, TextColumn};

/// The input columns a run reads.
#[derive(Debug, Clone)]
pub struct Columns {
    pub text: String,
    pub id: Option<String>,
    pub passthrough: Vec<String>,
    /// Further text columns the tasks read (a question, a hypothesis).
    pub text_columns: Vec<TextColumnRequest>,
}

impl Columns {
    pub fn new(
        cfg: &PythonSourceConfig,
        passthrough: &[String],
        text_columns: &[TextColumnRequest],
    ) -> Columns {
        Columns {
            text: cfg.text_column.clone(),
            id: cfg.id_column.clone(),
            passthrough: passthrough.to_vec(),
            text_columns: text_columns.to_vec(),
        }
    }

    /// The output fields the input contributes (`id`, then the passthrough columns), or why
    /// `schema` cannot be read: a missing column, named with the setting that names it.
    pub fn fields(&self, schema: &Schema) -> Result<Vec<FieldRef>> {
        let missing = |what: &str, name: &str, fix: &str| {
            Error::config(format!(
                "the input has no {what} column '{name}' (columns: {}); {fix}",
                column_names(schema)
            ))
        };
        if schema.field_with_name(&self.text).is_err() {
            return Err(missing(
                "text",
                &self.text,
                "pass text_col=... or set source.python.text_column",
            ));
        }
        for c in &self.text_columns {
            if schema.field_with_name(&c.name).is_err() {
                return Err(missing(c.role, &c.name, &format!("fix {}", c.key)));
            }
        }
        let id: FieldRef = match &self.id {
            Some(name) => {
                let f = schema.field_with_name(name).map_err(|_| {
                    missing(
                        "id",
                        name,
                        "pass id_col=... or set source.python.id_column (without one, ids are row numbers)",
                    )
                })?;
                Arc::new(Field::new("id", f.data_type().clone(), true))
            }
            None => Arc::new(Field::new("id", DataType::UInt64, false)),
        };
        let mut fields = vec![id];
        for name in &self.passthrough {
            if name == "id" {
                return Err(Error::config(
                    "passthrough: 'id' is always written; remove it from the passthrough list",
                ));
            }
            let f = schema
                .field_with_name(name)
                .map_err(|_| missing("passthrough", name, "fix the passthrough list"))?;
            fields.push(Arc::new(f.clone().with_nullable(true)));
        }
        Ok(fields)
    }
}

/// Record batches from the host, cut into chunks.
pub struct BatchSource {
    rx: Receiver<RecordBatch>,
    columns: Columns,
    fields: Vec<FieldRef>,
    window: usize,
    /// Names the input in error rows and messages (`input`, `spark partition 3`).
    label: Arc<str>,
    /// Batches (or their unread tails) received and not yet cut into a chunk, with their rows.
    pending: VecDeque<RecordBatch>,
    pending_rows: usize,
    ended: bool,
    batches: u64,
    rows: u64,
    next_seq: u64,
}

impl BatchSource {
    /// A source whose batches have the schema `schema` (checked here), received on `rx` until
    /// the host closes it.
    pub fn new(
        schema: &Schema,
        columns: Columns,
        window: usize,
        label: &str,
        rx: Receiver<RecordBatch>,
    ) -> Result<BatchSource> {
        let fields = columns.fields(schema)?;
        Ok(BatchSource {
            rx,
            columns,
            fields,
            window: window.max(1),
            label: Arc::from(label),
            pending: VecDeque::new(),
            pending_rows: 0,
            ended: false,
            batches: 0,
            rows: 0,
            next_seq: 0,
        })
    }

    /// A later batch must hold the columns with the types of the first.
    fn check(&self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        let fields = self.columns.fields(&schema).map_err(|e| {
            let msg = match e {
                Error::Config(m) => m,
                other => other.to_string(),
            };
            Error::source(
                self.label.as_ref(),
                format!("batch {}: {msg}", self.batches),
            )
        })?;
        for (want, got) in self.fields.iter().zip(&fields) {
            if want.data_type() != got.data_type() {
                let name = if want.name() == "id" {
                    self.columns.id.as_deref().unwrap_or("id")
                } else {
                    want.name().as_str()
                };
                return Err(Error::source(
                    self.label.as_ref(),
                    format!(
                        "batch {}: column '{name}' has type {} but the first batch had {}; every batch must have the same types",
                        self.batches,
                        got.data_type(),
                        want.data_type()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One column of the next chunk: the pieces' columns `name`, end to end.
    fn column(&self, pieces: &[RecordBatch], name: &str) -> Result<ArrayRef> {
        let cols: Vec<&dyn Array> = pieces
            .iter()
            .map(|b| b.column_by_name(name).expect("checked column").as_ref())
            .collect();
        if cols.len() == 1 {
            return Ok(pieces[0]
                .column_by_name(name)
                .expect("checked column")
                .clone());
        }
        arrow::compute::concat(&cols).map_err(|e| {
            Error::source(
                self.label.as_ref(),
                format!("cannot join the batches' column '{name}': {e}"),
            )
        })
    }

    /// The chunk of the next `n` pending rows (small batches are joined, large ones cut).
    fn chunk(&mut self, n: usize) -> Result<Chunk> {
        let mut pieces = Vec::new();
        let mut left = n;
        while left > 0 {
            let b = self.pending.pop_front().expect("pending rows");
            if b.num_rows() <= left {
                left -= b.num_rows();
                pieces.push(b);
            } else {
                pieces.push(b.slice(0, left));
                self.pending.push_front(b.slice(left, b.num_rows() - left));
                left = 0;
            }
        }
        self.pending_rows -= n;
        let text = self.column(&pieces, &self.columns.text)?;
        let (texts, errors) = extract_texts(text.as_ref(), &self.columns.text);
        let ids: ArrayRef = match &self.columns.id {
            Some(name) => self.column(&pieces, name)?,
            None => Arc::new(UInt64Array::from_iter_values(
                self.rows..self.rows + n as u64,
            )),
        };
        let passthrough = self
            .columns
            .passthrough
            .iter()
            .map(|name| self.column(&pieces, name))
            .collect::<Result<Vec<_>>>()?;
        let mut columns = Vec::with_capacity(self.columns.text_columns.len());
        for c in &self.columns.text_columns {
            let col = self.column(&pieces, &c.name)?;
            columns.push(TextColumn {
                name: Arc::from(c.name.as_str()),
                values: extract_texts(col.as_ref(), &c.name).0,
            });
        }
        let chunk = Chunk {
            seq: self.next_seq,
            origin: Origin::File {
                path: self.label.clone(),
                first_row: self.rows,
            },
            ids,
            texts,
            columns,
            passthrough,
            errors,
        };
        self.next_seq += 1;
        self.rows += n as u64;
        Ok(chunk)
    }
}

impl Source for BatchSource {
    fn kind(&self) -> &'static str {
        "python"
    }

    fn describe(&self) -> String {
        self.label.to_string()
    }

    fn size_hint(&self) -> Option<u64> {
        None
    }

    fn fields(&self) -> Vec<FieldRef> {
        self.fields.clone()
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        // Fill a window: the host's batches may be smaller (they are joined) or larger (cut).
        while !self.ended && self.pending_rows < self.window {
            match self.rx.recv() {
                Ok(batch) => {
                    self.check(&batch)?;
                    self.batches += 1;
                    if batch.num_rows() > 0 {
                        self.pending_rows += batch.num_rows();
                        self.pending.push_back(batch);
                    }
                }
                Err(_) => self.ended = true,
            }
        }
        if self.pending_rows == 0 {
            return Ok(None);
        }
        let n = self.pending_rows.min(self.window);
        self.chunk(n).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn batch(ids: Vec<i64>, texts: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("body", Arc::new(StringArray::from(texts)) as ArrayRef),
        ])
        .unwrap()
    }

    fn columns() -> Columns {
        Columns {
            text: "body".into(),
            id: Some("k".into()),
            passthrough: vec![],
            text_columns: vec![],
        }
    }

    #[test]
    fn batches_are_cut_into_windows_in_order() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let b = batch(
            vec![1, 2, 3, 4, 5],
            vec![Some("a"), None, Some("c"), Some("d"), Some("e")],
        );
        tx.send(b.clone()).unwrap();
        tx.send(batch(vec![6], vec![Some("f")])).unwrap();
        drop(tx);
        let mut s = BatchSource::new(&b.schema(), columns(), 2, "input", rx).unwrap();
        let mut sizes = Vec::new();
        let mut errors = Vec::new();
        let mut first_rows = Vec::new();
        while let Some(c) = s.next_chunk().unwrap() {
            sizes.push(c.len());
            errors.extend(c.errors.iter().map(|e| e.reason.clone()));
            if let Origin::File { first_row, .. } = c.origin {
                first_rows.push(first_row);
            }
        }
        // The last row of the first batch and the second batch make one window.
        assert_eq!(sizes, [2, 2, 2]);
        assert_eq!(first_rows, [0, 2, 4]);
        assert_eq!(errors, ["text column 'body' is null"]);
    }

    #[test]
    fn a_missing_column_is_named() {
        let (_tx, rx) = crossbeam_channel::unbounded();
        let b = batch(vec![1], vec![Some("a")]);
        let mut cols = columns();
        cols.text = "text".into();
        let e = BatchSource::new(&b.schema(), cols, 2, "input", rx)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no text column 'text'") && e.contains("k, body"),
            "{e}"
        );
    }

    #[test]
    fn a_later_batch_with_another_id_type_is_refused() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let b = batch(vec![1], vec![Some("a")]);
        let other = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
            ("body", Arc::new(StringArray::from(vec!["b"])) as ArrayRef),
        ])
        .unwrap();
        tx.send(b.clone()).unwrap();
        tx.send(other).unwrap();
        drop(tx);
        let mut s = BatchSource::new(&b.schema(), columns(), 8, "input", rx).unwrap();
        // The window is filled before it is cut: the second batch is read at once.
        let e = s.next_chunk().unwrap_err().to_string();
        assert!(e.contains("column 'k' has type Utf8"), "{e}");
    }
}
