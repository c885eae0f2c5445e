//! Chunked embeddings (`tasks.embed.chunking`) with the real MiniLM model: each passage's
//! embedding equals sentence-transformers' embedding of `text[start:end]` alone (reference
//! fixture) and bertflow's own embedding of that text; passages round-trip, cover the text,
//! respect the token budget and never cut a word; empty texts have none; bad settings stop at
//! start-up; one row per passage in Parquet and Postgres; Kafka JSON carries them.

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use common::*;

/// Texts that stress offsets and word boundaries.
fn texts() -> Vec<String> {
    let para = "The quarterly report covers revenue, costs and the outlook. Revenue grew by \
                twelve percent, driven by subscriptions in Europe and Asia! Costs rose more \
                slowly? Yes: hiring was paused in March.";
    vec![
        // Several paragraphs of English.
        format!("{para}\n\n{para} {para}\n  \n{para}"),
        // CJK without spaces, with punctuation.
        "東京は日本の首都です。大阪は商業の中心地として知られています。京都には多くの寺院があります。".repeat(6),
        // Emoji and mixed scripts.
        "Great service 🙂🙂 but the app crashed 💥 twice. Support fixed it fast 👍; überzeugend, très bien! ".repeat(5),
        // NFD accents (e + combining acute).
        "Cafe\u{301} au lait, cre\u{300}me bru\u{302}le\u{301}e et re\u{301}sume\u{301} de\u{301}taille\u{301}. ".repeat(8),
        // A very long word among short ones.
        format!("short words then {} and more short words follow here.", "x".repeat(400)),
        // Whitespace only and empty: no passages.
        "   \n\t  ".to_string(),
        String::new(),
    ]
}

fn write_texts(dir: &std::path::Path, name: &str, texts: &[String]) -> std::path::PathBuf {
    let p = dir.join(name);
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("t{i}")).collect();
    write_parquet(
        &p,
        vec![
            ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
            (
                "text",
                Arc::new(StringArray::from(texts.to_vec())) as ArrayRef,
            ),
        ],
    );
    p
}

struct Passage {
    record: usize,
    index: i32,
    start: usize,
    end: usize,
    embedding: Vec<f32>,
}

fn passages(batch: &RecordBatch) -> Vec<Passage> {
    let ids = strings(batch, "id");
    let list = batch.column_by_name("chunks").unwrap().as_list::<i32>();
    let mut out = Vec::new();
    for (r, id) in ids.iter().enumerate() {
        let record: usize = id.as_ref().unwrap()[1..].parse().unwrap();
        let items = list.value(r);
        let s = items.as_struct();
        let index = s.column(0).as_primitive::<arrow::datatypes::Int32Type>();
        let start = s.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let end = s.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        let emb = s.column(3).as_fixed_size_list();
        for k in 0..s.len() {
            out.push(Passage {
                record,
                index: index.value(k),
                start: start.value(k) as usize,
                end: end.value(k) as usize,
                embedding: emb
                    .value(k)
                    .as_primitive::<arrow::datatypes::Float32Type>()
                    .values()
                    .to_vec(),
            });
        }
    }
    out
}

fn chars(s: &str, start: usize, end: usize) -> String {
    s.chars().skip(start).take(end - start).collect()
}

/// A pipeline file: `input` -> MiniLM embeddings with `chunking` (YAML flow map) -> `sink`
/// (YAML of the `sink:` section's body, indented by two).
fn chunk_pipeline(
    dir: &std::path::Path,
    name: &str,
    input: &std::path::Path,
    chunking: &str,
    sink: &str,
) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n  embed:\n    model: {}\n    chunking: {chunking}\nbatching:\n  max_batch_size: 8\n  window_records: 3\nsink:\n{sink}",
            input.display(),
            model("all-MiniLM-L6-v2").display(),
        ),
    )
    .unwrap();
    p
}

fn run_chunked(
    dir: &std::path::Path,
    input: &std::path::Path,
    chunking: &str,
    extra: &str,
) -> RecordBatch {
    let out = dir.join("chunked.parquet");
    let p = chunk_pipeline(
        dir,
        "chunked",
        input,
        chunking,
        &format!("  parquet:\n    path: {}\n{extra}", out.display()),
    );
    let o = run_pipeline(&p, &[]);
    assert_ok(&o);
    read_parquet(&out)
}

