"""Input arrays, checked in one place: what `simulate`, `--calibration` and Design.simulate accept.

An input is [samples, *shape] in the model's own layout (its source's: NCHW from ONNX and PyTorch, channels
last from hls4ml; [samples, features] for an MLP), and one sample may come without the samples axis: floats,
quantized as the model's input quantizer does, or integers, taken as the raw values of the input type. It
is returned as [samples, features] in the compiler's channels-last order (ir.Tensor.from_source). Refused,
each with one line naming the array and the layout expected: other shapes, no samples, booleans, complex
numbers, objects and strings, NaN and infinities, raw integers outside the input type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DesignError
from .ir import Tensor


def load_array(path: str | Path, what: str) -> np.ndarray:
    """A .npy file as an array, or one DesignError naming it (never a pickle: allow_pickle is off)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DesignError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise DesignError(f"{what} {path} is a folder", hint="give a .npy file") from None
    except (OSError, ValueError, EOFError) as e:
        raise DesignError(f"{what} {path} is not a readable .npy array: {' '.join(str(e).split())}",
                          hint="save it with numpy.save") from None


def check_input(x, tensor: Tensor, what: str = "input", allow_empty: bool = False) -> np.ndarray:
    """x checked (check_source) and returned as [samples, features] in the compiler's channels-last order."""
    return tensor.from_source(check_source(x, tensor, what, allow_empty))


def check_source(x, tensor: Tensor, what: str = "input", allow_empty: bool = False) -> np.ndarray:
    """x as a [samples, *shape] array (the model's own layout) of floats or in-range integers for `tensor`,
    or one DesignError."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise DesignError(f"{what} is not an array: {e}") from None
    if x.dtype.kind not in "fiu":
        raise DesignError(f"{what} has dtype {x.dtype}", hint="give floats (quantized as the model's input) or "
                                                             "integers (the input's raw values)")
    sample = tuple(tensor.source_shape)
    if x.shape == sample:
        x = x[None]
    if x.shape[1:] != sample:
        raise DesignError(f"{what} has shape {list(x.shape)}; the design expects [samples, "
                          f"{', '.join(map(str, sample))}]{_layout(tensor)}")
    if x.shape[0] == 0 and not allow_empty:
        raise DesignError(f"{what} has no samples", hint=f"give at least one sample of shape {list(sample)}")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DesignError(f"{what} has {bad} NaN or infinite value(s)", hint="give finite numbers")
    elif x.size:
        t = tensor.type
        lo, hi = int(x.min()), int(x.max())
        if lo < t.qmin or hi > t.qmax:
            raise DesignError(f"{what}: raw integers from {lo} to {hi} are outside the input type "
                              f"[{t.qmin}, {t.qmax}]", hint="give floats to quantize, or integers in range")
    return x


def _layout(tensor: Tensor) -> str:
    """The layout a multi-dimensional input is expected in, for the message."""
    rank = len(tensor.shape)
    if rank == 1:
        return ""
    names = {2: ("L", "C"), 3: ("H", "W", "C")}.get(rank)
    if names is None:
        return ""
    source = [names[i] for i in _inverse(tensor.source_order)] if tensor.source_order else list(names)
    return f" (N{''.join(source)}, the model's own layout)"


def _inverse(order: tuple[int, ...]) -> list[int]:
    back = [0] * len(order)
    for i, o in enumerate(order):
        back[o] = i
    return back
