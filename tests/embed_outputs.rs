//! `tasks.embed.dimensions` (Matryoshka truncation) and `tasks.embed.output` (float16, binary,
//! ubinary) against sentence-transformers' `encode(truncate_dim=...)` and `quantize_embeddings`
//! on all-MiniLM-L6-v2 (tests/fixtures/embed/outputs.json, made by scripts/make_reference.py),
//! and how Parquet and Postgres store them.

mod common;

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float16Type, Int8Type, UInt8Type};
use common::postgres::{table, url, Db};
use common::*;
use serde_json::Value;

fn outputs() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/embed/outputs.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// sentence-transformers' full fp32 embeddings of the fixture texts.
fn st_fp32() -> Vec<Vec<f32>> {
    let b = read_parquet(&root().join("tests/fixtures/embed/reference.parquet"));
    let list = b
        .column_by_name("st_fp32")
        .unwrap()
        .as_list::<i32>()
        .clone();
    (0..list.len())
        .map(|i| {
            list.value(i)
                .as_primitive::<arrow::datatypes::Float32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn ints(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Embed the fixture texts with `extra` YAML under `tasks.embed`; the output batch.
fn embed(dir: &Path, extra: &str) -> RecordBatch {
    let out = dir.join(format!("out{}.parquet", extra.len()));
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n  embed:\n    model: {}\n{extra}sink:\n  parquet:\n    path: {}\n",
            root().join("tests/fixtures/embed/texts.parquet").display(),
            model("all-MiniLM-L6-v2").display(),
            out.display()
        ),
    )
    .unwrap();
    assert_ok(&run_pipeline(&p, &[]));
    read_parquet(&out)
}

/// The bytes of a FixedSizeList<UInt8 | Int8> column (int8 as stored, widened).
fn byte_rows(b: &RecordBatch, col: &str) -> Vec<Vec<i64>> {
    let list = b.column_by_name(col).unwrap().as_fixed_size_list().clone();
    (0..list.len())
        .map(|i| {
            let v = list.value(i);
            match v.data_type() {
                DataType::UInt8 => v
                    .as_primitive::<UInt8Type>()
                    .values()
                    .iter()
                    .map(|x| *x as i64)
                    .collect(),
                DataType::Int8 => v
                    .as_primitive::<Int8Type>()
                    .values()
                    .iter()
                    .map(|x| *x as i64)
                    .collect(),
                other => panic!("{other}"),
            }
        })
        .collect()
}

#[test]
fn dimensions_truncate_as_sentence_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    let want = outputs();
    for dim in [128usize, 100] {
        for normalized in [false, true] {
            let extra = format!("    dimensions: {dim}\n    normalize_dimensions: {normalized}\n");
            let got = embeddings(&embed(dir.path(), &extra), "embedding");
            let key = if normalized {
                format!("truncate_{dim}_normalized")
            } else {
                format!("truncate_{dim}")
            };
            let reference = floats(&want[&key]);
            assert_eq!(got.len(), reference.len());
            for (i, (g, w)) in got.iter().zip(&reference).enumerate() {
                assert_eq!(g.len(), dim, "{key} {i}");
                let c = cosine(g, w);
                assert!(c >= 0.9999, "{key} text {i}: cosine {c}");
                // Same length too: cut after the model's normalisation (< 1), or normalised again.
                let (ng, nw) = (norm(g), norm(w));
                assert!((ng - nw).abs() < 1e-4, "{key} text {i}: norm {ng} vs {nw}");
                if !normalized {
                    assert!(
                        nw < 0.999,
                        "{key} text {i}: a cut unit vector is shorter than 1"
                    );
                }
            }
        }
    }
}

#[test]
fn binary_ubinary_and_float16_outputs_match_quantize_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let want = outputs();
    let st = st_fp32();
    // Bits whose value sentence-transformers puts within 1e-4 of zero may fall on either side in
    // ONNX Runtime's arithmetic; every other bit must be equal.
    let check = |got: &[Vec<i64>], want: &[Vec<i64>], dims: usize, offset: i64, what: &str| {
        let mut uncertain = 0;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.len(), dims.div_ceil(8), "{what} {i}");
            for (b, (gb, wb)) in g.iter().zip(w).enumerate() {
                let diff = ((gb + offset) ^ (wb + offset)) as u8;
                for bit in 0..8 {
                    if diff & (0x80 >> bit) != 0 {
                        let d = b * 8 + bit;
                        assert!(
                            d < dims && st[i][d].abs() < 1e-4,
                            "{what} text {i} dimension {d}: bit differs (value {})",
                            st[i].get(d).copied().unwrap_or(f32::NAN)
                        );
                        uncertain += 1;
                    }
                }
            }
        }
        assert!(uncertain <= 2, "{what}: {uncertain} bits differ");
    };
    for (output, offset) in [("ubinary", 0i64), ("binary", 128)] {
        let out = embed(dir.path(), &format!("    output: {output}\n"));
        let field = out.schema().field_with_name("embedding").unwrap().clone();
        assert_eq!(field.metadata()["bertflow.embedding"], output);
        assert_eq!(field.metadata()["bertflow.dimensions"], "384");
        check(
            &byte_rows(&out, "embedding"),
            &ints(&want[output]),
            384,
            offset,
            output,
        );
        let out = embed(
            dir.path(),
            &format!("    output: {output}\n    dimensions: 100\n"),
        );
        check(
            &byte_rows(&out, "embedding"),
            &ints(&want[&format!("{output}_100")]),
            100,
            offset,
            &format!("{output} of 100 dimensions"),
        );
    }
    // float16: the float32 embedding rounded to half precision.
    let full = embeddings(&embed(dir.path(), ""), "embedding");
    let half = embed(dir.path(), "    output: float16\n");
    let list = half
        .column_by_name("embedding")
        .unwrap()
        .as_fixed_size_list()
        .clone();
    for i in 0..list.len() {
        let v = list.value(i);
        let v: Vec<f32> = v
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|x| x.to_f32())
            .collect();
        let exact: Vec<f32> = full[i]
            .iter()
            .map(|x| half::f16::from_f32(*x).to_f32())
            .collect();
        assert_eq!(v, exact, "text {i}");
        assert!(cosine(&v, &st[i]) >= 0.9999, "text {i}");
    }
}

