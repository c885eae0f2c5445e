"""Comparing two runs' results record by record: ids identical, embeddings by cosine, labels,
spans and answers exactly, scores within a tolerance (batches differ between runs)."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable

import pyarrow as pa

MIN_COSINE = 0.9999
SCORE_TOL = 1e-3


def _cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return dot / (na * nb)


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: {a!r} != {b!r}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: length {len(a)} != {len(b) if isinstance(b, list) else b!r}"
        if len(a) >= 16 and all(isinstance(x, float) for x in a):
            c = _cosine(a, b)
            assert c >= MIN_COSINE, f"{where}: cosine {c}"
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, (float, int)):
        assert abs(a - b) <= SCORE_TOL, f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def by_id(t: pa.Table) -> Dict[Any, dict]:
    rows = t.to_pylist()
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), "an id appears twice"
    return out


def assert_same_results(expected: pa.Table, got: pa.Table, columns: Iterable[str] = ()) -> None:
    """Every record of `expected` is in `got` once, with the same values."""
    e, g = by_id(expected), by_id(got)
    assert set(e) == set(g), f"ids differ: only expected {sorted(set(e) - set(g))[:5]}, only got {sorted(set(g) - set(e))[:5]}"
    cols = list(columns) or [c for c in expected.column_names if c != "errors"]
    for i, (k, row) in enumerate(e.items()):
        for c in cols:
            _same(row[c], g[k][c], f"id {k} {c}")


def error_keys(t: pa.Table) -> list:
    """The error rows without where they came from (a file row, a partition), sorted."""
    return sorted(
        (str(r["id"]), r["reason"], r["stage"], r["task"] or "", r["written"]) for r in t.to_pylist()
    )
