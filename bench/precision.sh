#!/usr/bin/env bash
# CPU precision benchmark (part of `make bench`; never run in CI): MiniLM-L6 embeddings and all
# four tasks in one pass, bertflow fp32 (exported graph), fp32 (fused), int8 and, through
# OpenVINO, fp32 and bf16 (on CPUs with AMX-BF16 or AVX512-BF16) against sentence-transformers
# (torch, and its OpenVINO backend at its default precision and with a bf16 hint) and the
# transformers pipelines (torch fp32, batch_size=32, same threads, same texts), in one run.
# Writes .bench/precision/results.json and prints a Markdown table naming the CPU's instructions.
#   bench/precision.sh [CORPUS.parquet]   (default: the bundled sample, 1000 reviews)
# BENCH_EMBED_ONLY=1 runs the embeddings alone (every backend on both sides, no four-task runs and
# no Python pipelines): the way to measure a large corpus such as bench/make_corpus.py's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REFENV="${REFENV:-$HOME/.cache/bertflow/refenv}"
PY="$REFENV/bin/python"
TOOLS_PY="${BERTFLOW_PYTHON:-${BERTFLOW_CACHE:-$HOME/.cache/bertflow}/setup-venv/bin/python}"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
THREADS="${BENCH_THREADS:-2}"
EMBED_ONLY="${BENCH_EMBED_ONLY:-0}"
CORPUS="$(realpath "${1:-pipelines/sample/reviews.parquet}")"
ST_DIR="$(bash bench/st_model.sh)"
OUT=.bench/precision
M="$OUT/models"
mkdir -p "$M" "$OUT/out"
export BERTFLOW_PYTHON="$TOOLS_PY"
# sentence-transformers' OpenVINO backend: optimum-intel exports with transformers >= 4.57, newer
# than the references pin, so it gets an environment of its own.
OVENV="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}/ovbench"
if ! "$OVENV/bin/python" -c 'import optimum.intel, openvino, sentence_transformers, pyarrow' 2>/dev/null; then
  python3 -m venv "$OVENV"
  "$OVENV/bin/pip" install -q "sentence-transformers==5.*" "transformers>=4.57,<4.58" \
    "optimum-intel==2.2.*" "openvino==2026.4.*" torch pyarrow >&2
fi

# sentence-transformers' ONNX backends: optimum-onnx cannot live beside optimum-intel, so a third
# environment.
ONNXENV="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}/onnxbench"
if ! "$ONNXENV/bin/python" -c 'import optimum.onnxruntime, sentence_transformers, pyarrow' 2>/dev/null; then
  python3 -m venv "$ONNXENV"
  "$ONNXENV/bin/pip" install -q --no-cache-dir "sentence-transformers[onnx]==5.*" pyarrow >&2
fi

# Models: MiniLM as exported by the set-up (plain) and a copy that gets the variants; fp32 task
# heads on the same base, exported here, each with its variants.
if [ ! -f "$M/minilm/model.onnx" ]; then
  rm -rf "$M/minilm" "$M/minilm-plain"
  cp -r models/all-MiniLM-L6-v2 "$M/minilm"
  cp -r models/all-MiniLM-L6-v2 "$M/minilm-plain"
  rm -f "$M"/minilm*/model.*.onnx "$M"/minilm*/model.*.json
fi
[ -f "$M/qa/model.onnx" ] || "$PY" bench/precision.py models "$ST_DIR" "$M"
MODELS="minilm sentiment ner qa"
[ "$EMBED_ONLY" = 1 ] && MODELS=minilm
for m in $MODELS; do
  for p in fp32 int8; do
    if [ ! -f "$M/$m/model.$p.json" ]; then
      echo "== models optimize $m --precision $p" >&2
      "$BIN" models optimize "$M/$m" --precision "$p" >&2 || {
        echo "   ($m $p fails the guard with its defaults; kept with --force and reported as such)" >&2
        "$BIN" models optimize "$M/$m" --precision "$p" --force >&2
      }
    fi
  done
done

# OpenVINO: copies of the models, and bf16 variants made and judged for it where the CPU has
# bf16 matrix instructions.
HAS_BF16=$(grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo && echo 1 || echo 0)
if [ ! -d "$M/ov/qa" ]; then
  mkdir -p "$M/ov"
  cp -r "$M/minilm-plain" "$M/ov/minilm"
  for m in sentiment ner qa; do cp -r "$M/$m" "$M/ov/$m"; done
  rm -f "$M"/ov/*/model.*.onnx "$M"/ov/*/model.*.json
