"""The pipeline: model -> Graph -> Design. Each stage is a function of its inputs."""

from __future__ import annotations

from pathlib import Path

from .design import Design
from .devices import get_device
from .errors import ModelError
from .ir import Graph
from .mapping import map_design
from .mapping.check import check
from .mapping.directives import load_options

DEFAULT_BATCH = 8


def compile(model, device: str = "ve2802", batch: int | None = None, *,  # noqa: A001 - the API name
            objective: str | None = None, max_tiles: int | None = None, target_interval: int | None = None,
            config: str | Path | None = None, layers: dict | None = None) -> Design:
    """Compile a quantized model (an ONNX path, an onnx.ModelProto or a Graph) for a device.

    objective: "resource" (default: fewest tiles, under `target_interval` cycles if given), "throughput"
    or "latency"; max_tiles caps the tiles used; config is a TOML file of options and per-layer directives
    (see aieflow.mapping.directives); layers maps layer names to directive dictionaries, e.g.
    {"fc1": {"cas_length": 4, "col": 10, "row": 0}}. Arguments given here override the file.
    """
    dev = get_device(device)
    options = load_options(config, objective=objective, max_tiles=max_tiles, target_interval=target_interval,
                           batch=batch, layers=layers)
    graph = model if isinstance(model, Graph) else _frontend(model)
    batch = options.batch if options.batch is not None else DEFAULT_BATCH
    if not 1 <= int(batch) <= 4096:
        raise ModelError(f"batch {batch} is out of range", hint="use 1 to 4096 samples per graph iteration")
    # The independent checker runs before anything is written: an illegal design never reaches disk.
    return check(map_design(graph, dev, int(batch), options))


def _frontend(model) -> Graph:
    from .frontends.onnx_qdq import load_onnx

    if isinstance(model, (str, Path)) or type(model).__name__ == "ModelProto":
        return load_onnx(model)
    raise ModelError(f"cannot compile a {type(model).__name__}", hint="give an ONNX file path or onnx.ModelProto")
