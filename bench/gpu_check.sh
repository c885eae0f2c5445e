#!/usr/bin/env bash
# The one-command GPU check (`make gpu-check` runs `dry-run` on CPU). Three steps:
#
#   bench/gpu_check.sh pack          here, with registry access: .gpu/ gets the CUDA build of ONNX
#                                    Runtime (onnxruntime-gpu==1.31.1, provider stripped to sm_90
#                                    with ../shared/gpu-kit/strip_fatbin.py or GPU_KIT, xz), a
#                                    stripped release bertflow and the tokenizer files: what a GPU
#                                    machine without registry access needs (< 64 MiB together)
#   bench/gpu_check.sh stage         on the GPU machine: unpack .gpu/provider (the CUDA provider,
#                                    ~51 MB packed, travels alone: with the rest and the checkout
#                                    it would pass the 64 MiB a call takes)
#   bench/gpu_check.sh run OUT       on the GPU machine, in the next call while it is warm:
#                                    unpack .gpu/rest, put the CUDA libraries
#                                    (nvidia-* pip packages) on LD_LIBRARY_PATH, check that nothing
#                                    is missing, run bench/gpu_check.py with provider cuda
#   bench/gpu_check.sh dry-run OUT   here, on CPU: the same check with provider cpu and a small
#                                    corpus (proves the script before GPU time is spent on it)
#
# Figures land in OUT/results.md and OUT/results.json; docs/benchmarks.md quotes them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cmd="${1:-}"; OUT="${2:-.bench/gpu-check}"
GPU="$ROOT/.gpu"
PY="${PYTHON:-python3}"
log() { printf '[gpu-check] %s\n' "$*" >&2; }

