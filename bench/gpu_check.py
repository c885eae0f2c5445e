"""The GPU check's Python part (bench/gpu_check.sh runs it): random-weight BERT models, a corpus,
bertflow on CUDA against CPU for all four tasks, batch sweeps against raw ONNX Runtime on the
same batches, sentence-transformers (torch fp32 and fp16) on the same GPU and weights, the
variants a GPU user runs (`bertflow models optimize --pool`, fp32 and fp16, judged on the GPU)
with the provider's batch defaults, I/O binding on and off and one ONNX Runtime CPU thread, and
the failure without cuDNN. Writes results.json and results.md into the output folder.

    python3 bench/gpu_check.py --bin BERTFLOW --out DIR [--provider cuda|cpu] [--quick]
                               [--ld-without-cudnn PATHS]

With `--provider cpu` (and no torch) it is a dry run of everything but the GPU figures.
Needs numpy, onnx, pyarrow; torch + sentence-transformers for the Python baseline.
"""

import argparse
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARCHS = {
    # name: layers, hidden, heads, intermediate
    "minilm": (6, 384, 12, 1536),
    "bert-base": (12, 768, 12, 3072),
}
WORDS = ("the service was quick and friendly but the food arrived cold and the manager in Paris "
         "never answered our emails about the refund from Acme Corporation so we will not return "
         "although the view of the river was lovely and Maria made the evening worth it").split()


