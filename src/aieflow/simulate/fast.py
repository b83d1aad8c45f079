"""The fast emulator: whole batches, layer by layer, bit-exact with the structural emulator.

`emulator.run` follows the hardware: graph iterations of `design.batch` samples, every memory-tile DMA
descriptor, every kernel on its own block of packed weights. That is the reference, and it is slow for
large batches. This module computes the same integers from the same packed parameters, but for the whole
batch at once, one op at a time over the graph. What each op computes is its family's (ops/<kind>/fast.py:
`plan(layer, graph)` gives a FastOp), in the cheapest exact arithmetic (aieflow.fastmath); this module
chunks the batch, runs the plans in graph order and frees activations no later op reads. Tests compare
every path and rounding mode with the structural emulator and with numerics.srs.

`device="cuda"` (or "auto" with PyTorch and a CUDA device present) runs the ops whose family offers
`run_torch` on the GPU, always in float64 (never float32, which a GPU may run as TF32), under the float64
bound; the others run here on the CPU. torch is imported only then and is never required.
"""

from __future__ import annotations

import functools
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import DesignError
from ..fastmath import FLOAT32_EXACT, FLOAT64_EXACT, PRECISIONS, Prepared, Torch, Unsupported, as_dtype, clip_bounds
from ..numerics import FixedType, Rounding, Saturation, dequantize, quantize_float
from . import emulator

# Rows per chunk are chosen so one activation chunk stays near this many bytes; whole batches of the
# 7 x 512 benchmark fit in one chunk, and a batch of millions never holds more than a few chunks at once.
CHUNK_BYTES = 64 << 20

__all__ = ["FLOAT32_EXACT", "FLOAT64_EXACT", "PRECISIONS", "Unsupported", "plan", "precisions", "run", "run_fast",
           "quantize_input", "chunk_rows", "cuda_available"]


# --- plans: what each op computes, prepared once per design ------------------------------------------------

_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def plan(design) -> tuple:
    """The op plans of a design, in graph order (each from its family's fast.plan); computed once per
    design and kept while it lives."""
    from ..ops import part

    cached = _PLANS.get(design)
    if cached is not None:
        return cached
    g = design.graph
    layers = {layer.op.name: layer for layer in design.layers}
    plans = []
    for op in g.ops:
        if op.name not in layers:
            raise Unsupported(f"node '{op.name}' has no mapped layer")
        plans.append(part(op.kind, "fast").plan(layers[op.name], g))
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


_PREPARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _prepared(design) -> Prepared:
    p = _PREPARED.get(design)
    if p is None:
        p = _PREPARED[design] = Prepared()
    return p


def _run_cpu(design, plans, q: np.ndarray, precision: str) -> np.ndarray:
    g = design.graph
    prep = _prepared(design)
    values = {g.inputs[0]: q}
    last_use = _last_use(plans, g)
    for i, p in enumerate(plans):
        values[p.output] = p.run([values[t] for t in p.inputs], _choose(p, precision), prep, precision == "int64")
        for t in last_use.get(i, ()):
            values.pop(t, None)  # free activations no later op reads
    return values[g.outputs[0]]


def _last_use(plans, g) -> dict[int, list[str]]:
    last: dict[str, int] = {}
    for i, p in enumerate(plans):
        for t in p.inputs:
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

def _run_torch(design, plans, q: np.ndarray, precision: str, device: str) -> np.ndarray:
    """Ops with a GPU path (run_torch) on the GPU in float64; the others on the CPU for their step."""
    import torch

    xp = Torch(torch)
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
        y = None
        if prec in ("float32", "float64") and hasattr(p, "run_torch"):  # float32 bounds hold in float64 too
            y = p.run_torch([on_gpu(values[t]) for t in p.inputs], prep, xp, dev)
        if y is None:
            y = p.run([on_cpu(values[t]) for t in p.inputs], prec, prep, precision == "int64")
        values[p.output] = y
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
    # Plans whose arithmetic runs on one core (many small products, which BLAS does not spread over the
    # cores) let the chunks of a batch run side by side, one per core; the others keep BLAS's own threads.
    workers = os.cpu_count() or 1
    if where == "cpu" and workers > 1 and any(getattr(p, "single_threaded", False) for p in plans):
        rows = max(1, min(rows, -(-h.shape[0] // workers)))
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda start: _run_cpu(design, plans, h[start:start + rows], precision),
                                  range(0, h.shape[0], rows)))
    else:
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
        parts = [as_dtype(p, np.int64) for p in parts]
    return np.concatenate(parts)


def run_fast(design, q: np.ndarray, *, device: str = "auto", precision: str = "auto") -> np.ndarray:
    """Output integers [samples, out_features] (int64) for raw input integers q [samples, in_features].

    Bit-exact with `emulator.run(design, q, raw=True)`. `precision` may raise the arithmetic of every op
    (float64 or int64; "auto" takes the cheapest exact one per op) but never lowers it below exact.
    Raises Unsupported (a NotImplementedError) for an op kind it does not know.
    """
    plan(design)  # an unknown op kind is refused before the input is looked at
    q = _check_raw(design, q)
    tout = design.graph.tensors[design.graph.outputs[0]]
    return tout.to_source(as_dtype(_execute(design, q, device, precision), np.int64))  # exact: integers < 2**53


def quantize_input(x: np.ndarray, t: FixedType) -> np.ndarray:
    """numerics.quantize_float(x, t) as int64; see _quantize_holder for the fast case."""
    return as_dtype(_quantize_holder(np.asarray(x), t), np.int64)


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
    lo, hi = clip_bounds(t, False)
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
        h = emulator.check_raw(design, x)
    else:
        raise DesignError(f"input of dtype {x.dtype}; give floats or integers")
    y = _execute(design, h, device, precision)
    if raw:
        return tout.to_source(as_dtype(y, np.int64))
    if not tout.plain:
        return tout.to_source(tout.dequantize(as_dtype(y, np.int64)))
    if y.dtype.kind == "f" and abs(tout.type.frac) < 1000:
        return tout.to_source(np.multiply(y, np.float64(2.0 ** -tout.type.frac)))  # times a power of two: exact
    return tout.to_source(dequantize(y, tout.type))
