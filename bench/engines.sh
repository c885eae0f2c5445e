#!/usr/bin/env bash
# Spark and Ray benchmark (part of `make bench`; never run in CI): bertflow through Spark's
# mapInArrow and Ray Data's map_batches against sentence-transformers + transformers pipelines in
# the same engines, and the command line, on the same records in the same run.
#   bench/engines.sh [RECORDS]      (default 2000 records of the bench corpus)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REFENV="${REFENV:-$HOME/.cache/bertflow/refenv}"
PY="$REFENV/bin/python"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
RECORDS="${1:-2000}"
[ -f .bench/corpus.parquet ] || "$PY" bench/make_corpus.py
"$PY" -m pip install -q --disable-pip-version-check "pyspark==4.3.*" "ray[data]==2.60.*" pandas
whl=$(bash scripts/python_env.sh wheel)
"$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$whl"
export PYSPARK_PYTHON="$PY" PYSPARK_DRIVER_PYTHON="$PY" RAY_USAGE_STATS_ENABLED=0
# sentence-transformers and transformers read the torch weights of the same model.
ST_DIR="$(bash bench/st_model.sh)"
# fp32 task heads on the MiniLM body, as the Python side's (made once, shared with precision.sh).
[ -f .bench/precision/models/qa/model.onnx ] || { mkdir -p .bench/precision/models; "$PY" bench/precision.py models "$ST_DIR" .bench/precision/models; }
"$PY" bench/engines.py .bench/corpus.parquet "$RECORDS" "$BIN" "$ST_DIR"
