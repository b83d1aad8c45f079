"""The emitted kernels' requantization (dense.h requantize) on the host, bit for bit against the emulator.

Layers built directly as IR graphs cover what numerics.requantize adds to the plain SRS: integer
multipliers (numerics.choose_multiplier on random real ratios, and small odd multipliers with small shifts,
which make ties frequent), output zero points (uint8 at 128, int8 and int16 negative ones), ReLU at the
zero point, output types narrower than their storage (2 to 8 bits in int8/uint8, 9 to 16 in int16) in all
three saturation modes, every rounding mode, negative shifts, 8- and 16-bit containers and both
accumulators (acc32, and acc64 for 16 x 16). Two designs of many layers each keep the g++ builds few:
  - the kernels alone: every layer's kernels fed random inputs over its input type's whole range (a driver
    like test_emit's), against dense.kernel_partial / kernel_finish;
  - the whole project (aieflow.host.run) end to end, against design.simulate(raw) in both emulators.
Designs without a requantizing layer get exactly the files they always got (checked on a plain design).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import aieflow
import aieflow.emit as emit
from aieflow.host import include_dir
from aieflow.host import run as host_run
from aieflow.ir import Graph, Op, Tensor
from aieflow.numerics import FixedType, Rounding, Saturation, choose_multiplier, round_shift
from aieflow.ops import dense
from aieflow.ops.dense.emit import finish_vector_ops, requantizes

GXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(GXX is None, reason="needs g++")

ROUNDINGS = list(Rounding)
SATURATIONS = list(Saturation)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One layer: output storage/bits/signedness, zero point, multiplier kind, ReLU, weight bits, features."""

    bits: int
    signed: bool
    zp: int
    mult: str  # "ratio" (choose_multiplier), "tie" (small odd multiplier, small shift), "one", "left"
    relu: bool
    n: int
    w_bits: int = 8
    sat: Saturation | None = None  # None: the design's rotation of modes


# 8-bit containers: int8 input; outputs of 2..8 bits, signed and unsigned, with and without zero points.
SPECS_8 = [
    Spec(8, False, 128, "ratio", False, 24),
    Spec(8, True, -5, "tie", True, 17),
    Spec(4, True, 0, "one", False, 16),
    Spec(4, False, 8, "ratio", True, 20),
    Spec(2, True, -1, "tie", False, 12),
    Spec(3, False, 0, "ratio", False, 9),
    Spec(6, True, 0, "left", True, 16),
    Spec(5, True, -7, "ratio", False, 31),
    Spec(8, True, -128, "one", True, 16),
    Spec(7, False, 100, "tie", True, 16),
    Spec(8, False, 255, "ratio", False, 15),
    Spec(8, True, 0, "ratio", True, 16),  # a multiplier alone: the storage type's own SRS, no zero point
    Spec(8, True, 3, "left", False, 18),
    Spec(2, False, 1, "one", False, 8),
    Spec(8, False, 0, "ratio", False, 16),
    Spec(3, False, 0, "ratio", True, 16, sat=Saturation.NONE),
    Spec(8, False, 0, "tie", False, 16, sat=Saturation.NONE),
    Spec(8, True, 0, "ratio", False, 16, sat=Saturation.NONE),
    Spec(5, True, -3, "one", False, 16, sat=Saturation.SYMMETRIC),
]
# 16-bit containers: int16 input and outputs of 9..16 bits, int8 and int16 weights (acc32 and acc64), and
# the moves between 8 and 16 bits.
SPECS_16 = [
    Spec(16, True, -1000, "ratio", False, 16, sat=Saturation.SATURATE),
    Spec(12, True, 0, "tie", True, 13, w_bits=16),
    Spec(9, True, -3, "one", False, 16),
    Spec(16, True, 0, "left", True, 16, w_bits=16),
    Spec(13, True, 77, "ratio", True, 19),
    Spec(8, False, 128, "ratio", False, 16),  # int16 in, uint8 out
    Spec(16, True, 300, "tie", False, 16),  # uint8 in, int16 out
    Spec(10, True, -200, "left", False, 21, w_bits=16),
    Spec(15, True, 5, "ratio", True, 16, w_bits=16),
    Spec(14, True, 0, "one", False, 16, w_bits=16),
    Spec(11, True, 0, "ratio", False, 16, sat=Saturation.SATURATE),
    Spec(16, True, 0, "ratio", True, 16, sat=Saturation.SATURATE),
    Spec(12, True, -9, "tie", False, 16, sat=Saturation.SYMMETRIC),
    Spec(16, True, 1234, "ratio", False, 16, sat=Saturation.NONE),
]


