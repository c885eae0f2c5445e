#!/usr/bin/env bash
# Build the container images with podman (no Docker engine needed) and check them as a user runs
# them: `make image-check`. Not part of `make test` (it compiles bertflow inside the build
# stage: about 25 minutes on 2 cores the first time); `make test` runs the fast recipe guard,
# scripts/image_recipes.py, instead.
#
#   1. local stand-ins of the base images the Dockerfiles name: debian:bookworm-slim from
#      debootstrap, rust:1.95-bookworm = that base + build tools + this machine's Rust toolchain;
#   2. docker/Dockerfile built unchanged in meaning (CA_BUNDLE: the machine's CA bundle for pip
#      and cargo inside the build, empty by default);
#   3. checks: --version, models inspect, the demo pipeline over the bundled sample (models
#      mounted read-only, read-only root filesystem, non-root user) equal to the host run,
#      SIGTERM to PID 1 of a large batch job (podman stop -t 30), image size;
#   4. docker/Dockerfile.cuda on a stand-in base: its ldd check of the CUDA provider and
#      `bertflow --version` (no GPU here: nothing else of it is proven);
#   5. docker/compose.yaml: checked by `docker compose config` where a compose engine exists (else
#      parsed), and its worker command run in the built image against a local broker.
# Output: one line per check, and a summary with sizes and timings (quoted in
# docs/operations.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BERTFLOW_IMAGE_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/bertflow/images}"
CA="${CA_BUNDLE_FILE:-/etc/ssl/certs/ca-certificates.crt}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CUDA="${IMAGE_CHECK_CUDA:-1}"
mkdir -p "$WORK"
started=$(date +%s)
P=(podman --runtime runc)
log() { printf '[images] %s\n' "$*"; }
fail() { printf '[images] FAILED: %s\n' "$*" >&2; exit 1; }
results=()
# A Python with numpy, pyarrow and PyYAML for the comparisons (PyPI wheels, cached).
PY="$WORK/venv/bin/python"
if ! "$PY" -c 'import numpy, pyarrow, yaml' 2>/dev/null; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q numpy pyarrow pyyaml
fi
result() { results+=("$*"); log "$*"; }
now() { date +%s; }

# ------------------------------------------------------------------ tools
need=()
for p in podman runc debootstrap; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Without a host limit to copy, runc refuses to set RLIMIT_NOFILE: set none.
if ! grep -qs default_ulimits /etc/containers/containers.conf; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' >> /etc/containers/containers.conf
fi

# ------------------------------------------------------------------ base images
t0=$(now)
if ! "${P[@]}" image exists docker.io/library/debian:bookworm-slim; then
  if [ ! -x "$WORK/rootfs/bin/sh" ]; then
    log "debootstrap bookworm (minbase) -> $WORK/rootfs"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >/dev/null
  fi
  tar -C "$WORK/rootfs" -c . | "${P[@]}" import - docker.io/library/debian:bookworm-slim >/dev/null
