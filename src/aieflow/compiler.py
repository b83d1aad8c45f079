"""The pipeline: model -> Graph -> Design. Each stage is a function of its inputs."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from .design import Design
from .devices import get_device
from .errors import ModelError
from .frontends import Imported
from .ir import Graph
from .mapping import map_design
from .mapping.check import check
from .mapping.directives import load_options

DEFAULT_BATCH = 8


def compile(model, device: str = "ve2802", batch: int | None = None, *,  # noqa: A001 - the API name
            objective: str | None = None, max_tiles: int | None = None, target_interval: int | None = None,
            config: str | Path | None = None, layers: dict | None = None, example_input=None,
            calibration: np.ndarray | None = None, measure: bool = True) -> Design:
    """Compile a quantized model for a device.

    model: a QDQ ONNX or QONNX file path or onnx.ModelProto, a PyTorch/Brevitas module (with
    `example_input`), an hls4ml ModelGraph, or an aieflow Graph.
    objective: "resource" (default: fewest tiles, under `target_interval` cycles if given), "throughput"
    or "latency"; max_tiles caps the tiles used; config is a TOML file of options and per-layer directives
    (see aieflow.mapping.directives); layers maps layer names to directive dictionaries, e.g.
    {"fc1": {"cas_length": 4, "col": 10, "row": 0}}. Arguments given here override the file.
    measure: run the source model (onnxruntime, qonnx, the module, hls4ml's C simulation) on `calibration`
    inputs (default: made from the input type) and record, per layer, whether the design is bit-exact with
    it (design.exactness); a Graph has no source and is not measured.
    """
    dev = get_device(device)
    options = load_options(config, objective=objective, max_tiles=max_tiles, target_interval=target_interval,
                           batch=batch, layers=layers)
    imported = model if isinstance(model, Imported) else import_model(model, example_input)
    if calibration is not None:  # checked before the mapping's work, not after it
        from .inputs import check_source

        calibration = check_source(calibration, imported.graph.tensors[imported.graph.inputs[0]], "calibration")
        if calibration.dtype.kind != "f":
            raise ModelError(f"calibration has dtype {calibration.dtype}; it is the source model's input",
                             hint="give floats, as the model's input quantizer takes them")
    batch = options.batch if options.batch is not None else DEFAULT_BATCH
    if not 1 <= int(batch) <= 4096:
        raise ModelError(f"batch {batch} is out of range", hint="use 1 to 4096 samples per graph iteration")
    # The independent checker runs before anything is written: an illegal design never reaches disk.
    design = check(map_design(imported.graph, dev, int(batch), options))
    if measure and imported.reference is not None:
        from .exactness import measure as measure_exactness

        inputs = calibration if calibration is not None else imported.calibration
        try:
            design = dataclasses.replace(design, exactness=measure_exactness(imported, design, inputs))
        except ImportError as e:  # the source's runtime is an optional extra; the compile does not need it
            warnings.warn(f"exactness not measured: running the {imported.source} reference needs {e.name or e} "
                          f"(pip install aieflow[ort] for onnxruntime)", stacklevel=2)
    return design


def import_model(model, example_input=None) -> Imported:
    """The frontend that reads this kind of model: its Graph and a way to run the source."""
    if isinstance(model, Graph):
        return Imported(model, "aieflow graph")
    if isinstance(model, (str, Path)) or type(model).__name__ == "ModelProto":
        from .frontends.onnx_nodes import read_model
        from .frontends.qonnx import is_qonnx

        proto, name = read_model(model)  # read once, for the choice and the frontend
        if is_qonnx(proto):
            from .frontends.qonnx import import_qonnx

            return import_qonnx(proto, name)
        from .frontends.onnx_qdq import import_onnx

        return import_onnx(proto, name)
    kind = type(model)
    module = kind.__module__ or ""
    if any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in kind.__mro__):
        if example_input is None:
            raise ModelError("a PyTorch module needs example_input", hint="aieflow.compile(module, example_input=x)")
        from .frontends.torch_module import import_torch

        return import_torch(model, example_input)
    if module.startswith("hls4ml") and hasattr(model, "get_layers"):
        from .frontends.hls4ml import import_hls4ml

        return import_hls4ml(model)
    raise ModelError(f"cannot compile a {kind.__name__}",
                     hint="give an ONNX or QONNX file, an onnx.ModelProto, a PyTorch module with example_input, "
                          "an hls4ml ModelGraph or an aieflow Graph")
