"""The requant op family: y[:, j] = requantize(x[:, j] * scale + bias[j], multiplier, shift, zp_y, type_y, relu).

- the family's structural emulator (slicing, packing, padding) against numerics.requantize, and against a
  dense op with the weights scale * identity, on random configurations: every rounding mode, the three
  saturation modes, narrow types, zero points, multipliers from choose_multiplier, scales, ReLU;
- the checker's refusals, each naming the op;
- a design mixing dense, add and requant ops: the structural and fast emulators and the IR's semantics
  agree, the legality checker accepts it, design.json round-trips, and the whole project run on the host
  (aieflow.host.run) equals the emulator;
- every kernel of a chain of requant layers built with g++ and run on random full-range inputs, against
  the emulator's kernel arithmetic (acc32 and acc64, negative shifts, wrap, split features);
- a QONNX requantization of 512 features maps to one requant op on far fewer tiles than the identity dense.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

import aieflow
import aieflow.emit as emit
from aieflow.design import Layer
from aieflow.devices import get_device
from aieflow.errors import NumericsError
from aieflow.exactness import evaluate, evaluate_op
from aieflow.host import include_dir
from aieflow.host import run as host_run
from aieflow.ir import Graph, Op, Tensor
from aieflow.ops.dense import dense_op
from aieflow.ops.requant import requant_op
from aieflow.mapping import check
from aieflow.numerics import FixedType, Rounding, Saturation, choose_multiplier, requantize, round_shift
from aieflow.ops import family, requant
from aieflow.ops.base import kernel_id

GXX = shutil.which("g++")
VE2802 = get_device("ve2802")
ROUNDINGS = list(Rounding)
SATURATIONS = list(Saturation)


def _graph(n: int, x_t: FixedType, y_t: FixedType, zp: int, bias, shift: int, multiplier: int, relu: bool,
           scale: int, x_zp: int = 0) -> Graph:
    tensors = {"x": Tensor("x", (n,), x_t, zero_point=x_zp), "y": Tensor("y", (n,), y_t, zero_point=zp)}
    op = requant_op("rq", "x", "y", bias, shift, multiplier, relu, scale)
    return Graph("g", tensors, (op,), ("x",), ("y",)).validate()


def _as_identity_dense(graph: Graph) -> Graph:
    """The same graph with every requant op as the dense op it equals: weights scale * identity."""
    ops = []
    for op in graph.ops:
        if op.kind == "requant":
            n = graph.tensors[op.inputs[0]].features
            scale = int(op.attrs.get("scale", 1))
            wt = FixedType(8 if scale < 128 else 16, True, 0)
            op = dense_op(op.name, op.inputs[0], op.outputs[0], np.eye(n, dtype=np.int64) * scale, op.params["bias"],
                          wt, op.attrs["shift"], int(op.attrs.get("multiplier", 1)), op.attrs["relu"])
        ops.append(op)
    return dataclasses.replace(graph, ops=tuple(ops))


def _random_case(rng) -> tuple[Graph, dict]:
    """One requant op of random types, modes, zero point, scale, bias, multiplier and shift."""
    in_storage = int(rng.choice([8, 16]))
    in_signed = bool(in_storage == 16 or rng.integers(2))
    x_t = FixedType(int(rng.integers(2, in_storage + 1)), in_signed, 0)
    storage, signed = [(8, True), (8, False), (16, True)][int(rng.integers(3))]
    bits = storage if rng.integers(2) else int(rng.integers(2, storage))
    saturation = SATURATIONS[int(rng.integers(3))]
    if saturation is Saturation.SYMMETRIC and not signed:
        saturation = Saturation.SATURATE
    y_t = FixedType(bits, signed, 0, ROUNDINGS[int(rng.integers(len(ROUNDINGS)))], saturation)
    zp = int(rng.integers(y_t.qmin, y_t.qmax + 1)) if rng.integers(2) else 0
    n = int(rng.integers(1, 70))
    scale = 1 << int(rng.integers(0, 9))
    bias_lim = 1 << int(rng.integers(0, 36))
    bias = rng.integers(-bias_lim, bias_lim + 1, n)
    typical = max(1.0, (x_t.magnitude * scale + bias_lim) / 2)
    target = 2.0 ** (bits - 1) * float(rng.choice([0.5, 1.0, 3.0]))
    mult_kind = str(rng.choice(["one", "ratio", "tie"]))
    if mult_kind == "ratio":
        multiplier, shift = choose_multiplier(target / typical * float(rng.uniform(0.8, 1.25)))
    elif mult_kind == "tie":
        multiplier = int(rng.choice([3, 5, 7, 12345]))
        shift = max(1, int(np.round(np.log2(typical * multiplier / target))))
    else:
        multiplier, shift = 1, int(np.round(np.log2(typical / target))) + int(rng.integers(-1, 2))
    relu = bool(rng.integers(2))
    x_zp = int(rng.integers(x_t.qmin, x_t.qmax + 1)) if rng.integers(4) == 0 else 0
    g = _graph(n, x_t, y_t, zp, bias, shift, multiplier, relu, scale, x_zp)
    return g, {"mult": mult_kind, "narrow": bits < storage, "zp": zp != 0, "relu": relu, "scale": scale > 1}


def _emulate_op(graph: Graph, cfg, x: np.ndarray) -> np.ndarray:
    """The family's structural emulator on every kernel's slice (zero-padded), the outputs cut back."""
    op = graph.ops[0]
    layer = Layer(op, cfg, requant.pack(op, cfg))
    padded = np.zeros((x.shape[0], cfg.n_pad), dtype=np.int64)
    padded[:, : x.shape[1]] = x
    streams = {}
    for s in requant.input_slices(op, cfg, 0):
        for peer in s.peers:
            streams[peer] = padded[:, s.lo:s.hi].ravel()
    out = requant.emulate(layer, graph, streams)
    y = np.zeros_like(padded)
    for s in requant.output_slices(op, cfg):
        y[:, s.lo:s.hi] = out[s.peers[0]].reshape(x.shape[0], s.width)
    return y[:, : x.shape[1]]


def test_emulator_matches_numerics_on_random_configurations():
    rng = np.random.default_rng(7)
    seen = {"roundings": set(), "saturations": set(), "acc": set(), "refused": 0, "exact": 0}
    flags = {k: 0 for k in ("ratio", "tie", "narrow", "zp", "relu", "scale")}
    for _ in range(400):
        g, info = _random_case(rng)
        op = g.ops[0]
        try:
            requant.check_numerics(op, g, VE2802)
        except NumericsError as e:
            assert e.node == "rq"
            seen["refused"] += 1
            continue
        x_t, y = g.tensors["x"], g.tensors["y"]
        batch = int(rng.integers(1, 6))
        x = rng.integers(x_t.type.qmin, x_t.type.qmax + 1, (batch, x_t.features))
        x[0] = x_t.type.qmax  # the extremes meet the saturation
        want = requantize(x * int(op.attrs.get("scale", 1)) + op.params["bias"][None, :],
                          int(op.attrs.get("multiplier", 1)), op.attrs["shift"], y.zero_point, y.type, op.attrs["relu"])
        for cfg in requant.candidates(op, g, VE2802, batch)[:3]:
            np.testing.assert_array_equal(_emulate_op(g, cfg, x), want)
            seen["acc"].add(cfg.acc_bits)
        np.testing.assert_array_equal(evaluate_op(op, g, {"x": x}), want)
        dense = _as_identity_dense(g)
        np.testing.assert_array_equal(evaluate_op(dense.ops[0], dense, {"x": x}), want)
        seen["roundings"].add(y.type.rounding)
        seen["saturations"].add(y.type.saturation)
        seen["exact"] += 1
        for k in flags:
            flags[k] += int(info["mult"] == k) if k in ("ratio", "tie") else int(info[k])
    assert seen["roundings"] == set(Rounding) and seen["saturations"] == set(Saturation)
    assert seen["acc"] == {32, 64} and seen["exact"] >= 250, seen
    assert all(v >= 20 for v in flags.values()), flags


def test_check_numerics_refuses_what_the_kernel_cannot_do():
    i8, u8 = FixedType(8, True, 0), FixedType(8, False, 0)
    cases = [
        (_graph(16, i8, i8, 0, np.zeros(16), 0, 1, False, 3), "power of two"),
        (_graph(16, i8, i8, 0, np.full(16, 1 << 40), 30, 12345, False, 1), "int32 the multiplier reads"),
        (_graph(16, FixedType(16, False, 0), i8, 0, np.zeros(16), 0, 1, False, 1), "does not fit"),
        (_graph(16, i8, FixedType(24, True, 0), 0, np.zeros(16), 0, 1, False, 1), "does not fit"),
        (_graph(16, i8, i8, 0, np.zeros(16), 70, 1, False, 1), "outside what SRS can do"),
        (_graph(16, i8, i8, 0, np.zeros(16), 0, -3, False, 1), "multiplier"),
        (_graph(16, i8, i8, 0, np.zeros(15), 0, 1, False, 1), "one integer per feature"),
    ]
    g = _graph(16, i8, u8, 0, np.zeros(16), 0, 1, False, 1)
    cases.append((dataclasses.replace(g, tensors={**g.tensors, "y": Tensor("y", (16,), u8, zero_point=300)}),
                  "zero point"))
    for graph, words in cases:
        with pytest.raises(NumericsError) as e:
            requant.check_numerics(graph.ops[0], graph, VE2802)
        assert words in str(e.value) and e.value.node == "rq", str(e.value)
    with pytest.raises(aieflow.AieflowError) as e:  # through compile: one error naming the op
        aieflow.compile(cases[0][0], measure=False)
    assert e.value.node == "rq"


def test_candidates_split_the_features_and_name_the_kernels():
    i8 = FixedType(8, True, 0)
    g = _graph(70, i8, i8, 0, np.arange(70), 2, 1, False, 2)
    op = g.ops[0]
    cands = requant.candidates(op, g, VE2802, 4)
    assert cands[0].cas_num == 1 and all(c.cas_length == 1 for c in cands)
    assert all((c.cas_num - 1) * c.n_tile < 70 <= c.n_pad and c.n_tile % c.lanes == 0 for c in cands)
    cfg = next(c for c in cands if c.cas_num == 2)
    assert [s.layout for s in requant.output_slices(op, cfg)] == [(0, 48, 1, 48), (48, 96, 1, 48)]
    assert [s.peers for s in requant.input_slices(op, cfg, 0)] == [(kernel_id("rq", c, 0),) for c in range(2)]
    assert requant.pack(op, cfg)["bias"].shape == (2, 48) and requant.pack(op, cfg)["bias"].dtype == np.int32
    assert family("requant") is requant and requant.macs(op, g, 4) == 0
    assert requant.cycles(cfg, VE2802) >= requant.cycle_terms(cfg, VE2802)["vector"]


# --- a design mixing dense, add and requant ops -----------------------------------------------------------


def _mixed_graph() -> Graph:
    rng = np.random.default_rng(3)
    i8 = FixedType(8, True, 4)
    t = {"x": Tensor("x", (24,), i8),
         "h": Tensor("h", (40,), FixedType(8, True, 3, Rounding.CONV_EVEN)),
         "r": Tensor("r", (40,), FixedType(8, True, 3, Rounding.SYMMETRIC_INF)),
         "s": Tensor("s", (40,), FixedType(8, True, 2, Rounding.FLOOR)),
         "q": Tensor("q", (40,), FixedType(6, False, 2, Rounding.CONV_ODD, Saturation.SATURATE), 0.05, 3),
         "y": Tensor("y", (10,), FixedType(16, True, 6, Rounding.POSITIVE_INF))}
    m, sh = choose_multiplier(0.61)
    ops = (dense_op("fc1", "x", "h", rng.integers(-60, 61, (24, 40)), rng.integers(-500, 500, 40),
                    FixedType(8, True, 6), 7),
           requant_op("rq1", "h", "r", rng.integers(-3000, 3000, 40), sh + 3, m, relu=False, scale=8),
           Op("join", "add", ("h", "r"), ("s",), {"relu": False, "shift_a": 0, "shift_b": 0, "shift": 1}),
           requant_op("rq2", "s", "q", rng.integers(-40, 40, 40), 1, 5, relu=True),
            dense_op("fc2", "q", "y", rng.integers(-90, 91, (40, 10)), rng.integers(-900, 900, 10),
                     FixedType(8, True, 5), 1))
    return Graph("mixed", t, ops, ("x",), ("y",)).validate()


@pytest.fixture(scope="module")
def mixed():
    return aieflow.compile(_mixed_graph(), device="ve2802", batch=5, measure=False, layers={"rq2": {"cas_num": 2}})


def test_mixed_design_emulators_agree_and_the_checker_accepts_it(mixed, tmp_path):
    assert [l.op.kind for l in mixed.layers] == ["dense", "requant", "add", "requant", "dense"]
    assert mixed.layer("rq2").config.cas_num == 2
    assert check.violations(mixed) == []
    g = mixed.graph
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (23, 24))
    x[0], x[1] = 127, -128
    want = evaluate(g, x)["y"]
    np.testing.assert_array_equal(mixed.simulate(x, raw=True, fast=False), want)
    np.testing.assert_array_equal(mixed.simulate(x, raw=True, fast=True), want)
    back = aieflow.load(mixed.write(tmp_path / "proj"))
    np.testing.assert_array_equal(back.simulate(x, raw=True, fast=False), want)
    assert [l.config for l in back.layers] == [l.config for l in mixed.layers]


@pytest.mark.skipif(GXX is None, reason="needs g++")
def test_mixed_project_on_the_host_equals_the_emulator(mixed, tmp_path):
    proj = mixed.write(tmp_path / "proj")
    files = emit.render_project(mixed)
    assert "src/kernels/aieflow_requant.h" in files and "src/params/rq1.h" in files
    x = np.random.default_rng(5).integers(-128, 128, (2 * mixed.batch + 1, 24))
    np.testing.assert_array_equal(host_run.run_host(mixed, proj, x), mixed.simulate(x, raw=True, fast=False))


# --- the kernels on the host --------------------------------------------------------------------------------


# (bits, signed, zero point, multiplier kind, relu, scale, bias magnitude, saturation or None for the rotation)
CHAIN = [
    (8, True, 0, "one", False, 4, 300, None),
    (6, True, -3, "ratio", True, 1, 50, None),
    (8, False, 128, "tie", False, 2, 20, None),
    (16, True, 0, "left", False, 1, 10, None),
    (16, True, 0, "one", True, 1, 1 << 40, None),  # acc64: the bias is far beyond 32 bits
    (12, True, -100, "ratio", False, 16, 5000, None),
    (8, True, 0, "big", False, 1, 100, None),  # acc64: a shift past acc32's SRS
    (4, False, 2, "tie", True, 8, 30, Saturation.NONE),
    (8, True, 5, "left", True, 1, 3, Saturation.SYMMETRIC),
    (7, False, 0, "ratio", False, 2, 64, Saturation.NONE),
    (16, True, 1000, "ratio", True, 64, 100000, Saturation.NONE),
    (8, False, 0, "one", False, 1, 1000, Saturation.SATURATE),
    (5, True, 0, "tie", False, 4, 10, None),
]


def _chain_graph(n: int, seed: int) -> Graph:
    """A chain of requant ops, op i producing CHAIN[i]'s type with rounding mode i of the ten."""
    rng = np.random.default_rng(seed)
    cur, cur_t = "x", FixedType(8, True, 0)
    tensors = {"x": Tensor("x", (n,), cur_t)}
    ops = []
    for i, (bits, signed, zp, mult, relu, scale, blim, sat) in enumerate(CHAIN):
        saturation = sat or SATURATIONS[i % 3]
        if saturation is Saturation.SYMMETRIC and not signed:
            saturation = Saturation.SATURATE
        y_t = FixedType(bits, signed, 0, ROUNDINGS[i % len(ROUNDINGS)], saturation)
        bias = rng.integers(-blim, blim + 1, n)
        typical = max(1.0, (cur_t.magnitude * scale + blim) / 2)
        target = 2.0 ** (bits - 1)
        if mult == "ratio":
            m, shift = choose_multiplier(target / typical * float(rng.uniform(0.8, 1.6)))
        elif mult == "tie":
            m = int(rng.choice([3, 5, 7]))
            shift = max(1, int(np.round(np.log2(typical * m / target))))
        elif mult == "left":
            m, shift = 1, -int(rng.integers(1, 3))
        elif mult == "big":
            m, shift = 1, 34
            bias = rng.integers(-(1 << 41), 1 << 41, n)
        else:
            m, shift = 1, max(0, int(np.round(np.log2(typical / target))))
        y = f"t{i}"
        tensors[y] = Tensor(y, (n,), y_t, zero_point=zp)
        ops.append(requant_op(f"r{i}", cur, y, bias, shift, m, relu, scale))
        cur, cur_t = y, y_t
    return Graph("chain", tensors, tuple(ops), ("x",), (cur,)).validate()


