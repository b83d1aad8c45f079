"""The CNN model builders (aieflow.examples.cnn): valid ONNX that onnxruntime runs, in the forms promised.

- qdq_cnn, one small model per layer kind, in three modes (pow2 int8, pow2 uint8, arbitrary scales with
  uint8 zero points): onnx.checker passes, onnxruntime runs, and onnxruntime computes what the builder meant
  (its own float64 propagation of the calibration inputs): exactly in pow2 mode, within a step otherwise.
- The ONNX forms (auto_pad, Clip inputs or attributes, ReduceMean axes, shared max-pool scales, bias scale
  s_x * s_w), the refusals, and determinism.
- random_qdq_cnn seeds 0..29 (1-D and 2-D, both pow2 modes), sample_cnn_inputs, ort_tensor_values.
- The three torch_cnn kinds, exported by torch.onnx.export and quantized by onnxruntime, against the float
  module (a loose tolerance: the model is quantized).

`pytest -m full tests/test_cnn_models.py` also runs 200 random seeds and random models at the largest caps.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from aieflow.errors import ModelError
from aieflow.examples import cnn
from aieflow.examples.cnn import (
    AddSpec,
    ConcatSpec,
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    GlobalPoolSpec,
    PoolSpec,
    export_and_quantize,
    ort_tensor_values,
    qdq_cnn,
    random_qdq_cnn,
    run_onnxruntime,
    sample_cnn_inputs,
    torch_cnn,
)

# name: (input_shape, layers, extra qdq_cnn arguments)
CASES = {
    "conv2d_same_relu": ((3, 12, 10), [ConvSpec(8, 3, 1, "same", relu="relu")], {}),
    "conv2d_stride2_asymmetric_pads": ((3, 11, 9), [ConvSpec(6, (3, 5), 2, (0, 1, 2, 1))], {}),
    "conv2d_same_lower_relu6": ((2, 9, 9), [ConvSpec(4, 4, 2, "same_lower", relu="relu6")], {}),
    "conv1d": ((2, 32), [ConvSpec(8, 7, 1, 3, relu="relu"), ConvSpec(4, 9, 2, "same", relu="relu6")], {}),
    "depthwise_pointwise": ((4, 10, 10), [ConvSpec(None, 3, 1, 1, groups="depthwise", relu="relu6"),
                                          ConvSpec(8, 1, 1, 0, relu="relu")], {}),
    "depthwise_multiplier_1d": ((3, 20), [ConvSpec(6, 5, 2, "same", groups="depthwise")], {}),
    "maxpool": ((4, 8, 8), [ConvSpec(4, 3, relu="relu"), PoolSpec("max", 2)], {}),
    "maxpool_overlapping_padded": ((3, 9, 9), [PoolSpec("max", 3, 2, 1)], {}),
    "maxpool_1d_same": ((3, 15), [PoolSpec("max", 3, 2, "same")], {}),
    "avgpool": ((4, 8, 8), [ConvSpec(4, 3, relu="relu"), PoolSpec("avg", 2)], {}),
    "avgpool_overlapping_exclude_pad": ((3, 9, 7), [PoolSpec("avg", 3, 2, 1)], {}),
    "avgpool_include_pad": ((3, 9, 7), [PoolSpec("avg", 3, 2, 1, count_include_pad=1)], {}),
    "global_avg": ((5, 6, 6), [ConvSpec(6, 3, relu="relu"), GlobalPoolSpec("avg")], {}),
    "global_max": ((5, 6, 6), [ConvSpec(6, 3, relu="relu"), GlobalPoolSpec("max")], {}),
    "reducemean_axes_input": ((5, 6, 6), [GlobalPoolSpec("reducemean")], {"opset": 18}),
    "reducemean_axes_attribute_1d": ((5, 12), [GlobalPoolSpec("reducemean")], {"opset": 13}),
    "residual": ((6, 8, 8), [ConvSpec(6, 3, relu="relu"), ConvSpec(6, 3), AddSpec(0, relu="relu")], {}),
    "residual_from_input": ((4, 16), [ConvSpec(4, 5, relu="relu6"), AddSpec("input")], {}),
    "concat": ((3, 8, 8), [ConvSpec(5, 3, relu="relu"), ConcatSpec("input"), ConvSpec(4, 1)], {}),
    "flatten_dense": ((3, 6, 6), [ConvSpec(4, 3, 2, relu="relu"), FlattenSpec(), DenseSpec(10)], {}),
    "reshape_dense_relu": ((3, 8), [FlattenSpec("reshape"), DenseSpec(6, relu="relu"), DenseSpec(3, trans_b=False)],
                           {}),
    "int16_activations": ((2, 6, 6), [ConvSpec(4, 3, relu="relu"), PoolSpec("max", 2), GlobalPoolSpec("avg")],
                          {"act_bits": 16, "opset": 21}),
    "int16_weights": ((3, 6, 6), [ConvSpec(4, 3, relu="relu", weight_bits=16), FlattenSpec(), DenseSpec(5)],
                      {"opset": 21}),
    "mixed_types": ((3, 8, 8), [ConvSpec(4, 3, relu="relu", act="uint8"), ConvSpec(4, 3, act="int16")],
                    {"opset": 21}),
}
# (pow2, signed): the exact fast path in int8 and uint8 (zero point 0), and arbitrary scales with uint8 zero
# points.
MODES = {"pow2_int8": (True, True), "pow2_uint8": (True, False), "float_uint8": (False, False)}


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _node(model, op_type):
    return next(n for n in model.graph.node if n.op_type == op_type)


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _output_step(model) -> float:
    last_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"][-1]
    return float(_inits(model)[last_q.input[1]])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_qdq_cnn_layer_kinds(case, mode):
    shape, layers, extra = CASES[case]
    pow2, signed = MODES[mode]
    built = cnn._build(layers, shape, seed=3, signed=signed, pow2=pow2, **extra)
    model = built.model
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    # onnxruntime computes what the builder meant, on its calibration inputs.
    y = run_onnxruntime(model, built.x)
    assert y.shape == built.y.shape
    step = _output_step(model)
    if pow2:
        # Exact (average pools divide in float32 there and in float64 here: a tie could round apart).
        averaging = any(op in _ops(model) for op in ("AveragePool", "GlobalAveragePool", "ReduceMean"))
        assert np.abs(y - built.y).max() <= (step if averaging else 0.0)
    else:
        assert np.mean(np.abs(y - built.y) > 1.01 * step) < 0.02
    # And it runs on the sampled inputs with any batch size.
    x = sample_cnn_inputs(model, 3, seed=1)
    assert x.shape == (3, *shape) and x.dtype == np.float32
    assert np.isfinite(run_onnxruntime(model, x)).all()


def test_qdq_form():
    """Every float op reads DequantizeLinear outputs and feeds a QuantizeLinear (Relu / Clip in between);
    int8 weights and an int32 bias behind DequantizeLinear."""
    model = qdq_cnn([ConvSpec(4, 3, 2, relu="relu"), ConvSpec(4, 3, relu="relu6"), FlattenSpec(), DenseSpec(10)],
                    (3, 6, 6), seed=0)
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    inits = _inits(model)
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        activation = node.op_type in ("Relu", "Clip")
        for name in node.input:
            if name in inits:  # Clip's bounds
                continue
            assert producers[name].op_type == ("Conv" if activation else "DequantizeLinear"), (node.name, name)
        after = consumers[node.output[0]].op_type
        assert after in ("QuantizeLinear",) + (() if activation else ("Relu", "Clip")), (node.name, after)
    conv = _node(model, "Conv")
    x_dq, w_dq, b_dq = (producers[n] for n in conv.input)
    assert inits[w_dq.input[0]].dtype == np.int8 and inits[w_dq.input[2]] == 0
    assert inits[b_dq.input[0]].dtype == np.int32 and inits[b_dq.input[2]] == 0
    assert inits[b_dq.input[1]] == np.float32(inits[x_dq.input[1]]) * np.float32(inits[w_dq.input[1]])
    # The last DequantizeLinear is the float output y [N, 10].
    assert model.graph.node[-1].output[0] == "y"
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 10]


def test_pow2_scales_and_zero_points():
    for signed in (True, False):
        model = qdq_cnn(CASES["residual"][1], (6, 8, 8), seed=1, signed=signed)
        inits = _inits(model)
        for name, value in inits.items():
            if name.endswith("_scale"):
                assert np.log2(float(value)) == np.round(np.log2(float(value))), name
            if name.endswith("_zero_point"):
                assert int(value) == 0, name
    model = qdq_cnn(CASES["conv2d_same_relu"][1], (3, 12, 10), seed=1, signed=False, pow2=False)
    inits = _inits(model)
    assert inits["input_zero_point"].dtype == np.uint8 and int(inits["input_zero_point"]) != 0
    assert np.log2(float(inits["input_scale"])) != np.round(np.log2(float(inits["input_scale"])))


def test_attribute_forms():
    same = qdq_cnn([ConvSpec(4, 3, 2, "same")], (2, 8, 8), seed=0)
    assert _attrs(_node(same, "Conv")) == {"auto_pad": b"SAME_UPPER", "group": 1, "kernel_shape": [3, 3],
                                          "strides": [2, 2]}
    lower = qdq_cnn([ConvSpec(4, 4, 1, "same_lower")], (2, 8), seed=0)
    assert _attrs(_node(lower, "Conv"))["auto_pad"] == b"SAME_LOWER"
    explicit = qdq_cnn([ConvSpec(4, 3, 1, (1, 2))], (2, 8, 8), seed=0)
    assert _attrs(_node(explicit, "Conv"))["pads"] == [1, 2, 1, 2]
    assert "auto_pad" not in _attrs(_node(explicit, "Conv"))
    depthwise = qdq_cnn([ConvSpec(None, 3, groups="depthwise")], (5, 8, 8), seed=0)
    assert _attrs(_node(depthwise, "Conv"))["group"] == 5
    # relu6: Clip with initializer bounds from opset 11, attributes before.
    for opset, form in ((17, "inputs"), (10, "attributes")):
        model = qdq_cnn([ConvSpec(4, 3, relu="relu6")], (2, 6, 6), seed=0, opset=opset)
        clip = _node(model, "Clip")
        if form == "inputs":
            inits = _inits(model)
            assert len(clip.input) == 3 and (inits[clip.input[1]], inits[clip.input[2]]) == (0.0, 6.0)
        else:
            assert len(clip.input) == 1 and _attrs(clip) == {"min": 0.0, "max": 6.0}
        run_onnxruntime(model, sample_cnn_inputs(model, 1))
    # ReduceMean: axes an attribute below opset 18, an input from 18 on; keepdims=1 always.
    old = _node(qdq_cnn([GlobalPoolSpec("reducemean")], (3, 4, 4), seed=0, opset=17), "ReduceMean")
    assert _attrs(old) == {"axes": [2, 3], "keepdims": 1} and len(old.input) == 1
    new_model = qdq_cnn([GlobalPoolSpec("reducemean")], (3, 4, 4), seed=0, opset=18)
    new = _node(new_model, "ReduceMean")
    assert _attrs(new) == {"keepdims": 1} and list(_inits(new_model)[new.input[1]]) == [2, 3]
    # count_include_pad is written only when 1.
    assert "count_include_pad" not in _attrs(_node(qdq_cnn([PoolSpec("avg", 3, 2, 1)], (2, 7, 7), seed=0),
                                                   "AveragePool"))
    include = qdq_cnn([PoolSpec("avg", 3, 2, 1, count_include_pad=1)], (2, 7, 7), seed=0)
    assert _attrs(_node(include, "AveragePool"))["count_include_pad"] == 1


def test_max_pools_and_flatten_keep_their_input_quantizer():
    model = qdq_cnn([ConvSpec(4, 3, relu="relu"), PoolSpec("max", 2), GlobalPoolSpec("max"), FlattenSpec()],
                    (3, 8, 8), seed=0, signed=False, pow2=False)
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    conv_q, pool_q, global_q, flat_q = quantizers[1:]
    for q in (pool_q, global_q, flat_q):
        assert q.input[1:] == conv_q.input[1:]
    avg = qdq_cnn([ConvSpec(4, 3, relu="relu"), PoolSpec("avg", 2)], (3, 8, 8), seed=0)
    conv_q, pool_q = [n for n in avg.graph.node if n.op_type == "QuantizeLinear"][1:]
    assert pool_q.input[1] != conv_q.input[1]  # its own scale


def test_refusals():
    with pytest.raises(ModelError, match="opset 21"):
        qdq_cnn([ConvSpec(4, 3)], (2, 6, 6), seed=0, act_bits=16)
    with pytest.raises(ModelError, match="groups"):
        qdq_cnn([ConvSpec(5, 3, groups=2)], (4, 6, 6), seed=0)
    with pytest.raises(ModelError, match="float32-exact"):  # 64 * 49 int16 inputs per output: too many
        qdq_cnn([ConvSpec(4, 7)], (64, 8, 8), seed=0, act_bits=16, opset=21)
    qdq_cnn([ConvSpec(4, 7)], (64, 8, 8), seed=0, act_bits=16, opset=21, pow2=False)  # no exactness promised
    with pytest.raises(ModelError, match="does not fit"):
        qdq_cnn([ConvSpec(4, 5, 1, 0)], (2, 3, 3), seed=0)
    with pytest.raises(ModelError, match="equal shapes"):
        qdq_cnn([ConvSpec(4, 3, 2), AddSpec("input")], (4, 6, 6), seed=0)
    with pytest.raises(ModelError, match="FlattenSpec"):
        qdq_cnn([DenseSpec(4)], (2, 6, 6), seed=0)
    with pytest.raises(ModelError, match="earlier layer"):
        qdq_cnn([ConvSpec(2, 3), AddSpec(1)], (2, 6, 6), seed=0)


def test_deterministic():
    layers = CASES["residual"][1]
    a = qdq_cnn(layers, (6, 8, 8), seed=7).SerializeToString()
    assert qdq_cnn(layers, (6, 8, 8), seed=7).SerializeToString() == a
    assert qdq_cnn(layers, (6, 8, 8), seed=8).SerializeToString() != a
    m1, d1 = random_qdq_cnn(5)
    m2, d2 = random_qdq_cnn(5)
    assert m1.SerializeToString() == m2.SerializeToString() and d1 == d2


def _check_random(seed: int, **kwargs) -> dict:
    model, desc = random_qdq_cnn(seed, **kwargs)
    onnx.checker.check_model(model, full_check=True)
    x = sample_cnn_inputs(model, 2, seed)
    assert list(x.shape[1:]) == desc["input_shape"]
    y = run_onnxruntime(model, x)
    assert list(y.shape) == [2, *desc["output_shape"]] and np.isfinite(y).all()
    layers = [layer for layer in desc["layers"] if layer["type"] != "flatten"]
    assert 1 <= len(layers) <= 4
    assert desc["layers"][-1]["type"] in ("global_pool", "dense")
    return desc


def test_random_qdq_cnn():
    seen = {"types": set(), "acts": set(), "dims": set(), "pools": set(), "heads": set()}
    for seed in range(30):
        desc = _check_random(seed, dims=1 + seed % 2, pow2=seed % 3 != 0)
        assert desc["dims"] == 1 + seed % 2 and len(desc["input_shape"]) == 1 + desc["dims"]
        assert 1 <= desc["input_shape"][0] <= 32 and all(4 <= s <= 16 for s in desc["input_shape"][1:])
        seen["types"] |= {layer["type"] for layer in desc["layers"]}
        seen["acts"].add(desc["act"])
        seen["dims"].add(desc["dims"])
        seen["pools"] |= {layer["kind"] for layer in desc["layers"] if layer["type"] == "pool"}
        seen["heads"].add(desc["layers"][-1]["type"])
    assert seen["types"] >= {"conv", "pool", "add", "global_pool", "flatten", "dense"}
    assert seen["acts"] == {"int8", "uint8", "int16"}
    assert seen["pools"] == {"max", "avg"} and seen["heads"] == {"global_pool", "dense"}


@pytest.mark.full
def test_random_qdq_cnn_many():
    for seed in range(200):
        _check_random(seed, dims=None, pow2=seed % 2 == 0)


def test_random_qdq_cnn_largest():
    for seed in range(12):
        _check_random(seed, dims=None, pow2=seed % 2 == 0, max_channels=128, max_spatial=64)


@pytest.mark.parametrize("mode", MODES)
def test_sample_cnn_inputs_cover_the_input_quantizer(mode):
    pow2, signed = MODES[mode]
    model = qdq_cnn([ConvSpec(4, 3)], (2, 5, 5), seed=0, pow2=pow2, signed=signed)
    x = sample_cnn_inputs(model, 4, seed=2)
    assert x.shape == (4, 2, 5, 5) and x.dtype == np.float32
    inits = _inits(model)
    scale, zero = float(inits["input_scale"]), int(inits["input_zero_point"])
    info = np.iinfo(inits["input_zero_point"].dtype)
    steps = x.astype(np.float64) / scale + zero  # in integer steps
    if pow2:  # the division is exact: ties are exact ties
        assert np.any(steps % 1 == 0.5) and np.any((steps % 1 == 0.5) & (np.abs(steps - zero) < 3))
    assert steps.max() > info.max and steps.min() < info.min  # saturation at both ends
    assert np.any(np.isclose(steps, info.max)) and np.any(np.isclose(steps, info.min))
    assert np.any(x == 0.0)
    np.testing.assert_array_equal(x, sample_cnn_inputs(model, 4, seed=2))
    one_d = qdq_cnn([ConvSpec(2, 3)], (3, 7), seed=0)
    assert sample_cnn_inputs(one_d, 2).shape == (2, 3, 7)


def test_ort_tensor_values():
    model = qdq_cnn(CASES["maxpool"][1], (4, 8, 8), seed=0)
    before = model.SerializeToString()
    x = sample_cnn_inputs(model, 2)
    names = ["l0_conv", "l0_out_q", "l1_maxpool", "l0_weight_quantized", "x", "y"]
    values = ort_tensor_values(model, x, names)
    assert model.SerializeToString() == before
    assert values["l0_conv"].shape == (2, 4, 8, 8) and values["l0_conv"].dtype == np.float32
    assert values["l0_out_q"].dtype == np.int8 and values["l1_maxpool"].shape == (2, 4, 4, 4)
    assert values["l0_weight_quantized"].dtype == np.int8 and values["l0_weight_quantized"].shape == (4, 4, 3, 3)
    np.testing.assert_array_equal(values["x"], x)
    np.testing.assert_array_equal(values["y"], run_onnxruntime(model, x))
    # The max pool of the dequantized conv output, by hand.
    conv_out = values["l0_out_q"].astype(np.float64) * float(_inits(model)["l0_out_scale"])
    pooled = conv_out.reshape(2, 4, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(values["l1_maxpool"], pooled)
    with pytest.raises(ModelError):
        ort_tensor_values(model, x, ["no_such_tensor"])


# --- PyTorch, exported and quantized by the users' tools ---------------------------------------------------


@pytest.fixture(scope="module")
def torch_models():
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime.quantization")
    return {kind: (torch_cnn(kind, seed=0), export_and_quantize(torch_cnn(kind, seed=0),
                                                                 cnn.TORCH_CNN_INPUT_SHAPES[kind], None, seed=0))
            for kind in cnn.TORCH_CNN_KINDS}


def _float_output(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", ["cnn", "separable", "conv1d"])
def test_torch_cnn_export_and_quantize(torch_models, kind):
    module, model = torch_models[kind]
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["aieflow.exporter"] == "dynamo" and "aieflow.exporter_fallback" not in props
    ops = _ops(model)
    assert "BatchNormalization" not in ops  # folded into the Conv weights by the exporter
    assert ops.count("Conv") == {"cnn": 2, "separable": 4, "conv1d": 2}[kind] and ops.count("Gemm") == 1
    inits = _inits(model)
    assert inits["x_zero_point"].dtype == np.uint8
    for node in model.graph.node:  # int8 weights, int32 biases behind DequantizeLinear
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype in (np.int8, np.int32)
    shape = cnn.TORCH_CNN_INPUT_SHAPES[kind]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.random.default_rng(1).standard_normal((5, *shape)).astype(np.float32)
    y, y_float = run_onnxruntime(model, x), _float_output(module, x)
    assert y.shape == y_float.shape
    # Quantized: close to the float module, not equal (measured: at most 2% of the largest output).
    assert np.abs(y - y_float).max() <= 0.1 * np.abs(y_float).max()
    assert np.corrcoef(y.ravel(), y_float.ravel())[0, 1] > 0.99
    assert run_onnxruntime(model, sample_cnn_inputs(model, 2)).shape == (2, *y.shape[1:])


def test_torch_cnn_torchscript_and_saving(tmp_path):
    pytest.importorskip("torch")
    module = torch_cnn("conv1d", seed=1)
    path = tmp_path / "conv1d.onnx"
    model = export_and_quantize(module, (2, 64), path, calib_samples=8, seed=1, dynamo=False)
    assert onnx.load(str(path)).SerializeToString() == model.SerializeToString()
    props = {p.key: p.value for p in model.metadata_props}
    assert props["aieflow.exporter"] == "torchscript"
    assert "GlobalAveragePool" in _ops(model) and "Flatten" in _ops(model)
    x = np.random.default_rng(2).standard_normal((3, 2, 64)).astype(np.float32)
    y_float = _float_output(module, x)
    assert np.abs(run_onnxruntime(model, x) - y_float).max() <= 0.1 * np.abs(y_float).max()


def test_export_falls_back_to_torchscript(monkeypatch):
    torch = pytest.importorskip("torch")
    export = torch.onnx.export

    def no_dynamo(*args, **kwargs):
        if kwargs.get("dynamo", True) is not False:
            raise RuntimeError("dynamo exporter unavailable")
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", no_dynamo)
    with pytest.warns(UserWarning, match="falling back to dynamo=False"):
        model = export_and_quantize(torch_cnn("cnn", seed=2), (3, 16, 16), None, calib_samples=8)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["aieflow.exporter"] == "torchscript"
    assert "RuntimeError: dynamo exporter unavailable" in props["aieflow.exporter_fallback"]
    with pytest.raises(ModelError, match="dynamo exporter failed"):
        export_and_quantize(torch_cnn("cnn", seed=2), (3, 16, 16), None, calib_samples=8, dynamo=True)
