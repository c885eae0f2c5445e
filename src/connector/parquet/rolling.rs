//! Rolling Parquet sink for streaming sources: one file per Kafka partition and roll, named by
//! partition and offset range (`<topic>-<partition>-<first offset>-<last offset>.parquet`).
//!
//! All open files roll together: after `roll_interval_ms`, or when they hold `rows_per_file` rows
//! or `max_file_bytes` bytes. Rolling closes each file under its temporary name (`.<name>.inprogress`),
//! syncs it and renames it into place; only then are the chunks it holds reported durable, so
//! their offsets can be committed. A file name that already exists (a restart that read the
//! same offsets again) gets a `.1`, `.2`, ... suffix: nothing is ever overwritten. Failed records
//! go to error files named the same way under the error directory, or to another error output
//! (a dead-letter topic).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::config::ParquetSinkConfig;
use super::file::{OpenFile, OutputFormat};
use super::sink::check_output;
use crate::connector::storage::{Location, StorageOptions};
use crate::connector::{take_rows, ChunkOutput, ErrorOutput, Sink, SinkReport, Written};
use crate::error::{Error, Result};
use crate::record::Origin;

struct PartFile {
    file: OpenFile,
    first: i64,
    last: i64,
}

/// Open files of one kind (results or errors), one per partition.
struct FileSet {
    dir: PathBuf,
    format: OutputFormat,
    schema: SchemaRef,
    open: BTreeMap<(Arc<str>, i32), PartFile>,
}

impl FileSet {
    fn write(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        offsets: (i64, i64),
        batch: &RecordBatch,
    ) -> Result<()> {
        let key = (topic.clone(), partition);
        if !self.open.contains_key(&key) {
            let tmp_dest = self.dir.join(format!(
                "{}-{partition}-{:020}.{}",
                safe(topic),
                offsets.0,
                self.format.extension()
            ));
            let file = OpenFile::create(&tmp_dest, &self.schema, &self.format, true)?;
            self.open.insert(
                key.clone(),
                PartFile {
                    file,
                    first: offsets.0,
                    last: offsets.1,
                },
            );
        }
        let f = self.open.get_mut(&key).expect("opened above");
        f.first = f.first.min(offsets.0);
        f.last = f.last.max(offsets.1);
        f.file.write(batch)
    }

    fn rows(&self) -> usize {
        self.open.values().map(|f| f.file.rows).sum()
    }

    fn bytes(&self) -> u64 {
        self.open.values().map(|f| f.file.bytes()).sum()
    }

    /// Close every open file and rename it to its final, never-overwriting name.
    fn commit_all(&mut self) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        let dir = Location::parse(&self.dir.to_string_lossy(), &self.format.storage_options)?;
        let ext = self.format.extension();
        for ((topic, partition), mut f) in std::mem::take(&mut self.open) {
            let base = format!(
                "{}-{partition}-{:020}-{:020}",
                safe(&topic),
                f.first,
                f.last
            );
            f.file.dest = unused_name(&dir, &base, ext)?;
            done.push(f.file.commit()?);
        }
        Ok(done)
    }

    fn discard_all(&mut self) {
        for (_, f) in std::mem::take(&mut self.open) {
            f.file.discard();
        }
    }
}

