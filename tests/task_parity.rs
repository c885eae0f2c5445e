//! Sentiment, NER and QA outputs against what the transformers 4.53 pipelines return for the same
//! tiny BERT, DistilBERT and RoBERTa models (tests/fixtures/tasks, made by
//! scripts/make_task_fixtures.py): labels, words and offsets exactly, scores within 1e-4.

mod common;

use common::*;
use serde_json::Value;

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/tasks/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sentiment_matches_text_classification_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    for case in expected()["sentiment"].as_array().unwrap() {
        let model = fixture_model(case["model"].as_str().unwrap());
        parity::check_sentiment(case, &model, dir.path());
    }
}

#[test]
fn ner_matches_token_classification_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for case in expected()["ner"].as_array().unwrap() {
        let model = fixture_model(case["model"].as_str().unwrap());
        checked += parity::check_ner(case, &model, dir.path());
    }
    assert!(checked > 500, "only {checked} entities compared");
}

#[test]
fn qa_matches_question_answering_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    for case in expected()["qa"].as_array().unwrap() {
        let model = fixture_model(case["model"].as_str().unwrap());
        parity::check_qa(case, &model, dir.path());
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
