"""Create tiny random-weight NLI and cross-encoder models (BERT and RoBERTa bodies,
seeded, with the small trained vocabularies of scripts/make_task_fixtures.py), export them to
ONNX, and record what transformers 4.53's zero-shot-classification pipeline and
sentence-transformers' CrossEncoder.predict return for them.

    make reference          (runs this with the reference virtualenv; needs torch, transformers
                             and sentence-transformers)

Writes tests/fixtures/pairs/<name>/{model.onnx,tokenizer.json,config.json,...} and
tests/fixtures/pairs/expected.json. The weights are random: the outputs say nothing about
language, only that bertflow computes what the references compute.
"""

import json
import pathlib
import shutil
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast, pipeline

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_task_fixtures as tf  # noqa: E402

from sentence_transformers import CrossEncoder  # noqa: E402

OUT = tf.ROOT / "tests" / "fixtures" / "pairs"

# Texts for both tasks: the task fixtures' texts (non-ASCII, emoji, CJK, URLs, one character) and
# a long text that the models' 128 tokens cut.
TEXTS = tf.TEXTS + [tf.LONG]

LABELS_50 = [
    "billing", "shipping", "login", "refund", "delivery", "account", "password", "invoice",
    "payment", "subscription", "cancellation", "upgrade", "downgrade", "bug", "crash", "feature",
    "pricing", "discount", "coupon", "warranty", "return", "exchange", "damage", "missing item",
    "late order", "tracking", "address", "phone", "email", "privacy", "security", "fraud",
    "sports", "politics", "technology", "travel", "food", "music", "movies", "health", "science",
    "weather", "finance", "education", "cars", "fashion", "gaming", "art", "history", "nature",
]
assert len(LABELS_50) == 50

ZERO_SHOT_CASES = [
    {"labels": ["positive", "negative"], "multi_label": False},
    {"labels": ["positive", "negative"], "multi_label": True},
    {"labels": LABELS_50[:10], "multi_label": False},
    {"labels": LABELS_50[:10], "multi_label": True},
    {"labels": LABELS_50, "multi_label": False},
    {"labels": ["travel"], "multi_label": False},
    {"labels": LABELS_50[:5], "multi_label": False, "hypothesis_template": "Is it about {}? {{yes}}"},
    {"labels": LABELS_50[10:15], "multi_label": True, "hypothesis_template": "{0}: the text is about {0}."},
]

QUERIES = [
    "Where was the company founded?",
    "a person's name",
    "Café prices in Zürich 🍮",
    " ".join(["a very long query about everything that happened"] * 12),
]

# name -> (architecture, config changes)
MODELS = {
    "bert-nli": ("bert", {"id2label": {0: "contradiction", 1: "neutral", 2: "entailment"}}),
    "roberta-nli": ("roberta", {"id2label": {0: "entailment", 1: "not_entailment"}}),
    "bert-cross": (
        "bert",
        {"id2label": {0: "LABEL_0"}, "sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Sigmoid"}},
    ),
    "roberta-cross": ("roberta", {"id2label": {0: "LABEL_0"}}),
    "bert-cross3": (
        "bert",
        {
            "id2label": {0: "contradiction", 1: "entailment", 2: "neutral"},
            "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"},
        },
    ),
}


def build():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    torch.manual_seed(1)
    toks = {"bert": tf.train_wordpiece(True), "roberta": tf.train_bytelevel()}
    built = {}
    for name, (arch, changes) in MODELS.items():
        tok, specials = toks[arch]
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **specials)
        cfg = tf.make_config(arch, tok.get_vocab_size(), "pairs")
        cfg.id2label = changes["id2label"]
        cfg.label2id = {v: k for k, v in cfg.id2label.items()}
        if "sentence_transformers" in changes:
            cfg.sentence_transformers = changes["sentence_transformers"]
        model = AutoModelForSequenceClassification.from_config(cfg)
        model.eval()
        d = OUT / name
        d.mkdir()
        model.config.save_pretrained(d)
        fast.save_pretrained(d)
        tf.export(model, fast, arch, "sentiment", d)
        for extra in ["vocab.txt", "merges.txt", "vocab.json"]:
            (d / extra).unlink(missing_ok=True)
        built[name] = (model, fast)
    return built


def zero_shot(model, tok):
    p = pipeline("zero-shot-classification", model=model, tokenizer=tok, device=-1)
    cases = []
    for case in ZERO_SHOT_CASES:
        kwargs = {"candidate_labels": case["labels"], "multi_label": case["multi_label"]}
        if "hypothesis_template" in case:
            kwargs["hypothesis_template"] = case["hypothesis_template"]
        outs = [p(t, **kwargs) for t in TEXTS]
        cases.append({**case, "outputs": [{"labels": o["labels"], "scores": o["scores"]} for o in outs]})
    return cases


def cross(model, tok):
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        ce = CrossEncoder(tmp, device="cpu")
        scores = {}
        for q in QUERIES:
            s = ce.predict([(q, t) for t in TEXTS], batch_size=4)
            scores[q] = np.asarray(s).tolist()
        return {"activation": type(ce.activation_fn).__name__, "queries": QUERIES, "scores": scores}


def main():
    built = build()
    expected = {"texts": TEXTS, "zero_shot": {}, "cross_encoder": {}}
    for name, (model, tok) in built.items():
        if name.endswith("-nli"):
            expected["zero_shot"][name] = zero_shot(model, tok)
        else:
            expected["cross_encoder"][name] = cross(model, tok)
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n")
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
