//! `runtime.execution_provider: openvino` with the `onnxruntime-openvino` library the set-up puts
//! in runtime/onnxruntime-openvino/: fp32 embeddings equal to sentence-transformers, bf16 only
//! through a variant `models optimize --execution-provider openvino` made and judged, variants
//! kept to the provider they were made for, a task model beside embeddings, and the errors and
//! fallback when the library has no OpenVINO.

mod common;

use std::path::Path;

use common::*;

fn openvino_lib() -> std::path::PathBuf {
    let p = root().join("runtime/onnxruntime-openvino/libonnxruntime.so");
    assert!(
        p.is_file(),
        "{} is missing: run `make setup` (scripts/setup.sh) first",
        p.display()
    );
    p
}

/// Embed the embedding fixture texts with `model` on OpenVINO at `precision`; the run and the
/// cosine of each embedding to sentence-transformers'.
fn embed_on_openvino(
    model: &Path,
    precision: &str,
    extra: &[&str],
) -> (std::process::Output, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("tests/fixtures/embed/texts.parquet");
    let output = dir.path().join("out.parquet");
    let p = embed_pipeline(
        dir.path(),
        &input,
        &output,
        "runtime:\n  execution_provider: openvino\n",
    );
    let model_set = format!("tasks.embed.model={}", model.display());
    let precision_set = format!("tasks.embed.precision={precision}");
    let mut args = vec!["--set", &model_set, "--set", &precision_set];
    args.extend_from_slice(extra);
    let o = run_pipeline(&p, &args);
    if !o.status.success() {
        return (o, Vec::new());
    }
    let out = read_parquet(&output);
    let reference = read_parquet(&root().join("tests/fixtures/embed/reference.parquet"));
    assert_eq!(strings(&out, "id"), strings(&reference, "id"));
    let st = list_column(&reference, "st_fp32");
    let cos = embeddings(&out, "embedding")
        .iter()
        .zip(&st)
        .map(|(a, b)| cosine(a, b))
        .collect();
    (o, cos)
}

fn cpu_has_bf16() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.split_whitespace()
        .any(|f| f == "amx_bf16" || f == "avx512_bf16")
}

#[test]
fn fp32_on_openvino_equals_sentence_transformers() {
    openvino_lib();
    let (o, cos) = embed_on_openvino(&model("all-MiniLM-L6-v2"), "fp32", &[]);
    assert_ok(&o);
    let summary = parse_summary(&stdout(&o));
    assert_eq!(summary["tasks"], "embed on openvino", "{}", stdout(&o));
    assert_eq!(summary["precision"], "embed fp32");
    let worst = cos.iter().copied().fold(1.0, f64::min);
    // OpenVINO is told f32 (its CPU plugin would pick bf16 by itself on AMX).
    assert!(
        worst >= 0.99999,
        "openvino fp32 vs sentence-transformers: {worst}"
    );
}

