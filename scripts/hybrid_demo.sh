#!/usr/bin/env bash
# Hybrid-search demo: a local Postgres with pgvector, the bundled reviews loaded with a dense
# embedding and a sparse (SPLADE) vector each (pipelines/reviews-hybrid.yaml), then for one review
# as the query (its vectors made by bertflow with the same models and settings): the dense top 5,
# the sparse top 5 and their reciprocal-rank fusion (k = 60) top 5. The sparse vectors come from
# the pretrained SPLADE-tiny (MS MARCO), which is published as safetensors only: `bertflow models
# export` turns it into models/splade-tiny first (in the environment `make refenv` makes).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${BERTFLOW_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow}"
if [ ! -f models/splade-tiny/model.onnx ]; then
  "$BIN" models export models/splade-tiny-source models/splade-tiny
fi
bash scripts/postgres.sh start
URL=$(bash scripts/postgres.sh url)
mkdir -p out/hybrid-demo
"$BIN" run pipelines/reviews-hybrid.yaml --set "sink.postgres.url=$URL" \
  --set tasks.sparse.model=models/splade-tiny
psql() { bash scripts/postgres.sh psql -- "$@"; }
T=reviews_hybrid
echo
echo "Rows in $T: $(psql -tAc "SELECT count(*) FROM $T")"
query_id=$(psql -tAc "SELECT id FROM $T ORDER BY id LIMIT 1 OFFSET 2")
q="'${query_id//\'/\'\'}'"   # as an SQL literal
echo "Query (review $query_id): $(psql -tAc "SELECT left(text, 110) FROM $T WHERE id = $q")"
echo "Its sparse vector weighs most: $(psql -tAc "SELECT string_agg(t->>'token', ' ') FROM $T, jsonb_array_elements(sparse_tokens) t WHERE id = $q")"
Q="(SELECT embedding AS e, sparse AS s FROM $T WHERE id = $q)"
echo
echo "Dense top 5 (inner product of the embeddings):"
psql -c "SELECT id, round((-(r.embedding <#> q.e))::numeric, 4) AS score, left(text, 70) AS text FROM $T r, $Q q WHERE id <> $q ORDER BY r.embedding <#> q.e LIMIT 5"
echo "Sparse top 5 (inner product of the sparse vectors):"
psql -c "SELECT id, round((-(r.sparse <#> q.s))::numeric, 4) AS score, left(text, 70) AS text FROM $T r, $Q q WHERE id <> $q ORDER BY r.sparse <#> q.s LIMIT 5"
echo "Reciprocal-rank fusion of the two top-50 lists (score = sum of 1 / (60 + rank)):"
psql -c "WITH dense AS (SELECT id, row_number() OVER (ORDER BY r.embedding <#> q.e) AS rank FROM $T r, $Q q WHERE id <> $q ORDER BY r.embedding <#> q.e LIMIT 50),
              sparse AS (SELECT id, row_number() OVER (ORDER BY r.sparse <#> q.s) AS rank FROM $T r, $Q q WHERE id <> $q ORDER BY r.sparse <#> q.s LIMIT 50)
         SELECT f.id, round(sum(1.0 / (60 + f.rank)), 5) AS rrf, min(f.rank) AS best_rank, left(min(t.text), 70) AS text
           FROM (SELECT * FROM dense UNION ALL SELECT * FROM sparse) f JOIN $T t USING (id)
          GROUP BY f.id ORDER BY rrf DESC, f.id LIMIT 5"
echo "Stop the server with: scripts/postgres.sh stop"
