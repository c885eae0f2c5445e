#!/usr/bin/env bash
# Run the whole test suite (unit and integration tests) and close with one line of totals.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Style holds on every landing: formatting and lints first (fast to fail).
cargo fmt --all -- --check || { echo "cargo fmt: the code is not formatted (run: make fmt)"; echo "tests: 0 passed, 1 failed"; exit 1; }
cargo clippy --workspace --all-targets --locked -- -D warnings || { echo "cargo clippy: warnings (fix them)"; echo "tests: 0 passed, 1 failed"; exit 1; }
# Models only the tests use (the pretrained all-mpnet-base-v2 for the export test).
bash scripts/test_models.sh || { echo "scripts/test_models.sh failed"; echo "tests: 0 passed, 1 failed"; exit 1; }
# The streaming tests need a real Kafka broker on 127.0.0.1:9092.
started_kafka=0
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
  bash scripts/kafka.sh start
  started_kafka=1
fi
# The vector-store tests need a real Postgres with pgvector on 127.0.0.1:55432.
started_pg=0
if ! bash scripts/postgres.sh status >/dev/null 2>&1; then
  bash scripts/postgres.sh start
  started_pg=1
fi
# The object-storage tests need a real S3 server (SeaweedFS) on 127.0.0.1:39000.
started_s3=0
if ! bash scripts/s3.sh status >/dev/null 2>&1; then
  bash scripts/s3.sh start
  started_s3=1
fi
log=$(mktemp)
cargo test --locked --all-targets --no-fail-fast -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .*; ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
rm -f "$log"
if [ "$started_kafka" = 1 ]; then bash scripts/kafka.sh stop; fi
if [ "$started_pg" = 1 ]; then bash scripts/postgres.sh stop; fi
if [ "$started_s3" = 1 ]; then bash scripts/s3.sh stop; fi
# The Python package: its wheel built and tested with real Spark (local mode) and Ray engines,
# against the command-line binary the Rust tests just built.
pylog=$(mktemp)
bash scripts/python_env.sh test -q -W ignore::FutureWarning -W ignore::DeprecationWarning 2>&1 | tee "$pylog"
pystatus=${PIPESTATUS[0]}
pysummary=$(grep -E '^[=]* ?[0-9]+ (passed|failed)|^[=]* ?[0-9]+ (passed|failed|error)' "$pylog" | tail -1)
pypassed=$(echo "$pysummary" | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+' || echo 0)
pyfailed=$(( $(echo "$pysummary" | grep -Eo '[0-9]+ failed' | grep -Eo '[0-9]+' || echo 0) + $(echo "$pysummary" | grep -Eo '[0-9]+ errors?' | grep -Eo '[0-9]+' || echo 0) ))
if [ "$pystatus" != 0 ] && [ "$pyfailed" = 0 ]; then pyfailed=1; fi
rm -f "$pylog"
passed=$((passed + pypassed)); failed=$((failed + pyfailed))
if [ "$status" = 0 ]; then status=$pystatus; fi
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
