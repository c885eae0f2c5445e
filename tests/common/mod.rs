//! Helpers shared by the integration tests: they run the real binary on real Parquet files with
//! the real models that `make setup` (scripts/setup.sh) installs.
#![allow(dead_code)]

pub mod kafka;
pub mod parity;
pub mod postgres;
pub mod s3;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A model directory installed by the set-up; fails with instructions when it is missing.
pub fn model(name: &str) -> PathBuf {
    let p = root().join("models").join(name);
    assert!(
        p.join("model.onnx").is_file(),
        "model {} is missing: run `make setup` (scripts/setup.sh) first",
        p.display()
    );
    p
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bertflow"));
    c.current_dir(root());
    c.env_remove("RUST_LOG");
    c
}

/// Run `bertflow run` on a pipeline file; returns the process output.
pub fn run_pipeline(pipeline: &Path, extra: &[&str]) -> Output {
    let mut c = bin();
    c.arg("run").arg(pipeline).arg("--no-progress").args(extra);
    c.output().expect("run bertflow")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The lines of a run's summary (`  key   value`) as a map from key to value.
pub fn parse_summary(stdout: &str) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
    let mut inside = false;
    for line in stdout.lines() {
        if line.starts_with("bertflow summary") {
            inside = true;
            continue;
        }
        if !inside || !line.starts_with("  ") {
            continue;
        }
        // Keys are one or two words ("task errors", "error output") padded to column 16.
        let (key, value) = line.split_at(line.len().min(16));
        m.entry(key.trim().to_string())
            .or_insert_with(|| value.trim().to_string());
    }
    m
}

/// A count of the summary (`records`, `written`, `errors`, ...); panics naming the key when the
/// summary lacks it or it is not a number.
pub fn summary_count(stdout: &str, key: &str) -> u64 {
    let m = parse_summary(stdout);
    let v = m
        .get(key)
        .unwrap_or_else(|| panic!("the summary has no `{key}` line:\n{stdout}"));
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary `{key}` is not a count: {v:?}\n{stdout}"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "bertflow failed: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Write a Parquet file from named columns.
pub fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

pub fn texts_parquet(path: &Path, ids: &[&str], texts: &[Option<&str>]) {
    write_parquet(
        path,
        vec![
            ("id", Arc::new(StringArray::from(ids.to_vec())) as ArrayRef),
            (
                "text",
                Arc::new(StringArray::from(texts.to_vec())) as ArrayRef,
            ),
        ],
    );
}

/// Read every row of a Parquet file into one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches.first().map(|b| b.schema()).unwrap_or_else(|| {
        let f = File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .schema()
            .clone()
    });
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

pub fn strings(batch: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = batch
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    let a = a.as_string::<i32>();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect()
}

