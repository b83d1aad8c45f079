"""Fixed-point types, rounding, saturation and SRS: the only place aieflow defines arithmetic.

A quantized value is an integer q of a storage type meaning q * 2**-frac. Everything here works on int64
numpy arrays with exact integer operations; nothing goes through float division.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import NumericsError


class Rounding(enum.Enum):
    """AIE-ML rounding modes; the value is the intrinsic code of UG1583."""

    FLOOR = 0
    CEIL = 1
    SYMMETRIC_FLOOR = 2
    SYMMETRIC_CEIL = 3
    NEGATIVE_INF = 8
    POSITIVE_INF = 9
    SYMMETRIC_ZERO = 10
    SYMMETRIC_INF = 11
    CONV_EVEN = 12
    CONV_ODD = 13

    @property
    def api_name(self) -> str:
        """The AIE API spelling, `aie::rounding_mode::<name>`."""
        return self.name.lower()


class Saturation(enum.Enum):
    NONE = "none"  # two's-complement wrap
    SATURATE = "saturate"
    SYMMETRIC = "symmetric"

    @property
    def api_name(self) -> str:
        return self.value


STORAGE_BITS = (8, 16, 32, 64)


@dataclass(frozen=True)
class FixedType:
    """An integer of `bits` bits (signed or not) meaning q * 2**-frac.

    `rounding` and `saturation` say how a wider value is brought into this type when it is produced.
    """

    bits: int
    signed: bool
    frac: int
    rounding: Rounding = Rounding.CONV_EVEN
    saturation: Saturation = Saturation.SATURATE

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 64:
            raise NumericsError(f"a fixed-point type needs 1 to 64 bits, not {self.bits}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def storage_bits(self) -> int:
        return next(b for b in STORAGE_BITS if b >= self.bits)

    @property
    def storage(self) -> str:
        """numpy / C name of the storage type: int8, uint8, int16, ..."""
        return f"{'' if self.signed else 'u'}int{self.storage_bits}"

    @property
    def magnitude(self) -> int:
        """Largest |q| this type can hold; used for worst-case accumulator bounds."""
        return max(-self.qmin, self.qmax)

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "signed": self.signed,
            "frac": self.frac,
            "rounding": self.rounding.name.lower(),
            "saturation": self.saturation.value,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FixedType":
        return cls(
            bits=int(d["bits"]),
            signed=bool(d["signed"]),
            frac=int(d["frac"]),
            rounding=Rounding[d["rounding"].upper()],
            saturation=Saturation(d["saturation"]),
        )

    def describe(self) -> str:
        return f"{self.storage}(bits={self.bits}, frac={self.frac}, {self.rounding.name.lower()}, {self.saturation.value})"


def _as_int64(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise NumericsError(f"integer arithmetic needs an integer array, got {a.dtype}")
    return a.astype(np.int64)


def round_shift(acc, shift: int, rounding: Rounding) -> np.ndarray:
    """acc / 2**shift rounded to an integer by `rounding`, exactly.

    A negative shift is an exact left shift (numpy wraps on int64 overflow; callers bound the value first).
    """
    a = _as_int64(acc)
    if shift <= 0:
        return a << np.int64(-shift)
    if shift >= 63:
        raise NumericsError(f"a right shift of {shift} bits is beyond the 64-bit accumulator")
    s = np.int64(shift)
    floor = a >> s  # arithmetic shift: floor division by 2**shift
    rem = a - (floor << s)  # in [0, 2**shift)
    up = floor + 1
    exact = rem == 0
    negative = a < 0
    if rounding is Rounding.FLOOR:
        return floor
    if rounding is Rounding.CEIL:
        return np.where(exact, floor, up)
    if rounding is Rounding.SYMMETRIC_FLOOR:
        return np.where(exact | ~negative, floor, up)
    if rounding is Rounding.SYMMETRIC_CEIL:
        return np.where(exact | negative, floor, up)
    half = np.int64(1) << np.int64(shift - 1)
    nearest = np.where(rem > half, up, floor)
    tie = rem == half
    if rounding is Rounding.NEGATIVE_INF:
        tie_value = floor
    elif rounding is Rounding.POSITIVE_INF:
        tie_value = up
    elif rounding is Rounding.SYMMETRIC_ZERO:
        tie_value = np.where(negative, up, floor)
    elif rounding is Rounding.SYMMETRIC_INF:
        tie_value = np.where(negative, floor, up)
    elif rounding is Rounding.CONV_EVEN:
        tie_value = np.where(floor % 2 == 0, floor, up)
    elif rounding is Rounding.CONV_ODD:
        tie_value = np.where(floor % 2 != 0, floor, up)
    else:  # pragma: no cover - the enum is closed
        raise NumericsError(f"unknown rounding mode {rounding}")
    return np.where(tie, tie_value, nearest)


def saturate(x, bits: int, signed: bool, mode: Saturation) -> np.ndarray:
    """Bring integers into a `bits`-bit type: clamp, clamp symmetrically, or wrap (keep the low bits)."""
    a = _as_int64(x)
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if mode is Saturation.SATURATE:
        return np.clip(a, lo, hi)
    if mode is Saturation.SYMMETRIC:
        return np.clip(a, lo + 1 if signed else lo, hi)
    if bits >= 64:
        return a
    mask = np.int64((1 << bits) - 1)
    low = a & mask
    if signed:
        low = np.where(low > hi, low - (np.int64(1) << np.int64(bits)), low)
    return low


def srs(acc, shift: int, out: FixedType) -> np.ndarray:
    """Shift-round-saturate an accumulator into `out` with its rounding and saturation modes."""
    a = _as_int64(acc)
    if shift < 0 and out.saturation is not Saturation.NONE:
        # Clamp before the exact left shift so int64 cannot wrap: |a| <= 2**(62 + shift) still fits after the
        # shift, and a bound at or above 2**(out.bits + shift) changes nothing, since such values saturate anyway.
        # A shift past 62 bits saturates every nonzero value of an output up to 62 bits, as 62 bits do.
        shift = max(shift, -62)
        bound = np.int64(1) << np.int64(min(62 + shift, out.bits))
        a = np.clip(a, -bound, bound)
    return saturate(round_shift(a, shift, out.rounding), out.bits, out.signed, out.saturation)


def quantize_float(x, t: FixedType) -> np.ndarray:
    """Quantize real values onto `t` (x * 2**frac, rounded by t's mode, saturated by t's mode), exactly.

    float64 holds every float32 exactly and scaling by a power of two is exact, so the split into an
    integer part and a remainder below is exact for the magnitudes quantized models use.
    """
    v = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise NumericsError("cannot quantize NaN or infinite values")
    scaled = np.ldexp(v, t.frac)
    # Represent scaled as an integer over 2**k, k fixed, then reuse the integer rounding.
    k = 30
    num = np.ldexp(scaled, k)
    if np.any(num != np.round(num)) or np.any(np.abs(num) >= 2.0**62):
        # Fall back to a coarser but still exact path for values with more precision than 2**-30.
        return _quantize_exact_slow(v, t)
    q = round_shift(num.astype(np.int64), k, t.rounding)
    return saturate(q, t.bits, t.signed, t.saturation)


def _quantize_exact_slow(v: np.ndarray, t: FixedType) -> np.ndarray:
    from fractions import Fraction

    flat = [round_fraction(Fraction(float(e)) * Fraction(2) ** t.frac, t.rounding) for e in v.ravel()]
    if t.saturation is Saturation.NONE:
        # Wrap keeps only the low bits, so reduce modulo 2**64 (exact) rather than clamp, which would lose them.
        flat = [(e + 2**63) % 2**64 - 2**63 for e in flat]
    else:
        flat = [min(max(e, -(2**62)), 2**62) for e in flat]
    q = np.array(flat, dtype=np.int64).reshape(v.shape)
    return saturate(q, t.bits, t.signed, t.saturation)


def round_fraction(x, rounding: Rounding) -> int:
    """Reference rounding of a Python Fraction: slow, obviously right, for tests and the slow path."""
    import math

    fl = math.floor(x)
    ce = math.ceil(x)
    if fl == ce:
        return fl
    if rounding is Rounding.FLOOR:
        return fl
    if rounding is Rounding.CEIL:
        return ce
    if rounding is Rounding.SYMMETRIC_FLOOR:
        return fl if x > 0 else ce
    if rounding is Rounding.SYMMETRIC_CEIL:
        return ce if x > 0 else fl
    frac_part = x - fl
    if frac_part * 2 < 1:
        return fl
    if frac_part * 2 > 1:
        return ce
    return {
        Rounding.NEGATIVE_INF: fl,
        Rounding.POSITIVE_INF: ce,
        Rounding.SYMMETRIC_ZERO: ce if x < 0 else fl,
        Rounding.SYMMETRIC_INF: fl if x < 0 else ce,
        Rounding.CONV_EVEN: fl if fl % 2 == 0 else ce,
        Rounding.CONV_ODD: fl if fl % 2 != 0 else ce,
    }[rounding]


def dequantize(q, t: FixedType) -> np.ndarray:
    """Integers of type t as real values (float64; exact for every type up to 53 significant bits)."""
    return np.ldexp(np.asarray(q, dtype=np.float64), -t.frac)


# ap_fixed (Vitis HLS, hls4ml) quantization and overflow modes and their AIE-ML equivalents.
AP_ROUNDING = {
    "AP_TRN": Rounding.FLOOR,
    "AP_TRN_ZERO": Rounding.SYMMETRIC_FLOOR,
    "AP_RND": Rounding.POSITIVE_INF,
    "AP_RND_ZERO": Rounding.SYMMETRIC_ZERO,
    "AP_RND_MIN_INF": Rounding.NEGATIVE_INF,
    "AP_RND_INF": Rounding.SYMMETRIC_INF,
    "AP_RND_CONV": Rounding.CONV_EVEN,
}
AP_SATURATION = {
    "AP_SAT": Saturation.SATURATE,
    "AP_SAT_SYM": Saturation.SYMMETRIC,
    "AP_WRAP": Saturation.NONE,
}
AP_NO_NATIVE_MODE = ("AP_SAT_ZERO", "AP_WRAP_SM")

_AP_PATTERN = re.compile(r"^\s*(ap_fixed|ap_ufixed|ap_int|ap_uint)\s*<([^>]*)>\s*$")


def parse_ap_type(text: str) -> FixedType:
    """`ap_fixed<W,I[,Q[,O[,N]]]>`, `ap_ufixed<...>`, `ap_int<W>`, `ap_uint<W>` as a FixedType.

    The hls4ml short forms without the `AP_` prefix (`fixed<8,3,RND_CONV,SAT>`) are accepted too.
    """
    t = text.strip()
    if t.startswith(("fixed<", "ufixed<")):
        t = "ap_" + t
    m = _AP_PATTERN.match(t)
    if not m:
        raise NumericsError(f"'{text}' is not an ap_fixed, ap_ufixed, ap_int or ap_uint type",
                            hint="write e.g. ap_fixed<8,3,AP_RND_CONV,AP_SAT>")
    kind, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
    signed = kind in ("ap_fixed", "ap_int")
    try:
        width = int(args[0])
        integer = width if kind in ("ap_int", "ap_uint") else int(args[1])
    except (ValueError, IndexError):
        raise NumericsError(f"'{text}' needs an integer width and integer bits") from None
    modes = args[1:] if kind in ("ap_int", "ap_uint") else args[2:]
    q_mode = _ap_mode(modes[0]) if len(modes) > 0 else "AP_TRN"
    o_mode = _ap_mode(modes[1]) if len(modes) > 1 else "AP_WRAP"
    if len(modes) > 2 and modes[2] not in ("0",):
        raise NumericsError(f"'{text}': saturation bits N={modes[2]} have no AIE-ML equivalent", hint="use N=0")
    if o_mode in AP_NO_NATIVE_MODE:
        raise NumericsError(f"'{text}': overflow mode {o_mode} has no AIE-ML saturation mode",
                            hint="use AP_SAT, AP_SAT_SYM or AP_WRAP")
    if q_mode not in AP_ROUNDING:
        raise NumericsError(f"'{text}': unknown quantization mode {q_mode}",
                            hint=f"use one of {', '.join(AP_ROUNDING)}")
    if o_mode not in AP_SATURATION:
        raise NumericsError(f"'{text}': unknown overflow mode {o_mode}",
                            hint=f"use one of {', '.join(AP_SATURATION)}")
    return FixedType(width, signed, width - integer, AP_ROUNDING[q_mode], AP_SATURATION[o_mode])


def _ap_mode(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("AP_") else "AP_" + name


def accumulator_bound(x: FixedType, w_abs_colsum: np.ndarray, bias_abs: np.ndarray) -> int:
    """Worst-case |accumulator| of a dot product: |x|max * sum_k |w[k, j]| + |b[j]|, over all j."""
    worst = np.asarray(w_abs_colsum, dtype=object) * x.magnitude + np.asarray(bias_abs, dtype=object)
    return int(max(worst.tolist(), default=0))


# --- requantization: the end of every layer -------------------------------------------------------------

MULTIPLIER_BITS = 31  # a positive int32: the kernel multiplies int32 sums by it into acc64 (AIE-ML 32b x 32b)


def requantize(acc, multiplier: int, shift: int, zero_point: int, out: FixedType, relu: bool = False,
               stats: dict | None = None) -> np.ndarray:
    """The output of a layer from its exact sums: round((acc * multiplier) / 2**shift) by out's rounding mode,
    plus the output zero point, brought into out's `bits` by its saturation mode (which may be fewer bits
    than the storage: a 4-bit type saturates at [-8, 7] inside int8). ReLU clamps at the zero point, the
    quantized real zero.

    With multiplier 1 and zero point 0 this is srs(); the zero point is added after the rounding, as ONNX
    QuantizeLinear does (round(v / scale) + zero_point), which differs from rounding v / scale + zero_point
    for the ties-to-even and symmetric modes. Callers bound |acc * multiplier| below 2**62. `stats`, when
    given, gains the ties and saturations this call met (count_rounding), for tests that must show they
    exercised both.
    """
    a = _as_int64(acc)
    if multiplier != 1:
        a = a * np.int64(multiplier)
    if stats is not None:
        count_rounding(a, shift, zero_point, out, stats)
    if zero_point == 0:
        y = srs(a, shift, out)
    else:
        if shift < 0 and out.saturation is not Saturation.NONE:
            shift = max(shift, -62)
            # As in srs(), one bit more: a value this far out still saturates after the zero point is added.
            bound = np.int64(1) << np.int64(min(62 + shift, out.bits + 1))
            a = np.clip(a, -bound, bound)
        y = saturate(round_shift(a, shift, out.rounding) + np.int64(zero_point), out.bits, out.signed, out.saturation)
    return np.maximum(y, np.int64(zero_point)) if relu else y


def count_rounding(a: np.ndarray, shift: int, zero_point: int, out: FixedType, stats: dict) -> None:
    """Add to stats["ties"] the values of a (already times the multiplier) exactly half-way between two
    results of a right shift, and to stats["saturations"] those whose rounded value lands outside out's range."""
    if shift > 0:
        half = np.int64(1) << np.int64(shift - 1)
        ties = int(np.sum((a & ((np.int64(1) << np.int64(shift)) - 1)) == half))
        stats["ties"] = stats.get("ties", 0) + ties
    r = round_shift(a, shift, out.rounding) + np.int64(zero_point)
    outside = int(np.sum((r < out.qmin) | (r > out.qmax)))
    stats["saturations"] = stats.get("saturations", 0) + outside


