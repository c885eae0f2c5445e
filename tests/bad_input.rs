//! Bad input never crashes a run and is never dropped silently.

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, StringArray};
use common::*;

#[test]
fn bad_records_go_to_the_error_output_and_counts_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(
        &input,
        &["a", "b", "c", "d", "e"],
        &[
            Some("good text"),
            None,
            Some(""),
            Some("   "),
            Some("more good text"),
        ],
    );
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    let out = read_parquet(&output);
    // Empty and whitespace text are valid records.
    assert_eq!(
        strings(&out, "id"),
        vec![
            Some("a".into()),
            Some("c".into()),
            Some("d".into()),
            Some("e".into())
        ]
    );
    for v in embeddings(&out, "embedding") {
        assert!(v.iter().all(|x| x.is_finite()));
    }
    let errors = read_parquet(&dir.path().join("out.errors.parquet"));
    assert_eq!(strings(&errors, "id"), vec![Some("b".into())]);
    let reason = strings(&errors, "reason")[0].clone().unwrap();
    assert!(reason.contains("null"), "{reason}");
    assert_eq!(strings(&errors, "stage")[0].as_deref(), Some("source"));
    let src = strings(&errors, "source")[0].clone().unwrap();
    assert!(src.ends_with("in.parquet row 1"), "{src}");
    let s = stdout(&o);
    assert!(summary_count(&s, "records") == 5, "{s}");
    assert!(summary_count(&s, "written") == 4, "{s}");
    assert!(summary_count(&s, "errors") == 1, "{s}");
}

#[test]
fn non_string_and_invalid_utf8_text_become_error_rows() {
    let dir = tempfile::tempdir().unwrap();
    // A binary text column with one invalid UTF-8 value.
    let a = dir.path().join("a.parquet");
    write_parquet(
        &a,
        vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            (
                "text",
                Arc::new(BinaryArray::from(vec![
                    b"fine".as_ref(),
                    b"\xff\xfe".as_ref(),
                ])) as ArrayRef,
            ),
        ],
    );
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &a, &output, "");
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    let out = read_parquet(&output);
    let ids = out.column_by_name("id").unwrap();
    assert_eq!(
        ids.data_type(),
        &arrow::datatypes::DataType::Int64,
        "id keeps its type"
    );
    assert_eq!(
        ids.as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec(),
        vec![1]
    );
    let errors = read_parquet(&dir.path().join("out.errors.parquet"));
    assert!(strings(&errors, "reason")[0]
        .as_ref()
        .unwrap()
        .contains("UTF-8"));

    // A text column of integers: every row is an error row, the job still completes.
    let b = dir.path().join("b.parquet");
    write_parquet(
        &b,
        vec![
            ("id", Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef),
            ("text", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ],
    );
    let output = dir.path().join("out2.parquet");
    let p = embed_pipeline(dir.path(), &b, &output, "");
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    assert_eq!(read_parquet(&output).num_rows(), 0);
    let errors = read_parquet(&dir.path().join("out2.errors.parquet"));
    assert_eq!(errors.num_rows(), 2);
    assert!(strings(&errors, "reason")[0]
        .as_ref()
        .unwrap()
        .contains("Int64"));
}

