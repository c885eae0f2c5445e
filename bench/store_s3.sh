#!/usr/bin/env bash
# Object storage against local files, same pipeline, same run, on a local S3 server
# (scripts/s3.sh, SeaweedFS, signed requests):
#  1. throughput: MiniLM embeddings of the bundled sample (pipelines/sample/reviews.parquet,
#     1,000 reviews, COPIES times over) read from local files and written to a local file, then
#     read from s3:// objects and written to an s3:// object, ROUNDS times interleaved;
#  2. memory: peak RSS of reading a 2 GB Parquet object (random text, uncompressed, row groups of
#     about 64 MB) to the end with `bertflow validate --scan`, against the same file on disk.
# Prints JSON for bench/report.py.
#   bench/store_s3.sh [COPIES] [ROUNDS] [BIG_MB]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COPIES="${1:-3}"
ROUNDS="${2:-3}"
BIG_MB="${3:-2048}"
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
PY="${BERTFLOW_SETUP_PYTHON:-${XDG_CACHE_HOME:-$HOME/.cache}/bertflow/setup-venv/bin/python}"
OUT=.bench/store_s3
mkdir -p "$OUT"
# A server of its own, removed at the end (the big object is 2 GB).
bash scripts/s3.sh reset --name bench >&2
bash scripts/s3.sh start --name bench --port 39100 >&2
trap 'bash scripts/s3.sh reset --name bench >&2' EXIT
eval "$(bash scripts/s3.sh env --name bench --port 39100)"
RUN="bench-$(date +%s)"
PREFIX="s3://bertflow/$RUN"

rm -rf "$OUT/in"; mkdir -p "$OUT/in"
for c in $(seq 1 "$COPIES"); do cp pipelines/sample/reviews.parquet "$OUT/in/copy-$c.parquet"; done
N=$((COPIES * 1000))
"$PY" - "$OUT/in" "$RUN" <<'PYEOF' >&2
import os, sys, pyarrow.fs as fs, pyarrow.parquet as pq
src, run = sys.argv[1], sys.argv[2]
s3 = fs.S3FileSystem(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                     endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
for name in sorted(os.listdir(src)):
    fs.copy_files(os.path.join(src, name), f"bertflow/{run}/in/{name}", destination_filesystem=s3)
PYEOF

cat > "$OUT/pipeline.yaml" <<YAML
source:
  parquet:
    path: $OUT/in
    text_column: text
tasks:
  embed:
    model: models/all-MiniLM-L6-v2
runtime:
  intra_op_threads: 2
sink:
  passthrough: [source]
  parquet:
    path: $OUT/out.parquet
YAML

# records/s of one run, from its summary.
run() { "$BIN" run "$OUT/pipeline.yaml" --no-progress "$@" | awk '/throughput/ {print $2}'; }

declare -a local s3
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r" >&2
  local+=("$(run)")
  s3+=("$(run --input "$PREFIX/in/" --output "$PREFIX/out-$r.parquet")")
done

# Memory: one big object, read to the end without models.
BIG="$OUT/big.parquet"
if [ "$(stat -c %s "$BIG" 2>/dev/null || echo 0)" -lt $((BIG_MB * 1024 * 1024 * 95 / 100)) ]; then
  echo "== writing a ${BIG_MB} MB Parquet file" >&2
  "$PY" - "$BIG" "$BIG_MB" <<'PYEOF' >&2
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq
path, mb = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)
letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
text_len, rows_per_group = 1000, 64_000          # ~64 MB of text per row group
groups = max(1, mb * 1024 * 1024 // (text_len * rows_per_group))
schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
with pq.ParquetWriter(path, schema, compression="none") as w:
    for g in range(groups):
        raw = letters[rng.integers(0, len(letters), size=text_len * rows_per_group)]
        offsets = np.arange(0, text_len * (rows_per_group + 1), text_len, dtype=np.int32)
        text = pa.StringArray.from_buffers(rows_per_group, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes()))
        ids = pa.array(np.arange(g * rows_per_group, (g + 1) * rows_per_group))
        w.write_table(pa.table({"id": ids, "text": text}, schema=schema), row_group_size=rows_per_group)
PYEOF
fi
BIG_BYTES=$(stat -c %s "$BIG")
"$PY" - "$BIG" "$RUN" <<'PYEOF' >&2
import os, sys, pyarrow.fs as fs
s3 = fs.S3FileSystem(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                     endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
fs.copy_files(sys.argv[1], f"bertflow/{sys.argv[2]}/big/big.parquet", destination_filesystem=s3)
PYEOF
scan() { # input -> "records peak_mib seconds"
  "$BIN" validate "$OUT/pipeline.yaml" --scan --set "source.parquet.path=\"$1\"" --set "sink.passthrough=[]" |
    awk '/^scanned/ {for (i=1;i<=NF;i++) {if ($i=="records,") r=$(i-1); if ($i=="memory") m=$(i+1); if ($i=="s") s=$(i-1)}} END {print r, m, s}'
}
read -r big_records s3_peak s3_secs < <(scan "$PREFIX/big/big.parquet")
read -r _ local_peak local_secs < <(scan "$BIG")
s3_secs=${s3_secs#(}; local_secs=${local_secs#(}

join() { local IFS=,; echo "$*"; }
cat <<JSON
{"records": $N, "rounds": $ROUNDS,
 "local": [$(join "${local[@]}")], "s3": [$(join "${s3[@]}")],
 "big_object_bytes": $BIG_BYTES, "big_object_records": $big_records,
 "scan_s3_peak_rss_mib": $s3_peak, "scan_s3_seconds": $s3_secs,
 "scan_local_peak_rss_mib": $local_peak, "scan_local_seconds": $local_secs,
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"}
JSON
