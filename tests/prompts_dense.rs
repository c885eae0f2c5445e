//! Prompts and Dense modules as sentence-transformers runs them: models saved by
//! sentence-transformers 5 (scripts/make_prompt_fixtures.py: all-MiniLM-L6-v2 with seeded Dense
//! layers, prompts, `include_prompt: false`), against `SentenceTransformer.encode`'s vectors;
//! prompts with chunked passages and with the sparse task; bad prompt names and modules.

mod common;

use std::path::{Path, PathBuf};

use arrow::array::Array;
use common::*;

/// A model folder: the set-up's MiniLM graph and tokenizer, with the fixture's module files.
fn fixture_folder(dir: &Path, name: &str) -> PathBuf {
    let base = model("all-MiniLM-L6-v2");
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(base.join("model.onnx"), out.join("model.onnx")).unwrap();
    for f in ["tokenizer.json", "config.json", "special_tokens_map.json"] {
        std::fs::copy(base.join(f), out.join(f)).unwrap();
    }
    copy_tree(&root().join("tests/fixtures/prompts").join(name), &out);
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

fn expected() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/prompts/expected.json")).unwrap(),
    )
    .unwrap()
}

fn texts(exp: &serde_json::Value) -> Vec<String> {
    exp["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Run tasks.embed on the texts with `settings` (YAML lines under the task); the vectors.
fn embed(dir: &Path, model: &Path, texts: &[String], settings: &str) -> Vec<Vec<f32>> {
    let t: Vec<Option<&str>> = texts.iter().map(|s| Some(s.as_str())).collect();
    let o = run_tasks(
        dir,
        &t,
        None,
        &format!("  embed:\n    model: {}\n{settings}", model.display()),
    );
    assert_ok(&o);
    embeddings(&read_parquet(&dir.join("out.parquet")), "embedding")
}

/// The task keys that say what `encode`'s keyword arguments say.
fn settings_of(kwargs: &serde_json::Value) -> String {
    let mut s = String::new();
    if let Some(p) = kwargs.get("prompt") {
        s.push_str(&format!("    prompt: {p}\n"));
    }
    if let Some(p) = kwargs.get("prompt_name") {
        s.push_str(&format!("    prompt_name: {p}\n"));
    }
    s
}

#[test]
fn prompts_and_dense_modules_match_sentence_transformers() {
    let exp = expected();
    let texts = texts(&exp);
    let dir = tempfile::tempdir().unwrap();
    for (name, settings) in exp["models"].as_object().unwrap() {
        let folder = fixture_folder(dir.path(), name);
        for (label, s) in settings.as_object().unwrap() {
            let want: Vec<Vec<f32>> = serde_json::from_value(s["vectors"].clone()).unwrap();
            let run = dir
                .path()
                .join(format!("{name}-{}", label.replace(['=', ' '], "-")));
            std::fs::create_dir_all(&run).unwrap();
            let got = embed(&run, &folder, &texts, &settings_of(&s["kwargs"]));
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), w.len(), "{name} {label}: dimensions");
                let c = cosine(g, w);
                let diff = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    c >= 0.99999 && diff < 1e-4,
                    "{name} {label} text {i} ({:?}): cosine {c}, max difference {diff}",
                    texts[i]
                );
            }
        }
    }
}

#[test]
fn the_prompt_changes_the_vectors_and_models_inspect_shows_it() {
    // Guards the fixture: with include_prompt false and a Dense module, prompts still matter.
    let exp = expected();
    let m = &exp["models"]["minilm-dense-prompts"];
    let a: Vec<Vec<f32>> = serde_json::from_value(m["default"]["vectors"].clone()).unwrap();
    let b: Vec<Vec<f32>> = serde_json::from_value(m["prompt=empty"]["vectors"].clone()).unwrap();
    assert!(
        cosine(&a[0], &b[0]) < 0.999,
        "the default prompt changes the embedding"
    );
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture_folder(dir.path(), "minilm-dense-prompts");
    let o = bin()
        .args(["models", "inspect"])
        .arg(&folder)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("include_prompt false"), "{out}");
    assert!(
        out.contains("then          2_Dense Dense 384 -> 96, tanh"),
        "{out}"
    );
    assert!(out.contains("then          Normalize"), "{out}");
    assert!(
        out.contains("prompt        passage \"passage: \" (default)"),
        "{out}"
    );
    assert!(out.contains("prompt        query \"query: \"\n"), "{out}");
}

