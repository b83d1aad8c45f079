"""The user's paths: `aieflow compile / simulate / devices / demo` and the Python API, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import aieflow
from aieflow.cli import main
from aieflow.examples.onnx_qdq import qdq_mlp, run_onnxruntime, sample_inputs


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "mlp.onnx"
    path.write_bytes(qdq_mlp([20, 33, 9], seed=5).SerializeToString())
    return path


def test_compile_json_then_simulate_float_and_raw(model_file, tmp_path):
    runner = CliRunner()
    out = tmp_path / "proj"
    r = runner.invoke(main, ["compile", str(model_file), "-o", str(out), "--device", "ve2802", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["device"] == "XCVE2802" and s["tiles_total"] == 304 and s["memtile_buffers"] >= 2
    assert [l["name"] for l in s["layers"]] and all(l["op"] == "dense" for l in s["layers"])
    assert (out / "design.json").is_file()

    model = __import__("onnx").load(str(model_file))
    x = sample_inputs(model, 50, seed=2)
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(main, ["simulate", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(y, run_onnxruntime(model, x))

    r = runner.invoke(main, ["simulate", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                             str(tmp_path / "q.npy"), "--raw"])
    assert r.exit_code == 0, r.output
    q = np.load(tmp_path / "q.npy")
    assert q.dtype == np.int8
    g = aieflow.load(out).graph
    frac = g.tensors[g.outputs[0]].type.frac
    assert np.array_equal(np.ldexp(q.astype(np.float64), -frac), y)

    # Raw integer inputs are taken as they are.
    g = aieflow.load(out).graph
    xq = aieflow.numerics.quantize_float(x, g.tensors[g.inputs[0]].type)
    np.save(tmp_path / "xq.npy", xq.astype(np.int8))
    r = runner.invoke(main, ["simulate", str(out), "--input", str(tmp_path / "xq.npy"), "--output", str(tmp_path / "y2.npy")])
    assert r.exit_code == 0 and np.array_equal(np.load(tmp_path / "y2.npy"), y)


def test_compile_human_summary(model_file, tmp_path):
    r = CliRunner().invoke(main, ["compile", str(model_file), "-o", str(tmp_path / "p")])
    assert r.exit_code == 0
    assert "tiles" in r.output and "XCVE2802" in r.output and "cas_length" in r.output


def test_devices_lists_the_catalog():
    r = CliRunner().invoke(main, ["devices", "--json"])
    rows = {d["name"]: d for d in json.loads(r.output)}
    assert rows["XCVE2802"]["tiles"] == 304 and rows["XCVE2802"]["memtiles"] == 76
    assert rows["XC2VE3858"]["tiles"] == 144 and rows["XC2VE3858"]["generation"] == "AIE-MLv2"
    assert abs(rows["XCVE2802"]["peak_int8_tops"] - 194.56) < 0.01
    assert "VEK280" in CliRunner().invoke(main, ["devices"]).output


def test_python_api_round_trip(model_file, tmp_path):
    design = aieflow.compile(str(model_file), device="ve2802")
    x = np.random.default_rng(0).normal(0, 3, (40, 20)).astype(np.float32)
    y = design.simulate(x)
    design.write(tmp_path / "mlp")
    same = aieflow.load(tmp_path / "mlp")
    assert np.array_equal(same.simulate(x), y)
    assert same.to_json() == design.to_json()


def test_compiling_twice_gives_byte_identical_projects(model_file, tmp_path):
    for name in ("a", "b"):
        assert CliRunner().invoke(main, ["compile", str(model_file), "-o", str(tmp_path / name)]).exit_code == 0

    def tree(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 5
    assert all(a[k] == b[k] for k in a)


def test_demo_runs_end_to_end(tmp_path):
    r = CliRunner().invoke(main, ["demo", "--output", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    assert "bit-exact" in r.output
    assert (tmp_path / "demo" / "design.json").is_file() and (tmp_path / "demo" / "jet_tagger.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # nothing written beside the output