def log(*a):
    print("[gpu-check]", *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ models

def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def random_bert(rng, layers, hidden, heads, inter, vocab=30522):
    w = {}
    n = lambda *s: rng.normal(0.0, 0.02, s).astype(np.float32)
    w["embeddings.word_embeddings.weight"] = n(vocab, hidden)
    w["embeddings.position_embeddings.weight"] = n(512, hidden)
    w["embeddings.token_type_embeddings.weight"] = n(2, hidden)
    w["embeddings.LayerNorm.weight"] = np.ones(hidden, np.float32)
    w["embeddings.LayerNorm.bias"] = np.zeros(hidden, np.float32)
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for m, (o, k) in {
            "attention.self.query": (hidden, hidden), "attention.self.key": (hidden, hidden),
            "attention.self.value": (hidden, hidden), "attention.output.dense": (hidden, hidden),
            "intermediate.dense": (inter, hidden), "output.dense": (hidden, inter),
        }.items():
            w[f"{p}.{m}.weight"] = n(o, k)
            w[f"{p}.{m}.bias"] = n(o)
        for m in ["attention.output.LayerNorm", "output.LayerNorm"]:
            w[f"{p}.{m}.weight"] = np.ones(hidden, np.float32)
            w[f"{p}.{m}.bias"] = np.zeros(hidden, np.float32)
    w["pooler.dense.weight"] = n(hidden, hidden)
    w["pooler.dense.bias"] = n(hidden)
    return w


def make_encoder(work, name, rng, python):
    layers, hidden, heads, inter = ARCHS[name]
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    tok = ROOT / ".gpu" / "rest" / "tokenizer"
    if not tok.is_dir():
        tok = ROOT / "models" / "all-MiniLM-L6-v2"
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(tok / f, d / f)
    cfg = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": inter,
        "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
        "vocab_size": 30522, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    }
    (d / "config.json").write_text(json.dumps(cfg, indent=1))
    write_safetensors(d / "model.safetensors", random_bert(rng, layers, hidden, heads, inter))
    subprocess.run([python, str(ROOT / "scripts/bert_to_onnx.py"), str(d), str(d / "model.onnx")],
                   check=True, stdout=subprocess.DEVNULL)
    # sentence-transformers layout: mean pooling, normalised, 256 tokens (as all-MiniLM-L6-v2).
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (d / "1_Pooling").mkdir(exist_ok=True)
    (d / "1_Pooling/config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (d / "2_Normalize").mkdir(exist_ok=True)
    return d


def pooled_copy(d, python):
    """The same encoder with mean pooling and normalisation in the graph (`--pooled`)."""
    p = d.parent / f"{d.name}-pooled"
    shutil.copytree(d, p, dirs_exist_ok=True)
    subprocess.run([python, str(ROOT / "scripts/bert_to_onnx.py"), str(d), str(p / "model.onnx"), "--pooled"],
                   check=True, stdout=subprocess.DEVNULL)
    return p


def add_head(encoder_dir, out_dir, kind, rng):
    """The encoder with a task head: sentiment (pooler + 2 classes), ner (9 BIO labels per
    token) or qa (start/end logits)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(encoder_dir / f, out_dir / f)
    m = onnx.load(str(encoder_dir / "model.onnx"))
    g = m.graph
    hidden = json.loads((encoder_dir / "config.json").read_text())["hidden_size"]
    init = lambda name, arr: g.initializer.append(numpy_helper.from_array(arr.astype(np.float32), name))
    nd = lambda op, i, o, **a: g.node.append(helper.make_node(op, i, o, **a))
    del g.output[:]
    cfg = json.loads((encoder_dir / "config.json").read_text())
    if kind == "sentiment":
        labels = ["NEGATIVE", "POSITIVE"]
        init("head_idx", np.array(0, np.int64).astype(np.float32))
        g.initializer.pop()
        g.initializer.append(numpy_helper.from_array(np.array(0, np.int64), "head_idx"))
        init("pool_w", rng.normal(0, 0.5, (hidden, hidden)))
        init("pool_b", rng.normal(0, 0.1, (hidden,)))
        init("cls_w", rng.normal(0, 0.5, (hidden, 2)))
        init("cls_b", rng.normal(0, 0.1, (2,)))
        nd("Gather", ["last_hidden_state", "head_idx"], ["cls"], axis=1)
        nd("MatMul", ["cls", "pool_w"], ["p0"])
        nd("Add", ["p0", "pool_b"], ["p1"])
        nd("Tanh", ["p1"], ["p2"])
        nd("MatMul", ["p2", "cls_w"], ["l0"])
        nd("Add", ["l0", "cls_b"], ["logits"])
        g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]))
        cfg["architectures"] = ["BertForSequenceClassification"]
    elif kind == "ner":
        labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
        init("tok_w", rng.normal(0, 0.5, (hidden, 9)))
        init("tok_b", rng.normal(0, 0.1, (9,)))
        nd("MatMul", ["last_hidden_state", "tok_w"], ["t0"])
        nd("Add", ["t0", "tok_b"], ["logits"])
        g.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", 9]))
        cfg["architectures"] = ["BertForTokenClassification"]
    else:
        labels = None
        init("qa_w", rng.normal(0, 0.5, (hidden, 2)))
        init("qa_b", rng.normal(0, 0.1, (2,)))
        g.initializer.append(numpy_helper.from_array(np.array([1, 1], np.int64), "qa_split"))
        g.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "qa_axis"))
        nd("MatMul", ["last_hidden_state", "qa_w"], ["q0"])
        nd("Add", ["q0", "qa_b"], ["q1"])
        nd("Split", ["q1", "qa_split"], ["s0", "e0"], axis=-1)
        nd("Squeeze", ["s0", "qa_axis"], ["start_logits"])
        nd("Squeeze", ["e0", "qa_axis"], ["end_logits"])
        for o in ["start_logits", "end_logits"]:
            g.output.append(helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", "sequence"]))
        cfg["architectures"] = ["BertForQuestionAnswering"]
    if labels:
        cfg["id2label"] = {str(i): l for i, l in enumerate(labels)}
        cfg["label2id"] = {l: i for i, l in enumerate(labels)}
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    onnx.save(m, str(out_dir / "model.onnx"))
    return out_dir


# ------------------------------------------------------------------ corpus and runs

def corpus(path, n, rng, min_words=4, max_words=180):
    texts = []
    for i in range(n):
        k = int(rng.integers(min_words, max_words))
        texts.append(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(k)))
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": texts,
                             "question": ["Who answered?"] * n}), path)
    return texts


def pipeline(path, inp, out, tasks, provider, batching="", runtime=""):
    path.write_text(f"""source:
  parquet: {{path: {inp}, id_column: id}}
tasks:
{tasks}batching: {{window_records: 4096{batching}}}
runtime: {{execution_provider: {provider}{runtime}}}
sink:
  parquet: {{path: {out}}}
""")
    return path


def run(cmd, env=None, check=True):
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        log("FAILED:", " ".join(map(str, cmd)), "\n", r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(1)
    return r, time.time() - t


def bench(bin_, pipe, out_json, extra=()):
    run([bin_, "bench", str(pipe), "--json", str(out_json), *extra])
    return json.loads(pathlib.Path(out_json).read_text())


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((a * b).sum(-1).min() / 1.0) if False else (a * b).sum(-1) / (
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)


def compare_tasks(ref, got):
    """CPU output against CUDA output: cosine of embeddings, equality of labels and spans."""
    a, b = pq.read_table(ref).to_pylist(), pq.read_table(got).to_pylist()
    assert [r["id"] for r in a] == [r["id"] for r in b], "record order differs"
    emb = cos([r["embedding"] for r in a], [r["embedding"] for r in b])
    labels = sum(x["sentiment_label"] == y["sentiment_label"] for x, y in zip(a, b)) / len(a)
    span = lambda r, col, keys: [tuple(e[k] for k in keys) for e in (r[col] or [])]
    ents = sum(span(x, "entities", ["entity_group", "start", "end"]) ==
               span(y, "entities", ["entity_group", "start", "end"]) for x, y in zip(a, b)) / len(a)
    ans = sum(span(x, "answers", ["start", "end"]) == span(y, "answers", ["start", "end"])
              for x, y in zip(a, b)) / len(a)
    score = max(abs((x["sentiment_score"] or 0) - (y["sentiment_score"] or 0)) for x, y in zip(a, b))
    return {"records": len(a), "embedding_min_cosine": float(emb.min()),
            "sentiment_label_agreement": labels, "sentiment_max_score_diff": score,
            "ner_spans_equal": ents, "qa_spans_equal": ans}


def torch_baseline(model_dir, texts, batch, device, out_parquet=None):
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except Exception as e:  # no torch here: dry run
        return {"skipped": f"no sentence-transformers: {e}"}
    res = {}
    m = SentenceTransformer(str(model_dir), device=device)
    m.encode(texts[:256], batch_size=batch)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    e32 = m.encode(texts, batch_size=batch, convert_to_numpy=True)
    if device == "cuda":
        torch.cuda.synchronize()
    res["fp32_records_per_s"] = len(texts) / (time.time() - t)
    if device == "cuda":
        m.half()
        m.encode(texts[:256], batch_size=batch)
        torch.cuda.synchronize()
        t = time.time()
        e16 = m.encode(texts, batch_size=batch, convert_to_numpy=True)
        torch.cuda.synchronize()
        res["fp16_records_per_s"] = len(texts) / (time.time() - t)
        res["fp16_vs_fp32_min_cosine"] = float(cos(e16.astype(np.float32), e32).min())
    res["embeddings"] = e32
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--provider", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ld-without-cudnn", default=None)
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    work = pathlib.Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu-check"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    R = {"provider": a.provider, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.mkdir(parents=True, exist_ok=True)

    def save():
        # After every step: a run cut short still leaves what it measured.
        (out / "results.json").write_text(json.dumps(R, indent=1, default=float))
    try:
        R["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                   "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        R["gpu"] = "none"

    log("building random-weight models")
    enc = {k: make_encoder(work / "models", k, rng, sys.executable) for k in ARCHS}
    heads = {k: add_head(enc["minilm"], work / "models" / f"minilm-{k}", k, rng)
             for k in ["sentiment", "ner", "qa"]}
    n_small = 200 if a.quick else 1000
    n_big = 150 if a.quick else 10000
    small = work / "small.parquet"
    corpus(small, n_small, rng)
    big = work / "big.parquet"
    texts = corpus(big, n_big, rng, 4, 200)

    # 1. All four tasks: CPU against the provider, same models and records.
    log("four tasks: cpu against", a.provider)
    tasks = (f"  embed: {{model: {enc['minilm']}}}\n  sentiment: {{model: {heads['sentiment']}}}\n"
             f"  ner: {{model: {heads['ner']}, aggregation: simple}}\n"
             f"  qa: {{model: {heads['qa']}, question_column: question}}\n")
    outs = {}
    for p in ["cpu", a.provider]:
        o = work / f"four-{p}.parquet"
        run([a.bin, "run", str(pipeline(work / f"four-{p}.yaml", small, o, tasks, p)), "--no-progress"])
        outs[p] = o
    R["four_tasks_cpu_vs_" + a.provider] = compare_tasks(outs["cpu"], outs[a.provider])
    log(R["four_tasks_cpu_vs_" + a.provider])
    save()

    # 2. Embeddings: batch sweep, bertflow against raw ONNX Runtime on the same batches, and
    #    sentence-transformers on the same device and weights.
    # The CUDA defaults (128 / 32,768, the H200 sweep's best) and their neighbours.
    sweep = [(64, 16384), (128, 32768), (256, 65536)]
    if a.quick:
        sweep = sweep[:2]
    R["embed"] = {}
    baselines = {}
    device = "cuda" if a.provider == "cuda" else "cpu"
    for name, d in enc.items():
        rows = []
        for bs, tok in sweep:
            p = pipeline(work / f"e-{name}-{bs}.yaml", big, work / f"e-{name}.parquet",
                         f"  embed: {{model: {d}}}\n", a.provider,
                         f", max_batch_size: {bs}, max_batch_tokens: {tok}")
            r = bench(a.bin, p, work / f"e-{name}-{bs}.json")
            rows.append({"max_batch_size": bs, "max_batch_tokens": tok,
                         "records_per_s": r["records_per_second"],
                         "raw_ort_records_per_s": r["records"] / r["raw_ort_seconds"],
                         "ratio_to_raw_ort": r["ratio_to_raw_ort"], "provider": r["provider"],
                         "ratio_after_startup": r.get("ratio_to_raw_ort_after_startup"),
                         "startup_s": r.get("startup_seconds"),
                         "padding_ratio": r["padding_ratio"]})
            log(name, rows[-1])
            R["embed"][name] = {"sweep": rows}
            save()
        best = max(rows, key=lambda x: x["records_per_s"])
        st = torch_baseline(d, texts, 128, device)
        emb = st.pop("embeddings", None)
        entry = {"sweep": rows, "best": best, "sentence_transformers": st}
        if emb is not None:
            got = pq.read_table(work / f"e-{name}.parquet").to_pylist()
            entry["min_cosine_to_torch_fp32"] = float(cos([r["embedding"] for r in got], emb).min())
            for k in ["fp32", "fp16"]:
                if f"{k}_records_per_s" in st:
                    entry[f"speedup_vs_st_{k}"] = best["records_per_s"] / st[f"{k}_records_per_s"]
        R["embed"][name] = entry
        log(name, {k: v for k, v in entry.items() if k != "sweep"})
        save()
        baselines[name] = (st, emb)

    # 3. Without cuDNN the CUDA provider must fail loudly (no silent CPU run).
    if a.ld_without_cudnn is not None:
        env = dict(os.environ, LD_LIBRARY_PATH=a.ld_without_cudnn)
        p = pipeline(work / "nocudnn.yaml", small, work / "nocudnn.parquet",
                     f"  embed: {{model: {enc['minilm']}}}\n", "cuda")
        r, _ = run([a.bin, "run", str(p), "--no-progress"], env=env, check=False)
        R["without_cudnn"] = {"exit": r.returncode, "message": (r.stderr.strip().splitlines() or [""])[-1][:600]}
        log(R["without_cudnn"])
        save()

    # 4. What a GPU user runs (last: a run cut short by the time limit keeps what came before):
    #     the fused graph ending in pooling + normalisation (no token
    #     vectors copied back), fp32 and fp16, made and judged on this provider by
    #     `bertflow models optimize`; the provider's batch defaults (no batching keys); I/O
    #     binding on (the default on CUDA) and off; post-processing overlapped with the next
    #     model call (the default on CUDA) and not; ONNX Runtime's CPU threads cut to one; fp32
    #     with TF32 products (`runtime.cuda_tf32`).
    R["variants"] = {}
    settings = [("defaults", ""), ("io_binding off", ", io_binding: off"),
                ("overlap_postprocess off", ", overlap_postprocess: off"),
                ("1 ORT CPU thread, no spinning", ", intra_op_threads: 1, intra_op_spinning: false")]
    if a.quick:
        settings = settings[:2]
    for name, d in enc.items():
        if a.quick and name != "minilm":
            continue  # a CPU dry run proves the steps on the small model
        st, emb = baselines[name]
        for prec in ["fp32", "fp16"]:
            key = f"{name} {prec} pooled"
            r, secs = run([a.bin, "models", "optimize", str(d), "--precision", prec, "--pool",
                           "--execution-provider", a.provider, "--python", sys.executable], check=False)
            if r.returncode != 0:
                R["variants"][key] = {"optimize_failed": (r.stderr.strip().splitlines() or [""])[-1][:600]}
                log(key, R["variants"][key])
                save()
                continue
            meta = json.loads((d / f"model.{prec}.json").read_text())
            entry = {"guard": meta["quality"][0], "measured_on": meta["measured_on"],
                     "optimize_seconds": secs, "runs": []}
            runs = settings + ([("TF32 products", ", cuda_tf32: true")]
                               if prec == "fp32" and not a.quick else [])
            for label, rt in runs:
                o = work / f"v-{name}-{prec}.parquet"
                p = pipeline(work / f"v-{name}-{prec}.yaml", big, o,
                             f"  embed: {{model: {d}, precision: {prec}}}\n", a.provider, runtime=rt)
                b = bench(a.bin, p, work / f"v-{name}-{prec}.json")
                row = {"setting": label, "records_per_s": b["records_per_second"],
                       "raw_ort_records_per_s": b["records"] / b["raw_ort_seconds"],
                       "ratio_to_raw_ort": b["ratio_to_raw_ort"], "provider": b["provider"],
                       "ratio_after_startup": b.get("ratio_to_raw_ort_after_startup"),
                       "startup_s": b.get("startup_seconds"),
                       "tokenize_s": b["tokenize_seconds"], "model_s": b["model_seconds"],
                       "postprocess_s": b["postprocess_seconds"], "write_s": b["write_seconds"],
                       "seconds": b["seconds"]}
                for k in ["fp32", "fp16"]:
                    if f"{k}_records_per_s" in st:
                        row[f"speedup_vs_st_{k}"] = row["records_per_s"] / st[f"{k}_records_per_s"]
                if emb is not None:
                    got = pq.read_table(o).to_pylist()
                    row["min_cosine_to_torch_fp32"] = float(cos([x["embedding"] for x in got], emb).min())
                entry["runs"].append(row)
                log(key, row)
                R["variants"][key] = entry
                save()

    save()
    (out / "results.md").write_text(report(R))
    print(report(R))


def report(R):
    p = R["provider"]
    L = [f"GPU: {R['gpu']}; provider `{p}`; {R['started']}.", ""]
    f = R["four_tasks_cpu_vs_" + p]
    L += [f"All four tasks, {f['records']} records, CPU against `{p}`: embedding min cosine "
          f"{f['embedding_min_cosine']:.6f}; sentiment labels equal {f['sentiment_label_agreement']:.1%} "
          f"(max score diff {f['sentiment_max_score_diff']:.2e}); NER spans equal {f['ner_spans_equal']:.1%}; "
          f"QA spans equal {f['qa_spans_equal']:.1%}.", ""]
    na = lambda v, fmt: fmt.format(v) if v is not None else "-"
    L += ["| model | max batch / tokens | bertflow rec/s | raw ORT rec/s (same batches) | bertflow / raw | after start-up (s) |",
          "|---|---|---|---|---|---|"]
    for name, e in R["embed"].items():
        for r in e["sweep"]:
            L.append(f"| {name} | {r['max_batch_size']} / {r['max_batch_tokens']} | {r['records_per_s']:.0f} | "
                     f"{r['raw_ort_records_per_s']:.0f} | {r['ratio_to_raw_ort']:.2f} | "
                     f"{na(r.get('ratio_after_startup'), '{:.2f}')} ({na(r.get('startup_s'), '{:.1f}')}) |")
    L += ["", "| model | bertflow best rec/s | sentence-transformers fp32 | fp16 | vs fp32 | vs fp16 | cosine to torch fp32 | torch fp16 vs fp32 cosine |",
          "|---|---|---|---|---|---|---|---|"]
    for name, e in R["embed"].items():
        st = e["sentence_transformers"]
        g = lambda k, fmt="{:.0f}": fmt.format(st[k]) if k in st else "-"
        L.append(f"| {name} | {e['best']['records_per_s']:.0f} | {g('fp32_records_per_s')} | {g('fp16_records_per_s')} | "
                 f"{e.get('speedup_vs_st_fp32', float('nan')):.2f}x | {e.get('speedup_vs_st_fp16', float('nan')):.2f}x | "
                 f"{e.get('min_cosine_to_torch_fp32', float('nan')):.6f} | {g('fp16_vs_fp32_min_cosine', '{:.5f}')} |")
    if R.get("variants"):
        L += ["", "Variants made by `bertflow models optimize --precision P --pool` (pooling and normalisation in the graph), "
              "the provider's batch defaults:", "",
              "| model | setting | rec/s | raw ORT rec/s | bertflow / raw | after start-up (s) | vs ST fp32 | vs ST fp16 | tokenize / model / post / write s | guard min cosine | cosine to torch fp32 |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, v in R["variants"].items():
            if "optimize_failed" in v:
                L.append(f"| {key} | variant not made: {v['optimize_failed']} | | | | | | | | | |")
                continue
            for r in v["runs"]:
                L.append(f"| {key} | {r['setting']} | {r['records_per_s']:.0f} | {r['raw_ort_records_per_s']:.0f} | "
                         f"{r['ratio_to_raw_ort']:.2f} | {na(r.get('ratio_after_startup'), '{:.2f}')} "
                         f"({na(r.get('startup_s'), '{:.1f}')}) | {r.get('speedup_vs_st_fp32', float('nan')):.2f}x | "
                         f"{r.get('speedup_vs_st_fp16', float('nan')):.2f}x | {r['tokenize_s']:.2f} / {r['model_s']:.2f} / "
                         f"{r['postprocess_s']:.2f} / {r['write_s']:.2f} | {v['guard'].get('min_cosine', float('nan')):.5f} | "
                         f"{r.get('min_cosine_to_torch_fp32', float('nan')):.6f} |")
    if "without_cudnn" in R:
        w = R["without_cudnn"]
        L += ["", f"Without cuDNN on the library path: exit {w['exit']}: `{w['message']}`"]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