#[test]
fn pooling_cannot_move_into_the_graph_past_dense_modules_or_a_left_out_prompt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, want) in [
        ("minilm-dense2", "runs the Dense module 2_Dense after it"),
        (
            "minilm-dense-prompts",
            "runs the Dense module 2_Dense after it",
        ),
    ] {
        let folder = fixture_folder(dir.path(), name);
        let o = optimize(&folder, &["--precision", "fp32", "--pool"]);
        assert!(!o.status.success(), "{name}: --pool accepted");
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(
            !folder.join("model.fp32.onnx").exists(),
            "{name}: nothing is written"
        );
    }
    // Without the Dense module, the left-out prompt alone is refused.
    let folder = fixture_folder(
        dir.path().join("no-dense").as_path(),
        "minilm-dense-prompts",
    );
    let modules = std::fs::read_to_string(folder.join("modules.json")).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&modules).unwrap();
    let kept: Vec<_> = v.into_iter().filter(|m| m["path"] != "2_Dense").collect();
    std::fs::write(
        folder.join("modules.json"),
        serde_json::to_string(&kept).unwrap(),
    )
    .unwrap();
    let o = optimize(&folder, &["--precision", "fp32", "--pool"]);
    assert!(!o.status.success(), "--pool accepted");
    assert!(
        stderr(&o).contains("include_prompt: false"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_passage_gets_the_prompt() {
    // A passage embedded with the prompt equals the text of that passage embedded with the
    // prompt on its own (the latter is sentence-transformers' `encode(prompt + passage)`,
    // checked above); offsets stay those of the text.
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture_folder(dir.path(), "minilm-dense-prompts");
    let text = "The quarterly report covers revenue, costs and the outlook. Revenue grew by twelve percent, driven by subscriptions in Europe and Asia! Costs rose more slowly? Yes: hiring was paused in March. "
        .repeat(3);
    let run = dir.path().join("chunks");
    std::fs::create_dir_all(&run).unwrap();
    let o = run_tasks(
        &run,
        &[Some(&text)],
        None,
        &format!(
            "  embed:\n    model: {}\n    prompt_name: query\n    chunking: {{boundary: sentence, max_tokens: 40, overlap: 8}}\n",
            folder.display()
        ),
    );
    assert_ok(&o);
    let out = read_parquet(&run.join("out.parquet"));
    let chunks = out.column_by_name("chunks").unwrap();
    let list = arrow::array::AsArray::as_list::<i32>(chunks).value(0);
    let s = arrow::array::AsArray::as_struct(&list);
    let col = |n: &str| s.column_by_name(n).unwrap().clone();
    let starts = col("start");
    let ends = col("end");
    let starts = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&starts);
    let ends = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&ends);
    let vecs = col("embedding");
    let vecs = arrow::array::AsArray::as_fixed_size_list(&vecs);
    assert!(s.len() >= 3, "{} passages", s.len());
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = (0..s.len())
        .map(|i| {
            chars[starts.value(i) as usize..ends.value(i) as usize]
                .iter()
                .collect()
        })
        .collect();
    assert!(
        pieces[0].starts_with("The quarterly report"),
        "{:?}",
        pieces[0]
    );
    let alone_dir = dir.path().join("alone");
    std::fs::create_dir_all(&alone_dir).unwrap();
    let alone = embed(&alone_dir, &folder, &pieces, "    prompt_name: query\n");
    for (i, a) in alone.iter().enumerate() {
        let v = vecs.value(i);
        let v = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float32Type>(&v);
        let c = cosine(v.values(), a);
        assert!(c > 0.999999, "passage {i} ({:?}): cosine {c}", pieces[i]);
    }
}

#[test]
fn sparse_prompts_are_put_before_the_text() {
    // SparseEncoder prepends the prompt to the text (its SpladePooling pools every token).
    let dir = tempfile::tempdir().unwrap();
    let m = root().join("tests/fixtures/sparse/bert-splade");
    let texts = [
        "Barack Obama met Angela Merkel in Berlin.",
        "A terrible waste of time.",
        "",
    ];
    let run = |sub: &str, t: Vec<String>, extra: &str| {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let t: Vec<Option<&str>> = t.iter().map(|s| Some(s.as_str())).collect();
        let o = run_tasks(
            &d,
            &t,
            None,
            &format!("  sparse:\n    model: {}\n{extra}", m.display()),
        );
        assert_ok(&o);
        let b = read_parquet(&d.join("out.parquet"));
        let col = b.column_by_name("sparse").unwrap();
        format!("{:?}", arrow::array::AsArray::as_struct(col))
    };
    let prompted = run(
        "p",
        texts.iter().map(|s| s.to_string()).collect(),
        "    prompt: \"query: \"\n",
    );
    let joined = run(
        "j",
        texts.iter().map(|s| format!("query: {s}")).collect(),
        "",
    );
    let plain = run("n", texts.iter().map(|s| s.to_string()).collect(), "");
    assert_eq!(prompted, joined);
    assert_ne!(prompted, plain);
}

