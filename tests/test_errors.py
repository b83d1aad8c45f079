"""Bad input ends in one clear error: the API raises AieflowError, the CLI prints one line and exits 2,
and no output folder is left behind."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

import aieflow
from aieflow.cli import main
from aieflow.errors import AieflowError, MappingError, ModelError, NumericsError
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.ir import Graph, Op, Tensor
from aieflow.numerics import FixedType


def _set_init(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, init in enumerate(m.graph.initializer):
        if init.name == name:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return m
    raise KeyError(name)


def _node_input(model, op_type: str, index: int, position: int = 1) -> str:
    return [n for n in model.graph.node if n.op_type == op_type][index].input[position]


def _residual_model() -> onnx.ModelProto:
    """x -> QDQ -> x + x -> QuantizeLinear (scale sy, zero point zy): a residual join."""
    inits = {"sx": np.array(0.125, np.float32), "zx": np.array(0, np.int8),
             "sy": np.array(0.25, np.float32), "zy": np.array(0, np.int8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("Add", ["xd", "xd"], ["s"], name="residual"),
             helper.make_node("QuantizeLinear", ["s", "sy", "zy"], ["yq"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("yq", onnx.TensorProto.INT8, ["N", 4])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _bad_models() -> dict[str, tuple[onnx.ModelProto | bytes, str]]:
    """name -> (model or raw bytes, a phrase the error must contain)."""
    base = qdq_mlp([8, 6, 4], seed=3)
    out = {}
    # An op outside the supported set, spliced in after the first Gemm.
    m = onnx.ModelProto()
    m.CopyFrom(base)
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    old = gemm.output[0]
    gemm.output[0] = old + "_pre"
    idx = list(m.graph.node).index(gemm)
    m.graph.node.insert(idx + 1, helper.make_node("Sigmoid", [old + "_pre"], [old], name="my_sigmoid"))
    out["unsupported op"] = (m, "unsupported op Sigmoid")
    # Dense layers take any per-tensor scale and zero point; a residual add aligns power-of-two scales only.
    residual = _residual_model()
    out["non power of two scale"] = (_set_init(residual, "sy", np.array(0.1, np.float32)), "not a power of two")
    out["non-zero zero point"] = (_set_init(residual, "zy", np.array(3, np.int8)), "zero point 3")
    wscale = _node_input(base, "DequantizeLinear", 1)  # the first weight's scale
    per_channel = _set_init(base, wscale, np.full(6, 0.125, np.float32))
    out["per-channel scale"] = (per_channel, "per-channel")
    out["not onnx"] = (b"this is not an onnx model\n", "is not an ONNX model")
    m = onnx.ModelProto()
    m.CopyFrom(base)
    next(n for n in m.graph.node if n.op_type == "Gemm").attribute.append(helper.make_attribute("alpha", 2.0))
    out["gemm alpha"] = (m, "alpha")
    return out


BAD = _bad_models()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_api(case, tmp_path):
    model, phrase = BAD[case]
    path = tmp_path / "model.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    with pytest.raises(AieflowError) as err:
        aieflow.compile(path)
    assert phrase in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_model_cli(case, tmp_path):
    model, phrase = BAD[case]
    path = tmp_path / "model.onnx"
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    out = tmp_path / "project"
    result = CliRunner().invoke(main, ["compile", str(path), "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_unsupported_op_names_the_node(tmp_path):
    model, _ = BAD["unsupported op"]
    with pytest.raises(ModelError) as err:
        aieflow.compile(model)
    assert err.value.node == "my_sigmoid" and "supported:" in str(err.value)


def test_failed_compile_keeps_previous_project(tmp_path):
    good = tmp_path / "good.onnx"
    good.write_bytes(qdq_mlp([8, 4], seed=1).SerializeToString())
    out = tmp_path / "project"
    assert CliRunner().invoke(main, ["compile", str(good), "-o", str(out)]).exit_code == 0
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    assert CliRunner().invoke(main, ["compile", str(bad), "-o", str(out)]).exit_code == 2
    after = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    assert before == after


@pytest.mark.parametrize("args, phrase", [
    (["compile", "missing.onnx", "-o", "p"], "no such file"),
    (["compile", "{model}", "-o", "p", "--device", "vck9999"], "unknown device"),
    (["compile", "{model}", "-o", "p", "--batch", "0"], "batch 0 is out of range"),
    (["simulate", "nowhere", "--input", "x.npy", "--output", "y.npy"], "no design.json"),
])
def test_cli_usage_errors(args, phrase, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(qdq_mlp([4, 4], seed=0).SerializeToString())
    result = CliRunner().invoke(main, [a.format(model="m.onnx") for a in args])
    assert result.exit_code == 2
    assert phrase in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p").exists()


def test_simulate_rejects_wrong_shape(tmp_path):
    design = aieflow.compile(qdq_mlp([6, 3], seed=0))
    design.write(tmp_path / "p")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "p"), "--input", str(tmp_path / "x.npy"),
                                       "--output", str(tmp_path / "y.npy")])
    assert result.exit_code == 2 and "expects [samples, 6]" in result.output
    assert not (tmp_path / "y.npy").exists()


def _graph(weight: np.ndarray, bias: np.ndarray, x: FixedType, w: FixedType, y: FixedType, shift: int) -> Graph:
    k, n = weight.shape
    return Graph("g", {"x": Tensor("x", (k,), x), "y": Tensor("y", (n,), y)},
                 (Op("fc", "dense", ("x",), ("y",), {"relu": False, "shift": shift, "weight_type": w},
                     {"weight": weight, "bias": bias}),), ("x",), ("y",))


def test_accumulator_overflow_is_refused():
    x16, w8 = FixedType(16, True, 0), FixedType(8, True, 0)
    k = 600  # 32768 * 128 * 600 > 2**31: an int16 x int8 layer this wide could overflow acc32
    g = _graph(np.full((k, 4), -128, np.int64), np.zeros(4, np.int64), x16, w8, x16, 10)
    with pytest.raises(NumericsError, match="accumulator could overflow") as err:
        aieflow.compile(g)
    assert err.value.node == "fc"
    # The same layer with a smaller weight is accepted: the check is a bound, not a blanket refusal.
    ok = _graph(np.full((k, 4), 1, np.int64), np.zeros(4, np.int64), x16, w8, x16, 10)
    aieflow.compile(ok)


def test_layer_too_large_for_device_is_refused():
    t8 = FixedType(8, True, 0)
    g = _graph(np.ones((4096, 4096), np.int64), np.zeros(4096, np.int64), t8, t8, t8, 14)
    with pytest.raises(MappingError, match="no configuration fits"):
        aieflow.compile(g, device="ve2302")