fi
if ! "${P[@]}" image exists docker.io/library/rust:1.95-bookworm; then
  log "rust:1.95-bookworm stand-in: the base, build tools and this machine's Rust toolchain"
  sysroot=$(rustc +1.95.0 --print sysroot 2>/dev/null || rustc --print sysroot)
  ctx="$WORK/rust-ctx"
  rm -rf "$ctx" && mkdir -p "$ctx/rust"
  # The toolchain without its documentation.
  tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$ctx/rust" -x
  cat > "$ctx/Containerfile" <<'EOF'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl git \
 && rm -rf /var/lib/apt/lists/*
COPY rust /usr/local/rust
ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:$PATH \
    CARGO_HOME=/usr/local/cargo
EOF
  "${P[@]}" build --network=host -t docker.io/library/rust:1.95-bookworm -f "$ctx/Containerfile" "$ctx" >/dev/null
  rm -rf "$ctx"
fi
result "base images ready ($(( $(now) - t0 )) s)"

build() {  # build FILE TAG
  local t
  t=$(now)
  "${P[@]}" build --network=host \
    -v "$CA:/run/host-ca.crt:ro" --build-arg CA_BUNDLE=/run/host-ca.crt \
    -f "$1" -t "$2" . > "$WORK/build-$(basename "$1").log" 2>&1 \
    || { tail -n 30 "$WORK/build-$(basename "$1").log" >&2; fail "building $1 (log: $WORK/build-$(basename "$1").log)"; }
  result "built $2 from $1 in $(( $(now) - t )) s, $("${P[@]}" image inspect "$2" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
}

# ------------------------------------------------------------------ CPU image
build docker/Dockerfile bertflow:cpu
v=$("${P[@]}" run --rm bertflow:cpu --version)
[[ "$v" == bertflow* ]] || fail "--version printed '$v'"
result "--version: $v"
[ "$("${P[@]}" run --rm --entrypoint id bertflow:cpu -u)" = 10001 ] || fail "the image does not run as uid 10001"
result "runs as a non-root user (uid 10001)"
"${P[@]}" run --rm -v "$ROOT/models:/models:ro" bertflow:cpu models inspect /models/all-MiniLM-L6-v2 \
  | grep -q "tasks         embed" || fail "models inspect"
result "models inspect in the image: ok"

# The demo pipeline, paths pointing at the mounts; read-only root filesystem, writable /out.
out="$WORK/demo-out"
rm -rf "$out" && mkdir -p "$out" && chmod 777 "$out"
sed -e 's#pipelines/sample/#/data/#' -e 's#models/#/models/#' -e 's#out/demo/#/out/#' \
  pipelines/demo.yaml > "$out/demo.yaml"
t=$(now)
"${P[@]}" run --rm --read-only -v "$ROOT/models:/models:ro" -v "$ROOT/pipelines/sample:/data:ro" \
  -v "$out:/out" bertflow:cpu run /out/demo.yaml --no-progress > "$out/summary.txt"
result "demo in the image: $(grep -E '^  written' "$out/summary.txt" | xargs) in $(( $(now) - t )) s (read-only root, models read-only)"
host_bin="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
[ -x "$host_bin" ] || cargo build --release --locked >/dev/null
"$host_bin" run pipelines/demo.yaml --no-progress --output "$out/host.parquet" >/dev/null
"$PY" - "$out/host.parquet" "$out/reviews.enriched.parquet" <<'EOF'
import sys
import numpy as np
import pyarrow.parquet as pq
a, b = (pq.read_table(p).to_pydict() for p in sys.argv[1:3])
assert a["id"] == b["id"], "ids differ"
x, y = np.array(a["embedding"], dtype=np.float64), np.array(b["embedding"], dtype=np.float64)
cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
assert cos.min() >= 0.9999, f"embeddings differ: min cosine {cos.min()}"
for c in ("sentiment_label", "entities", "answers"):
    if c in a:
        assert a[c] == b[c], f"{c} differs"
print(f"{len(a['id'])} records, min cosine {cos.min():.6f}, labels, entities and answers equal")
EOF
result "demo output equals the host run"

# SIGTERM to PID 1 of a large batch job: out within 5 s, exit 1, nothing under the final name.
big="$WORK/big"
rm -rf "$big" && mkdir -p "$big/out" && chmod 777 "$big/out"
"$PY" - "$big/in.parquet" <<'EOF'
import sys
import pyarrow as pa, pyarrow.parquet as pq
n = 40000
text = "a review long enough to take the model a moment, sentence after sentence, and some more"
pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": [text] * n}), sys.argv[1])
EOF
cat > "$big/p.yaml" <<'EOF'
source: {parquet: {path: /big/in.parquet, id_column: id}}
tasks: {embed: {model: /models/all-MiniLM-L6-v2}}
sink: {parquet: {path: /big/out/out.parquet}}
EOF
"${P[@]}" rm -f bertflow-sigterm >/dev/null 2>&1 || true
"${P[@]}" run -d --name bertflow-sigterm --read-only -v "$ROOT/models:/models:ro" -v "$big:/big" \
  bertflow:cpu run /big/p.yaml --no-progress >/dev/null
for _ in $(seq 1 600); do
  [ -e "$big/out/.out.parquet.inprogress" ] && break
  sleep 0.2
done
[ -e "$big/out/.out.parquet.inprogress" ] || fail "the large job never started writing"
t=$(date +%s.%N)
"${P[@]}" stop -t 30 bertflow-sigterm >/dev/null
took=$(echo "$(date +%s.%N) - $t" | bc)
code=$("${P[@]}" inspect bertflow-sigterm --format '{{.State.ExitCode}}')
"${P[@]}" logs bertflow-sigterm > "$big/log.txt" 2>&1 || true
"${P[@]}" rm -f bertflow-sigterm >/dev/null
left=$(ls -A "$big/out")
[ "$code" = 1 ] || fail "exit code $code after SIGTERM (1 expected)"
[ -z "$left" ] || fail "left behind after SIGTERM: $left"
awk -v t="$took" 'BEGIN { exit !(t < 5) }' || fail "stopped ${took}s after SIGTERM (5 s at most)"
result "SIGTERM to PID 1 of a 40,000-record job: stopped in $(printf '%.1f' "$took") s, exit 1, no output left"

# ------------------------------------------------------------------ CUDA image (no GPU here)
if [ "$CUDA" = 1 ]; then
  build docker/Dockerfile.cuda bertflow:cuda
  # Its build stage is docker/Dockerfile's, step for step, so the compiled binary comes from the
  # CPU build's layer cache instead of a second release build.
  grep -A1 -F 'STEP' "$WORK/build-Dockerfile.cuda.log" | grep -A1 -F 'cargo build --release' \
    | grep -q -- '--> Using cache' \
    || fail "the CUDA image compiled bertflow again: its build stage no longer matches docker/Dockerfile's (log: $WORK/build-Dockerfile.cuda.log)"
  result "CUDA image: build stage taken from the CPU image's layer cache (no second release build)"
  result "CUDA image: its build-time ldd check found every library the CUDA provider needs but the driver's libcuda"
  v=$("${P[@]}" run --rm bertflow:cuda --version)
  [[ "$v" == bertflow* ]] || fail "cuda --version printed '$v'"
  result "CUDA image --version: $v (not proven here: running on a GPU)"
fi

# ------------------------------------------------------------------ compose
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  docker compose -f docker/compose.yaml config -q && result "compose.yaml: docker compose config ok"
else
  "$PY" - docker/compose.yaml <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
assert set(c["services"]) >= {"kafka", "worker"}, c["services"].keys()
for name, s in c["services"].items():
    assert "image" in s or "build" in s, name
print("ok")
EOF
  result "compose.yaml: parsed, services and images present (no compose engine here)"
fi

# The compose worker's command and environment in the built image, against a broker on the host
# network (local model folders instead of its hf: models, which need the Hub).
started_kafka=0
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
  bash scripts/kafka.sh start >/dev/null
  started_kafka=1
fi
run_id=$(date +%s)
IN="feedback-img-$run_id"; OUT="$IN.enriched"; DLQ="$IN.dlq"
bash scripts/kafka.sh topic "$IN" 4 >/dev/null
bash scripts/kafka.sh topic "$OUT" 4 >/dev/null
bash scripts/kafka.sh topic "$DLQ" 1 >/dev/null
bash scripts/kafka.sh produce "$IN" < pipelines/sample/feedback.jsonl >/dev/null
n=$(wc -l < pipelines/sample/feedback.jsonl)
port=$(bash scripts/kafka.sh status | awk -F: '{print $NF}')
"${P[@]}" rm -f bertflow-worker >/dev/null 2>&1 || true
t=$(now)
"${P[@]}" run -d --name bertflow-worker --network=host \
  -v "$ROOT/pipelines:/pipelines:ro" -v "$ROOT/models:/models:ro" \
  -e BERTFLOW__SOURCE__KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$port" \
  -e BERTFLOW__TASKS__SENTIMENT__MODEL=/models/sentiment \
  -e BERTFLOW__TASKS__NER__MODEL=/models/ner \
  -e BERTFLOW__METRICS__LISTEN=127.0.0.1:0 \
  bertflow:cpu run /pipelines/feedback-stream.yaml --no-progress \
  --set "source.kafka.topics=[\"$IN\"]" --set "source.kafka.group_id=img-$run_id" \
  --set "sink.kafka.topic=\"$OUT\"" --set "sink.errors.topic=\"$DLQ\"" >/dev/null
got=$(timeout 300 bash scripts/kafka.sh consume "$OUT" "$n" 2>/dev/null | wc -l || true)
"${P[@]}" stop -t 30 bertflow-worker >/dev/null
code=$("${P[@]}" inspect bertflow-worker --format '{{.State.ExitCode}}')
"${P[@]}" logs bertflow-worker > "$WORK/worker.log" 2>&1 || true
"${P[@]}" rm -f bertflow-worker >/dev/null
if [ "$started_kafka" = 1 ]; then bash scripts/kafka.sh stop >/dev/null; fi
[ "$got" -ge "$n" ] || fail "the compose worker wrote $got of $n messages (log: $WORK/worker.log)"
[ "$code" = 0 ] || fail "the compose worker exited $code on SIGTERM (log: $WORK/worker.log)"
result "compose worker command in the image on the host network: $got of $n messages enriched (exactly once), SIGTERM -> exit 0, $(( $(now) - t )) s"

result "image check done in $(( $(now) - started )) s"
echo
echo "image check summary"
for r in "${results[@]}"; do echo "  $r"; done
