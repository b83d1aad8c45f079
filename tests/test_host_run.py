"""The emitted firmware run on the host (aieflow.host.run): the project's own kernel C++, wired by the
design's DMA descriptors, direct links and cascades, gives the structural emulator's integers bit for bit;
a wrong descriptor or a kernel built with other numbers than the design's is caught."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

import aieflow
from aieflow.examples.onnx_qdq import jet_tagger, qdq_mlp, sample_inputs
from aieflow.examples.graphs import qdq_graph
from aieflow.host import run as host_run
from aieflow.numerics import quantize_float
from aieflow.tiling import Tiling

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def _cascaded():
    """Every layer forced into 2 chains of 3 cascaded kernels."""
    model = qdq_mlp([64, 96, 48, 10], seed=4)
    names = [l.op.name for l in aieflow.compile(model, batch=4).layers]
    return model, aieflow.compile(model, batch=4, layers={n: {"cas_length": 3, "cas_num": 2} for n in names})


def _negative_shift():
    model = qdq_mlp([40, 24, 10], fracs=[4, 12, 13], weight_fracs=[6, 6], seed=3)
    design = aieflow.compile(model, batch=5)
    assert design.layers[0].op.attrs["shift"] < 0
    return model, design


CASES = {
    "jet": lambda: (jet_tagger(), aieflow.compile(jet_tagger(), batch=8)),
    "cascaded": _cascaded,
    "int16": lambda: (m := qdq_mlp([300, 200, 17], act_bits=16, weight_bits=16, seed=1), aieflow.compile(m, batch=4)),
    "negative_shift": _negative_shift,
    "residual": lambda: (m := qdq_graph(3), aieflow.compile(m)),
}


def _raw(design, model, n: int, seed: int = 0) -> np.ndarray:
    x = np.asarray(sample_inputs(model, n, seed=seed))
    return quantize_float(x, design.graph.tensors[design.graph.inputs[0]].type) if x.dtype.kind == "f" else x


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    root = tmp_path_factory.mktemp("host")
    out = {}
    for name, make in CASES.items():
        model, design = make()
        out[name] = (model, design, design.write(root / name))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_host_run_equals_the_emulator(name, projects):
    model, design, proj = projects[name]
    x = _raw(design, model, 2 * design.batch + 3)  # a padded last iteration
    got = host_run.run_host(design, proj, x)
    want = design.simulate(x, raw=True, fast=False)
    assert got.shape == want.shape and got.dtype.kind == "i"
    np.testing.assert_array_equal(got, want)
    if name == "cascaded":
        assert all(l.config.cas_length == 3 and l.config.cas_num == 2 for l in design.layers)
    if name == "residual":
        assert {l.op.kind for l in design.layers} == {"dense", "add"} and design.links


def test_binary_is_cached_and_reused(projects):
    model, design, proj = projects["jet"]
    exe = host_run.build(design, proj)
    stamp = exe.stat().st_mtime_ns
    x = _raw(design, model, 3, seed=1)
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), design.simulate(x, raw=True, fast=False))
    assert host_run.build(design, proj) == exe and exe.stat().st_mtime_ns == stamp
    assert len(list(exe.parent.glob("run_*"))) == 1


def test_address_map_is_the_tiling():
    t = Tiling((4, 3), (2, 2), (1, -1), ())  # half the tile above the buffer: zeros
    assert host_run.address_map(t).tolist() == [-1, -1, 1, 2]


def test_a_wrong_emission_is_caught(projects):
    model, design, proj = projects["jet"]
    x = _raw(design, model, design.batch, seed=2)
    want = design.simulate(x, raw=True, fast=False)
    # A kernel compiled with another shift than the design's: the same firmware, another emulation.
    layers = list(design.layers)
    op = layers[-1].op
    layers[-1] = dataclasses.replace(layers[-1], op=dataclasses.replace(op, attrs={**op.attrs, "shift": op.attrs["shift"] + 1}))
    other = dataclasses.replace(design, layers=tuple(layers))
    assert not np.array_equal(host_run.run_host(design, proj, x), other.simulate(x, raw=True, fast=False))
    # A memory-tile descriptor moved by one feature in the harness's input: the wiring differs.
    m = design.memtile_buffers[0]
    a = m.readers[0]
    moved = dataclasses.replace(a, tiling=dataclasses.replace(a.tiling, offset=(1, *a.tiling.offset[1:])))
    bad = dataclasses.replace(m, readers=(moved, *m.readers[1:]))
    broken = dataclasses.replace(design, memtile_buffers=(bad, *design.memtile_buffers[1:]))
    assert not np.array_equal(host_run.run_host(broken, proj, x), want)


def test_a_swapped_cascade_order_is_caught(tmp_path):
    """Stage kernels that send their partial sums in another order than the next stage reads them: the
    emitted firmware's arithmetic is wrong, and the host run shows it where the emulator cannot."""
    model = qdq_mlp([64, 48], seed=6)
    name = aieflow.compile(model).layers[0].op.name
    design = aieflow.compile(model, batch=8, layers={name: {"cas_length": 2, "cas_num": 1, "microtile": [4, 8, 8]}})
    proj = design.write(tmp_path / "ok")
    x = _raw(design, model, design.batch, seed=3)
    want = design.simulate(x, raw=True, fast=False)
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), want)
    broken = design.write(tmp_path / "broken")
    header = broken / "src" / "kernels" / "dense.h"
    text = header.read_text()
    a, b = "send_block<L>(c01, cascade_out);", "send_block<L>(c10, cascade_out);"
    assert a in text and b in text
    header.write_text(text.replace(a, "@@").replace(b, a).replace("@@", b))
    assert not np.array_equal(host_run.run_host(design, broken, x), want)


