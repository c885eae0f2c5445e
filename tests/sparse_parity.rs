//! Sparse (SPLADE) vectors against sentence-transformers' `SparseEncoder.encode` on tiny
//! seeded masked-language models (tests/fixtures/sparse, made by scripts/make_sparse_fixtures.py):
//! the same active dimensions, values within 1e-4 relative, cosine >= 0.9999, with and without
//! `max_active_dims`; how Kafka JSON and Postgres `sparsevec` carry them; start-up errors.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Float32Type, UInt32Type};
use common::*;
use serde_json::Value;

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/sparse/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sparse_model(name: &str) -> String {
    root()
        .join("tests/fixtures/sparse")
        .join(name)
        .display()
        .to_string()
}

type Sparse = (Vec<u32>, Vec<f32>);

fn sparse_rows(b: &RecordBatch, col: &str) -> Vec<Sparse> {
    let s = b.column_by_name(col).unwrap().as_struct().clone();
    let idx = s.column(0).as_list::<i32>().clone();
    let val = s.column(1).as_list::<i32>().clone();
    (0..s.len())
        .map(|r| {
            (
                idx.value(r).as_primitive::<UInt32Type>().values().to_vec(),
                val.value(r).as_primitive::<Float32Type>().values().to_vec(),
            )
        })
        .collect()
}

fn want_rows(v: &Value) -> Vec<Sparse> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["indices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                r["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            )
        })
        .collect()
}

fn sparse_cosine(a: &Sparse, b: &Sparse) -> f64 {
    let dense = |s: &Sparse| -> std::collections::HashMap<u32, f64> {
        s.0.iter().zip(&s.1).map(|(i, v)| (*i, *v as f64)).collect()
    };
    let (da, db) = (dense(a), dense(b));
    let dot: f64 = da.iter().map(|(i, v)| v * db.get(i).unwrap_or(&0.0)).sum();
    let na = da.values().map(|v| v * v).sum::<f64>().sqrt();
    let nb = db.values().map(|v| v * v).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

fn run(dir: &Path, texts: &[String], task_yaml: &str, sink: &str) -> std::process::Output {
    let input = dir.join("in.parquet");
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("r{i}")).collect();
    write_parquet(
        &input,
        vec![
            ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
            ("text", Arc::new(StringArray::from(texts.to_vec()))),
        ],
    );
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n{task_yaml}batching:\n  max_batch_size: 4\nsink:\n{sink}",
            input.display()
        ),
    )
    .unwrap();
    run_pipeline(&p, &[])
}

