"""The quantized graph every frontend produces and every later stage reads.

Activations are [batch, features] integer tensors with a FixedType; ops are listed in topological order.
Op parameters are exact integer arrays already on their final grid (weights as stored, bias on the
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
    """An activation: integers q of `type` meaning (q - zero_point) * scale.

    scale None means the power of two 2**-type.frac (every power-of-two frontend); a float scale comes from
    sources with arbitrary per-tensor scales (onnxruntime's quantizer, Brevitas learned scales), whose
    layers requantize with an integer multiplier and shift.
    """

    name: str
    features: int
    type: FixedType
    scale: float | None = None
    zero_point: int = 0

    @property
    def real_scale(self) -> float:
        return float(2.0 ** -self.type.frac) if self.scale is None else float(self.scale)

    def to_dict(self) -> dict:
        d = {"name": self.name, "features": self.features, "type": self.type.to_dict()}
        if self.scale is not None:
            d["scale"] = float(self.scale).hex()  # exact round trip
        if self.zero_point:
            d["zero_point"] = int(self.zero_point)
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
        return cls(d["name"], d["features"], FixedType.from_dict(d["type"]),
                   float.fromhex(scale) if scale is not None else None, int(d.get("zero_point", 0)))


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

