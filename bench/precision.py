"""Python side of bench/precision.sh (never run in CI).

    precision.py models ST_DIR OUT_DIR
        fp32 MiniLM-L6 models with sentiment (2 labels), NER (9 BIO labels) and QA heads on the
        all-MiniLM-L6-v2 base (heads seeded, the stand-ins' architecture), saved for transformers
        and exported to ONNX (opset 17) into OUT_DIR/{sentiment,ner,qa}.
    precision.py baseline CORPUS ST_DIR TASK_MODELS OUT.json EMBEDDINGS.parquet
        sentence-transformers `encode` (batch_size=32) and the text-classification,
        token-classification (aggregation simple) and question-answering pipelines one after
        another with batch_size=32, then record by record; torch fp32, BENCH_THREADS threads.
        Also writes the sentence-transformers embeddings (to score bertflow's against).
"""

import json
import os
import resource
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
QUESTION = "Who is the review about?"
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def heads(st_dir):
    import torch
    from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                              AutoModelForTokenClassification)
    torch.manual_seed(0)
    return {
        "sentiment": AutoModelForSequenceClassification.from_pretrained(
            st_dir, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
            label2id={"NEGATIVE": 0, "POSITIVE": 1}),
        "ner": AutoModelForTokenClassification.from_pretrained(
            st_dir, num_labels=9, id2label=dict(enumerate(NER_LABELS)),
            label2id={l: i for i, l in enumerate(NER_LABELS)}),
        "qa": AutoModelForQuestionAnswering.from_pretrained(st_dir),
    }


def make_models(st_dir, out):
    import torch
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(st_dir)
    tok.model_max_length = 512
    for task, model in heads(st_dir).items():
        d = os.path.join(out, task)
        os.makedirs(d, exist_ok=True)
        model.eval()
        model.save_pretrained(d)
        tok.save_pretrained(d)
        ids = torch.tensor([[101, 2023, 2003, 102]])
        names = ["logits"] if task != "qa" else ["start_logits", "end_logits"]
        dyn = {n: {0: "batch", 1: "sequence"} for n in ["input_ids", "attention_mask", "token_type_ids"]}
        for n in names:
            dyn[n] = {0: "batch"} if task == "sentiment" else {0: "batch", 1: "sequence"}
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), os.path.join(d, "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=names,
            dynamic_axes=dyn, opset_version=17, dynamo=False)
        print(f"{task} -> {d}", file=sys.stderr)


