"""The add family (residual joins): its arithmetic against plain integers in every rounding and saturation
mode, its configurations, the ONNX rule, random residual graphs bit for bit against onnxruntime, and its
C++ (parsed by g++ and run on the host against the host headers of aieflow.host)."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pytest

import aieflow
import aieflow.emit as emit
from aieflow.design import Layer
from aieflow.devices import get_device
from aieflow.errors import ModelError, NumericsError
from aieflow.examples.onnx_qdq import run_onnxruntime, sample_inputs
from aieflow.examples.graphs import MAX_FRAC_GAP, qdq_graph
from aieflow.frontends import onnx_add_rule, onnx_qdq
from aieflow.host import include_dir
from aieflow.ir import Graph, Op, Tensor
from aieflow.mapping import check
from aieflow.numerics import FixedType, Rounding, Saturation
from aieflow.ops import add, family
from aieflow.ops.base import kernel_id, port
from test_dense import _reference_round
from test_emit import GXX, _gxx

MODES = [(r, s) for r in Rounding for s in Saturation]
VE2802 = get_device("ve2802")


@pytest.fixture(scope="module", autouse=True)
def add_rules():
    """The residual-join rules wired into the QDQ frontend, as onnx_qdq does once it imports them.

    Wrapping rules that already handle PendingAdd is harmless: the outer wrapper answers first."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_qdq, "RULES", {**onnx_qdq.RULES, **onnx_add_rule.rules(onnx_qdq.RULES)})
        yield


# --- the arithmetic ----------------------------------------------------------------------------------------


def _graph(features: int, ta: FixedType, tb: FixedType, ty: FixedType, relu: bool) -> Graph:
    """y = a + b with the shifts the frontend derives from the three types."""
    common = max(ta.frac, tb.frac)
    op = Op("join", "add", ("a", "b"), ("y",),
            {"relu": relu, "shift_a": common - ta.frac, "shift_b": common - tb.frac, "shift": common - ty.frac})
    tensors = {"a": Tensor("a", (features,), ta), "b": Tensor("b", (features,), tb), "y": Tensor("y", (features,), ty)}
    return Graph("g", tensors, (op,), ("a",), ("y",))


def _reference(a, b, op: Op, out: FixedType) -> np.ndarray:
    """Python ints and Fractions, written from numerics.md, independently of numerics.py."""
    res = np.zeros(a.shape, dtype=np.int64)
    for idx in np.ndindex(a.shape):
        v = (int(a[idx]) << op.attrs["shift_a"]) + (int(b[idx]) << op.attrs["shift_b"])
        r = _reference_round(Fraction(v) / Fraction(2) ** op.attrs["shift"], out.rounding)
        if out.saturation is Saturation.SATURATE:
            r = min(max(r, out.qmin), out.qmax)
        elif out.saturation is Saturation.SYMMETRIC:
            r = min(max(r, out.qmin + 1 if out.signed else out.qmin), out.qmax)
        else:
            r = (r - out.qmin) % (1 << out.bits) + out.qmin
        res[idx] = max(r, 0) if op.attrs["relu"] else r
    return res