pack() {
  local cache="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}/wheels" kit="${GPU_KIT:-$ROOT/../shared/gpu-kit}"
  mkdir -p "$GPU/provider" "$GPU/rest/tokenizer" "$cache"
  local whl; whl=$(ls "$cache"/onnxruntime_gpu-1.31.1-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$cache" onnxruntime-gpu==1.31.1
    whl=$(ls "$cache"/onnxruntime_gpu-1.31.1-*.whl | head -n1)
  fi
  local tmp; tmp=$(mktemp -d)
  unzip -q -o "$whl" 'onnxruntime/capi/libonnxruntime*' -d "$tmp"
  local capi="$tmp/onnxruntime/capi"
  cp "$capi/libonnxruntime_providers_shared.so" "$GPU/rest/"
  "$PY" "$kit/strip_fatbin.py" "$capi/libonnxruntime_providers_cuda.so" "$tmp/prov.so" 90
  log "compressing the CUDA provider (xz -9e -T1: slow, about an hour on 2 busy cores)"
  xz -9e -T1 -c "$tmp/prov.so" > "$GPU/provider/libonnxruntime_providers_cuda.so.xz"
  xz -9 -T1 -c "$capi/libonnxruntime.so.1.31.1" > "$GPU/rest/libonnxruntime.so.1.31.1.xz"
  cargo build --release --locked
  local bin="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
  strip -o "$tmp/bertflow" "$bin"
  xz -9 -T1 -c "$tmp/bertflow" > "$GPU/rest/bertflow.xz"
  for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    cp "models/all-MiniLM-L6-v2/$f" "$GPU/rest/tokenizer/"
  done
  rm -rf "$tmp"
  du -sb "$GPU"/provider "$GPU"/rest | awk '{printf "[gpu-check] %s: %.1f MiB\n", $2, $1/1048576}' >&2
}

unpack() { # FROM DIR
  "$PY" - "$1" "$2" <<'EOF'
import lzma, os, pathlib, shutil, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(dst / "lib").mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.suffix == ".xz":
        target = dst / ("bertflow" if f.stem == "bertflow" else f"lib/{f.stem}")
        with lzma.open(f) as i, open(target, "wb") as o:
            shutil.copyfileobj(i, o)
        os.chmod(target, 0o755)
    elif f.is_file():
        shutil.copy(f, dst / "lib" / f.name)
EOF
}

case "$cmd" in
  pack) pack ;;
  stage)
    rm -rf /tmp/gpu-kit; unpack "$GPU/provider" /tmp/gpu-kit; ls -la /tmp/gpu-kit/lib ;;
  run)
    W=/tmp/gpu-kit
    [ -f "$W/lib/libonnxruntime_providers_cuda.so" ] || { [ -d "$GPU/provider" ] && unpack "$GPU/provider" "$W"; }
    unpack "$GPU/rest" "$W"
    ln -sf libonnxruntime.so.1.31.1 "$W/lib/libonnxruntime.so"
    [ -f "$W/lib/libonnxruntime_providers_cuda.so" ] || { log "the CUDA provider is missing: run 'stage' first (same machine)"; exit 1; }
    site=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
    nv=$(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ':')
    export LD_LIBRARY_PATH="$W/lib:$nv${LD_LIBRARY_PATH:-}"
    missing=$(ldd "$W/lib/libonnxruntime_providers_cuda.so" | grep 'not found' || true)
    if [ -n "$missing" ]; then log "missing libraries:"; echo "$missing" >&2; exit 1; fi
    nocudnn="$W/lib:$(ls -d "$site"/nvidia/*/lib | grep -v cudnn | tr '\n' ':')"
    mkdir -p "$OUT"
    nvidia-smi || true
    ORT_DYLIB_PATH="$W/lib/libonnxruntime.so" GPU_CHECK_WORK=/tmp/gpu-check-work PYTHONUNBUFFERED=1 \
      "$PY" bench/gpu_check.py --bin "$W/bertflow" --out "$OUT" --provider cuda --ld-without-cudnn "$nocudnn" \
      2>&1 | tee "$OUT/log.txt"
    ;;
  probe)
    # Which cuDNN the CUDA provider resolves with and without the cudnn folder, and where one
    # embedding run's time goes (bench JSON: tokenize / model / post-process / write / raw ORT).
    W=/tmp/gpu-kit
    [ -f "$W/lib/libonnxruntime_providers_cuda.so" ] || { log "run 'stage' first"; exit 1; }
    unpack "$GPU/rest" "$W"; ln -sf libonnxruntime.so.1.31.1 "$W/lib/libonnxruntime.so"
    site=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
    all="$W/lib:$(ls -d "$site"/nvidia/*/lib | tr '\n' ':')"
    nocudnn="$W/lib:$(ls -d "$site"/nvidia/*/lib | grep -v cudnn | tr '\n' ':')"
    echo "== ldd with everything"; LD_LIBRARY_PATH="$all" ldd "$W/lib/libonnxruntime_providers_cuda.so" | grep -E 'cudnn|cublas|cudart|not found'
    echo "== ldd without the cudnn folder"; LD_LIBRARY_PATH="$nocudnn" ldd "$W/lib/libonnxruntime_providers_cuda.so" | grep -E 'cudnn|not found' || true
    ldconfig -p | grep -i cudnn | head -3 || true
    readelf -d "$W/lib/libonnxruntime_providers_cuda.so" | grep -E 'NEEDED|RUNPATH|RPATH' | head -20
    M=/tmp/probe; mkdir -p "$M"
    "$PY" -c "import sys, pathlib, numpy as np; sys.path.insert(0, 'bench'); import gpu_check as g; r = np.random.default_rng(7); d = g.make_encoder(pathlib.Path('$M'), 'minilm', r, sys.executable); g.pooled_copy(d, sys.executable); g.corpus(pathlib.Path('$M/big.parquet'), int('${PROBE_N:-10000}'), r, 4, 200)"
    printf 'source: {parquet: {path: %s/big.parquet, id_column: id}}\ntasks: {embed: {model: %s/minilm}}\nbatching: {window_records: 4096, max_batch_size: 128, max_batch_tokens: 32768}\nruntime: {execution_provider: cuda}\nsink: {parquet: {path: %s/out.parquet}}\n' "$M" "$M" "$M" > "$M/p.yaml"
    export ORT_DYLIB_PATH="$W/lib/libonnxruntime.so"
    echo "== bench, everything on the path"; LD_LIBRARY_PATH="$all" "$W/bertflow" bench "$M/p.yaml" --json "$M/b.json" >/dev/null 2>&1; cat "$M/b.json"
    sed -e "s#$M/minilm}#$M/minilm-pooled}#" -e "s#out.parquet#out-pooled.parquet#" "$M/p.yaml" > "$M/pp.yaml"
    echo "== bench, pooling inside the graph"; LD_LIBRARY_PATH="$all" "$W/bertflow" bench "$M/pp.yaml" --json "$M/bp.json" >/dev/null 2>&1; cat "$M/bp.json"
    "$PY" -c "import pyarrow.parquet as pq, numpy as np; e = lambda f: np.array(pq.read_table(f)['embedding'].to_pylist()); a, b = e('$M/out.parquet'), e('$M/out-pooled.parquet'); print('pooled against unpooled graph, min cosine:', (a * b).sum(1).min() / 1.0)"
    echo "== run without the cudnn folder"; LD_LIBRARY_PATH="$nocudnn" RUST_LOG=info "$W/bertflow" run "$M/p.yaml" --no-progress 2>&1 | grep -v '^\s*$' | tail -25
    ;;
  dry-run)
    if [ -z "${PYTHON:-}" ]; then
      # numpy + onnx come with the set-up's tools; pyarrow is added for the corpus.
      PY="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}/setup-venv/bin/python"
      [ -x "$PY" ] || bash scripts/setup.sh
      "$PY" -c 'import pyarrow' 2>/dev/null || "$PY" -m pip install -q pyarrow
    fi
    bin="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
    [ -x "$bin" ] || cargo build --release --locked
    mkdir -p "$OUT"
    ORT_DYLIB_PATH="$ROOT/runtime/onnxruntime/libonnxruntime.so" GPU_CHECK_WORK="$ROOT/.bench/gpu-check-work" \
      "$PY" bench/gpu_check.py --bin "$bin" --out "$OUT" --provider cpu --quick
    ;;
  *) echo "usage: bench/gpu_check.sh pack | run OUT | dry-run OUT" >&2; exit 2 ;;
esac
