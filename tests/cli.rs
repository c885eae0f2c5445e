//! Command line: overrides, the ONNX Runtime search and the execution-provider policy.

mod common;

use common::*;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a", "b"], &[Some("hello world"), Some("goodbye")]);
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, "");
    (dir, p, output)
}

#[test]
fn output_flag_and_env_override() {
    let (dir, p, _) = setup();
    let other = dir.path().join("elsewhere.parquet");
    let o = bin()
        .args(["run", p.to_str().unwrap(), "--no-progress", "--output"])
        .arg(&other)
        .env("BERTFLOW__TASKS__EMBED__COLUMN", "vec")
        .output()
        .unwrap();
    assert_ok(&o);
    let out = read_parquet(&other);
    assert_eq!(out.num_rows(), 2);
    assert!(
        out.column_by_name("vec").is_some(),
        "env override renamed the column"
    );
}

#[test]
fn cuda_without_fallback_fails_loudly_and_with_fallback_runs_on_cpu() {
    let (_dir, p, output) = setup();
    // The CPU build of ONNX Runtime has no CUDA provider.
    let o = run_pipeline(&p, &["--set", "runtime.execution_provider=cuda"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("CUDA") && e.contains("runtime.fallback"), "{e}");

    let o = run_pipeline(
        &p,
        &[
            "--set",
            "runtime.execution_provider=cuda",
            "--set",
            "runtime.fallback=cpu",
        ],
    );
    assert_ok(&o);
    assert!(
        stdout(&o).contains("cpu (fallback: CUDA unavailable)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("CUDA execution provider unavailable"),
        "{}",
        stderr(&o)
    );
    // The models really run on CPU, so the CPU batch defaults apply, not CUDA's.
    assert!(
        stdout(&o).contains("batches       at most 16 sequences / 2048 tokens (cpu defaults)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(read_parquet(&output).num_rows(), 2);

    // Configured limits are used as they are, whatever the provider.
    let o = run_pipeline(
        &p,
        &[
            "--set",
            "batching.max_batch_size=4",
            "--set",
            "batching.max_batch_tokens=300",
        ],
    );
    assert_ok(&o);
    assert!(
        stdout(&o).contains("batches       at most 4 sequences / 300 tokens\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn missing_onnxruntime_library_says_what_to_do() {
    let (_dir, p, _) = setup();
    let o = run_pipeline(&p, &["--ort-lib", "/nonexistent/libonnxruntime.so"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("/nonexistent/libonnxruntime.so") && e.contains("--ort-lib"),
        "{e}"
    );
    assert!(e.contains("onnxruntime==1.31.1"), "{e}");
}

#[test]
fn validate_checks_without_running() {
    let (_dir, p, output) = setup();
    let o = bin()
        .args(["validate", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(!output.exists());
    let o = bin()
        .args([
            "validate",
            p.to_str().unwrap(),
            "--set",
            "sink.parquet.compresion=zstd",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("compresion"));
}

#[test]
fn bench_reports_raw_onnxruntime_on_the_same_batches() {
    let (dir, p, output) = setup();
    let json = dir.path().join("bench.json");
    let o = bin()
        .args(["bench", p.to_str().unwrap(), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(stdout(&o).contains("raw ORT"), "{}", stdout(&o));
    assert_eq!(read_parquet(&output).num_rows(), 2);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["records"], 2);
    assert!(v["batches"].as_u64().unwrap() >= 1);
    assert!(v["raw_ort_seconds"].as_f64().unwrap() > 0.0);
    let ratio = v["ratio_to_raw_ort"].as_f64().unwrap();
    assert!(ratio > 0.0);
    // Start-up (library, model, files) is part of the run and left out of the steady ratio.
    let (secs, startup) = (
        v["seconds"].as_f64().unwrap(),
        v["startup_seconds"].as_f64().unwrap(),
    );
    assert!(startup > 0.0 && startup < secs, "{startup} of {secs}");
    assert!(v["ratio_to_raw_ort_after_startup"].as_f64().unwrap() > ratio);
    assert!(
        stdout(&o).contains("time          start-up "),
        "{}",
        stdout(&o)
    );
    assert!(v["peak_rss_mib"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_example_pipeline_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let o = bin().arg("validate").arg(&p).output().unwrap();
            assert_ok(&o);
            n += 1;
        }
    }
    assert!(n >= 3, "expected the batch and streaming examples");
}

#[test]
fn streaming_config_mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.yaml");
    let base = "source:\n  kafka: {bootstrap_servers: 127.0.0.1:1, topics: [t], group_id: g}\ntasks:\n  embed: {model: m}\n";
    let cases = [
        (
            "sink:\n  kafka: {topic: o, exactly_once: true}\n",
            "needs `sink.errors.topic`",
        ),
        (
            "sink:\n  parquet: {path: o}\n  errors: {path: e, topic: d}\n",
            "either `path`",
        ),
        (
            "sink:\n  kafka: {topic: o, exactly_once: yes_please}\n",
            "exactly_once",
        ),
        ("sink:\n  kafka: {topik: o}\n", "topik"),
    ];
    for (sink, want) in cases {
        std::fs::write(&p, format!("{base}{sink}")).unwrap();
        let o = bin().arg("validate").arg(&p).output().unwrap();
        assert!(!o.status.success(), "{sink}");
        assert!(stderr(&o).contains(want), "{sink}: {}", stderr(&o));
    }
    let parquet_eos = "source:\n  parquet: {path: x.parquet}\ntasks:\n  embed: {model: m}\nsink:\n  kafka: {bootstrap_servers: b, topic: o, exactly_once: true}\n  errors: {path: e}\n";
    std::fs::write(&p, parquet_eos).unwrap();
    let o = bin().arg("validate").arg(&p).output().unwrap();
    assert!(
        stderr(&o).contains("needs a Kafka source"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn shards_split_the_input_files_and_keep_their_outputs_apart() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for f in 0..5 {
        let ids: Vec<String> = (0..3).map(|r| format!("f{f}r{r}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        texts_parquet(
            &input.join(format!("part-{f}.parquet")),
            &ids,
            &[Some("a"), Some("b"), Some("c")],
        );
    }
    let out = dir.path().join("out.parquet");
    let p = embed_pipeline(dir.path(), &input, &out, "");
    let mut all = Vec::new();
    for i in 0..2 {
        let o = bin()
            .args([
                "run",
                p.to_str().unwrap(),
                "--no-progress",
                "--shard",
                &format!("{i}/2"),
            ])
            .output()
            .unwrap();
        assert_ok(&o);
        assert!(
            stdout(&o).contains(&format!("shard {i}/2")),
            "{}",
            stdout(&o)
        );
        let path = dir.path().join(format!("out.shard-{i}-of-2.parquet"));
        let ids: Vec<String> = strings(&read_parquet(&path), "id")
            .into_iter()
            .flatten()
            .collect();
        // Files 0, 2, 4 go to shard 0; 1, 3 to shard 1.
        let files: Vec<usize> = if i == 0 { vec![0, 2, 4] } else { vec![1, 3] };
        let want: Vec<String> = files
            .iter()
            .flat_map(|f| (0..3).map(move |r| format!("f{f}r{r}")))
            .collect();
        assert_eq!(ids, want);
        assert!(dir
            .path()
            .join(format!("out.shard-{i}-of-2.errors.parquet"))
            .is_file());
        all.extend(ids);
    }
    assert_eq!(all.len(), 15);
    assert!(!out.exists(), "shards never write the unsharded output");
    // Kubernetes Indexed Job style, through the environment; a bad spec is explained.
    let o = bin()
        .args(["run", p.to_str().unwrap(), "--no-progress"])
        .env("BERTFLOW_SHARD", "2/2")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("JOB_COMPLETION_INDEX"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn output_flag_moves_the_error_output_unless_it_is_given_too() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a", "b"], &[Some("hello world"), None]);
    let pinned = dir.path().join("pinned/errors.parquet");
    let p = embed_pipeline(
        dir.path(),
        &input,
        &dir.path().join("out.parquet"),
        &format!("  errors:\n    path: {}\n", pinned.display()),
    );
    // --output alone: the error file goes beside the new output.
    let moved = dir.path().join("moved/out.parquet");
    let o = bin()
        .args(["run", p.to_str().unwrap(), "--no-progress", "--output"])
        .arg(&moved)
        .output()
        .unwrap();
    assert_ok(&o);
    let errors = read_parquet(&dir.path().join("moved/out.errors.parquet"));
    assert_eq!(strings(&errors, "id"), vec![Some("b".to_string())]);
    assert!(
        !pinned.exists(),
        "the pipeline's own error file was written"
    );
    // --output with the error path on the command line: both where asked.
    let explicit = dir.path().join("explicit.errors.parquet");
    let o = bin()
        .args(["run", p.to_str().unwrap(), "--no-progress", "--output"])
        .arg(dir.path().join("other/out.parquet"))
        .arg("--set")
        .arg(format!("sink.errors.path={}", explicit.display()))
        .output()
        .unwrap();
    assert_ok(&o);
    assert_eq!(read_parquet(&explicit).num_rows(), 1);
    assert!(!dir.path().join("other/out.errors.parquet").exists());
    // Without --output the pipeline's error path holds.
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    assert_eq!(read_parquet(&pinned).num_rows(), 1);
}

/// A batch job embedding `n` identical records in windows given by `batching_yaml`, sent SIGTERM
/// once it has started writing; returns its output, how long it took to exit after the signal,
/// and what is left in its output folder.
fn sigterm_batch_job(
    n: usize,
    text: &str,
    batching_yaml: &str,
) -> (
    std::process::Output,
    std::time::Duration,
    Vec<std::ffi::OsString>,
) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let texts: Vec<Option<&str>> = (0..n).map(|_| Some(text)).collect();
    texts_parquet(&input, &id_refs, &texts);
    let output = dir.path().join("out/out.parquet");
    let p = embed_pipeline(dir.path(), &input, &output, batching_yaml);
    let mut child = bin()
        .args(["run", p.to_str().unwrap(), "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Writing has started: the output exists under its temporary name.
    let tmp = dir.path().join("out/.out.parquet.inprogress");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !tmp.exists() && std::time::Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(tmp.exists(), "the job never started writing");
    let signalled = std::time::Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    (o, took, left)
}

#[test]
fn sigterm_stops_a_batch_job_without_leaving_partial_output() {
    let (o, _, left) = sigterm_batch_job(
        4000,
        "a review long enough to take the model a moment, sentence after sentence",
        "batching: {window_records: 64}\n",
    );
    assert!(!o.status.success(), "an interrupted job must exit non-zero");
    let s = stdout(&o);
    assert!(
        s.contains("bertflow summary") && s.contains("interrupted"),
        "{s}"
    );
    assert!(
        stderr(&o).contains("interrupted by a signal"),
        "{}",
        stderr(&o)
    );
    // Nothing under a final name, nothing temporary left.
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The fault the shutdown token fixes: a batch job given SIGTERM with windows already read must
/// abandon them instead of running them through the model first. 40,000 records in windows of
/// 2,048 keep about five windows (over 10,000 records, tens of seconds of model time on a CPU)
/// in flight when writing starts; the job must still exit within 5 s of the signal.
#[test]
fn sigterm_stops_a_large_batch_job_within_five_seconds() {
    let n = 40_000;
    let (o, took, left) = sigterm_batch_job(
        n,
        "a review long enough to take the model a moment, sentence after sentence, and then some more words",
        "",
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "exited {:.1} s after SIGTERM (at most 5 s)\n{}",
        took.as_secs_f64(),
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(parse_summary(&s).contains_key("interrupted"), "{s}");
    let records = summary_count(&s, "records");
    assert!(
        records < n as u64,
        "all {n} records were processed before the signal took effect: {s}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}
