"""ONNX QDQ forms the frontend accepts, each checked bit-exactly against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aieflow
from aieflow.errors import ModelError
from aieflow.examples.onnx_qdq import run_onnxruntime


def _model(nodes, inits, k, n, out="y", out_type=TensorProto.FLOAT):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info(out, out_type, ["N", n])],
                          [numpy_helper.from_array(np.asarray(v), name) for name, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(m)
    return m


def _layer(rng, k, n):
    return {
        "W": rng.normal(0, 0.3, (k, n)).astype(np.float32),
        "Wq": rng.integers(-60, 61, (k, n)).astype(np.int8),
        "B": rng.integers(-300, 300, n).astype(np.int32),
        "sx": np.float32(2 ** -3), "sw": np.float32(2 ** -5), "sb": np.float32(2 ** -8), "sy": np.float32(2 ** -4),
        "z": np.int8(0), "zu": np.uint8(0), "shape": np.array([-1, k], np.int64),
    }


def _inputs(k: int, n: int = 300) -> np.ndarray:
    """Multiples of 1/16 with input scale 1/8: every odd one is a tie, |x| up to 125 saturates."""
    return (np.random.default_rng(k).integers(-2000, 2000, (n, k)) / 16).astype(np.float32)


def test_float_weights_behind_quantizelinear_matmul_add_and_views():
    inits = _layer(np.random.default_rng(0), 12, 7)
    nodes = [
        helper.make_node("Identity", ["x"], ["xi"]),
        helper.make_node("QuantizeLinear", ["xi", "sx", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
        helper.make_node("Flatten", ["xd"], ["xf"], axis=1),
        helper.make_node("Reshape", ["xf", "shape"], ["xr"]),
        helper.make_node("QuantizeLinear", ["W", "sw", "z"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "z"], ["wd"]),
        helper.make_node("DequantizeLinear", ["B", "sb"], ["bd"]),
        helper.make_node("MatMul", ["xr", "wd"], ["mm"]),
        helper.make_node("Add", ["bd", "mm"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sy", "zu"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zu"], ["y"]),
    ]
    m = _model(nodes, inits, 12, 7)
    d, x = aieflow.compile(m), _inputs(12)
    assert d.graph.tensors[d.graph.outputs[0]].type.storage == "uint8"
    assert np.array_equal(d.simulate(x), run_onnxruntime(m, x))


def test_gemm_trans_b_without_bias_and_integer_graph_output():
    inits = _layer(np.random.default_rng(1), 9, 5)
    inits["WqT"] = inits["Wq"].T.copy()
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["WqT", "sw"], ["wd"]),
        helper.make_node("Gemm", ["xd", "wd"], ["g"], transB=1),
        helper.make_node("QuantizeLinear", ["g", "sy", "z"], ["yq"]),
    ]
    m = _model(nodes, inits, 9, 5, out="yq", out_type=TensorProto.INT8)
    d = aieflow.compile(m)
    x = _inputs(9)
    ref = run_onnxruntime(m, x)
    assert np.array_equal(d.simulate(x, raw=True), ref)


@pytest.mark.parametrize("mutate, phrase", [
    (lambda n: n.__setitem__(3, helper.make_node("Gemm", ["xd", "wd"], ["g"], transA=1)), "transA"),
    (lambda n: n.__setitem__(4, helper.make_node("QuantizeLinear", ["g", "sy", "z"], ["yq"], name="q_out")) or
     n.append(helper.make_node("Relu", ["xd"], ["rr"])), "Relu is supported only"),
])
def test_unsupported_forms_name_the_problem(mutate, phrase):
    inits = _layer(np.random.default_rng(1), 9, 5)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["Wq", "sw"], ["wd"]),
        helper.make_node("Gemm", ["xd", "wd"], ["g"]),
        helper.make_node("QuantizeLinear", ["g", "sy", "z"], ["yq"]),
    ]
    mutate(nodes)
    m = _model(nodes, inits, 9, 5, out="yq", out_type=TensorProto.INT8)
    with pytest.raises(ModelError, match=phrase):
        aieflow.compile(m)


def test_add_of_two_activations_is_a_residual_join():
    inits = _layer(np.random.default_rng(1), 4, 4)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "z"], ["xd"]),
        helper.make_node("Add", ["xd", "xd"], ["s"], name="residual"),
        helper.make_node("QuantizeLinear", ["s", "sy", "z"], ["yq"]),
    ]
    m = _model(nodes, inits, 4, 4, out="yq", out_type=TensorProto.INT8)
    d = aieflow.compile(m)
    assert [op.kind for op in d.graph.ops] == ["add"]
    x = _inputs(4)
    assert np.array_equal(d.simulate(x, raw=True), run_onnxruntime(m, x))
