"""The emitted Vitis project: complete, deterministic, written atomically, and saying what the design says.

No AMD tool runs here. What can be checked without one is checked: every file is there; two writes are
byte-identical; the graph pins each kernel to the design's tile and chains its cascades; the parameter
headers hold exactly the packed integers; the golden output is the emulator's output on the sample input;
a failed write leaves nothing behind. The C++ is compiled with g++ against aieflow's host model of ADF
and the AIE API (aieflow.host's headers): the graph and the kernels must parse, and the kernels, run on the host with its
reference semantics, must produce what the emulator's kernel functions produce, with as many vector loads
as their register blocking (dense.loop_blocking) says.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import aieflow
import aieflow.emit as emit
from aieflow.examples.onnx_qdq import jet_tagger, qdq_mlp
from aieflow.numerics import FixedType, Rounding, Saturation, saturate, srs
from aieflow.ops import dense
from aieflow.host import include_dir
from aieflow.ops.dense.emit import left_upshift

GXX = shutil.which("g++")


# --- designs -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jet():
    return aieflow.compile(jet_tagger(), device="ve2802", batch=8)


@pytest.fixture(scope="module")
def cascaded():
    """Cascades (4 stages x 2 chains), 16-bit activations and weights, a 64-bit accumulator."""
    return aieflow.compile(qdq_mlp([300, 200, 17], act_bits=16, weight_bits=16, seed=1), device="ve2802", batch=4)


@pytest.fixture(scope="module")
def left_shift():
    """A first layer whose shift is negative (output frac above the accumulator's), odd batch."""
    model = qdq_mlp([40, 24, 10], fracs=[4, 12, 13], weight_fracs=[6, 6], seed=3)
    design = aieflow.compile(model, device="ve2802", batch=5)
    assert design.layers[0].op.attrs["shift"] < 0
    return design


@pytest.fixture(scope="module")
def odd_names():
    """Layer names that are no C++ identifiers (and one a keyword): the emitter must make them into some."""
    from aieflow.frontends.onnx_qdq import load_onnx

    graph = load_onnx(qdq_mlp([20, 30, 12, 6], seed=2))
    names = ["dense/0.Gemm", "class", "2nd layer"]
    ops = tuple(dataclasses.replace(op, name=n) for op, n in zip(graph.ops, names))
    return aieflow.compile(dataclasses.replace(graph, ops=ops), device="ve2802", batch=8)


def _write(design, tmp_path, name="proj") -> Path:
    return design.write(tmp_path / name)


def _with_modes(design, rounding: Rounding, saturation: Saturation):
    """The same design with every layer output brought into its type by other rounding/saturation modes."""
    def retype(t):
        return dataclasses.replace(t, type=dataclasses.replace(t.type, rounding=rounding, saturation=saturation))

    graph = design.graph
    tensors = {k: (t if k == graph.inputs[0] else retype(t)) for k, t in graph.tensors.items()}
    return dataclasses.replace(design, graph=dataclasses.replace(graph, tensors=tensors))


# --- the files ---------------------------------------------------------------------------------------------


def test_every_expected_file_is_written(jet, tmp_path):
    root = _write(jet, tmp_path)
    names = [emit.c_identifier(l.op.name) for l in jet.layers]
    expected = {"design.json", "aieflow-manifest.json", "Makefile", "aie.cfg", "README.md", "src/graph.h", "src/graph.cpp",
                "src/kernels/dense.h", "data/in_0.txt", "data/golden_out_0.txt"}
    for ns in names:
        expected |= {f"src/kernels/{ns}.h", f"src/kernels/{ns}.cpp", f"src/params/{ns}.h"}
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert written == expected
    assert aieflow.load(root).to_json() == jet.to_json() == (root / "design.json").read_text()


def test_writing_twice_gives_identical_trees(cascaded, tmp_path):
    a, b = _write(cascaded, tmp_path, "a"), _write(cascaded, tmp_path, "b")
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    _write(cascaded, tmp_path, "a")  # replacing a project gives the same bytes again
    assert all((a / rel).read_bytes() == (b / rel).read_bytes() for rel in files_a)


def test_no_template_placeholder_is_left(cascaded):
    for rel, text in emit.render_project(cascaded).items():
        # (C++ has "{{" of its own, in nested initializers, but never "{{ name" nor "{%" nor "{#")
        assert not re.search(r"\{\{\s*[A-Za-z_]|\{%|\{#", text), rel
        if rel.endswith((".h", ".cpp")):
            code = re.sub(r"//[^\n]*|\"[^\"\n]*\"", "", text)  # comments and strings may hold anything
            for open_, close in ("{}", "()", "[]"):
                assert code.count(open_) == code.count(close), (rel, open_)


# --- the graph ---------------------------------------------------------------------------------------------

_LOCATION = re.compile(r"adf::location<adf::kernel>\((\w+)\) = adf::tile\((\d+), (\d+)\);")
_CASCADE = re.compile(r"// cascade: [^\n]*\n\s*adf::connect\((\w+)\.out\[0\], (\w+)\.in\[1\]\);")


@pytest.mark.parametrize("which", ["jet", "cascaded", "left_shift", "odd_names"])
def test_one_location_per_kernel_at_the_designs_tile(which, request):
    design = request.getfixturevalue(which)
    graph = emit.render_project(design)["src/graph.h"]
    found = [(k, int(c), int(r)) for k, c, r in _LOCATION.findall(graph)]
    want = [(f"{emit.c_identifier(t.layer)}_c{t.chain}_s{t.stage}", t.col, t.row) for t in design.tiles]
    assert found == want
    if which == "odd_names":
        assert [k for k, _, _ in found] == ["dense_0_Gemm_c0_s0", "class__c0_s0", "n2nd_layer_c0_s0"]


@pytest.mark.parametrize("which", ["jet", "cascaded"])
def test_one_cascade_per_adjacent_stage_pair(which, request):
    design = request.getfixturevalue(which)
    graph = emit.render_project(design)["src/graph.h"]
    want = []
    for layer in design.layers:
        ns = emit.c_identifier(layer.op.name)
        for c in range(layer.config.cas_num):
            want += [(f"{ns}_c{c}_s{s}", f"{ns}_c{c}_s{s + 1}") for s in range(layer.config.cas_length - 1)]
    assert _CASCADE.findall(graph) == want
    kernels = {f"{emit.c_identifier(t.layer)}_c{t.chain}_s{t.stage}" for t in design.tiles}
    # a kernel's in[1] is its cascade input: nothing else connects to it
    assert sorted(k for k in re.findall(r"(\w+)\.in\[1\]", graph) if k in kernels) == sorted(k for _, k in want)
    assert all(k in kernels for pair in want for k in pair)
    assert (len(want) > 0) == (which == "cascaded")


def test_bank_constraints_follow_the_bank_plan(cascaded):
    graph = emit.render_project(cascaded)["src/graph.h"]
    for t in cascaded.tiles:
        k = f"{emit.c_identifier(t.layer)}_c{t.chain}_s{t.stage}"
        bank = {b.name: b.bank for b in t.buffers}
        assert f"adf::location<adf::stack>({k}) = adf::bank({t.col}, {t.row}, {bank['stack']});" in graph
        assert f"adf::location<adf::parameter>({k}.param[0]) = adf::bank({t.col}, {t.row}, {bank['weights']});" in graph
        ping_pong = f"{{adf::bank({t.col}, {t.row}, {bank['in_ping']}), adf::bank({t.col}, {t.row}, {bank['in_pong']})}}"
        assert f"adf::location<adf::buffer>({k}.in[0]) = {ping_pong};" in graph
        assert ("bias" in bank) == (f"{k}.param[1])" in graph) == (f"{k}.out[0]) = {{adf::bank" in graph)


def test_memtile_buffers_carry_the_designs_tilings(cascaded):
    graph = emit.render_project(cascaded)["src/graph.h"]
    for m in cascaded.memtile_buffers:
        dims = ", ".join(map(str, m.dims))
        assert f"{m.name} = adf::shared_buffer<{m.storage}>::create({{{dims}}}, {len(m.writers)}, {len(m.readers)});" in graph
        assert f"adf::location<adf::buffer>({m.name}) = adf::address({m.col}, {m.row}, " in graph
        for i, a in enumerate(m.readers):
            t = a.tiling
            assert f"adf::read_access({m.name}.out[{i}]) = {emit._tiling(t)};" in graph
            assert f".tiling_dimension = {{{', '.join(map(str, t.tiling_dimension))}}}" in emit._tiling(t)
            for peer in a.peers:  # a read port broadcasts to every kernel of its stage
                target = f"{peer}.in[0]" if peer not in ("out_0",) else "out_0.in[0]"
                assert f"adf::connect({m.name}.out[{i}], {target});" in graph
        for i, a in enumerate(m.writers):
            assert f"adf::write_access({m.name}.in[{i}]) = {emit._tiling(a.tiling)};" in graph


def test_plio_and_main(jet):
    files = emit.render_project(jet)
    graph, main = files["src/graph.h"], files["src/graph.cpp"]
    assert 'adf::input_plio::create("in_0", adf::plio_128_bits, "data/in_0.txt")' in graph
    assert 'adf::output_plio::create("out_0", adf::plio_128_bits, "data/out_0.txt")' in graph
    assert "#if defined(__AIESIM__) || defined(__X86SIM__)" in main
    assert f"aieflow_top.run({emit.iterations(jet)});" in main


def test_makefile_and_config(jet):
    files = emit.render_project(jet)
    make, cfg = files["Makefile"], files["aie.cfg"]
    assert f"PLATFORM ?= {jet.device.platform}\n" in make
    for target in ("aie", "x86sim", "aiesim", "check", "clean"):
        assert re.search(rf"^{target}:", make, re.M), target
    assert "v++ -c --mode aie --target hw --platform $(PLATFORM)" in make.replace("$(VPP)", "v++")
    assert "--config aie.cfg" in make and "x86simulator --pkg-dir=" in make and "aiesimulator --pkg-dir=" in make
    commands = [line for line in make.splitlines()
                if not line.startswith("#") and re.search(r"\$\(VPP\) -c|simulator --pkg-dir|rm -rf", line)]
    assert len(commands) == 5 and all(line.startswith("\t") for line in commands)  # recipes need a tab
    assert f"stacksize={jet.device.generation.stack_bytes}\n" in cfg and "[aie]" in cfg
    readme = files["README.md"]
    assert "without running any AMD tool" in readme
    for layer in jet.layers:
        assert f"| {layer.op.name} | {layer.config.in_features} | {layer.config.out_features} |" in readme


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_check_tolerates_timestamps(jet, tmp_path):
    root = _write(jet, tmp_path)
    golden = (root / "data/golden_out_0.txt").read_text().splitlines()
    out = root / "aiesimulator_output/data/out_0.txt"
    out.parent.mkdir(parents=True)
    # The AI Engine simulator interleaves timestamps and TLAST markers with the data lines.
    out.write_text("".join(f"T {100 * i} ns\n{line}\n" + ("TLAST\n" if i == len(golden) - 1 else "")
                           for i, line in enumerate(golden)))
    ok = subprocess.run(["make", "-s", "check", "SIM=aiesim"], cwd=root, capture_output=True, text=True)
    assert ok.returncode == 0 and "PASS" in ok.stdout, ok.stdout + ok.stderr
    out.write_text(out.read_text().replace("\n" + golden[0].split()[0] + " ", "\n999 ", 1))
    bad = subprocess.run(["make", "-s", "check", "SIM=aiesim"], cwd=root, capture_output=True, text=True)
    assert bad.returncode != 0 and "FAIL" in bad.stdout


# --- parameters and data -----------------------------------------------------------------------------------

_ARRAY = re.compile(r"static const (\w+) (\w+)\[(\d+)\] = \{(.*?)\};", re.S)


def _parse_arrays(text: str) -> dict[str, np.ndarray]:
    out = {}
    for ctype, name, size, body in _ARRAY.findall(text):
        body = body.replace("(-9223372036854775807LL - 1)", str(-(1 << 63))).replace("(-2147483647 - 1)", str(-(1 << 31)))
        values = [int(v.strip().rstrip("L")) for v in body.split(",") if v.strip()]
        assert len(values) == int(size), name
        out[name] = np.array(values, dtype=np.int64)
    return out


@pytest.mark.parametrize("which", ["jet", "cascaded"])
def test_parameter_headers_hold_the_packed_integers(which, request):
    design = request.getfixturevalue(which)
    files = emit.render_project(design)
    for layer in design.layers:
        ns = emit.c_identifier(layer.op.name)
        arrays = _parse_arrays(files[f"src/params/{ns}.h"])
        cfg = layer.config
        want = {}
        for c in range(cfg.cas_num):
            for s in range(cfg.cas_length):
                want[f"{ns}_c{c}_s{s}_weights"] = layer.packed["weights"][c, s]
            want[f"{ns}_c{c}_bias"] = layer.packed["bias"][c]
        assert sorted(arrays) == sorted(want)
        for name, values in want.items():
            np.testing.assert_array_equal(arrays[name], values.astype(np.int64), err_msg=name)


def test_extreme_64_bit_literals_round_trip():
    from aieflow.ops.dense.emit import _array_lines
    values = np.array([-(1 << 63), (1 << 63) - 1, -5, 0], dtype=np.int64)
    text = "static const int64 x[4] = {" + ",\n".join(_array_lines(values)) + "};"
    np.testing.assert_array_equal(_parse_arrays(text)["x"], values)


@pytest.mark.parametrize("which", ["jet", "left_shift", "cascaded"])
def test_golden_output_is_the_emulator_on_the_sample_input(which, request, tmp_path):
    design = request.getfixturevalue(which)
    root = _write(design, tmp_path)
    tin = design.graph.tensors[design.graph.inputs[0]]
    tout = design.graph.tensors[design.graph.outputs[0]]
    n = emit.iterations(design)
    samples = n * design.batch
    x = np.zeros((samples, tin.features), dtype=np.int64)
    want = design.simulate  # checked below against every output PLIO's golden file
    # Samples travel zero-padded to whole DMA words (Plio.row elements each), each PLIO a feature range.
    for p in design.plios:
        name = f"data/{p.name}.txt" if p.direction == "in" else f"data/golden_{p.name}.txt"
        text = (root / name).read_text()
        storage = design.graph.tensors[p.tensor].type.storage
        assert {len(line.split()) for line in text.splitlines()} == {emit.values_per_line(storage, p.bits)}, name
        wire = np.array(emit.parse_text(text)).reshape(samples, p.row)
        assert not wire[:, p.hi - p.lo:].any()
        if p.direction == "in":
            x[:, p.lo:p.hi] = wire[:, : p.hi - p.lo]
    y = want(x, raw=True)
    for p in design.plios:
        if p.direction == "out":
            wire = np.array(emit.parse_text((root / f"data/golden_{p.name}.txt").read_text())).reshape(samples, p.row)
            np.testing.assert_array_equal(wire[:, : p.hi - p.lo], y[:, p.lo:p.hi])
    assert x.min() == tin.type.qmin and x.max() == tin.type.qmax  # the whole input range
    assert sorted(p.hi - p.lo for p in design.plios if p.direction == "out") and \
        sum(p.hi - p.lo for p in design.plios if p.direction == "out") == tout.features


# --- writing atomically ------------------------------------------------------------------------------------


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_failed_write_leaves_nothing(jet, tmp_path, monkeypatch):
    def broken(design):
        raise RuntimeError("render failed")

    monkeypatch.setattr(emit, "_data_files", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        jet.write(tmp_path / "proj")
    assert not (tmp_path / "proj").exists()
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_previous_project(jet, cascaded, tmp_path, monkeypatch):
    root = _write(jet, tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    monkeypatch.setattr(emit.Path, "write_bytes", _fail_on_the_fifth_write())
    with pytest.raises(OSError, match="disk full"):
        cascaded.write(root)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert _leftovers(tmp_path) == []


def _fail_on_the_fifth_write():
    original = Path.write_bytes
    calls = []

    def write_bytes(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 5:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    return write_bytes


def test_replaces_only_its_own_projects(jet, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(aieflow.AieflowError, match="not an aieflow project"):
        jet.write(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(aieflow.AieflowError, match="not a folder"):
        jet.write(tmp_path / "afile")


def test_identifiers_are_valid_and_distinct():
    names = ["fc/1.Gemm", "fc_1_Gemm", "1st", "class", "_x", "fc/1.Gemm2"]
    ids = emit._unique_identifiers(names)
    assert len(set(ids.values())) == len(names)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", v) for v in ids.values())
    assert ids["class"] == "class_"


# --- the exact left shift ----------------------------------------------------------------------------------


def _kernel_left_shift(acc: np.ndarray, shift: int, out: FixedType, acc_bits: int) -> np.ndarray:
    """What dense.h's finish() does for a negative shift, step by step, in integers."""
    # to_vector<int32>(0): exact for 32-bit sums; a 64-bit accumulator saturates (or wraps) into int32
    v = saturate(acc, 32, True, out.saturation) if acc_bits == 64 else acc
    up = left_upshift(shift, out)
    assert np.all((v >= -(2**31)) & (v < 2**31)) and up <= 16  # int32 << 16 fits the 64-bit accumulator
    return saturate(v << up, out.bits, out.signed, out.saturation)  # acc64 upshift, then SRS(0)


@pytest.mark.parametrize("saturation", list(Saturation))
@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (16, True), (16, False)])
@pytest.mark.parametrize("acc_bits", [32, 64])
def test_left_shift_equals_srs(saturation, bits, signed, acc_bits):
    if saturation is Saturation.SYMMETRIC and not signed:
        pytest.skip("symmetric saturation is for signed types (UG1529)")
    out = FixedType(bits, signed, 0, Rounding.CONV_EVEN, saturation)
    rng = np.random.default_rng(bits + acc_bits)
    top = 1 << (acc_bits - 1)
    acc = np.concatenate([np.arange(-300, 301), rng.integers(-top, top, 2000),
                          [-top, top - 1, -(1 << 31), (1 << 31) - 1, 1 << 40, -(1 << 40)]]).astype(np.int64)
    if acc_bits == 32:
        acc = acc[(acc >= -(1 << 31)) & (acc < (1 << 31))]
    for shift in range(-(acc_bits - 1), 0):
        np.testing.assert_array_equal(_kernel_left_shift(acc, shift, out, acc_bits), srs(acc, shift, out),
                                      err_msg=f"shift {shift}")


# --- the C++ -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stub() -> Path:
    """The packaged host headers (aieflow.host): ADF and the AIE API for g++."""
    return include_dir()


def _gxx(args: list[str], cwd: Path) -> None:
    done = subprocess.run([GXX, "-std=c++20", "-Wall", "-Werror", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.skipif(GXX is None, reason="needs g++")
@pytest.mark.parametrize("which", ["odd_names", "cascaded"])
def test_graph_and_kernels_parse(which, request, stub, tmp_path):
    root = _write(request.getfixturevalue(which), tmp_path)
    sources = ["src/graph.cpp", *sorted(str(p.relative_to(root)) for p in root.glob("src/kernels/*.cpp"))]
    _gxx(["-fsyntax-only", "-I", str(stub), "-I", "src", *sources], root)


def _driver(layer) -> str:
    """C++ that runs every chain of `layer` on the host, stage by stage, linked by cascade queues."""
    cfg = layer.config
    ns = emit.c_identifier(layer.op.name)
    lines = [f"void run_{ns}(std::FILE* in, std::FILE* out) {{", f"    using L = {ns}::layer;"]
    for c in range(cfg.cas_num):
        lines.append("    {")
        lines.append(f"        cascade_words link[{cfg.cas_length}];")
        lines.append("        static L::out_t y[L::B * L::NT];")
        for s in range(cfg.cas_length):
            role = dense.emit.role(s, cfg.cas_length)
            lines += [
                f"        static L::in_t x{s}[L::B * L::KT];",
                f"        for (auto& v : x{s}) {{ long long t; if (std::fscanf(in, \"%lld\", &t) != 1) std::abort(); v = L::in_t(t); }}",
                f"        static L::w_t w{s}[L::KT * L::NT];",
                f"        std::memcpy(w{s}, {ns}_c{c}_s{s}_weights, sizeof w{s});",
                f"        adf::input_buffer<L::in_t> in{s}{{x{s}}};",
            ]
            if role in ("single", "last"):
                lines += ["        static L::bias_t b[L::NT];",
                          f"        std::memcpy(b, {ns}_c{c}_bias, sizeof b);",
                          "        adf::output_buffer<L::out_t> ob{y};",
                          f"        {ns}::{role} k{s}(w{s}, b);"]
            else:
                lines.append(f"        {ns}::{role} k{s}(w{s});")
            cin = f"input_cascade<L::acc_tag> ci{s}{{&link[{s - 1}]}};" if s > 0 else ""
            cout = f"output_cascade<L::acc_tag> co{s}{{&link[{s}]}};" if role in ("first", "middle") else ""
            lines += [f"        {cin} {cout}".rstrip()]
            args = {"single": f"in{s}, ob", "first": f"in{s}, &co{s}", "middle": f"in{s}, &ci{s}, &co{s}",
                    "last": f"in{s}, &ci{s}, ob"}[role]
            lines += ["        aie::load_count() = 0;",
                      f"        k{s}.run({args});",
                      f"        std::fprintf(stderr, \"loads {ns} {c} {s} %llu\\n\", aie::load_count());"]
        lines.append("        for (auto v : y) std::fprintf(out, \"%lld\\n\", (long long)v);")
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines)


def _run_kernels_on_host(design, stub: Path, tmp_path: Path) -> None:
    """Each layer's kernels, compiled for the host against the stub, against dense.kernel_partial/finish."""
    root = _write(design, tmp_path)
    rng = np.random.default_rng(7)
    includes, bodies, calls, expected, feeds = [], [], [], [], []
    for layer in design.layers:
        cfg = layer.config
        ns = emit.c_identifier(layer.op.name)
        x_type = design.graph.tensors[layer.op.inputs[0]].type
        y_type = design.graph.tensors[layer.op.outputs[0]].type
        feed = []
        for c in range(cfg.cas_num):
            acc = None
            for s in range(cfg.cas_length):
                x = rng.integers(x_type.qmin, x_type.qmax, cfg.batch * cfg.k_tile, endpoint=True)
                feed.append(x)
                acc = dense.kernel_partial(cfg, x, layer.packed["weights"][c, s], acc)
            expected.append(dense.kernel_finish(cfg, acc, layer.packed["bias"][c], layer.op.attrs["shift"], y_type,
                                                layer.op.attrs["relu"]))
        feeds.append(np.concatenate(feed))
        includes += [f'#include "kernels/{ns}.h"', f'#include "params/{ns}.h"']
        bodies.append(_driver(layer))
        calls.append(f"    run_{ns}(in, stdout);")
    main = "\n".join(["#include <cstdio>", "#include <cstdlib>", "#include <cstring>", *includes, *bodies,
                      "int main() {", "    std::FILE* in = stdin;", *calls, "    return 0;", "}"])
    (root / "driver.cpp").write_text(main)
    kernels = sorted(str(p.relative_to(root)) for p in root.glob("src/kernels/*.cpp"))
    _gxx(["-O1", "-Wno-unused-variable", "-DAIEFLOW_HOST_COUNT_LOADS", "-I", str(stub), "-I", "src",
          "-I", "src/kernels", "driver.cpp", *kernels, "-o", "driver"], root)
    feed_text = "\n".join(str(int(v)) for v in np.concatenate(feeds)) + "\n"
    run = subprocess.run([str(root / "driver")], input=feed_text, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    got = np.array([int(v) for v in run.stdout.split()])
    np.testing.assert_array_equal(got, np.concatenate(expected))
    # The register blocking is real: every kernel loads exactly the vectors its blocking says it does.
    found = re.findall(r"^loads (\w+) (\d+) (\d+) (\d+)$", run.stderr, re.M)
    loads = {(ns, int(c), int(s)): int(n) for ns, c, s, n in found}
    assert loads == {(emit.c_identifier(layer.op.name), c, s): _expected_loads(layer.config, s)
                     for layer in design.layers for c in range(layer.config.cas_num)
                     for s in range(layer.config.cas_length)}


def _expected_loads(cfg, stage: int) -> int:
    """Vector loads of one kernel call: per group of output blocks and k step, one per A and one per B block
    of the group; in the last stage of a chain also one bias load per column of blocks of each group."""
    m, k, n = cfg.microtile
    rows, cols = dense.loop_blocking(cfg)
    groups = (cfg.batch // m // rows) * (cfg.n_tile // n // cols)
    return groups * (cfg.k_tile // k) * (rows + cols) + (groups * cols if stage == cfg.cas_length - 1 else 0)


def _with_shift(design, index: int, shift: int):
    """The same design with layer `index` using another shift."""
    layers = list(design.layers)
    op = layers[index].op
    layers[index] = dataclasses.replace(layers[index], op=dataclasses.replace(op, attrs={**op.attrs, "shift": shift}))
    return dataclasses.replace(design, layers=tuple(layers))


def _with_big_bias(design, shift: int, magnitude: int, seed: int = 3):
    """Every layer with a large random bias and a shift that brings it back into the output range, so that
    the bias decides the output (a 64-bit bias then needs both of its 32-bit halves)."""
    rng = np.random.default_rng(seed)
    layers = []
    for layer in design.layers:
        bias = rng.integers(-magnitude, magnitude, layer.packed["bias"].shape).astype(np.int64)
        op = dataclasses.replace(layer.op, attrs={**layer.op.attrs, "shift": shift})
        layers.append(dataclasses.replace(layer, op=op, packed={**layer.packed, "bias": bias}))
    return dataclasses.replace(design, layers=tuple(layers))


# Designs whose layers cover every register blocking of the kernel loop (2 x 2, 1 x 2, 2 x 1, 1 x 1) with
# cascades of 1, 2 and 3 stages, with one and several chains, on a 32-bit accumulator (int8) and a 64-bit
# one (int16). Each layer is (microtile, cas_length, cas_num); the widths were picked so that every
# directive is legal and most layers pad their features. The blocking follows the parity of the batch's row
# blocks (B/M) and of a kernel's column blocks (Nt/N); with int8 a batch of 12 gives 6 row blocks at M = 2
# and 3 at M = 4, with int16 (only 4x4x4) the batch decides: 16 gives 4 row blocks, 12 gives 3.
_BLOCKING_INT8 = (
    (70, 15, 23, 31, 23, 23, 31, 23, 31, 15, 23, 24, 15),
    [((4, 16, 4), 3, 2), ((4, 8, 8), 2, 1), ((2, 8, 8), 3, 1), ((4, 8, 8), 1, 3), ((4, 8, 4), 3, 2),
     ((4, 8, 8), 2, 2), ((2, 16, 8), 1, 1), ((4, 16, 8), 1, 1), ((2, 16, 8), 2, 1), ((2, 8, 8), 2, 1),
     ((2, 8, 8), 1, 2), ((2, 8, 8), 3, 2)],
)
_BLOCKING_INT16 = (
    (50, 7, 7, 31, 7, 23, 11),
    [((4, 4, 4), 2, 2), ((4, 4, 4), 1, 1), ((4, 4, 4), 2, 2), ((4, 4, 4), 3, 1), ((4, 4, 4), 1, 2), ((4, 4, 4), 3, 1)],
)


def _blocking_design(spec, bits: int, batch: int, seed: int):
    widths, layers = spec
    relu = [i % 3 != 2 for i in range(len(layers))]  # ReLU on most layers, not all
    model = qdq_mlp(list(widths), act_bits=bits, weight_bits=bits, relu=relu, seed=seed)
    directives = {f"fc{i}_gemm_Gemm": {"microtile": list(mt), "cas_length": n_len, "cas_num": n_num}
                  for i, (mt, n_len, n_num) in enumerate(layers)}
    return aieflow.compile(model, device="ve2802", batch=batch, layers=directives)


@pytest.fixture(scope="module")
def blocked():
    """The blocking designs: int8 at batch 12, int16 at batch 16 (even row blocks) and 12 (odd)."""
    return {"acc32": _blocking_design(_BLOCKING_INT8, 8, 12, seed=4),
            "acc64_even": _blocking_design(_BLOCKING_INT16, 16, 16, seed=5),
            "acc64_odd": _blocking_design(_BLOCKING_INT16, 16, 12, seed=6)}


def test_loop_blocking_pairs_blocks_where_they_pair():
    def cfg(batch, m, n_tile, n):
        return dense.Config(64, 64, batch, (m, 8, n), 1, 1, 64, n_tile, 8, 8, 8, 32)

    assert dense.loop_blocking(cfg(8, 4, 32, 8)) == (2, 2)  # 2 row blocks, 4 column blocks
    assert dense.loop_blocking(cfg(12, 4, 16, 8)) == (1, 2)  # 3 row blocks
    assert dense.loop_blocking(cfg(12, 2, 24, 8)) == (2, 1)  # 3 column blocks
    assert dense.loop_blocking(cfg(4, 4, 8, 8)) == (1, 1)  # one block
    assert dense.loop_blocking(cfg(20, 4, 40, 4)) == (1, 2)  # 5 row blocks, 10 column blocks


def test_blocking_designs_cover_every_blocking_and_cascade(blocked):
    for name, design in blocked.items():
        covered = {(dense.loop_blocking(l.config), l.config.cas_length) for l in design.layers}
        rows = {2} if name == "acc64_even" else {1} if name == "acc64_odd" else {1, 2}
        assert covered == {((r, c), n) for r in rows for c in (1, 2) for n in (1, 2, 3)}, name
        assert {l.config.acc_bits for l in design.layers} == {32 if name == "acc32" else 64}
        assert any(l.config.cas_num > 1 for l in design.layers)
        # the blocking of the layer struct is loop_blocking's
        files = emit.render_project(design)
        for layer in design.layers:
            text = files[f"src/kernels/{emit.c_identifier(layer.op.name)}.h"]
            rows_, cols_ = dense.loop_blocking(layer.config)
            assert f"ROW_GROUP = {rows_};" in text and f"COL_GROUP = {cols_};" in text


def _with_layer_numerics(design, shifts: list[int | None], offset: int = 0):
    """Layer i's output rounded by mode (i + offset) of all ten and saturated by mode (i + offset) of the
    three, so one design meets every mode; its shift replaced by shifts[i] unless that is None. Shifts are
    picked so that small ones (many ties) and negative ones meet saturation none (wrap), which keeps
    the outputs varied rather than all saturated."""
    roundings, saturations = list(Rounding), list(Saturation)
    graph = design.graph
    tensors = dict(graph.tensors)
    layers = []
    for i, (layer, shift) in enumerate(zip(design.layers, shifts, strict=True)):
        name = layer.op.outputs[0]
        mode = {"rounding": roundings[(i + offset) % len(roundings)],
                "saturation": saturations[(i + offset) % len(saturations)]}
        tensors[name] = dataclasses.replace(tensors[name], type=dataclasses.replace(tensors[name].type, **mode))
        if shift is not None:
            op = dataclasses.replace(layer.op, attrs={**layer.op.attrs, "shift": shift})
            layer = dataclasses.replace(layer, op=op)
        layers.append(layer)
    return dataclasses.replace(design, graph=dataclasses.replace(graph, tensors=tensors), layers=tuple(layers))


_HOST_CASES = {
    # cascades of 2 stages x 4 chains and a single kernel, 16-bit data, a 64-bit accumulator (all 1 x 1)
    "cascaded": lambda get: get("cascaded"),
    # the same with a bias beyond 32 bits, which then decides the output
    "cascaded-big-bias": lambda get: _with_big_bias(get("cascaded"), shift=30, magnitude=1 << 44),
    # a negative shift (-2), then a positive one; rounding and saturation of every kind
    "left-shift": lambda get: get("left_shift"),
    "left-shift-floor-wrap": lambda get: _with_modes(_with_shift(get("left_shift"), 0, -5),
                                                     Rounding.FLOOR, Saturation.NONE),
    "left-shift-sym": lambda get: _with_modes(_with_shift(get("left_shift"), 0, -5),
                                              Rounding.SYMMETRIC_INF, Saturation.SYMMETRIC),
    "left-shift-far": lambda get: _with_modes(_with_shift(get("left_shift"), 0, -20),
                                              Rounding.POSITIVE_INF, Saturation.SATURATE),
    # every blocking with cascades of 1, 2 and 3 stages, on both accumulators: first with the model's own
    # numbers (conv_even, saturate, positive shifts), then with every rounding and saturation mode and
    # negative shifts mixed in, then (64-bit) with a bias wider than 32 bits that decides the output
    "blocking-acc32": lambda get: get("blocked")["acc32"],
    "blocking-acc32-modes": lambda get: _with_layer_numerics(
        get("blocked")["acc32"], [2, None, None, -3, None, None, 1, -20, None, -1, -7, None]),
    "blocking-acc32-modes-2": lambda get: _with_layer_numerics(
        get("blocked")["acc32"], [None, -2, None, -9, 1, None, None, 3, None, None, -1, None], offset=5),
    "blocking-acc64-even": lambda get: get("blocked")["acc64_even"],
    "blocking-acc64-even-modes": lambda get: _with_layer_numerics(
        get("blocked")["acc64_even"], [1, None, -2, -5, None, 2]),
    "blocking-acc64-even-big-bias": lambda get: _with_big_bias(get("blocked")["acc64_even"], shift=30,
                                                               magnitude=1 << 44),
    "blocking-acc64-odd": lambda get: get("blocked")["acc64_odd"],
    "blocking-acc64-odd-modes": lambda get: _with_layer_numerics(
        get("blocked")["acc64_odd"], [-1, None, -16, None, 2, -4], offset=6),
    "blocking-acc64-odd-big-bias": lambda get: _with_big_bias(get("blocked")["acc64_odd"], shift=33,
                                                              magnitude=1 << 46, seed=4),
    # sums beyond 32 bits shifted left: read as int32 they wrap, the upshift keeps the low bits
    "blocking-acc64-odd-big-bias-left": lambda get: _with_modes(
        _with_big_bias(get("blocked")["acc64_odd"], shift=-3, magnitude=1 << 40), Rounding.FLOOR, Saturation.NONE),
}


@pytest.mark.skipif(GXX is None, reason="needs g++")
@pytest.mark.parametrize("case", list(_HOST_CASES))
def test_kernels_on_the_host_match_the_emulator(case, request, stub, tmp_path):
    design = _HOST_CASES[case](request.getfixturevalue)
    _run_kernels_on_host(design, stub, tmp_path)
