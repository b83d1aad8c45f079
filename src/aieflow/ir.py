"""The quantized graph every frontend produces and every later stage reads.

An activation is a batch of samples, each of a per-sample `shape`, channels last inside the compiler: (C,)
for an MLP, (L, C) for a 1-D feature map, (H, W, C) for a 2-D one, the layout AIE kernels and memory-tile
tilings want. Every stage holds a batch as [samples, features] integers in that order (features = the
product of the shape: a feature map flattened height, width, channel). A frontend converts its source's
layout (NCHW, NCW) once, on import, and records it in `source_order`, so that inputs, outputs and the
exactness measurement are given and compared in the source's own layout. Ops are listed in topological
order. Op parameters are exact integer arrays already on their final grid (weights as stored, bias on the
accumulator grid), so nothing downstream touches floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError
from .numerics import FixedType, Saturation, dequantize, quantize_float, saturate


@dataclass(frozen=True)
class Tensor:
    """An activation: integers q of `type` meaning (q - zero_point) * scale, `shape` per sample.

    scale None means the power of two 2**-type.frac (every power-of-two frontend); a float scale comes from
    sources with arbitrary per-tensor scales (onnxruntime's quantizer, Brevitas learned scales), whose
    layers requantize with an integer multiplier and shift. `source_order` says how the source lays out a
    sample: the internal sample is the source's transposed by it ((1, 2, 0) for NCHW, (1, 0) for NCL);
    empty means the same layout.
    """

    name: str
    shape: tuple[int, ...]
    type: FixedType
    scale: float | None = None
    zero_point: int = 0
    source_order: tuple[int, ...] = ()

    @property
    def features(self) -> int:
        """Values per sample: the product of the shape."""
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def channels(self) -> int:
        return int(self.shape[-1])

    @property
    def source_shape(self) -> tuple[int, ...]:
        """A sample's shape in the source's layout (e.g. (C, H, W) for an NCHW source)."""
        if not self.source_order:
            return tuple(self.shape)
        back = [0] * len(self.shape)
        for i, o in enumerate(self.source_order):
            back[o] = self.shape[i]
        return tuple(back)

    def from_source(self, a) -> np.ndarray:
        """Samples in the source's layout ([n, *source_shape], or [n, features] in the source's order) as
        [n, features] in the compiler's channels-last order."""
        a = np.asarray(a)
        n = a.shape[0]
        if not self.source_order:
            return a.reshape(n, self.features)
        return a.reshape(n, *self.source_shape).transpose(0, *(1 + i for i in self.source_order)).reshape(n, -1)

    def to_source(self, a) -> np.ndarray:
        """[n, features] in the compiler's order as [n, *source_shape] in the source's layout."""
        a = np.asarray(a)
        n = a.shape[0]
        if len(self.shape) == 1:
            return a.reshape(n, self.features)
        inner = a.reshape(n, *self.shape)
        if not self.source_order:
            return inner
        back = [0] * len(self.shape)
        for i, o in enumerate(self.source_order):
            back[o] = i
        return inner.transpose(0, *(1 + i for i in back))

    @property
    def real_scale(self) -> float:
        return float(2.0 ** -self.type.frac) if self.scale is None else float(self.scale)

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": [int(v) for v in self.shape], "type": self.type.to_dict()}
        if self.scale is not None:
            d["scale"] = float(self.scale).hex()  # exact round trip
        if self.zero_point:
            d["zero_point"] = int(self.zero_point)
        if self.source_order:
            d["source_order"] = [int(v) for v in self.source_order]
        return d

    @property
    def plain(self) -> bool:
        """A power-of-two scale and no zero point: the integers are fixed-point values as they are."""
        return self.scale is None and self.zero_point == 0

    def quantize(self, x) -> np.ndarray:
        """Real values onto this tensor's integers, as the source quantizes its input.

        Power-of-two scales quantize exactly (numerics.quantize_float); a float scale divides in float32 as
        onnxruntime's QuantizeLinear does, then rounds by the type's mode; the zero point is added after
        the rounding and the sum saturated.
        """
        t = self.type
        if self.scale is None:
            if self.zero_point == 0:
                return quantize_float(x, t)
            q = quantize_float(x, FixedType(64, True, t.frac, t.rounding, Saturation.SATURATE))
        else:
            v = np.asarray(x, dtype=np.float32) / np.float32(self.scale)
            q = quantize_float(v.astype(np.float64), FixedType(64, True, 0, t.rounding, Saturation.SATURATE))
        return saturate(q + np.int64(self.zero_point), t.bits, t.signed, t.saturation)

    def dequantize(self, q) -> np.ndarray:
        """This tensor's integers as real values (float64)."""
        if self.scale is None:
            return dequantize(np.asarray(q, dtype=np.int64) - self.zero_point, self.type)
        return (np.asarray(q, dtype=np.float64) - self.zero_point) * float(self.scale)

    @classmethod
    def from_dict(cls, d: dict) -> "Tensor":
        scale = d.get("scale")
        # design.json of aieflow 0.1 wrote a flat "features" count: a shape of one dimension.
        shape = tuple(int(v) for v in d["shape"]) if "shape" in d else (int(d["features"]),)
        return cls(d["name"], shape, FixedType.from_dict(d["type"]),
                   float.fromhex(scale) if scale is not None else None, int(d.get("zero_point", 0)),
                   tuple(int(v) for v in d.get("source_order", ())))


@dataclass(frozen=True, eq=False)
class Op:
    """One operation. `kind` names its op family (a folder under aieflow/ops)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    tensors: dict[str, Tensor]
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def producer(self, tensor: str) -> Op | None:
        return next((op for op in self.ops if tensor in op.outputs), None)

    def consumers(self, tensor: str) -> list[Op]:
        return [op for op in self.ops if tensor in op.inputs]

    def validate(self) -> "Graph":
        """Every tensor an op reads is defined before it; names are unique."""
        defined = set(self.inputs)
        for op in self.ops:
            for t in op.inputs:
                if t not in defined:
                    raise ModelError(f"reads tensor '{t}' before it is produced", node=op.name)
            for t in op.outputs:
                if t in defined:
                    raise ModelError(f"writes tensor '{t}' that already exists", node=op.name)
                defined.add(t)
        for t in self.outputs:
            if t not in defined:
                raise ModelError(f"graph output '{t}' is never produced")
        return self