fi
if [ "$HAS_BF16" = 1 ]; then
  for m in $MODELS; do
    if [ ! -f "$M/ov/$m/model.bf16.json" ]; then
      echo "== models optimize ov/$m --precision bf16 --execution-provider openvino" >&2
      "$BIN" models optimize "$M/ov/$m" --precision bf16 --execution-provider openvino >&2 || {
        echo "   (ov/$m bf16 fails the guard with its defaults; kept with --force and reported as such)" >&2
        "$BIN" models optimize "$M/ov/$m" --precision bf16 --execution-provider openvino --force >&2
      }
    fi
  done
fi

pipeline() { # file, embed model, precision, with the other three tasks (0/1), provider, task models
  local provider="${5:-cpu}" tm="${6:-$M}"
  {
    printf 'source:\n  parquet:\n    path: %s\n    id_column: id\n' "$CORPUS"
    printf 'tasks:\n  embed:\n    model: %s\n    precision: %s\n' "$2" "$3"
    if [ "$4" = 1 ]; then
      printf '  sentiment:\n    model: %s\n    precision: %s\n' "$tm/sentiment" "$3"
      printf '  ner:\n    model: %s\n    precision: %s\n' "$tm/ner" "$3"
      printf '  qa:\n    model: %s\n    precision: %s\n    questions: ["Who is the review about?"]\n' "$tm/qa" "$3"
    fi
    printf 'runtime:\n  intra_op_threads: %s\n  execution_provider: %s\n' "$THREADS" "$provider"
    printf 'sink:\n  parquet:\n    path: %s\n' "$OUT/out/$(basename "$1" .yaml).parquet"
  } > "$1"
}
run() { # name, embed model, precision, four tasks, provider, task models
  pipeline "$OUT/$1.yaml" "$2" "$3" "$4" "${5:-cpu}" "${6:-$M}"
  echo "== bertflow: $1" >&2
  "$BIN" bench "$OUT/$1.yaml" --json "$OUT/$1.json" >&2
}
run embed_fp32 "$M/minilm-plain" fp32 0
run embed_fp32_fused "$M/minilm" fp32 0
run embed_int8 "$M/minilm" int8 0
if [ "$EMBED_ONLY" != 1 ]; then
  run all_fp32 "$M/minilm" fp32 1
  run all_int8 "$M/minilm" int8 1
fi
run embed_openvino_fp32 "$M/ov/minilm" fp32 0 openvino
if [ "$HAS_BF16" = 1 ]; then
  run embed_openvino_bf16 "$M/ov/minilm" bf16 0 openvino
  [ "$EMBED_ONLY" = 1 ] || run all_openvino_bf16 "$M/ov/minilm" bf16 1 openvino "$M/ov"
fi

echo "== Python: sentence-transformers and transformers pipelines" >&2
BENCH_EMBED_ONLY=$EMBED_ONLY BENCH_THREADS=$THREADS "$PY" bench/precision.py baseline "$CORPUS" "$ST_DIR" "$M" "$OUT/python.json" "$OUT/st_embeddings.parquet"
echo "== Python: sentence-transformers' OpenVINO backend" >&2
rm -rf "$OUT/st_model" && cp -r "$ST_DIR" "$OUT/st_model"   # it writes its export beside the model
BENCH_THREADS=$THREADS "$OVENV/bin/python" bench/precision.py st_backends "$CORPUS" "$OUT/st_model" "$OUT/st_embeddings.parquet" "$OUT/st_backends.json"
echo "== Python: sentence-transformers' ONNX backends (fp32 and dynamic int8)" >&2
rm -rf "$OUT/st_model_onnx" && cp -r "$ST_DIR" "$OUT/st_model_onnx"
BENCH_THREADS=$THREADS "$ONNXENV/bin/python" bench/precision.py st_onnx_backends "$CORPUS" "$OUT/st_model_onnx" "$OUT/st_embeddings.parquet" "$OUT/st_onnx_backends.json"
for r in embed_fp32 embed_fp32_fused embed_int8 embed_openvino_fp32 embed_openvino_bf16; do
  [ -f "$OUT/out/$r.parquet" ] || continue
  "$PY" bench/precision.py score "$OUT/st_embeddings.parquet" "$OUT/out/$r.parquet" > "$OUT/$r.cosine.json"
done