def choose_multiplier(real: float, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """(multiplier, shift) with multiplier / 2**shift nearest to `real` and the multiplier using `bits` bits
    (in [2**(bits-1), 2**bits)), or fewer when real * 2**shift is exactly an integer (powers of two give 1).

    The integer pipeline then computes round(acc * multiplier / 2**shift): exact for the real ratio when it
    is a power of two times an odd integer below 2**bits, an approximation with relative error below
    2**-bits otherwise (the float32 scales of ONNX and Brevitas models have 24-bit significands, so their
    ratios are usually close to exact at 31 bits). Whether that approximation changes any output is measured, never assumed (aieflow.exactness).
    """
    if not (real > 0 and math.isfinite(real)):
        raise NumericsError(f"requantization scale {real!r} must be positive and finite")
    from fractions import Fraction

    exact = Fraction(real)  # the float's exact value
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    shift = bits - exp
    m = exact * Fraction(2) ** shift
    multiplier = round_fraction(m, Rounding.CONV_EVEN)
    if multiplier >= 1 << bits:  # rounding carried into a new bit
        multiplier //= 2
        shift -= 1
    # Drop trailing zero bits so exact ratios (powers of two above all) get the smallest multiplier.
    while multiplier % 2 == 0 and multiplier > 1:
        multiplier //= 2
        shift -= 1
    return int(multiplier), int(shift)
