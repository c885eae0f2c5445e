//! The command line as a newcomer meets it: `validate` refuses what `run` would refuse, before
//! any model loads; a failed run leaves nothing; mistakes are told in the user's words with the
//! key as written and where it came from; `models inspect` and the summary say what really runs;
//! output hygiene (colour, JSON logs, broken pipes).

mod common;

use std::process::{Command, Stdio};

use common::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a", "b"], &[Some("hello world"), Some("goodbye")]);
    let output = dir.path().join("out/out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    (dir, p, output)
}

fn cmd(verb: &str, p: &std::path::Path, args: &[&str]) -> std::process::Output {
    bin()
        .arg(verb)
        .arg(p)
        .args(args)
        .env("RUST_LOG", "warn,bertflow=info")
        .env_remove("BERTFLOW_SHARD")
        .output()
        .unwrap()
}

#[test]
fn validate_refuses_what_run_would_refuse_before_any_model_loads() {
    let (dir, p, output) = setup();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--set",
                "sink.parquet.format=arrow_ipc",
                "--set",
                "sink.parquet.compression=snappy",
            ],
            "Arrow IPC files support zstd or none, not snappy",
        ),
        (&["--shard", "5/4"], "--shard 5/4"),
        (&["--shard", "abc"], "--shard abc"),
        (
            &["--set", "sink.parquet.path="],
            "sink.parquet.path is empty",
        ),
        (
            &[
                "--set",
                "tasks.embed.chunking={max_tokens: 64, overlap: 100}",
            ],
            "tasks.embed.chunking.overlap is 100 but must be below max_tokens (64)",
        ),
        (
            &["--set", "tasks.embed.chunking={max_tokens: 4000}"],
            "above the model's limit of 256 tokens",
        ),
        (
            &["--set", "tasks.embed.model=/nonexistent/model"],
            "tasks.embed.model: /nonexistent/model is not a directory",
        ),
        (
            &["--set", "source.parquet.path=/nonexistent/in.parquet"],
            "/nonexistent/in.parquet",
        ),
        (
            &["--set", "sink.errors={path: ''}"],
            "sink.errors: `path` or `topic` is empty",
        ),
        (
            &["--set", "metrics.listen=nohost"],
            "metrics.listen is 'nohost': write host:port",
        ),
        (
            &["--set", "sink.passthrough=[id]"],
            "'id' is always written",
        ),
        (
            &["--set", "runtime.ort_lib=/nonexistent/libonnxruntime.so"],
            "runtime.ort_lib is /nonexistent/libonnxruntime.so, which is not a file",
        ),
    ];
    for (args, want) in cases {
        let v = cmd("validate", &p, args);
        assert_eq!(v.status.code(), Some(1), "validate accepted {args:?}");
        assert!(
            stderr(&v).contains(want),
            "validate {args:?}: {}",
            stderr(&v)
        );
        assert!(!stdout(&v).contains(": ok"), "validate {args:?} said ok");
        let mut run_args = vec!["--no-progress"];
        run_args.extend_from_slice(args);
        let r = cmd("run", &p, &run_args);
        assert_eq!(r.status.code(), Some(1), "run accepted {args:?}");
        let err = stderr(&r);
        assert!(err.contains(want), "run {args:?}: {err}");
        // Refused before any model was loaded (each load is logged at info).
        assert!(
            !err.contains("model loaded"),
            "run {args:?} loaded a model: {err}"
        );
        assert!(
            !output.parent().unwrap().exists(),
            "run {args:?} wrote output"
        );
    }
    // The control: the same file runs, and says that it loads its model.
    let r = cmd("run", &p, &["--no-progress"]);
    assert_ok(&r);
    assert!(stderr(&r).contains("model loaded"), "{}", stderr(&r));
    // `validate --scan` of a missing input says no `ok`.
    let v = cmd(
        "validate",
        &p,
        &[
            "--scan",
            "--set",
            "source.parquet.path=/nonexistent/x.parquet",
        ],
    );
    assert!(!v.status.success());
    assert!(!stdout(&v).contains("ok"), "{}", stdout(&v));
    drop(dir);
}

