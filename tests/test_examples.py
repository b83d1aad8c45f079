"""The example builders make valid QDQ models that onnxruntime runs bit-exactly, with useful outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from aieflow.errors import ModelError
from aieflow.examples.onnx_qdq import jet_tagger, qdq_mlp, run_onnxruntime, sample_inputs
from aieflow.numerics import FixedType, dequantize, quantize_float, srs

pytest.importorskip("onnxruntime")

# Configurations covering every activation and weight type, both graph forms and both weight layouts.
CONFIGS = {
    "int8": dict(),
    "uint8": dict(act_signed=False),
    "int16": dict(act_bits=16),
    "uint16": dict(act_bits=16, act_signed=False),
    "int16_w16": dict(act_bits=16, weight_bits=16),
    "int8_w16": dict(weight_bits=16),
    "matmul": dict(gemm=False),
    "trans_b": dict(trans_b=True),
    "no_relu": dict(relu=False),
    "wide_range": dict(weight_bits=16, weight_range=30000),
}
WIDTHS = [16, 48, 24, 6]
RELU = [True, True, False]


@dataclass
class Layer:
    """One dense layer read back from the ONNX initializers, weights as [in, out]."""

    x: FixedType
    weight: np.ndarray
    weight_frac: int
    bias: np.ndarray
    bias_frac: int
    out: FixedType
    relu: bool


def _frac(scale: np.ndarray) -> int:
    f = -np.log2(float(scale))
    assert f == int(f), f"scale {scale} is not a power of two"
    return int(f)


def _type_of(zero_point: np.ndarray, scale: np.ndarray) -> FixedType:
    info = np.iinfo(zero_point.dtype)
    assert int(zero_point) == 0
    return FixedType(info.bits, info.min < 0, _frac(scale))


def read_layers(model: onnx.ModelProto) -> list[Layer]:
    """Walk the graph: for each Gemm / MatMul, its input type, integer weights and bias, ReLU and output type."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def dq_operand(name: str):
        node = producer[name]
        assert node.op_type == "DequantizeLinear"
        return node, inits.get(node.input[0]), inits[node.input[1]], inits[node.input[2]]

    def next_node(name: str) -> onnx.NodeProto:
        (node,) = consumers[name]
        return node

    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "MatMul"):
            continue
        _, _, x_scale, x_zero = dq_operand(node.input[0])
        _, weight, w_scale, _ = dq_operand(node.input[1])
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        weight = weight.T if trans_b else weight
        after = node
        if node.op_type == "Gemm":
            bias_name = node.input[2]
        else:
            after = next_node(node.output[0])
            assert after.op_type == "Add"
            bias_name = after.input[1]
        _, bias, b_scale, _ = dq_operand(bias_name)
        after = next_node(after.output[0])
        relu = after.op_type == "Relu"
        if relu:
            after = next_node(after.output[0])
        assert after.op_type == "QuantizeLinear"
        out = _type_of(inits[after.input[2]], inits[after.input[1]])
        x = _type_of(x_zero, x_scale)
        layers.append(Layer(x, weight.astype(np.int64), _frac(w_scale), bias.astype(np.int64), _frac(b_scale), out, relu))
    return layers


def integer_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's meaning in exact integer arithmetic: quantize, dense + SRS (half even, saturate), ReLU."""
    layers = read_layers(model)
    q = quantize_float(x, layers[0].x)
    for layer in layers:
        acc = q @ layer.weight + layer.bias
        q = srs(acc, layer.x.frac + layer.weight_frac - layer.out.frac, layer.out)
        q = np.maximum(q, 0) if layer.relu else q
    return dequantize(q, layers[-1].out)


def float32_bound(layer: Layer) -> int:
    """Worst |partial sum| of onnxruntime's float32 Gemm on the integer grid, over all output columns."""
    worst = layer.x.magnitude * np.abs(layer.weight).sum(axis=0) + np.abs(layer.bias)
    return int(worst.max())


def build(name: str, seed: int) -> onnx.ModelProto:
    return qdq_mlp(WIDTHS, seed=seed, **{"relu": RELU, **CONFIGS[name]})


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def config_model(request) -> tuple[str, onnx.ModelProto]:
    return request.param, build(request.param, seed=3)


