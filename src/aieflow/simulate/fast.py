"""The fast emulator: whole batches, layer by layer, bit-exact with the structural emulator.

`emulator.run` follows the hardware: graph iterations of `design.batch` samples, every memory-tile DMA
descriptor, every kernel on its own block of packed weights. That is the reference, and it is slow for
large batches. This module computes the same integers from the same packed parameters, but for the whole
batch at once, one op at a time over the graph:

- Dense: the kernels' weight blocks `packed["weights"]` [cas_num, cas_length, Kt*Nt] are unpacked once per
  design back into the [K_pad, N_pad] matrix they tile (cached per design), and the chains' biases
  `packed["bias"]` into one vector; the product runs on BLAS where that is exact.
- Add: y = SRS((a << shift_a) + (b << shift_b), shift) with optional ReLU, from the op's attrs.
- Requant: y = requantize(x * scale + bias, multiplier, shift, ...) in exact int64, the bias unpacked from
  the kernels' `packed["bias"]`.

Exactness. An integer matrix product is exact in floating point while every partial sum is representable:
below 2**24 in float32 and 2**53 in float64. Every partial sum (in any order of summation, with or
without FMA) is at most the worst case |x|max * sum_k |w[k, j]| + |b[j]| that the compiler already bounds,
so each op is given the cheapest arithmetic whose bound holds:
  float32  bound + 2**shift < 2**24   (the 2**shift term covers the rounding offsets below)
  float64  bound + 2**shift < 2**53
  int64    otherwise: the product in float64 if sum_k |x||w| alone is below 2**53, else in int64, then the
           bias and SRS (aieflow.numerics.srs) in int64, exactly as the kernels' emulation does.
On the float paths the SRS is folded in: the weights and bias are scaled by 2**-shift (a power of two, so
exact) and the rounding offset is added to the bias, so the product gives acc * 2**-shift exactly and one
elementwise rounding (floor, ceil, trunc or round-half-even, all exact on floats) finishes the rounding
mode; saturation and ReLU are one clip. Wrap-around saturation (mode NONE) takes the int64 SRS. Tests
compare every path and rounding mode with the structural emulator and with numerics.srs.

`device="cuda"` (or "auto" with PyTorch and a CUDA device present) runs the float products and roundings
with torch on the GPU, always in float64 (never float32, which a GPU may run as TF32), under the float64
bound; ops beyond it run here on the CPU. torch is imported only then and is never required.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import DesignError
from . import emulator
from ..numerics import FixedType, Rounding, Saturation, dequantize, quantize_float, requantize, srs

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
# Rows per chunk are chosen so one activation chunk stays near this many bytes; whole batches of the
# 7 x 512 benchmark fit in one chunk, and a batch of millions never holds more than a few chunks at once.
CHUNK_BYTES = 64 << 20
PRECISIONS = ("float32", "float64", "int64")


class Unsupported(NotImplementedError):
    """An op kind the fast emulator does not know: the caller falls back to the structural emulator."""


# --- plans: what each op computes, prepared once per design ------------------------------------------------


@dataclass(frozen=True)
class DensePlan:
    name: str
    x: str  # input tensor
    y: str  # output tensor
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
    def kind(self) -> str:
        return "dense"


@dataclass(frozen=True)
class AddPlan:
    name: str
    a: str
    b: str
    y: str
    shift_a: int
    shift_b: int
    shift: int
    relu: bool
    out: FixedType
    bound: int  # |a|max << shift_a + |b|max << shift_b, + 2**shift when shift > 0
    precision: str

    @property
    def kind(self) -> str:
        return "add"


@dataclass(frozen=True)
class RequantPlan:
    name: str
    x: str
    y: str
    scale: int
    bias: np.ndarray  # int64 [features]: the kernels' packed bias, padding cut
    multiplier: int
    shift: int
    zero_point: int
    relu: bool
    out: FixedType
    precision: str  # always int64: elementwise work is cheap next to the dense products

    @property
    def kind(self) -> str:
        return "requant"


def _precision(bound: int) -> str:
    if bound < FLOAT32_EXACT:
        return "float32"
    if bound < FLOAT64_EXACT:
        return "float64"
    return "int64"


def unpack_dense_weights(layer) -> tuple[np.ndarray, np.ndarray]:
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


def _dense_plan(layer, graph) -> DensePlan:
    op = layer.op
    x_t = graph.tensors[op.inputs[0]]
    y_t = graph.tensors[op.outputs[0]]
    w, b = unpack_dense_weights(layer)
    # Padding rows meet zero-padded input features and padding columns are never read: cut both.
    w = w[: x_t.features, : y_t.features]
    b = b[: y_t.features]
    shift = int(op.attrs["shift"])
    colsum = np.abs(w).sum(axis=0).astype(object) * x_t.type.magnitude  # Python ints: no overflow
    product = int(max(colsum.tolist(), default=0))
    bound = int(max((colsum + np.abs(b).astype(object)).tolist(), default=0)) + ((1 << shift) if shift > 0 else 0)
    return DensePlan(op.name, op.inputs[0], op.outputs[0], np.ascontiguousarray(w), np.ascontiguousarray(b),
                     shift, bool(op.attrs.get("relu", False)), y_t.type, int(op.attrs.get("multiplier", 1)),
                     y_t.zero_point, product, bound, _precision(bound))


def _add_plan(layer, graph) -> AddPlan:
    op = layer.op
    a_t, b_t = (graph.tensors[t].type for t in op.inputs)
    sa, sb, shift = int(op.attrs["shift_a"]), int(op.attrs["shift_b"]), int(op.attrs["shift"])
    if sa < 0 or sb < 0:
        raise Unsupported(f"add '{op.name}' with a negative alignment shift")
    bound = (a_t.magnitude << sa) + (b_t.magnitude << sb) + ((1 << shift) if shift > 0 else 0)
    return AddPlan(op.name, op.inputs[0], op.inputs[1], op.outputs[0], sa, sb, shift,
                   bool(op.attrs.get("relu", False)), graph.tensors[op.outputs[0]].type, bound, _precision(bound))


def _requant_plan(layer, graph) -> RequantPlan:
    op = layer.op
    y_t = graph.tensors[op.outputs[0]]
    bias = np.asarray(layer.packed["bias"]).astype(np.int64).reshape(-1)[: y_t.features]
    return RequantPlan(op.name, op.inputs[0], op.outputs[0], int(op.attrs.get("scale", 1)),
                       np.ascontiguousarray(bias), int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]),
                       y_t.zero_point, bool(op.attrs.get("relu", False)), y_t.type, "int64")


PLANNERS = {"dense": _dense_plan, "add": _add_plan, "requant": _requant_plan}

_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def plan(design) -> tuple:
    """The op plans of a design, in graph order; computed once per design and kept while it lives."""
    cached = _PLANS.get(design)
    if cached is not None:
        return cached
    g = design.graph
    layers = {layer.op.name: layer for layer in design.layers}
    plans = []
    for op in g.ops:
        planner = PLANNERS.get(op.kind)
        if planner is None:
            raise Unsupported(f"the fast emulator has no '{op.kind}' op (node '{op.name}')")
        if op.name not in layers:
            raise Unsupported(f"node '{op.name}' has no mapped layer")
        plans.append(planner(layers[op.name], g))
    plans = tuple(plans)
    _PLANS[design] = plans
    return plans


def precisions(design, precision: str = "auto") -> dict[str, str]:
    """The arithmetic each op runs in: float32, float64 or int64 (see the module docstring)."""
    return {p.name: _choose(p, precision) for p in plan(design)}


def _choose(p, precision: str) -> str:
    """The plan's cheapest exact precision, raised to `precision` when that asks for more (never less)."""
    if precision == "auto":
        return p.precision
    if precision not in PRECISIONS:
        raise DesignError(f"unknown precision {precision!r}", hint="use auto, float32, float64 or int64")
    return max(p.precision, precision, key=PRECISIONS.index)


