//! Parquet source: a file, a glob or a directory of files, read in name order, local or in an
//! object store (objects are read by row group with ranged requests, a row group ahead of the
//! pipeline, never downloaded whole).
//!
//! Every file is checked before any work starts (readable, has the text, id and passthrough
//! columns, consistent id types), so a bad file fails the job at once with a message naming it.
//! Per-record problems (null text, non-string column, invalid UTF-8) become error rows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::config::{ParquetSourceConfig, Shard};
use crate::connector::storage::{self as store, Location, Object, StorageOptions};
use crate::connector::text::extract_texts;
use crate::connector::{column_names, Source, TextColumnRequest};
use crate::error::{Error, Result};
use crate::record::{Chunk, Origin, TextColumn};

struct InputFile {
    location: Location,
    /// Object size (known from the listing), saves a request per object.
    size: Option<u64>,
    rows: u64,
    /// In this worker's shard (every file is, without sharding).
    selected: bool,
}

/// Reads records from Parquet files.
pub struct ParquetSource {
    files: Vec<InputFile>,
    text_column: String,
    id_column: Option<String>,
    passthrough: Vec<String>,
    text_columns: Vec<TextColumnRequest>,
    fields: Vec<FieldRef>,
    batch_rows: usize,
    shard: Option<Shard>,
    // reading state
    current: usize,
    reader: Option<(Reader, Arc<str>)>,
    rows_read_in_file: u64,
    rows_read_total: u64,
    next_seq: u64,
}

/// Batches of one input: read here from a local file, or fetched by a task on the store runtime
/// a row group ahead.
enum Reader {
    Local(ParquetRecordBatchReader),
    Remote(tokio::sync::mpsc::Receiver<std::result::Result<RecordBatch, String>>),
}

impl Reader {
    fn next(&mut self) -> Option<std::result::Result<RecordBatch, String>> {
        match self {
            Reader::Local(r) => r.next().map(|b| b.map_err(|e| e.to_string())),
            Reader::Remote(rx) => rx.blocking_recv(),
        }
    }
}

/// One input of a source: where it is and, for objects, its size.
#[derive(Debug)]
pub struct Input {
    pub location: Location,
    pub size: Option<u64>,
}

/// Expand a path, glob, directory, object URL, prefix or object glob into a sorted list of
/// Parquet files or objects.
pub fn resolve_inputs(spec: &str, options: &StorageOptions) -> Result<Vec<Input>> {
    if store::is_remote(spec) {
        return Ok(store::list_objects(spec, options)?
            .into_iter()
            .map(|l| Input {
                location: l.location,
                size: l.size,
            })
            .collect());
    }
    let local = match Location::parse(spec, options)? {
        Location::Local(p) => p,
        Location::Object(_) => unreachable!("not remote"),
    };
    Ok(resolve_local(&local.to_string_lossy())?
        .into_iter()
        .map(|p| Input {
            location: Location::Local(p),
            size: None,
        })
        .collect())
}

