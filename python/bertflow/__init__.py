"""bertflow: enrich text with BERT-family models from Python, Spark and Ray.

The pipeline runs in the bertflow engine (Rust, ONNX Runtime): the same tasks, batching,
precision variants, error rows and fidelity to the Hugging Face libraries as the ``bertflow``
command line. Arrow batches cross without copies; the interpreter lock is released while the
models run.

    >>> p = bertflow.Pipeline.from_yaml("pipelines/demo.yaml")
    >>> table = p.enrich(reviews)                  # a pyarrow Table
    >>> results, errors = p.enrich_with_errors(reviews)
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import threading
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from ._bertflow import ORT_VERSION, BertflowError, ConfigError, _Engine
from ._bertflow import __version__  # noqa: F401
from . import models  # noqa: F401

__all__ = [
    "Pipeline",
    "Run",
    "BertflowError",
    "ConfigError",
    "RecordsFailed",
    "split_errors",
    "find_onnxruntime",
    "ORT_VERSION",
]

log = logging.getLogger("bertflow")

#: The column holding a record's error rows with ``on_error="column"``.
ERRORS_COLUMN = "errors"


class RecordsFailed(BertflowError):
    """Some records failed (``on_error="raise"``); ``errors`` holds their error rows."""

    def __init__(self, message: str, errors: pa.Table):
        super().__init__(message)
        self.errors = errors


def find_onnxruntime() -> Optional[str]:
    """The ONNX Runtime library of the installed ``onnxruntime``, ``onnxruntime-gpu`` or
    ``onnxruntime-openvino`` wheel (all install the ``onnxruntime`` module), without importing
    it; ``None`` when none is installed."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        capi = os.path.join(root, "capi")
        found = sorted(
            glob.glob(os.path.join(capi, "libonnxruntime.so*"))
            + glob.glob(os.path.join(capi, "libonnxruntime*.dylib"))
            + glob.glob(os.path.join(capi, "onnxruntime.dll"))
        )
        # The versioned file (libonnxruntime.so.1.31.1) is the library itself.
        found = [f for f in found if "providers" not in os.path.basename(f)]
        if found:
            return max(found, key=len)
    return None


def _runtime_library() -> Optional[str]:
    """The wheel's library; with ``onnxruntime-gpu``, its CUDA and cuDNN libraries (the
    ``nvidia-*`` wheels) are loaded first through ``onnxruntime.preload_dlls``, so that the CUDA
    provider finds them as it does under Python onnxruntime."""
    lib = find_onnxruntime()
    if lib and os.path.exists(os.path.join(os.path.dirname(lib), "libonnxruntime_providers_cuda.so")):
        try:
            import onnxruntime

            preload = getattr(onnxruntime, "preload_dlls", None)
            if preload is not None:
                preload()
        except Exception as e:  # the provider then says what it misses
            log.warning("could not preload the CUDA libraries of onnxruntime-gpu: %s", e)
    return lib