#[test]
fn output_settings_a_model_cannot_take_are_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        ("    dimensions: 1000\n", "tasks.embed.dimensions is 1000"),
        ("    dimensions: 0\n", "tasks.embed.dimensions is 0"),
        (
            "    normalize_dimensions: true\n",
            "needs tasks.embed.dimensions",
        ),
        ("    output: int4\n", "float32"),
        (
            "    output: binary\n    chunking: {max_tokens: 64}\n",
            "tasks.embed.output is binary",
        ),
    ] {
        let o = run_tasks(
            dir.path(),
            &[Some("text")],
            None,
            &format!(
                "  embed:\n    model: {}\n{extra}",
                model("all-MiniLM-L6-v2").display()
            ),
        );
        assert!(!o.status.success(), "{extra}");
        let err = stderr(&o);
        assert!(err.contains(want), "{extra}: {err}");
        assert!(
            !dir.path().join("out.parquet").exists(),
            "{extra}: nothing written"
        );
    }
}

#[test]
fn postgres_stores_bits_and_halfvec_with_their_indexes() {
    let db = Db::connect(&url());
    let dir = tempfile::tempdir().unwrap();
    let input = root().join("tests/fixtures/embed/texts.parquet");
    let run = |extra: &str, sink: &str| {
        let p = dir.path().join("pg.yaml");
        std::fs::write(
            &p,
            format!(
                "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n  embed:\n    model: {}\n{extra}sink:\n{sink}",
                input.display(),
                model("all-MiniLM-L6-v2").display(),
            ),
        )
        .unwrap();
        run_pipeline(&p, &[])
    };
    // ubinary -> bit(384) with a Hamming HNSW index; the bits equal the Parquet output's.
    let reference = embed(dir.path(), "    output: ubinary\n");
    let ids = strings(&reference, "id");
    let bytes = byte_rows(&reference, "embedding");
    let tbl = table("bits");
    let sink = format!(
        "  postgres:\n    url: {}\n    table: {tbl}\n    create_table: true\n    index: {{method: hnsw, distance: hamming}}\n",
        url()
    );
    assert_ok(&run("    output: ubinary\n", &sink));
    let rows = db.query(&format!(
        "SELECT id, embedding::text, format_type(atttypid, atttypmod) FROM \"{tbl}\", pg_attribute WHERE attrelid = '\"{tbl}\"'::regclass AND attname = 'embedding'"
    ));
    assert_eq!(rows.len(), ids.len());
    for r in &rows {
        let id: String = r.get(0);
        let bits: String = r.get(1);
        let ty: String = r.get(2);
        assert_eq!(ty, "bit(384)");
        let i = ids.iter().position(|x| x.as_deref() == Some(&id)).unwrap();
        let want: String = bytes[i].iter().map(|b| format!("{b:08b}")).collect();
        assert_eq!(bits, want, "{id}");
    }
    db.execute("SET enable_seqscan = off");
    let plan: Vec<String> = db
        .query(&format!(
            "EXPLAIN SELECT id FROM \"{tbl}\" ORDER BY embedding <~> (SELECT embedding FROM \"{tbl}\" WHERE id = 't00') LIMIT 3"
        ))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("hnsw")), "{plan:?}");
    db.execute("SET enable_seqscan = on");
    // binary output into the same bit column: the same bits.
    assert_ok(&run("    output: binary\n", &sink));
    let same: i64 = db.count(&format!(
        "SELECT count(*) FROM \"{tbl}\" t WHERE length(t.embedding) = 384"
    ));
    assert_eq!(same as usize, ids.len());
    // float32 output into the bit column, and a cosine index on bits: refused at start-up.
    let o = run("", &sink);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bit columns take tasks.embed.output"),
        "{}",
        stderr(&o)
    );
    let o = run(
        "    output: ubinary\n",
        &sink.replace("distance: hamming", "distance: cosine"),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("use hamming or jaccard"),
        "{}",
        stderr(&o)
    );
    db.execute(&format!("DROP TABLE \"{tbl}\""));

    // float16 -> halfvec(128) with dimensions.
    let tbl = table("half");
    let sink = format!(
        "  postgres:\n    url: {}\n    table: {tbl}\n    create_table: true\n    index: {{method: hnsw, distance: cosine}}\n",
        url()
    );
    assert_ok(&run("    output: float16\n    dimensions: 128\n", &sink));
    let ty: Vec<String> = db
        .query(&format!(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '\"{tbl}\"'::regclass AND attname = 'embedding'"
        ))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ty, vec!["halfvec(128)".to_string()]);
    assert_eq!(
        db.count(&format!("SELECT count(*) FROM \"{tbl}\"")) as usize,
        ids.len()
    );
    db.execute(&format!("DROP TABLE \"{tbl}\""));
}