/// Expand a local path, glob or directory into a sorted list of Parquet files.
fn resolve_local(spec: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(spec);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        let mut v = Vec::new();
        let entries = std::fs::read_dir(path)
            .map_err(|e| Error::source(spec, format!("cannot list directory: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::source(spec, e.to_string()))?;
            let p = entry.path();
            if p.is_file() && p.extension().is_some_and(|e| e == "parquet") {
                v.push(p);
            }
        }
        if v.is_empty() {
            return Err(Error::source(
                spec,
                "directory holds no *.parquet files; point source.parquet.path at a file, a glob or a directory of Parquet files",
            ));
        }
        v
    } else if spec.contains(['*', '?', '[']) {
        let paths = glob::glob(spec)
            .map_err(|e| Error::source(spec, format!("invalid glob pattern: {e}")))?;
        let v: Vec<PathBuf> = paths
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        if v.is_empty() {
            return Err(Error::source(spec, "glob matches no files"));
        }
        v
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(Error::source(
            spec,
            "no such file or directory; check source.parquet.path (or --input)",
        ));
    };
    files.sort();
    Ok(files)
}

/// Ranged reads of one object for parquet's async reader: the footer first, then the projected
/// column chunks of one row group at a time (nearby ranges fetched together).
struct ObjectReader {
    object: Object,
    size: u64,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        use object_store::ObjectStoreExt;
        Box::pin(async move {
            self.object
                .store
                .get_range(&self.object.key, range)
                .await
                .map_err(external)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        Box::pin(async move {
            self.object
                .store
                .get_ranges(&self.object.key, &ranges)
                .await
                .map_err(external)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a parquet::arrow::arrow_reader::ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let m = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(m))
        })
    }
}

/// The async reader of an object, its footer read.
fn object_builder(
    o: &Object,
    size: Option<u64>,
) -> Result<ParquetRecordBatchStreamBuilder<ObjectReader>> {
    let url = o.url();
    let size = match size {
        Some(n) => n,
        None => {
            use object_store::ObjectStoreExt;
            store::block_on(o.store.head(&o.key))
                .map_err(|e| store::store_error(&url, "cannot read", &e))?
                .size
        }
    };
    let reader = ObjectReader {
        object: o.clone(),
        size,
    };
    store::block_on(ParquetRecordBatchStreamBuilder::new(reader)).map_err(|e| {
        Error::source(
            &url,
            format!(
                "not a readable Parquet object ({e}); check that it is complete and is Parquet, and the credentials"
            ),
        )
    })
}

/// Schema and row count of an input, from its footer.
fn inspect(location: &Location, size: Option<u64>) -> Result<(SchemaRef, u64)> {
    match location {
        Location::Local(p) => {
            let b = open_builder(p)?;
            let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
            Ok((b.schema().clone(), rows))
        }
        Location::Object(o) => {
            let b = object_builder(o, size)?;
            let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
            Ok((b.schema().clone(), rows))
        }
    }
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let loc = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::source(&loc, format!("cannot open: {e}")))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        Error::source(
            &loc,
            format!(
                "not a readable Parquet file ({e}); check that the file is complete and is Parquet"
            ),
        )
    })
}

