"""Fixtures of the Python tests: the demo pipeline over the bundled 1,000-review sample (plus
records that must fail), its command-line output as the reference, and real engines: Spark in
local mode and Ray started locally."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = Path(__file__).resolve().parent / "pipeline.yaml"
SAMPLE = ROOT / "pipelines" / "sample" / "reviews.parquet"


def bertflow_bin() -> str:
    b = os.environ.get("BERTFLOW_BIN")
    if b and Path(b).is_file():
        return b
    for p in ("debug", "release"):
        c = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / p / "bertflow"
        if c.is_file():
            return str(c)
    pytest.fail("no bertflow binary: run cargo build (or set BERTFLOW_BIN)")


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> pa.Table:
    """The sample with records that fail: a null text, a duplicate-free id set, an empty text."""
    t = pq.read_table(SAMPLE)
    extra = pa.table(
        {
            "id": ["bad-null", "bad-empty", "bad-null-2"],
            "text": [None, "", None],
            "source": ["test", "test", "test"],
            "rating": [1.0, 2.0, 3.0],
        },
        schema=t.schema,
    )
    return pa.concat_tables([t.slice(0, 500), extra, t.slice(500)]).combine_chunks()


@pytest.fixture(scope="session")
def sample_file(sample, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("input") / "reviews.parquet"
    pq.write_table(sample, p, row_group_size=256)
    return p


@pytest.fixture(scope="session")
def cli_output(sample_file, tmp_path_factory):
    """The command line's results and error rows for the sample."""
    out = tmp_path_factory.mktemp("cli")
    cmd = [
        bertflow_bin(), "run", str(PIPELINE),
        "--set", f"source.parquet.path={sample_file}",
        "--set", f"sink.parquet.path={out / 'results.parquet'}",
        "--set", f"sink.errors.path={out / 'errors.parquet'}",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return pq.read_table(out / "results.parquet"), pq.read_table(out / "errors.parquet")


@pytest.fixture(scope="session")
def pipeline():
    import bertflow

    cwd = os.getcwd()
    os.chdir(ROOT)  # the pipeline's model folders are relative to the source tree
    try:
        return bertflow.Pipeline.from_yaml(PIPELINE)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    s = (
        SparkSession.builder.master("local[2,4]")  # 2 cores; a failed task is tried up to 4 times
        .appName("bertflow-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "256")
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def ray_ctx():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