#[test]
fn bad_prompts_and_modules_are_refused_by_validate_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let folder = fixture_folder(dir.path(), "minilm-dense-prompts");
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &["a"], &[Some("hello")]);
    let pipeline = |extra: &str, model: &Path| {
        let p = dir.path().join("p.yaml");
        std::fs::write(
            &p,
            format!(
                "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n  embed:\n    model: {}\n{extra}sink:\n  parquet:\n    path: {}\n",
                input.display(),
                model.display(),
                dir.path().join("out/out.parquet").display()
            ),
        )
        .unwrap();
        p
    };
    let refused = |p: &Path, want: &str| {
        for verb in ["validate", "run"] {
            let mut c = bin();
            c.arg(verb).arg(p);
            if verb == "run" {
                c.arg("--no-progress");
            }
            let o = c.output().unwrap();
            assert!(!o.status.success(), "{verb} accepted it");
            let err = stderr(&o);
            assert!(err.contains(want), "{verb}: {err}");
        }
        assert!(
            !dir.path().join("out/out.parquet").exists(),
            "nothing is written"
        );
    };
    refused(
        &pipeline("    prompt_name: qeury\n", &folder),
        "tasks.embed.prompt_name is 'qeury'",
    );
    refused(
        &pipeline("    prompt: \"q: \"\n    prompt_name: query\n", &folder),
        "both prompt and prompt_name",
    );
    // A graph that pools inside (and normalises: bert_to_onnx.py --pooled) cannot feed the
    // Dense module its unnormalised pooling, nor leave the prompt's tokens out of its pooling.
    let pooled = dir.path().join("pooled");
    copy_tree(&folder, &pooled);
    std::fs::remove_file(pooled.join("model.onnx")).unwrap();
    std::os::unix::fs::symlink(
        model("all-MiniLM-L6-v2-pooled").join("model.onnx"),
        pooled.join("model.onnx"),
    )
    .unwrap();
    let o = run_pipeline(&pipeline("", &pooled), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("runs the Dense module 2_Dense after its pooling"),
        "{}",
        stderr(&o)
    );
    let modules = std::fs::read_to_string(pooled.join("modules.json")).unwrap();
    let v: Vec<serde_json::Value> = serde_json::from_str(&modules).unwrap();
    let kept: Vec<_> = v.into_iter().filter(|m| m["path"] != "2_Dense").collect();
    std::fs::write(
        pooled.join("modules.json"),
        serde_json::to_string(&kept).unwrap(),
    )
    .unwrap();
    let o = run_pipeline(&pipeline("", &pooled), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the prompt's tokens cannot be left out of the pooling"),
        "{}",
        stderr(&o)
    );
    assert!(
        !dir.path().join("out/out.parquet").exists(),
        "nothing is written"
    );
    // A module bertflow cannot run is named, never skipped.
    let modules = folder.join("modules.json");
    let text = std::fs::read_to_string(&modules).unwrap().replace(
        "sentence_transformers.base.modules.dense.Dense",
        "sentence_transformers.models.WeightedLayerPooling",
    );
    std::fs::write(&modules, text).unwrap();
    refused(
        &pipeline("", &folder),
        "'2_Dense' is a sentence_transformers.models.WeightedLayerPooling",
    );
}

#[test]
fn pretrained_bge_and_e5_with_their_prompts() {
    // The set-up's bge-small-en-v1.5 and e5-small-v2, each with its query and passage prompts,
    // against sentence-transformers' semantics computed with onnxruntime and tokenizers
    // (tests/fixtures/prompts/real.json).
    let real: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/prompts/real.json")).unwrap(),
    )
    .unwrap();
    let texts = texts(&real);
    let dir = tempfile::tempdir().unwrap();
    for (name, settings) in real["models"].as_object().unwrap() {
        let m = model(name);
        for (label, want) in settings.as_object().unwrap() {
            let want: Vec<Vec<f32>> = serde_json::from_value(want.clone()).unwrap();
            let prompt_name = label.strip_prefix("prompt_name=").unwrap();
            let run = dir.path().join(format!("{name}-{prompt_name}"));
            std::fs::create_dir_all(&run).unwrap();
            let got = embed(
                &run,
                &m,
                &texts,
                &format!("    prompt_name: {prompt_name}\n"),
            );
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let c = cosine(g, w);
                assert!(c >= 0.99999, "{name} {label} text {i}: cosine {c}");
            }
        }
    }
}