fn texts(e: &Value) -> Vec<String> {
    e["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Run `tasks.sparse` on `model` (with the task keys in `extra`) over the reference texts with
/// and without `max_active_dims: 8`, and compare each vector with `SparseEncoder.encode`'s
/// (`reference`: the model's entry of expected.json): the same active dimensions, values within
/// 1e-4 relative, cosine >= 0.9999, the vocabulary size in the field's metadata. Returns each
/// run's output.
fn assert_matches_reference(
    dir: &Path,
    texts: &[String],
    model: &str,
    extra: &str,
    reference: &Value,
    what: &str,
) -> Vec<std::process::Output> {
    let out = dir.join("out.parquet");
    let sink = format!("  parquet:\n    path: {}\n", out.display());
    let mut runs = Vec::new();
    for (case, k) in [("all", None), ("top8", Some(8))] {
        let cap = k
            .map(|k| format!("    max_active_dims: {k}\n"))
            .unwrap_or_default();
        let o = run(
            dir,
            texts,
            &format!("  sparse:\n    model: {model}\n{extra}{cap}"),
            &sink,
        );
        assert_ok(&o);
        let b = read_parquet(&out);
        let field = b.schema().field_with_name("sparse").unwrap().clone();
        assert_eq!(
            field.metadata()["bertflow.sparse_dimensions"],
            reference["vocab"].as_u64().unwrap().to_string()
        );
        let got = sparse_rows(&b, "sparse");
        let want = want_rows(&reference[case]);
        assert_eq!(got.len(), texts.len());
        assert_eq!(want.len(), texts.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let at = format!("{what} {case} text {i} ({:?})", texts[i]);
            assert_close(g, w, &at);
            if let Some(k) = k {
                assert!(g.0.len() <= k, "{at}");
            }
        }
        runs.push(o);
    }
    runs
}

#[test]
fn sparse_vectors_match_sparse_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    for (name, m) in e["models"].as_object().unwrap() {
        assert_matches_reference(dir.path(), &texts, &sparse_model(name), "", m, name);
    }
}

#[test]
fn top_tokens_kafka_json_and_postgres_sparsevec() {
    use common::kafka::{bootstrap, create_topics, read_topic_to_end, unique};
    use common::postgres::{table, url, Db};
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    let want = want_rows(&e["models"]["bert-splade"]["top8"]);
    let task = format!(
        "  sparse:\n    model: {}\n    max_active_dims: 8\n    top_tokens: 3\n",
        sparse_model("bert-splade")
    );
    // Parquet: the top tokens are the three largest weights, as tokens.
    let out = dir.path().join("out.parquet");
    assert_ok(&run(
        dir.path(),
        &texts,
        &task,
        &format!("  parquet:\n    path: {}\n", out.display()),
    ));
    let b = read_parquet(&out);
    let tokens = b
        .column_by_name("sparse_tokens")
        .unwrap()
        .as_list::<i32>()
        .clone();
    for (i, w) in want.iter().enumerate() {
        let t = tokens.value(i);
        let t = t.as_struct();
        let weights = t.column(1).as_primitive::<Float32Type>();
        assert_eq!(t.len(), 3.min(w.0.len()), "text {i}");
        let mut best = w.1.clone();
        best.sort_by(|a, b| b.total_cmp(a));
        for (k, b) in best.iter().enumerate().take(t.len()) {
            assert!((weights.value(k) - b).abs() <= 1e-4 * b.abs().max(1.0));
            assert!(!t.column(0).as_string::<i32>().value(k).is_empty());
        }
    }
    // Kafka JSON: {indices: [...], values: [...]}.
    let servers = bootstrap();
    let topic = unique("sparse-out");
    create_topics(&servers, &[(&topic, 1)]);
    assert_ok(&run(
        dir.path(),
        &texts,
        &task,
        &format!("  kafka:\n    bootstrap_servers: {servers}\n    topic: {topic}\n"),
    ));
    let msgs = read_topic_to_end(&servers, &topic, false, std::time::Duration::from_secs(60));
    assert_eq!(msgs.len(), texts.len());
    for m in msgs {
        let v = m.json();
        let i: usize = v["id"].as_str().unwrap()[1..].parse().unwrap();
        let idx: Vec<u32> = v["sparse"]["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(idx, want[i].0, "kafka text {i}");
    }
    // Postgres: sparsevec(vocab) with an HNSW index; the same non-zero entries.
    let db = Db::connect(&url());
    let tbl = table("sparse");
    let sink = format!(
        "  postgres:\n    url: {}\n    table: {tbl}\n    create_table: true\n    index: {{method: hnsw, distance: inner_product}}\n",
        url()
    );
    assert_ok(&run(dir.path(), &texts, &task, &sink));
    let rows = db.query(&format!("SELECT id, sparse::text FROM \"{tbl}\""));
    assert_eq!(rows.len(), texts.len());
    let vocab = e["models"]["bert-splade"]["vocab"].as_u64().unwrap();
    for r in rows {
        let id: String = r.get(0);
        let text: String = r.get(1);
        let i: usize = id[1..].parse().unwrap();
        // '{1:0.5,7:1.25}/700': 1-based indices in the text form.
        let (body, dim) = text.rsplit_once('/').unwrap();
        assert_eq!(dim, vocab.to_string());
        let idx: Vec<u32> = body
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| kv.split(':').next().unwrap().parse::<u32>().unwrap() - 1)
            .collect();
        assert_eq!(idx, want[i].0, "postgres {id}");
    }
    db.execute(&format!("DROP TABLE \"{tbl}\""));
    // An index without max_active_dims (or above 1,000) is refused at start-up.
    let uncapped = format!("  sparse:\n    model: {}\n", sparse_model("bert-splade"));
    let o = run(dir.path(), &texts, &uncapped, &sink);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("max_active_dims is not set"),
        "{}",
        stderr(&o)
    );
    let o = run(
        dir.path(),
        &texts,
        &uncapped.replace("\n    model", "\n    max_active_dims: 2000\n    model"),
        &sink,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("lower it to 1000"), "{}", stderr(&o));
    db.execute(&format!("DROP TABLE IF EXISTS \"{tbl}\""));
}