def _driver(design, rng) -> tuple[str, str, np.ndarray, dict]:
    """C++ running every requant kernel on random inputs over its input type's whole range, and what the
    emulator's kernel arithmetic (requant.kernel_requant) says each gives."""
    includes, lines, feed, want = [], [], [], []
    stats = {"ties": 0, "saturated": 0}
    for layer in design.layers:
        cfg, op = layer.config, layer.op
        ns = emit.c_identifier(op.name)
        x_t = design.graph.tensors[op.inputs[0]].type
        y = design.graph.tensors[op.outputs[0]]
        includes += [f'#include "kernels/{ns}.h"', f'#include "params/{ns}.h"']
        scale, m, shift = int(op.attrs.get("scale", 1)), int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"])
        for c in range(cfg.cas_num):
            x = rng.integers(x_t.qmin, x_t.qmax + 1, cfg.batch * cfg.n_tile)
            x[: cfg.n_tile], x[cfg.n_tile: 2 * cfg.n_tile] = x_t.qmax, x_t.qmin
            feed.append(x)
            bias = layer.packed["bias"][c]
            want.append(requant.kernel_requant(cfg, x, bias, scale, m, shift, y.zero_point, y.type,
                                               bool(op.attrs["relu"])))
            sums = (x.reshape(cfg.batch, cfg.n_tile) * scale + bias.astype(np.int64)[None, :]) * m
            if shift > 0:
                stats["ties"] += int(np.sum((sums & ((1 << shift) - 1)) == (1 << (shift - 1))))
            r = round_shift(sums, shift, y.type.rounding) + y.zero_point
            stats["saturated"] += int(np.sum((r < y.type.qmin) | (r > y.type.qmax)))
            lines += ["    {", f"        using L = {ns}::layer;",
                      "        static L::in_t x[L::B * L::NT];", "        read_into(x);",
                      "        static L::bias_t b[L::NT];", f"        std::memcpy(b, {ns}_c{c}_bias, sizeof b);",
                      "        static L::out_t y[L::B * L::NT];",
                      "        adf::input_buffer<L::in_t> in{x};", "        adf::output_buffer<L::out_t> out{y};",
                      f"        {ns}::single k{{b}};", "        k.run(in, out);",
                      "        for (auto v : y) std::printf(\"%lld\\n\", (long long)v);", "    }"]
    read_into = ("template <typename T, unsigned N> void read_into(T (&x)[N])\n"
                 "{\n    for (auto& v : x) { long long t; if (std::scanf(\"%lld\", &t) != 1) std::abort(); v = T(t); }\n}")
    main = "\n".join(["#include <cstdio>", "#include <cstdlib>", "#include <cstring>", *includes, read_into,
                      "int main() {", *lines, "    return 0;", "}"])
    return main, "\n".join(str(int(v)) for v in np.concatenate(feed)) + "\n", np.concatenate(want), stats


