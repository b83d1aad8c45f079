"""Adds on whole batches for the fast emulator (aieflow.simulate.fast): y = SRS((a << shift_a) +
(b << shift_b), shift) with optional ReLU, from the op's attributes, in the cheapest exact precision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...fastmath import (DTYPES, NUMPY, Unsupported, as_dtype, clip_bounds, float_ok, int_epilogue, offset,
                         precision_for, round_inplace)
from ...numerics import FixedType


@dataclass(frozen=True)
class AddPlan:
    name: str
    a: str
    b: str
    output: str
    shift_a: int
    shift_b: int
    shift: int
    relu: bool
    out: FixedType
    bound: int  # |a|max << shift_a + |b|max << shift_b, + 2**shift when shift > 0
    precision: str

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def _scaled_sum(self, xp_mul, a, b, dt):
        """(a << sa) + (b << sb) + offset, times 2**-shift: every term a power-of-two scaling, exact."""
        z = xp_mul(a, dt(2.0 ** (self.shift_a - self.shift))) + xp_mul(b, dt(2.0 ** (self.shift_b - self.shift)))
        off = offset(self.out.rounding, self.shift)
        if off:
            z += dt(off * 2.0 ** -self.shift)
        return z

    def run(self, values: list, precision: str, prep, exact_int: bool = False) -> np.ndarray:
        a, b = values
        if precision != "int64" and float_ok(self.out):
            dt = DTYPES[precision]
            z = self._scaled_sum(np.multiply, as_dtype(a, dt), as_dtype(b, dt), dt)
            z = round_inplace(NUMPY, z, self.out.rounding, self.shift)
            lo, hi = clip_bounds(self.out, self.relu)
            return np.clip(z, lo, hi, out=z)
        acc = (as_dtype(a, np.int64) << np.int64(self.shift_a)) + (as_dtype(b, np.int64) << np.int64(self.shift_b))
        return int_epilogue(acc, self.shift, self.out, self.relu)

    def run_torch(self, values: list, prep, xp, device):
        """On the GPU in float64, or None for the CPU's integer path (wrap-around saturation, huge sums)."""
        if self.precision == "int64" or not float_ok(self.out):
            return None
        import torch

        z = self._scaled_sum(lambda v, f: v * float(f), values[0], values[1], float)
        z = round_inplace(xp, z, self.out.rounding, self.shift)
        lo, hi = clip_bounds(self.out, self.relu)
        return torch.clamp(z, lo, hi)


def plan(layer, graph) -> AddPlan:
    op = layer.op
    a_t, b_t = (graph.tensors[t].type for t in op.inputs)
    sa, sb, shift = int(op.attrs["shift_a"]), int(op.attrs["shift_b"]), int(op.attrs["shift"])
    if sa < 0 or sb < 0:
        raise Unsupported(f"add '{op.name}' with a negative alignment shift")
    bound = (a_t.magnitude << sa) + (b_t.magnitude << sb) + ((1 << shift) if shift > 0 else 0)
    return AddPlan(op.name, op.inputs[0], op.inputs[1], op.outputs[0], sa, sb, shift,
                   bool(op.attrs.get("relu", False)), graph.tensors[op.outputs[0]].type, bound, precision_for(bound))
