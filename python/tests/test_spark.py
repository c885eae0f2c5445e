"""bertflow inside Spark (local mode, real JVM and Python workers): mapInArrow over four
partitions gives the command line's results and error rows; failed tasks are retried by Spark
and every id comes out exactly once."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

import bertflow
import bertflow.spark
from compare import assert_same_results, error_keys
from conftest import ROOT


def test_spark_map_in_arrow_matches_the_command_line(spark, pipeline, sample, cli_output):
    df = spark.createDataFrame(sample).repartition(4)
    assert df.rdd.getNumPartitions() == 4
    out = bertflow.spark.enrich(df, pipeline, text_col="text", id_col="id").cache()
    assert out.count() == sample.num_rows  # every record, failed ones included
    results = bertflow.spark.results(out).toArrow()
    errors = bertflow.spark.errors(out).toArrow()
    cli_results, cli_errors = cli_output
    assert results.schema.names == cli_results.schema.names
    assert_same_results(cli_results, results)
    assert error_keys(errors) == error_keys(cli_errors)
    sources = {r["source"] for r in errors.to_pylist()}
    assert all(s.startswith("spark partition ") for s in sources), sources
    out.unpersist()


def _small_pipeline():
    return bertflow.Pipeline(
        {
            "source": {"python": {"text_column": "text", "id_column": "id"}},
            "tasks": {"sentiment": {"model": str(ROOT / "tests/fixtures/tasks/bert-sentiment")}},
        }
    )


@pytest.mark.parametrize("failure", ["raise", "kill"])
def test_a_failed_spark_task_is_retried_and_every_id_is_there_once(spark, failure, tmp_path):
    from pyspark import TaskContext

    p = _small_pipeline()
    n = 2_000
    table = pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"text number {i} is fine" for i in range(n)]})
    df = spark.createDataFrame(table).repartition(4)
    fn = bertflow.spark.map_function(p)
    schema = bertflow.spark.output_schema(df, p)
    marker = str(tmp_path / "failed")

    def flaky(batches):
        ctx = TaskContext.get()
        for b in fn(batches):
            yield b
            # The first attempt of partition 1 dies after handing on its first batch.
            if ctx.partitionId() == 1 and ctx.attemptNumber() == 0:
                open(marker, "w").close()
                if failure == "raise":
                    raise RuntimeError("injected failure")
                os._exit(3)  # the Python worker is killed mid-partition

    out = df.mapInArrow(flaky, schema).toArrow()
    assert os.path.exists(marker)  # the first attempt did fail
    ids = out.column("id").to_pylist()
    assert len(ids) == n and set(ids) == set(table.column("id").to_pylist())
    assert all(len(e) == 0 for e in out.column("errors").to_pylist())


def test_spark_bad_input(spark):
    p = _small_pipeline()
    df = spark.createDataFrame(
        pa.table({"id": ["a", "b", "c"], "text": ["fine", None, ""]})
    ).repartition(2)
    out = bertflow.spark.enrich(df, p)
    errors = bertflow.spark.errors(out).toArrow().to_pylist()
    assert [(e["id"], e["reason"], e["written"]) for e in errors] == [("b", "text column 'text' is null", False)]
    assert sorted(bertflow.spark.results(out).toArrow().column("id").to_pylist()) == ["a", "c"]
    # A column that is not there: a clear error on the driver, before any task.
    with pytest.raises(bertflow.ConfigError, match="no text column 'body'"):
        bertflow.spark.enrich(df, p, text_col="body")
