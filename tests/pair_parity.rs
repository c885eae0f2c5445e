//! Zero-shot classification and cross-encoder scores against transformers 4.53's
//! zero-shot-classification pipeline and sentence-transformers' CrossEncoder.predict on the same
//! tiny NLI and cross-encoder models (tests/fixtures/pairs, made by
//! scripts/make_pair_fixtures.py): label order exactly, scores within 1e-5. Also the pair tasks'
//! bad input: start-up errors naming the key, and per-record errors that keep the other tasks.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::Float32Type;
use common::*;
use serde_json::Value;

const TOL: f64 = 1e-5;
/// Raw logits (a cross-encoder with identity activation) of the random-weight fixture differ
/// between torch and ONNX Runtime by up to 5e-5 in fp32 (ONNX Runtime in Python on the same graph
/// gives bertflow's values); probabilities stay within `TOL`.
const LOGIT_TOL: f64 = 1e-4;

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/pairs/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn pair_model(name: &str) -> String {
    root()
        .join("tests/fixtures/pairs")
        .join(name)
        .display()
        .to_string()
}

fn texts(e: &Value) -> Vec<String> {
    e["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn yaml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// Write `columns` (beside ids r0, r1, ...) as the input, run a pipeline with `tasks_yaml` in
/// small batches, and return the output (and error output, when written).
fn run(
    dir: &Path,
    columns: Vec<(&str, ArrayRef)>,
    tasks_yaml: &str,
) -> (RecordBatch, Option<RecordBatch>, String) {
    let n = columns[0].1.len();
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![("id", Arc::new(StringArray::from(ids)))];
    cols.extend(columns);
    let input = dir.join("in.parquet");
    write_parquet(&input, cols);
    let output = dir.join("out.parquet");
    let errors = dir.join("out.errors.parquet");
    let _ = std::fs::remove_file(&output);
    let _ = std::fs::remove_file(&errors);
    let pipeline = dir.join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n{tasks_yaml}batching:\n  max_batch_size: 8\n  max_batch_tokens: 1024\nsink:\n  parquet:\n    path: {}\n",
            input.display(),
            output.display()
        ),
    )
    .unwrap();
    let o = run_pipeline(&pipeline, &[]);
    assert_ok(&o);
    let errs = errors
        .is_file()
        .then(|| read_parquet(&errors))
        .filter(|b| b.num_rows() > 0);
    (read_parquet(&output), errs, stdout(&o))
}

fn text_column(texts: &[Option<&str>]) -> (&'static str, ArrayRef) {
    ("text", Arc::new(StringArray::from(texts.to_vec())))
}

fn items(out: &RecordBatch, col: &str, row: usize) -> StructArray {
    out.column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"))
        .as_list::<i32>()
        .value(row)
        .as_struct()
        .clone()
}

fn strs(st: &StructArray, name: &str) -> Vec<String> {
    let a = st.column_by_name(name).unwrap().as_string::<i32>();
    (0..a.len()).map(|i| a.value(i).to_string()).collect()
}

fn floats(st: &StructArray, name: &str) -> Vec<f64> {
    let a = st
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Float32Type>();
    (0..a.len()).map(|i| a.value(i) as f64).collect()
}

fn close(got: &[f64], want: &Value, what: &str) {
    close_within(got, want, what, TOL)
}

fn close_within(got: &[f64], want: &Value, what: &str, tol: f64) {
    let want: Vec<f64> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= tol, "{what} [{i}]: {g} vs expected {w}");
    }
}