"$PY" - "$OUT" "$M" <<'EOF'
import json, os, sys
out, models = sys.argv[1], sys.argv[2]
j = lambda n: json.load(open(os.path.join(out, n)))
py = j("python.json")
n = py["records"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = set(next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), []))
keep = [f for f in ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"] if f in flags]
st_rps = n / py["st_encode_seconds"]
# The strongest sentence-transformers backend measured in this run is the embeddings' baseline.
py["st_backends"] = {}
for f in ("st_onnx_backends.json", "st_backends.json"):
    if os.path.exists(os.path.join(out, f)):
        py["st_backends"].update(j(f))
backends = {"torch": st_rps, **{k: n / v["seconds"] for k, v in py["st_backends"].items()}}
best_name, best_rps = max(backends.items(), key=lambda kv: kv[1])
four = "four_tasks_batched_seconds" in py
four_rps = n / py["four_tasks_batched_seconds"] if four else 0.0
one_rps = n / py["four_tasks_one_by_one_seconds"] if four else 0.0
rows = []
res = {"cpu": cpu, "flags": keep, "threads": py["threads"], "records": n, "python": py, "bertflow": {}}
for name, label, base, base_name in [
    ("embed_fp32", "embeddings, fp32 (exported graph)", best_rps, f"ST {best_name}"),
    ("embed_fp32_fused", "embeddings, fp32 (fused graph)", best_rps, f"ST {best_name}"),
    ("embed_int8", "embeddings, int8", best_rps, f"ST {best_name}"),
    ("embed_openvino_fp32", "embeddings, OpenVINO fp32", best_rps, f"ST {best_name}"),
    ("embed_openvino_bf16", "embeddings, OpenVINO bf16", best_rps, f"ST {best_name}"),
    ("all_fp32", "four tasks, fp32 (fused graphs)", four_rps, "Python, batched"),
    ("all_int8", "four tasks, int8", four_rps, "Python, batched"),
    ("all_openvino_bf16", "four tasks, OpenVINO bf16", four_rps, "Python, batched"),
]:
    if not os.path.exists(os.path.join(out, name + ".json")):
        continue
    b = j(name + ".json")
    res["bertflow"][name] = b
    cos = ""
    if os.path.exists(os.path.join(out, name + ".cosine.json")):
        c = j(name + ".cosine.json")
        res["bertflow"][name]["cosine_to_st"] = c
        cos = f"{c['min_cosine']:.4f} / {c['mean_cosine']:.5f}"
    after = b["records"] / max(b["seconds"] - b["startup_seconds"], 1e-9)
    rows.append(f"| {label} | {b['records_per_second']:.1f} | {b['records_per_second'] / base:.2f}x {base_name} | {after:.1f} ({after / base:.2f}x) | {b['ratio_to_raw_ort']:.2f} | {cos} | {b['peak_rss_mib']:.0f} |")
guard = {}
for m in ["minilm", "sentiment", "ner", "qa"]:
    if not os.path.exists(os.path.join(models, m, "model.int8.json")):
        continue
    meta = json.load(open(os.path.join(models, m, "model.int8.json")))
    guard[m] = {"quality": meta["quality"], "forced": meta["forced"], "method": meta["method"]}
res["int8_guard"] = guard
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
print(f"CPU: {cpu}; flags: {' '.join(keep)}; {py['threads']} threads; {n} records; torch {py['torch']}\n")
print("| run | records/s | against the baseline | records/s after start-up (against the baseline) | bertflow / raw ORT | cosine to sentence-transformers (min / mean) | peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
print(f"| sentence-transformers `encode` (torch fp32), batch_size=32 | {st_rps:.1f} | {st_rps / best_rps:.2f}x | | | | |")
for k, v in py["st_backends"].items():
    print(f"| sentence-transformers `backend={v['backend']!r}` {v['label']}, batch_size=32 | {n / v['seconds']:.1f} | {n / v['seconds'] / best_rps:.2f}x | | | {v['min_cosine']:.4f} / {v['mean_cosine']:.5f} | |")
if four:
    print(f"| Python: ST encode + 3 pipelines, batch_size=32 | {four_rps:.1f} | 1.00x | | | | {py['peak_rss_mib']:.0f} |")
    print(f"| Python: ST encode + 3 pipelines, record by record | {one_rps:.1f} | {one_rps / four_rps:.2f}x | | | | |")
print("\n".join(rows))
print("\n(Python timings are of `encode` / the pipeline calls alone, after loading and a warm-up; bertflow's records/s are whole runs, start-up included: model loading and, with OpenVINO, compiling the graph, about a second per model.)")
print("\nint8 variants (quality guard against fp32 on the bundled calibration sample):\n")
for m, g in guard.items():
    q = "; ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for qq in g["quality"] for k, v in qq.items() if k not in ("task", "records"))
    print(f"- {m}: {q}{' (forced)' if g['forced'] else ''}; {g['method'].split('then ')[-1]}")
ov = [(m, os.path.join(models, "ov", m, "model.bf16.json")) for m in ["minilm", "sentiment", "ner", "qa"]]
ov = [(m, p) for m, p in ov if os.path.exists(p)]
if ov:
    print("\nOpenVINO bf16 variants (the same guard, through OpenVINO at bf16 against fp32):\n")
    for m, p in ov:
        meta = json.load(open(p))
        q = "; ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for qq in meta["quality"] for k, v in qq.items() if k not in ("task", "records"))
        print(f"- {m}: {q}{' (forced)' if meta['forced'] else ''}")
EOF