#[test]
fn sparse_on_a_model_without_a_masked_lm_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (m, want) in [
        (
            fixture_model("bert-sentiment"),
            "not those of a model for the sparse task",
        ),
        (fixture_model("bert-ner"), "configure it under tasks.ner"),
    ] {
        let o = run_tasks(
            dir.path(),
            &[Some("text")],
            None,
            &format!("  sparse:\n    model: {m}\n"),
        );
        assert!(!o.status.success(), "{m}");
        assert!(stderr(&o).contains(want), "{m}: {}", stderr(&o));
    }
    let o = run_tasks(
        dir.path(),
        &[Some("text")],
        None,
        &format!(
            "  sparse:\n    model: {}\n    max_active_dims: 0\n",
            sparse_model("bert-splade")
        ),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tasks.sparse.max_active_dims is 0"));
    // models inspect recognises the masked-language head.
    let o = bin()
        .args(["models", "inspect", &sparse_model("bert-splade")])
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        stdout(&o).contains("tasks         sparse"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_graph_that_pools_gives_the_same_vectors() {
    // bert-splade-pooled is bert-splade's graph ending in SPLADE max pooling (output
    // sparse_embedding [batch, vocabulary]): only one vector per text leaves ONNX Runtime.
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    assert_matches_reference(
        dir.path(),
        &texts,
        &sparse_model("bert-splade-pooled"),
        "",
        &e["models"]["bert-splade"],
        "bert-splade-pooled",
    );
    let o = bin()
        .args(["models", "inspect", &sparse_model("bert-splade-pooled")])
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("tasks         sparse"),
        "{}",
        stdout(&o)
    );
}

/// `models optimize --pool` ends a masked-language model in its SPLADE pooling (max with relu,
/// sum with log1p_relu): the variant's vectors equal `SparseEncoder.encode`, and a pipeline that
/// pools otherwise is refused at start-up, naming both.
#[test]
fn optimize_pool_builds_splade_pooling_into_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    let out = dir.path().join("out.parquet");
    let sink = format!("  parquet:\n    path: {}\n", out.display());
    for name in ["bert-splade", "roberta-splade"] {
        let m = copy_model(Path::new(&sparse_model(name)), dir.path());
        let o = optimize(&m, &["--precision", "fp32", "--pool"]);
        assert_ok(&o);
        let (mode, act) = (
            e["models"][name]["pooling"].as_str().unwrap(),
            e["models"][name]["activation"].as_str().unwrap(),
        );
        assert!(
            stdout(&o).contains(&format!(
                "output        sparse_embedding: SPLADE {mode} pooling"
            )),
            "{}",
            stdout(&o)
        );
        let rec: Value =
            serde_json::from_str(&std::fs::read_to_string(m.join("model.fp32.json")).unwrap())
                .unwrap();
        assert_eq!(
            rec["pooling"]["modes"],
            serde_json::json!([format!("splade_{mode}")])
        );
        assert_eq!(rec["pooling"]["activation"], act);
        for o in assert_matches_reference(
            dir.path(),
            &texts,
            &m.display().to_string(),
            "    precision: fp32\n",
            &e["models"][name],
            &format!("{name} --pool"),
        ) {
            assert!(stdout(&o).contains("in the graph"), "{}", stdout(&o));
        }
        // The variant pools one way; a pipeline asking for the other is refused.
        let other = if mode == "max" { "sum" } else { "max" };
        let o = run(
            dir.path(),
            &texts,
            &format!(
                "  sparse:\n    model: {}\n    precision: fp32\n    pooling: {other}\n",
                m.display()
            ),
            &sink,
        );
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains(&format!("tasks.sparse asks for SPLADE {other} pooling")),
            "{}",
            stderr(&o)
        );
    }
}

