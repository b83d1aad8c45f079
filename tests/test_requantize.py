"""numerics.requantize and choose_multiplier against exact rational arithmetic (fractions.Fraction)."""

from fractions import Fraction

import numpy as np
import pytest

from aieflow.errors import NumericsError
from aieflow.numerics import (MULTIPLIER_BITS, FixedType, Rounding, Saturation, choose_multiplier, requantize,
                              round_fraction)


def _reference(acc: int, multiplier: int, shift: int, zp: int, t: FixedType, relu: bool) -> int:
    r = round_fraction(Fraction(acc * multiplier) / Fraction(2) ** shift, t.rounding) + zp
    lo, hi = t.qmin, t.qmax
    if t.saturation is Saturation.SATURATE:
        r = min(max(r, lo), hi)
    elif t.saturation is Saturation.SYMMETRIC:
        r = min(max(r, lo + 1 if t.signed else lo), hi)
    else:
        r = (r - lo) % (1 << t.bits) + lo
    return max(r, zp) if relu else r


@pytest.mark.parametrize("seed", range(12))
def test_requantize_matches_exact_rationals(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        bits = int(rng.integers(2, 17))
        signed = bool(rng.integers(0, 2)) or bits > 8
        t = FixedType(bits, signed, 0, Rounding(rng.choice([r.value for r in Rounding])),
                      Saturation(rng.choice([s.value for s in Saturation])))
        multiplier = int(rng.integers(1, 1 << MULTIPLIER_BITS))
        shift = int(rng.integers(-6, 40))
        zp = int(rng.integers(t.qmin, t.qmax + 1)) if rng.integers(0, 2) else 0
        relu = bool(rng.integers(0, 2))
        acc = rng.integers(-(1 << 31), 1 << 31, 64)
        # Exact ties: multiples of 2**(shift-1) divided by the multiplier where it divides.
        if shift > 0:
            acc[:16] = (rng.integers(-2000, 2000, 16) * 2 + 1) << (shift - 1) if multiplier == 1 else acc[:16]
        acc[16:24] = rng.integers(-300, 300, 8)
        got = requantize(acc, multiplier, shift, zp, t, relu)
        want = [_reference(int(a), multiplier, shift, zp, t, relu) for a in acc]
        assert got.tolist() == want, (t, multiplier, shift, zp, relu)


def test_zero_point_is_added_after_rounding():
    t = FixedType(8, False, 0, Rounding.CONV_EVEN)
    # 5 / 2 = 2.5 rounds to 2 (even), then + 1 = 3; rounding 2.5 + 1 = 3.5 would give 4.
    assert requantize(np.array([5]), 1, 1, 1, t).tolist() == [3]


def test_relu_clamps_at_the_zero_point():
    t = FixedType(8, False, 0)
    assert requantize(np.array([-100, 0, 100]), 1, 0, 128, t, relu=True).tolist() == [128, 128, 228]


@pytest.mark.parametrize("real", [1.0, 0.5, 2.0**-20, 0.3, 0.123456789, 7.75, 1e-6, 3000.0])
def test_choose_multiplier_is_the_nearest_15_bit_ratio(real):
    m, s = choose_multiplier(real)
    assert 1 <= m < 1 << MULTIPLIER_BITS
    err = abs(Fraction(m) / Fraction(2) ** s - Fraction(real))
    assert err <= Fraction(real) * Fraction(1, 1 << MULTIPLIER_BITS)
    # no multiplier of the same width does better
    for cand in (m - 1, m + 1):
        if 1 <= cand < 1 << MULTIPLIER_BITS:
            assert abs(Fraction(cand) / Fraction(2) ** s - Fraction(real)) >= err


def test_powers_of_two_need_no_multiplier():
    for e in range(-30, 10):
        assert choose_multiplier(2.0**e) == (1, -e)


def test_choose_multiplier_refuses_non_positive():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(NumericsError):
            choose_multiplier(bad)
