//! Length-sorted batching must not change results or their order.

mod common;

use common::*;

fn varied_texts() -> Vec<String> {
    // Lengths from 1 to well over the 256-token limit, interleaved so sorting moves them a lot.
    let mut texts = Vec::new();
    for i in 0..40 {
        let n = match i % 5 {
            0 => 1,
            1 => 120,
            2 => 3,
            3 => 400,
            _ => 30 + i,
        };
        texts.push(
            (0..n)
                .map(|k| format!("w{}", (i * 7 + k) % 50))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    texts
}

#[test]
fn order_and_values_survive_length_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let texts = varied_texts();
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("r{i:03}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let text_refs: Vec<Option<&str>> = texts.iter().map(|t| Some(t.as_str())).collect();
    let input = dir.path().join("in.parquet");
    texts_parquet(&input, &id_refs, &text_refs);

    // Baseline: one record per batch, no padding at all.
    let single = dir.path().join("single.parquet");
    let p = embed_pipeline(
        dir.path(),
        &input,
        &single,
        "batching:\n  max_batch_size: 1\n",
    );
    assert_ok(&run_pipeline(&p, &[]));

    // Sorted, budgeted, padded batches over several windows.
    let batched = dir.path().join("batched.parquet");
    let p = embed_pipeline(
        dir.path(),
        &input,
        &batched,
        "batching:\n  max_batch_size: 8\n  max_batch_tokens: 1024\n  window_records: 16\n",
    );
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);

    let a = read_parquet(&single);
    let b = read_parquet(&batched);
    let want: Vec<Option<String>> = ids.iter().map(|s| Some(s.clone())).collect();
    assert_eq!(strings(&a, "id"), want);
    assert_eq!(strings(&b, "id"), want);
    let ea = embeddings(&a, "embedding");
    let eb = embeddings(&b, "embedding");
    for (i, (x, y)) in ea.iter().zip(&eb).enumerate() {
        let c = cosine(x, y);
        assert!(c > 0.99999, "row {i}: batched vs alone cosine {c}");
    }
    // Distinct texts stay distinct: row i is closest to its own baseline vector.
    for (i, y) in eb.iter().enumerate() {
        let best = ea
            .iter()
            .enumerate()
            .max_by(|p, q| cosine(p.1, y).total_cmp(&cosine(q.1, y)))
            .unwrap()
            .0;
        let same_text = texts[best] == texts[i];
        assert!(same_text, "row {i} is closest to row {best}");
    }
    // 8 of the 40 texts have 400 words: past the 256-token limit.
    assert!(stdout(&o).contains("truncated     8"), "{}", stdout(&o));
}
