"""aieflow.numerics against exact rational arithmetic (fractions.Fraction) and hand-written tables.

The references here are written independently of numerics.py (rounding by distance and parity, wrap by
Python's modular arithmetic), so a shared mistake would have to be made twice to go unnoticed.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aieflow.errors import NumericsError
from aieflow.numerics import (
    FixedType,
    Rounding,
    Saturation,
    accumulator_bound,
    dequantize,
    parse_ap_type,
    quantize_float,
    round_fraction,
    round_shift,
    saturate,
    srs,
)

FAST = settings(max_examples=300, derandomize=True, deadline=None)
INT64 = st.integers(-(2**63), 2**63 - 1)
MODES = st.sampled_from(list(Rounding))
SATURATIONS = st.sampled_from(list(Saturation))


# --- independent references --------------------------------------------------------------------------------


def ref_round(x: Fraction, mode: Rounding) -> int:
    """Round a rational by mode: directed modes by sign, nearest modes by distance, ties by the rule."""
    lo = x.numerator // x.denominator
    if lo == x:
        return lo
    hi = lo + 1
    directed = {
        Rounding.FLOOR: lo,
        Rounding.CEIL: hi,
        Rounding.SYMMETRIC_FLOOR: min(lo, hi, key=abs),  # toward zero
        Rounding.SYMMETRIC_CEIL: max(lo, hi, key=abs),  # away from zero
    }
    if mode in directed:
        return directed[mode]
    if x - lo != hi - x:
        return lo if x - lo < hi - x else hi
    ties = {
        Rounding.NEGATIVE_INF: lo,
        Rounding.POSITIVE_INF: hi,
        Rounding.SYMMETRIC_ZERO: min(lo, hi, key=abs),
        Rounding.SYMMETRIC_INF: max(lo, hi, key=abs),
        Rounding.CONV_EVEN: lo if lo % 2 == 0 else hi,
        Rounding.CONV_ODD: hi if lo % 2 == 0 else lo,
    }
    return ties[mode]


def ref_saturate(v: int, bits: int, signed: bool, mode: Saturation) -> int:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if mode is Saturation.SATURATE:
        return min(max(v, lo), hi)
    if mode is Saturation.SYMMETRIC:
        return min(max(v, -hi if signed else lo), hi)
    wrapped = v % 2**bits  # Python's % is the mathematical modulus, also for negative v
    return wrapped - 2**bits if signed and wrapped > hi else wrapped


def ref_srs(acc: int, shift: int, bits: int, signed: bool, mode: Rounding, sat: Saturation) -> int:
    return ref_saturate(ref_round(Fraction(acc) / Fraction(2) ** shift, mode), bits, signed, sat)


# --- hand-written rounding table ---------------------------------------------------------------------------

ORDER = [
    Rounding.FLOOR,
    Rounding.CEIL,
    Rounding.SYMMETRIC_FLOOR,
    Rounding.SYMMETRIC_CEIL,
    Rounding.NEGATIVE_INF,
    Rounding.POSITIVE_INF,
    Rounding.SYMMETRIC_ZERO,
    Rounding.SYMMETRIC_INF,
    Rounding.CONV_EVEN,
    Rounding.CONV_ODD,
]
# value: results in ORDER (floor, ceil, sym_floor, sym_ceil, neg_inf, pos_inf, sym_zero, sym_inf, even, odd)
TABLE = {
    "2.5": (2, 3, 2, 3, 2, 3, 2, 3, 2, 3),
    "-2.5": (-3, -2, -2, -3, -3, -2, -2, -3, -2, -3),
    "3.5": (3, 4, 3, 4, 3, 4, 3, 4, 4, 3),
    "-3.5": (-4, -3, -3, -4, -4, -3, -3, -4, -4, -3),
    "1.5": (1, 2, 1, 2, 1, 2, 1, 2, 2, 1),
    "-1.5": (-2, -1, -1, -2, -2, -1, -1, -2, -2, -1),
    "0.5": (0, 1, 0, 1, 0, 1, 0, 1, 0, 1),
    "-0.5": (-1, 0, 0, -1, -1, 0, 0, -1, 0, -1),
    "1.25": (1, 2, 1, 2, 1, 1, 1, 1, 1, 1),
    "-1.25": (-2, -1, -1, -2, -1, -1, -1, -1, -1, -1),
    "1.75": (1, 2, 1, 2, 2, 2, 2, 2, 2, 2),
    "-1.75": (-2, -1, -1, -2, -2, -2, -2, -2, -2, -2),
    "-0.25": (-1, 0, 0, -1, 0, 0, 0, 0, 0, 0),
    "0.75": (0, 1, 0, 1, 1, 1, 1, 1, 1, 1),
    "2": (2,) * 10,
    "-3": (-3,) * 10,
    "0": (0,) * 10,
}
TABLE_CASES = [(v, mode, expected[i]) for v, expected in TABLE.items() for i, mode in enumerate(ORDER)]


@pytest.mark.parametrize("value, mode, expected", TABLE_CASES)
def test_round_fraction_table(value, mode, expected):
    assert round_fraction(Fraction(value), mode) == expected
    assert ref_round(Fraction(value), mode) == expected  # the reference is checked by the table too


@pytest.mark.parametrize("mode", ORDER)
def test_round_shift_table(mode):
    # Every table value is a multiple of 1/4: as an accumulator with shift 2, all rows at once.
    acc = np.array([int(Fraction(v) * 4) for v in TABLE])
    expected = [row[ORDER.index(mode)] for row in TABLE.values()]
    assert round_shift(acc, 2, mode).tolist() == expected
    # The same values with more bits below the point round the same way.
    assert round_shift(acc << 20, 22, mode).tolist() == expected


def test_every_mode_is_in_the_table():
    assert sorted(ORDER, key=lambda m: m.value) == list(Rounding)


def test_intrinsic_codes_and_api_names():
    codes = {m.api_name: m.value for m in Rounding}
    assert codes == {
        "floor": 0, "ceil": 1, "symmetric_floor": 2, "symmetric_ceil": 3, "negative_inf": 8,
        "positive_inf": 9, "symmetric_zero": 10, "symmetric_inf": 11, "conv_even": 12, "conv_odd": 13,
    }


# --- round_shift -------------------------------------------------------------------------------------------


@FAST
@given(acc=INT64, shift=st.integers(0, 40), mode=MODES)
@example(acc=-(2**63), shift=40, mode=Rounding.CEIL)
@example(acc=2**63 - 1, shift=1, mode=Rounding.SYMMETRIC_INF)
def test_round_shift_matches_fractions(acc, shift, mode):
    assert round_shift(np.int64(acc), shift, mode) == ref_round(Fraction(acc, 2**shift), mode)


@FAST
@given(acc=INT64, shift=st.integers(41, 62), mode=MODES)
def test_round_shift_large_shifts(acc, shift, mode):
    assert round_shift(np.int64(acc), shift, mode) == ref_round(Fraction(acc, 2**shift), mode)


@FAST
@given(data=st.data(), shift=st.integers(1, 40), mode=MODES, negative=st.booleans())
def test_round_shift_forced_ties(data, shift, mode, negative):
    # acc = (2k + 1) * 2**(shift - 1) sits exactly halfway between two integers after the shift.
    k = data.draw(st.integers(0, 2 ** (62 - shift) - 1))
    acc = (2 * k + 1) * 2 ** (shift - 1) * (-1 if negative else 1)
    assert round_shift(np.int64(acc), shift, mode) == ref_round(Fraction(acc, 2**shift), mode)


@FAST
@given(accs=st.lists(INT64, min_size=1, max_size=50), shift=st.integers(0, 40), mode=MODES)
def test_round_shift_vectorised(accs, shift, mode):
    got = round_shift(np.array(accs, dtype=np.int64), shift, mode)
    assert got.dtype == np.int64
    assert got.tolist() == [ref_round(Fraction(a, 2**shift), mode) for a in accs]


@FAST
@given(data=st.data(), shift=st.integers(-40, -1), mode=MODES)
def test_round_shift_negative_shift_is_exact(data, shift, mode):
    bound = 2 ** (62 + shift)
    acc = data.draw(st.integers(-bound, bound))
    assert round_shift(np.int64(acc), shift, mode) == acc * 2**-shift


def test_round_shift_refuses_floats_and_huge_shifts():
    with pytest.raises(NumericsError):
        round_shift(np.array([1.5]), 1, Rounding.FLOOR)
    with pytest.raises(NumericsError):
        round_shift(np.array([1]), 63, Rounding.FLOOR)


# --- saturate ----------------------------------------------------------------------------------------------


@FAST
@given(v=INT64, bits=st.integers(1, 32), signed=st.booleans(), mode=SATURATIONS)
@example(v=-(2**63), bits=32, signed=True, mode=Saturation.NONE)
@example(v=128, bits=8, signed=True, mode=Saturation.NONE)
@example(v=-128, bits=8, signed=True, mode=Saturation.SYMMETRIC)
def test_saturate_matches_reference(v, bits, signed, mode):
    assert saturate(np.int64(v), bits, signed, mode) == ref_saturate(v, bits, signed, mode)


@FAST
@given(vs=st.lists(INT64, min_size=1, max_size=40), bits=st.integers(1, 32), signed=st.booleans())
def test_wrap_is_modular_arithmetic(vs, bits, signed):
    got = saturate(np.array(vs, dtype=np.int64), bits, signed, Saturation.NONE)
    for v, g in zip(vs, got.tolist()):
        assert (g - v) % 2**bits == 0  # same low bits
        assert (-(2 ** (bits - 1)) if signed else 0) <= g < (2 ** (bits - 1) if signed else 2**bits)


@pytest.mark.parametrize(
    "bits, signed, mode, expected",
    [
        (8, True, Saturation.SATURATE, [-128, -128, -1, 0, 127, 127]),
        (8, True, Saturation.SYMMETRIC, [-127, -127, -1, 0, 127, 127]),
        (8, True, Saturation.NONE, [126, -128, -1, 0, 127, -128]),
        (8, False, Saturation.SATURATE, [0, 0, 0, 0, 127, 128]),
        (8, False, Saturation.NONE, [126, 128, 255, 0, 127, 128]),
    ],
)
def test_saturate_table(bits, signed, mode, expected):
    assert saturate(np.array([-130, -128, -1, 0, 127, 128]), bits, signed, mode).tolist() == expected


# --- srs ---------------------------------------------------------------------------------------------------


@FAST
@given(
    acc=INT64,
    shift=st.integers(-70, 40),
    bits=st.integers(1, 32),
    signed=st.booleans(),
    mode=MODES,
    sat=SATURATIONS,
)
@example(acc=2**23, shift=-40, bits=32, signed=True, mode=Rounding.CONV_EVEN, sat=Saturation.SATURATE)
@example(acc=-1, shift=-70, bits=8, signed=True, mode=Rounding.FLOOR, sat=Saturation.SATURATE)
@example(acc=3, shift=-64, bits=8, signed=False, mode=Rounding.FLOOR, sat=Saturation.NONE)
def test_srs_matches_fractions(acc, shift, bits, signed, mode, sat):
    out = FixedType(bits, signed, 0, mode, sat)
    assert srs(np.int64(acc), shift, out) == ref_srs(acc, shift, bits, signed, mode, sat)


@FAST
@given(
    accs=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=40),
    shift=st.integers(-30, 30),
    bits=st.sampled_from([8, 16, 32]),
    signed=st.booleans(),
    mode=MODES,
    sat=SATURATIONS,
)
def test_srs_vectorised(accs, shift, bits, signed, mode, sat):
    out = FixedType(bits, signed, 0, mode, sat)
    got = srs(np.array(accs, dtype=np.int64), shift, out).tolist()
    assert got == [ref_srs(a, shift, bits, signed, mode, sat) for a in accs]


def test_srs_negative_shift_saturates_instead_of_wrapping():
    int8 = FixedType(8, True, 0)
    assert srs(np.array([1, -1, 0, 3]), -10, int8).tolist() == [127, -128, 0, 127]
    int32 = FixedType(32, True, 0)
    # 2**23 << 40 overflows int64; the result must still be the saturated maximum, with its sign.
    assert srs(np.array([2**23, -(2**23), 2**62]), -40, int32).tolist() == [2**31 - 1, -(2**31), 2**31 - 1]


# --- quantize_float ----------------------------------------------------------------------------------------

FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def ref_quantize(x: float, t: FixedType) -> int:
    scaled = Fraction(x) * Fraction(2) ** t.frac
    return ref_saturate(ref_round(scaled, t.rounding), t.bits, t.signed, t.saturation)


def fixed_types(max_bits: int = 32):
    return st.builds(
        FixedType,
        bits=st.integers(1, max_bits),
        signed=st.booleans(),
        frac=st.integers(-20, 40),
        rounding=MODES,
        saturation=SATURATIONS,
    )


@FAST
@given(x=FLOAT32, t=fixed_types())
@example(x=3.4028234663852886e38, t=FixedType(16, True, 0, Rounding.CONV_EVEN, Saturation.NONE))
@example(x=-(2.0**62 + 2.0**40), t=FixedType(32, True, 0, Rounding.FLOOR, Saturation.NONE))
@example(x=1e-45, t=FixedType(8, True, 40, Rounding.CEIL, Saturation.SATURATE))
def test_quantize_float_matches_fractions(x, t):
    assert quantize_float(np.float32(x), t) == ref_quantize(float(np.float32(x)), t)


@FAST
@given(data=st.data(), t=fixed_types(16), negative=st.booleans())
def test_quantize_float_ties(data, t, negative):
    # (2k + 1) / 2 steps: exactly halfway, and exact in float32 while 2k + 1 < 2**24.
    k = data.draw(st.integers(0, 2**23 - 1))
    x = np.float32((2 * k + 1) * 2.0 ** (-t.frac - 1) * (-1 if negative else 1))
    assert float(x) * 2.0 ** (t.frac + 1) % 2 == 1  # really a tie
    assert quantize_float(x, t) == ref_quantize(float(x), t)


@FAST
@given(xs=st.lists(FLOAT32, min_size=1, max_size=30), t=fixed_types())
def test_quantize_float_arrays(xs, t):
    # Mixed arrays can take the slow exact path for all elements; both paths must agree with Fractions.
    x = np.array(xs, dtype=np.float32)
    got = quantize_float(x, t)
    assert got.shape == x.shape and got.dtype == np.int64
    assert got.tolist() == [ref_quantize(float(v), t) for v in x]


def test_quantize_float_onnx_convention():
    # ONNX QuantizeLinear: round half to even, saturate (scale 2**-2).
    t = FixedType(8, True, 2)
    x = np.array([0.125, 0.375, -0.125, -0.375, 100.0, -100.0, 31.75], dtype=np.float32)
    assert quantize_float(x, t).tolist() == [0, 2, 0, -2, 127, -128, 127]


def test_quantize_float_refuses_nan_and_inf():
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(NumericsError):
            quantize_float(np.array([1.0, bad]), FixedType(8, True, 0))


@FAST
@given(q=st.integers(-(2**31), 2**31 - 1), frac=st.integers(-40, 60))
def test_dequantize_is_exact(q, frac):
    t = FixedType(32, True, frac)
    assert Fraction(float(dequantize(np.int64(q), t))) == Fraction(q) / Fraction(2) ** frac


# --- FixedType ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bits, signed, qmin, qmax, storage",
    [(8, True, -128, 127, "int8"), (8, False, 0, 255, "uint8"), (3, True, -4, 3, "int8"),
     (16, True, -32768, 32767, "int16"), (12, False, 0, 4095, "uint16"), (32, True, -(2**31), 2**31 - 1, "int32")],
)
def test_fixed_type_ranges(bits, signed, qmin, qmax, storage):
    t = FixedType(bits, signed, 0)
    assert (t.qmin, t.qmax, t.storage, t.magnitude) == (qmin, qmax, storage, max(-qmin, qmax))


@FAST
@given(t=fixed_types())
def test_fixed_type_dict_round_trip(t):
    assert FixedType.from_dict(t.to_dict()) == t


def test_fixed_type_refuses_bad_widths():
    for bits in (0, 65):
        with pytest.raises(NumericsError):
            FixedType(bits, True, 0)


def test_accumulator_bound():
    x = FixedType(8, True, 0)  # magnitude 128
    assert accumulator_bound(x, np.array([10, 3]), np.array([5, 700])) == max(1285, 1084)
    assert accumulator_bound(x, np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == 0


# --- ap_fixed ----------------------------------------------------------------------------------------------

AP_QUANTIZATION = {
    "AP_TRN": Rounding.FLOOR,
    "AP_TRN_ZERO": Rounding.SYMMETRIC_FLOOR,
    "AP_RND": Rounding.POSITIVE_INF,
    "AP_RND_ZERO": Rounding.SYMMETRIC_ZERO,
    "AP_RND_MIN_INF": Rounding.NEGATIVE_INF,
    "AP_RND_INF": Rounding.SYMMETRIC_INF,
    "AP_RND_CONV": Rounding.CONV_EVEN,
}
AP_OVERFLOW = {"AP_SAT": Saturation.SATURATE, "AP_SAT_SYM": Saturation.SYMMETRIC, "AP_WRAP": Saturation.NONE}


@pytest.mark.parametrize("q_mode, rounding", AP_QUANTIZATION.items())
@pytest.mark.parametrize("o_mode, saturation", AP_OVERFLOW.items())
def test_parse_ap_fixed_modes(q_mode, rounding, o_mode, saturation):
    expected = FixedType(8, True, 5, rounding, saturation)
    assert parse_ap_type(f"ap_fixed<8,3,{q_mode},{o_mode}>") == expected
    assert parse_ap_type(f"ap_fixed<8, 3, {q_mode}, {o_mode}, 0>") == expected
    # hls4ml's short form drops the AP_ prefix.
    assert parse_ap_type(f"fixed<8,3,{q_mode[3:]},{o_mode[3:]}>") == expected
    assert parse_ap_type(f"ufixed<8,3,{q_mode[3:]},{o_mode[3:]}>") == FixedType(8, False, 5, rounding, saturation)


# The meaning of each ap_fixed quantization mode (Vitis HLS), on ties and non-ties of both signs.
AP_MEANING = {
    "AP_TRN": {2.5: 2, -2.5: -3, 1.25: 1, -1.25: -2},  # toward -inf
    "AP_TRN_ZERO": {2.5: 2, -2.5: -2, 1.75: 1, -1.75: -1},  # toward zero
    "AP_RND": {2.5: 3, -2.5: -2, 1.25: 1, -1.75: -2},  # nearest, ties toward +inf
    "AP_RND_ZERO": {2.5: 2, -2.5: -2, 1.75: 2, -1.25: -1},  # nearest, ties toward zero
    "AP_RND_MIN_INF": {2.5: 2, -2.5: -3, 1.75: 2, -1.25: -1},  # nearest, ties toward -inf
    "AP_RND_INF": {2.5: 3, -2.5: -3, 1.25: 1, -1.75: -2},  # nearest, ties away from zero
    "AP_RND_CONV": {2.5: 2, -2.5: -2, 3.5: 4, -3.5: -4, 1.25: 1},  # nearest, ties to even
}


@pytest.mark.parametrize("q_mode", AP_MEANING)
def test_ap_modes_round_as_vitis_hls_defines(q_mode):
    # ap_fixed<10,10> is an integer type: quantize_float rounds x to an integer by the parsed mode.
    t = parse_ap_type(f"ap_fixed<10,10,{q_mode},AP_SAT>")
    for x, expected in AP_MEANING[q_mode].items():
        assert quantize_float(np.float32(x), t) == expected, (q_mode, x)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ap_fixed<16,6>", FixedType(16, True, 10, Rounding.FLOOR, Saturation.NONE)),  # defaults AP_TRN, AP_WRAP
        ("ap_fixed<8,3,AP_RND>", FixedType(8, True, 5, Rounding.POSITIVE_INF, Saturation.NONE)),
        ("ap_ufixed<8,0,AP_RND_CONV,AP_SAT>", FixedType(8, False, 8, Rounding.CONV_EVEN, Saturation.SATURATE)),
        ("ap_fixed<8,10>", FixedType(8, True, -2, Rounding.FLOOR, Saturation.NONE)),  # more integer bits than width
        ("ap_fixed<8,-2>", FixedType(8, True, 10, Rounding.FLOOR, Saturation.NONE)),
        ("ap_int<8>", FixedType(8, True, 0, Rounding.FLOOR, Saturation.NONE)),
        ("ap_uint<12>", FixedType(12, False, 0, Rounding.FLOOR, Saturation.NONE)),
        ("  ap_int< 16 >  ", FixedType(16, True, 0, Rounding.FLOOR, Saturation.NONE)),
        ("fixed<8,3,RND_CONV,SAT>", FixedType(8, True, 5, Rounding.CONV_EVEN, Saturation.SATURATE)),
        ("ufixed<4,1>", FixedType(4, False, 3, Rounding.FLOOR, Saturation.NONE)),
        ("ap_fixed<8,3,ap_rnd_conv,ap_sat>", FixedType(8, True, 5, Rounding.CONV_EVEN, Saturation.SATURATE)),
    ],
)
def test_parse_ap_type_forms(text, expected):
    assert parse_ap_type(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "ap_fixed<8,3,AP_RND,AP_SAT_ZERO>",
        "ap_fixed<8,3,AP_RND,AP_WRAP_SM>",
        "fixed<8,3,RND,SAT_ZERO>",
        "fixed<8,3,RND,WRAP_SM>",
        "ap_fixed<8,3,AP_RND,AP_SAT,2>",  # saturation bits N > 0
        "ap_fixed<8,3,AP_FOO,AP_SAT>",
        "ap_fixed<8,3,AP_RND,AP_BAR>",
        "ap_fixed<8>",
        "ap_fixed<x,3>",
        "float",
        "ap_fixed<8,3",
        "ap_fixed<0,0>",
    ],
)
def test_parse_ap_type_refuses(text):
    with pytest.raises(NumericsError):
        parse_ap_type(text)


def test_ap_no_native_modes_say_what_works():
    for mode in ("AP_SAT_ZERO", "AP_WRAP_SM"):
        with pytest.raises(NumericsError) as info:
            parse_ap_type(f"ap_fixed<8,3,AP_RND,{mode}>")
        assert mode in str(info.value) and "AP_SAT" in str(info.value)