def _emulate(graph: Graph, cfg: add.Config, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The family's emulate on streams cut as the memory tiles cut them: row-major, zero-padded per kernel."""
    op = graph.ops[0]
    batch, features = a.shape
    pad = np.zeros((cfg.batch, cfg.n_pad), dtype=np.int64)
    inputs = {}
    for p, x in enumerate((a, b)):
        full = pad.copy()
        full[:batch, :features] = x
        for s in add.input_slices(op, cfg, p):
            (peer,) = s.peers
            inputs[peer] = full[:, s.lo:s.hi].ravel()
    streams = add.emulate(Layer(op, cfg, add.pack(op, cfg)), graph, inputs)
    y = np.zeros((cfg.batch, cfg.n_pad), dtype=np.int64)
    for s in add.output_slices(op, cfg):
        y[:, s.lo:s.hi] = streams[s.peers[0]].reshape(cfg.batch, s.width)
    return y[:batch, :features]


def _draw(t: FixedType, shape, rng) -> np.ndarray:
    x = rng.integers(t.qmin, t.qmax, size=shape, endpoint=True)
    x.flat[:2] = (t.qmin, t.qmax)
    return x


def _place_ties(a, b, op: Op, ta: FixedType, tb: FixedType) -> int:
    """Make row 0 exact ties of the output's SRS, of both signs, next to odd and even integers; return how
    many. A tie is an aligned sum of an odd multiple of 2**(shift - 1): put it in the input whose upshift
    leaves room, and zeros in the other."""
    shift = op.attrs["shift"]
    for x, y, t, up in ((a, b, ta, op.attrs["shift_a"]), (b, a, tb, op.attrs["shift_b"])):
        if shift < 1 or shift - 1 < up:
            continue
        unit = 1 << (shift - 1 - up)
        odd = [k for k in (1, -1, 3, -3, 5, -5) if t.qmin <= k * unit <= t.qmax]
        n = min(len(odd), x.shape[1])
        if n < 2 or not any(k < 0 for k in odd[:n]):
            continue
        x[0, :n] = np.array(odd[:n]) * unit
        y[0, :n] = 0
        return n
    return 0


# (a type, b type, output storage, output frac): fracs differ between a and b; shifts of both signs.
TYPE_CASES = [
    (FixedType(8, True, 5), FixedType(8, True, 3), (8, True), 2),       # shift 3
    (FixedType(8, False, 2), FixedType(8, True, 6), (8, True), 9),      # shift -3
    (FixedType(16, True, 4), FixedType(8, True, 9), (16, True), 7),     # mixed widths, shift 2
    (FixedType(8, True, 0), FixedType(16, True, 1), (8, False), -4),    # shift 5, unsigned output
    (FixedType(16, True, 10), FixedType(16, True, 12), (16, True), 30),  # shift -18 (left shift past 16 bits)
    (FixedType(8, False, 7), FixedType(8, False, 7), (16, True), 7),    # equal fracs, shift 0
]


@pytest.mark.parametrize("rounding,saturation", MODES)
def test_emulate_matches_integer_reference(rounding, saturation):
    rng = np.random.default_rng(list(Rounding).index(rounding) * 3 + list(Saturation).index(saturation))
    ties = 0
    for i, (ta, tb, (bits, signed), frac) in enumerate(TYPE_CASES):
        ty = FixedType(bits, signed, frac, rounding, saturation)
        features, batch = int(rng.integers(6, 70)), int(rng.integers(1, 6))
        graph = _graph(features, ta, tb, ty, relu=bool(i % 2))
        op = graph.ops[0]
        add.check_numerics(op, graph, VE2802)
        a, b = _draw(ta, (batch, features), rng), _draw(tb, (batch, features), rng)
        ties += _place_ties(a, b, op, ta, tb)
        want = _reference(a, b, op, ty)
        for cfg in add.candidates(op, graph, VE2802, batch):
            np.testing.assert_array_equal(_emulate(graph, cfg, a, b), want, err_msg=f"case {i}, {cfg}")
    # every case with a right shift met six ties, of both signs
    assert ties == 6 * sum(max(ta.frac, tb.frac) > frac for ta, tb, _, frac in TYPE_CASES)


def test_candidates_cover_the_features_with_real_work():
    t = FixedType(16, True, 0)
    for features in (1, 15, 16, 17, 100, 512, 1000):
        graph = _graph(features, t, t, t, False)
        cands = add.candidates(graph.ops[0], graph, VE2802, 8)
        # One kernel holds 6 buffers of B x Nt 16-bit values in 4 banks of 16 KB: 1000 features need two.
        assert cands and cands[0].tiles == (1 if features <= 512 else 2)
        assert [c.tiles for c in cands] == sorted(c.tiles for c in cands)
        for c in cands:
            assert c.cas_length == 1 and 1 <= c.cas_num <= VE2802.rows
            assert c.n_tile % c.lanes == 0 and c.n_pad >= features > (c.cas_num - 1) * c.n_tile
            assert add.bank_assignment(add.tile_buffers(c, 0, VE2802), VE2802) is not None
            assert add.Config.from_dict(c.to_dict()) == c
            assert add.cycles(c, VE2802) >= VE2802.generation.kernel_call_cycles
    # Large batches: buffers that no longer fit a bank are not proposed.
    graph = _graph(4096, t, t, t, False)
    assert add.candidates(graph.ops[0], graph, VE2802, 64) == []


def test_check_numerics_refuses_what_the_kernel_cannot_do():
    i8, i16 = FixedType(8, True, 0), FixedType(16, True, 0)
    bad = [
        (_graph(4, i16, FixedType(16, True, 17), i16, False), "could overflow"),  # 2**15 << 17 > 2**31
        (_graph(4, FixedType(32, True, 0), i8, i8, False), "full 8- or 16-bit"),
        (_graph(4, i8, i8, FixedType(12, True, 0), False), "full 8- or 16-bit"),
        (_graph(4, i8, i8, FixedType(8, True, -40), False), "shift of 40 bits"),
    ]
    for graph, reason in bad:
        with pytest.raises(NumericsError, match=reason) as e:
            add.check_numerics(graph.ops[0], graph, VE2802)
        assert e.value.node == "join"


# --- the frontend and whole graphs -------------------------------------------------------------------------


def test_frontend_reads_residual_joins():
    model = qdq_graph(2)
    graph = onnx_qdq.load_onnx(model)
    adds = [op for op in graph.ops if op.kind == "add"]
    assert adds
    for op in adds:
        a, b = (graph.tensors[t].type for t in op.inputs)
        y = graph.tensors[op.outputs[0]].type
        common = max(a.frac, b.frac)
        assert 1 <= abs(a.frac - b.frac) <= MAX_FRAC_GAP
        assert (op.attrs["shift_a"], op.attrs["shift_b"], op.attrs["shift"]) == (common - a.frac, common - b.frac,
                                                                                  common - y.frac)


def test_frontend_refuses_adds_of_different_widths():
    model = qdq_graph(2)
    graph = onnx_qdq.load_onnx(model)
    assert graph.tensors[graph.inputs[0]].features != graph.tensors[graph.ops[-1].outputs[0]].features
    add_node = next(n for n in reversed(model.graph.node) if n.op_type == "Add" and n.name.startswith("add"))
    add_node.input[1] = "input_dq"  # the dequantized graph input: another width than the sum's
    with pytest.raises(ModelError, match="broadcasting"):
        onnx_qdq.load_onnx(model)


def test_frontend_refuses_adds_of_unquantized_values():
    model = qdq_graph(2)
    producer = {o: n for n in model.graph.node for o in n.output}
    add_node = next(n for n in model.graph.node if n.op_type == "Add" and n.name.startswith("add"))
    quantize = producer[producer[add_node.input[0]].input[0]]
    add_node.input[0] = quantize.input[0]  # the float sum of the layer before, skipping its QDQ pair
    with pytest.raises(ModelError, match="never quantized"):
        onnx_qdq.load_onnx(model)


def test_generator_is_deterministic_and_varied():
    assert qdq_graph(5).SerializeToString() == qdq_graph(5).SerializeToString()
    assert qdq_graph(5).SerializeToString() != qdq_graph(6).SerializeToString()
    kinds = [onnx_qdq.load_onnx(qdq_graph(s, act_types=("int8", "uint8", "int16"))) for s in range(8)]
    assert sum(any(op.kind == "add" for op in g.ops) for g in kinds) >= 5


GRAPHS = 30


@pytest.mark.parametrize("seed", range(GRAPHS))
def test_residual_graphs_equal_onnxruntime(seed):
    rng = np.random.default_rng(500 + seed)
    act = [{"act_bits": 8}, {"act_bits": 16}, {"act_types": ("int8", "uint8", "int16")}][seed % 3]
    model = qdq_graph(seed, max_layers=int(rng.integers(3, 8)), max_width=int(rng.choice([16, 100, 512])),
                      weight_bits=16 if seed % 5 == 4 else 8, **act)
    # The other objectives split adds over several kernels and hand data directly between them.
    objective = ["resource", "throughput", "latency", "resource"][seed % 4]
    design = aieflow.compile(model, device="ve3858" if seed % 7 == 6 else "ve2802", batch=int(rng.integers(1, 17)),
                             objective=objective)
    x = sample_inputs(model, 40, seed=seed)
    ref = run_onnxruntime(model, x).astype(np.float64)
    y = design.simulate(x)
    diff = np.flatnonzero(y != ref)
    assert diff.size == 0, (f"{diff.size} of {y.size} outputs differ, first at {diff[0]}: "
                            f"{y.flat[diff[0]]} vs {ref.flat[diff[0]]}")


def test_a_residual_design_round_trips_and_passes_the_checker(tmp_path):
    design = aieflow.compile(qdq_graph(2), device="ve2802", batch=5, layers={"add0_sum_Add": {"cas_num": 3}})
    assert design.layer("add0_sum_Add").config.cas_num == 3
    assert check.violations(design) == []
    back = aieflow.load(design.write(tmp_path / "proj"))
    t = design.graph.tensors[design.graph.inputs[0]]
    x = np.random.default_rng(1).integers(t.type.qmin, t.type.qmax, (12, t.features), endpoint=True)
    np.testing.assert_array_equal(back.simulate(x, raw=True), design.simulate(x, raw=True))


# --- the C++ -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub():
    """The packaged host headers (aieflow.host): ADF and the AIE API for g++."""
    return include_dir()


def _driver(design, rng) -> tuple[str, str, np.ndarray]:
    """C++ that runs every add kernel on the host on random inputs, and what the emulator says they give."""
    includes, lines, feed, want = [], [], [], []
    for layer in design.layers:
        if layer.op.kind != "add":
            continue
        ns = emit.c_identifier(layer.op.name)
        cfg, op = layer.config, layer.op
        ta, tb = (design.graph.tensors[t].type for t in op.inputs)
        out = design.graph.tensors[op.outputs[0]].type
        includes.append(f'#include "kernels/{ns}.h"')
        lines.append("    {")
        lines.append(f"        using L = {ns}::layer;")
        lines.append("        static L::a_t a[L::B * L::NT];")
        lines.append("        static L::b_t b[L::B * L::NT];")
        lines.append("        static L::out_t y[L::B * L::NT];")
        for _ in range(cfg.cas_num):
            xa, xb = _draw(ta, cfg.batch * cfg.n_tile, rng), _draw(tb, cfg.batch * cfg.n_tile, rng)
            feed += [xa, xb]
            want.append(add.kernel_add(xa, xb, op.attrs["shift_a"], op.attrs["shift_b"], op.attrs["shift"], out,
                                       op.attrs["relu"]))
            lines += [
                "        {",
                "            read_into(a);",
                "            read_into(b);",
                "            adf::input_buffer<L::a_t> ia{a};",
                "            adf::input_buffer<L::b_t> ib{b};",
                "            adf::output_buffer<L::out_t> o{y};",
                f"            {ns}::single().run(ia, ib, o);",
                "            for (auto v : y) std::printf(\"%lld\\n\", (long long)v);",
                "        }",
            ]
        lines.append("    }")
    read_into = ("template <typename T, unsigned N> void read_into(T (&x)[N])\n"
                 "{\n    for (auto& v : x) { long long t; if (std::scanf(\"%lld\", &t) != 1) std::abort(); v = T(t); }\n}")
    main = "\n".join(["#include <cstdio>", "#include <cstdlib>", *includes, read_into, "int main() {", *lines,
                      "    return 0;", "}"])
    return main, "\n".join(str(int(v)) for v in np.concatenate(feed)) + "\n", np.concatenate(want)


def _with_add_modes(design, shift: int, rounding: Rounding, saturation: Saturation):
    """The same design with every add's output produced by other modes and brought in with another shift."""
    import dataclasses

    adds = {layer.op.outputs[0] for layer in design.layers if layer.op.kind == "add"}
    tensors = {k: dataclasses.replace(t, type=dataclasses.replace(t.type, rounding=rounding, saturation=saturation))
               if k in adds else t for k, t in design.graph.tensors.items()}
    layers = tuple(dataclasses.replace(l, op=dataclasses.replace(l.op, attrs={**l.op.attrs, "shift": shift}))
                   if l.op.kind == "add" else l for l in design.layers)
    return dataclasses.replace(design, graph=dataclasses.replace(design.graph, tensors=tensors), layers=layers)


@pytest.mark.skipif(GXX is None, reason="needs g++")
def test_generated_add_kernels_parse_and_match_the_emulator(stub, tmp_path):
    model = qdq_graph(2, act_types=("int8", "uint8", "int16"))
    base = aieflow.compile(model, device="ve2802", batch=3, layers={"add1_sum_Add": {"cas_num": 3}})
    assert sum(layer.op.kind == "add" for layer in base.layers) >= 2
    root = base.write(tmp_path / "proj")
    sources = ["src/graph.cpp", *sorted(str(p.relative_to(root)) for p in root.glob("src/kernels/*.cpp"))]
    _gxx(["-fsyntax-only", "-I", str(stub), "-I", "src", *sources], root)
    # The kernels on the host, against the emulator's arithmetic, in modes and shifts the model lacks.
    rng = np.random.default_rng(11)
    variants = [base, _with_add_modes(base, 4, Rounding.CONV_ODD, Saturation.SYMMETRIC),
                _with_add_modes(base, -3, Rounding.FLOOR, Saturation.NONE),
                _with_add_modes(base, -20, Rounding.SYMMETRIC_INF, Saturation.SATURATE),
                _with_add_modes(base, 9, Rounding.SYMMETRIC_ZERO, Saturation.NONE)]
    for i, design in enumerate(variants):
        proj = design.write(tmp_path / f"v{i}")
        main, feed, want = _driver(design, rng)
        (proj / "driver.cpp").write_text(main)
        kernels = sorted(f"src/kernels/{emit.c_identifier(l.op.name)}.cpp" for l in design.layers if l.op.kind == "add")
        _gxx(["-O1", "-I", str(stub), "-I", "src", "-I", "src/kernels", "driver.cpp", *kernels, "-o", "driver"], proj)
        run = subprocess.run([str(proj / "driver")], input=feed, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        np.testing.assert_array_equal(np.array([int(v) for v in run.stdout.split()]), want, err_msg=f"variant {i}")


def test_ports_and_slices_name_the_kernels():
    t = FixedType(8, True, 0)
    graph = _graph(40, t, t, t, False)
    op = graph.ops[0]
    cfg = next(c for c in add.candidates(op, graph, VE2802, 4) if c.cas_num == 2)
    assert [s.peers for s in add.input_slices(op, cfg, 1)] == [(port(kernel_id("join", c, 0), 1),) for c in range(2)]
    assert [s.layout for s in add.output_slices(op, cfg)] == [(0, 32, 1, 32), (32, 64, 1, 32)]
    assert family("add") is add