def test_every_rounding_and_saturation_mode_on_the_host(tmp_path):
    """One design whose 30 layers each produce a different (rounding, saturation) output type, at odd sizes,
    with shifts of both signs: one host build covers every mode end to end."""
    from aieflow.ir import Graph, Op, Tensor
    from aieflow.numerics import FixedType, Rounding, Saturation

    rng = np.random.default_rng(11)
    modes = [(r, s) for r in Rounding for s in Saturation]
    width = 23
    tensors = {"t0": Tensor("t0", (width,), FixedType(8, True, 0))}
    ops = []
    for i, (r, s) in enumerate(modes):
        out = FixedType(8, True, 0, r, s)
        tensors[f"t{i + 1}"] = Tensor(f"t{i + 1}", (width,), out)
        shift = -1 if i % 7 == 3 else 5  # a left shift now and then
        ops.append(Op(f"l{i}", "dense", (f"t{i}",), (f"t{i + 1}",),
                      {"relu": i % 4 == 0, "shift": shift, "weight_type": FixedType(8, True, 0)},
                      {"weight": rng.integers(-20, 21, (width, width)), "bias": rng.integers(-400, 400, width)}))
    g = Graph("modes", tensors, tuple(ops), ("t0",), (f"t{len(modes)}",))
    design = aieflow.compile(g, batch=6)
    proj = design.write(tmp_path / "modes")
    x = rng.integers(-128, 128, (2 * design.batch + 1, width))
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), design.simulate(x, raw=True, fast=False))


def test_host_run_on_the_projects_own_files_passes_make_check(projects):
    """`aieflow simulate DIR --engine host` reads data/in_*.txt, writes host_output/data/out_*.txt, and the
    project's own `make check SIM=host` compares them with the golden files."""
    import subprocess

    from click.testing import CliRunner

    from aieflow.cli import main

    model, design, proj = projects["cascaded"]
    r = CliRunner().invoke(main, ["simulate", str(proj), "--engine", "host"])
    assert r.exit_code == 0, r.output
    outs = sorted((proj / "host_output" / "data").glob("out_*.txt"))
    assert len(outs) == sum(p.direction == "out" for p in design.plios)
    for path in outs:
        assert path.read_text() == (proj / "data" / f"golden_{path.name}").read_text()
    done = subprocess.run(["make", "-s", "check", "SIM=host"], cwd=proj, capture_output=True, text=True)
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr


PRECISIONS = [  # (activation bits, signed, weight bits, device): every precision the dense family emits
    (8, True, 8, "ve2802"), (8, False, 8, "ve2802"), (16, True, 8, "ve2802"), (8, True, 16, "ve2802"),
    (16, True, 16, "ve2802"), (8, True, 8, "ve3858"), (16, True, 8, "ve3858"),
]


@pytest.mark.parametrize("act, signed, weight, device", PRECISIONS)
def test_every_precision_and_generation_on_the_host(act, signed, weight, device, tmp_path):
    from aieflow.host.graph import compare, record_graph

    model = qdq_mlp([40, 72, 9], act_bits=act, act_signed=signed, weight_bits=weight, seed=act + weight)
    design = aieflow.compile(model, device=device, batch=5)
    proj = design.write(tmp_path / "p")
    x = _raw(design, model, 2 * design.batch + 1, seed=act)
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), design.simulate(x, raw=True, fast=False))
    assert compare(design, record_graph(proj)) == []


@pytest.mark.parametrize("seed", range(4))
def test_random_residual_graphs_on_the_host(seed, tmp_path):
    from aieflow.host.graph import compare, record_graph

    model = qdq_graph(100 + seed, max_layers=5, max_width=128)
    design = aieflow.compile(model, objective=["resource", "throughput"][seed % 2], batch=1 + 3 * seed)
    proj = design.write(tmp_path / "p")
    x = _raw(design, model, 2 * design.batch + 1, seed=seed)
    np.testing.assert_array_equal(host_run.run_host(design, proj, x), design.simulate(x, raw=True, fast=False))
    assert compare(design, record_graph(proj)) == []
