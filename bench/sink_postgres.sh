#!/usr/bin/env bash
# Postgres sink against the Parquet sink, same pipeline, same run: MiniLM embeddings + sentiment
# of the bundled sample (pipelines/sample/reviews.parquet, 1,000 reviews, COPIES times over, ids
# kept distinct) written to a Parquet file, to a pgvector table in `upsert` mode (with an HNSW
# index) and in `insert` mode, each ROUNDS times, interleaved. Prints JSON (records/s per sink,
# from the run summaries) for bench/report.py.
#   bench/sink_postgres.sh [COPIES] [ROUNDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COPIES="${1:-3}"
ROUNDS="${2:-3}"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
OUT=.bench/sink_postgres
mkdir -p "$OUT"
bash scripts/postgres.sh start >&2
URL=$(bash scripts/postgres.sh url)
psql() { bash scripts/postgres.sh psql -- "$@"; }
rm -rf "$OUT/in"; mkdir -p "$OUT/in"
for c in $(seq 1 "$COPIES"); do cp pipelines/sample/reviews.parquet "$OUT/in/copy-$c.parquet"; done
N=$((COPIES * 1000))

cat > "$OUT/pipeline.yaml" <<YAML
source:
  parquet:
    path: $OUT/in
    text_column: text
tasks:
  embed:
    model: models/all-MiniLM-L6-v2
  sentiment:
    model: models/sentiment
runtime:
  intra_op_threads: 2
sink:
  passthrough: [source]
  parquet:
    path: $OUT/out.parquet
YAML

# records/s of one run, from its summary.
run() { # sink overrides...
  "$BIN" run "$OUT/pipeline.yaml" --no-progress "$@" | awk '/throughput/ {print $2}'
}
pg() { # mode, table
  printf -- '--set\nsink.parquet=null\n--set\nsink.postgres={url: "%s", table: %s, mode: %s, create_table: true, index: {method: hnsw, distance: cosine}}\n' "$URL" "$2" "$1"
}

declare -a parquet upsert insert
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r" >&2
  parquet+=("$(run)")
  psql -qc "DROP TABLE IF EXISTS bench_upsert; DROP TABLE IF EXISTS bench_insert" >&2
  mapfile -t a < <(pg upsert bench_upsert); upsert+=("$(run "${a[@]}")")
  mapfile -t a < <(pg insert bench_insert); insert+=("$(run "${a[@]}")")
done
rows=$(psql -tAc "SELECT count(*) FROM bench_upsert")
join() { local IFS=,; echo "$*"; }
cat <<JSON
{"records": $N, "rows_in_table": $rows, "rounds": $ROUNDS,
 "parquet": [$(join "${parquet[@]}")], "postgres_upsert": [$(join "${upsert[@]}")],
 "postgres_insert": [$(join "${insert[@]}")],
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"}
JSON