/// The chunking `scripts/make_sparse_fixtures.py` pinned for the passage references.
const CHUNKING: &str = "{boundary: sentence, max_tokens: 24, overlap: 6}";

/// Rows of a passages list column: per record, its passages `(index, start, end, vector)`.
type PassageRow = (i32, i64, i64, Sparse);

fn passage_rows(b: &RecordBatch, col: &str) -> Vec<Vec<PassageRow>> {
    let list = b.column_by_name(col).unwrap().as_list::<i32>().clone();
    (0..list.len())
        .map(|r| {
            let p = list.value(r);
            let p = p.as_struct();
            let index = p.column(0).as_primitive::<arrow::datatypes::Int32Type>();
            let start = p.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            let end = p.column(2).as_primitive::<arrow::datatypes::Int64Type>();
            let vectors = RecordBatch::try_from_iter([("v", p.column(3).clone())]).unwrap();
            sparse_rows(&vectors, "v")
                .into_iter()
                .enumerate()
                .map(|(i, v)| (index.value(i), start.value(i), end.value(i), v))
                .collect()
        })
        .collect()
}

fn assert_close(got: &Sparse, want: &Sparse, what: &str) {
    assert_eq!(got.0, want.0, "{what}: active dimensions");
    let scale = want.1.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (d, (a, b)) in got.1.iter().zip(&want.1).enumerate() {
        let rel = (a - b).abs() / b.abs().max(scale * 0.01).max(1e-6);
        assert!(rel <= 1e-4, "{what} dimension {}: {a} vs {b}", got.0[d]);
    }
    assert!(sparse_cosine(got, want) >= 0.9999, "{what}");
}