#[test]
fn a_failed_run_leaves_no_file_it_created() {
    let (dir, p, output) = setup();
    // The output's name is taken by a folder: the file cannot be renamed into place.
    std::fs::create_dir_all(&output).unwrap();
    let r = cmd("run", &p, &["--no-progress"]);
    assert_eq!(r.status.code(), Some(1), "{}", stdout(&r));
    let left: Vec<String> = std::fs::read_dir(output.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        left,
        ["out.parquet"],
        "left behind: {left:?}\n{}",
        stderr(&r)
    );
    assert!(std::fs::read_dir(&output).unwrap().next().is_none());
    // Nothing was written beside the pipeline file either.
    let mut top: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    top.sort();
    assert_eq!(top, ["in.parquet", "out", "pipeline.yaml"]);
}

#[test]
fn mistakes_name_the_key_as_written_where_it_came_from_and_the_valid_values() {
    let (dir, p, _) = setup();
    // An environment variable.
    let o = bin()
        .args(["validate"])
        .arg(&p)
        .env("BERTFLOW__BATCHING__MAX_BATCH_SIZ", "8")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        e.contains("environment variable BERTFLOW__BATCHING__MAX_BATCH_SIZ")
            && e.contains("batching.max_batch_siz")
            && e.contains("`max_batch_size`"),
        "{e}"
    );
    assert!(
        !e.contains(&p.display().to_string()),
        "blamed on the file: {e}"
    );
    // A --set argument.
    let o = cmd("validate", &p, &["--set", "batching.max_batch_siz=8"]);
    let e = stderr(&o);
    assert!(e.contains("--set batching.max_batch_siz=8"), "{e}");
    // The file itself.
    let text = std::fs::read_to_string(&p).unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, text.replace("id_column: id", "id_colum: id")).unwrap();
    let o = cmd("validate", &typo, &[]);
    let e = stderr(&o);
    assert!(
        e.contains(&typo.display().to_string())
            && e.contains("source.parquet.id_colum")
            && e.contains("`id_column`"),
        "{e}"
    );
    // Values of a fixed set are listed, in the user's words.
    for (args, key, values) in [
        (
            &["--set", "runtime.execution_provider=gpu"][..],
            "runtime.execution_provider",
            &["`gpu`", "`cpu`", "`cuda`"][..],
        ),
        (
            &["--set", "tasks.embed.pooling=median"][..],
            "tasks.embed.pooling",
            &["`median`", "`mean`", "`cls`"][..],
        ),
        (
            &["--set", "batching=3"][..],
            "batching",
            &["expected a mapping"][..],
        ),
        (
            &["--set", "source={parquet: {path: x}, kafka: {topics: [t]}}"][..],
            "source",
            &["--set source="][..],
        ),
    ] {
        let o = cmd("validate", &p, args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(e.contains(key), "{args:?}: {e}");
        for v in values {
            assert!(e.contains(v), "{args:?}: no {v} in {e}");
        }
        for rust in [
            "Config",
            "variant constructor",
            "ExecutionProvider",
            "PoolingMode",
            "Value::Tagged",
        ] {
            assert!(!e.contains(rust), "{args:?}: Rust name {rust} in {e}");
        }
    }
    // A list entry's key is printed as written.
    let list = dir.path().join("list.yaml");
    std::fs::write(
        &list,
        text.replace(
            "tasks:\n  embed:\n",
            &format!(
                "tasks:\n  ner:\n    - {{model: {}, aggregation: bogus}}\n  embed:\n",
                fixture_model("bert-ner")
            ),
        ),
    )
    .unwrap();
    let o = cmd("validate", &list, &[]);
    assert!(
        stderr(&o).contains("tasks.ner[0].aggregation") && stderr(&o).contains("`simple`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn set_replaces_values_and_list_positions_are_checked() {
    let (dir, p, output) = setup();
    // A mapping given with --set replaces the one in the file: only sentiment runs.
    let tasks = format!(
        "tasks={{sentiment: {{model: {}}}}}",
        fixture_model("bert-sentiment")
    );
    let r = cmd("run", &p, &["--no-progress", "--set", &tasks]);
    assert_ok(&r);
    let out = read_parquet(&output);
    assert!(out.column_by_name("sentiment_label").is_some());
    assert!(
        out.column_by_name("embedding").is_none(),
        "the file's embed task stayed"
    );
    // List positions.
    let text = std::fs::read_to_string(&p).unwrap();
    let two = dir.path().join("two.yaml");
    let ner = fixture_model("bert-ner");
    std::fs::write(
        &two,
        text.replace(
            "tasks:\n  embed:\n",
            &format!(
                "tasks:\n  ner:\n    - {{model: {ner}, column: a}}\n    - {{model: {ner}, column: b}}\n  embed:\n"
            ),
        ),
    )
    .unwrap();
    let ok = cmd("validate", &two, &["--set", "tasks.ner[1].column=pii"]);
    assert_ok(&ok);
    let o = cmd("validate", &two, &["--set", "tasks.ner[5].column=x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--set tasks.ner[5].column=x")
            && stderr(&o)
                .contains("`tasks.ner` has 2 entries (positions 0 to 1), so [5] is out of range"),
        "{}",
        stderr(&o)
    );
    // A task given once is its list's entry [0]; there is no [1].
    let o = cmd("validate", &p, &["--set", "tasks.embed[1].column=x"]);
    assert!(
        stderr(&o).contains("`tasks.embed` is a mapping, not a list"),
        "{}",
        stderr(&o)
    );
    assert_ok(&cmd(
        "validate",
        &p,
        &["--set", "tasks.embed[0].column=vec"],
    ));
}

#[test]
fn inspect_and_the_summary_say_what_really_runs() {
    let o = bin()
        .args(["models", "inspect"])
        .arg(model("all-MiniLM-L6-v2"))
        .output()
        .unwrap();
    assert_ok(&o);
    let s = stdout(&o);
    assert!(s.contains("max length    512 tokens"), "{s}");
    assert!(
        s.contains("task length   embed 256 (sentence-transformers max_seq_length)"),
        "{s}"
    );
    assert!(s.contains("graph         fp32"), "{s}");
    // The stand-in classifier is int8 inside its model.onnx.
    let o = bin()
        .args(["models", "inspect"])
        .arg(model("sentiment"))
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("graph         int8, dynamic quantisation"),
        "{}",
        stdout(&o)
    );
    let dir = tempfile::tempdir().unwrap();
    let r = run_tasks(
        dir.path(),
        &[Some("a fine day")],
        None,
        &format!("  sentiment: {{model: {}}}\n", model("sentiment").display()),
    );
    assert_ok(&r);
    assert!(
        stdout(&r).contains("sentiment fp32 (graph: int8, dynamic quantisation)"),
        "{}",
        stdout(&r)
    );
}

#[test]
fn output_hygiene() {
    let (dir, p, _) = setup();
    // stderr to a file: no colour codes, with or without NO_COLOR.
    let log = std::fs::File::create(dir.path().join("err.log")).unwrap();
    let st = bin()
        .args(["run"])
        .arg(&p)
        .arg("--no-progress")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(dir.path().join("err.log")).unwrap();
    assert!(text.contains("model loaded"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
    // JSON logs: the final error is JSON too.
    let o = bin()
        .args(["--log-format", "json", "run", "nope.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["level"], "ERROR");
    assert!(v["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("nope.yaml"));
    // The cause is said once.
    let o = bin().args(["run", "nope.yaml"]).output().unwrap();
    let e = stderr(&o);
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    // A reader that goes away early is no panic.
    let mut child = bin()
        .args(["models", "inspect", "--json"])
        .arg(model("all-MiniLM-L6-v2"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    // Relative paths are read from the working directory, and the error says so.
    let o = Command::new(bin().get_program())
        .args(["validate"])
        .arg(root().join("pipelines/demo.yaml"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("working directory"), "{}", stderr(&o));
}