# --- the float SRS ----------------------------------------------------------------------------------------

# Rounding of z = acc * 2**-shift on floats, exact while |acc| + 2**shift is below the float's 2**p:
#   "floor" + an offset added to acc first (folded into the bias), or a direct float function.
_FLOOR_OFFSET = {
    Rounding.FLOOR: lambda s: 0,
    Rounding.CEIL: lambda s: (1 << s) - 1,
    Rounding.NEGATIVE_INF: lambda s: (1 << (s - 1)) - 1,  # ties down
    Rounding.POSITIVE_INF: lambda s: 1 << (s - 1),  # ties up
}


def _offset(rounding: Rounding, shift: int) -> int:
    """What the bias gains so that floor() rounds by `rounding` (0 for the modes that use another function)."""
    if shift <= 0 or rounding not in _FLOOR_OFFSET:
        return 0
    return _FLOOR_OFFSET[rounding](shift)


def _round_inplace(xp, z, rounding: Rounding, shift: int):
    """Round z = (acc + offset) * 2**-shift, an exact float, to the integer the mode gives; may reuse z."""
    if shift <= 0:
        return z  # already an integer: the left shift was exact
    if rounding in _FLOOR_OFFSET:
        return xp.floor(z, out=z)
    if rounding is Rounding.CONV_EVEN:
        return xp.rint(z, out=z)
    if rounding is Rounding.SYMMETRIC_FLOOR:  # toward zero
        return xp.trunc(z, out=z)
    a = xp.abs(z)
    if rounding is Rounding.SYMMETRIC_CEIL:  # away from zero
        a = xp.ceil(a, out=a)
    elif rounding is Rounding.SYMMETRIC_ZERO:  # nearest, ties toward zero: ceil(|z| - 1/2)
        a -= 0.5
        a = xp.ceil(a, out=a)
    elif rounding is Rounding.SYMMETRIC_INF:  # nearest, ties away from zero: floor(|z| + 1/2)
        a += 0.5
        a = xp.floor(a, out=a)
    elif rounding is Rounding.CONV_ODD:  # nearest, ties to odd: the neighbour round-half-even did not pick
        r = xp.rint(z)
        tie = xp.abs(z - r) == 0.5
        return xp.where(tie, 2 * z - r, r)
    else:  # pragma: no cover - the enum is closed
        raise DesignError(f"unknown rounding mode {rounding}")
    return xp.copysign(a, z, out=a)


