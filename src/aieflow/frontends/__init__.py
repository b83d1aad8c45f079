"""Frontends: each turns one kind of source model into an aieflow Graph, with a way to run the source.

Every frontend returns an `Imported`. Its `reference` runs the source model itself (onnxruntime, qonnx's
executor, the PyTorch module, hls4ml's C simulation) on float inputs and returns the source's own quantized
integers for the IR tensors it can see: always the graph input and output, and each layer's output where the
source exposes it. aieflow.exactness compares the Graph's integer semantics with it, layer by layer, so a
compile can say which layers are bit-exact with the source, measured, never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir import Graph

# float inputs [samples, features] -> {IR tensor name: int64 [samples, features]}
Reference = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True, eq=False)
class Imported:
    graph: Graph
    source: str  # what runs the reference, for messages: "onnxruntime", "qonnx", "brevitas", "hls4ml C simulation"
    reference: Reference | None = None
    calibration: np.ndarray | None = None  # float inputs to measure on; None: aieflow makes them from the input type
