"""Turn the JSON figures under .bench/ into docs/benchmarks.md."""

import json
import os
import pathlib
import platform
import subprocess
import sys


def load(d, name):
    p = pathlib.Path(d) / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(d):
    py = load(d, "python")
    rows = {n: load(d, n) for n in ["embed", "embed_fixed_batches", "embed_int8", "embed_no_graph_opt", "embed_1_thread", "embed_chunked", "sentiment", "ner", "qa", "all"]}
    n = py["records"] if py else rows["embed"]["records"]
    print("# Benchmarks\n")
    print(f"Measured by `make bench` (bench/run.sh) on {cpu()}, {os.cpu_count()} cores, "
          f"{platform.system()} {platform.release()}; same machine, same input, same thread count "
          f"({py['threads'] if py else 2}) for every figure. CPU only: no GPU was available to this "
          "run (see the GPU section).\n")
    print(f"Input: `.bench/corpus.parquet`, {n} records: 10,000 VADER snippets (movie reviews, "
          "tweets, Amazon reviews, NYT editorials) and 200 long documents of 30 NYT snippets each "
          "(bench/make_corpus.py).\n")
    print("## bertflow, Parquet to Parquet\n")
    print("| run | records/s | tokens/s | padding | tokenize s | model s | post-process s | write s | total s | raw ORT s (same batches) | vs raw ORT | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if not r:
            continue
        print(f"| {name} | {r['records_per_second']:.1f} | {r['tokens_per_second']:.0f} | "
              f"{r['padding_ratio']*100:.1f}% | {r['tokenize_seconds']:.1f} | {r['model_seconds']:.1f} | "
              f"{r['postprocess_seconds']:.1f} | {r['write_seconds']:.1f} | {r['seconds']:.1f} | "
              f"{r['raw_ort_seconds']:.1f} | {r['ratio_to_raw_ort']:.2f}x | {r['peak_rss_mib']:.0f} |")
    print("\n`vs raw ORT` is the time bare ONNX Runtime sessions (Rust, same models) take for exactly "
          "the batches bertflow formed, divided by bertflow's end-to-end time: 1.00x would mean no "
          "overhead at all. Tokenize and post-process times overlap with inference (separate threads), "
          "so the stage times add up to more than the total.\n")
    if py:
        print("## Against the Python stack\n")
        py_t = (pathlib.Path(d) / "python.json").stat().st_mtime
        rs_t = max((pathlib.Path(d) / f"{k}.json").stat().st_mtime for k, v in rows.items() if v)
        if rs_t - py_t > 600:
            print("The Python figures below were measured on the same machine, corpus and thread "
                  "count by an earlier invocation of bench/run.sh, which keeps `.bench/python.json` "
                  "(delete it to measure them again, about 11 minutes); the bertflow figures are "
                  "from the latest invocation.\n")
        print("| comparison | Python s | bertflow s | bertflow speed-up |")
        print("|---|---|---|---|")
        e, a = rows.get("embed"), rows.get("all")
        if e:
            print(f"| MiniLM embeddings: sentence-transformers `encode` (torch, batch 32) | {py['st_encode_seconds']:.1f} | {e['seconds']:.1f} | {py['st_encode_seconds']/e['seconds']:.2f}x |")
        if a:
            hf = py["hf_pipelines_seconds"]
            ox = py["ort_pipelines_seconds"]
            three = sum(rows[t]["seconds"] for t in ["sentiment", "ner", "qa"] if rows.get(t))
            print(f"| sentiment + NER + QA: transformers pipelines one after another (torch) | {hf:.1f} | {three:.1f} (three runs) | {hf/three:.2f}x |")
            print(f"| sentiment + NER + QA: the same record by record via Python onnxruntime | {ox:.1f} | {three:.1f} (three runs) | {ox/three:.2f}x |")
            print(f"| all four tasks: sentence-transformers + three pipelines (torch) vs one bertflow pass | {hf + py['st_encode_seconds']:.1f} | {a['seconds']:.1f} | {(hf + py['st_encode_seconds'])/a['seconds']:.2f}x |")
        print("\nPer task, Python (seconds): transformers pipelines "
              + ", ".join(f"{k} {v:.1f}" for k, v in py["hf_pipelines_per_task"].items())
              + "; onnxruntime loop "
              + ", ".join(f"{k} {v:.1f}" for k, v in py["ort_pipelines_per_task"].items())
              + f". Python peak RSS {py['peak_rss_mib']:.0f} MiB.\n")
        print("The torch pipelines use MiniLM-L6 models of the stand-ins' exact architecture (the "
              "all-MiniLM-L6-v2 base with a classification, token-classification or QA head): the "
              "stand-ins themselves exist only as int8 ONNX files, so their compute is the same but "
              "their labels are not. The onnxruntime loop runs the stand-in ONNX files record by "
              "record, as the pipelines do, with only softmax/argmax as post-processing.\n")
    runs = sorted(pathlib.Path(d).glob("stream_backlog_*.json"),
                  key=lambda f: json.loads(f.read_text())["backlog"])
    if runs:
        print("## Streaming under a backlog\n")
        print("`bench/stream_backlog.sh N SECONDS`: N short review snippets wait on a 4-partition topic; "
              "one worker (`pipelines/vector-feed.yaml`: Kafka -> MiniLM embeddings -> rolling Parquet) "
              "starts against them and its resident memory is sampled every 5 s until it is stopped "
              "with SIGTERM. Backpressure pauses the partitions while the model is busy, so memory "
              "depends on the queues, not on the backlog.\n")
        print("| backlog (messages) | ran s | records done | records/s | RSS MiB, every 5 s | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for f in runs:
            r = json.loads(f.read_text())
            rss = " ".join(str(m) for _, m in r["rss_mib_by_second"])
            print(f"| {r['backlog']:,} | {r['seconds']} | {r['records_done']:,} | "
                  f"{r['records_done'] / r['seconds']:.0f} | {rss} | {r['peak_rss_mib']} |")
        print()
    pg = pathlib.Path(d) / "sink_postgres.json"
    if pg.exists():
        print(postgres_section(json.loads(pg.read_text())))
    st = pathlib.Path(d) / "store_s3.json"
    if st.exists():
        print(store_section(json.loads(st.read_text())))
    prec = pathlib.Path(d) / "precision" / "table.md"
    if prec.exists():
        print(precision_section(prec.read_text()))
    hybrid = pathlib.Path(d) / "hybrid" / "table.md"
    if hybrid.exists():
        print(hybrid_section(hybrid.read_text()))
    pairs = pathlib.Path(d) / "pairs" / "table.md"
    if pairs.exists():
        print(pairs_section(pairs.read_text()))
    null = pathlib.Path(d) / "null" / "table.md"
    if null.exists():
        print(null_section(null.read_text()))
    engines = pathlib.Path(d) / "engines.json"
    if engines.exists():
        print(engines_section(json.loads(engines.read_text())))
    print(open(pathlib.Path(__file__).parent / "notes.md").read())


def precision_section(table):
    """fp32, fused fp32 and int8 against the Python stack (bench/precision.sh)."""
    return ("## CPU precisions against the Python stack\n\n"
            "`bench/precision.sh`, one run: the bundled sample (1,000 reviews, mostly short), "
            "MiniLM-L6 embeddings and all four tasks in one pass, bertflow with the graph the "
            "set-up exports, the fused fp32 variant and the int8 variant made by `bertflow models "
            "optimize`, and through OpenVINO (`runtime.execution_provider: openvino`) fp32 and, on "
            "CPUs with AMX-BF16 or AVX512-BF16, the bf16 variants `models optimize --precision bf16 "
            "--execution-provider openvino` made and judged, against sentence-transformers `encode` "
            "(torch, its ONNX backend fp32 and its dynamically quantized int8 export for the CPU's "
            "instructions, and its OpenVINO backend at its default precision and with a bf16 hint; "
            "embeddings are compared with the fastest of them) and the text-classification, "
            "token-classification and question-answering pipelines (torch fp32, batch_size=32, "
            "same threads, same texts). The sentiment, NER and QA models are fp32 heads seeded on "
            "the all-MiniLM-L6-v2 base (the stand-ins' architecture; the stand-ins themselves are "
            "int8 already), shared by both sides. Cosines are to sentence-transformers' own "
            "embeddings of the same texts.\n\n" + table)


def hybrid_section(table):
    """Dense cut and quantized, sparse in and outside the graph (bench/hybrid.sh)."""
    return ("## Hybrid vectors: shorter, quantized and sparse\n\n"
            "`bench/hybrid.sh`, one run: the bundled sample, `bertflow bench` of dense MiniLM-L6 "
            "embeddings as float32 and cut to 128 dimensions written as ubinary bits, and of sparse "
            "vectors from the SPLADE stand-in (`models/splade-standin`, `max_active_dims: 128`) with "
            "the pooling outside the graph, inside the graph the exporter writes (`bert_to_onnx.py "
            "--tied-mlm --splade`) and inside the fused variant `bertflow models optimize "
            "--precision fp32 --pool` makes of the unpooled model. `raw ORT / bertflow time`: the "
            "same batches through bare sessions of the same graph over bertflow's whole run.\n\n"
            + table)


def engines_section(r):
    """bertflow inside Spark and Ray against the Python stack in the same engines (bench/engines.sh)."""
    n = r["records"]
    rows = [
        ("Spark `local[2]`, four tasks", "bertflow.spark.enrich (mapInArrow)", "spark_bertflow"),
        ("", "sentence-transformers + transformers pipelines in a pandas_udf (batch_size 32)", "spark_python"),
        ("", "bertflow command line, same records (one process, 2 threads)", "cli"),
        ("Ray Data, 2 actors, embeddings", "bertflow.ray.enrich (map_batches, callable class)", "ray_bertflow"),
        ("", "sentence-transformers callable class in map_batches", "ray_python"),
    ]
    out = ["## Inside Spark and Ray\n",
           f"`bench/engines.sh`, one run: the first {n:,} records of the bench corpus. Spark in local "
           "mode with 2 cores (4 partitions, one ONNX Runtime or torch thread per task); Ray started "
           "with 2 CPUs (4 blocks, 2 actors of 1 CPU and one thread each). Every job is forced to "
           "its end (Spark's noop writer, Ray's materialize) and timed from its submission: Python "
           "workers or actors start and load their models inside the time. The four tasks run fp32 "
           "graphs of the same architecture on both sides (all-MiniLM-L6-v2 and task heads seeded "
           "on its body, as in the CPU precision runs).\n",
           "| engine | job | seconds | records/s |", "|---|---|---:|---:|"]
    for engine, job, k in rows:
        out.append(f"| {engine} | {job} | {r[k + '_seconds']:.1f} | {r[k + '_records_per_second']:.1f} |")
    out.append("")
    out.append(f"Spark: bertflow **{r['spark_vs_python']:.2f}x** the Python job (goal >= 2x) and "
               f"**{r['spark_vs_cli']:.2f}x** the command line (goal >= 0.9x). Ray Data, embeddings: "
               f"**{r['ray_vs_python']:.2f}x** the sentence-transformers class (goal >= 1.5x).\n")
    return "\n".join(out)


def null_section(table):
    """The host path against raw ONNX Runtime with a model that costs nothing (bench/null_model.sh)."""
    return ("## Host path: a null model\n\n"
            "`bench/null_model.sh`: embeddings from a one-layer BERT 32 wide (seeded weights) with "
            "all-MiniLM-L6-v2's real tokenizer, so the model costs almost nothing and bertflow's "
            "own stages (read, tokenize, batch, pool, write) set the pace; `bertflow bench` then "
            "runs the same batches through a bare ONNX Runtime session. With 1 and 2 ONNX Runtime "
            "threads; the tokenizer runs on every core either way.\n\n" + table)


def pairs_section(table):
    """Zero-shot and cross-encoder against transformers / sentence-transformers (bench/pairs.sh)."""
    return ("## Pair tasks: zero-shot labels and cross-encoder scores\n\n"
            "`bench/pairs.sh`, one run: the bundled sample's non-empty texts, zero-shot "
            "classification with 10 labels (10 model inputs per record) against transformers' "
            "zero-shot-classification pipeline, and cross-encoder scores for 4 queries against "
            "sentence-transformers' `CrossEncoder.predict` (torch fp32, batch_size=32, same "
            "threads, same texts). Both models are MiniLM-L6 (the all-MiniLM-L6-v2 body with a "
            "seeded NLI head and a seeded one-logit head: the size of the MiniLM NLI models and "
            "ms-marco cross-encoders users run), fp32 on both sides. `raw ORT / bertflow time` is "
            "`bertflow bench`'s ratio: the same pair batches through bare ONNX Runtime sessions "
            "over bertflow's whole run (1.0 would be no overhead at all).\n\n" + table)


def postgres_section(r):
    """The Postgres sink against the Parquet sink (bench/sink_postgres.sh)."""
    med = lambda v: sorted(v)[len(v) // 2]
    base = med(r["parquet"])
    out = ["## Postgres sink against the Parquet sink\n",
           f"`bench/sink_postgres.sh`: MiniLM embeddings + sentiment of {r['records']:,} review "
           f"snippets (the bundled sample, three times over), `bertflow run` into a Parquet file, "
           f"into a pgvector table in `upsert` mode (staging `COPY` + merge, HNSW cosine index) and "
           f"in `insert` mode (`COPY` into the table, HNSW index), {r['rounds']} rounds "
           f"interleaved, local PostgreSQL 18.3 + pgvector 0.8.2; CPU: {r['cpu']}, 2 threads. "
           "records/s from each run's summary (whole job, model included).\n",
           "| sink | records/s per round | median | vs Parquet |", "|---|---|---|---|"]
    for key, name in [("parquet", "Parquet file"), ("postgres_upsert", "Postgres `upsert`"),
                      ("postgres_insert", "Postgres `insert`")]:
        v = r[key]
        out.append(f"| {name} | {' / '.join(f'{x:.1f}' for x in v)} | {med(v):.1f} | "
                   f"{med(v) / base:.2f}x |")
    out.append("\nEach micro-batch is one transaction written by the writer thread while the "
               "model works on the next one, so the sink's cost hides behind inference.\n")
    return "\n".join(out)


def store_section(r):
    """Object storage against local files (bench/store_s3.sh)."""
    med = lambda v: sorted(v)[len(v) // 2]
    base = med(r["local"])
    gb = r["big_object_bytes"] / 2**30
    out = ["## Object storage\n",
           f"`bench/store_s3.sh`: MiniLM embeddings of {r['records']:,} review snippets (the "
           f"bundled sample, three times over), `bertflow run` from local files to a local file, "
           f"and from `s3://` objects to an `s3://` object on a local S3 server (SeaweedFS 4.48, "
           f"signed requests), {r['rounds']} rounds interleaved; CPU: {r['cpu']}, 2 threads. "
           "records/s from each run's summary (whole job, model included).\n",
           "| input and output | records/s per round | median | vs local |", "|---|---|---|---|"]
    for key, name in [("local", "local files"), ("s3", "S3 objects")]:
        v = r[key]
        out.append(f"| {name} | {' / '.join(f'{x:.1f}' for x in v)} | {med(v):.1f} | "
                   f"{med(v) / base:.2f}x |")
    out.append(f"\nMemory: `bertflow validate --scan` reads a {gb:.2f} GiB Parquet object "
               f"({r['big_object_records']:,} records of random text, uncompressed, row groups of "
               f"about 64 MB) to the end, every record through the source, no models:\n")
    out.append("| input | peak RSS MiB | seconds | MB/s |")
    out.append("|---|---|---|---|")
    mb = r["big_object_bytes"] / 1e6
    for key, name in [("s3", "S3 object (ranged reads by row group)"), ("local", "local file")]:
        secs = r[f"scan_{key}_seconds"]
        out.append(f"| {name} | {r[f'scan_{key}_peak_rss_mib']:.0f} | {secs:.1f} | "
                   f"{mb / max(secs, 1e-9):.0f} |")
    out.append("\nThe object is never downloaded whole: memory is bounded by one row group being "
               "decoded plus the next one being fetched.\n")
    return "\n".join(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".bench")
