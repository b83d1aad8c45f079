"""Dense layers on whole batches for the fast emulator (aieflow.simulate.fast), from the packed weights.

The kernels' weight blocks `packed["weights"]` [cas_num, cas_length, Kt*Nt] are unpacked back into the
[K, N] matrix they tile and the chains' biases into one vector; the product runs on BLAS in the cheapest
exact precision (aieflow.fastmath): float32 or float64 with the SRS folded into the operands, else an
exact integer product, the bias and numerics.requantize in int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...fastmath import (DTYPES, FLOAT32_EXACT, FLOAT64_EXACT, NUMPY, as_dtype, blas_layout, clip_bounds,
                         float_ok, int_epilogue, offset, precision_for, round_inplace)
from ...numerics import FixedType, requantize


@dataclass(frozen=True)
class DensePlan:
    name: str
    x: str  # input tensor
    output: str
    weight: np.ndarray  # int64 [K, N]: the unpacked packed weights, padding cut
    bias: np.ndarray  # int64 [N]
    shift: int
    relu: bool
    out: FixedType
    multiplier: int  # requantization (numerics.requantize): 1 and 0 for power-of-two sources
    zero_point: int
    product_bound: int  # max_j |x|max * sum_k |w[k, j]|
    bound: int  # max_j of that + |b[j]|, + 2**shift for the rounding offset when shift > 0
    precision: str  # float32, float64 or int64 (the cheapest exact one)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)

    @property
    def folds_srs(self) -> bool:
        """Whether the float path can finish the layer (a plain SRS into a saturating type)."""
        return float_ok(self.out) and self.multiplier == 1 and self.zero_point == 0

    def run(self, values: list, precision: str, prep, exact_int: bool = False) -> np.ndarray:
        """On the CPU in `precision`; exact_int (precision "int64" asked for) multiplies in int64."""
        (x,) = values
        if precision != "int64" and self.folds_srs:
            dt = DTYPES[precision]
            w, b = prep.get((self.name, precision, "scaled"), lambda: self._scaled(dt))
            z = np.matmul(as_dtype(x, dt), w)
            z += b
            z = round_inplace(NUMPY, z, self.out.rounding, self.shift)
            lo, hi = clip_bounds(self.out, self.relu)
            return np.clip(z, lo, hi, out=z)
        acc = self._product(x, exact_int, prep)
        acc += self.bias
        if self.multiplier != 1 or self.zero_point != 0:
            return requantize(acc, self.multiplier, self.shift, self.zero_point, self.out, self.relu)
        return int_epilogue(acc, self.shift, self.out, self.relu)

    def run_torch(self, values: list, prep, xp, device):
        """On the GPU in float64, or None when this layer needs the CPU's integer path."""
        if self.precision == "int64" or not self.folds_srs:
            return None
        import torch

        def scaled():
            w, b = self._scaled(np.float64)
            return torch.from_numpy(np.ascontiguousarray(w)).to(device), torch.from_numpy(b).to(device)

        w, b = prep.get((self.name, "torch", str(device)), scaled)
        z = torch.matmul(values[0], w)
        z += b
        z = round_inplace(xp, z, self.out.rounding, self.shift)
        lo, hi = clip_bounds(self.out, self.relu)
        return torch.clamp(z, lo, hi)

    def _scaled(self, dt):
        """Weights and bias times 2**-shift, the rounding offset in the bias: the product is acc * 2**-shift."""
        off = offset(self.out.rounding, self.shift)
        w = np.ldexp(self.weight.astype(np.float64), -self.shift).astype(dt)
        b = np.ldexp((self.bias + off).astype(np.float64), -self.shift).astype(dt)
        return blas_layout(w), b

    def _product(self, x: np.ndarray, exact_int: bool, prep) -> np.ndarray:
        """x @ W as int64: on BLAS in the narrowest float where sum_k |x||w| is exact, else (or when asked)
        in int64, exact since the compiler bounds the accumulator below 2**63."""
        if exact_int or self.product_bound >= FLOAT64_EXACT:
            return as_dtype(x, np.int64) @ self.weight
        dt = np.float32 if self.product_bound < FLOAT32_EXACT else np.float64
        w = prep.get((self.name, dt, "plain"), lambda: blas_layout(self.weight.astype(dt)))
        return np.matmul(as_dtype(x, dt), w).astype(np.int64)


def unpack_weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """The padded [K_pad, N_pad] weight matrix and [N_pad] bias that a dense layer's kernels hold.

    Inverse of dense.pack: tile (c, s) holds blocks [Nt/N][Kt/K][K][N] of W[s*Kt:(s+1)*Kt, c*Nt:(c+1)*Nt].
    """
    cfg = layer.config
    _, k, n = cfg.microtile
    kt, nt = cfg.k_tile, cfg.n_tile
    blocks = np.asarray(layer.packed["weights"]).astype(np.int64)
    blocks = blocks.reshape(cfg.cas_num, cfg.cas_length, nt // n, kt // k, k, n)
    # [c][s][nb][kb][k][n] -> [s][kb][k][c][nb][n]
    w = blocks.transpose(1, 3, 4, 0, 2, 5).reshape(cfg.k_pad, cfg.n_pad)
    b = np.asarray(layer.packed["bias"]).astype(np.int64).reshape(cfg.n_pad)
    return w, b


def plan(layer, graph) -> DensePlan:
    op = layer.op
    x_t = graph.tensors[op.inputs[0]]
    y_t = graph.tensors[op.outputs[0]]
    w, b = unpack_weights(layer)
    # Padding rows meet zero-padded input features and padding columns are never read: cut both.
    w = w[: x_t.features, : y_t.features]
    b = b[: y_t.features]
    shift = int(op.attrs["shift"])
    colsum = np.abs(w).sum(axis=0).astype(object) * x_t.type.magnitude  # Python ints: no overflow
    product = int(max(colsum.tolist(), default=0))
    bound = int(max((colsum + np.abs(b).astype(object)).tolist(), default=0)) + ((1 << shift) if shift > 0 else 0)
    return DensePlan(op.name, op.inputs[0], op.outputs[0], np.ascontiguousarray(w), np.ascontiguousarray(b),
                     shift, bool(op.attrs.get("relu", False)), y_t.type, int(op.attrs.get("multiplier", 1)),
                     y_t.zero_point, product, bound, precision_for(bound))