def test_model_is_valid_and_runs(config_model):
    _, model = config_model
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 21)}
    y = run_onnxruntime(model, sample_inputs(model, 8))
    assert y.shape == (8, WIDTHS[-1]) and y.dtype == np.float32


def test_float32_exactness_bound_holds(config_model):
    _, model = config_model
    layers = read_layers(model)
    assert [(layer.weight.shape) for layer in layers] == list(zip(WIDTHS[:-1], WIDTHS[1:]))
    for layer in layers:
        assert float32_bound(layer) < 2**24
        # The bias sits on the accumulator grid, as the QDQ convention requires.
        assert layer.bias_frac == layer.x.frac + layer.weight_frac


def test_onnxruntime_is_bit_exact_against_integers(config_model):
    _, model = config_model
    x = sample_inputs(model, 300, seed=5)
    np.testing.assert_array_equal(run_onnxruntime(model, x), integer_reference(model, x))


def test_types_follow_the_arguments(config_model):
    name, model = config_model
    kwargs = CONFIGS[name]
    act = FixedType(kwargs.get("act_bits", 8), kwargs.get("act_signed", True), 0)
    layers = read_layers(model)
    for layer in layers:
        assert (layer.x.bits, layer.x.signed) == (act.bits, act.signed)
        assert (layer.out.bits, layer.out.signed) == (act.bits, act.signed)
    w_dtypes = {t.data_type for t in model.graph.initializer if t.name.endswith("_weight_q")}
    expected = onnx.TensorProto.INT16 if kwargs.get("weight_bits") == 16 else onnx.TensorProto.INT8
    assert w_dtypes == {expected}
    ops = {n.op_type for n in model.graph.node}
    assert ("Gemm" in ops) == kwargs.get("gemm", True)
    assert [layer.relu for layer in layers] == (RELU if "relu" not in kwargs else [kwargs["relu"]] * 3)


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("name", ["int8", "uint8", "int16", "int16_w16", "matmul", "trans_b"])
def test_outputs_are_not_degenerate(name, seed):
    model = build(name, seed)
    layers = read_layers(model)
    x = sample_inputs(model, 200, seed=seed)
    y = run_onnxruntime(model, x)
    q = np.round(y * 2.0 ** layers[-1].out.frac).astype(np.int64)
    out = layers[-1].out
    assert len(np.unique(y)) > 20, "outputs barely vary"
    # An unsigned output's qmin is 0, where negative values rightly land: count it as zero, not saturation.
    saturated = (q == out.qmax) | ((q == out.qmin) & out.signed)
    assert np.mean(saturated) < 0.25, "outputs mostly saturated"
    assert np.mean(q == 0) < 0.8, "outputs mostly zero"
    # Every output column varies with the input, not just the whole tensor.
    assert all(len(np.unique(col)) > 1 for col in y.T)


def test_trans_b_and_matmul_compute_the_same_function():
    x = None
    results = []
    for kwargs in (dict(), dict(trans_b=True), dict(gemm=False)):
        model = qdq_mlp(WIDTHS, relu=RELU, seed=11, **kwargs)
        x = sample_inputs(model, 50, seed=2) if x is None else x
        results.append(run_onnxruntime(model, x))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_trans_b_stores_out_by_in():
    model = qdq_mlp([5, 3], trans_b=True)
    weight = next(t for t in model.graph.initializer if t.name.endswith("_weight_q"))
    assert list(weight.dims) == [3, 5]
    plain = qdq_mlp([5, 3])
    weight = next(t for t in plain.graph.initializer if t.name.endswith("_weight_q"))
    assert list(weight.dims) == [5, 3]


def test_weights_and_biases_have_both_signs():
    for layer in read_layers(qdq_mlp(WIDTHS, seed=4)):
        assert layer.weight.min() < 0 < layer.weight.max()
        assert layer.bias.min() < 0 < layer.bias.max()


def test_weights_shrink_to_stay_float32_exact():
    # int16 activations into 256 inputs leave room only for weights in [-1, 1].
    model = qdq_mlp([256, 4], act_bits=16, weight_bits=16, seed=1)
    (layer,) = read_layers(model)
    assert np.abs(layer.weight).max() <= 1
    assert float32_bound(layer) < 2**24
    x = sample_inputs(model, 64, seed=1)
    np.testing.assert_array_equal(run_onnxruntime(model, x), integer_reference(model, x))


