"""Python side of bench/pairs.sh (never run in CI).

    pairs.py models ST_DIR OUT_DIR
        An NLI model (contradiction / neutral / entailment) and a cross-encoder (one logit,
        sigmoid) on the all-MiniLM-L6-v2 body with seeded heads: the size and architecture of
        the MiniLM NLI and ms-marco cross-encoders users run. Saved for transformers and
        sentence-transformers and exported to ONNX (opset 17) into OUT_DIR/{nli,cross}.
    pairs.py baseline CORPUS MODELS OUT.json
        transformers' zero-shot-classification pipeline (10 labels, batch_size=32) and
        sentence-transformers' CrossEncoder.predict (4 queries, batch_size=32) over the corpus's
        non-empty texts, torch fp32, BENCH_THREADS threads; writes seconds and the outputs (to
        check bertflow's against), and those texts as texts.parquet beside OUT.json.
    pairs.py check BASELINE.json ZERO_SHOT.parquet CROSS.parquet
        bertflow's outputs of the same texts against the baseline's: label order and largest
        score difference.
"""

import json
import os
import sys
import time

import pyarrow.parquet as pq

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
LABELS = ["billing", "shipping", "login", "refund", "delivery", "quality", "price", "service",
          "size", "battery"]
QUERIES = ["Is the product broken?", "The delivery was late", "great value for money",
           "Who is the review about?"]


def make_models(st_dir, out):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(st_dir)
    tok.model_max_length = 512
    torch.manual_seed(0)
    nli = AutoModelForSequenceClassification.from_pretrained(
        st_dir, num_labels=3, id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
        label2id={"contradiction": 0, "neutral": 1, "entailment": 2})
    cross = AutoModelForSequenceClassification.from_pretrained(st_dir, num_labels=1)
    cross.config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    for name, model in [("nli", nli), ("cross", cross)]:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        model.eval()
        model.save_pretrained(d)
        tok.save_pretrained(d)
        ids = torch.tensor([[101, 2023, 2003, 102]])
        dyn = {n: {0: "batch", 1: "sequence"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
        dyn["logits"] = {0: "batch"}
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), os.path.join(d, "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["logits"],
            dynamic_axes=dyn, opset_version=17, dynamo=False)
        print(f"{name} -> {d}", file=sys.stderr)


def texts_of(corpus):
    return [t for t in pq.read_table(corpus).column("text").to_pylist() if t and t.strip()]


def baseline(corpus, models, out_json):
    import torch
    torch.set_num_threads(THREADS)
    from transformers import pipeline
    from transformers.utils import logging as hf_logging
    from sentence_transformers import CrossEncoder
    hf_logging.set_verbosity_error()
    import pyarrow as pa
    texts = texts_of(corpus)
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(len(texts))], "text": texts}),
                   os.path.join(os.path.dirname(out_json), "texts.parquet"))
    out = {"records": len(texts), "labels": LABELS, "queries": QUERIES, "threads": THREADS,
           "torch": torch.__version__}
    zs = pipeline("zero-shot-classification", model=os.path.join(models, "nli"), device=-1)
    list(zs(texts[:8], candidate_labels=LABELS, batch_size=32))  # warm-up
    t = time.perf_counter()
    got = list(zs(texts, candidate_labels=LABELS, batch_size=32))
    out["zero_shot_seconds"] = time.perf_counter() - t
    out["zero_shot"] = [{"labels": g["labels"], "scores": g["scores"]} for g in got]
    ce = CrossEncoder(os.path.join(models, "cross"), device="cpu")
    pairs = [(q, x) for x in texts for q in QUERIES]
    ce.predict(pairs[:32], batch_size=32)
    t = time.perf_counter()
    scores = ce.predict(pairs, batch_size=32)
    out["cross_encoder_seconds"] = time.perf_counter() - t
    out["cross_encoder"] = [float(s) for s in scores]
    with open(out_json, "w") as f:
        json.dump(out, f)


def check(baseline_json, zero_shot_parquet, cross_parquet):
    b = json.load(open(baseline_json))
    z = pq.read_table(zero_shot_parquet).column("zero_shot").to_pylist()
    c = pq.read_table(cross_parquet).column("cross_scores").to_pylist()
    same_order, diff = 0, 0.0
    for want, got in zip(b["zero_shot"], z):
        same_order += [g["label"] for g in got] == want["labels"]
        diff = max(diff, max(abs(g["score"] - s) for g, s in zip(got, want["scores"])))
    cdiff = 0.0
    n = len(b["queries"])
    for i, got in enumerate(c):
        for k, g in enumerate(got):
            cdiff = max(cdiff, abs(g["score"] - b["cross_encoder"][i * n + k]))
    print(json.dumps({"zero_shot_records": len(z), "zero_shot_same_order": same_order,
                      "zero_shot_max_score_diff": diff, "cross_encoder_max_score_diff": cdiff}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"models": make_models, "baseline": baseline, "check": check}[cmd](*args)
