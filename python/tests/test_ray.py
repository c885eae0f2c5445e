"""bertflow inside Ray Data (a local Ray instance): map_batches with a callable class over four
blocks gives the command line's results and error rows."""

from __future__ import annotations

import pyarrow as pa

import bertflow
import bertflow.ray
from compare import assert_same_results, error_keys


def _table(ds) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def test_ray_map_batches_matches_the_command_line(ray_ctx, pipeline, sample, cli_output):
    ds = ray_ctx.data.from_arrow(sample).repartition(4)
    assert ds.materialize().num_blocks() == 4
    out = bertflow.ray.enrich(
        ds, pipeline, text_col="text", id_col="id", concurrency=1, num_cpus=1, batch_size=256
    ).materialize()
    table = _table(out)
    assert table.num_rows == sample.num_rows
    results, errors = bertflow.split_errors(table)
    cli_results, cli_errors = cli_output
    assert_same_results(cli_results, results)
    assert error_keys(errors) == error_keys(cli_errors)
    # The Dataset helpers give the same split.
    assert sorted(_table(bertflow.ray.results(out)).column("id").to_pylist()) == sorted(
        results.column("id").to_pylist()
    )
    assert error_keys(_table(bertflow.ray.errors(out))) == error_keys(cli_errors)


def test_ray_dataset_of_record_batches(ray_ctx, pipeline, sample, cli_output):
    # ray.data.from_arrow(list of RecordBatches) hands the batches over as RecordBatches
    # (zero-copy); the results are the command line's all the same.
    batches = sample.to_batches(max_chunksize=300)
    assert len(batches) > 1 and all(isinstance(b, pa.RecordBatch) for b in batches)
    ds = ray_ctx.data.from_arrow(batches)
    out = bertflow.ray.enrich(
        ds, pipeline, text_col="text", id_col="id", concurrency=1, num_cpus=1, batch_size=256
    ).materialize()
    table = _table(out)
    results, errors = bertflow.split_errors(table)
    cli_results, cli_errors = cli_output
    assert_same_results(cli_results, results)
    assert error_keys(errors) == error_keys(cli_errors)
    assert error_keys(_table(bertflow.ray.errors(ray_ctx.data.from_arrow(table.to_batches())))) == error_keys(cli_errors)
