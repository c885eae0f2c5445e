//! Comparisons of bertflow's sentiment, ner and qa outputs with what the transformers pipelines
//! returned (the format of tests/fixtures/tasks/expected.json): labels, words and offsets
//! exactly, scores within 1e-4.

use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{Float32Type, Int64Type};
use serde_json::Value;

use super::*;

pub const TOL: f64 = 1e-4;

/// Run one task over `texts` (and `questions`, one per text) in small batches and return the
/// output batch.
pub fn run_task(
    dir: &Path,
    texts: &[String],
    questions: Option<&[String]>,
    task_yaml: &str,
) -> RecordBatch {
    let texts: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let questions: Option<Vec<Option<&str>>> =
        questions.map(|q| q.iter().map(|x| Some(x.as_str())).collect());
    let o = run_tasks(
        dir,
        &texts,
        questions.as_deref(),
        &format!("{task_yaml}batching:\n  max_batch_size: 4\n  max_batch_tokens: 512\n"),
    );
    assert_ok(&o);
    let out = read_parquet(&dir.join("out.parquet"));
    assert_eq!(out.num_rows(), texts.len(), "every record has a result");
    out
}

pub fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= TOL, "{what}: {a} vs expected {b}");
}

pub fn struct_rows(col: &ArrayRef, row: usize) -> StructArray {
    col.as_list::<i32>().value(row).as_struct().clone()
}

pub fn s(st: &StructArray, name: &str, i: usize) -> String {
    st.column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .value(i)
        .to_string()
}

pub fn f(st: &StructArray, name: &str, i: usize) -> f64 {
    st.column_by_name(name)
        .unwrap()
        .as_primitive::<Float32Type>()
        .value(i) as f64
}

pub fn n(st: &StructArray, name: &str, i: usize) -> i64 {
    st.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(i)
}

pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// One case of `text-classification` pipeline outputs (tests/fixtures/tasks/expected.json's
/// format) against bertflow's sentiment task on `model`.
pub fn check_sentiment(case: &Value, model: &str, dir: &Path) {
    let name = case["model"].as_str().unwrap();
    let top_k = case["top_k"]
        .as_str()
        .map(|_| "all".to_string())
        .unwrap_or("1".into());
    let texts = strs(&case["texts"]);
    let out = run_task(
        dir,
        &texts,
        None,
        &format!("  sentiment:\n    model: {model}\n    top_k: {top_k}\n"),
    );
    let labels = out
        .column_by_name("sentiment_label")
        .unwrap()
        .as_string::<i32>()
        .clone();
    let scores = out
        .column_by_name("sentiment_score")
        .unwrap()
        .as_primitive::<Float32Type>()
        .clone();
    for (i, want) in case["outputs"].as_array().unwrap().iter().enumerate() {
        let want = want.as_array().unwrap();
        let ctx = format!("{name} top_k={top_k} text {i}");
        // The best label is first in both shapes of output.
        assert_eq!(labels.value(i), want[0]["label"].as_str().unwrap(), "{ctx}");
        close(
            scores.value(i) as f64,
            want[0]["score"].as_f64().unwrap(),
            &ctx,
        );
        if top_k == "all" {
            let ranked = struct_rows(out.column_by_name("sentiment_scores").unwrap(), i);
            assert_eq!(ranked.len(), want.len(), "{ctx}");
            for (k, w) in want.iter().enumerate() {
                assert_eq!(
                    s(&ranked, "label", k),
                    w["label"].as_str().unwrap(),
                    "{ctx}"
                );
                close(f(&ranked, "score", k), w["score"].as_f64().unwrap(), &ctx);
            }
        }
    }
}

/// One case of `token-classification` pipeline outputs against bertflow's ner task on `model`;
/// the number of entities compared.
pub fn check_ner(case: &Value, model: &str, dir: &Path) -> usize {
    let name = case["model"].as_str().unwrap();
    let agg = case["aggregation"].as_str().unwrap();
    let stride = case["stride"].as_u64().unwrap_or(0);
    let texts = strs(&case["texts"]);
    let out = run_task(
        dir,
        &texts,
        None,
        &format!("  ner:\n    model: {model}\n    aggregation: {agg}\n    stride: {stride}\n"),
    );
    let mut checked = 0;
    let col = out.column_by_name("entities").unwrap();
    for (i, want) in case["outputs"].as_array().unwrap().iter().enumerate() {
        let want = want.as_array().unwrap();
        let got = struct_rows(col, i);
        let ctx = format!(
            "{name} aggregation={agg} stride={stride} text {i} ({:?})",
            texts[i]
        );
        let got_list: Vec<String> = (0..got.len())
            .map(|k| {
                format!(
                    "{}:{}:{}-{}",
                    s(&got, "entity_group", k),
                    s(&got, "word", k),
                    n(&got, "start", k),
                    n(&got, "end", k)
                )
            })
            .collect();
        let want_list: Vec<String> = want
            .iter()
            .map(|w| {
                let label = w.get("entity_group").or_else(|| w.get("entity")).unwrap();
                format!(
                    "{}:{}:{}-{}",
                    label.as_str().unwrap(),
                    w["word"].as_str().unwrap(),
                    w["start"],
                    w["end"]
                )
            })
            .collect();
        assert_eq!(got_list, want_list, "{ctx}");
        for (k, w) in want.iter().enumerate() {
            close(f(&got, "score", k), w["score"].as_f64().unwrap(), &ctx);
            checked += 1;
        }
    }
    checked
}

/// One case of `question-answering` pipeline outputs against bertflow's qa task on `model`.
pub fn check_qa(case: &Value, model: &str, dir: &Path) {
    let name = case["model"].as_str().unwrap();
    let params = case["params"].as_object().unwrap();
    let pairs = case["pairs"].as_array().unwrap();
    let contexts: Vec<String> = pairs
        .iter()
        .map(|p| p[0].as_str().unwrap().to_string())
        .collect();
    let questions: Vec<String> = pairs
        .iter()
        .map(|p| p[1].as_str().unwrap().to_string())
        .collect();
    let mut yaml = format!(
        "  qa:\n    model: {}\n    question_column: question\n",
        fixture_model(model)
    );
    for (k, v) in params {
        yaml.push_str(&format!("    {k}: {v}\n"));
    }
    let out = run_task(dir, &contexts, Some(&questions), &yaml);
    let col = out.column_by_name("answers").unwrap();
    for (i, want) in case["outputs"].as_array().unwrap().iter().enumerate() {
        let want = want.as_array().unwrap();
        let got = struct_rows(col, i);
        let ctx = format!("{name} {params:?} pair {i}");
        let got_list: Vec<String> = (0..got.len())
            .map(|k| {
                format!(
                    "{:?}@{}-{}",
                    s(&got, "answer", k),
                    n(&got, "start", k),
                    n(&got, "end", k)
                )
            })
            .collect();
        let want_list: Vec<String> = want
            .iter()
            .map(|w| {
                format!(
                    "{:?}@{}-{}",
                    w["answer"].as_str().unwrap(),
                    w["start"],
                    w["end"]
                )
            })
            .collect();
        assert_eq!(got_list, want_list, "{ctx}");
        for (k, w) in want.iter().enumerate() {
            close(f(&got, "score", k), w["score"].as_f64().unwrap(), &ctx);
            assert_eq!(s(&got, "question", k), questions[i], "{ctx}");
        }
    }
}
