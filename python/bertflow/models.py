"""Models: the same model folders as the command line (``bertflow models pull``)."""

from __future__ import annotations

from typing import Optional

from ._bertflow import pull as _pull


def pull(reference: str, onnx_file: Optional[str] = None) -> str:
    """Download ``hf:org/name[@revision]`` from the Hugging Face hub into the local cache
    (``HF_HOME``; ``HF_ENDPOINT`` for a mirror, ``HF_TOKEN`` for a private repository) and
    return its folder, ready for ``tasks.<task>.model`` (an ``hf:`` reference there is pulled
    the same way when the pipeline loads)."""
    return _pull(reference, onnx_file)
