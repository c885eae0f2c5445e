#!/usr/bin/env bash
# Kafka figures of two builds in one run, on the same broker and backlogs:
#   rebalance  3 exactly-once workers (Kafka -> sentiment -> Kafka, the tiny fixture model, so
#              that the pipeline around the model sets the pace) share a 12-partition backlog;
#              the third leaves and rejoins every 20 s for 3 minutes. Records/s (distinct
#              records in the read_committed output over the run) and duplicates.
#   acks       one at-least-once worker, Kafka -> Kafka in micro-batches of 16 records, through
#              a 40,000-record backlog: records/s.
#   bash bench/stream_faults.sh OLD_BIN NEW_BIN [SECONDS=180]     (STEPS="acks:after ..." for some)
# Prints one JSON object per build and figure. Needs the broker (scripts/kafka.sh start).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLD=$1; NEW=$2; SECS=${3:-180}
RUN=$(date +%s); DIR=.bench/faults/$RUN
mkdir -p "$DIR"
bash scripts/kafka.sh start >&2
MODEL=$(pwd)/tests/fixtures/tasks/bert-sentiment
python3 - 600000 > "$DIR/backlog.txt" <<'PY'
import json, sys
lines = [json.loads(l)["text"].replace("\n", " ") for l in open("pipelines/sample/feedback.jsonl")]
for i in range(int(sys.argv[1])):
    print(lines[i % len(lines)])
PY
head -n 40000 "$DIR/backlog.txt" > "$DIR/small.txt"

pipeline() { # name topic group out dlq exactly_once window [metrics port]
  cat > "$DIR/$1.yaml" <<YAML
source:
  kafka:
    bootstrap_servers: 127.0.0.1:9092
    topics: [$2]
    group_id: $3
    max_wait_ms: 100
    properties: {session.timeout.ms: '6000', heartbeat.interval.ms: '500'}
tasks:
  sentiment: {model: $MODEL}
batching: {window_records: $7}
metrics: {listen: 127.0.0.1:${8:-0}}
sink:
  kafka: {topic: $4, exactly_once: $6, transactional_id: $3-$1}
  errors: {topic: $5}
YAML
  echo "$DIR/$1.yaml"
}

# Input, output and dead-letter topics for one run: topics NAME PARTITIONS.
topics() {
  bash scripts/kafka.sh topic "$1" "$2" >&2 2>/dev/null
  bash scripts/kafka.sh topic "$1.out" "$2" >&2 2>/dev/null
  bash scripts/kafka.sh topic "$1.dlq" 1 >&2 2>/dev/null
}

# Distinct ids and duplicates in a topic's read_committed output.
count() {
  KAFKA_CONSUME_IDLE_MS=15000 bash scripts/kafka.sh consume "$1" 100000000 2>/dev/null | python3 -c '
import sys, json, collections
c = collections.Counter()
for line in sys.stdin:
    line = line.rstrip("\n")
    if "\t" not in line: continue
    c[json.loads(line.split("\t", 1)[1])["id"]] += 1
print(len(c), sum(n - 1 for n in c.values()))'
}

rebalance() { # label bin
  local label=$1 bin=$2
  local t="rb-$label-$RUN"
  topics "$t" 12
  bash scripts/kafka.sh produce "$t" < "$DIR/backlog.txt" 2>/dev/null
  local pids=()
  for w in a b c; do
    "$bin" run "$(pipeline "$label-$w" "$t" "g-$t" "$t.out" "$t.dlq" true 256)" --no-progress \
      > "$DIR/$label-$w.summary" 2> "$DIR/$label-$w.log" &
    pids+=($!)
  done
  local start c=${pids[2]} up=1 changes=0
  start=$(date +%s)
  while (( $(date +%s) - start < SECS )); do
    sleep 20
    if ((up)); then kill -TERM "$c"; wait "$c" || true; up=0
    else "$bin" run "$DIR/$label-c.yaml" --no-progress >> "$DIR/$label-c.summary" 2>> "$DIR/$label-c.log" & c=$!; up=1; fi
    changes=$((changes + 1))
  done
  local elapsed
  elapsed=$(( $(date +%s) - start ))
  kill -TERM "${pids[0]}" "${pids[1]}"; ((up)) && kill -TERM "$c"
  wait || true
  read -r distinct dups < <(count "$t.out")
  local rewinds; rewinds=$(cat "$DIR/$label"-*.log | grep -c "rewound to the committed offsets" || true)
  printf '{"figure": "rebalance", "build": "%s", "seconds": %d, "membership_changes": %d, "records": %d, "records_per_second": %.0f, "duplicates": %d, "rewinds": %d}\n' \
    "$label" "$elapsed" "$changes" "$distinct" "$(python3 -c "print($distinct/$elapsed)")" "$dups" "$rewinds"
}

acks() { # label bin
  local label=$1 bin=$2
  local t="ack-$label-$RUN"
  topics "$t" 4
  bash scripts/kafka.sh produce "$t" < "$DIR/small.txt" 2>/dev/null
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local p; p=$(pipeline "ack-$label" "$t" "g-$t" "$t.out" "$t.dlq" false 16 "$port")
  local start; start=$(date +%s.%N)
  "$bin" run "$p" --no-progress > "$DIR/ack-$label.summary" 2> "$DIR/ack-$label.log" &
  local pid=$!
  # Done when every record is written (the metrics endpoint counts them).
  until curl -s "http://127.0.0.1:$port/metrics" | awk '/^bertflow_records_out_total/ {n = $2} END {exit !(n >= 40000)}'; do sleep 0.2; done
  local end; end=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  printf '{"figure": "acks", "build": "%s", "records": 40000, "seconds": %.1f, "records_per_second": %.0f}\n' \
    "$label" "$(python3 -c "print($end-$start)")" "$(python3 -c "print(40000/($end-$start))")"
}

# STEPS picks figures and builds, e.g. STEPS="rebalance:after".
for step in ${STEPS:-acks:before acks:after rebalance:before rebalance:after}; do
  fig=${step%%:*}; build=${step##*:}
  bin=$OLD; [ "$build" = after ] && bin=$NEW
  "$fig" "$build" "$bin"
done
