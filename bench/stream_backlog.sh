#!/usr/bin/env bash
# Streaming under a backlog: N messages waiting on a topic, one worker (Kafka -> embeddings ->
# Parquet) started against them; its resident memory is sampled every few seconds while it
# works through the backlog, then it is stopped with SIGTERM. With backpressure the model sets
# the pace and the source pauses its partitions, so memory stays flat however large the backlog.
#   bash bench/stream_backlog.sh [N=60000] [SECONDS=90]
# Prints one JSON object (samples, throughput) for docs/benchmarks.md. Needs a release build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-60000}; SECS=${2:-90}
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
RUN=$(date +%s); TOPIC="backlog-$RUN"; OUT=.bench/stream/$RUN
mkdir -p "$OUT"
bash scripts/kafka.sh start >&2
bash scripts/kafka.sh topic "$TOPIC" 4 >&2 2>/dev/null
# The sample's texts, repeated up to N lines.
python3 - "$N" > "$OUT/input.txt" <<'PY'
import json, sys
lines = [json.loads(l)["text"].replace("\n", " ") for l in open("pipelines/sample/feedback.jsonl")]
n = int(sys.argv[1])
for i in range(n):
    print(lines[i % len(lines)])
PY
bash scripts/kafka.sh produce "$TOPIC" < "$OUT/input.txt" 2>/dev/null
"$BIN" run pipelines/vector-feed.yaml --no-progress \
  --set "source.kafka.topics=[\"$TOPIC\"]" --set "source.kafka.group_id=backlog-$RUN" \
  --set "sink.parquet.path=\"$OUT/vectors\"" --set "sink.errors.path=\"$OUT/vectors/errors\"" \
  --set metrics.listen=127.0.0.1:0 > "$OUT/summary.txt" 2> "$OUT/worker.log" &
pid=$!
samples=()
for ((t = 0; t < SECS; t += 5)); do
  sleep 5
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  samples+=("[$((t + 5)), $((rss / 1024))]")
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
kill -TERM "$pid"; wait "$pid"
records=$(awk '/records/ {print $2; exit}' "$OUT/summary.txt")
printf '{"backlog": %d, "seconds": %d, "records_done": %s, "peak_rss_mib": %d, "rss_mib_by_second": [%s]}\n' \
  "$N" "$SECS" "${records:-0}" $((hwm / 1024)) "$(IFS=,; echo "${samples[*]}")"
