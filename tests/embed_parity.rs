//! bertflow's embeddings against reference vectors made by sentence-transformers (torch, fp32)
//! and by Python onnxruntime on the same ONNX file (scripts/make_reference.py).

mod common;

use std::collections::HashMap;

use common::*;

#[test]
fn embeddings_match_sentence_transformers_and_python_onnxruntime() {
    compare_to_reference(&[]);
}

/// The graph with mean pooling and normalisation inside (`scripts/bert_to_onnx.py --pooled`):
/// bertflow takes its `sentence_embedding` output as it is, with the same vectors.
#[test]
fn in_graph_pooling_gives_the_same_embeddings() {
    let m = model("all-MiniLM-L6-v2-pooled");
    let o = bin().args(["models", "inspect"]).arg(&m).output().unwrap();
    assert!(stdout(&o).contains("sentence_embedding"), "{}", stdout(&o));
    compare_to_reference(&["--set", &format!("tasks.embed.model={}", m.display())]);
}

fn compare_to_reference(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("tests/fixtures/embed/texts.parquet");
    let output = dir.path().join("out.parquet");
    // Small batches and windows so that padding, sorting and several chunks are all exercised.
    let p = embed_pipeline(
        dir.path(),
        &input,
        &output,
        "batching:\n  max_batch_size: 5\n  max_batch_tokens: 600\n  window_records: 9\n",
    );
    let o = run_pipeline(&p, args);
    assert_ok(&o);
    let out = read_parquet(&output);
    let reference = read_parquet(&root().join("tests/fixtures/embed/reference.parquet"));
    let ref_ids = strings(&reference, "id");
    let st = list_column(&reference, "st_fp32");
    let ort = list_column(&reference, "ort");
    let by_id: HashMap<String, usize> = ref_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone().unwrap(), i))
        .collect();

    let ids = strings(&out, "id");
    let vecs = embeddings(&out, "embedding");
    assert_eq!(ids.len(), ref_ids.len(), "every fixture text is embedded");
    assert_eq!(ids, ref_ids, "output order matches input order");
    let mut worst_st = 1.0f64;
    let mut worst_ort = 1.0f64;
    for (id, v) in ids.iter().zip(&vecs) {
        let i = by_id[id.as_ref().unwrap()];
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{id:?} norm {norm}");
        let c_st = cosine(v, &st[i]);
        let c_ort = cosine(v, &ort[i]);
        worst_st = worst_st.min(c_st);
        worst_ort = worst_ort.min(c_ort);
        assert!(
            c_st >= 0.9999,
            "{id:?}: cosine to sentence-transformers {c_st}"
        );
        assert!(
            c_ort >= 0.9999,
            "{id:?}: cosine to Python onnxruntime {c_ort}"
        );
    }
    eprintln!("worst cosine: sentence-transformers {worst_st:.7}, onnxruntime {worst_ort:.7}");
    // The fixture holds one text far past the 256-token limit of the model.
    assert!(stdout(&o).contains("truncated     "), "{}", stdout(&o));
    assert!(!stdout(&o).contains("truncated     0"), "{}", stdout(&o));
}