def _clip_bounds(out: FixedType, relu: bool) -> tuple[int, int]:
    lo = out.qmin + 1 if (out.saturation is Saturation.SYMMETRIC and out.signed) else out.qmin
    return (max(lo, 0) if relu else lo), out.qmax


def _float_ok(out: FixedType) -> bool:
    """The float epilogue covers the saturating modes; wrap-around takes the int64 SRS."""
    return out.saturation is not Saturation.NONE


def _int_epilogue(acc: np.ndarray, shift: int, out: FixedType, relu: bool) -> np.ndarray:
    y = srs(acc, shift, out)
    return np.maximum(y, 0, out=y) if relu else y


# --- the numpy backend -------------------------------------------------------------------------------------


class _Numpy:
    """numpy under the names the rounding code uses."""

    floor = staticmethod(np.floor)
    rint = staticmethod(np.rint)
    trunc = staticmethod(np.trunc)
    ceil = staticmethod(np.ceil)
    abs = staticmethod(np.abs)
    where = staticmethod(np.where)
    copysign = staticmethod(np.copysign)


_DTYPES = {"float32": np.float32, "float64": np.float64}


class _Prepared:
    """Per design and backend: each op's operands in the dtype its precision needs (built once, cached)."""

    def __init__(self):
        self.cache: dict = {}

    def get(self, key, make):
        value = self.cache.get(key)
        if value is None:
            value = self.cache[key] = make()
        return value


_PREPARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _prepared(design) -> _Prepared:
    p = _PREPARED.get(design)
    if p is None:
        p = _PREPARED[design] = _Prepared()
    return p


def _blas_layout(w: np.ndarray) -> np.ndarray:
    """Weights stored column-major: OpenBLAS multiplies [B, K] @ [K, N] some 8% faster with B transposed
    in memory (measured on the 7 x 512 benchmark); the values are the same."""
    return np.asfortranarray(w)


def _as(a: np.ndarray, dtype) -> np.ndarray:
    """Exact conversion between float and int64 holders of the same integers."""
    return a if a.dtype == dtype else a.astype(dtype)


