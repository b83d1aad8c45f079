"""The pipeline: model -> Graph -> Design. Each stage is a function of its inputs."""

from __future__ import annotations

from pathlib import Path

from .design import Design
from .devices import get_device
from .errors import ModelError
from .ir import Graph
from .mapping import map_design
from .mapping.check import check

DEFAULT_BATCH = 8


def compile(model, device: str = "ve2802", batch: int | None = None) -> Design:  # noqa: A001 - the API name
    """Compile a quantized model (an ONNX path, an onnx.ModelProto or a Graph) for a device."""
    dev = get_device(device)
    graph = model if isinstance(model, Graph) else _frontend(model)
    if batch is None:
        batch = DEFAULT_BATCH
    if not 1 <= int(batch) <= 4096:
        raise ModelError(f"batch {batch} is out of range", hint="use 1 to 4096 samples per graph iteration")
    # The independent checker runs before anything is written: an illegal design never reaches disk.
    return check(map_design(graph, dev, int(batch)))


def _frontend(model) -> Graph:
    from .frontends.onnx_qdq import load_onnx

    if isinstance(model, (str, Path)) or type(model).__name__ == "ModelProto":
        return load_onnx(model)
    raise ModelError(f"cannot compile a {type(model).__name__}", hint="give an ONNX file path or onnx.ModelProto")
