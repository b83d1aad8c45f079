"""The dense family against plain integer arithmetic: every rounding and saturation mode, positive and
negative shifts, ReLU, and every split of a layer over cascade chains and microtiles."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import aieflow
from aieflow.devices import get_device
from aieflow.ir import Graph, Op, Tensor
from aieflow.numerics import FixedType, Rounding, Saturation
from aieflow.ops import dense


def _reference_round(v: Fraction, mode: Rounding) -> int:
    """Written out from the table in aie-ml.md, independently of numerics.py."""
    lo, hi = math.floor(v), math.ceil(v)
    if lo == hi:
        return lo
    directed = {Rounding.FLOOR: lo, Rounding.CEIL: hi, Rounding.SYMMETRIC_FLOOR: lo if v > 0 else hi,
                Rounding.SYMMETRIC_CEIL: hi if v > 0 else lo}
    if mode in directed:
        return directed[mode]
    d = v - lo
    if d != Fraction(1, 2):
        return lo if d < Fraction(1, 2) else hi
    return {Rounding.NEGATIVE_INF: lo, Rounding.POSITIVE_INF: hi, Rounding.SYMMETRIC_ZERO: hi if v < 0 else lo,
            Rounding.SYMMETRIC_INF: lo if v < 0 else hi, Rounding.CONV_EVEN: lo if lo % 2 == 0 else hi,
            Rounding.CONV_ODD: lo if lo % 2 else hi}[mode]


def _reference(x, w, b, shift, out: FixedType, relu: bool) -> np.ndarray:
    lo, hi = out.qmin, out.qmax
    res = np.zeros((x.shape[0], w.shape[1]), dtype=np.int64)
    for i in range(x.shape[0]):
        for j in range(w.shape[1]):
            acc = int(b[j]) + sum(int(x[i, k]) * int(w[k, j]) for k in range(w.shape[0]))
            r = _reference_round(Fraction(acc) / Fraction(2) ** shift, out.rounding)
            if out.saturation is Saturation.SATURATE:
                r = min(max(r, lo), hi)
            elif out.saturation is Saturation.SYMMETRIC:
                r = min(max(r, lo + 1 if out.signed else lo), hi)
            else:
                r = (r - lo) % (1 << out.bits) + lo
            res[i, j] = max(r, 0) if relu else r
    return res


def _graph(w, b, xt, wt, yt, shift, relu) -> Graph:
    k, n = w.shape
    return Graph("g", {"x": Tensor("x", (k,), xt), "y": Tensor("y", (n,), yt)},
                 (Op("fc", "dense", ("x",), ("y",), {"relu": relu, "shift": shift, "weight_type": wt},
                     {"weight": w, "bias": b}),), ("x",), ("y",))


MODES = [(r, s) for r in Rounding for s in Saturation]


@pytest.mark.parametrize("rounding, saturation", MODES, ids=[f"{r.name}-{s.name}" for r, s in MODES])
def test_every_rounding_and_saturation_mode(rounding, saturation):
    rng = np.random.default_rng(rounding.value * 7 + len(saturation.value))
    k, n, shift = 11, 6, 5
    xt = FixedType(8, True, 3)
    wt = FixedType(8, True, 2)
    yt = FixedType(8, True, 0, rounding, saturation)
    w = rng.integers(-128, 128, (k, n))
    b = rng.integers(-3000, 3000, n)
    x = rng.integers(-128, 128, (40, k))
    x[0] = 0  # acc = bias: pick biases that are exact ties below
    b[:3] = [32 * 3 + 16, -(32 * 5 + 16), 16]  # +3.5, -5.5, +0.5 after the shift of 5
    for relu in (False, True):
        design = aieflow.compile(_graph(w, b, xt, wt, yt, shift, relu), batch=8)
        assert np.array_equal(design.simulate(x, raw=True), _reference(x, w, b, shift, yt, relu))


@pytest.mark.parametrize("shift", [-6, -1, 0, 1, 9, 17])
def test_positive_and_negative_shifts_exactly(shift):
    rng = np.random.default_rng(shift + 50)
    xt, wt = FixedType(16, True, 4), FixedType(8, True, 3)
    yt = FixedType(16, True, 0, Rounding.SYMMETRIC_INF, Saturation.SATURATE)
    w = rng.integers(-128, 128, (7, 5))
    b = rng.integers(-10000, 10000, 5)
    x = rng.integers(-32768, 32768, (20, 7))
    x[:4] //= 4096  # small values, so a left shift does not saturate everything
    design = aieflow.compile(_graph(w, b, xt, wt, yt, shift, False), batch=4)
    assert np.array_equal(design.simulate(x, raw=True), _reference(x, w, b, shift, yt, False))


def test_sixteen_bit_weights_use_the_64_bit_accumulator():
    rng = np.random.default_rng(3)
    xt, wt = FixedType(16, True, 0), FixedType(16, True, 0)
    yt = FixedType(16, True, 0)
    w = rng.integers(-32768, 32768, (40, 3))
    b = rng.integers(-2 ** 40, 2 ** 40, 3)
    x = rng.integers(-32768, 32768, (9, 40))
    design = aieflow.compile(_graph(w, b, xt, wt, yt, 24, True), batch=3)
    assert design.layers[0].config.acc_bits == 64
    assert np.array_equal(design.simulate(x, raw=True), _reference(x, w, b, 24, yt, True))


def test_every_candidate_split_computes_the_same():
    """Each (microtile, cas_length, cas_num) the family proposes, forced in turn by a directive, gives the
    exact result through the whole mapping (memory-tile shards, direct links, PLIO splits)."""
    rng = np.random.default_rng(9)
    xt, wt, yt = FixedType(8, True, 0), FixedType(8, True, 0), FixedType(8, True, 0)
    k, n = 70, 37  # not multiples of any microtile: padding on both axes
    w = rng.integers(-128, 128, (k, n))
    b = rng.integers(-5000, 5000, n)
    x = rng.integers(-128, 128, (13, k))
    g = _graph(w, b, xt, wt, yt, 9, False)
    want = _reference(x, w, b, 9, yt, False)
    options = dense.candidates(g.ops[0], g, get_device("ve2802"), 8)
    shapes = {(c.microtile, c.cas_length, c.cas_num) for c in options}
    assert len(shapes) > 20 and {c.microtile for c in options} == set(get_device("ve2802").generation.precisions["8x8"].microtiles)
    for cfg in options[:: max(1, len(options) // 40)] + [options[-1]]:
        pick = {"cas_length": cfg.cas_length, "cas_num": cfg.cas_num, "microtile": list(cfg.microtile)}
        design = aieflow.compile(g, batch=8, layers={"fc": pick})
        assert design.layers[0].config == cfg
        assert np.array_equal(design.simulate(x, raw=True), want), cfg


def test_buffers_always_fit_one_bank():
    g = _graph(np.ones((512, 512), np.int64), np.zeros(512, np.int64), FixedType(8, True, 0), FixedType(8, True, 0),
               FixedType(8, True, 0), 4, False)
    dev = get_device("ve2802")
    for cfg in dense.candidates(g.ops[0], g, dev, 64):
        for stage in range(cfg.cas_length):
            assert all(size <= dev.generation.bank_bytes for _, size in cfg.tile_buffers(stage, dev))
            assert dense.bank_assignment(cfg.tile_buffers(stage, dev), dev) is not None
