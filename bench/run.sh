#!/usr/bin/env bash
# The benchmark behind docs/benchmarks.md (`make bench`). Needs PyPI for the Python baselines
# (torch, sentence-transformers, transformers in ~/.cache/bertflow/refenv); never run in CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REFENV="${REFENV:-$HOME/.cache/bertflow/refenv}"
PY="$REFENV/bin/python"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
OUT=.bench
mkdir -p "$OUT/out"
[ -f "$OUT/corpus.parquet" ] || "$PY" bench/make_corpus.py

bench() { # name, extra --set arguments...
  local name=$1; shift
  echo "== bertflow: $name" >&2
  "$BIN" bench bench/all.yaml --output "$OUT/out/$name.parquet" --json "$OUT/$name.json" "$@" >&2
}
none() { for t in "$@"; do printf -- '--set\ntasks.%s=null\n' "$t"; done; }

mapfile -t a < <(none sentiment ner qa); bench embed "${a[@]}"
mapfile -t a < <(none sentiment ner qa); bench embed_fixed_batches "${a[@]}" --set batching.window_records=32 --set batching.max_batch_size=32 --set batching.max_batch_tokens=1000000
mapfile -t a < <(none sentiment ner qa); bench embed_int8 "${a[@]}" --set tasks.embed.model=models/all-MiniLM-L6-v2-int8
mapfile -t a < <(none sentiment ner qa); bench embed_no_graph_opt "${a[@]}" --set runtime.graph_optimization_level=disable
mapfile -t a < <(none sentiment ner qa); bench embed_1_thread "${a[@]}" --set runtime.intra_op_threads=1
# Passages of every text (the long documents give several each), same batches through raw ORT.
mapfile -t a < <(none sentiment ner qa); bench embed_chunked "${a[@]}" --set 'tasks.embed.chunking={boundary: sentence, max_tokens: 256, overlap: 32}'
mapfile -t a < <(none embed ner qa); bench sentiment "${a[@]}"
mapfile -t a < <(none embed sentiment qa); bench ner "${a[@]}"
mapfile -t a < <(none embed sentiment ner); bench qa "${a[@]}"
bench all

echo "== streaming under a backlog" >&2
bash bench/stream_backlog.sh 60000 90 > "$OUT/stream_backlog_60000.json"
bash bench/stream_backlog.sh 240000 60 > "$OUT/stream_backlog_240000.json"

echo "== Postgres sink against the Parquet sink" >&2
bash bench/sink_postgres.sh 3 3 > "$OUT/sink_postgres.json"

echo "== object storage (local S3 server) against local files" >&2
bash bench/store_s3.sh 3 3 2048 > "$OUT/store_s3.json"

echo "== CPU precisions: fp32, fused fp32, int8, OpenVINO fp32 and bf16 against the Python stack (same run)" >&2
mkdir -p "$OUT/precision"
bash bench/precision.sh > "$OUT/precision/table.md"

echo "== Hybrid vectors: dense cut and quantized, sparse with the pooling in and outside the graph" >&2
mkdir -p "$OUT/hybrid"
bash bench/hybrid.sh > "$OUT/hybrid/table.md"

echo "== Host path: a null model against raw ONNX Runtime" >&2
mkdir -p "$OUT/null"
bash bench/null_model.sh > "$OUT/null/table.md"

echo "== Pair tasks: zero-shot labels and cross-encoder scores against the Python stack (same run)" >&2
mkdir -p "$OUT/pairs"
bash bench/pairs.sh > "$OUT/pairs/table.md"

echo "== Inside Spark and Ray: bertflow against the Python stack in the same engines" >&2
bash bench/engines.sh 2000 > "$OUT/engines.json"

echo "== Python baselines" >&2
if [ ! -f "$OUT/python.json" ]; then
  "$PY" bench/baseline.py "$OUT/corpus.parquet" "$(bash bench/st_model.sh)" models > "$OUT/python.json.tmp"
  mv "$OUT/python.json.tmp" "$OUT/python.json"
fi
"$PY" bench/report.py "$OUT" > docs/benchmarks.md
echo "wrote docs/benchmarks.md" >&2
