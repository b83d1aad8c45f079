"""The fast emulator (aieflow.simulate.fast) against the structural one, bit for bit.

The structural emulator (simulate.emulator.run) follows the hardware, DMA descriptor by descriptor and
kernel by kernel, and stays the reference; the fast one must give the same integers on every design:
random dense MLPs (int8 / uint8 / int16 activations, int8 / int16 weights, every rounding and saturation
mode, negative shifts, forced cascade splits), residual adds, and QDQ models against onnxruntime. Its
float32 / float64 / int64 choice is checked where each bound bites, and its float rounding against
numerics.srs directly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import aieflow
from aieflow import fastmath
from aieflow.devices import get_device
from aieflow.errors import DesignError
from aieflow.examples.onnx_qdq import qdq_mlp, run_onnxruntime, sample_inputs
from aieflow.ir import Graph, Op, Tensor
from aieflow.numerics import FixedType, Rounding, Saturation, quantize_float, srs
from aieflow.ops import dense
from aieflow.ops.dense.fast import unpack_weights
from aieflow.simulate import emulator, fast

MODES = [(r, s) for r in Rounding for s in Saturation]
ACTS = {"int8": (8, True), "uint8": (8, False), "int16": (16, True)}
VE2802 = get_device("ve2802")
SEEN = {"designs": 0, "split": 0, "negative_shift": 0, "modes": set(), "precisions": set()}


def _both(design, q, **kw) -> np.ndarray:
    """The fast result, after checking it equals the structural emulator's."""
    want = emulator.run(design, q, raw=True)
    got = fast.run_fast(design, q, device="cpu", **kw)
    assert got.dtype == np.int64 and got.shape == want.shape
    assert np.array_equal(got, want), (fast.precisions(design), np.argwhere(got != want)[:5])
    return got


def _inputs(rng, t: FixedType, n: int, k: int) -> np.ndarray:
    q = rng.integers(t.qmin, t.qmax, (n, k), endpoint=True)
    q[0] = t.qmax  # the extremes, so saturation and the worst case are met
    if n > 1:
        q[1] = t.qmin
    if n > 2:
        q[2] = 0
    return q


# --- random dense MLPs --------------------------------------------------------------------------------------