#[test]
fn missing_column_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    write_parquet(
        &input,
        vec![("body", Arc::new(StringArray::from(vec!["x"])) as ArrayRef)],
    );
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    let o = run_pipeline(&p, &["--set", "source.parquet.id_column=null"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no text column 'text'") && e.contains("body"),
        "{e}"
    );
    assert!(e.contains("in.parquet"), "{e}");
    assert!(!output.exists(), "no output on failure");
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.parquet");
    std::fs::write(&input, b"this is not parquet at all").unwrap();
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    let o = run_pipeline(&p, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("broken.parquet") && e.contains("not a readable Parquet file"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn truncated_parquet_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    let texts: Vec<String> = (0..200).map(|i| format!("text number {i}")).collect();
    let ids: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    texts_parquet(
        &good,
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
        &texts.iter().map(|t| Some(t.as_str())).collect::<Vec<_>>(),
    );
    let bytes = std::fs::read(&good).unwrap();
    let input = dir.path().join("cut.parquet");
    std::fs::write(&input, &bytes[..bytes.len() / 2]).unwrap();
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    let o = run_pipeline(&p, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("cut.parquet"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn missing_model_and_config_typo_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a"], &[Some("x")]);
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");

    let o = run_pipeline(&p, &["--set", "tasks.embed.model=/nonexistent/model"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("/nonexistent/model") && e.contains("not a directory"),
        "{e}"
    );

    let o = run_pipeline(&p, &["--set", "batching.max_bach_size=3"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("max_bach_size"), "{e}");
}

#[test]
fn row_numbers_passthrough_and_rolling_files() {
    let dir = tempfile::tempdir().unwrap();
    // Two input files in a directory, no id column: ids are row numbers across files.
    let indir = dir.path().join("in");
    std::fs::create_dir(&indir).unwrap();
    for (name, base) in [("a.parquet", 0), ("b.parquet", 3)] {
        let texts: Vec<String> = (0..3).map(|i| format!("doc {}", base + i)).collect();
        write_parquet(
            &indir.join(name),
            vec![
                (
                    "text",
                    Arc::new(StringArray::from(texts.clone())) as ArrayRef,
                ),
                (
                    "title",
                    Arc::new(StringArray::from(
                        texts
                            .iter()
                            .map(|t| format!("title of {t}"))
                            .collect::<Vec<_>>(),
                    )) as ArrayRef,
                ),
            ],
        );
    }
    let outdir = dir.path().join("out");
    let p = embed_pipeline(
        dir.path(),
        &indir,
        &outdir,
        "  passthrough: [title]\nbatching:\n  window_records: 2\n",
    );
    let p_text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("    id_column: id\n", "")
        .replace(
            &format!("    path: {}", outdir.display()),
            &format!("    rows_per_file: 4\n    path: {}", outdir.display()),
        );
    std::fs::write(&p, p_text).unwrap();
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    let part0 = read_parquet(&outdir.join("part-00000.parquet"));
    let part1 = read_parquet(&outdir.join("part-00001.parquet"));
    assert_eq!(part0.num_rows(), 4);
    assert_eq!(part1.num_rows(), 2);
    let ids: Vec<u64> = [&part0, &part1]
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        strings(&part1, "title")[1].as_deref(),
        Some("title of doc 5")
    );
    assert!(outdir.join("errors.parquet").is_file());
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&outdir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
        .collect();
    assert!(leftovers.is_empty());
    let col = part0.column_by_name("embedding").unwrap();
    assert_eq!(col.len(), 4);
}

#[test]
fn qa_question_leaving_no_room_is_an_error_row_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let long_q = "who what where when which how why does did do ".repeat(3);
    let context = "The capital of France is Paris. ".repeat(20);
    let o = run_tasks(
        dir.path(),
        &[Some(&context), Some(&context)],
        Some(&[Some("Who?"), Some(&long_q)]),
        &format!(
            "  qa:\n    model: {}\n    question_column: question\n    max_seq_len: 32\n    doc_stride: 16\n",
            fixture_model("bert-qa")
        ),
    );
    assert_ok(&o);
    assert_eq!(
        strings(&read_parquet(&dir.path().join("out.parquet")), "id"),
        vec![Some("r0".into())]
    );
    let errors = read_parquet(&dir.path().join("out.errors.parquet"));
    assert_eq!(strings(&errors, "id"), vec![Some("r1".into())]);
    let reason = strings(&errors, "reason")[0].clone().unwrap();
    assert!(reason.contains("doc_stride"), "{reason}");
}

#[test]
fn ner_stride_too_large_for_the_window_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_tasks(
        dir.path(),
        &[Some("x")],
        None,
        &format!(
            "  ner:\n    model: {}\n    max_length: 16\n    stride: 14\n",
            fixture_model("bert-ner")
        ),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("stride") && !e.contains("panicked"), "{e}");
}

#[test]
fn bad_input_corpus_through_all_four_tasks_reconciles() {
    // Plain runs, then the GPU path's I/O binding and overlapped post-processing (forced on).
    for gpu_path in ["off", "on"] {
        bad_input_corpus_reconciles_with(gpu_path);
    }
}

fn bad_input_corpus_reconciles_with(gpu_path: &str) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = bad_input_corpus();
    let texts: Vec<Option<&str>> = corpus.iter().map(|t| t.as_deref()).collect();
    // Strict: a record one task failed for goes to the error output as a whole.
    let o = run_tasks_with(
        dir.path(),
        &texts,
        None,
        &all_fixture_tasks(),
        &[
            "--set",
            "sink.partial_results=false",
            "--set",
            &format!("runtime.io_binding={gpu_path}"),
            "--set",
            &format!("runtime.overlap_postprocess={gpu_path}"),
        ],
    );
    assert_ok(&o);
    let out = read_parquet(&dir.path().join("out.parquet"));
    let errors = read_parquet(&dir.path().join("out.errors.parquet"));
    assert_eq!(
        out.num_rows() + errors.num_rows(),
        corpus.len(),
        "records in = written + errors"
    );
    // The null text fails at the source; texts without any token have no context for question
    // answering (as in transformers, which refuses an empty context); the rest is processed.
    let ids = strings(&errors, "id");
    let stages = strings(&errors, "stage");
    let tasks = strings(&errors, "task");
    assert_eq!(ids[0].as_deref(), Some("r1"));
    assert_eq!(stages[0].as_deref(), Some("source"));
    for (i, id) in ids.iter().enumerate().skip(1) {
        let id = id.as_deref().unwrap();
        assert!(
            ["r2", "r3", "r7"].contains(&id),
            "{id} failed: {:?}",
            strings(&errors, "reason")
        );
        assert_eq!(tasks[i].as_deref(), Some("qa"));
    }
    let s = stdout(&o);
    assert!(
        s.contains(&format!("records       {}", corpus.len())),
        "{s}"
    );
}

#[test]
fn a_one_megabyte_text_is_truncated_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let big = one_megabyte_text();
    let o = run_tasks(
        dir.path(),
        &[Some("short"), Some(&big), None],
        None,
        &format!(
            "  embed: {{model: {}}}\n  sentiment: {{model: {}}}\n",
            model("all-MiniLM-L6-v2").display(),
            fixture_model("bert-sentiment")
        ),
    );
    assert_ok(&o);
    let out = read_parquet(&dir.path().join("out.parquet"));
    assert_eq!(
        strings(&out, "id"),
        vec![Some("r0".into()), Some("r1".into())]
    );
    let s = stdout(&o);
    assert!(s.contains("truncated     2"), "cut once per task: {s}");
    assert!(summary_count(&s, "errors") == 1, "{s}");
}

#[test]
fn parquet_file_with_no_rows_gives_an_empty_output_with_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &[], &[]);
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    let out = read_parquet(&output);
    assert_eq!(out.num_rows(), 0);
    assert!(out.schema().field_with_name("embedding").is_ok());
    assert!(summary_count(&stdout(&o), "records") == 0, "{}", stdout(&o));
}