def _dense_cpu(p: DensePlan, x: np.ndarray, precision: str, prep: _Prepared, exact_int: bool = False) -> np.ndarray:
    """One dense op on the CPU in `precision`; exact_int (precision="int64" asked for) multiplies in int64."""
    if precision != "int64" and _float_ok(p.out) and p.multiplier == 1 and p.zero_point == 0:
        dt = _DTYPES[precision]

        def scaled():
            off = _offset(p.out.rounding, p.shift)
            w = np.ldexp(p.weight.astype(np.float64), -p.shift).astype(dt)
            b = np.ldexp((p.bias + off).astype(np.float64), -p.shift).astype(dt)
            return _blas_layout(w), b

        w, b = prep.get((p.name, precision, "scaled"), scaled)
        z = np.matmul(_as(x, dt), w)
        z += b
        z = _round_inplace(_Numpy, z, p.out.rounding, p.shift)
        lo, hi = _clip_bounds(p.out, p.relu)
        return np.clip(z, lo, hi, out=z)
    acc = _product(p, x, exact_int, prep)
    acc += p.bias
    if p.multiplier != 1 or p.zero_point != 0:
        return requantize(acc, p.multiplier, p.shift, p.zero_point, p.out, p.relu)
    return _int_epilogue(acc, p.shift, p.out, p.relu)


def _product(p: DensePlan, x: np.ndarray, exact_int: bool, prep: _Prepared) -> np.ndarray:
    """x @ W as int64: on BLAS in the narrowest float where sum_k |x||w| is exact, else (or when asked)
    in int64, exact since the compiler bounds the accumulator below 2**63."""
    if exact_int or p.product_bound >= FLOAT64_EXACT:
        return _as(x, np.int64) @ p.weight
    dt = np.float32 if p.product_bound < FLOAT32_EXACT else np.float64
    w = prep.get((p.name, dt, "plain"), lambda: _blas_layout(p.weight.astype(dt)))
    return np.matmul(_as(x, dt), w).astype(np.int64)


def _add_cpu(p: AddPlan, a: np.ndarray, b: np.ndarray, precision: str) -> np.ndarray:
    if precision != "int64" and _float_ok(p.out):
        dt = _DTYPES[precision]
        off = _offset(p.out.rounding, p.shift)
        # (a << sa) + (b << sb) + offset, times 2**-shift: every term a power-of-two scaling, exact.
        z = _as(a, dt) * dt(2.0 ** (p.shift_a - p.shift))
        z += _as(b, dt) * dt(2.0 ** (p.shift_b - p.shift))
        if off:
            z += dt(off * 2.0 ** -p.shift)
        z = _round_inplace(_Numpy, z, p.out.rounding, p.shift)
        lo, hi = _clip_bounds(p.out, p.relu)
        return np.clip(z, lo, hi, out=z)
    acc = (_as(a, np.int64) << np.int64(p.shift_a)) + (_as(b, np.int64) << np.int64(p.shift_b))
    return _int_epilogue(acc, p.shift, p.out, p.relu)


def _requant_cpu(p: RequantPlan, x: np.ndarray) -> np.ndarray:
    """x * scale + bias, requantized, in exact int64 (the compiler bounds the sums below 2**62)."""
    acc = _as(x, np.int64) * np.int64(p.scale) + p.bias
    return requantize(acc, p.multiplier, p.shift, p.zero_point, p.out, p.relu)


def _inputs_of(p) -> tuple[str, ...]:
    return (p.a, p.b) if p.kind == "add" else (p.x,)


def _run_cpu(design, plans, q: np.ndarray, precision: str) -> np.ndarray:
    g = design.graph
    prep = _prepared(design)
    values = {g.inputs[0]: q}
    last_use = _last_use(plans, g)
    for i, p in enumerate(plans):
        prec = _choose(p, precision)
        if p.kind == "dense":
            values[p.y] = _dense_cpu(p, values[p.x], prec, prep, precision == "int64")
        elif p.kind == "requant":
            values[p.y] = _requant_cpu(p, values[p.x])
        else:
            values[p.y] = _add_cpu(p, values[p.a], values[p.b], prec)
        for t in last_use.get(i, ()):
            values.pop(t, None)  # free activations no later op reads
    return values[g.outputs[0]]


def _last_use(plans, g) -> dict[int, list[str]]:
    last: dict[str, int] = {}
    for i, p in enumerate(plans):
        for t in _inputs_of(p):
            last[t] = i
    out: dict[int, list[str]] = {}
    for t, i in last.items():
        if t not in g.outputs:
            out.setdefault(i, []).append(t)
    return out


