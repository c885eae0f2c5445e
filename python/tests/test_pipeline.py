"""The Python API over the same engine as the command line: results and error rows equal to the
CLI's, the schema before the data, order, bad input, pickling, the interpreter lock, memory."""

from __future__ import annotations

import gc
import pickle
import threading
import time

import pyarrow as pa
import pytest

import bertflow
from compare import assert_same_results, error_keys
from conftest import ROOT


def test_enrich_matches_the_command_line(pipeline, sample, cli_output):
    results, errors = pipeline.enrich_with_errors(sample)
    cli_results, cli_errors = cli_output
    assert results.num_rows == cli_results.num_rows
    assert results.schema.names == cli_results.schema.names
    assert_same_results(cli_results, results)
    assert error_keys(errors) == error_keys(cli_errors)
    assert len(errors) >= 2  # the null texts of the sample


def test_schema_is_known_before_the_data(pipeline, sample):
    want = pipeline.schema(sample.schema)
    got = pipeline.enrich(sample.slice(0, 10))
    assert got.schema.equals(want)
    col = pipeline.schema(sample.schema, on_error="column")
    assert col.names == want.names + ["errors"]


def test_enrich_batches_keeps_the_order_and_the_error_rows(pipeline, sample):
    sizes = [1, 7, 64, 300, 5]
    batches, start = [], 0
    while start < sample.num_rows:
        n = sizes[len(batches) % len(sizes)]
        batches.extend(sample.slice(start, n).to_batches())
        start += n
    run = pipeline.enrich_batches(iter(batches), on_error="quiet")
    out = pa.Table.from_batches(list(run))
    failed = {r["id"] for r in run.errors.to_pylist() if not r["written"]}
    want = [i for i in sample.column("id").to_pylist() if i not in failed]
    assert out.column("id").to_pylist() == want
    assert run.summary["records"] == sample.num_rows
    assert run.summary["written"] == len(want)
    assert run.summary["errors"] == len(failed)


def test_the_error_column_holds_every_record(pipeline, sample):
    out = pipeline.enrich(sample.slice(495, 20), on_error="column")
    assert out.column("id").to_pylist() == sample.slice(495, 20).column("id").to_pylist()
    results, errors = bertflow.split_errors(out)
    r2, e2 = pipeline.enrich_with_errors(sample.slice(495, 20))
    assert results.column("id").to_pylist() == r2.column("id").to_pylist()
    assert error_keys(errors) == error_keys(e2)
    with pytest.raises(bertflow.RecordsFailed) as ex:
        pipeline.enrich(sample.slice(495, 20), on_error="raise")
    assert "is null" in str(ex.value) and ex.value.errors.num_rows >= 1


def test_bad_input_never_crashes_the_interpreter(pipeline):
    p = pipeline
    kw = dict(passthrough=[])  # the pipeline passes `source` through; these inputs have none
    # A non-string text column: one error row per record, naming the column.
    r, e = p.enrich_with_errors(pa.table({"id": ["a", "b"], "text": [1, 2]}), **kw)
    assert r.num_rows == 0
    assert [x["reason"] for x in e.to_pylist()] == ["text column 'text' has type Int64, expected a string"] * 2
    # Nulls and empty strings: as the command line (an empty text is a record like any other).
    r, e = p.enrich_with_errors(pa.table({"id": ["n", "e"], "text": [None, ""]}), **kw)
    assert r.column("id").to_pylist() == ["e"]
    rows = {(x["id"], x["stage"], x["task"], x["written"]) for x in e.to_pylist()}
    # The null text failed as a record; QA alone failed for the empty one, still written.
    assert rows == {("n", "source", None, False), ("e", "tokenize", "qa", True)}
    # A missing column: a clear exception naming it.
    with pytest.raises(bertflow.ConfigError, match="no text column 'body'"):
        p.enrich(pa.table({"id": ["a"], "text": ["x"]}), text_col="body", **kw)
    with pytest.raises(bertflow.ConfigError, match="no id column 'key'"):
        p.enrich(pa.table({"id": ["a"], "text": ["x"]}), id_col="key", **kw)
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        p.enrich(pa.table({"id": ["a"]}), **kw)
    # A corrupt batch (a string column holding bytes that are not UTF-8): refused.
    bad = pa.StringArray.from_buffers(
        2, pa.py_buffer(pa.array([0, 2, 3], pa.int32()).buffers()[1]), pa.py_buffer(b"\xff\xfeb")
    )
    batch = pa.RecordBatch.from_arrays([pa.array(["a", "b"]), bad], names=["id", "text"])
    with pytest.raises(TypeError, match="not a valid Arrow record batch"):
        list(p.enrich_batches(iter([batch]), **kw))
    # Something that is not a batch.
    good = pa.record_batch({"id": ["a"], "text": ["fine"]})
    with pytest.raises(TypeError):
        list(p.enrich_batches(iter([good, {"id": "b"}]), **kw))
    with pytest.raises(TypeError):
        p.enrich([1, 2, 3], **kw)
    # A later batch whose id column changed type: the run stops naming the column.
    other = pa.record_batch({"id": [1], "text": ["x"]})
    with pytest.raises(bertflow.BertflowError, match="column 'id' has type Int64"):
        list(p.enrich_batches(iter([good, other]), **kw))
    # And the pipeline still works.
    assert p.enrich(pa.table({"id": ["z"], "text": ["still here"]}), **kw).num_rows == 1


