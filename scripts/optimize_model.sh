#!/usr/bin/env bash
# Apply ONNX Runtime's offline transformer fusions (SkipLayerNormalization, BiasGelu, attention
# where the pattern allows) to a BERT-family model directory:
#   scripts/optimize_model.sh MODEL_DIR OUT_DIR [NUM_HEADS HIDDEN_SIZE]
# Needs Python with onnxruntime and onnx (e.g. the reference environment of `make refenv`).
# The output directory is a copy of MODEL_DIR with model.onnx replaced.
set -euo pipefail
src=$1; out=$2
py=${PYTHON:-${REFENV:-$HOME/.cache/bertflow/refenv}/bin/python}
heads=${3:-$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['num_attention_heads'])" "$src/config.json")}
hidden=${4:-$("$py" -c "import json,sys; print(json.load(open(sys.argv[1]))['hidden_size'])" "$src/config.json")}
mkdir -p "$out"
cp -r "$src"/. "$out"/
"$py" -m onnxruntime.transformers.optimizer --input "$src/model.onnx" --output "$out/model.onnx" \
  --model_type bert --num_heads "$heads" --hidden_size "$hidden" >&2
echo "$out"
