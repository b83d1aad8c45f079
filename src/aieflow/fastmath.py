"""Exact integer arithmetic on floats, for the fast emulator and the op families' whole-batch plans.

An integer matrix product is exact in floating point while every partial sum is representable: below 2**24
in float32 and 2**53 in float64. Every partial sum (in any order of summation, with or without FMA) is at
most the worst case the compiler already bounds, so each op takes the cheapest arithmetic whose bound holds:
  float32  bound + 2**shift < 2**24   (the 2**shift term covers the rounding offsets below)
  float64  bound + 2**shift < 2**53
  int64    otherwise.
On the float paths the SRS is folded in: operands are scaled by 2**-shift (a power of two, so exact) and the
rounding offset added, so one elementwise rounding (floor, ceil, trunc or round-half-even, all exact on
floats) finishes the rounding mode; saturation and ReLU are one clip. Wrap-around saturation (mode NONE)
takes the int64 SRS. The backends (numpy here, torch on a GPU) give the rounding code the same names.
"""

from __future__ import annotations

import numpy as np

from .errors import DesignError
from .numerics import FixedType, Rounding, Saturation, srs

FLOAT32_EXACT = 1 << 24
FLOAT64_EXACT = 1 << 53
PRECISIONS = ("float32", "float64", "int64")
DTYPES = {"float32": np.float32, "float64": np.float64}


class Unsupported(NotImplementedError):
    """An op (or a form of it) the fast emulator does not run: the caller falls back to the structural one."""


def precision_for(bound: int) -> str:
    """The cheapest exact arithmetic for values whose every partial sum stays below `bound`."""
    if bound < FLOAT32_EXACT:
        return "float32"
    if bound < FLOAT64_EXACT:
        return "float64"
    return "int64"


# --- the float SRS ----------------------------------------------------------------------------------------

# Rounding of z = acc * 2**-shift on floats, exact while |acc| + 2**shift is below the float's 2**p:
#   "floor" + an offset added to acc first (folded into the bias), or a direct float function.
FLOOR_OFFSET = {
    Rounding.FLOOR: lambda s: 0,
    Rounding.CEIL: lambda s: (1 << s) - 1,
    Rounding.NEGATIVE_INF: lambda s: (1 << (s - 1)) - 1,  # ties down
    Rounding.POSITIVE_INF: lambda s: 1 << (s - 1),  # ties up
}


def offset(rounding: Rounding, shift: int) -> int:
    """What the bias gains so that floor() rounds by `rounding` (0 for the modes that use another function)."""
    if shift <= 0 or rounding not in FLOOR_OFFSET:
        return 0
    return FLOOR_OFFSET[rounding](shift)


def round_inplace(xp, z, rounding: Rounding, shift: int):
    """Round z = (acc + offset) * 2**-shift, an exact float, to the integer the mode gives; may reuse z."""
    if shift <= 0:
        return z  # already an integer: the left shift was exact
    if rounding in FLOOR_OFFSET:
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


def clip_bounds(out: FixedType, relu: bool) -> tuple[int, int]:
    lo = out.qmin + 1 if (out.saturation is Saturation.SYMMETRIC and out.signed) else out.qmin
    return (max(lo, 0) if relu else lo), out.qmax


def float_ok(out: FixedType) -> bool:
    """The float epilogue covers the saturating modes; wrap-around takes the int64 SRS."""
    return out.saturation is not Saturation.NONE


def int_epilogue(acc: np.ndarray, shift: int, out: FixedType, relu: bool) -> np.ndarray:
    y = srs(acc, shift, out)
    return np.maximum(y, 0, out=y) if relu else y


# --- the numpy backend -------------------------------------------------------------------------------------


class Numpy:
    """numpy under the names the rounding code uses."""

    floor = staticmethod(np.floor)
    rint = staticmethod(np.rint)
    trunc = staticmethod(np.trunc)
    ceil = staticmethod(np.ceil)
    abs = staticmethod(np.abs)
    where = staticmethod(np.where)
    copysign = staticmethod(np.copysign)


class Prepared:
    """Per design and backend: each op's operands in the dtype its precision needs (built once, cached)."""

    def __init__(self):
        self.cache: dict = {}

    def get(self, key, make):
        value = self.cache.get(key)
        if value is None:
            value = self.cache[key] = make()
        return value


def blas_layout(w: np.ndarray) -> np.ndarray:
    """Weights stored column-major: OpenBLAS multiplies [B, K] @ [K, N] some 8% faster with B transposed
    in memory (measured on the 7 x 512 benchmark); the values are the same."""
    return np.asfortranarray(w)


def as_dtype(a: np.ndarray, dtype) -> np.ndarray:
    """Exact conversion between float and int64 holders of the same integers."""
    return a if a.dtype == dtype else a.astype(dtype)


# --- the torch backend (optional: imported by the caller only when a GPU runs) ----------------------------


class Torch:
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


NUMPY = Numpy()
