"""bertflow in Spark: a DataFrame enriched through ``DataFrame.mapInArrow``.

    >>> import bertflow, bertflow.spark
    >>> p = bertflow.Pipeline.from_yaml("pipelines/demo.yaml")
    >>> out = bertflow.spark.enrich(df, p, text_col="text", id_col="id")
    >>> results, errors = bertflow.spark.results(out), bertflow.spark.errors(out)

Every input record gives one output row: the pipeline's columns and ``errors``, the record's
error rows (empty when all went well; a record that failed has null task columns). The output
schema is known before any data. Each Spark Python worker loads the models once and keeps them
for the tasks it runs; a failed task is retried by Spark and its output replaced, so every id is
there exactly once.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

import pyarrow as pa

from . import ERRORS_COLUMN, Pipeline, _engine_for

__all__ = ["enrich", "map_function", "output_schema", "results", "errors"]


def _arrow_schema(df: Any) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)


def output_schema(
    df: Any,
    pipeline: Pipeline,
    *,
    text_col: Optional[str] = None,
    id_col: Optional[str] = None,
    passthrough: Optional[Sequence[str]] = None,
) -> Any:
    """The Spark schema of :func:`enrich`'s output for ``df``."""
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = pipeline.schema(
        _arrow_schema(df),
        text_col=text_col,
        id_col=id_col,
        passthrough=passthrough,
        on_error="column",
        portable=True,
    )
    return from_arrow_schema(schema)


def map_function(
    pipeline: Pipeline,
    *,
    text_col: Optional[str] = None,
    id_col: Optional[str] = None,
    passthrough: Optional[Sequence[str]] = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function :func:`enrich` passes to ``mapInArrow``: it carries the pipeline as its
    configuration only; the worker's engine (models loaded once per Python worker) runs it."""
    yaml = pipeline.yaml
    pt = list(passthrough) if passthrough is not None else None

    def enrich_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        label = f"spark partition {ctx.partitionId()}" if ctx is not None else "spark"
        p = Pipeline._from_yaml_text(yaml)
        yield from p.enrich_batches(
            batches,
            text_col=text_col,
            id_col=id_col,
            passthrough=pt,
            on_error="column",
            portable=True,
            label=label,
        )

    return enrich_partition


def enrich(
    df: Any,
    pipeline: Pipeline,
    *,
    text_col: Optional[str] = None,
    id_col: Optional[str] = None,
    passthrough: Optional[Sequence[str]] = None,
    profile: Any = None,
) -> Any:
    """``df`` enriched by ``pipeline``: one row per input record with the pipeline's columns
    and ``errors``. ``text_col`` / ``id_col`` default to the pipeline's source columns; without
    an id column, give one (row numbers restart in every partition). ``profile``: a Spark
    ``ResourceProfile`` (e.g. one GPU per task) for the stage."""
    schema = output_schema(
        df, pipeline, text_col=text_col, id_col=id_col, passthrough=passthrough
    )
    fn = map_function(pipeline, text_col=text_col, id_col=id_col, passthrough=passthrough)
    if profile is not None:
        return df.mapInArrow(fn, schema, profile=profile)
    return df.mapInArrow(fn, schema)


def results(out: Any) -> Any:
    """The records written (as the command line writes them), without the ``errors`` column."""
    from pyspark.sql import functions as F

    failed = F.exists(ERRORS_COLUMN, lambda e: ~e["written"])
    return out.where(~failed).drop(ERRORS_COLUMN)


def errors(out: Any) -> Any:
    """The error rows (``id, reason, stage, task, source, written``), as the command line's
    error output."""
    from pyspark.sql import functions as F

    return out.select(out.columns[0], F.explode(ERRORS_COLUMN).alias("e")).select(
        out.columns[0], "e.reason", "e.stage", "e.task", "e.source", "e.written"
    )