/// `tasks.sparse.chunking`: long texts are cut into the passages dense embeddings use, each
/// passage's vector equals `SparseEncoder.encode` of the passage's text, the document vector is
/// the passages' pooled as the model pools tokens (max / sum), and one row per passage carries
/// the vector as `chunk_sparse` with its vocabulary size.
#[test]
fn passages_of_long_texts_match_sparse_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts: Vec<String> = e["passage_texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let out = dir.path().join("out.parquet");
    let sink = format!("  parquet:\n    path: {}\n", out.display());
    for (name, m) in e["models"].as_object().unwrap() {
        let want = m["passages"].as_array().unwrap();
        let mut by_record: Vec<Vec<PassageRow>> = vec![Vec::new(); texts.len()];
        for p in want {
            let r: usize = p["id"].as_str().unwrap()[1..].parse().unwrap();
            let v = &want_rows(&Value::Array(vec![p.clone()]))[0];
            by_record[r].push((
                p["index"].as_i64().unwrap() as i32,
                p["start"].as_i64().unwrap(),
                p["end"].as_i64().unwrap(),
                v.clone(),
            ));
        }
        assert!(
            by_record.iter().filter(|p| p.len() > 2).count() >= 2,
            "{name}: the reference texts must make several passages"
        );
        let task = format!(
            "  sparse:\n    model: {}\n    max_active_dims: 12\n    chunking: {}\n",
            sparse_model(name),
            CHUNKING.replace('}', ", document_embedding: true}")
        );
        // Without max_active_dims the passages equal the reference; with it, the document vector
        // is cut to the 12 largest of the pooled weights.
        for capped in [false, true] {
            let t = if capped {
                task.clone()
            } else {
                task.replace("    max_active_dims: 12\n", "")
            };
            let o = run(dir.path(), &texts, &t, &sink);
            assert_ok(&o);
            let b = read_parquet(&out);
            let got = passage_rows(&b, "chunks");
            let docs = b.column_by_name("sparse").unwrap();
            let doc_rows = sparse_rows(&b, "sparse");
            for (r, (g, w)) in got.iter().zip(&by_record).enumerate() {
                assert_eq!(g.len(), w.len(), "{name} record {r}: passages");
                for (gp, wp) in g.iter().zip(w) {
                    assert_eq!((gp.0, gp.1, gp.2), (wp.0, wp.1, wp.2), "{name} record {r}");
                    let what = format!("{name} record {r} passage {}", gp.0);
                    if capped {
                        assert!(gp.3 .0.len() <= 12, "{what}");
                        // The 12 largest of the reference's weights.
                        let mut order: Vec<usize> = (0..wp.3 .0.len()).collect();
                        order.sort_by(|&a, &b| wp.3 .1[b].total_cmp(&wp.3 .1[a]));
                        let mut top: Vec<u32> =
                            order.iter().take(12).map(|&i| wp.3 .0[i]).collect();
                        top.sort();
                        assert_eq!(gp.3 .0, top, "{what}");
                    } else {
                        assert_close(&gp.3, &wp.3, &what);
                    }
                }
                // The document vector: the reference passages pooled per vocabulary entry.
                if w.is_empty() {
                    assert!(docs.is_null(r), "{name} record {r}: no passages, no vector");
                    continue;
                }
                let mut pooled = std::collections::BTreeMap::<u32, f32>::new();
                for p in w {
                    for (&i, &v) in p.3 .0.iter().zip(&p.3 .1) {
                        let x = pooled.entry(i).or_insert(0.0);
                        *x = if m["pooling"] == "max" {
                            x.max(v)
                        } else {
                            *x + v
                        };
                    }
                }
                let mut doc: Vec<(u32, f32)> = pooled.into_iter().collect();
                if capped {
                    doc.sort_by(|a, b| b.1.total_cmp(&a.1));
                    doc.truncate(12);
                    doc.sort_by_key(|x| x.0);
                }
                let want_doc: Sparse = doc.into_iter().unzip();
                if capped {
                    // Near-equal weights may order differently: compare the vectors.
                    assert!(
                        sparse_cosine(&doc_rows[r], &want_doc) >= 0.999,
                        "{name} record {r} document"
                    );
                } else {
                    assert_close(
                        &doc_rows[r],
                        &want_doc,
                        &format!("{name} record {r} document"),
                    );
                }
            }
        }
    }
    // One row per passage: chunk_sparse, with the vocabulary size for Postgres' sparsevec.
    let task = format!(
        "  sparse:\n    model: {}\n    chunking: {CHUNKING}\n",
        sparse_model("bert-splade")
    );
    let o = run(
        dir.path(),
        &texts,
        &task,
        &format!(
            "  parquet:\n    path: {}\n    one_row_per_chunk: true\n",
            out.display()
        ),
    );
    assert_ok(&o);
    let b = read_parquet(&out);
    let want = e["models"]["bert-splade"]["passages"].as_array().unwrap();
    assert_eq!(b.num_rows(), want.len());
    let field = b.schema().field_with_name("chunk_sparse").unwrap().clone();
    assert_eq!(
        field.metadata()["bertflow.sparse_dimensions"],
        e["models"]["bert-splade"]["vocab"]
            .as_u64()
            .unwrap()
            .to_string()
    );
    for (r, (g, w)) in sparse_rows(&b, "chunk_sparse")
        .iter()
        .zip(want_rows(&Value::Array(want.clone())))
        .enumerate()
    {
        assert_close(g, &w, &format!("flat row {r}"));
    }
    // Two tasks writing passages cannot share one row per passage.
    let both = format!(
        "{task}  embed:\n    model: {}\n    chunking: {}\n",
        model("all-MiniLM-L6-v2").display(),
        CHUNKING.replace('}', ", column: dense_chunks}")
    );
    let o = run(
        dir.path(),
        &texts,
        &both,
        &format!(
            "  parquet:\n    path: {}\n    one_row_per_chunk: true\n",
            out.display()
        ),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("several tasks write passages"),
        "{}",
        stderr(&o)
    );
    // A passage longer than the model's limit is refused, naming the key.
    let o = run(
        dir.path(),
        &texts,
        &format!(
            "  sparse:\n    model: {}\n    chunking: {{max_tokens: 4096}}\n",
            sparse_model("bert-splade")
        ),
        &sink,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("tasks.sparse.chunking.max_tokens is 4096"),
        "{}",
        stderr(&o)
    );
}