@pytest.mark.skipif(GXX is None, reason="needs g++")
def test_requant_kernels_on_the_host_equal_the_emulator(tmp_path):
    graph = _chain_graph(40, seed=1)
    design = aieflow.compile(graph, device="ve2802", batch=3, measure=False,
                             layers={"r1": {"cas_num": 2}, "r4": {"cas_num": 3}})
    configs = [l.config for l in design.layers]
    assert {c.acc_bits for c in configs} == {32, 64} and max(c.cas_num for c in configs) == 3
    types = [graph.tensors[op.outputs[0]].type for op in graph.ops]
    assert {t.rounding for t in types} == set(Rounding) and {t.saturation for t in types} == set(Saturation)
    assert any(op.attrs["shift"] < 0 for op in graph.ops) and any(op.attrs.get("multiplier", 1) != 1 for op in graph.ops)
    proj = design.write(tmp_path / "proj")
    main, feed, want, stats = _driver(design, np.random.default_rng(2))
    (proj / "driver.cpp").write_text(main)
    kernels = sorted(str(p.relative_to(proj)) for p in proj.glob("src/kernels/*.cpp"))
    done = subprocess.run([GXX, "-std=c++20", "-Wall", "-Werror", "-O1", "-I", str(include_dir()), "-I", "src",
                           "-I", "src/kernels", "driver.cpp", *kernels, "-o", "driver"], cwd=proj,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    run = subprocess.run([str(proj / "driver")], input=feed, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_array_equal(np.array([int(v) for v in run.stdout.split()]), want)
    assert stats["ties"] > 20 and stats["saturated"] > 20, stats
    # and the whole chain through the project's own wiring
    x = np.random.default_rng(6).integers(-128, 128, (7, 40))
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), design.simulate(x, raw=True, fast=False))
    np.testing.assert_array_equal(design.simulate(x, raw=True, fast=True), evaluate(graph, x)[graph.outputs[0]])