/// Embeddings of a FixedSizeList<Float32> column.
pub fn embeddings(batch: &RecordBatch, col: &str) -> Vec<Vec<f32>> {
    let a = batch
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    let list = a.as_fixed_size_list();
    (0..list.len())
        .map(|i| {
            list.value(i)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// Write a pipeline file for the embed task; `extra` is appended verbatim (YAML).
pub fn embed_pipeline(dir: &Path, input: &Path, output: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "source:\n  parquet:\n    path: {input}\n    id_column: id\ntasks:\n  embed:\n    model: {model}\nsink:\n  parquet:\n    path: {output}\n{extra}",
        input = input.display(),
        output = output.display(),
        model = model("all-MiniLM-L6-v2").display(),
    );
    let p = dir.join("pipeline.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Write `texts` (ids `r0`, `r1`, ... and, when given, a `question` column) to `dir/in.parquet`,
/// write a pipeline whose `tasks:` section is `tasks_yaml` (which may go on with further
/// top-level sections), run it into `dir/out.parquet`, and return the process output.
pub fn run_tasks(
    dir: &Path,
    texts: &[Option<&str>],
    questions: Option<&[Option<&str>]>,
    tasks_yaml: &str,
) -> Output {
    run_tasks_with(dir, texts, questions, tasks_yaml, &[])
}

/// [`run_tasks`] with more command-line arguments (e.g. `--set` overrides).
pub fn run_tasks_with(
    dir: &Path,
    texts: &[Option<&str>],
    questions: Option<&[Option<&str>]>,
    tasks_yaml: &str,
    args: &[&str],
) -> Output {
    let input = dir.join("in.parquet");
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("r{i}")).collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(StringArray::from(ids))),
        ("text", Arc::new(StringArray::from(texts.to_vec()))),
    ];
    if let Some(q) = questions {
        cols.push(("question", Arc::new(StringArray::from(q.to_vec()))));
    }
    write_parquet(&input, cols);
    let output = dir.join("out.parquet");
    let _ = std::fs::remove_file(&output);
    let pipeline = dir.join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n{tasks_yaml}sink:\n  parquet:\n    path: {}\n",
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    run_pipeline(&pipeline, args)
}

/// A model of the task fixtures (tests/fixtures/tasks).
pub fn fixture_model(name: &str) -> String {
    root()
        .join("tests/fixtures/tasks")
        .join(name)
        .display()
        .to_string()
}

/// Awkward texts every source must carry through without crashing: each is either processed or
/// becomes an error row. `None` is a null text.
pub fn bad_input_corpus() -> Vec<Option<String>> {
    vec![
        Some("an ordinary sentence about Paris".into()),
        None,
        Some(String::new()),
        Some("   \t\n  ".into()),
        Some("emoji 😀🎉 and CJK 東京 and RTL שלום".into()),
        Some("control \u{0}\u{1}\u{7f} characters and a lone \u{fffd}".into()),
        Some("x".repeat(5000)),          // one very long token
        Some("\u{200b}\u{200b}".into()), // zero-width spaces only
    ]
}

/// A 1 MB text (200,000 words).
pub fn one_megabyte_text() -> String {
    "word ".repeat(200_000)
}

/// Tasks over the tiny fixture models (fast), all four kinds.
pub fn all_fixture_tasks() -> String {
    format!(
        "  embed: {{model: {}}}\n  sentiment: {{model: {}}}\n  ner: {{model: {}}}\n  qa: {{model: {}, questions: [\"Where?\"]}}\n",
        model("all-MiniLM-L6-v2").display(),
        fixture_model("bert-sentiment"),
        fixture_model("bert-ner"),
        fixture_model("bert-qa"),
    )
}

/// A plain HTTP GET: status code and body (0 and empty when nothing answers).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(_) => return (0, String::new()),
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A `List<Float32>` column (the reference vectors of tests/fixtures).
pub fn list_column(batch: &arrow::array::RecordBatch, col: &str) -> Vec<Vec<f32>> {
    use arrow::array::{Array, AsArray};
    let l = batch.column_by_name(col).unwrap().as_list::<i32>();
    (0..l.len())
        .map(|i| {
            l.value(i)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The set-up's Python with onnxruntime and onnx (scripts/setup.sh).
pub fn tools_python() -> PathBuf {
    let cache = std::env::var_os("BERTFLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"))
                .join("bertflow")
        });
    cache.join("setup-venv/bin/python")
}

/// A copy of a model directory without its variants (which are written beside the graph).
/// `bertflow models optimize MODEL ARGS...` with the set-up's Python tools.
pub fn optimize(model: &Path, args: &[&str]) -> Output {
    bin()
        .args(["models", "optimize"])
        .arg(model)
        .args(args)
        .env("BERTFLOW_PYTHON", tools_python())
        .output()
        .unwrap()
}

pub fn copy_model(src: &Path, dir: &Path) -> PathBuf {
    let dst = dir.join(src.file_name().unwrap());
    std::fs::create_dir_all(&dst).unwrap();
    for e in walk(src) {
        let rel = e.strip_prefix(src).unwrap();
        let to = dst.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    dst
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("model.")
            || p.file_name().unwrap() == "model.onnx"
        {
            out.push(p);
        }
    }
    out
}