#[test]
fn passages_equal_their_text_embedded_alone_and_cover_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    let input = write_texts(dir.path(), "in.parquet", &texts);
    for (mode, max_tokens, overlap) in
        [("token", 24, 6), ("sentence", 40, 12), ("paragraph", 64, 0)]
    {
        let out = run_chunked(
            dir.path(),
            &input,
            &format!("{{boundary: {mode}, max_tokens: {max_tokens}, overlap: {overlap}, document_embedding: true}}"),
            "",
        );
        assert_eq!(out.num_rows(), texts.len(), "{mode}: every record written");
        let ps = passages(&out);
        // Per record: indices 0.., offsets in order, round trip, coverage, no cut words.
        for (r, text) in texts.iter().enumerate() {
            let mine: Vec<&Passage> = ps.iter().filter(|p| p.record == r).collect();
            if text.trim().is_empty() {
                assert!(mine.is_empty(), "{mode}: passages of an empty text");
                continue;
            }
            assert!(!mine.is_empty(), "{mode}: record {r} has no passage");
            let n_chars = text.chars().count();
            let cs: Vec<char> = text.chars().collect();
            let mut covered = vec![false; n_chars];
            for (k, p) in mine.iter().enumerate() {
                assert_eq!(p.index as usize, k, "{mode}: indices in order");
                assert!(
                    p.start < p.end && p.end <= n_chars,
                    "{mode}: offsets {}..{}",
                    p.start,
                    p.end
                );
                let piece = chars(text, p.start, p.end);
                assert_eq!(
                    piece.trim(),
                    piece,
                    "{mode}: passage starts and ends on text"
                );
                covered[p.start..p.end].iter_mut().for_each(|c| *c = true);
                if k > 0 {
                    let prev = mine[k - 1];
                    assert!(p.start > prev.start && p.end > prev.end, "{mode}: progress");
                }
                // Never inside a Latin word (the 400-letter word may be cut: it is longer
                // than any budget here).
                for edge in [p.start, p.end] {
                    if edge > 0 && edge < n_chars {
                        let (a, b) = (cs[edge - 1], cs[edge]);
                        let latin = |c: char| c.is_ascii_alphabetic();
                        if latin(a) && latin(b) && a != 'x' {
                            panic!("{mode}: record {r} cut inside a word at {edge}: {piece:?}");
                        }
                    }
                }
            }
            for (i, c) in cs.iter().enumerate() {
                assert!(
                    c.is_whitespace() || covered[i],
                    "{mode}: record {r} char {i} {c:?} in no passage"
                );
            }
        }
        // Each passage embedded on its own gives the same vector.
        let pieces: Vec<String> = ps
            .iter()
            .map(|p| chars(&texts[p.record], p.start, p.end))
            .collect();
        let alone_in = write_texts(dir.path(), "pieces.parquet", &pieces);
        let alone_out = dir.path().join("alone.parquet");
        let p = embed_pipeline(
            dir.path(),
            &alone_in,
            &alone_out,
            &format!("    # passages of at most {max_tokens} tokens: nothing is cut\n"),
        );
        let o = run_pipeline(&p, &[]);
        assert_ok(&o);
        assert!(
            stdout(&o).contains("truncated     0"),
            "a passage was longer than max_tokens:\n{}",
            stdout(&o)
        );
        let alone = embeddings(&read_parquet(&alone_out), "embedding");
        assert_eq!(alone.len(), ps.len(), "{mode}: one embedding per passage");
        let mut worst = (1.0f64, String::new());
        for ((p, v), piece) in ps.iter().zip(&alone).zip(&pieces) {
            let c = cosine(&p.embedding, v);
            if c < worst.0 {
                worst = (
                    c,
                    format!("record {} passage {}: {piece:?}", p.record, p.index),
                );
            }
        }
        assert!(
            worst.0 >= 0.9999,
            "{mode}: worst cosine {} at {}",
            worst.0,
            worst.1
        );
        // The document embedding: normalised mean of the passages.
        let docs = out
            .column_by_name("embedding")
            .unwrap()
            .as_fixed_size_list();
        for (r, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                assert!(
                    docs.is_null(r),
                    "{mode}: document embedding of an empty text"
                );
                continue;
            }
            let mine: Vec<&Passage> = ps.iter().filter(|p| p.record == r).collect();
            let mut mean = vec![0f32; 384];
            for p in &mine {
                for (m, v) in mean.iter_mut().zip(&p.embedding) {
                    *m += v / mine.len() as f32;
                }
            }
            let doc: Vec<f32> = docs
                .value(r)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec();
            assert!(cosine(&doc, &mean) > 0.99999, "{mode}: document embedding");
            let norm: f32 = doc.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
}

