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


def dense_op(name: str, x: str, y: str, weight, bias, weight_type: FixedType, shift: int, multiplier: int = 1,
             relu: bool = False) -> Op:
    """A dense layer as every frontend writes it: y = requantize(x @ weight + bias, multiplier, shift,
    zero point and type of y, relu) (numerics.requantize); weight [in, out] and bias [out] as int64."""
    attrs = {"relu": bool(relu), "shift": int(shift), "weight_type": weight_type}
    if multiplier != 1:
        attrs["multiplier"] = int(multiplier)
    return Op(name, "dense", (x,), (y,), attrs,
              {"weight": np.asarray(weight).astype(np.int64), "bias": np.asarray(bias).astype(np.int64)})


def requant_op(name: str, x: str, y: str, bias, shift: int, multiplier: int = 1, relu: bool = False,
               scale: int = 1) -> Op:
    """An elementwise requantization (no matrix product), feature by feature:

        y[:, j] = requantize(x[:, j] * scale + bias[j], multiplier, shift, zero point and type of y, relu)

    with numerics.requantize: the sum times the integer `multiplier`, divided by 2**shift and rounded by
    y's rounding mode, plus y's zero point, saturated (or wrapped) into y's bits, then max(y, zero point)
    with `relu`. x holds the raw integers of its tensor (a zero point of x is folded into `bias` by the
    frontend: bias - zp_x * scale); `scale` is an integer power of two (the kernel applies it as an exact
    upshift) that puts x on the grid of the bias; bias [features] as int64. A dense op with the identity
    matrix times `scale` as weights computes the same integers. `multiplier` and `scale` are written only
    when they are not 1."""
    attrs = {"relu": bool(relu), "shift": int(shift)}
    if multiplier != 1:
        attrs["multiplier"] = int(multiplier)
    if scale != 1:
        attrs["scale"] = int(scale)
    return Op(name, "requant", (x,), (y,), attrs, {"bias": np.asarray(bias).astype(np.int64)})


def add_op(name: str, a: Tensor, b: Tensor, y: str, out: FixedType, relu: bool = False) -> Op:
    """A residual add as every frontend writes it: both inputs moved onto the finer of their power-of-two
    grids by left shifts, added, and the sum shifted into y's type (ops/add)."""
    common = max(a.type.frac, b.type.frac)
    return Op(name, "add", (a.name, b.name), (y,),
              {"relu": bool(relu), "shift_a": common - a.type.frac, "shift_b": common - b.type.frac,
               "shift": common - out.frac})
