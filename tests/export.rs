//! `bertflow models export` on models as they come (safetensors, no ONNX graph): tiny seeded
//! models of every supported encoder family (scripts/make_export_fixtures.py: BERT, DistilBERT,
//! ELECTRA, MPNet, RoBERTa, XLM-RoBERTa, CamemBERT, DeBERTa-v2, ModernBERT; WordPiece, BPE and
//! Unigram tokenizers; models with and without token types) exported for embed (the folder's
//! sentence-transformers layout: the bare encoder) and for their head, then run against
//! `SentenceTransformer.encode` and the transformers pipelines; the pretrained SPLADE model of
//! the set-up exported from its safetensors and run as `SparseEncoder`; bad input refused with
//! nothing written. The exports run in the Python environment `make refenv` makes.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/export/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn export(src: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    bin()
        .args(["models", "export"])
        .arg(src)
        .arg(out)
        .args(args)
        .output()
        .unwrap()
}

fn exported(dir: &Path, arch: &str, task: Option<&str>) -> PathBuf {
    let out = dir.join(format!("{arch}-{}", task.unwrap_or("default")));
    let args: Vec<&str> = task.map(|t| vec!["--task", t]).unwrap_or_default();
    let o = export(
        &root().join("tests/fixtures/export").join(arch),
        &out,
        &args,
    );
    assert_ok(&o);
    let report = stdout(&o);
    assert!(
        report.contains("checked       largest difference to torch"),
        "{report}"
    );
    out
}

#[test]
fn every_architecture_exports_for_embed_and_matches_sentence_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let cases = expected()["embed"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 9, "every architecture has a fixture");
    for case in &cases {
        let arch = case["model"].as_str().unwrap();
        let model = exported(dir.path(), arch, None);
        // The sentence-transformers layout gives the bare encoder, whatever head config.json
        // names (MPNet's says MPNetForMaskedLM).
        let o = bin()
            .args(["models", "inspect"])
            .arg(&model)
            .output()
            .unwrap();
        assert!(
            stdout(&o).contains("last_hidden_state"),
            "{arch}: {}",
            stdout(&o)
        );
        let texts: Vec<String> = parity::strs(&case["texts"]);
        let t: Vec<Option<&str>> = texts.iter().map(|s| Some(s.as_str())).collect();
        let run = dir.path().join(format!("{arch}-run"));
        std::fs::create_dir_all(&run).unwrap();
        let o = run_tasks(
            &run,
            &t,
            None,
            &format!("  embed:\n    model: {}\n", model.display()),
        );
        assert_ok(&o);
        let got = embeddings(&read_parquet(&run.join("out.parquet")), "embedding");
        let want: Vec<Vec<f32>> = serde_json::from_value(case["vectors"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = cosine(g, w);
            assert!(c >= 0.99999, "{arch} text {i} ({:?}): cosine {c}", texts[i]);
        }
    }
}

#[test]
fn heads_export_and_match_the_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let exp = expected();
    let mut archs = Vec::new();
    for case in exp["sentiment"].as_array().unwrap() {
        let arch = case["model"].as_str().unwrap();
        let m = exported(dir.path(), arch, Some("sentiment"));
        parity::check_sentiment(case, &m.display().to_string(), dir.path());
        archs.push(arch.to_string());
    }
    for case in exp["ner"].as_array().unwrap() {
        let arch = case["model"].as_str().unwrap();
        let m = exported(dir.path(), arch, Some("ner"));
        assert!(parity::check_ner(case, &m.display().to_string(), dir.path()) > 0);
        archs.push(arch.to_string());
    }
    for case in exp["qa"].as_array().unwrap() {
        let arch = case["model"].as_str().unwrap();
        let m = exported(dir.path(), arch, Some("qa"));
        parity::check_qa(case, &m.display().to_string(), dir.path());
        archs.push(arch.to_string());
    }
    archs.sort();
    assert_eq!(
        archs,
        [
            "bert",
            "camembert",
            "deberta-v2",
            "distilbert",
            "electra",
            "modernbert",
            "roberta",
            "xlm-roberta"
        ]
    );
}

/// Export a pretrained model of the set-up (`models/NAME`), check the report names `report`,
/// run `task` over the texts of `tests/fixtures/export/FIXTURE`; the fixture, its texts and the
/// output.
fn export_pretrained_and_run(
    dir: &Path,
    name: &str,
    report: &str,
    task: &str,
    fixture: &str,
) -> (Value, Vec<String>, arrow::array::RecordBatch) {
    let src = root().join("models").join(name);
    assert!(
        src.join("model.safetensors").is_file(),
        "{} is missing: run `make setup` and `bash scripts/test_models.sh` (make test does)",
        src.display()
    );
    let out = dir.join(format!("{name}-onnx"));
    let o = export(&src, &out, &[]);
    assert_ok(&o);
    assert!(stdout(&o).contains(report), "{}", stdout(&o));
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/export").join(fixture)).unwrap(),
    )
    .unwrap();
    let texts = parity::strs(&want["texts"]);
    let t: Vec<Option<&str>> = texts.iter().map(|s| Some(s.as_str())).collect();
    let o = run_tasks(
        dir,
        &t,
        None,
        &format!("  {task}:\n    model: {}\n", out.display()),
    );
    assert_ok(&o);
    let b = read_parquet(&dir.join("out.parquet"));
    (want, texts, b)
}