def _layers(specs: list[Spec], in_type: FixedType, k0: int, seed: int, offset: int) -> Graph:
    """A chain of dense layers, layer i producing spec i's type; rounding mode (i + offset) of the ten and
    saturation mode (i + offset) of the three. Weights and shifts put the typical output near the top of
    its range, so some sums saturate and most do not; "tie" layers shift by 1 to 3 bits, so ties are many."""
    rng = np.random.default_rng(seed)
    tensors = {"x": Tensor("x", (k0,), in_type)}
    ops = []
    cur, cur_t, k = "x", in_type, k0
    for i, s in enumerate(specs):
        rounding = ROUNDINGS[(i + offset) % len(ROUNDINGS)]
        saturation = s.sat or SATURATIONS[(i + offset) % len(SATURATIONS)]
        if saturation is Saturation.SYMMETRIC and not s.signed:
            saturation = Saturation.SATURATE  # symmetric saturation is for signed types (UG1529)
        y_t = FixedType(s.bits, s.signed, 0, rounding, saturation)
        w_lim = 1000 if s.w_bits == 16 else 127
        w = rng.integers(-w_lim, w_lim, (k, s.n), endpoint=True)
        xmag = cur_t.magnitude
        acc_typ = max(1.0, xmag * w_lim * np.sqrt(k) / 3)
        b = rng.integers(-int(acc_typ), int(acc_typ) + 1, s.n)
        target = 2.0 ** (s.bits - 1) * float(rng.choice([0.7, 1.5, 3.0]))
        attrs = {"relu": s.relu, "weight_type": FixedType(s.w_bits, True, 0)}
        if s.mult == "ratio":
            m, shift = choose_multiplier(target / acc_typ * float(rng.uniform(0.8, 1.25)))
        elif s.mult == "tie":
            m, shift = int(rng.choice([3, 5, 7, 11, 12345])), int(rng.integers(1, 4))
            # keep the values in reach of the output range: shrink the weights instead of the shift
            scale = max(1, int(acc_typ * m / 2**shift / target))
            w, b = w // scale, b // scale
        elif s.mult == "left":
            m, shift = int(rng.choice([1, 3])), -int(rng.integers(1, 4))
            scale = max(1, int(acc_typ * m * 2 ** -shift / target))
            w, b = w // scale, b // scale
        else:
            m, shift = 1, max(0, int(np.round(np.log2(acc_typ / target))))
        if m != 1:
            attrs["multiplier"] = m
        attrs["shift"] = shift
        y = f"t{i + 1}"
        tensors[y] = Tensor(y, (s.n,), y_t, zero_point=s.zp)
        ops.append(Op(f"q{i}", "dense", (cur,), (y,), attrs, {"weight": w, "bias": b}))
        cur, cur_t, k = y, y_t, s.n
    return Graph(f"requant{seed}", tensors, tuple(ops), ("x",), (cur,)).validate()


@pytest.fixture(scope="module")
def designs():
    return {
        "8": aieflow.compile(_layers(SPECS_8, FixedType(8, True, 0), 40, seed=1, offset=0), batch=6),
        "8b": aieflow.compile(_layers(SPECS_8, FixedType(8, False, 0), 23, seed=2, offset=5), batch=4),
        "16": aieflow.compile(_layers(SPECS_16, FixedType(16, True, 0), 24, seed=3, offset=2), batch=4),
    }


def test_the_designs_cover_what_requantization_adds(designs):
    layers = [(l, d.graph) for d in designs.values() for l in d.layers]
    types = [g.tensors[l.op.outputs[0]] for l, g in layers]
    assert all(requantizes(l.op, g) for l, g in layers)
    assert {t.type.rounding for t in types} == set(Rounding)
    assert {t.type.saturation for t in types} == set(Saturation)
    narrow = [t.type for t in types if t.type.bits < t.type.storage_bits]
    assert {t.storage_bits for t in narrow} == {8, 16} and {t.saturation for t in narrow} == set(Saturation)
    assert any(t.zero_point == 128 and not t.type.signed for t in types)
    assert any(t.zero_point < 0 and t.type.storage_bits == 8 for t in types)
    assert any(t.zero_point < 0 and t.type.storage_bits == 16 for t in types)
    assert any(l.op.attrs["relu"] and g.tensors[l.op.outputs[0]].zero_point != 0 for l, g in layers)
    assert any(int(l.op.attrs.get("multiplier", 1)) != 1 and l.op.attrs["shift"] < 0 for l, _ in layers)
    assert {l.config.acc_bits for l, _ in layers} == {32, 64}
    # every way requantize() goes: output storage, the wide type or the storage type, mode, narrow or full
    paths = {(t.type.storage, t.zero_point != 0, t.type.saturation, t.type.bits < t.type.storage_bits)
             for t in types}
    for storage in ("int8", "uint8", "int16"):
        for sat in Saturation:
            if storage == "uint8" and sat is Saturation.SYMMETRIC:
                continue
            for wide in (True, False):
                for narrow in (True, False):
                    assert (storage, wide, sat, narrow) in paths or not (wide or narrow), (storage, wide, sat, narrow)


