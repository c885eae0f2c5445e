#!/usr/bin/env bash
# Host-path benchmark (part of `make bench`; never run in CI): embeddings from a "null model", a
# one-layer BERT 32 wide (seeded random weights) with all-MiniLM-L6-v2's real tokenizer, so the
# model costs almost nothing and bertflow's own stages (read, tokenize, batch, pool, write) set
# the pace. `bertflow bench` runs the pipeline, then the same batches through a bare ONNX Runtime
# session; the ratio says how close the host path comes to feeding the model at raw speed.
# Runs with 1 and 2 ONNX Runtime threads over the bench corpus repeated 5 times (51,000 records).
# Prints a Markdown table with the time of every stage.
#   bench/null_model.sh [REPEATS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/bertflow/target}/release/bertflow"
CACHE="${BERTFLOW_CACHE:-$HOME/.cache/bertflow}"
REFENV="${REFENV:-$CACHE/refenv}"
PY="$REFENV/bin/python"
REPEATS="${1:-5}"
OUT=.bench/null
MODEL="$OUT/null-model"
mkdir -p "$OUT/out"
[ -f .bench/corpus.parquet ] || "$PY" bench/make_corpus.py

if [ ! -f "$MODEL/model.onnx" ]; then
  rm -rf "$MODEL" && mkdir -p "$MODEL"
  src=models/all-MiniLM-L6-v2
  cp -r "$src"/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt,modules.json,sentence_bert_config.json,1_Pooling} "$MODEL/"
  "$PY" - "$src" "$MODEL" <<'PY'
import json, pathlib, sys
import torch
from transformers import BertConfig, BertModel
src, dst = map(pathlib.Path, sys.argv[1:])
cfg = json.loads((src / "config.json").read_text())
cfg.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
torch.manual_seed(0)
model = BertModel(BertConfig(**cfg), add_pooling_layer=False)
model.save_pretrained(dst, safe_serialization=True)
# 1_Pooling sizes the embedding: 32 wide now.
pool = dst / "1_Pooling" / "config.json"
p = json.loads(pool.read_text()); p["word_embedding_dimension"] = 32; pool.write_text(json.dumps(p))
PY
  "$PY" scripts/bert_to_onnx.py "$MODEL" "$MODEL/model.onnx" >&2
  rm -f "$MODEL/model.safetensors"
fi

CORPUS="$OUT/corpus_x$REPEATS.parquet"
if [ ! -f "$CORPUS" ]; then
  "$PY" - .bench/corpus.parquet "$CORPUS" "$REPEATS" <<'PY'
import sys
import pyarrow as pa, pyarrow.parquet as pq
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = pq.read_table(src)
ids = [f"{i}-{r}" for r in range(n) for i in t["id"].to_pylist()]
pq.write_table(pa.table({"id": ids, "text": t["text"].to_pylist() * n}), dst)
PY
fi
ROWS=$("$PY" -c "import pyarrow.parquet as pq,sys; print(pq.ParquetFile(sys.argv[1]).metadata.num_rows)" "$CORPUS")

for threads in 1 2; do
  cat > "$OUT/t$threads.yaml" <<YAML
source:
  parquet:
    path: $CORPUS
    id_column: id
tasks:
  embed: {model: $MODEL}
runtime:
  intra_op_threads: $threads
sink:
  parquet:
    path: $OUT/out/t$threads.parquet
YAML
  echo "== bertflow bench: null model, $threads ONNX Runtime thread(s)" >&2
  "$BIN" bench "$OUT/t$threads.yaml" --json "$OUT/t$threads.json" >&2
done
# The tokenizer library alone on the same texts (Python binding of the same Rust library, every
# core, no padding, cut at the task's 256 tokens): the floor of the tokenize stage.
"$PY" - "$CORPUS" "$MODEL/tokenizer.json" > "$OUT/tokenizer.json" <<'PY'
import json, sys, time
import pyarrow.parquet as pq
import tokenizers
texts = pq.read_table(sys.argv[1])["text"].to_pylist()
tok = tokenizers.Tokenizer.from_file(sys.argv[2])
tok.no_padding()
tok.enable_truncation(256)
tok.encode_batch_fast(texts[:1000])
t = time.perf_counter()
n = sum(len(e.ids) for e in tok.encode_batch_fast(texts))
print(json.dumps({"seconds": time.perf_counter() - t, "tokens": n, "version": tokenizers.__version__}))
PY
python3 - "$OUT" "$ROWS" <<'PY'
import json, os, pathlib, sys
d, rows = pathlib.Path(sys.argv[1]), int(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}, {os.cpu_count()} cores; null model (1 layer, 32 wide, MiniLM's tokenizer); "
      f"the bench corpus repeated ({rows:,} records)\n")
print("| ORT threads | records/s | raw ORT / bertflow time | after start-up | tokenize s | model s | post-process s | write s | raw ORT s | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for t in (1, 2):
    b = json.loads((d / f"t{t}.json").read_text())
    print(f"| {t} | {b['records_per_second']:,.0f} | {b['ratio_to_raw_ort']:.2f} | {b['ratio_to_raw_ort_after_startup']:.2f} | "
          f"{b['tokenize_seconds']:.2f} | {b['model_seconds']:.2f} | {b['postprocess_seconds']:.2f} | "
          f"{b['write_seconds']:.2f} | {b['raw_ort_seconds']:.2f} | {b['peak_rss_mib']:.0f} |")
t = json.loads((d / "tokenizer.json").read_text())
print(f"\nThe tokenizers library alone (Python binding {t['version']}, `encode_batch_fast` on every core, "
      f"no padding, cut at 256 tokens) takes {t['seconds']:.2f} s for the same {rows:,} texts "
      f"({t['tokens']:,} tokens): the floor of the tokenize stage on this machine.")
PY
