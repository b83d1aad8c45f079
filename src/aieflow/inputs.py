"""Input arrays, checked in one place: what `simulate`, `--calibration` and Design.simulate accept.

An input is [samples, features] (one sample may come as a vector): floats, quantized as the model's input
quantizer does, or integers, taken as the raw values of the input type. Refused, each with one line naming
the array: other ranks or feature counts, no samples, booleans, complex numbers, objects and strings, NaN
and infinities, raw integers outside the input type.
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
    """x as a [samples, features] array of floats or in-range integers for `tensor`, or one DesignError."""
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise DesignError(f"{what} is not an array: {e}") from None
    if x.dtype.kind not in "fiu":
        raise DesignError(f"{what} has dtype {x.dtype}", hint="give floats (quantized as the model's input) or "
                                                             "integers (the input's raw values)")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != tensor.features:
        raise DesignError(f"{what} has shape {list(x.shape)}; the design expects [samples, {tensor.features}]")
    if x.shape[0] == 0 and not allow_empty:
        raise DesignError(f"{what} has no samples", hint=f"give at least one row of {tensor.features} values")
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