# --- the kernels alone ---------------------------------------------------------------------------------------


def _driver(layer) -> str:
    """C++ running every chain of `layer` stage by stage (cascade queues between stages), inputs from stdin."""
    cfg = layer.config
    ns = emit.c_identifier(layer.op.name)
    lines = [f"void run_{ns}() {{", f"    using L = {ns}::layer;"]
    for c in range(cfg.cas_num):
        lines += ["    {", f"        cascade_words link[{cfg.cas_length}];", "        static L::out_t y[L::B * L::NT];"]
        for s in range(cfg.cas_length):
            role = dense.emit.role(s, cfg.cas_length)
            lines += [f"        static L::in_t x{s}[L::B * L::KT];",
                      f"        for (auto& v : x{s}) {{ long long t; if (std::scanf(\"%lld\", &t) != 1) std::abort(); v = L::in_t(t); }}",
                      f"        static L::w_t w{s}[L::KT * L::NT];",
                      f"        std::memcpy(w{s}, {ns}_c{c}_s{s}_weights, sizeof w{s});",
                      f"        adf::input_buffer<L::in_t> in{s}{{x{s}}};"]
            if role in ("single", "last"):
                lines += ["        static L::bias_t b[L::NT];", f"        std::memcpy(b, {ns}_c{c}_bias, sizeof b);",
                          "        adf::output_buffer<L::out_t> ob{y};", f"        {ns}::{role} k{s}(w{s}, b);"]
            else:
                lines.append(f"        {ns}::{role} k{s}(w{s});")
            if s > 0:
                lines.append(f"        input_cascade<L::acc_tag> ci{s}{{&link[{s - 1}]}};")
            if role in ("first", "middle"):
                lines.append(f"        output_cascade<L::acc_tag> co{s}{{&link[{s}]}};")
            args = {"single": f"in{s}, ob", "first": f"in{s}, &co{s}", "middle": f"in{s}, &ci{s}, &co{s}",
                    "last": f"in{s}, &ci{s}, ob"}[role]
            lines.append(f"        k{s}.run({args});")
        lines += ["        for (auto v : y) std::printf(\"%lld\\n\", (long long)v);", "    }"]
    lines.append("}")
    return "\n".join(lines)


