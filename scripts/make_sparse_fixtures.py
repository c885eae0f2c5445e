"""Create tiny random-weight masked-language models (BERT and RoBERTa bodies with MLM heads,
seeded, with the small trained vocabularies of scripts/make_task_fixtures.py), save them as
sentence-transformers SparseEncoder folders (MLMTransformer + SpladePooling), export the MLM to
ONNX, and record what SparseEncoder.encode returns for a varied text set.

    make reference          (runs this with the reference virtualenv)

Writes tests/fixtures/sparse/<name>/{model.onnx,tokenizer.json,config.json,modules.json,
1_SpladePooling/config.json,...}, bert-splade-pooled/ (the same graph ending in SPLADE's max
pooling, output `sparse_embedding`) and tests/fixtures/sparse/expected.json (per text the active
dimensions, ascending, and their values; under "passages", the passages bertflow cuts
PASSAGE_TEXTS into with CHUNKING, each with SparseEncoder's vector of the passage's text: run
`cargo build --release` first). The weights are random: the vectors say nothing about
language (a trained SPLADE model, e.g. `bertflow models pull hf:naver/splade-v3`, is needed for
search quality), only that bertflow computes what sentence-transformers computes.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, PreTrainedTokenizerFast

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_task_fixtures as tf  # noqa: E402

from sentence_transformers import SparseEncoder  # noqa: E402
from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling  # noqa: E402

OUT = tf.ROOT / "tests" / "fixtures" / "sparse"

TEXTS = tf.TEXTS + [tf.LONG, "", "🙂🙂🙂", "The capital of France is Paris."]

# Long texts cut into passages (tasks.sparse.chunking; tests/sparse_parity.rs uses the same).
PASSAGE_TEXTS = [
    tf.LONG,
    "The first sentence is short. " + "A second one goes on and on about the weather, the food and the trip. " * 6,
    "Ünïcödé façade, naïve café! 東京は日本の首都です。 Great service 🙂🙂 but the app crashed twice. " * 4,
    "",
]
CHUNKING = "{boundary: sentence, max_tokens: 24, overlap: 6}"

# name -> (architecture, pooling strategy, activation)
MODELS = {
    "bert-splade": ("bert", "max", "relu"),
    "roberta-splade": ("roberta", "sum", "log1p_relu"),
}


def sparse_rows(dense):
    rows = []
    for v in np.asarray(dense, dtype=np.float32):
        idx = np.nonzero(v)[0]
        rows.append({"indices": idx.tolist(), "values": [float(np.format_float_positional(x, unique=True)) for x in v[idx]]})
    return rows


def passages(model_dir, st):
    """The passages bertflow cuts PASSAGE_TEXTS into, each with SparseEncoder's vector of its text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/bertflow/target"))
    binary = target / "release" / "bertflow"
    ids = [f"p{i}" for i in range(len(PASSAGE_TEXTS))]
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        pq.write_table(pa.table({"id": ids, "text": PASSAGE_TEXTS}), d / "in.parquet")
        (d / "p.yaml").write_text(
            f"source:\n  parquet:\n    path: {d / 'in.parquet'}\n    id_column: id\n"
            f"tasks:\n  sparse:\n    model: {model_dir}\n    chunking: {CHUNKING}\n"
            f"sink:\n  parquet:\n    path: {d / 'out.parquet'}\n    one_row_per_chunk: true\n"
        )
        subprocess.run([str(binary), "run", str(d / "p.yaml"), "--no-progress"], check=True, cwd=tf.ROOT)
        rows = pq.read_table(d / "out.parquet").to_pylist()
    text_of = dict(zip(ids, PASSAGE_TEXTS))
    pieces = [text_of[r["id"]][r["chunk_start"]:r["chunk_end"]] for r in rows]
    dense = st.encode(pieces, batch_size=4, convert_to_tensor=True).to_dense().numpy()
    return [
        {"id": r["id"], "index": r["chunk_index"], "start": r["chunk_start"], "end": r["chunk_end"], **v}
        for r, v in zip(rows, sparse_rows(dense))
    ]


def pooled_copy(src, dst):
    """The graph of `src` with SPLADE max pooling (relu, log1p, masked, max over tokens) appended."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(src, dst)
    m = onnx.load(str(dst / "model.onnx"))
    g = m.graph
    logits = g.output[0].name
    g.initializer.extend([
        numpy_helper.from_array(np.array([-1], np.int64), "splade_axis"),
        numpy_helper.from_array(np.array(1.0, np.float32), "splade_one"),
    ])
    g.node.extend([
        helper.make_node("Cast", ["attention_mask"], ["splade_mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["splade_mask_f", "splade_axis"], ["splade_mask"]),
        helper.make_node("Mul", [logits, "splade_mask"], ["splade_masked"]),
        helper.make_node("Relu", ["splade_masked"], ["splade_relu"]),
        helper.make_node("Add", ["splade_relu", "splade_one"], ["splade_plus1"]),
        helper.make_node("Log", ["splade_plus1"], ["splade_log"]),
        helper.make_node("ReduceMax", ["splade_log"], ["sparse_embedding"], axes=[1], keepdims=0),
    ])
    vocab = g.output[0].type.tensor_type.shape.dim[2].dim_value
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("sparse_embedding", TensorProto.FLOAT, ["batch", vocab]))
    onnx.checker.check_model(m)
    onnx.save(m, str(dst / "model.onnx"))


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    torch.manual_seed(2)
    toks = {"bert": tf.train_wordpiece(True), "roberta": tf.train_bytelevel()}
    expected = {"texts": TEXTS, "passage_texts": PASSAGE_TEXTS, "models": {}}
    for name, (arch, strategy, activation) in MODELS.items():
        tok, specials = toks[arch]
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **specials)
        cfg = tf.make_config(arch, tok.get_vocab_size(), "mlm")
        cfg.initializer_range = 0.1
        mlm = AutoModelForMaskedLM.from_config(cfg)
        mlm.eval()
        d = OUT / name
        tmp = OUT / f"{name}-torch"
        mlm.save_pretrained(tmp)
        fast.save_pretrained(tmp)
        st = SparseEncoder(
            modules=[MLMTransformer(str(tmp)), SpladePooling(pooling_strategy=strategy, activation_function=activation)],
            device="cpu",
        )
        st.save(str(d))
        tf.export(mlm, fast, arch, "ner", d)  # [batch, sequence, vocab] logits, as a token head
        for f in ["model.safetensors", "vocab.txt", "merges.txt", "vocab.json", "README.md"]:
            (d / f).unlink(missing_ok=True)
        shutil.rmtree(tmp)
        cases = {}
        for k in [None, 8]:
            dense = st.encode(TEXTS, batch_size=4, max_active_dims=k, convert_to_tensor=True).to_dense().numpy()
            cases["all" if k is None else f"top{k}"] = sparse_rows(dense)
        cases["passages"] = passages(d, st)
        expected["models"][name] = {"pooling": strategy, "activation": activation, "vocab": tok.get_vocab_size(), **cases}
    pooled_copy(OUT / "bert-splade", OUT / "bert-splade-pooled")
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