#[test]
fn zero_shot_matches_the_transformers_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    let input: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let mut checked = 0;
    for (model, cases) in e["zero_shot"].as_object().unwrap() {
        for (ci, case) in cases.as_array().unwrap().iter().enumerate() {
            let labels: Vec<String> = case["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect();
            let template = case
                .get("hypothesis_template")
                .map(|t| {
                    format!(
                        "    hypothesis_template: {}\n",
                        serde_json::to_string(t).unwrap()
                    )
                })
                .unwrap_or_default();
            let yaml = format!(
                "  zero_shot:\n    model: {}\n    labels: {}\n    multi_label: {}\n{template}",
                pair_model(model),
                yaml_list(&labels),
                case["multi_label"].as_bool().unwrap()
            );
            let (out, errors, _) = run(dir.path(), vec![text_column(&input)], &yaml);
            assert!(
                errors.is_none(),
                "{model} case {ci}: no record fails: {:?}",
                errors.map(|e| strings(&e, "reason"))
            );
            assert_eq!(out.num_rows(), texts.len());
            for (row, want) in case["outputs"].as_array().unwrap().iter().enumerate() {
                let what = format!("{model} case {ci} text {row}");
                let got = items(&out, "zero_shot", row);
                let want_labels: Vec<String> = want["labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap().to_string())
                    .collect();
                assert_eq!(strs(&got, "label"), want_labels, "{what}");
                close(&floats(&got, "score"), &want["scores"], &what);
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * 8 * 14, "{checked}");
}

#[test]
fn zero_shot_labels_from_a_column_top_k_and_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    // The 10-label single-label case of bert-nli, with the labels read per record.
    let case = &e["zero_shot"]["bert-nli"][2];
    let labels: Vec<&str> = case["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let joined = labels.join(", ");
    let n = 4;
    let input: Vec<Option<&str>> = texts[..n].iter().map(|t| Some(t.as_str())).collect();
    let column: Vec<Option<&str>> = vec![Some(joined.as_str()); n];
    let yaml = format!(
        "  zero_shot:\n    model: {}\n    labels_column: labels\n    top_k: 3\n",
        pair_model("bert-nli")
    );
    let (out, errors, _) = run(
        dir.path(),
        vec![
            text_column(&input),
            ("labels", Arc::new(StringArray::from(column)) as ArrayRef),
        ],
        &yaml,
    );
    assert!(errors.is_none());
    for row in 0..n {
        let want = &case["outputs"][row];
        let got = items(&out, "zero_shot", row);
        let want_labels: Vec<String> = want["labels"].as_array().unwrap()[..3]
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        assert_eq!(strs(&got, "label"), want_labels, "row {row}");
        let want_scores = Value::from(want["scores"].as_array().unwrap()[..3].to_vec());
        close(&floats(&got, "score"), &want_scores, &format!("row {row}"));
    }
    // A threshold keeps the labels at or above it, best first.
    let yaml = format!(
        "  zero_shot:\n    model: {}\n    labels: {}\n    threshold: 0.1\n",
        pair_model("bert-nli"),
        yaml_list(&labels.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    let (out, _, _) = run(dir.path(), vec![text_column(&input)], &yaml);
    for row in 0..n {
        let want = &case["outputs"][row];
        let keep: Vec<String> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["scores"].as_array().unwrap())
            .filter(|(_, s)| s.as_f64().unwrap() >= 0.1)
            .map(|(l, _)| l.as_str().unwrap().to_string())
            .collect();
        assert!(
            !keep.is_empty() && keep.len() < labels.len(),
            "row {row}: {keep:?}"
        );
        assert_eq!(
            strs(&items(&out, "zero_shot", row), "label"),
            keep,
            "row {row}"
        );
    }
}

#[test]
fn cross_encoder_matches_crossencoder_predict() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    let input: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    for (model, want) in e["cross_encoder"].as_object().unwrap() {
        let queries: Vec<String> = want["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap().to_string())
            .collect();
        let yaml = format!(
            "  cross_encoder:\n    model: {}\n    queries: {}\n",
            pair_model(model),
            yaml_list(&queries)
        );
        let (out, errors, _) = run(dir.path(), vec![text_column(&input)], &yaml);
        assert!(errors.is_none(), "{model}");
        let multi = want["activation"] == "Identity";
        for row in 0..texts.len() {
            let got = items(&out, "cross_scores", row);
            assert_eq!(strs(&got, "query"), queries, "{model} row {row}");
            for (qi, q) in queries.iter().enumerate() {
                let what = format!("{model} row {row} query {qi}");
                let w = &want["scores"][q][row];
                if multi {
                    let scores = got
                        .column_by_name("scores")
                        .unwrap()
                        .as_list::<i32>()
                        .value(qi);
                    let scores = scores.as_primitive::<Float32Type>();
                    let got: Vec<f64> = scores.values().iter().map(|x| *x as f64).collect();
                    close_within(&got, w, &what, LOGIT_TOL);
                    // The best class and its score.
                    let best = got
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, x)| if *x > got[b] { i } else { b });
                    let names = ["contradiction", "entailment", "neutral"];
                    assert_eq!(
                        strs(&items(&out, "cross_scores", row), "label")[qi],
                        names[best]
                    );
                } else {
                    close(
                        &[floats(&got, "score")[qi]],
                        &Value::from(vec![w.clone()]),
                        &what,
                    );
                }
            }
        }
    }
}

#[test]
fn cross_encoder_query_column_and_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    let want = &e["cross_encoder"]["bert-cross"];
    let q0 = want["queries"][0].as_str().unwrap();
    let q1 = want["queries"][1].as_str().unwrap();
    let n = texts.len();
    let input: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    // Fixed query q0, and q1 from the column.
    let yaml = format!(
        "  cross_encoder:\n    model: {}\n    queries: [{}]\n    query_column: query\n    threshold: 0.5\n",
        pair_model("bert-cross"),
        serde_json::to_string(q0).unwrap()
    );
    let (out, errors, _) = run(
        dir.path(),
        vec![
            text_column(&input),
            (
                "query",
                Arc::new(StringArray::from(vec![Some(q1); n])) as ArrayRef,
            ),
        ],
        &yaml,
    );
    assert!(errors.is_none());
    let mut kept = 0;
    for row in 0..n {
        let got = items(&out, "cross_scores", row);
        let mut expect = Vec::new();
        for q in [q0, q1] {
            let s = want["scores"][q][row].as_f64().unwrap();
            if s >= 0.5 {
                expect.push(q.to_string());
            }
        }
        assert_eq!(strs(&got, "query"), expect, "row {row}");
        kept += expect.len();
    }
    assert!(
        kept > 0 && kept < 2 * n,
        "the threshold keeps some scores: {kept}"
    );
}

#[test]
fn pair_task_errors_fail_that_task_only_and_bad_settings_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // Empty text, a null labels value and a labels value with no label fail zero_shot for that
    // record; sentiment on the same model still writes it.
    let input = text_column(&[
        Some("a fine text"),
        Some(""),
        Some("another"),
        Some("third"),
    ]);
    let labels: ArrayRef = Arc::new(StringArray::from(vec![
        Some("billing, login"),
        Some("billing"),
        None,
        Some(" , "),
    ]));
    let yaml = format!(
        "  sentiment:\n    model: {m}\n  zero_shot:\n    model: {m}\n    labels_column: labels\n",
        m = pair_model("bert-nli")
    );
    let (out, errors, _) = run(dir.path(), vec![input, ("labels", labels)], &yaml);
    assert_eq!(strings(&out, "id").len(), 4, "every record is written");
    let zs = out.column_by_name("zero_shot").unwrap();
    assert!(!zs.is_null(0));
    for row in 1..4 {
        assert!(zs.is_null(row), "row {row}: zero_shot is null");
        assert!(!out.column_by_name("sentiment_label").unwrap().is_null(row));
    }
    let errors = errors.expect("error rows");
    assert_eq!(
        strings(&errors, "id"),
        vec![Some("r1".into()), Some("r2".into()), Some("r3".into())]
    );
    let reasons: Vec<String> = strings(&errors, "reason").into_iter().flatten().collect();
    assert!(reasons[0].contains("empty"), "{reasons:?}");
    assert!(reasons[1].contains("labels column is null"), "{reasons:?}");
    assert!(reasons[2].contains("no candidate label"), "{reasons:?}");
    assert!(strings(&errors, "task")
        .iter()
        .all(|t| t.as_deref() == Some("zero_shot")));

    // Start-up errors, from validate and run alike.
    let cases = [
        (
            format!("  zero_shot:\n    model: {}\n", pair_model("bert-nli")),
            "has no labels",
        ),
        (
            format!(
                "  zero_shot:\n    model: {}\n    labels: [a, b]\n    hypothesis_template: \"About this.\"\n",
                pair_model("bert-nli")
            ),
            "tasks.zero_shot.hypothesis_template",
        ),
        (
            format!(
                "  zero_shot:\n    model: {}\n    labels: [a, b]\n",
                pair_model("bert-cross")
            ),
            "no entailment label",
        ),
        (
            format!("  cross_encoder:\n    model: {}\n", pair_model("bert-cross")),
            "has no queries",
        ),
        (
            format!(
                "  cross_encoder:\n    model: {}\n    queries: [q]\n    activation: softmax\n",
                pair_model("bert-cross")
            ),
            "softmax over one logit",
        ),
        (
            format!(
                "  zero_shot:\n    model: {}\n    labels: [a]\n    multi_lable: true\n",
                pair_model("bert-nli")
            ),
            "multi_lable",
        ),
    ];
    for (yaml, want) in cases {
        let o = run_tasks(dir.path(), &[Some("text")], None, &yaml);
        assert!(!o.status.success(), "{yaml}");
        let err = stderr(&o);
        assert!(err.contains(want), "{yaml}: {err}");
        assert!(
            !dir.path().join("out.parquet").exists(),
            "{yaml}: nothing written"
        );
    }
}