def baseline(corpus, st_dir, task_models, out_json, emb_path):
    import torch
    torch.set_num_threads(THREADS)
    texts = pq.read_table(corpus).column("text").to_pylist()
    out = {"records": len(texts), "threads": THREADS, "torch": torch.__version__}

    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(st_dir, device="cpu")
    st.encode(texts[:64])
    t = time.perf_counter()
    emb = st.encode(texts, batch_size=32)
    out["st_encode_seconds"] = time.perf_counter() - t
    pq.write_table(pa.table({"embedding": pa.array([list(map(float, v)) for v in emb],
                                                    pa.list_(pa.float32()))}), emb_path)
    if os.environ.get("BENCH_EMBED_ONLY") == "1":  # embeddings alone: no pipelines
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(out_json, "w") as f:
            json.dump(out, f, indent=1)
        return

    from transformers import AutoTokenizer, pipeline
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    p = {}
    for task, kind in [("sentiment", "text-classification"), ("ner", "token-classification"),
                       ("qa", "question-answering")]:
        d = os.path.join(task_models, task)
        tok = AutoTokenizer.from_pretrained(d)
        tok.model_max_length = 512
        kw = {"aggregation_strategy": "simple"} if task == "ner" else {}
        p[task] = pipeline(kind, model=d, tokenizer=tok, device=-1, **kw)
    nonempty = [x for x in texts if x.strip()]
    qs = [{"question": QUESTION, "context": x} for x in nonempty]

    def batched():
        list(p["sentiment"](texts, batch_size=32, truncation=True))
        list(p["ner"](texts, batch_size=32))
        p["qa"](qs, batch_size=32)

    def one_by_one():
        for x in texts:
            p["sentiment"](x, truncation=True)
        for x in texts:
            p["ner"](x)
        for q in qs:
            p["qa"](**q)

    list(p["sentiment"](texts[:32], batch_size=32, truncation=True))  # warm-up
    t = time.perf_counter()
    st.encode(texts, batch_size=32)
    batched()
    out["four_tasks_batched_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    st.encode(texts, batch_size=32)
    one_by_one()
    out["four_tasks_one_by_one_seconds"] = time.perf_counter() - t
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(out_json, "w") as f:
        json.dump(out, f, indent=1)


def _texts_and_reference(corpus, emb_path):
    texts = pq.read_table(corpus).column("text").to_pylist()
    ref = np.array(pq.read_table(emb_path).column("embedding").to_pylist(), dtype=np.float64)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    return texts, ref


def _timed_backend(st, texts, ref, backend, label):
    """One warm-up call, then the whole corpus in batches of 32: seconds and cosine to `ref`."""
    st.encode(texts[:64])
    t = time.perf_counter()
    got = np.asarray(st.encode(texts, batch_size=32), dtype=np.float64)
    secs = time.perf_counter() - t
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cos = (got * ref).sum(1)
    return {"backend": backend, "label": label, "seconds": secs,
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def st_backends(corpus, st_dir, emb_path, out_json):
    """sentence-transformers' OpenVINO backend (optimum-intel, which needs a newer transformers
    than the references pin, so it runs from its own environment): at its default precision (bf16
    on AMX, f32 elsewhere) and with a bf16 hint; time and cosine to the torch embeddings."""
    from sentence_transformers import SentenceTransformer
    texts, ref = _texts_and_reference(corpus, emb_path)
    out = {}
    for key, label, cfg in [
        ("openvino", "(its default precision)", {"INFERENCE_NUM_THREADS": THREADS}),
        ("openvino_bf16", "(INFERENCE_PRECISION_HINT bf16)",
         {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": THREADS}),
    ]:
        st = SentenceTransformer(st_dir, device="cpu", backend="openvino",
                                 model_kwargs={"ov_config": cfg})
        out[key] = _timed_backend(st, texts, ref, "openvino", label)
    with open(out_json, "w") as f:
        json.dump(out, f, indent=1)


def st_onnx_backends(corpus, st_dir, emb_path, out_json):
    """sentence-transformers' ONNX backends (optimum-onnx, which cannot share an environment with
    optimum-intel, so it runs from a third one): fp32 (`backend="onnx"`) and its dynamically
    quantized int8 export for this CPU's instructions (avx512_vnni, else avx512, else avx2);
    time and cosine to the torch embeddings."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    texts, ref = _texts_and_reference(corpus, emb_path)
    flags = set(next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), []))
    config = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"
    st = SentenceTransformer(st_dir, device="cpu", backend="onnx")
    export_dynamic_quantized_onnx_model(st, config, st_dir)
    out = {}
    for key, label, kwargs in [
        ("onnx", "(fp32)", {}),
        ("onnx_int8", f"(dynamic int8, {config})", {"file_name": f"onnx/model_qint8_{config}.onnx"}),
    ]:
        st = SentenceTransformer(st_dir, device="cpu", backend="onnx", model_kwargs=kwargs)
        out[key] = _timed_backend(st, texts, ref, "onnx", label)
    with open(out_json, "w") as f:
        json.dump(out, f, indent=1)


def score(emb_path, bertflow_parquet):
    st = np.array(pq.read_table(emb_path).column("embedding").to_pylist(), dtype=np.float64)
    got = np.array(pq.read_table(bertflow_parquet).column("embedding").to_pylist(), dtype=np.float64)
    st /= np.linalg.norm(st, axis=1, keepdims=True)
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cos = (st * got).sum(1)
    print(json.dumps({"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"models": make_models, "baseline": baseline, "st_backends": st_backends,
     "st_onnx_backends": st_onnx_backends, "score": score}[cmd](*args)