#[test]
fn bf16_runs_only_through_a_variant_judged_on_openvino() {
    openvino_lib();
    let dir = tempfile::tempdir().unwrap();
    let m = copy_model(&model("all-MiniLM-L6-v2"), dir.path());
    // No variant yet: the error names the command that makes one.
    let (o, _) = embed_on_openvino(&m, "bf16", &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--precision bf16"), "{}", stderr(&o));
    let o = optimize(
        &m,
        &["--precision", "bf16", "--execution-provider", "openvino"],
    );
    if !cpu_has_bf16() {
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("AMX-BF16 or AVX512-BF16"),
            "{}",
            stderr(&o)
        );
        return;
    }
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("weight tensors stored as float16"), "{out}");
    // The weights are stored at half width (OpenVINO keeps them so): about half the file.
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64;
    let (var, src) = (
        size(&m.join("model.bf16.onnx")),
        size(&m.join("model.onnx")),
    );
    assert!(
        var < 0.6 * src,
        "bf16 variant {var} bytes, exported graph {src}"
    );
    assert!(out.contains("measured on   OpenVINO CPU"), "{out}");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("model.bf16.json")).unwrap()).unwrap();
    assert_eq!(rec["execution_provider"], "openvino");
    let guard = rec["quality"][0]["min_cosine"].as_f64().unwrap();
    assert!(guard >= 0.999, "bf16 guard: {guard}");
    // The variant runs at bf16 and stays close to sentence-transformers' fp32.
    let (o, cos) = embed_on_openvino(&m, "bf16", &[]);
    assert_ok(&o);
    assert!(
        parse_summary(&stdout(&o))["precision"].starts_with("embed bf16 (min cosine"),
        "{}",
        stdout(&o)
    );
    let worst = cos.iter().copied().fold(1.0, f64::min);
    assert!(
        worst >= 0.999,
        "openvino bf16 vs sentence-transformers: {worst}"
    );
    // Made for OpenVINO, it does not run on ONNX Runtime's own kernels.
    let (o, _) = embed_on_openvino(&m, "bf16", &["--set", "runtime.execution_provider=cpu"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("made and judged for runtime.execution_provider: openvino"),
        "{e}"
    );
    // ONNX Runtime's CPU kernels have no bf16 on x86: no command that would fail is offered.
    if cfg!(target_arch = "x86_64") {
        assert!(
            !e.contains("--execution-provider cpu") && e.contains("aarch64"),
            "{e}"
        );
    }
}

#[test]
fn variants_for_onnx_runtime_kernels_are_refused_on_openvino() {
    openvino_lib();
    // A fused fp32 variant made for the CPU provider holds ONNX Runtime's own operators.
    let dir = tempfile::tempdir().unwrap();
    let m = copy_model(&model("all-MiniLM-L6-v2"), dir.path());
    assert_ok(&optimize(&m, &["--precision", "fp32"]));
    let (o, _) = embed_on_openvino(&m, "fp32", &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("made for ONNX Runtime's own kernels, not for OpenVINO")
            && e.contains("--execution-provider openvino"),
        "{e}"
    );
    // int8 and fp16 are not OpenVINO precisions here.
    let o = optimize(
        &m,
        &["--precision", "int8", "--execution-provider", "openvino"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the openvino provider runs fp32 models and bf16 variants"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_task_model_on_openvino_gives_the_cpu_labels() {
    openvino_lib();
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        Some("I loved every minute of it, wonderful!"),
        Some("Terrible service, never again."),
        Some("It was fine, I guess."),
        Some(""),
    ];
    let task = format!(
        "  sentiment:\n    model: {}\n",
        fixture_model("bert-sentiment")
    );
    let mut labels = Vec::new();
    for provider in ["cpu", "openvino"] {
        let o = run_tasks_with(
            dir.path(),
            &texts,
            None,
            &task,
            &["--set", &format!("runtime.execution_provider={provider}")],
        );
        assert_ok(&o);
        let b = read_parquet(&dir.path().join("out.parquet"));
        labels.push((
            strings(&b, "sentiment_label"),
            b.column_by_name("sentiment_score")
                .map(|c| {
                    use arrow::array::AsArray;
                    c.as_primitive::<arrow::datatypes::Float32Type>()
                        .values()
                        .to_vec()
                })
                .unwrap(),
        ));
    }
    assert_eq!(labels[0].0, labels[1].0);
    for (a, b) in labels[0].1.iter().zip(&labels[1].1) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn a_library_without_openvino_fails_clearly_or_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("tests/fixtures/embed/texts.parquet");
    let output = dir.path().join("out.parquet");
    let cpu_lib = root().join("runtime/onnxruntime/libonnxruntime.so");
    let p = embed_pipeline(
        dir.path(),
        &input,
        &output,
        &format!(
            "runtime:\n  execution_provider: openvino\n  ort_lib: {}\n",
            cpu_lib.display()
        ),
    );
    let o = run_pipeline(&p, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("OpenVINO") && e.contains("runtime/onnxruntime-openvino"),
        "{e}"
    );
    let o = run_pipeline(&p, &["--set", "runtime.fallback=cpu"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("cpu (fallback: OpenVINO unavailable)"),
        "{}",
        stdout(&o)
    );
}