/// Topic names may hold characters that are awkward in file names.
fn safe(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn unused_name(dir: &Location, base: &str, ext: &str) -> Result<Location> {
    let first = dir.join(&format!("{base}.{ext}"));
    if !first.exists()? {
        return Ok(first);
    }
    for n in 1.. {
        let p = dir.join(&format!("{base}.{n}.{ext}"));
        if !p.exists()? {
            return Ok(p);
        }
    }
    unreachable!("some suffix is free")
}

pub struct RollingParquetSink {
    cfg: ParquetSinkConfig,
    results: FileSet,
    errors: Option<FileSet>,
    dlq: Option<Box<dyn ErrorOutput>>,
    opened_at: Option<Instant>,
    last_seq: Option<u64>,
    report: SinkReport,
}

impl RollingParquetSink {
    pub fn new(
        cfg: &ParquetSinkConfig,
        schema: SchemaRef,
        error_schema: SchemaRef,
        error_dir: Option<PathBuf>,
        error_options: Option<StorageOptions>,
        dlq: Option<Box<dyn ErrorOutput>>,
    ) -> Result<Self> {
        let format = OutputFormat::new(cfg)?;
        if cfg.path.is_file() {
            return Err(Error::sink(
                cfg.path.display().to_string(),
                "is a file; with a streaming source sink.parquet.path is a directory that receives one file per partition and roll",
            ));
        }
        let local_dir = |dir: &PathBuf, options: &StorageOptions| -> Result<()> {
            check_output(&dir.join("x"), options)?;
            if let Location::Local(p) = Location::parse(&dir.to_string_lossy(), options)? {
                std::fs::create_dir_all(&p).map_err(|e| {
                    Error::sink(
                        p.display().to_string(),
                        format!("cannot create directory: {e}"),
                    )
                })?;
            }
            Ok(())
        };
        local_dir(&cfg.path, &format.storage_options)?;
        let errors = if dlq.is_some() {
            None
        } else {
            let dir = error_dir.unwrap_or_else(|| cfg.path.join("errors"));
            let mut error_format = format.clone();
            if let Some(o) = error_options {
                error_format.storage_options = o;
            }
            local_dir(&dir, &error_format.storage_options)?;
            Some(FileSet {
                dir,
                format: error_format,
                schema: error_schema,
                open: BTreeMap::new(),
            })
        };
        Ok(RollingParquetSink {
            cfg: cfg.clone(),
            results: FileSet {
                dir: cfg.path.clone(),
                format,
                schema,
                open: BTreeMap::new(),
            },
            errors,
            dlq,
            opened_at: None,
            last_seq: None,
            report: SinkReport::default(),
        })
    }

    fn roll(&mut self) -> Result<Option<u64>> {
        let files = self.results.commit_all()?;
        if !files.is_empty() {
            tracing::debug!(files = files.len(), "rolled output files");
        }
        self.report.files.extend(files);
        if let Some(e) = &mut self.errors {
            let files = e.commit_all()?;
            if let Some(last) = files.last() {
                self.report.error_file = Some(last.clone());
            }
        }
        self.opened_at = None;
        Ok(self.last_seq)
    }

    fn due(&self) -> bool {
        let age = Duration::from_millis(self.cfg.roll_interval_ms);
        let rows = self.results.rows() + self.errors.as_ref().map_or(0, |e| e.rows());
        self.opened_at.is_some_and(|t| t.elapsed() >= age)
            || self.cfg.rows_per_file.is_some_and(|r| rows >= r)
            || self
                .cfg
                .max_file_bytes
                .is_some_and(|b| self.results.bytes() >= b)
    }

    /// Write `batch` (rows of the chunk given by `rows`) to per-partition files.
    fn write_split(
        set: &mut FileSet,
        origin: &Origin,
        rows: &[u32],
        batch: &RecordBatch,
    ) -> Result<()> {
        let Origin::Stream(k) = origin else {
            return Err(Error::sink(
                set.dir.display().to_string(),
                "internal: the rolling Parquet sink takes records of a stream",
            ));
        };
        // Per partition: rows of the batch, lowest and highest offset.
        type Rows = (Vec<u32>, i64, i64);
        let mut groups: BTreeMap<(Arc<str>, i32), Rows> = BTreeMap::new();
        for (i, &row) in rows.iter().enumerate() {
            let m = k.position(row as usize);
            let g = groups.entry((m.stream.clone(), m.partition)).or_insert((
                Vec::new(),
                i64::MAX,
                i64::MIN,
            ));
            g.0.push(i as u32);
            g.1 = g.1.min(m.offset);
            g.2 = g.2.max(m.offset);
        }
        for ((topic, partition), (idx, lo, hi)) in groups {
            let part = if idx.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_rows(batch, &idx)?
            };
            set.write(&topic, partition, (lo, hi), &part)?;
        }
        Ok(())
    }
}

impl Sink for RollingParquetSink {
    fn write(&mut self, out: &ChunkOutput) -> Result<Written> {
        if self.opened_at.is_none() {
            self.opened_at = Some(Instant::now());
        }
        if out.results.num_rows() > 0 {
            Self::write_split(
                &mut self.results,
                &out.origin,
                &out.result_rows,
                &out.results,
            )?;
            self.report.rows += out.results.num_rows() as u64;
        }
        if !out.errors.is_empty() {
            if let Some(d) = &mut self.dlq {
                // Durable (acknowledged by the brokers) before the chunk can count as durable.
                d.write(out)?;
            } else if let Some(e) = &mut self.errors {
                let batch = out.error_batch(&e.schema)?;
                let rows: Vec<u32> = out.errors.iter().map(|r| r.row).collect();
                Self::write_split(e, &out.origin, &rows, &batch)?;
            }
            self.report.error_rows += out.errors.len() as u64;
        }
        self.last_seq = Some(out.seq);
        if self.due() {
            return self.roll().map(Written::kept);
        }
        Ok(Written::kept(None))
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        // Files close on time even when no record arrives.
        Some(std::time::Duration::from_millis(50))
    }

    fn tick(&mut self) -> Result<Option<u64>> {
        if self.last_seq.is_some() && self.due() {
            return self.roll();
        }
        Ok(None)
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.roll()?;
        if let Some(d) = &mut self.dlq {
            if let Some(p) = d.finish()? {
                self.report.error_file = Some(p);
            } else {
                self.report.destinations.push(d.describe());
            }
        }
        Ok(self.report.clone())
    }