_ENGINES: Dict[str, _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine_for(yaml: str) -> _Engine:
    """The engine of an effective pipeline, loaded once per process (Spark and Ray workers)."""
    with _ENGINES_LOCK:
        e = _ENGINES.get(yaml)
        if e is None:
            e = _Engine(yaml, "the pipeline", [], False, _runtime_library())
            _ENGINES[yaml] = e
        return e


def _yaml_value(v: Any) -> str:
    # JSON is YAML: numbers, booleans, null, lists and mappings keep their types.
    return v if isinstance(v, str) else json.dumps(v, default=str)


def _as_batches(data: Any) -> Tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    """The schema and batches of a pyarrow Table, RecordBatch or RecordBatchReader, a pandas
    DataFrame, a dict of columns, or any object with ``__arrow_c_stream__``."""
    if isinstance(data, pa.Table):
        return data.schema, data.to_batches()
    if isinstance(data, pa.RecordBatch):
        return data.schema, [data]
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, data
    if isinstance(data, dict):
        t = pa.table(data)
        return t.schema, t.to_batches()
    if type(data).__module__.startswith("pandas"):
        t = pa.Table.from_pandas(data, preserve_index=False)
        return t.schema, t.to_batches()
    if hasattr(data, "__arrow_c_stream__"):
        r = pa.RecordBatchReader.from_stream(data)
        return r.schema, r
    raise TypeError(
        f"cannot read {type(data).__name__}: pass a pyarrow Table, RecordBatch or "
        "RecordBatchReader, a pandas DataFrame or a dict of columns"
    )


def _record_batches(batches: Iterable[Any]) -> Iterator[Any]:
    """Tables among the batches become their record batches."""
    for b in batches:
        if isinstance(b, pa.Table):
            yield from b.to_batches()
        else:
            yield b


def split_errors(table: pa.Table) -> Tuple[pa.Table, pa.Table]:
    """Split output with an ``errors`` column (``on_error="column"``, Spark, Ray) into the
    results (records written, without the column) and the error rows (``id, reason, stage,
    task, source, written``: the command line's error output). ``table`` may also be a
    RecordBatch."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    col = table.column(ERRORS_COLUMN).combine_chunks()
    flat = pc.list_flatten(col)
    parents = pc.list_parent_indices(col)
    written = flat.field("written")
    failed = pc.filter(parents, pc.invert(written))
    keep = pc.invert(pc.is_in(pa.array(range(table.num_rows), pa.int64()), value_set=failed.cast(pa.int64())))
    results = table.filter(keep).drop_columns([ERRORS_COLUMN])
    ids = table.column(0).take(parents)
    errors = pa.table(
        [ids] + [flat.field(n) for n in ("reason", "stage", "task", "source", "written")],
        names=[table.schema.names[0], "reason", "stage", "task", "source", "written"],
    )
    return results, errors


class Run:
    """The result batches of one run, in input order (an iterator of ``pyarrow.RecordBatch``).

    ``errors`` holds the error rows seen so far, ``summary`` what the run did once it ended.
    Memory stays bounded: at most a few batches are in flight each way."""

    def __init__(self, run: Any, error_schema: pa.Schema, on_error: str):
        self._run = run
        self._errors: list = []
        self._error_schema = error_schema
        self._on_error = on_error
        self._failed = 0

    def __iter__(self) -> "Run":
        return self

    def __next__(self) -> pa.RecordBatch:
        try:
            results, errors = next(self._run)
        except StopIteration:
            self._finish()
            raise
        if errors.num_rows:
            self._errors.append(errors)
            if self._on_error == "raise":
                self.close()
                raise RecordsFailed(
                    f"{errors.num_rows} error rows, e.g. {errors.column('reason')[0].as_py()!r} "
                    f"({errors.column('source')[0].as_py()})",
                    self.errors,
                )
            self._failed += errors.num_rows
        return results

    def _finish(self) -> None:
        if self._failed and self._on_error == "log":
            log.warning(
                "%d error rows (records that failed, or tasks that failed for records still "
                "written with null columns); read them with Pipeline.enrich_with_errors, "
                "Run.errors or on_error='column'",
                self._failed,
            )
            self._failed = 0

    @property
    def errors(self) -> pa.Table:
        """The error rows so far: ``id, reason, stage, task, source, written``."""
        return pa.Table.from_batches(self._errors, schema=self._error_schema)

    @property
    def summary(self) -> Optional[dict]:
        """Records, written, errors, seconds and stage times, once the run ended."""
        return self._run.summary()

    def close(self) -> None:
        """Stop the run; the rest of the input is not read."""
        self._run.close()


_ON_ERROR = ("log", "raise", "column", "quiet")


class Pipeline:
    """A bertflow pipeline with its models loaded (once; every call reuses them).

    ``config``: a dict (the pipeline file's keys) or YAML text; ``overrides``: ``{"key.path":
    value}``, applied after the ``BERTFLOW__*`` environment. ``source`` and ``sink`` may be left
    out: records come from the calls. A pipeline written for the command line also works: its
    ``source.parquet.text_column`` / ``id_column`` and ``sink.passthrough`` are the defaults of
    the calls. A pipeline pickles as its configuration (for Spark and Ray): each worker process
    loads the models once.
    """

    def __init__(
        self,
        config: Any,
        overrides: Optional[Mapping[str, Any]] = None,
        *,
        ort_lib: Optional[str] = None,
        _file: str = "the pipeline",
    ):
        if isinstance(config, Mapping):
            # Paths and other plain values become their text.
            text = json.dumps(dict(config), default=str)
        elif isinstance(config, str):
            text = config
        else:
            raise TypeError("config: a dict or YAML text (Pipeline.from_yaml reads a file)")
        sets = [(k, _yaml_value(v)) for k, v in (overrides or {}).items()]
        self._engine = _Engine(text, _file, sets, True, ort_lib or _runtime_library())

    @classmethod
    def from_yaml(
        cls, path: "os.PathLike[str] | str", overrides: Optional[Mapping[str, Any]] = None, **kw: Any
    ) -> "Pipeline":
        """Load a pipeline file (relative model folders are read from the working directory)."""
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return cls(text, overrides, _file=str(path), **kw)

    @classmethod
    def _from_yaml_text(cls, yaml: str) -> "Pipeline":
        p = cls.__new__(cls)
        p._engine = _engine_for(yaml)
        return p

    def __reduce__(self):
        return (Pipeline._from_yaml_text, (self.yaml,))

    @property
    def yaml(self) -> str:
        """The effective pipeline (overrides applied, model folders absolute) as YAML."""
        return self._engine.yaml

    def describe(self) -> dict:
        """The tasks with their precision, and the execution provider."""
        return self._engine.describe()

    def __repr__(self) -> str:
        d = self.describe()
        tasks = ", ".join(f"{n} ({p})" for n, p in d["tasks"])
        return f"bertflow.Pipeline({tasks}; {d['provider']})"

    # ------------------------------------------------------------------ schemas

    def schema(
        self,
        input_schema: pa.Schema,
        *,
        text_col: Optional[str] = None,
        id_col: Optional[str] = None,
        passthrough: Optional[Sequence[str]] = None,
        on_error: str = "log",
        portable: bool = False,
    ) -> pa.Schema:
        """The schema of the results for input of ``input_schema``, before any data: ``id``,
        the passthrough columns, each task's columns (and ``errors`` with
        ``on_error="column"``). ``portable``: types every engine reads (Spark)."""
        results, _ = self._engine.schemas(
            input_schema,
            text_col,
            id_col,
            list(passthrough) if passthrough is not None else None,
            "column" if on_error == "column" else "separate",
            portable,
        )
        return results

    def error_schema(
        self,
        input_schema: pa.Schema,
        *,
        text_col: Optional[str] = None,
        id_col: Optional[str] = None,
    ) -> pa.Schema:
        """The schema of the error rows: ``id`` (the id column's type), ``reason, stage, task,
        source, written``."""
        _, errors = self._engine.schemas(input_schema, text_col, id_col, [], "separate", False)
        return errors

    # ------------------------------------------------------------------ runs

    def _start(
        self,
        schema: pa.Schema,
        batches: Iterable[Any],
        text_col: Optional[str],
        id_col: Optional[str],
        passthrough: Optional[Sequence[str]],
        on_error: str,
        portable: bool = False,
        label: Optional[str] = None,
    ) -> Run:
        if on_error not in _ON_ERROR:
            raise ConfigError(f"on_error={on_error!r}: use one of {', '.join(_ON_ERROR)}")
        errors = "column" if on_error == "column" else "separate"
        pt = list(passthrough) if passthrough is not None else None
        _, err_schema = self._engine.schemas(schema, text_col, id_col, pt, "separate", False)
        run = self._engine.start(
            schema, iter(_record_batches(batches)), text_col, id_col, pt, errors, portable, label
        )
        return Run(run, err_schema, on_error)

    def enrich_batches(
        self,
        batches: Iterable[pa.RecordBatch],
        *,
        schema: Optional[pa.Schema] = None,
        text_col: Optional[str] = None,
        id_col: Optional[str] = None,
        passthrough: Optional[Sequence[str]] = None,
        on_error: str = "log",
        portable: bool = False,
        label: Optional[str] = None,
    ) -> Run:
        """Enrich an iterable of record batches lazily: a :class:`Run` yielding result batches
        in input order, with bounded memory (length-sorted model batches inside each window of
        records). ``schema``: the batches' schema (else the first batch's). ``on_error``:
        ``"log"`` (results only, error rows in ``Run.errors`` and a warning), ``"raise"``
        (:class:`RecordsFailed` at the first error row), ``"column"`` (every record, with an
        ``errors`` list column), ``"quiet"`` (as log, without the warning)."""
        it = iter(batches)
        if schema is None:
            try:
                first = next(it)
            except StopIteration:
                return _EmptyRun()  # type: ignore[return-value]
            if isinstance(first, (pa.Table, pa.RecordBatch)):
                schema = first.schema
            else:
                raise TypeError(
                    f"batches must be pyarrow RecordBatches, not {type(first).__name__}"
                )
            it = _chain(first, it)
        return self._start(schema, it, text_col, id_col, passthrough, on_error, portable, label)

    def enrich(
        self,
        data: Any,
        *,
        text_col: Optional[str] = None,
        id_col: Optional[str] = None,
        passthrough: Optional[Sequence[str]] = None,
        on_error: str = "log",
        portable: bool = False,
    ) -> pa.Table:
        """Enrich a pyarrow Table (RecordBatch, RecordBatchReader, pandas DataFrame or dict of
        columns): the results in input order. ``on_error`` as in :meth:`enrich_batches`."""
        schema, batches = _as_batches(data)
        run = self._start(schema, batches, text_col, id_col, passthrough, on_error, portable)
        out = list(run)
        return pa.Table.from_batches(out, schema=self.schema(
            schema, text_col=text_col, id_col=id_col, passthrough=passthrough,
            on_error=on_error, portable=portable))

    def enrich_with_errors(
        self,
        data: Any,
        *,
        text_col: Optional[str] = None,
        id_col: Optional[str] = None,
        passthrough: Optional[Sequence[str]] = None,
        portable: bool = False,
    ) -> Tuple[pa.Table, pa.Table]:
        """Enrich ``data``: ``(results, errors)``, the errors with the rows of the command
        line's error output (``id, reason, stage, task, source, written``)."""
        schema, batches = _as_batches(data)
        run = self._start(schema, batches, text_col, id_col, passthrough, "quiet", portable)
        out = list(run)
        results = pa.Table.from_batches(out, schema=self.schema(
            schema, text_col=text_col, id_col=id_col, passthrough=passthrough, portable=portable))
        return results, run.errors


class _EmptyRun:
    """The run over no batches at all (no schema to run with)."""

    errors = None
    summary = {"records": 0, "written": 0, "errors": 0}

    def __iter__(self) -> "_EmptyRun":
        return self

    def __next__(self) -> pa.RecordBatch:
        raise StopIteration

    def close(self) -> None:
        pass


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
