"""Requantizations on whole batches for the fast emulator (aieflow.simulate.fast): y = requantize(x * scale
+ bias, multiplier, shift, ...) in exact int64, the bias unpacked from the kernels' `packed["bias"]`.
Elementwise work is cheap beside the dense products, so it always runs in int64 on the CPU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...fastmath import as_dtype
from ...numerics import FixedType, requantize


@dataclass(frozen=True)
class RequantPlan:
    name: str
    x: str
    output: str
    scale: int
    bias: np.ndarray  # int64 [features]: the kernels' packed bias, padding cut
    multiplier: int
    shift: int
    zero_point: int
    relu: bool
    out: FixedType
    precision: str = "int64"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)

    def run(self, values: list, precision: str, prep, exact_int: bool = False) -> np.ndarray:
        """x * scale + bias, requantized, in exact int64 (the compiler bounds the sums below 2**62)."""
        acc = as_dtype(values[0], np.int64) * np.int64(self.scale) + self.bias
        return requantize(acc, self.multiplier, self.shift, self.zero_point, self.out, self.relu)


def plan(layer, graph) -> RequantPlan:
    op = layer.op
    y_t = graph.tensors[op.outputs[0]]
    bias = np.asarray(layer.packed["bias"]).astype(np.int64).reshape(-1)[: y_t.features]
    return RequantPlan(op.name, op.inputs[0], op.outputs[0], int(op.attrs.get("scale", 1)),
                       np.ascontiguousarray(bias), int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]),
                       y_t.zero_point, bool(op.attrs.get("relu", False)), y_t.type)
