#!/usr/bin/env bash
# Streaming demo: a local Kafka broker, 300 review snippets as JSON messages, and the real-time
# feedback pipeline (sentiment + entities, exactly once) from Kafka to Kafka.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow}"
RUN="$(date +%s)"
IN="feedback-$RUN"; OUT="feedback-$RUN.enriched"; DLQ="feedback-$RUN.dlq"
N=$(wc -l < pipelines/sample/feedback.jsonl)
mkdir -p out/stream-demo

bash scripts/kafka.sh start
bash scripts/kafka.sh topic "$IN" 4
bash scripts/kafka.sh topic "$OUT" 4
bash scripts/kafka.sh topic "$DLQ" 1
bash scripts/kafka.sh produce "$IN" < pipelines/sample/feedback.jsonl
echo "[demo] $N messages on $IN; starting the worker (pipelines/feedback-stream.yaml)"

"$BIN" run pipelines/feedback-stream.yaml --no-progress \
  --set "source.kafka.topics=[\"$IN\"]" --set "source.kafka.group_id=demo-$RUN" \
  --set "sink.kafka.topic=\"$OUT\"" --set "sink.errors.topic=\"$DLQ\"" \
  > out/stream-demo/worker.out 2> out/stream-demo/worker.log &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT

# Wait for every enriched message (read_committed), then stop the worker gracefully.
bash scripts/kafka.sh consume "$OUT" "$N" 2>/dev/null > out/stream-demo/enriched.txt
kill -TERM "$pid"
wait "$pid"
trap - EXIT
cat out/stream-demo/worker.out
echo "[demo] first enriched messages (key, JSON value) from $OUT:"
head -n 3 out/stream-demo/enriched.txt | cut -c1-400
echo "[demo] all $(wc -l < out/stream-demo/enriched.txt) messages: out/stream-demo/enriched.txt; worker log: out/stream-demo/worker.log"