impl ParquetSource {
    /// Open and check every input file. `text_columns` are read as well (the further text
    /// inputs of tasks, e.g. a question column).
    pub fn open(
        cfg: &ParquetSourceConfig,
        passthrough: &[String],
        text_columns: &[TextColumnRequest],
        batch_rows: usize,
    ) -> Result<Self> {
        let inputs = resolve_inputs(&cfg.path, &cfg.storage_options)?;
        for name in passthrough {
            if name == "id" {
                return Err(Error::config(
                    "sink.passthrough: 'id' is always written; remove it from the passthrough list",
                ));
            }
        }
        let mut files = Vec::with_capacity(inputs.len());
        let mut id_field: Option<(FieldRef, String)> = None;
        let mut pass_fields: Vec<Option<(FieldRef, String)>> = vec![None; passthrough.len()];
        for input in inputs {
            let loc = input.location.to_string();
            let (schema, rows) = inspect(&input.location, input.size)?;
            if schema.field_with_name(&cfg.text_column).is_err() {
                return Err(Error::source(
                    &loc,
                    format!(
                        "no text column '{}' (columns: {}); set source.parquet.text_column",
                        cfg.text_column,
                        column_names(&schema)
                    ),
                ));
            }
            for c in text_columns {
                if schema.field_with_name(&c.name).is_err() {
                    return Err(Error::source(
                        &loc,
                        format!(
                            "no {} column '{}' (columns: {}); fix {}",
                            c.role,
                            c.name,
                            column_names(&schema),
                            c.key
                        ),
                    ));
                }
            }
            if let Some(id) = &cfg.id_column {
                let f = schema.field_with_name(id).map_err(|_| {
                    Error::source(
                        &loc,
                        format!(
                            "no id column '{id}' (columns: {}); set source.parquet.id_column, or remove it to use row numbers",
                            column_names(&schema)
                        ),
                    )
                })?;
                match &id_field {
                    Some((prev, prev_path)) if prev.data_type() != f.data_type() => {
                        return Err(Error::source(
                            &loc,
                            format!(
                                "id column '{id}' has type {} but {} has {}; all input files must agree",
                                f.data_type(),
                                prev_path,
                                prev.data_type()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => id_field = Some((Arc::new(f.clone()), loc.clone())),
                }
            }
            for (slot, name) in pass_fields.iter_mut().zip(passthrough) {
                let f = schema.field_with_name(name).map_err(|_| {
                    Error::source(
                        &loc,
                        format!(
                            "no passthrough column '{name}' (columns: {}); fix sink.passthrough",
                            column_names(&schema)
                        ),
                    )
                })?;
                match slot {
                    Some((prev, prev_path)) if prev.data_type() != f.data_type() => {
                        return Err(Error::source(
                            &loc,
                            format!(
                                "passthrough column '{name}' has type {} but {} has {}; all input files must agree",
                                f.data_type(),
                                prev_path,
                                prev.data_type()
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => *slot = Some((Arc::new(f.clone()), loc.clone())),
                }
            }
            files.push(InputFile {
                location: input.location,
                size: input.size,
                rows,
                selected: true,
            });
        }
        let id = match id_field {
            Some((f, _)) => Arc::new(Field::new("id", f.data_type().clone(), true)),
            None => Arc::new(Field::new("id", DataType::UInt64, false)),
        };
        let mut fields = vec![id];
        for f in pass_fields.into_iter().flatten() {
            fields.push(Arc::new(f.0.as_ref().clone().with_nullable(true)));
        }
        Ok(ParquetSource {
            files,
            text_column: cfg.text_column.clone(),
            id_column: cfg.id_column.clone(),
            passthrough: passthrough.to_vec(),
            text_columns: text_columns.to_vec(),
            fields,
            batch_rows,
            current: 0,
            shard: None,
            reader: None,
            rows_read_in_file: 0,
            rows_read_total: 0,
            next_seq: 0,
        })
    }

    /// Read only the files of shard `index` of `count`: file k (in name order) belongs to shard
    /// k mod count. Row-number ids stay those of the whole input.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        for (k, f) in self.files.iter_mut().enumerate() {
            f.selected = k % shard.count == shard.index;
        }
        self.shard = Some(shard);
        self
    }

    /// The root columns to read of a file with this schema.
    fn projection(&self, schema: &Schema) -> Vec<usize> {
        let mut wanted = vec![self.text_column.clone()];
        wanted.extend(self.id_column.iter().cloned());
        wanted.extend(self.passthrough.iter().cloned());
        wanted.extend(self.text_columns.iter().map(|c| c.name.clone()));
        let mut roots: Vec<usize> = wanted
            .iter()
            .filter_map(|n| schema.index_of(n).ok())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    fn open_reader(&mut self) -> Result<()> {
        let file = &self.files[self.current];
        let loc = file.location.to_string();
        let reader = match &file.location {
            Location::Local(path) => {
                let builder = open_builder(path)?;
                let roots = self.projection(builder.schema());
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                Reader::Local(
                    builder
                        .with_projection(mask)
                        .with_batch_size(self.batch_rows)
                        .build()
                        .map_err(|e| Error::source(&loc, format!("cannot read: {e}")))?,
                )
            }
            Location::Object(o) => {
                let builder = object_builder(o, file.size)?;
                let roots = self.projection(builder.schema());
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                let mut stream = builder
                    .with_projection(mask)
                    .with_batch_size(self.batch_rows)
                    .build()
                    .map_err(|e| Error::source(&loc, format!("cannot read: {e}")))?;
                // Two batches ahead: the next row group is fetched while this one is worked on,
                // and memory stays bounded by a row group.
                let (tx, rx) = tokio::sync::mpsc::channel(2);
                store::runtime().spawn(async move {
                    while let Some(b) = stream.next().await {
                        let failed = b.is_err();
                        if tx.send(b.map_err(|e| e.to_string())).await.is_err() || failed {
                            break;
                        }
                    }
                });
                Reader::Remote(rx)
            }
        };
        self.reader = Some((reader, Arc::from(loc.as_str())));
        self.rows_read_in_file = 0;
        Ok(())
    }
}

impl Source for ParquetSource {
    fn kind(&self) -> &'static str {
        "parquet"
    }

    fn describe(&self) -> String {
        let all = match self.files.len() {
            1 => self.files[0].location.to_string(),
            n => format!("{n} Parquet files ({} ...)", self.files[0].location),
        };
        match self.shard {
            Some(s) => format!(
                "{all}, shard {}/{}: {} files",
                s.index,
                s.count,
                self.files.iter().filter(|f| f.selected).count()
            ),
            None => all,
        }
    }

    fn size_hint(&self) -> Option<u64> {
        Some(
            self.files
                .iter()
                .filter(|f| f.selected)
                .map(|f| f.rows)
                .sum(),
        )
    }

    fn fields(&self) -> Vec<FieldRef> {
        self.fields.clone()
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        loop {
            if self.current >= self.files.len() {
                return Ok(None);
            }
            if self.reader.is_none() {
                if !self.files[self.current].selected {
                    self.rows_read_total += self.files[self.current].rows;
                    self.current += 1;
                    continue;
                }
                self.open_reader()?;
            }
            let (reader, loc) = self.reader.as_mut().expect("reader opened above");
            let loc = loc.clone();
            match reader.next() {
                None => {
                    self.reader = None;
                    self.current += 1;
                    continue;
                }
                Some(Err(e)) => {
                    return Err(Error::source(
                        loc.as_ref(),
                        format!(
                            "read failed after row {}: {e}; the file may be truncated or corrupt",
                            self.rows_read_in_file
                        ),
                    ))
                }
                Some(Ok(batch)) => {
                    let n = batch.num_rows();
                    if n == 0 {
                        continue;
                    }
                    let text_col = batch
                        .column_by_name(&self.text_column)
                        .expect("projected text column");
                    let (texts, errors) = extract_texts(text_col.as_ref(), &self.text_column);
                    let ids: ArrayRef = match &self.id_column {
                        Some(name) => batch.column_by_name(name).expect("projected id").clone(),
                        None => Arc::new(UInt64Array::from_iter_values(
                            self.rows_read_total..self.rows_read_total + n as u64,
                        )),
                    };
                    let passthrough = self
                        .passthrough
                        .iter()
                        .map(|name| batch.column_by_name(name).expect("projected").clone())
                        .collect();
                    let columns = self
                        .text_columns
                        .iter()
                        .map(|c| {
                            let col = batch.column_by_name(&c.name).expect("projected column");
                            TextColumn {
                                name: Arc::from(c.name.as_str()),
                                values: extract_texts(col.as_ref(), &c.name).0,
                            }
                        })
                        .collect();
                    let chunk = Chunk {
                        columns,
                        seq: self.next_seq,
                        origin: Origin::File {
                            path: loc,
                            first_row: self.rows_read_in_file,
                        },
                        ids,
                        texts,
                        passthrough,
                        errors,
                    };
                    self.next_seq += 1;
                    self.rows_read_in_file += n as u64;
                    self.rows_read_total += n as u64;
                    return Ok(Some(chunk));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Int64Array, StringArray};

    #[test]
    fn texts_from_strings_and_nulls() {
        let a = StringArray::from(vec![Some("a"), None, Some("")]);
        let (t, e) = extract_texts(&a, "text");
        assert_eq!(t, vec![Some(Arc::from("a")), None, Some(Arc::from(""))]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].row, 1);
        assert!(e[0].reason.contains("null"));
    }

    #[test]
    fn texts_from_binary_checks_utf8() {
        let a = BinaryArray::from(vec![b"ok".as_ref(), b"\xff\xfe".as_ref()]);
        let (t, e) = extract_texts(&a, "body");
        assert_eq!(t[0].as_deref(), Some("ok"));
        assert_eq!(t[1], None);
        assert!(e[0].reason.contains("UTF-8"), "{}", e[0].reason);
    }

    #[test]
    fn non_string_column_fails_each_row() {
        let a = Int64Array::from(vec![1, 2]);
        let (t, e) = extract_texts(&a, "text");
        assert_eq!(t, vec![None, None]);
        assert_eq!(e.len(), 2);
        assert!(e[0].reason.contains("Int64"));
    }

    #[test]
    fn missing_path_is_explained() {
        let err = resolve_inputs("/nonexistent/x.parquet", &StorageOptions::new()).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 500,
            // A failing case is kept beside this file and tried first next time.
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
            )),
            ..Default::default()
        })]

        /// Binary text columns of any content: every row is a text (exactly its bytes, when they
        /// are UTF-8) or an error row naming the column; nothing is dropped.
        #[test]
        fn binary_texts_are_texts_or_error_rows(
            values in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)),
                0..40,
            )
        ) {
            let a = BinaryArray::from_iter(values.iter().map(|v| v.as_deref()));
            let (texts, errors) = extract_texts(&a, "body");
            proptest::prop_assert_eq!(texts.len(), values.len());
            let mut failed = vec![false; values.len()];
            for e in &errors {
                proptest::prop_assert!(e.reason.contains("'body'"));
                failed[e.row] = true;
            }
            for (i, v) in values.iter().enumerate() {
                match (v, &texts[i]) {
                    (Some(b), Some(t)) => proptest::prop_assert_eq!(t.as_bytes(), b.as_slice()),
                    (Some(b), None) => proptest::prop_assert!(std::str::from_utf8(b).is_err() && failed[i]),
                    (None, None) => proptest::prop_assert!(failed[i]),
                    (None, Some(_)) => proptest::prop_assert!(false, "null became a text"),
                }
            }
        }
    }
}