def test_a_pipeline_pickles_as_its_configuration(pipeline, sample):
    q = pickle.loads(pickle.dumps(pipeline))
    assert q.yaml == pipeline.yaml
    assert q.schema(sample.schema).equals(pipeline.schema(sample.schema))
    # A worker loads the models once: the same configuration gives the same engine.
    assert pickle.loads(pickle.dumps(pipeline))._engine is q._engine
    assert "embed" in repr(q)


def test_empty_input(pipeline, sample):
    out = pipeline.enrich(sample.slice(0, 0))
    assert out.num_rows == 0 and out.schema.equals(pipeline.schema(sample.schema))
    assert list(pipeline.enrich_batches(iter([]))) == []
    assert pipeline.error_schema(sample.schema).names == ["id", "reason", "stage", "task", "source", "written"]


def test_a_dict_pipeline_without_source_or_sink():
    p = bertflow.Pipeline(
        {"tasks": {"sentiment": {"model": ROOT / "tests/fixtures/tasks/bert-sentiment"}}},
        overrides={"batching.max_batch_size": 4},
    )
    out = p.enrich({"text": ["good", "bad", "fine"]})
    assert out.column("id").to_pylist() == [0, 1, 2]
    assert out.schema.names == ["id", "sentiment_label", "sentiment_score"]
    with pytest.raises(bertflow.ConfigError, match="max_batch_sizee"):
        bertflow.Pipeline({"tasks": {}}, overrides={"batching.max_batch_sizee": 4})


def test_prompts_are_taken_as_the_command_line_takes_them():
    # tasks.embed.prompt_name with the set-up's e5-small-v2: the same vectors as its prompt
    # written before each text; an unknown name is a configuration error naming the prompts.
    model = ROOT / "models" / "e5-small-v2"
    texts = ["how do I reset my password?", "The capital of France is Paris."]
    prompted = bertflow.Pipeline({"tasks": {"embed": {"model": model, "prompt_name": "query"}}})
    plain = bertflow.Pipeline({"tasks": {"embed": {"model": model}}})
    a = prompted.enrich({"text": texts}).column("embedding").to_pylist()
    b = plain.enrich({"text": ["query: " + t for t in texts]}).column("embedding").to_pylist()
    c = plain.enrich({"text": texts}).column("embedding").to_pylist()
    for x, y, z in zip(a, b, c):
        assert max(abs(p - q) for p, q in zip(x, y)) < 1e-5
        assert max(abs(p - q) for p, q in zip(x, z)) > 1e-3
    with pytest.raises(bertflow.ConfigError, match="prompt_name is 'qeury'") as e:
        bertflow.Pipeline({"tasks": {"embed": {"model": model, "prompt_name": "qeury"}}})
    assert "'query'" in str(e.value) and "'passage'" in str(e.value)


def test_the_interpreter_lock_is_released_while_the_models_run(pipeline, sample):
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    t = threading.Thread(target=count)
    t.start()
    try:
        start = ticks
        pipeline.enrich(sample.slice(0, 200))
        during = ticks - start
    finally:
        done.set()
        t.join()
    # A lock held by the run would leave the counter at (nearly) zero for the whole call.
    assert during > 1000, during


def test_ctrl_c_stops_a_run_and_the_pipeline_stays_usable(pipeline, sample):
    import _thread

    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.enrich(pa.concat_tables([sample] * 20))
    timer.cancel()
    assert time.monotonic() - started < 30
    assert pipeline.enrich(sample.slice(0, 3)).num_rows == 3


def test_enrich_batches_memory_stays_flat():
    psutil = pytest.importorskip("psutil")
    p = bertflow.Pipeline(
        {"tasks": {"sentiment": {"model": str(ROOT / "tests/fixtures/tasks/bert-sentiment")}}}
    )
    words = "the service was quick and the food was good but the room was cold".split()
    total, per = 200_000, 2_000

    def batches():
        for b in range(total // per):
            texts = [" ".join(words[(b + i) % 7 :][: 3 + (i % 9)]) for i in range(per)]
            yield pa.record_batch({"id": list(range(b * per, (b + 1) * per)), "text": texts})

    proc = psutil.Process()
    gc.collect()
    seen, base, peak = 0, None, 0
    for out in p.enrich_batches(batches()):
        seen += out.num_rows
        rss = proc.memory_info().rss
        if base is None and seen >= total // 10:
            base = rss  # warm: models loaded, queues full
        if base is not None:
            peak = max(peak, rss)
    assert seen == total
    growth = (peak - base) / 2**20
    # Bounded by the queues, not the input: 180,000 more records add (almost) nothing.
    print(f"RSS growth after the first {total // 10:,} records: {growth:.1f} MiB")
    assert growth < 64, f"RSS grew {growth:.0f} MiB over {total} records"