def test_weight_range_caps_weights():
    for layer in read_layers(qdq_mlp(WIDTHS, weight_range=3, seed=2)):
        assert np.abs(layer.weight).max() <= 3


def test_given_fracs_are_used():
    model = qdq_mlp([4, 6, 2], fracs=[4, 2, -1], weight_fracs=[6, 9], relu=[True, False])
    layers = read_layers(model)
    assert [layer.x.frac for layer in layers] + [layers[-1].out.frac] == [4, 2, -1]
    assert [layer.weight_frac for layer in layers] == [6, 9]
    x = sample_inputs(model, 64)
    np.testing.assert_array_equal(run_onnxruntime(model, x), integer_reference(model, x))


def test_batch_dimension():
    fixed = qdq_mlp([4, 3], batch=7)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 7 and dims[1].dim_value == 4
    symbolic = qdq_mlp([4, 3])
    assert symbolic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert symbolic.graph.output[0].name == "y" and symbolic.graph.input[0].name == "x"


def test_same_arguments_give_the_same_bytes():
    assert qdq_mlp(WIDTHS, seed=9).SerializeToString() == qdq_mlp(WIDTHS, seed=9).SerializeToString()
    assert qdq_mlp(WIDTHS, seed=9).SerializeToString() != qdq_mlp(WIDTHS, seed=10).SerializeToString()


def test_jet_tagger():
    model = jet_tagger()
    layers = read_layers(model)
    assert [layer.weight.shape for layer in layers] == [(16, 64), (64, 32), (32, 32), (32, 5)]
    assert [layer.relu for layer in layers] == [True, True, True, False]
    assert all(layer.x.bits == 8 and layer.x.signed for layer in layers)
    assert {t.data_type for t in model.graph.initializer if t.name.endswith("_weight_q")} == {onnx.TensorProto.INT8}
    x = sample_inputs(model, 100)
    y = run_onnxruntime(model, x)
    np.testing.assert_array_equal(y, integer_reference(model, x))
    assert len(np.unique(y)) > 20
    assert jet_tagger().SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("name", ["int8", "uint8", "int16"])
def test_sample_inputs_cover_ties_and_saturation(name):
    model = qdq_mlp([8, 4], **CONFIGS[name])
    layer = read_layers(model)[0]
    x = sample_inputs(model, 32, seed=3)
    assert x.shape == (32, 8) and x.dtype == np.float32
    steps = x.astype(np.float64) * 2.0**layer.x.frac  # exact: power-of-two scaling of float32 values
    ties = steps[steps - np.floor(steps) == 0.5]
    assert (ties > 0).any() and (ties < 0).any(), "ties of both signs"
    assert (ties > layer.x.qmin).any() and (ties < layer.x.qmax).any(), "ties inside the range"
    assert (steps > layer.x.qmax + 0.5).any() and (steps < layer.x.qmin - 0.5).any(), "saturation on both ends"
    assert (steps == layer.x.qmax).any() and (steps == layer.x.qmin).any(), "the extremes"
    assert (x == 0).any() and (x < 0).any()
    on_grid = steps[steps == np.round(steps)]
    assert len(np.unique(on_grid)) > 20, "values spread across the grid"
    np.testing.assert_array_equal(x, sample_inputs(model, 32, seed=3))


def test_sample_inputs_keep_specials_when_small():
    model = qdq_mlp([16, 2])
    steps = sample_inputs(model, 1).astype(np.float64) * 2.0 ** read_layers(model)[0].x.frac
    assert 0.5 in steps and -0.5 in steps and 127 in steps and -128 in steps


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(widths=[4]),
        dict(widths=[4, 0]),
        dict(widths=[4, 2], act_bits=4),
        dict(widths=[4, 2], weight_bits=4),
        dict(widths=[4, 2], fracs=[1, 2, 3]),
        dict(widths=[4, 2], relu=[True, False]),
        dict(widths=[4, 2], fracs=[0, 200]),
        dict(widths=[600, 2], act_bits=16),  # no weight can keep 600 int16 inputs float32-exact
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ModelError):
        qdq_mlp(**kwargs)