# --- frontends ----------------------------------------------------------------------------------------------


def test_qonnx_requantization_is_a_requant_op_on_far_fewer_tiles():
    pytest.importorskip("qonnx")
    from onnx import TensorProto, helper

    from aieflow.examples.qonnx import DOMAIN
    from aieflow.frontends.qonnx import import_qonnx

    n = 512

    def quant(x, out, scale, bits, signed, mode):
        return (helper.make_node("Quant", [x, f"{out}_s", f"{out}_z", f"{out}_b"], [out], domain=DOMAIN, name=out,
                                 signed=signed, narrow=0, rounding_mode=mode),
                [helper.make_tensor(f"{out}_s", TensorProto.FLOAT, [], [scale]),
                 helper.make_tensor(f"{out}_z", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor(f"{out}_b", TensorProto.FLOAT, [], [bits])])

    n1, i1 = quant("x", "qx", 2.0 ** -4, 8.0, 1, "ROUND")
    n2, i2 = quant("qx", "qy", 2.0 ** -2, 5.0, 1, "HALF_UP")
    g = helper.make_graph([n1, n2], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("qy", TensorProto.FLOAT, [1, n])], i1 + i2)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 2)])
    model.ir_version = 8
    imported = import_qonnx(model)
    graph = imported.graph
    assert [op.kind for op in graph.ops] == ["requant"] and graph.ops[0].attrs["shift"] == 2
    new = aieflow.compile(graph, measure=False)
    old = aieflow.compile(_as_identity_dense(graph), measure=False)
    assert len(new.tiles) * 8 <= len(old.tiles), (len(new.tiles), len(old.tiles))
    x = (np.random.default_rng(0).integers(-300, 300, (16, n)) / 32.0).astype(np.float32)
    ref = imported.reference(x)
    q = ref[graph.inputs[0]]
    np.testing.assert_array_equal(new.simulate(q, raw=True), ref[graph.outputs[0]])
    np.testing.assert_array_equal(old.simulate(q, raw=True), ref[graph.outputs[0]])