#[test]
fn int8_and_uint8_use_the_given_ranges_as_quantize_embeddings_does() {
    let dir = tempfile::tempdir().unwrap();
    let want = outputs();
    let st = st_fp32();
    let ranges = dir.path().join("ranges.json");
    std::fs::write(&ranges, want["scalar_ranges"].to_string()).unwrap();
    let min: Vec<f32> = floats(&Value::from(vec![want["scalar_ranges"]["min"].clone()]))[0].clone();
    let max: Vec<f32> = floats(&Value::from(vec![want["scalar_ranges"]["max"].clone()]))[0].clone();
    for (output, offset) in [("uint8", 0i64), ("int8", 128)] {
        let out = embed(
            dir.path(),
            &format!(
                "    output: {output}\n    output_ranges: {}\n",
                ranges.display()
            ),
        );
        let got = byte_rows(&out, "embedding");
        let expect = ints(&want[output]);
        let mut near_edge = 0;
        for (i, (g, w)) in got.iter().zip(&expect).enumerate() {
            assert_eq!(g.len(), 384);
            for d in 0..384 {
                if g[d] == w[d] {
                    continue;
                }
                // A value within 1e-3 of a bucket edge may land on either side in ONNX Runtime's
                // arithmetic (its values differ from torch's by about 1e-7).
                let step = (max[d] - min[d]) / 255.0;
                let pos = (st[i][d] - min[d]) / step;
                assert!(
                    (g[d] - w[d]).abs() == 1 && (pos - pos.round()).abs() < 1e-3,
                    "{output} text {i} dimension {d}: {} vs {} (bucket position {pos})",
                    g[d] + offset,
                    w[d] + offset
                );
                near_edge += 1;
            }
        }
        // Each dimension has its minimum and maximum among these texts (the ranges come from
        // them): those sit exactly on the outer edges; few others may.
        assert!(
            near_edge <= 2 * 384 + 20,
            "{output}: {near_edge} values off by one bucket"
        );
    }
    // `bertflow models ranges` over the same texts gives those ranges (bertflow's arithmetic).
    let texts = read_parquet(&root().join("tests/fixtures/embed/texts.parquet"));
    let lines: Vec<String> = strings(&texts, "text")
        .into_iter()
        .map(|t| serde_json::json!({ "text": t.unwrap() }).to_string())
        .collect();
    let calibration = dir.path().join("texts.jsonl");
    std::fs::write(&calibration, lines.join("\n")).unwrap();
    let made = dir.path().join("made.json");
    let o = bin()
        .args(["models", "ranges"])
        .arg(model("all-MiniLM-L6-v2"))
        .arg("--calibration")
        .arg(&calibration)
        .arg("--output")
        .arg(&made)
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        stderr(&o).contains("384 dimensions from 24 texts"),
        "{}",
        stderr(&o)
    );
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&made).unwrap()).unwrap();
    for key in ["min", "max"] {
        let got: Vec<f64> = m[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = want["scalar_ranges"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), 384);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{key}: {g} vs {w}");
        }
    }
    // Mistakes: no ranges, ranges for a float output, ranges of another size, int8 into Postgres.
    for (extra, err) in [
        (
            "    output: int8\n".to_string(),
            "needs tasks.embed.output_ranges",
        ),
        (
            format!("    output_ranges: {}\n", ranges.display()),
            "applies to output int8 or uint8",
        ),
        (
            format!(
                "    output: uint8\n    dimensions: 128\n    output_ranges: {}\n",
                ranges.display()
            ),
            "holds 384 / 384 values, but the embeddings written have 128",
        ),
    ] {
        let o = run_tasks(
            dir.path(),
            &[Some("text")],
            None,
            &format!(
                "  embed:\n    model: {}\n{extra}",
                model("all-MiniLM-L6-v2").display()
            ),
        );
        assert!(!o.status.success(), "{extra}");
        assert!(stderr(&o).contains(err), "{extra}: {}", stderr(&o));
    }
    let p = dir.path().join("pg.yaml");
    std::fs::write(
        &p,
        format!(
            "source:\n  parquet:\n    path: {}\n    id_column: id\ntasks:\n  embed:\n    model: {}\n    output: int8\n    output_ranges: {}\nsink:\n  postgres:\n    url: {}\n    table: {}\n    create_table: true\n",
            root().join("tests/fixtures/embed/texts.parquet").display(),
            model("all-MiniLM-L6-v2").display(),
            ranges.display(),
            url(),
            table("int8")
        ),
    )
    .unwrap();
    let o = run_pipeline(&p, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pgvector has no int8 vector type"),
        "{}",
        stderr(&o)
    );
}