def _random_mlp(seed: int):
    """A chain of 1 to 3 dense layers with random types, modes, shifts (some negative) and ReLU."""
    rng = np.random.default_rng([77, seed])
    depth = int(rng.integers(1, 4))
    widths = [int(rng.integers(1, 48)) for _ in range(depth + 1)]
    act = list(ACTS)[seed % 3]
    x_t = FixedType(*ACTS[act], int(rng.integers(-2, 8)))
    tensors = {"x": Tensor("x", (widths[0],), x_t)}
    ops = []
    cur, cur_t = "x", x_t
    for i in range(depth):
        k, n = widths[i], widths[i + 1]
        w_bits = 16 if (cur_t.bits == 16 and rng.random() < 0.4) or (cur_t.bits == 8 and rng.random() < 0.25) else 8
        acc_bits = 64 if (cur_t.bits, w_bits) == (16, 16) else 32
        # Weights as large as the accumulator allows (often small, for 16-bit inputs).
        room = ((1 << (acc_bits - 1)) - 1) // (2 * cur_t.magnitude * k)
        w_max = int(min((1 << (w_bits - 1)) - 1, room, int(rng.choice([1, 3, 40, 127, 30000]))))
        w = rng.integers(-w_max, w_max, (k, n), endpoint=True)
        typical = max(1.0, cur_t.magnitude * max(w_max, 1) * np.sqrt(k) / 2)
        b_max = int(min(typical, ((1 << (acc_bits - 1)) - 1) // 2))
        b = rng.integers(-b_max, b_max, n, endpoint=True)
        rounding, saturation = MODES[int(rng.integers(0, len(MODES)))]
        out_act = list(ACTS)[int(rng.integers(0, 3))]
        bits, signed = ACTS[out_act]
        shift = int(np.round(np.log2(typical))) - (bits - 2) + int(rng.integers(-2, 3))
        if rng.random() < 0.15:
            shift = -int(rng.integers(1, 6))
        shift = int(np.clip(shift, -(acc_bits - 2), acc_bits - 2))
        y_t = FixedType(bits, signed, cur_t.frac + 0 - shift, rounding, saturation)
        name = f"fc{i}"
        y = f"h{i}" if i < depth - 1 else "y"
        tensors[y] = Tensor(y, (n,), y_t)
        ops.append(Op(name, "dense", (cur,), (y,),
                      {"relu": bool(rng.random() < 0.5), "shift": shift, "weight_type": FixedType(w_bits, True, 0)},
                      {"weight": w, "bias": b}))
        cur, cur_t = y, y_t
    return Graph(f"mlp{seed}", tensors, tuple(ops), ("x",), ("y",)).validate(), rng


def _forced_split(g: Graph, rng, batch: int) -> dict:
    """A random legal (cas_length, cas_num) for each layer, as compile directives (among the candidates
    at the padded batch the mapper gives every layer of the graph)."""
    padded = aieflow.compile(g, batch=batch).layers[0].config.batch
    picks = {}
    for op in g.ops:
        options = [c for c in dense.candidates(op, g, VE2802, batch) if c.batch == padded]
        if options and rng.random() < 0.7:
            cfg = options[int(rng.integers(0, len(options)))]
            picks[op.name] = {"cas_length": cfg.cas_length, "cas_num": cfg.cas_num}
    return picks


@pytest.mark.parametrize("seed", range(36))
def test_random_dense_mlps_equal_the_structural_emulator(seed):
    g, rng = _random_mlp(seed)
    batch = int(rng.integers(1, 9))
    design = aieflow.compile(g, batch=batch, layers=_forced_split(g, rng, batch))
    x_t = g.tensors["x"].type
    q = _inputs(rng, x_t, 3 * batch + int(rng.integers(0, batch + 1)), g.tensors["x"].features)
    _both(design, q)
    SEEN["designs"] += 1
    SEEN["split"] += any(l.config.cas_length > 1 or l.config.cas_num > 1 for l in design.layers)
    SEEN["negative_shift"] += any(op.attrs["shift"] < 0 for op in g.ops)
    SEEN["modes"] |= {(g.tensors[op.outputs[0]].type.rounding, g.tensors[op.outputs[0]].type.saturation) for op in g.ops}
    SEEN["precisions"] |= set(fast.precisions(design).values())


def test_the_random_designs_covered_what_they_claim():
    """Runs after the random designs (file order): splits, negative shifts, modes and precisions were met."""
    if SEEN["designs"] < 36:
        pytest.skip("run with the random-design tests")
    assert SEEN["split"] >= 10 and SEEN["negative_shift"] >= 3
    assert len(SEEN["modes"]) >= 15
    assert {"float32", "float64"} <= SEEN["precisions"]


@pytest.mark.parametrize("rounding, saturation", MODES, ids=[f"{r.name}-{s.name}" for r, s in MODES])
def test_every_rounding_and_saturation_mode_with_ties(rounding, saturation):
    """Each mode on a layer whose accumulators land on ties, at positive, zero and negative shifts."""
    rng = np.random.default_rng(rounding.value * 3 + len(saturation.value))
    k, n = 9, 12
    xt, wt = FixedType(8, True, 0), FixedType(8, True, 0)
    w = rng.integers(-9, 10, (k, n))
    for shift in (3, 0, -2):
        b = rng.integers(-300, 300, n)
        b[:4] = [4, -4, 12, -20]  # +-1/2, 3/2, -5/2 at shift 3 when x = 0
        yt = FixedType(8, True, -shift, rounding, saturation)
        g = Graph("g", {"x": Tensor("x", (k,), xt), "y": Tensor("y", (n,), yt)},
                  (Op("fc", "dense", ("x",), ("y",), {"relu": shift == 0, "shift": shift, "weight_type": wt},
                      {"weight": w, "bias": b}),), ("x",), ("y",))
        design = aieflow.compile(g, batch=4)
        q = rng.integers(-128, 128, (13, k))
        q[3] = 0
        q[4, :] = 0
        q[4, 0] = 1  # acc = w[0] + b: small odd sums meet more ties
        _both(design, q)


# --- the float SRS against numerics.srs ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_rounding_equals_srs_in_every_mode(dtype):
    """The folded float epilogue (offset in the bias, scale 2**-shift, one rounding, one clip) equals
    numerics.srs + ReLU for every rounding mode and saturating mode, at ties and near the float bound."""
    rng = np.random.default_rng(5)
    limit = fast.FLOAT32_EXACT if dtype is np.float32 else fast.FLOAT64_EXACT
    for shift in (-7, -1, 0, 1, 2, 3, 8, 15):
        top = limit - (1 << shift if shift > 0 else 0) - 1  # the largest |acc| the bound admits
        acc = np.concatenate([
            rng.integers(-top, top, 3000, endpoint=True),
            rng.integers(-2000, 2000, 3000),
            np.array([top, -top, 0, 1, -1]),
        ]).astype(np.int64)
        if shift > 0:  # exact ties of both signs and parities
            m = min(1000, (top >> shift) - 1)
            acc[:400] = (rng.integers(-m, m, 400) << shift) + (1 << (shift - 1))
        for rounding in Rounding:
            for saturation in (Saturation.SATURATE, Saturation.SYMMETRIC):
                for bits, signed in ((8, True), (16, False), (16, True)):
                    out = FixedType(bits, signed, 0, rounding, saturation)
                    for relu in (False, True):
                        want = srs(acc, shift, out)
                        if relu:
                            want = np.maximum(want, 0)
                        off = fastmath.offset(rounding, shift)
                        z = np.ldexp((acc + off).astype(np.float64), -shift).astype(dtype)
                        z = fastmath.round_inplace(fastmath.Numpy, z, rounding, shift)
                        lo, hi = fastmath.clip_bounds(out, relu)
                        got = np.clip(z, lo, hi).astype(np.int64)
                        assert np.array_equal(got, want), (shift, rounding, saturation, bits, signed, relu)


# --- precision selection --------------------------------------------------------------------------------


def _one_layer(w, b, xt, wt, yt, shift, relu=False) -> Graph:
    k, n = w.shape
    return Graph("g", {"x": Tensor("x", (k,), xt), "y": Tensor("y", (n,), yt)},
                 (Op("fc", "dense", ("x",), ("y",), {"relu": relu, "shift": shift, "weight_type": wt},
                     {"weight": w, "bias": b}),), ("x",), ("y",))


def test_float32_within_two_to_the_24():
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (64, 10))
    g = _one_layer(w, rng.integers(-1000, 1000, 10), FixedType(8, True, 0), FixedType(8, True, 0),
                   FixedType(8, True, 0), 10)
    design = aieflow.compile(g, batch=8)
    p = fast.plan(design)[0]
    assert p.bound < fast.FLOAT32_EXACT and fast.precisions(design) == {"fc": "float32"}
    _both(design, _inputs(rng, FixedType(8, True, 0), 40, 64))


def test_float64_beyond_two_to_the_24():
    """int16 activations x int8 weights: the 32-bit accumulator holds more than float32 can add exactly."""
    rng = np.random.default_rng(2)
    xt = FixedType(16, True, 0)
    w = rng.integers(-127, 128, (40, 7))
    w[:, 0] = 127  # a column at the worst case: 32768 * 127 * 40 > 2**27
    g = _one_layer(w, rng.integers(-10 ** 6, 10 ** 6, 7), xt, FixedType(8, True, 0),
                   FixedType(16, True, -4, Rounding.CONV_EVEN), 12)
    design = aieflow.compile(g, batch=4)
    p = fast.plan(design)[0]
    assert fast.FLOAT32_EXACT <= p.bound < fast.FLOAT64_EXACT
    assert fast.precisions(design) == {"fc": "float64"}
    q = _inputs(rng, xt, 21, 40)
    q[3:6] = 32767  # sums past 2**24 that float32 would round
    q[3:6, ::2] = -32768
    got = _both(design, q)
    # float32 would have been wrong somewhere: the bound is not just a formality here.
    wrong = np.rint((q.astype(np.float32) @ w.astype(np.float32)).astype(np.float64))
    assert not np.array_equal(wrong.astype(np.int64), q @ w)
    for forced in ("float64", "int64"):
        assert np.array_equal(fast.run_fast(design, q, device="cpu", precision=forced), got)


def test_int64_beyond_two_to_the_53():
    """int16 x int16 on the 64-bit accumulator with a bias near 2**60: only integers are exact."""
    rng = np.random.default_rng(3)
    xt, wt = FixedType(16, True, 0), FixedType(16, True, 0)
    w = rng.integers(-32768, 32768, (24, 5))
    b = rng.integers(-2 ** 60, 2 ** 60, 5)
    b[0] = 2 ** 60 + 12345  # odd, and far past float64's 53 bits
    for shift, rounding in ((45, Rounding.CONV_EVEN), (44, Rounding.SYMMETRIC_ZERO), (50, Rounding.CONV_ODD)):
        yt = FixedType(16, True, 0, rounding, Saturation.SATURATE)
        design = aieflow.compile(_one_layer(w, b, xt, wt, yt, shift, relu=shift == 44), batch=4)
        assert design.layers[0].config.acc_bits == 64
        p = fast.plan(design)[0]
        assert p.bound >= fast.FLOAT64_EXACT and p.product_bound < fast.FLOAT64_EXACT
        assert fast.precisions(design) == {"fc": "int64"}
        q = _inputs(rng, xt, 17, 24)
        got = _both(design, q)
        assert np.array_equal(fast.run_fast(design, q, device="cpu", precision="int64"), got)  # int64 product
    with pytest.raises(DesignError):
        fast.run_fast(design, q, precision="float16")


def test_precision_is_never_lowered_below_exact():
    rng = np.random.default_rng(4)
    g = _one_layer(rng.integers(-3, 4, (30, 6)), rng.integers(-9, 9, 6), FixedType(16, True, 0),
                   FixedType(8, True, 0), FixedType(16, True, 0), 2)
    design = aieflow.compile(g, batch=4)
    assert fast.precisions(design) == {"fc": "float32"}
    assert fast.precisions(design, "float64") == {"fc": "float64"}
    assert fast.precisions(design, "int64") == {"fc": "int64"}
    assert fast.precisions(design, "float32") == {"fc": "float32"}


# --- residual adds ----------------------------------------------------------------------------------------


def _residual(seed: int) -> Graph:
    """x -> dense a, x -> dense b, add(a, b) -> [dense]: two different types joined, random modes."""
    rng = np.random.default_rng([91, seed])
    k, n = int(rng.integers(1, 30)), int(rng.integers(1, 40))
    x_t = FixedType(*ACTS[list(ACTS)[seed % 3]], 3)
    wt = FixedType(8, True, 0)
    types = [FixedType(*ACTS[list(ACTS)[int(rng.integers(0, 3))]], int(rng.integers(0, 6))) for _ in range(2)]
    tensors = {"x": Tensor("x", (k,), x_t), "a": Tensor("a", (n,), types[0]), "b": Tensor("b", (n,), types[1])}
    ops = []
    for name, t in zip("ab", types):
        w = rng.integers(-3, 4, (k, n))
        typical = x_t.magnitude * 3 * np.sqrt(k)
        shift = max(1, int(np.log2(typical)) - t.bits + 3)
        tensors[name] = Tensor(name, (n,), FixedType(t.bits, t.signed, x_t.frac - shift))
        ops.append(Op(f"fc_{name}", "dense", ("x",), (name,),
                      {"relu": bool(rng.random() < 0.5), "shift": shift, "weight_type": wt},
                      {"weight": w, "bias": rng.integers(-50, 50, n)}))
    fa, fb = tensors["a"].type.frac, tensors["b"].type.frac
    common = max(fa, fb)
    rounding, saturation = MODES[int(rng.integers(0, len(MODES)))]
    bits, signed = ACTS[list(ACTS)[int(rng.integers(0, 3))]]
    out_shift = int(rng.integers(-2, 4))
    s_t = FixedType(bits, signed, common - out_shift, rounding, saturation)
    tensors["s"] = Tensor("s", (n,), s_t)
    ops.append(Op("join", "add", ("a", "b"), ("s",),
                  {"relu": bool(rng.random() < 0.5), "shift_a": common - fa, "shift_b": common - fb,
                   "shift": out_shift}))
    outputs = ("s",)
    if seed % 2:
        m = int(rng.integers(1, 20))
        tensors["y"] = Tensor("y", (m,), FixedType(8, True, s_t.frac - 6))
        ops.append(Op("fc_out", "dense", ("s",), ("y",), {"relu": False, "shift": 6, "weight_type": wt},
                      {"weight": rng.integers(-5, 6, (n, m)), "bias": rng.integers(-99, 99, m)}))
        outputs = ("y",)
    return Graph(f"res{seed}", tensors, tuple(ops), ("x",), outputs).validate()


@pytest.mark.parametrize("seed", range(10))
def test_residual_adds_equal_the_structural_emulator(seed):
    g = _residual(seed)
    design = aieflow.compile(g, batch=int(seed % 4) + 1)
    rng = np.random.default_rng(seed)
    q = _inputs(rng, g.tensors["x"].type, 11, g.tensors["x"].features)
    got = _both(design, q)
    for forced in ("float64", "int64"):
        assert np.array_equal(fast.run_fast(design, q, device="cpu", precision=forced), got)


# --- against onnxruntime --------------------------------------------------------------------------------

QDQ = [
    dict(widths=[16, 64, 32, 5], act_bits=8, act_signed=True, weight_bits=8, seed=0),
    dict(widths=[40, 33, 7], act_bits=8, act_signed=False, weight_bits=8, seed=1),
    dict(widths=[20, 30, 9], act_bits=16, act_signed=True, weight_bits=8, seed=2, relu=[True, False]),
    dict(widths=[24, 12, 12, 3], act_bits=16, act_signed=True, weight_bits=16, seed=3),
    dict(widths=[128, 256, 64], act_bits=8, act_signed=True, weight_bits=16, seed=4, gemm=False),
    dict(widths=[512, 512, 512], act_bits=8, act_signed=True, weight_bits=8, seed=5),
]


@pytest.mark.parametrize("case", QDQ, ids=[f"qdq{i}" for i in range(len(QDQ))])
def test_qdq_mlps_equal_onnxruntime(case):
    model = qdq_mlp(**case)
    design = aieflow.compile(model, batch=8)
    x = sample_inputs(model, 600, seed=case["seed"])
    want = run_onnxruntime(model, x).astype(np.float64)
    assert np.array_equal(fast.run(design, x, device="cpu"), want)
    # and the same integers as the structural emulator on a slice of them
    t = design.graph.tensors[design.graph.inputs[0]].type
    _both(design, quantize_float(x[:40], t))


def test_input_quantizer_equals_quantize_float():
    rng = np.random.default_rng(8)
    for bits, signed in ACTS.values():
        for frac in (-3, 0, 5, 20):
            for rounding in (Rounding.CONV_EVEN, Rounding.FLOOR):
                t = FixedType(bits, signed, frac, rounding)
                step = 2.0 ** -frac
                v = np.concatenate([rng.integers(-70000, 70000, 500) * 0.5, rng.uniform(-7e4, 7e4, 500),
                                    [0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30]]) * step
                for dtype in (np.float32, np.float64):
                    big = np.finfo(dtype).max / 2  # x * 2**frac overflows to inf: saturates all the same
                    tiny = np.finfo(dtype).smallest_subnormal  # underflows: rounds to 0 all the same
                    x = np.concatenate([v.astype(dtype), np.array([big, -big, tiny, -tiny], dtype)]).reshape(-1, 2)
                    with np.errstate(over="ignore"):  # quantize_float's own float64 overflow on `big`
                        want = quantize_float(x, t)
                        got = fast.quantize_input(x, t)  # FLOOR falls back to quantize_float
                    assert np.array_equal(got, want)
    with pytest.raises(aieflow.AieflowError):
        fast.quantize_input(np.array([[np.nan, 1.0]]), FixedType(8, True, 0))


# --- behaviour ----------------------------------------------------------------------------------------------


def _small_design():
    rng = np.random.default_rng(12)
    g = _one_layer(rng.integers(-20, 21, (10, 6)), rng.integers(-99, 99, 6), FixedType(8, True, 0),
                   FixedType(8, True, 0), FixedType(8, True, 0), 4, relu=True)
    return aieflow.compile(g, batch=2)


def test_an_op_of_no_family_is_refused_by_name():
    design = _small_design()
    g = design.graph
    odd = dataclasses.replace(g.ops[0], kind="nonesuch")
    other = dataclasses.replace(design, graph=dataclasses.replace(g, ops=(odd,)),
                                layers=(dataclasses.replace(design.layers[0], op=odd),))
    with pytest.raises(DesignError, match="no op family 'nonesuch'"):
        fast.run_fast(other, np.zeros((3, 10), np.int64))
    assert issubclass(fast.Unsupported, NotImplementedError)


def test_inputs_are_checked_like_the_structural_emulator():
    design = _small_design()
    with pytest.raises(DesignError):
        fast.run_fast(design, np.full((2, 10), 128))  # outside int8
    with pytest.raises(DesignError):
        fast.run_fast(design, np.zeros((2, 9), np.int64))
    with pytest.raises(DesignError):
        fast.run_fast(design, np.zeros((2, 10), np.float32))  # raw means integers
    with pytest.raises(DesignError):
        fast.run_fast(design, np.zeros((2, 10), np.int64), device="tpu")
    assert fast.run_fast(design, np.zeros((0, 10), np.int64)).shape == (0, 6)
    assert fast.run_fast(design, np.zeros(10, np.int64)).shape == (1, 6)
    x = np.linspace(-3, 3, 40).reshape(4, 10)
    assert np.array_equal(fast.run(design, x), emulator.run(design, x))
    assert np.array_equal(fast.run(design, x, raw=True), emulator.run(design, x, raw=True))


def test_chunks_give_the_same_result(monkeypatch):
    design = _small_design()
    q = np.random.default_rng(1).integers(-128, 128, (37, 10))
    whole = fast.run_fast(design, q)
    monkeypatch.setattr(fast, "CHUNK_BYTES", 8 * 10 * 4)  # four samples a chunk
    assert fast.chunk_rows(design, 37) == 4
    assert np.array_equal(fast.run_fast(design, q), whole)


def test_unpacked_weights_are_what_was_packed_and_cached():
    rng = np.random.default_rng(6)
    w, b = rng.integers(-128, 128, (70, 37)), rng.integers(-5000, 5000, 37)
    g = _one_layer(w, b, FixedType(8, True, 0), FixedType(8, True, 0), FixedType(8, True, 0), 9)
    design = aieflow.compile(g, batch=8, layers={"fc": {"cas_length": 3, "cas_num": 2}})
    cfg = design.layers[0].config
    assert (cfg.cas_length, cfg.cas_num) == (3, 2)
    wp, bp = unpack_weights(design.layers[0])
    assert wp.shape == (cfg.k_pad, cfg.n_pad)
    assert np.array_equal(wp[:70, :37], w) and not wp[70:].any() and not wp[:, 37:].any()
    assert np.array_equal(bp[:37], b)
    assert fast.plan(design) is fast.plan(design)


@pytest.mark.skipif(not fast.cuda_available(), reason="needs PyTorch with a CUDA device")
def test_cuda_equals_cpu():
    for seed in range(8):
        g, rng = _random_mlp(seed)
        design = aieflow.compile(g, batch=4)
        q = _inputs(rng, g.tensors["x"].type, 500, g.tensors["x"].features)
        assert np.array_equal(fast.run_fast(design, q, device="cuda"), fast.run_fast(design, q, device="cpu"))
    model = qdq_mlp([512] * 8, seed=0)
    design = aieflow.compile(model)
    x = sample_inputs(model, 4096, seed=0)
    assert np.array_equal(fast.run(design, x, device="cuda"), run_onnxruntime(model, x).astype(np.float64))