# --- the torch backend (optional) ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when PyTorch is importable and sees a CUDA device (asked once per process).

    Importing torch takes seconds, so a machine without the NVIDIA driver is answered without it.
    """
    import os

    if not os.path.exists("/proc/driver/nvidia") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver is "no GPU", not an error
        return False


class _Torch:
    """torch under the names the rounding code uses (torch.round rounds half to even, like np.rint)."""

    def __init__(self, torch):
        self.t = torch

    def floor(self, z, out=None):
        return self.t.floor(z, out=out) if out is not None else self.t.floor(z)

    def rint(self, z, out=None):
        return self.t.round(z, out=out) if out is not None else self.t.round(z)

    def trunc(self, z, out=None):
        return self.t.trunc(z, out=out) if out is not None else self.t.trunc(z)

    def ceil(self, z, out=None):
        return self.t.ceil(z, out=out) if out is not None else self.t.ceil(z)

    def abs(self, z):
        return self.t.abs(z)

    def where(self, c, a, b):
        return self.t.where(c, a, b)

    def copysign(self, a, z, out=None):
        return self.t.copysign(a, z, out=out) if out is not None else self.t.copysign(a, z)


def _run_torch(design, plans, q: np.ndarray, precision: str, device: str) -> np.ndarray:
    """Float ops on the GPU in float64; ops that need int64 come back to the CPU path for their step."""
    import torch

    xp = _Torch(torch)
    g = design.graph
    prep = _prepared(design)
    dev = torch.device(device)
    values: dict[str, object] = {g.inputs[0]: torch.from_numpy(np.ascontiguousarray(q, dtype=np.float64)).to(dev)}

    def on_gpu(v):
        return v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).to(dev)

    def on_cpu(v):
        return v.cpu().numpy() if isinstance(v, torch.Tensor) else v

    last_use = _last_use(plans, g)
    for i, p in enumerate(plans):
        prec = _choose(p, precision)
        if p.kind == "requant":
            values[p.y] = _requant_cpu(p, on_cpu(values[p.x]))
            for t in last_use.get(i, ()):
                values.pop(t, None)
            continue
        gpu = (prec in ("float32", "float64") and _float_ok(p.out)  # float32 bounds hold in float64 a fortiori
               and (p.kind != "dense" or (p.multiplier == 1 and p.zero_point == 0)))
        lo, hi = _clip_bounds(p.out, p.relu)
        off = _offset(p.out.rounding, p.shift)
        if p.kind == "dense" and gpu:
            def scaled(p=p, off=off):
                w = np.ldexp(p.weight.astype(np.float64), -p.shift)
                b = np.ldexp((p.bias + off).astype(np.float64), -p.shift)
                return torch.from_numpy(w).to(dev), torch.from_numpy(b).to(dev)

            w, b = prep.get((p.name, "torch", str(dev)), scaled)
            z = torch.matmul(on_gpu(values[p.x]), w)
            z += b
            z = _round_inplace(xp, z, p.out.rounding, p.shift)
            values[p.y] = torch.clamp(z, lo, hi)
        elif p.kind == "add" and gpu:
            z = on_gpu(values[p.a]) * 2.0 ** (p.shift_a - p.shift) + on_gpu(values[p.b]) * 2.0 ** (p.shift_b - p.shift)
            if off:
                z += off * 2.0 ** -p.shift
            z = _round_inplace(xp, z, p.out.rounding, p.shift)
            values[p.y] = torch.clamp(z, lo, hi)
        elif p.kind == "dense":
            values[p.y] = _dense_cpu(p, on_cpu(values[p.x]), prec, prep, precision == "int64")
        else:
            values[p.y] = _add_cpu(p, on_cpu(values[p.a]), on_cpu(values[p.b]), prec)
        for t in last_use.get(i, ()):
            values.pop(t, None)
    return np.asarray(on_cpu(values[g.outputs[0]]))


# --- entry points ----------------------------------------------------------------------------------------


def _check_shape(design, x: np.ndarray) -> np.ndarray:
    return emulator.samples(design, x)


def _check_raw(design, q: np.ndarray) -> np.ndarray:
    return emulator.check_raw(design, _check_shape(design, q))


def _device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not cuda_available():
            raise DesignError("device='cuda' needs PyTorch with a CUDA device", hint="use device='auto' or 'cpu'")
        return "cuda"
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    raise DesignError(f"unknown device {device!r}", hint="use auto, cpu or cuda")


def chunk_rows(design, samples: int) -> int:
    """Samples per chunk: the widest activation of a chunk stays near CHUNK_BYTES (in 8-byte values)."""
    widest = max([t.features for t in design.graph.tensors.values()] or [1])
    return max(1, min(samples, CHUNK_BYTES // (8 * widest)))


def _execute(design, h: np.ndarray, device: str, precision: str) -> np.ndarray:
    """The graph output for input values h (ints, or floats holding in-range integers), chunk by chunk.

    Returns an array holding the output integers: int64, or a float dtype holding them exactly.
    """
    plans = plan(design)
    where = _device(device)
    if precision != "auto" and precision not in PRECISIONS:
        raise DesignError(f"unknown precision {precision!r}", hint="use auto, float32, float64 or int64")
    g = design.graph
    if h.shape[0] == 0:
        return np.zeros((0, g.tensors[g.outputs[0]].features), dtype=np.int64)
    rows = chunk_rows(design, h.shape[0])
    parts = []
    for start in range(0, h.shape[0], rows):
        part = h[start:start + rows]
        if where == "cpu":
            parts.append(_run_cpu(design, plans, part, precision))
        else:
            parts.append(_run_torch(design, plans, part, precision, where))
    if len(parts) == 1:
        return parts[0]
    if len({p.dtype for p in parts}) > 1:
        parts = [_as(p, np.int64) for p in parts]
    return np.concatenate(parts)


def run_fast(design, q: np.ndarray, *, device: str = "auto", precision: str = "auto") -> np.ndarray:
    """Output integers [samples, out_features] (int64) for raw input integers q [samples, in_features].

    Bit-exact with `emulator.run(design, q, raw=True)`. `precision` may raise the arithmetic of every op
    (float64 or int64; "auto" takes the cheapest exact one per op) but never lowers it below exact.
    Raises Unsupported (a NotImplementedError) for an op kind it does not know.
    """
    plan(design)  # an unknown op kind is refused before the input is looked at
    q = _check_raw(design, q)
    return _as(_execute(design, q, device, precision), np.int64)  # exact: holders carry integers < 2**53


def quantize_input(x: np.ndarray, t: FixedType) -> np.ndarray:
    """numerics.quantize_float(x, t) as int64; see _quantize_holder for the fast case."""
    return _as(_quantize_holder(np.asarray(x), t), np.int64)


def _quantize_holder(x: np.ndarray, t: FixedType) -> np.ndarray:
    """x quantized onto t: numerics.quantize_float's integers, held in x's float dtype when that is exact.

    Fast case, ONNX's own mode (round half to even, saturating) on float32 or float64 values: x * 2**frac
    is exact in x's own dtype except where it overflows (|x * 2**frac| >= 2**128 for float32, which
    saturates either way) or becomes subnormal (below 2**-126, which rounds to 0 either way), and np.rint
    rounds an exact value half to even: the integer the exact integer rounding gives, then one clip.
    Anything else (other modes, wrap-around, NaN or infinity, which quantize_float refuses) goes to
    quantize_float.
    """
    if (x.dtype not in (np.float32, np.float64) or t.rounding is not Rounding.CONV_EVEN
            or t.saturation is Saturation.NONE or abs(t.frac) > 100 or not np.isfinite(x).all()):
        return quantize_float(x, t)
    with np.errstate(over="ignore", under="ignore"):
        z = x * x.dtype.type(2.0 ** t.frac)
    z = np.rint(z, out=z)
    lo, hi = _clip_bounds(t, False)
    return np.clip(z, lo, hi, out=z)


def run(design, x: np.ndarray, raw: bool = False, *, device: str = "auto", precision: str = "auto") -> np.ndarray:
    """emulator.run's contract on the fast path: floats are quantized like the model's input, integers
    taken as they are; returns dequantized floats (float64), or the output integers with `raw=True`."""
    g = design.graph
    tin = g.tensors[g.inputs[0]]
    tout = g.tensors[g.outputs[0]]
    plan(design)  # an unknown op kind is refused before any work
    x = _check_shape(design, x)
    if x.dtype.kind == "f":
        h = _quantize_holder(x, tin.type) if tin.plain else tin.quantize(x)
    elif x.dtype.kind in "iu":
        h = _check_raw(design, x)
    else:
        raise DesignError(f"input of dtype {x.dtype}; give floats or integers")
    y = _execute(design, h, device, precision)
    if raw:
        return _as(y, np.int64)
    if not tout.plain:
        return tout.dequantize(_as(y, np.int64))
    if y.dtype.kind == "f" and abs(tout.type.frac) < 1000:
        return np.multiply(y, np.float64(2.0 ** -tout.type.frac))  # float64, times a power of two: exact
    return dequantize(y, tout.type)
