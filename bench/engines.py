"""Spark and Ray benchmark (`bench/engines.sh`, part of `make bench`; never run in CI).

Same machine, same records, same run:
  spark_bertflow   Spark local[2], bertflow.spark.enrich (mapInArrow), four tasks
  spark_python     the same Spark job with sentence-transformers + transformers pipelines in a
                   batched pandas_udf (batch_size 32; models loaded once per Python worker)
  cli              the bertflow command line on the same records and pipeline
  ray_bertflow     Ray Data, embeddings: bertflow.ray.enrich (map_batches, callable class)
  ray_python       Ray Data, embeddings: a sentence-transformers callable class in map_batches

Every engine job is forced to the end (Spark's noop writer, Ray's materialize). One ONNX Runtime
or torch thread per Spark task / Ray actor, two of them (2 cores). Writes one JSON object.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq

QUESTION = "Who is the review about?"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spark_python_udf(st_dir):
    """The pandas_udf of the Python baseline: embedding, sentiment, entities, answer."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    state = {}

    def models():
        if not state:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                                      AutoModelForTokenClassification, AutoTokenizer, pipeline)
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            torch.set_num_threads(1)
            tok = AutoTokenizer.from_pretrained(st_dir)
            tok.model_max_length = 512
            state["st"] = SentenceTransformer(st_dir, device="cpu")
            state["cls"] = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(st_dir, num_labels=2), tokenizer=tok, device=-1)
            state["ner"] = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(st_dir, num_labels=9), tokenizer=tok, device=-1, aggregation_strategy="simple")
            state["qa"] = pipeline("question-answering", model=AutoModelForQuestionAnswering.from_pretrained(st_dir), tokenizer=tok, device=-1)
        return state

    @pandas_udf("embedding array<float>, label string, score float, entities string, answer string")
    def enrich(texts: pd.Series) -> pd.DataFrame:
        m = models()
        t = [x or "" for x in texts.tolist()]
        emb = m["st"].encode(t, batch_size=32)
        cls = m["cls"](t, batch_size=32, truncation=True)
        ner = m["ner"](t, batch_size=32)
        ctx = [x if x.strip() else "-" for x in t]
        qa = m["qa"](question=[QUESTION] * len(ctx), context=ctx, batch_size=32)
        if isinstance(qa, dict):
            qa = [qa]
        return pd.DataFrame({
            "embedding": [list(map(float, e)) for e in emb],
            "label": [c["label"] for c in cls],
            "score": [float(c["score"]) for c in cls],
            "entities": [json.dumps([e["word"] for e in n]) for n in ner],
            "answer": [a["answer"] for a in qa],
        })

    return enrich


class STEmbedder:
    def __init__(self, st_dir):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        self.st = SentenceTransformer(st_dir, device="cpu")

    def __call__(self, batch):
        import pyarrow as pa

        emb = self.st.encode(batch.column("text").to_pylist(), batch_size=32)
        return batch.select(["id"]).append_column("embedding", pa.array(list(emb)))


def main(corpus, records, binary, st_dir):
    import pyarrow as pa
    import bertflow
    import bertflow.ray
    import bertflow.spark

    records = int(records)
    tmp = tempfile.mkdtemp()
    sub = os.path.join(tmp, "corpus.parquet")
    t = pq.read_table(corpus).slice(0, records).select(["id", "text"])
    pq.write_table(t, sub, row_group_size=512)
    out = {"records": records, "threads_per_task": 1, "tasks": 2}
    yaml_all = os.path.join(ROOT, "bench/engines.yaml")

    # The command line, same pipeline, 2 ORT threads in one process (its best on 2 cores).
    t0 = time.perf_counter()
    subprocess.run([binary, "run", yaml_all, "--no-progress", "--set", f"source.parquet.path={sub}",
                    "--set", f"sink.parquet.path={tmp}/cli.parquet"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out["cli_seconds"] = time.perf_counter() - t0

    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("bertflow-bench")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g")
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", "512")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(sub).repartition(4).cache()
    df.count()

    cwd = os.getcwd()
    os.chdir(ROOT)
    p = bertflow.Pipeline.from_yaml(yaml_all, {"runtime.intra_op_threads": 1})
    p_embed = bertflow.Pipeline.from_yaml(yaml_all, {"runtime.intra_op_threads": 1, "tasks.sentiment": None,
                                                     "tasks.ner": None, "tasks.qa": None})
    os.chdir(cwd)

    t0 = time.perf_counter()
    bertflow.spark.enrich(df, p, text_col="text", id_col="id").write.format("noop").mode("overwrite").save()
    out["spark_bertflow_seconds"] = time.perf_counter() - t0

    udf = spark_python_udf(st_dir)
    t0 = time.perf_counter()
    df.select("id", udf("text").alias("r")).write.format("noop").mode("overwrite").save()
    out["spark_python_seconds"] = time.perf_counter() - t0
    spark.stop()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ds = ray.data.read_parquet(sub).repartition(4).materialize()
    t0 = time.perf_counter()
    bertflow.ray.enrich(ds, p_embed, text_col="text", id_col="id", concurrency=2, num_cpus=1,
                        batch_size=512).materialize()
    out["ray_bertflow_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds.map_batches(STEmbedder, fn_constructor_args=(st_dir,), batch_format="pyarrow", batch_size=512,
                   concurrency=2, num_cpus=1).materialize()
    out["ray_python_seconds"] = time.perf_counter() - t0
    ray.shutdown()

    rate = lambda k: records / out[k]  # noqa: E731
    out["spark_vs_python"] = out["spark_python_seconds"] / out["spark_bertflow_seconds"]
    out["spark_vs_cli"] = out["cli_seconds"] / out["spark_bertflow_seconds"]
    out["ray_vs_python"] = out["ray_python_seconds"] / out["ray_bertflow_seconds"]
    for k in ("cli", "spark_bertflow", "spark_python", "ray_bertflow", "ray_python"):
        out[f"{k}_records_per_second"] = rate(f"{k}_seconds")
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