#[test]
fn a_pretrained_splade_model_exports_and_pools_as_sparse_encoder() {
    // The set-up's SPLADE-tiny (BertForMaskedLM, safetensors only, legacy LayerNorm names): the
    // export is its MLM logits, and tasks.sparse pools them as SpladePooling's defaults (max,
    // log1p(relu)) without any SparseEncoder file.
    let dir = tempfile::tempdir().unwrap();
    let (want, texts, b) = export_pretrained_and_run(
        dir.path(),
        "splade-tiny-source",
        "tasks         sparse",
        "sparse",
        "splade.json",
    );
    let col = b.column_by_name("sparse").unwrap();
    let st = arrow::array::AsArray::as_struct(col);
    let idx = arrow::array::AsArray::as_list::<i32>(st.column_by_name("indices").unwrap());
    let val = arrow::array::AsArray::as_list::<i32>(st.column_by_name("values").unwrap());
    for (i, w) in want["vectors"].as_array().unwrap().iter().enumerate() {
        let gi = idx.value(i);
        let gi = arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt32Type>(&gi);
        let gv = val.value(i);
        let gv = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float32Type>(&gv);
        let wi: Vec<u32> = serde_json::from_value(w["indices"].clone()).unwrap();
        let wv: Vec<f32> = serde_json::from_value(w["values"].clone()).unwrap();
        assert_eq!(
            gi.values().to_vec(),
            wi,
            "text {i} ({:?}): active dimensions",
            texts[i]
        );
        for (a, b) in gv.values().iter().zip(&wv) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "text {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let refused = |src: &Path, args: &[&str], want: &str| {
        let o = export(src, &out, args);
        assert!(!o.status.success(), "accepted {}", src.display());
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert!(!out.exists(), "nothing is written");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("partial"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    };
    // A folder without weights.
    let no_weights = dir.path().join("no-weights");
    std::fs::create_dir(&no_weights).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            root().join("tests/fixtures/export/bert").join(f),
            no_weights.join(f),
        )
        .unwrap();
    }
    refused(&no_weights, &[], "no weights");
    // An architecture the exporter does not know.
    let unknown = dir.path().join("unknown");
    std::fs::create_dir(&unknown).unwrap();
    for f in std::fs::read_dir(root().join("tests/fixtures/export/bert")).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, unknown.join(p.file_name().unwrap())).unwrap();
        }
    }
    let cfg = std::fs::read_to_string(unknown.join("config.json"))
        .unwrap()
        .replace("\"model_type\": \"bert\"", "\"model_type\": \"flubbert\"");
    std::fs::write(unknown.join("config.json"), cfg).unwrap();
    refused(&unknown, &[], "flubbert");
    // A head the model does not have.
    refused(
        &root().join("tests/fixtures/export/electra"),
        &["--task", "ner"],
        "--task ner needs a model with a ...ForTokenClassification head",
    );
    // A model whose outputs are not finite (a broken configuration) is refused by the check
    // after the export.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in std::fs::read_dir(root().join("tests/fixtures/export/bert")).unwrap() {
        let p = f.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, broken.join(p.file_name().unwrap())).unwrap();
        }
    }
    let cfg = std::fs::read_to_string(broken.join("config.json"))
        .unwrap()
        .replace(
            "\"layer_norm_eps\": 1e-12",
            "\"layer_norm_eps\": -1000000.0",
        );
    std::fs::write(broken.join("config.json"), cfg).unwrap();
    refused(
        &broken,
        &[],
        "the export is refused: the model's own outputs (torch) are not finite",
    );
}

#[test]
fn pretrained_all_mpnet_base_v2_exports_and_matches_sentence_transformers() {
    // sentence-transformers/all-mpnet-base-v2 as published (safetensors only; config.json names
    // MPNetForMaskedLM, the sentence-transformers layout asks for the bare encoder), fetched by
    // scripts/test_models.sh, against SentenceTransformer.encode (torch fp32).
    let dir = tempfile::tempdir().unwrap();
    let (want, texts, b) = export_pretrained_and_run(
        dir.path(),
        "all-mpnet-base-v2-source",
        "graph         mpnet encoder",
        "embed",
        "mpnet.json",
    );
    let got = embeddings(&b, "embedding");
    let want: Vec<Vec<f32>> = serde_json::from_value(want["vectors"].clone()).unwrap();
    let mut worst = 1.0f64;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), 768);
        let c = cosine(g, w);
        assert!(c >= 0.99999, "text {i} ({:?}): cosine {c}", texts[i]);
        worst = worst.min(c);
    }
    assert_eq!(got.len(), want.len());
    eprintln!(
        "all-mpnet-base-v2: {} texts, min cosine {worst:.7}",
        got.len()
    );
}
