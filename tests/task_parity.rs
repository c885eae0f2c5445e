//! Sentiment, NER and QA outputs against what the transformers 4.53 pipelines return for the same
//! tiny BERT, DistilBERT and RoBERTa models (tests/fixtures/tasks, made by
//! scripts/make_task_fixtures.py): labels, words and offsets exactly, scores within 1e-4.

mod common;

use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StructArray};
use arrow::datatypes::{Float32Type, Int64Type};
use common::*;
use serde_json::Value;

const TOL: f64 = 1e-4;

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/tasks/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Run one task over `texts` (and `questions`, one per text) in small batches and return the
/// output batch.
fn run_task(
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

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= TOL, "{what}: {a} vs expected {b}");
}

fn struct_rows(col: &ArrayRef, row: usize) -> StructArray {
    col.as_list::<i32>().value(row).as_struct().clone()
}

fn s(st: &StructArray, name: &str, i: usize) -> String {
    st.column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .value(i)
        .to_string()
}

fn f(st: &StructArray, name: &str, i: usize) -> f64 {
    st.column_by_name(name)
        .unwrap()
        .as_primitive::<Float32Type>()
        .value(i) as f64
}

fn n(st: &StructArray, name: &str, i: usize) -> i64 {
    st.column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(i)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sentiment_matches_text_classification_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    for case in expected()["sentiment"].as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
        let top_k = case["top_k"]
            .as_str()
            .map(|_| "all".to_string())
            .unwrap_or("1".into());
        let texts = strs(&case["texts"]);
        let out = run_task(
            dir.path(),
            &texts,
            None,
            &format!(
                "  sentiment:\n    model: {}\n    top_k: {top_k}\n",
                fixture_model(model)
            ),
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
            let ctx = format!("{model} top_k={top_k} text {i}");
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
}

#[test]
fn ner_matches_token_classification_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in expected()["ner"].as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
        let agg = case["aggregation"].as_str().unwrap();
        let stride = case["stride"].as_u64().unwrap_or(0);
        let texts = strs(&case["texts"]);
        let out = run_task(
            dir.path(),
            &texts,
            None,
            &format!(
                "  ner:\n    model: {}\n    aggregation: {agg}\n    stride: {stride}\n",
                fixture_model(model)
            ),
        );
        let col = out.column_by_name("entities").unwrap();
        for (i, want) in case["outputs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_array().unwrap();
            let got = struct_rows(col, i);
            let ctx = format!(
                "{model} aggregation={agg} stride={stride} text {i} ({:?})",
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
    }
    assert!(checked > 500, "only {checked} entities compared");
}

#[test]
fn qa_matches_question_answering_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    for case in expected()["qa"].as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
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
        let out = run_task(dir.path(), &contexts, Some(&questions), &yaml);
        let col = out.column_by_name("answers").unwrap();
        for (i, want) in case["outputs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_array().unwrap();
            let got = struct_rows(col, i);
            let ctx = format!("{model} {params:?} pair {i}");
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
}

/// I/O binding (inputs written into allocator memory, outputs bound to host memory and allocated
/// per run) and post-processing overlapped with the next model call (from a copy of the outputs,
/// on a second thread) give exactly the results of plain runs, for all four tasks, over batches
/// of changing shapes (the bound outputs must follow each batch's shape).
#[test]
fn io_binding_and_overlapped_postprocessing_give_the_same_results_as_plain_runs() {
    let texts = [
        "Ada Lovelace wrote the first program in London.",
        "Terrible service, never again.",
        "Short.",
        "Grace Hopper worked on the UNIVAC at Remington Rand in Philadelphia, and later taught \
         many people how compilers could change programming for everyone.",
        "I loved it!",
        "Alan Turing was born in Maida Vale, London.",
        "",
        "The weather in Paris was fine.",
    ];
    let questions = ["Who wrote it?"; 8];
    let texts: Vec<Option<&str>> = texts.iter().map(|t| Some(*t)).collect();
    let questions: Vec<Option<&str>> = questions.iter().map(|q| Some(*q)).collect();
    let tasks = format!(
        "  embed: {{model: {}}}\n  sentiment: {{model: {}}}\n  ner: {{model: {}}}\n  qa: {{model: {}, question_column: question}}\nbatching: {{max_batch_size: 3, max_batch_tokens: 512}}\n",
        model("all-MiniLM-L6-v2").display(),
        fixture_model("bert-sentiment"),
        fixture_model("distilbert-ner"),
        fixture_model("roberta-qa"),
    );
    let mut tables = Vec::new();
    let modes = [("off", "off"), ("on", "off"), ("off", "on"), ("on", "on")];
    for (binding, overlap) in modes {
        let dir = tempfile::tempdir().unwrap();
        let o = run_tasks_with(
            dir.path(),
            &texts,
            Some(&questions),
            &tasks,
            &[
                "--set",
                &format!("runtime.io_binding={binding}"),
                "--set",
                &format!("runtime.overlap_postprocess={overlap}"),
            ],
        );
        assert_ok(&o);
        let out = read_parquet(&dir.path().join("out.parquet"));
        assert_eq!(out.num_rows(), texts.len(), "{binding}/{overlap}");
        tables.push(out);
    }
    for (t, (binding, overlap)) in tables.iter().zip(modes).skip(1) {
        assert_eq!(tables[0].schema(), t.schema());
        for (i, f) in tables[0].schema().fields().iter().enumerate() {
            assert_eq!(
                tables[0].column(i).as_ref(),
                t.column(i).as_ref(),
                "column {} with io_binding={binding}, overlap_postprocess={overlap}",
                f.name()
            );
        }
    }
}
