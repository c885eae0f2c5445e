"""bertflow in Ray Data: a Dataset enriched through ``map_batches`` with a callable class (one
model load per actor).

    >>> import bertflow, bertflow.ray
    >>> p = bertflow.Pipeline.from_yaml("pipelines/demo.yaml")
    >>> out = bertflow.ray.enrich(ds, p, text_col="text", id_col="id", concurrency=2)
    >>> results, errors = bertflow.ray.results(out), bertflow.ray.errors(out)

Every input record gives one output row: the pipeline's columns and ``errors``, the record's
error rows (empty when all went well).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pyarrow as pa

from . import Pipeline, split_errors

__all__ = ["Enricher", "enrich", "results", "errors"]


class Enricher:
    """The callable class of :func:`enrich`: loads the pipeline once per actor and enriches
    each batch (a pyarrow Table) with every record and its ``errors``."""

    def __init__(self, yaml: str, text_col: Optional[str], id_col: Optional[str],
                 passthrough: Optional[Sequence[str]]):
        self.pipeline = Pipeline._from_yaml_text(yaml)
        self.opts = dict(text_col=text_col, id_col=id_col, passthrough=passthrough)

    def __call__(self, batch: Any) -> pa.Table:
        # A Dataset made from record batches hands them over as they are (zero-copy); Ray
        # takes Tables back.
        return self.pipeline.enrich(_as_table(batch), on_error="column", **self.opts)


def enrich(
    ds: Any,
    pipeline: Pipeline,
    *,
    text_col: Optional[str] = None,
    id_col: Optional[str] = None,
    passthrough: Optional[Sequence[str]] = None,
    concurrency: Any = 1,
    num_gpus: Optional[float] = None,
    num_cpus: Optional[float] = None,
    batch_size: Optional[int] = 1024,
    **map_batches_args: Any,
) -> Any:
    """``ds`` enriched by ``pipeline`` through ``map_batches`` with an actor pool of
    ``concurrency`` actors (an int or a ``(min, max)`` autoscaling range), each with
    ``num_gpus`` GPUs (set ``runtime.execution_provider: cuda`` in the pipeline) and
    ``num_cpus`` CPUs."""
    args = dict(map_batches_args)
    if num_gpus is not None:
        args["num_gpus"] = num_gpus
    if num_cpus is not None:
        args["num_cpus"] = num_cpus
    # A Dataset made from record batches (`ray.data.from_arrow([RecordBatch, ...])`) keeps them
    # as its blocks, which Ray's batcher cannot cut into batches of `batch_size`: each block
    # becomes a Table first (whole blocks, no copy; fused with the next step).
    ds = ds.map_batches(_as_table, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    return ds.map_batches(
        Enricher,
        fn_constructor_args=(
            pipeline.yaml,
            text_col,
            id_col,
            list(passthrough) if passthrough is not None else None,
        ),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=concurrency,
        zero_copy_batch=True,
        **args,
    )


def _as_table(batch: Any) -> pa.Table:
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    return batch


def _results(batch: Any) -> pa.Table:
    return split_errors(_as_table(batch))[0]


def _errors(batch: Any) -> pa.Table:
    return split_errors(_as_table(batch))[1]


def results(out: Any) -> Any:
    """The records written, without the ``errors`` column."""
    return out.map_batches(_results, batch_format="pyarrow", zero_copy_batch=True)


def errors(out: Any) -> Any:
    """The error rows (``id, reason, stage, task, source, written``)."""
    return out.map_batches(_errors, batch_format="pyarrow", zero_copy_batch=True)