#[test]
fn one_row_per_passage_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    let input = write_texts(dir.path(), "in.parquet", &texts);
    let nested = run_chunked(dir.path(), &input, "{max_tokens: 32}", "");
    let n = passages(&nested).len();
    let flat = run_chunked(
        dir.path(),
        &input,
        "{max_tokens: 32}",
        "    one_row_per_chunk: true\n",
    );
    assert_eq!(flat.num_rows(), n, "one row per passage");
    let names: Vec<String> = flat
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "chunk_index",
            "chunk_start",
            "chunk_end",
            "chunk_embedding"
        ]
    );
    let ids = strings(&flat, "id");
    assert!(
        !ids.contains(&Some("t5".into())) && !ids.contains(&Some("t6".into())),
        "empty texts have no row"
    );
    // Row by row, the passages of the nested output: id, index, offsets and embedding.
    let want = passages(&nested);
    let col = |name: &str| flat.column_by_name(name).unwrap().clone();
    let (index, start, end) = (col("chunk_index"), col("chunk_start"), col("chunk_end"));
    let vectors = embeddings(&flat, "chunk_embedding");
    assert_eq!(vectors.len(), want.len());
    for (row, w) in want.iter().enumerate() {
        assert_eq!(ids[row].as_deref(), Some(format!("t{}", w.record).as_str()));
        assert_eq!(
            index
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(row),
            w.index
        );
        assert_eq!(
            start
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(row) as usize,
            w.start
        );
        assert_eq!(
            end.as_primitive::<arrow::datatypes::Int64Type>().value(row) as usize,
            w.end
        );
        assert_eq!(
            vectors[row], w.embedding,
            "row {row}: passage {} of t{}",
            w.index, w.record
        );
    }
}

#[test]
fn bad_chunking_settings_stop_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_texts(dir.path(), "in.parquet", &["a text".to_string()]);
    for (chunking, expect) in [
        ("{max_tokens: 4000}", "above the model's limit"),
        ("{max_tokens: 64, overlap: 64}", "overlap"),
        ("{max_tokens: 2}", "special tokens"),
        ("{max_tokens: 64, boundry: token}", "unknown field"),
    ] {
        let out = dir.path().join("x.parquet");
        let p = chunk_pipeline(
            dir.path(),
            "bad",
            &input,
            chunking,
            &format!("  parquet:\n    path: {}\n", out.display()),
        );
        let o = run_pipeline(&p, &[]);
        assert!(!o.status.success(), "{chunking} was accepted");
        assert!(stderr(&o).contains(expect), "{chunking}: {}", stderr(&o));
        assert!(!out.exists(), "{chunking}: output written");
    }
}