    fn abort(&mut self) {
        self.results.discard_all();
        if let Some(e) = &mut self.errors {
            e.discard_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{error_schema, ErrorRow};
    use crate::record::{Position, Stage, StreamOrigin};
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::path::Path;

    /// Records of partition `p` of topic `t` from offset `first`.
    #[derive(Debug)]
    struct Records {
        p: i32,
        first: i64,
    }

    impl StreamOrigin for Records {
        fn position(&self, row: usize) -> Position {
            Position {
                stream: Arc::from("t"),
                partition: self.p,
                offset: self.first + row as i64,
            }
        }
        fn epoch(&self) -> u64 {
            0
        }
        fn next_positions(&self) -> Vec<Position> {
            Vec::new()
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]))
    }

    /// A chunk of `n` records of partition `p` from offset `first`; `bad` rows failed.
    fn chunk(seq: u64, p: i32, first: i64, n: usize, bad: &[usize]) -> ChunkOutput {
        let records = Records { p, first };
        let ok: Vec<u32> = (0..n as u32)
            .filter(|i| !bad.contains(&(*i as usize)))
            .collect();
        let ids = |rows: &[u32]| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|&r| records.position(r as usize).to_string()),
            ))
        };
        let bad_rows: Vec<u32> = bad.iter().map(|&b| b as u32).collect();
        let errors: Vec<ErrorRow> = bad
            .iter()
            .map(|&row| ErrorRow {
                row: row as u32,
                reason: "bad".into(),
                stage: Stage::Source,
                task: None,
                source: records.position(row).to_string(),
                written: false,
            })
            .collect();
        let results = RecordBatch::try_new(schema(), vec![ids(&ok)]).unwrap();
        let error_ids = ids(&bad_rows);
        ChunkOutput {
            seq,
            results,
            result_rows: ok,
            errors,
            error_ids,
            origin: Origin::Stream(Arc::new(records)),
        }
    }

    fn sink(dir: &Path, rows: Option<usize>, bytes: Option<u64>) -> RollingParquetSink {
        let cfg: ParquetSinkConfig = serde_yaml::from_str(&format!(
            "{{path: {}, roll_interval_ms: 3600000}}",
            dir.join("out").display()
        ))
        .unwrap();
        let cfg = ParquetSinkConfig {
            rows_per_file: rows,
            max_file_bytes: bytes,
            ..cfg
        };
        let id_field = Arc::new(Field::new("id", DataType::Utf8, false));
        RollingParquetSink::new(&cfg, schema(), error_schema(&id_field), None, None, None).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rolls_on_rows_per_partition_files_named_by_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = sink(tmp.path(), Some(10), None);
        assert_eq!(s.write(&chunk(0, 0, 100, 4, &[1])).unwrap().durable, None);
        assert_eq!(s.write(&chunk(1, 1, 7, 4, &[])).unwrap().durable, None);
        // 11 rows (results and errors) open: the roll makes chunks 0..=2 durable.
        assert_eq!(s.write(&chunk(2, 0, 104, 3, &[])).unwrap().durable, Some(2));
        let out = tmp.path().join("out");
        assert_eq!(
            names(&out),
            vec![
                format!("t-0-{:020}-{:020}.parquet", 100, 106),
                format!("t-1-{:020}-{:020}.parquet", 7, 10),
            ]
        );
        assert_eq!(
            names(&out.join("errors")),
            vec![format!("t-0-{:020}-{:020}.parquet", 101, 101)]
        );
        // Nothing open: finish adds nothing; the same offsets again never overwrite.
        s.write(&chunk(3, 1, 7, 4, &[])).unwrap();
        s.finish().unwrap();
        assert!(names(&out).contains(&format!("t-1-{:020}-{:020}.1.parquet", 7, 10)));
    }

    #[test]
    fn rolls_on_bytes_and_on_time() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = sink(tmp.path(), None, Some(1));
        // Any byte reaches a 1-byte budget: every write rolls.
        assert_eq!(s.write(&chunk(0, 0, 0, 3, &[])).unwrap().durable, Some(0));
        assert_eq!(s.write(&chunk(1, 0, 3, 3, &[])).unwrap().durable, Some(1));
        assert_eq!(names(&tmp.path().join("out")).len(), 2);

        let tmp = tempfile::tempdir().unwrap();
        let mut s = sink(tmp.path(), None, None);
        s.cfg.roll_interval_ms = 0;
        s.cfg.rows_per_file = None;
        assert_eq!(s.tick().unwrap(), None, "nothing written, nothing to roll");
        s.cfg.roll_interval_ms = 3_600_000;
        assert_eq!(s.write(&chunk(0, 0, 0, 2, &[])).unwrap().durable, None);
        assert_eq!(s.tick().unwrap(), None, "not old enough");
        s.cfg.roll_interval_ms = 0;
        assert_eq!(
            s.tick().unwrap(),
            Some(0),
            "old enough: rolled on an idle tick"
        );
    }

    #[test]
    fn abort_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = sink(tmp.path(), None, None);
        s.write(&chunk(0, 0, 0, 3, &[0])).unwrap();
        s.abort();
        let all: Vec<_> = walk(tmp.path());
        assert!(all.is_empty(), "{all:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
