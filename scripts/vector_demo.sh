#!/usr/bin/env bash
# Vector-store demo: a local Postgres with pgvector, the bundled reviews embedded into it
# (pipelines/reviews-pgvector.yaml), then the three nearest neighbours of one review by cosine
# distance through the HNSW index.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${BERTFLOW_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow}"
bash scripts/postgres.sh start
URL=$(bash scripts/postgres.sh url)
mkdir -p out/vector-demo
"$BIN" run pipelines/reviews-pgvector.yaml --set "sink.postgres.url=$URL"
psql() { bash scripts/postgres.sh psql -- "$@"; }
echo
echo "Rows in reviews: $(psql -tAc 'SELECT count(*) FROM reviews')"
query_id=$(psql -tAc "SELECT id FROM reviews WHERE sentiment_label IS NOT NULL ORDER BY id LIMIT 1 OFFSET 2")
q="'${query_id//\'/\'\'}'"   # as an SQL literal
echo "Review $query_id: $(psql -tAc "SELECT left(text, 110) FROM reviews WHERE id = $q")"
echo
echo "Its three nearest neighbours by cosine distance (HNSW index):"
# A small table: the planner would scan it; the demo asks for the index as a large one would use.
psql -c "SET enable_seqscan = off" \
  -c "EXPLAIN (COSTS OFF) SELECT id FROM reviews WHERE id <> $q ORDER BY embedding <=> (SELECT embedding FROM reviews WHERE id = $q) LIMIT 3" \
  -c "SELECT id, round((embedding <=> (SELECT embedding FROM reviews WHERE id = $q))::numeric, 4) AS cosine_distance, sentiment_label, left(text, 70) AS text FROM reviews WHERE id <> $q ORDER BY embedding <=> (SELECT embedding FROM reviews WHERE id = $q) LIMIT 3"
echo "Stop the server with: scripts/postgres.sh stop"