/// Passages into pgvector: one row per passage keyed by (id, chunk_index) with the offsets; a
/// re-run with longer passages replaces a record's rows (no stale passages are left).
#[test]
fn passages_go_to_postgres_one_row_each() {
    use common::postgres::{table, url, Db};
    let db = Db::connect(&url());
    let t = table("passages");
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    let input = write_texts(dir.path(), "in.parquet", &texts);
    let mut counts = Vec::new();
    for max_tokens in [24, 64] {
        let nested = run_chunked(
            dir.path(),
            &input,
            &format!("{{max_tokens: {max_tokens}}}"),
            "",
        );
        let expected = passages(&nested);
        let p = chunk_pipeline(
            dir.path(),
            "pg",
            &input,
            &format!("{{max_tokens: {max_tokens}}}"),
            &format!(
                "  postgres:\n    url: {}\n    table: {t}\n    mode: upsert\n    create_table: true\n    index: {{method: hnsw, distance: cosine}}\n",
                url()
            ),
        );
        assert_ok(&run_pipeline(&p, &[]));
        let rows = db.query(&format!(
            "SELECT id, chunk_index, chunk_start, chunk_end, chunk_embedding::text FROM {t} ORDER BY id, chunk_index"
        ));
        assert_eq!(
            rows.len(),
            expected.len(),
            "max_tokens {max_tokens}: one row per passage"
        );
        let mut want: Vec<&Passage> = expected.iter().collect();
        want.sort_by_key(|p| (format!("t{}", p.record), p.index));
        for (r, w) in rows.iter().zip(&want) {
            assert_eq!(r.get::<_, String>(0), format!("t{}", w.record));
            assert_eq!(r.get::<_, i32>(1), w.index);
            assert_eq!(r.get::<_, i64>(2) as usize, w.start);
            assert_eq!(r.get::<_, i64>(3) as usize, w.end);
            let v: Vec<f32> = r
                .get::<_, String>(4)
                .trim_matches(['[', ']'])
                .split(',')
                .map(|x| x.parse().unwrap())
                .collect();
            assert!(cosine(&v, &w.embedding) > 0.99999);
        }
        counts.push(rows.len());
    }
    assert!(
        counts[1] < counts[0],
        "longer passages, fewer rows: {counts:?}"
    );
    let pk = db.count(&format!(
        "SELECT count(*) FROM pg_index i WHERE i.indrelid = '{t}'::regclass AND i.indisprimary AND i.indnkeyatts = 2"
    ));
    assert_eq!(pk, 1, "primary key on (id, chunk_index)");
    db.execute(&format!("DROP TABLE {t}"));
}

