"""Python baselines on the benchmark corpus, same machine, same thread count:

  st_encode      sentence-transformers `encode` (torch) with all-MiniLM-L6-v2
  hf_pipelines   transformers pipelines run one after another (torch): text-classification,
                 token-classification (aggregation simple) and question-answering, with
                 MiniLM-L6 models of the stand-ins' exact architecture (heads on the same base)
  ort_pipelines  the same three tasks record by record through Python onnxruntime with the
                 stand-in ONNX models and the tokenizers library (softmax/argmax post-processing)

Writes one JSON object to stdout. Only for `make bench`; never run in CI.
"""

import json
import os
import sys
import time
import resource

import numpy as np
import pyarrow.parquet as pq

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
QUESTION = "Who is the review about?"


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(corpus, st_dir, models):
    import torch

    torch.set_num_threads(THREADS)
    texts = pq.read_table(corpus).column("text").to_pylist()
    out = {"records": len(texts), "threads": THREADS}

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(st_dir, device="cpu")
    st.encode(texts[:64])
    t = time.perf_counter()
    st.encode(texts, batch_size=32)
    out["st_encode_seconds"] = time.perf_counter() - t

    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        pipeline,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(st_dir)
    tok.model_max_length = 512
    cls = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(st_dir, num_labels=2), tokenizer=tok, device=-1)
    ner = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(st_dir, num_labels=9), tokenizer=tok, device=-1, aggregation_strategy="simple")
    qa = pipeline("question-answering", model=AutoModelForQuestionAnswering.from_pretrained(st_dir), tokenizer=tok, device=-1)
    per = {}
    t0 = time.perf_counter()
    t = time.perf_counter()
    for x in texts:
        cls(x, truncation=True)
    per["sentiment"] = time.perf_counter() - t
    t = time.perf_counter()
    for x in texts:
        ner(x)
    per["ner"] = time.perf_counter() - t
    t = time.perf_counter()
    for x in texts:
        if x.strip():
            qa(question=QUESTION, context=x)
    per["qa"] = time.perf_counter() - t
    out["hf_pipelines_seconds"] = time.perf_counter() - t0
    out["hf_pipelines_per_task"] = per

    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    per = {}
    t0 = time.perf_counter()
    for task in ["sentiment", "ner", "qa"]:
        d = os.path.join(models, task)
        sess = ort.InferenceSession(os.path.join(d, "model.onnx"), so, providers=["CPUExecutionProvider"])
        tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        tk.no_padding()
        tk.enable_truncation(384 if task == "qa" else 512)
        t = time.perf_counter()
        for x in texts:
            if task == "qa":
                if not x.strip():
                    continue
                e = tk.encode(QUESTION, x)
            else:
                e = tk.encode(x)
            feeds = {
                "input_ids": np.array([e.ids], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids], dtype=np.int64),
            }
            logits = sess.run(None, feeds)
            z = logits[0][0]
            p = np.exp(z - z.max(-1, keepdims=True))
            (p / p.sum(-1, keepdims=True)).argmax(-1)
        per[task] = time.perf_counter() - t
    out["ort_pipelines_seconds"] = time.perf_counter() - t0
    out["ort_pipelines_per_task"] = per
    out["peak_rss_mib"] = rss_mib()
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
