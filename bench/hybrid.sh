#!/usr/bin/env bash
# Hybrid-vector benchmark (part of `make bench`; never run in CI): on the bundled sample,
# `bertflow bench` of dense embeddings as float32, cut to 128 dimensions and written as ubinary
# bits, and of sparse (SPLADE) vectors with the pooling outside the graph (vocabulary-sized logits
# per token copied back) and inside it (`bert_to_onnx.py --tied-mlm --splade`, and the fused
# variant `bertflow models optimize --precision fp32 --pool` makes of the unpooled model: one
# vector per text), each against raw ONNX Runtime on the same batches. Prints a Markdown table.
#   bench/hybrid.sh [CORPUS.parquet]   (default: the bundled sample, 1000 reviews)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
CACHE="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}"
PY="${BERTFLOW_PYTHON:-$CACHE/setup-venv/bin/python}"
THREADS="${BENCH_THREADS:-2}"
CORPUS="$(realpath "${1:-pipelines/sample/reviews.parquet}")"
OUT=.bench/hybrid
mkdir -p "$OUT/out"
POOLED="$OUT/splade-standin-pooled"
if [ ! -f "$POOLED/model.onnx" ]; then
  ST_DIR="$(bash bench/st_model.sh)"
  mkdir -p "$POOLED"
  cp models/splade-standin/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,sentence_bert_config.json} "$POOLED/"
  "$PY" scripts/bert_to_onnx.py "$ST_DIR" "$POOLED/model.onnx" --tied-mlm --splade >&2
fi
OPTIMIZED="$OUT/splade-standin-optimized"
if [ ! -f "$OPTIMIZED/model.fp32.onnx" ]; then
  rm -rf "$OPTIMIZED" && cp -r models/splade-standin "$OPTIMIZED"
  BERTFLOW_PYTHON="$PY" "$BIN" models optimize "$OPTIMIZED" --precision fp32 --pool >&2
fi
run() { # name, task yaml
  cat > "$OUT/$1.yaml" <<YAML
source:
  parquet:
    path: $CORPUS
    id_column: id
tasks:
$2
runtime:
  intra_op_threads: $THREADS
sink:
  parquet:
    path: $OUT/out/$1.parquet
YAML
  echo "== bertflow bench: $1" >&2
  "$BIN" bench "$OUT/$1.yaml" --json "$OUT/$1.json" >&2
}
run dense "  embed: {model: models/all-MiniLM-L6-v2}"
run dense_128_ubinary "  embed: {model: models/all-MiniLM-L6-v2, dimensions: 128, output: ubinary}"
run sparse "  sparse: {model: models/splade-standin, max_active_dims: 128}"
run sparse_in_graph "  sparse: {model: $POOLED, max_active_dims: 128}"
run sparse_optimized "  sparse: {model: $OPTIMIZED, precision: fp32, max_active_dims: 128}"
python3 - "$OUT" <<'PY'
import json, pathlib, sys
d = pathlib.Path(sys.argv[1])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}; 2 threads; the bundled sample (1,000 reviews)\n")
print("| run | records/s | raw ORT / bertflow time | model s | post-process s | peak RSS MiB |")
print("|---|---|---|---|---|---|")
for name, label in [("dense", "dense float32 (384)"), ("dense_128_ubinary", "dense, dimensions 128, ubinary"),
                    ("sparse", "sparse, pooling outside the graph"), ("sparse_in_graph", "sparse, pooling in the graph (exporter)"),
                    ("sparse_optimized", "sparse, pooling in the fused graph (`models optimize --pool`)")]:
    b = json.loads((d / f"{name}.json").read_text())
    print(f"| {label} | {b['records_per_second']:.1f} | {b['ratio_to_raw_ort']:.2f} | {b['model_seconds']:.2f} | "
          f"{b['postprocess_seconds']:.2f} | {b['peak_rss_mib']:.0f} |")
PY