/// Kafka JSON output carries the passages as a JSON array of `{index, start, end, embedding}`.
#[test]
fn kafka_json_output_carries_the_passages() {
    use common::kafka::{bootstrap, create_topics, read_topic, unique};
    let servers = bootstrap();
    let out = unique("chunks-out");
    create_topics(&servers, &[(&out, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    let input = write_texts(dir.path(), "in.parquet", &texts);
    let nested = run_chunked(dir.path(), &input, "{max_tokens: 32}", "");
    let expected = passages(&nested);
    let p = chunk_pipeline(
        dir.path(),
        "kafka",
        &input,
        "{max_tokens: 32}",
        &format!("  kafka: {{bootstrap_servers: {servers}, topic: {out}}}\n"),
    );
    assert_ok(&run_pipeline(&p, &[]));
    let got = read_topic(
        &servers,
        &out,
        true,
        texts.len(),
        std::time::Duration::from_secs(20),
    );
    assert_eq!(got.len(), texts.len());
    let mut seen = 0;
    for g in &got {
        let v = g.json();
        let record: usize = v["id"].as_str().unwrap()[1..].parse().unwrap();
        let chunks = v["chunks"].as_array().expect("chunks array");
        let want: Vec<&Passage> = expected.iter().filter(|p| p.record == record).collect();
        assert_eq!(chunks.len(), want.len(), "record {record}");
        for (c, w) in chunks.iter().zip(want) {
            assert_eq!(c["index"].as_i64().unwrap(), w.index as i64);
            assert_eq!(c["start"].as_u64().unwrap() as usize, w.start);
            assert_eq!(c["end"].as_u64().unwrap() as usize, w.end);
            let e: Vec<f32> = c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert!(cosine(&e, &w.embedding) > 0.99999);
            seen += 1;
        }
    }
    assert_eq!(seen, expected.len());
}

/// Against sentence-transformers: the fixture (scripts/make_reference.py) holds the passages of
/// tests/fixtures/chunks/texts.parquet under `{boundary: sentence, max_tokens: 48, overlap: 12}`
/// and sentence-transformers' embedding of each passage's text alone (torch fp32).
#[test]
fn passages_match_sentence_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let fix = root().join("tests/fixtures/chunks");
    let out = run_chunked(
        dir.path(),
        &fix.join("texts.parquet"),
        "{boundary: sentence, max_tokens: 48, overlap: 12}",
        "",
    );
    let got = passages(&out);
    let reference = read_parquet(&fix.join("reference.parquet"));
    let ids = strings(&reference, "id");
    let int = |name: &str| -> Vec<i64> {
        let c = reference.column_by_name(name).unwrap();
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).unwrap();
        c.as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    };
    let (index, start, end) = (int("index"), int("start"), int("end"));
    let st = reference
        .column_by_name("st_fp32")
        .unwrap()
        .as_list::<i32>();
    assert_eq!(got.len(), reference.num_rows(), "the same passages");
    let mut worst = 1.0f64;
    for (i, p) in got.iter().enumerate() {
        assert_eq!(ids[i].as_deref(), Some(format!("t{}", p.record).as_str()));
        assert_eq!(p.index as i64, index[i]);
        assert_eq!((p.start as i64, p.end as i64), (start[i], end[i]));
        let v: Vec<f32> = st
            .value(i)
            .as_primitive::<arrow::datatypes::Float32Type>()
            .values()
            .to_vec();
        worst = worst.min(cosine(&p.embedding, &v));
    }
    assert!(
        worst >= 0.9999,
        "worst cosine to sentence-transformers {worst}"
    );
}

/// A document longer than the tokenization segment (64 KB) is tokenized in pieces: its
/// passages still cover it, round-trip, and equal their text embedded alone.
#[test]
fn a_long_document_is_tokenized_in_segments_with_the_same_passages() {
    let dir = tempfile::tempdir().unwrap();
    let sample = read_parquet(&root().join("pipelines/sample/reviews.parquet"));
    let reviews: Vec<String> = strings(&sample, "text").into_iter().flatten().collect();
    let mut doc = String::new();
    let mut i = 0;
    while doc.len() < 90 * 1024 {
        doc.push_str(&reviews[i % reviews.len()]);
        doc.push_str(if i % 4 == 3 { "\n\n" } else { " " });
        i += 1;
    }
    let input = write_texts(dir.path(), "long.parquet", &[doc.clone()]);
    let out = run_chunked(
        dir.path(),
        &input,
        "{boundary: paragraph, max_tokens: 128}",
        "",
    );
    let ps = passages(&out);
    let cs: Vec<char> = doc.chars().collect();
    let mut covered = vec![false; cs.len()];
    for (k, p) in ps.iter().enumerate() {
        assert_eq!(p.index as usize, k);
        covered[p.start..p.end].iter_mut().for_each(|c| *c = true);
    }
    for (i, c) in cs.iter().enumerate() {
        assert!(
            c.is_whitespace() || covered[i],
            "char {i} {c:?} in no passage"
        );
    }
    // Passages around the first segment boundary (64 KB) and the last one, embedded alone.
    let boundary = doc[..64 * 1024].chars().count();
    let picked: Vec<&Passage> = ps
        .iter()
        .filter(|p| p.end + 600 >= boundary && p.start <= boundary + 600 || p.index == 0)
        .chain(ps.last())
        .collect();
    let pieces: Vec<String> = picked.iter().map(|p| chars(&doc, p.start, p.end)).collect();
    let alone_in = write_texts(dir.path(), "pieces.parquet", &pieces);
    let alone_out = dir.path().join("alone.parquet");
    let p = embed_pipeline(dir.path(), &alone_in, &alone_out, "");
    assert_ok(&run_pipeline(&p, &[]));
    let alone = embeddings(&read_parquet(&alone_out), "embedding");
    assert_eq!(alone.len(), picked.len(), "one embedding per passage");
    for (p, v) in picked.iter().zip(&alone) {
        let c = cosine(&p.embedding, v);
        assert!(
            c >= 0.9999,
            "passage {} ({}..{}): cosine {c}",
            p.index,
            p.start,
            p.end
        );
    }
}