#[test]
fn a_task_failing_for_a_record_leaves_its_columns_null_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = bad_input_corpus();
    let texts: Vec<Option<&str>> = corpus.iter().map(|t| t.as_deref()).collect();
    let o = run_tasks(dir.path(), &texts, None, &all_fixture_tasks());
    assert_ok(&o);
    let out = read_parquet(&dir.path().join("out.parquet"));
    let errors = read_parquet(&dir.path().join("out.errors.parquet"));
    // Only the null text fails as a whole; the texts without a token have no context for
    // question answering, so they are written without answers.
    let ids: Vec<String> = strings(&out, "id").into_iter().flatten().collect();
    let expected: Vec<String> = (0..corpus.len())
        .filter(|&i| i != 1)
        .map(|i| format!("r{i}"))
        .collect();
    assert_eq!(ids, expected);
    let answers = out.column_by_name("answers").unwrap();
    let embedding = out.column_by_name("embedding").unwrap();
    let sentiment = out.column_by_name("sentiment_label").unwrap();
    for (i, id) in ids.iter().enumerate() {
        let no_context = ["r2", "r3", "r7"].contains(&id.as_str());
        assert_eq!(answers.is_null(i), no_context, "answers of {id}");
        assert!(embedding.is_valid(i), "embedding of {id}");
        assert!(sentiment.is_valid(i), "sentiment of {id}");
    }
    // One error row per failure: the failed record, and one per failed task of a written record.
    let err_ids: Vec<String> = strings(&errors, "id").into_iter().flatten().collect();
    assert_eq!(err_ids, ["r1", "r2", "r3", "r7"]);
    let written = errors.column_by_name("written").unwrap().as_boolean();
    let tasks = strings(&errors, "task");
    assert!(!written.value(0));
    assert_eq!(strings(&errors, "stage")[0].as_deref(), Some("source"));
    for (i, task) in tasks.iter().enumerate().skip(1) {
        assert!(written.value(i), "{:?}", strings(&errors, "reason"));
        assert_eq!(task.as_deref(), Some("qa"));
    }
    // Records in = written + failed records.
    let failed = (0..errors.num_rows())
        .filter(|&i| !written.value(i))
        .count();
    assert_eq!(out.num_rows() + failed, corpus.len());
    let s = stdout(&o);
    assert!(summary_count(&s, "written") == 7, "{s}");
    assert!(summary_count(&s, "errors") == 1, "{s}");
    assert!(s.contains("task errors   3"), "{s}");
}