#[test]
fn inspect_recognises_nli_heads_and_cross_encoders() {
    let o = bin()
        .args(["models", "inspect", &pair_model("bert-nli")])
        .output()
        .unwrap();
    assert_ok(&o);
    let s = stdout(&o);
    assert!(
        s.contains("pair head     entailment label 2 (entailment)"),
        "{s}"
    );
    assert!(
        s.contains("tasks         zero_shot, sentiment, cross_encoder"),
        "{s}"
    );
    let o = bin()
        .args(["models", "inspect", &pair_model("bert-cross")])
        .output()
        .unwrap();
    let s = stdout(&o);
    assert!(s.contains("cross-encoder, activation Sigmoid"), "{s}");
    assert!(s.contains("tasks         cross_encoder, sentiment"), "{s}");
}

/// Zero-shot labels and multi-class cross-encoder scores as every sink writes them: Parquet
/// lists of structs, Kafka JSON arrays of objects, Postgres jsonb; the same values in each.
#[test]
fn pair_outputs_reach_kafka_json_and_postgres_jsonb() {
    use common::kafka::{bootstrap, create_topics, read_topic_to_end, unique};
    use common::postgres::{table, url, Db};
    let dir = tempfile::tempdir().unwrap();
    let e = expected();
    let texts = texts(&e);
    let n = texts.len();
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let input = dir.path().join("in.parquet");
    write_parquet(
        &input,
        vec![
            ("id", Arc::new(StringArray::from(ids.clone())) as ArrayRef),
            ("text", Arc::new(StringArray::from(texts.clone()))),
        ],
    );
    let tasks = format!(
        "tasks:\n  zero_shot:\n    model: {}\n    labels: [billing, shipping, login]\n  cross_encoder:\n    model: {}\n    queries: [\"Where was the company founded?\", a person's name]\n",
        pair_model("bert-nli"),
        pair_model("bert-cross3")
    );
    let run_into = |sink: &str| {
        let p = dir.path().join(format!("p{}.yaml", sink.len()));
        std::fs::write(
            &p,
            format!(
                "source:\n  parquet:\n    path: {}\n    id_column: id\n{tasks}sink:\n{sink}",
                input.display()
            ),
        )
        .unwrap();
        assert_ok(&run_pipeline(&p, &[]));
    };
    let out = dir.path().join("out.parquet");
    run_into(&format!("  parquet:\n    path: {}\n", out.display()));
    let reference = read_parquet(&out);
    // Per id: zero-shot labels and scores, cross-encoder (query, label, scores).
    type Row = (Vec<(String, f64)>, Vec<(String, String, Vec<f64>)>);
    let from_parquet: std::collections::HashMap<String, Row> = (0..n)
        .map(|r| {
            let z = items(&reference, "zero_shot", r);
            let c = items(&reference, "cross_scores", r);
            let scores = c.column_by_name("scores").unwrap().as_list::<i32>().clone();
            let cross = (0..c.len())
                .map(|i| {
                    let v = scores.value(i);
                    let v: Vec<f64> = v
                        .as_primitive::<Float32Type>()
                        .values()
                        .iter()
                        .map(|x| *x as f64)
                        .collect();
                    (
                        strs(&c, "query")[i].clone(),
                        strs(&c, "label")[i].clone(),
                        v,
                    )
                })
                .collect();
            let zs = strs(&z, "label")
                .into_iter()
                .zip(floats(&z, "score"))
                .collect();
            (strings(&reference, "id")[r].clone().unwrap(), (zs, cross))
        })
        .collect();
    assert_eq!(from_parquet.len(), n);
    let json_row = |zs: &Value, cs: &Value| -> Row {
        let z = zs
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["label"].as_str().unwrap().to_string(),
                    o["score"].as_f64().unwrap(),
                )
            })
            .collect();
        let c = cs
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["query"].as_str().unwrap().to_string(),
                    o["label"].as_str().unwrap().to_string(),
                    o["scores"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect(),
                )
            })
            .collect();
        (z, c)
    };
    let same = |what: &str, got: &Row, want: &Row| {
        assert_eq!(got.0.len(), want.0.len(), "{what}");
        for (g, w) in got.0.iter().zip(&want.0) {
            assert_eq!(g.0, w.0, "{what}");
            assert!((g.1 - w.1).abs() < 1e-6, "{what}: {g:?} {w:?}");
        }
        assert_eq!(got.1.len(), want.1.len(), "{what}");
        for (g, w) in got.1.iter().zip(&want.1) {
            assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{what}");
            for (a, b) in g.2.iter().zip(&w.2) {
                assert!((a - b).abs() < 1e-5, "{what}: {g:?} {w:?}");
            }
        }
    };

    // Kafka: one JSON object per record.
    let servers = bootstrap();
    let topic = unique("pairs-out");
    create_topics(&servers, &[(&topic, 1)]);
    run_into(&format!(
        "  kafka:\n    bootstrap_servers: {servers}\n    topic: {topic}\n"
    ));
    let msgs = read_topic_to_end(&servers, &topic, false, std::time::Duration::from_secs(60));
    assert_eq!(msgs.len(), n);
    for m in msgs {
        let v = m.json();
        let id = v["id"].as_str().unwrap().to_string();
        same(
            &format!("kafka {id}"),
            &json_row(&v["zero_shot"], &v["cross_scores"]),
            &from_parquet[&id],
        );
    }

    // Postgres: jsonb columns.
    let db = Db::connect(&url());
    let tbl = table("pairs");
    run_into(&format!(
        "  postgres:\n    url: {}\n    table: {tbl}\n    create_table: true\n",
        url()
    ));
    let rows = db.query(&format!(
        "SELECT id, zero_shot::text, cross_scores::text, zero_shot->0->>'label' FROM \"{tbl}\""
    ));
    assert_eq!(rows.len(), n);
    for r in rows {
        let id: String = r.get(0);
        let z: String = r.get(1);
        let c: String = r.get(2);
        let best: String = r.get(3);
        let want = &from_parquet[&id];
        assert_eq!(best, want.0[0].0, "the best label first in jsonb");
        same(
            &format!("postgres {id}"),
            &json_row(
                &serde_json::from_str(&z).unwrap(),
                &serde_json::from_str(&c).unwrap(),
            ),
            want,
        );
    }
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}