def _kernels_on_host(design, root: Path, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(host output, emulator output, statistics) of every layer's kernels on random full-range inputs."""
    rng = np.random.default_rng(seed)
    includes, bodies, calls, feeds, expected = [], [], [], [], []
    stats = {"ties": 0, "saturated": 0}
    for layer in design.layers:
        cfg, op = layer.config, layer.op
        ns = emit.c_identifier(op.name)
        x_t = design.graph.tensors[op.inputs[0]].type
        y_tensor = design.graph.tensors[op.outputs[0]]
        m, shift = int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"])
        for c in range(cfg.cas_num):
            acc = None
            for s in range(cfg.cas_length):
                x = rng.integers(x_t.qmin, x_t.qmax, cfg.batch * cfg.k_tile, endpoint=True)
                x[: cfg.k_tile] = x_t.qmax  # the extremes: the worst case meets the saturation
                x[cfg.k_tile: 2 * cfg.k_tile] = x_t.qmin
                feeds.append(x)
                acc = dense.kernel_partial(cfg, x, layer.packed["weights"][c, s], acc)
            sums = (acc + layer.packed["bias"][c][None, :]) * m
            if shift > 0:
                stats["ties"] += int(np.sum((sums & ((1 << shift) - 1)) == (1 << (shift - 1))))
            r = round_shift(sums, shift, y_tensor.type.rounding) + y_tensor.zero_point
            stats["saturated"] += int(np.sum((r < y_tensor.type.qmin) | (r > y_tensor.type.qmax)))
            expected.append(dense.kernel_finish(cfg, acc, layer.packed["bias"][c], shift, y_tensor.type,
                                                bool(op.attrs["relu"]), m, y_tensor.zero_point))
        includes += [f'#include "kernels/{ns}.h"', f'#include "params/{ns}.h"']
        bodies.append(_driver(layer))
        calls.append(f"    run_{ns}();")
    main = "\n".join(["#include <cstdio>", "#include <cstdlib>", "#include <cstring>", *includes, *bodies,
                      "int main() {", *calls, "    return 0;", "}"])
    (root / "driver.cpp").write_text(main)
    kernels = sorted(str(p.relative_to(root)) for p in root.glob("src/kernels/*.cpp"))
    done = subprocess.run([GXX, "-std=c++20", "-Wall", "-Werror", "-O1", "-Wno-unused-variable",
                           "-I", str(include_dir()), "-I", "src", "-I", "src/kernels", "driver.cpp", *kernels,
                           "-o", "driver"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    feed = "\n".join(str(int(v)) for v in np.concatenate(feeds)) + "\n"
    run = subprocess.run([str(root / "driver")], input=feed, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return np.array([int(v) for v in run.stdout.split()]), np.concatenate(expected), stats


@pytest.mark.parametrize("which", ["8", "8b", "16"])
def test_kernels_on_the_host_equal_the_emulator(which, designs, tmp_path):
    design = designs[which]
    root = design.write(tmp_path / "proj")
    got, want, stats = _kernels_on_host(design, root, seed={"8": 10, "8b": 11, "16": 12}[which])
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert stats["ties"] > 20 and stats["saturated"] > 20, stats  # the inputs met ties and saturation


# --- the whole project ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["8", "16"])
def test_project_on_the_host_equals_the_emulator(which, designs, tmp_path):
    design = designs[which]
    proj = design.write(tmp_path / "proj")
    g = design.graph
    t_in = g.tensors[g.inputs[0]].type
    rng = np.random.default_rng(5)
    x = rng.integers(t_in.qmin, t_in.qmax, (2 * design.batch + 1, g.tensors[g.inputs[0]].features), endpoint=True)
    x[0], x[1] = t_in.qmax, t_in.qmin
    want = design.simulate(x, raw=True, fast=False)
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), want)
    np.testing.assert_array_equal(design.simulate(x, raw=True, fast=True), want)


# --- what is emitted -----------------------------------------------------------------------------------------


def test_plain_designs_get_the_files_they_always_got(designs, tmp_path):
    """A design without multipliers, zero points or narrow types has no trace of the requantization code."""
    from aieflow.examples.onnx_qdq import qdq_mlp

    plain = aieflow.compile(qdq_mlp([20, 16, 8], seed=2), batch=4)
    files = emit.render_project(plain)
    assert not any(requantizes(l.op, plain.graph) for l in plain.layers)
    assert "requantize" not in files["src/kernels/dense.h"] and "#include <type_traits>" not in files["src/kernels/dense.h"]
    assert all("REQUANT" not in text for rel, text in files.items() if rel.startswith("src/kernels/"))
    rq = emit.render_project(designs["8"])
    assert "inline aie::vector<typename L::out_t, L::LANES> requantize(" in rq["src/kernels/dense.h"]
    # the plain finish is the same text in both, after the requantizing branch
    plain_finish = files["src/kernels/dense.h"].split("finish(const aie::accum")[1].split("// The partial sums")[0]
    rq_finish = rq["src/kernels/dense.h"].split("finish(const aie::accum")[1].split("// The partial sums")[0]
    assert rq_finish.replace("    if constexpr (L::REQUANT) {\n        return requantize<L>(sums);\n    }\n", "") == plain_finish


def test_layer_constants_are_the_designs(designs):
    files = emit.render_project(designs["8"])
    g = designs["8"].graph
    for layer in designs["8"].layers:
        text = files[f"src/kernels/{emit.c_identifier(layer.op.name)}.h"]
        y = g.tensors[layer.op.outputs[0]]
        assert f"MULTIPLIER = {int(layer.op.attrs.get('multiplier', 1))};" in text
        assert f"ZERO_POINT = {y.zero_point};" in text and f"BITS = {y.type.bits};" in text
        assert f"WRAP = {'true' if y.type.saturation is Saturation.NONE else 'false'};" in text
        assert finish_vector_ops(layer.op, g, layer.config.acc_bits) == layer.config.finish_ops


def test_cycle_model_charges_the_extra_finish(designs):
    layer = designs["16"].layers[0]
    ops = finish_vector_ops(layer.op, designs["16"].graph, layer.config.acc_bits)
    assert ops > 0 and layer.config.finish_ops == ops  # the mapping's candidates carry the count
    base = dense.cycle_terms(layer.config, designs["16"].device, finish_ops=0)
    more = dense.cycle_terms(layer.config, designs["16"].device)
    assert more["per block"] >= base["per block"] and set(more) == set(base)
    assert more == dense.cycle_terms(layer.config, designs["16"].device, finish_ops=ops)
