"""QDQ models made by tools (onnxruntime's static quantizer, PyTorch fake-quant exports) against onnxruntime.

Their scales are not powers of two, so aieflow requantizes with an integer multiplier and shift; that is not
bit-identical to onnxruntime's float32 arithmetic in general. These tests measure how far it is, with the
statistics computed here independently of aieflow.exactness (and, where that module runs, checked equal to
its report): per layer (each layer fed onnxruntime's own inputs) at most 1 LSB, on a small fraction of the
values. Zero points with power-of-two scales are exact by construction and must be bit-exact.

`make test-all` (or `pytest -m full -s tests/test_onnx_tools.py`) runs the full random matrix and prints
its counts.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aieflow
from aieflow.examples import onnx_tools as tools
from aieflow.errors import ModelError
from aieflow.examples.onnx_qdq import run_onnxruntime
from aieflow.frontends import Imported
from aieflow.frontends.onnx_qdq import import_onnx, load_onnx
from aieflow.numerics import requantize


# --- statistics, computed here ------------------------------------------------------------------------------


def _layer_value(op, graph, values):
    """An op's output from its input integers, by the IR's definition (dense, and requant for the bias layers
    of the MatMul -> QuantizeLinear -> Add form: tools make MLPs)."""
    assert op.kind in ("dense", "requant")
    x = np.asarray(values[op.inputs[0]], dtype=np.int64)
    if op.kind == "requant":
        acc = x * int(op.attrs.get("scale", 1)) + op.params["bias"].astype(np.int64)
    else:
        acc = x @ op.params["weight"].astype(np.int64) + op.params["bias"].astype(np.int64)
    out = graph.tensors[op.outputs[0]]
    return requantize(acc, int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]), out.zero_point, out.type,
                      bool(op.attrs["relu"]))


def _stats(mine, theirs) -> tuple[int, int, int]:
    d = np.abs(np.asarray(mine, np.int64) - np.asarray(theirs, np.int64))
    return int(d.size), int(np.count_nonzero(d)), int(d.max(initial=0))


def _measure(model, x):
    """(per-layer stats {op: (values, mismatches, max LSB)}, whole-model stats, design, imported)."""
    imp = import_onnx(model)
    g = imp.graph
    design = aieflow.compile(load_onnx(model))
    ref = imp.reference(x)
    assert set(ref) == set(g.tensors)
    for name, v in ref.items():
        assert v.dtype == np.int64 and v.shape == (x.shape[0], g.tensors[name].features)
    # onnxruntime's input quantizer and Tensor.quantize are the same float32 arithmetic: exact.
    np.testing.assert_array_equal(ref[g.inputs[0]], g.tensors[g.inputs[0]].quantize(x))
    layers = {op.name: _stats(_layer_value(op, g, ref), ref[op.outputs[0]]) for op in g.ops}
    out = g.outputs[0]
    y = design.simulate(x, raw=True)
    whole = _stats(y, ref[out])
    # The same count from the model's own float output: the extra graph outputs change nothing.
    t = g.tensors[out]
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    y_float, ref_float = design.simulate(x), run_onnxruntime(proto, x).astype(np.float64)
    float_diff = np.abs(y_float - ref_float) / t.real_scale
    assert int(np.count_nonzero(float_diff > 0.01)) == whole[1]  # float32 DequantizeLinear: tiny residue
    assert int(np.round(float_diff.max(initial=0))) == whole[2]
    _check_against_report(imp, design, x, layers, whole)
    return layers, whole, design, imp


def _check_against_report(imp: Imported, design, x, layers, whole) -> None:
    """What aieflow.exactness says, where it runs, is what was measured here."""
    try:
        from aieflow.exactness import measure
    except ImportError:  # pragma: no cover - the module arrives separately
        return
    report = measure(imp, design, x)
    assert (report.model.values, report.model.mismatches, report.model.max_lsb) == whole
    assert {c.name: (c.values, c.mismatches, c.max_lsb) for c in report.layers} == layers
    assert report.exact == (whole[1] == 0 and all(m == 0 for _, m, _ in layers.values()))


# --- tool-made models, the default slice --------------------------------------------------------------------

ORT_CASES = [
    # (sizes, options): the forms onnxruntime emits
    ((16, 32, 8), dict(form="gemm", activation="quint8")),  # asymmetric uint8, Relu removed by the quantizer
    ((16, 32, 8), dict(form="gemm", activation="qint8", activation_symmetric=True, keep_relu=True)),  # Relu kept
    ((12, 24, 16, 4), dict(form="matmul_add", activation="qint8")),  # MatMul -> QDQ -> Add(bias) -> QDQ
    ((10, 20, 6), dict(form="gemm", activation="quint8", weight_symmetric=False)),  # weight zero points
]


@pytest.mark.parametrize("case", range(len(ORT_CASES)))
def test_onnxruntime_quantized_mlps(case, tmp_path):
    sizes, options = ORT_CASES[case]
    path = tmp_path / "q.onnx"
    model = tools.ort_quantized_mlp(path, sizes, seed=case, **options)
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    x = tools.sample_inputs(model, 400, seed=case)
    layers, whole, design, imp = _measure(path, x)
    g = imp.graph
    assert any(int(op.attrs.get("multiplier", 1)) != 1 for op in g.ops)  # really non-power-of-two scales
    if options.get("form") == "matmul_add":
        assert len(g.ops) == 2 * (len(sizes) - 1)  # each bias Add is a requant op of its own
        assert [op.kind for op in g.ops] == ["dense", "requant"] * (len(sizes) - 1)
    if options.get("keep_relu"):
        assert any(n.op_type == "Relu" for n in model.graph.node) and g.ops[0].attrs["relu"]
    if not options.get("weight_symmetric", True):
        zps = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("weight_zero_point")]
        assert zps and any(int(z) != 0 for z in zps)
    for name, (values, mismatches, max_lsb) in layers.items():
        assert max_lsb <= 1 and mismatches <= 0.01 * values, (name, mismatches, values, max_lsb)
    # A layer's 1-LSB difference can grow in the layers after it: the whole model is measured, not bounded.
    assert whole[1] <= 0.01 * whole[0]


@pytest.mark.parametrize("activation, symmetric", [("quint8", False), ("qint8", True)])
def test_torch_fake_quant_mlps(activation, symmetric, tmp_path):
    path = tmp_path / "t.onnx"
    model = tools.torch_fakequant_mlp(path, (16, 24, 8), seed=3, activation=activation,
                                      activation_symmetric=symmetric, weight_symmetric=symmetric)
    zero_points = [numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute[0].t.data_type in (TensorProto.UINT8, TensorProto.INT8)]
    if not symmetric:
        assert any(int(z) != 0 for z in zero_points)
    x = tools.sample_inputs(model, 400, seed=3)
    layers, whole, _, imp = _measure(path, x)
    assert [op.kind for op in imp.graph.ops] == ["dense", "dense"]
    for name, (values, mismatches, max_lsb) in layers.items():
        assert max_lsb <= 1 and mismatches <= 0.01 * values, (name, mismatches, values, max_lsb)


def test_per_channel_quantization_is_refused(tmp_path):
    path = tmp_path / "pc.onnx"
    tools.ort_quantized_mlp(path, (8, 6, 4), seed=0, per_channel=True)
    with pytest.raises(ModelError, match="per-channel"):
        load_onnx(path)


def test_reference_handles_a_fixed_batch_and_the_input_alone(tmp_path):
    path = tmp_path / "q.onnx"
    model = tools.ort_quantized_mlp(path, (5, 3), seed=4, relu=False)
    for dim in (model.graph.input[0].type.tensor_type.shape.dim[0], model.graph.output[0].type.tensor_type.shape.dim[0]):
        dim.Clear()
        dim.dim_value = 4
    imp = import_onnx(model)
    x = tools.sample_inputs(model, 10, seed=1)  # 10 rows through a batch of 4: padded, then cut
    ref = imp.reference(x)
    whole = import_onnx(path).reference(x)
    assert all(np.array_equal(ref[k], whole[k]) for k in whole)


# --- zero points with power-of-two scales: exact by construction -------------------------------------------


def _zp_model(*, x_zp, y_zp, w_zp=0, y_dtype=np.int8, relu=False, form="gemm", relu_between=False,
              w_dtype=np.int8, w_range=None, k=12, n=7, seed=0):
    """x (uint8, scale 2**-4, zero point x_zp) -> dense -> y (scale 2**-3, zero point y_zp), every scale a
    power of two and every float32 sum exact, so onnxruntime computes exactly the integer semantics."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(w_dtype)
    w_lo, w_hi = w_range or (max(info.min, w_zp - 60), min(info.max, w_zp + 60))
    inits = {
        "sx": np.float32(2 ** -4), "zx": np.uint8(x_zp),
        "W": rng.integers(w_lo, w_hi, (k, n), endpoint=True).astype(w_dtype), "sw": np.float32(2 ** -6),
        "zw": np.array(w_zp, w_dtype),
        "B": rng.integers(-3000, 3000, n).astype(np.int32), "sb": np.float32(2 ** -10), "zb": np.int32(0),
        "sy": np.float32(2 ** -3), "zy": np.array(y_zp, y_dtype),
    }
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["W", "sw", "zw"], ["wd"]),
             helper.make_node("DequantizeLinear", ["B", "sb", "zb"], ["bd"])]
    if form == "gemm":
        nodes.append(helper.make_node("Gemm", ["xd", "wd", "bd"], ["acc"], name="fc"))
    elif form == "matmul_add":
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="fc"),
                  helper.make_node("Add", ["mm", "bd"], ["acc"], name="fc_bias")]
    else:  # bias layer: the MatMul output quantized first (scale 2**-5, zero point 3), then Add
        inits.update({"sm": np.float32(2 ** -5), "zm": np.array(3, y_dtype)})
        nodes += [helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="fc"),
                  helper.make_node("QuantizeLinear", ["mm", "sm", "zm"], ["mq"]),
                  helper.make_node("DequantizeLinear", ["mq", "sm", "zm"], ["md"]),
                  helper.make_node("Add", ["md", "bd"], ["acc"], name="fc_bias")]
    last = "acc"
    if relu and not relu_between:
        nodes.append(helper.make_node("Relu", ["acc"], ["r"]))
        last = "r"
    nodes.append(helper.make_node("QuantizeLinear", [last, "sy", "zy"], ["yq"]))
    out = "yq"
    if relu_between:  # onnxruntime's kept Relu: between two QDQ pairs of the same scale and zero point
        nodes += [helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["yd"]),
                  helper.make_node("Relu", ["yd"], ["r"], name="relu"),
                  helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["rq"])]
        out = "rq"
    nodes.append(helper.make_node("DequantizeLinear", [out, "sy", "zy"], ["y"]))
    g = helper.make_graph(nodes, "zp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
                          [numpy_helper.from_array(np.asarray(v), name) for name, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(m)
    return m


def _grid_inputs(k: int, n: int = 500, seed: int = 0) -> np.ndarray:
    """Multiples of 1/32 with input scale 1/16: every odd one a tie; past both ends of uint8 around 128."""
    return (np.random.default_rng(seed).integers(-4500, 4500, (n, k)) / 32).astype(np.float32)


@pytest.mark.parametrize("kwargs", [
    dict(x_zp=128, y_zp=0),
    dict(x_zp=128, y_zp=-7, relu=True),
    dict(x_zp=0, y_zp=100, y_dtype=np.uint8),
    dict(x_zp=128, y_zp=100, y_dtype=np.uint8, relu=True, form="matmul_add"),
    dict(x_zp=77, y_zp=-20, w_zp=9),  # asymmetric weights: W - 9 still int8
    dict(x_zp=128, y_zp=5, w_zp=200, w_dtype=np.uint8),  # uint8 weights: W - 200 as int8
    dict(x_zp=128, y_zp=-3, w_zp=100, w_range=(-128, 127), relu=True),  # W - 100 leaves int8: int16 weights
    dict(x_zp=128, y_zp=12, relu=True, relu_between=True),  # Relu between QDQ pairs folds into the layer
    dict(x_zp=128, y_zp=4, relu=True, form="bias_layer"),  # MatMul -> QDQ -> Add: a diagonal layer
])
def test_zero_points_with_power_of_two_scales_are_bit_exact(kwargs):
    model = _zp_model(**kwargs)
    imp = import_onnx(model)
    g = imp.graph
    assert all(int(op.attrs.get("multiplier", 1)) == 1 for op in g.ops)
    assert g.tensors[g.inputs[0]].zero_point == kwargs["x_zp"]
    design = aieflow.compile(g)
    x = _grid_inputs(12)
    ref = run_onnxruntime(model, x)
    np.testing.assert_array_equal(design.simulate(x), ref)
    layer_ref = imp.reference(x)
    for op in g.ops:
        np.testing.assert_array_equal(_layer_value(op, g, layer_ref), layer_ref[op.outputs[0]])
    if kwargs.get("w_range"):
        assert g.ops[0].attrs["weight_type"].bits == 16
    if kwargs.get("relu_between"):
        assert len(g.ops) == 1 and g.ops[0].attrs["relu"] and g.outputs == ("rq",)


def test_relu_between_different_scales_is_refused():
    model = _zp_model(x_zp=128, y_zp=12, relu=True, relu_between=True)
    q = next(n for n in model.graph.node if n.output[0] == "rq")
    model.graph.initializer.append(numpy_helper.from_array(np.float32(0.3), "s_other"))
    q.input[1] = "s_other"
    with pytest.raises(ModelError, match="requantizes an activation on its own"):
        load_onnx(model)


def test_mismatched_zero_point_in_a_pair_is_refused():
    model = _zp_model(x_zp=128, y_zp=0)
    dq = next(n for n in model.graph.node if n.output[0] == "xd")
    model.graph.initializer.append(numpy_helper.from_array(np.uint8(127), "zx_other"))
    dq.input[2] = "zx_other"
    with pytest.raises(ModelError, match="zero point 128"):
        load_onnx(model)


# --- the full random matrix (make test-all) ----------------------------------------------------------------

MATRIX_MODELS = 120
MATRIX_INPUTS = 100


def _random_tool_model(i: int, path):
    rng = np.random.default_rng([2024, i])
    depth = int(rng.integers(1, 5))
    sizes = [int(rng.choice([1, 2, 3, 5, 8, 16, 31, 64, 100, 128])) if rng.random() < 0.4
             else int(rng.integers(1, 129)) for _ in range(depth + 1)]
    tool = ["ort_gemm", "ort_matmul_add", "torch"][i % 3]
    activation = ["quint8", "qint8"][(i // 3) % 2]
    symmetric = bool((i // 6) % 2)
    weight_symmetric = bool(rng.random() < 0.5)
    relu = [bool(r) for r in rng.random(depth) < 0.7]
    if tool == "torch":
        tools.torch_fakequant_mlp(path, sizes, seed=i, relu=relu, activation=activation,
                                  activation_symmetric=symmetric, weight_symmetric=weight_symmetric)
    else:
        tools.ort_quantized_mlp(path, sizes, seed=i, relu=relu, form=tool[4:], activation=activation,
                                activation_symmetric=symmetric, weight_symmetric=weight_symmetric,
                                keep_relu=bool(rng.random() < 0.5))
    return f"{tool} {activation} {'sym' if symmetric else 'asym'} w{'sym' if weight_symmetric else 'asym'} {sizes}"


@pytest.mark.full
def test_full_matrix_of_tool_models(tmp_path):
    start = time.time()
    exact_models = exact_layers_models = 0
    values = mismatches = layer_values = layer_mismatches = 0
    worst_model = worst_layer = 0
    lines = []
    for i in range(MATRIX_MODELS):
        path = tmp_path / f"m{i}.onnx"
        what = _random_tool_model(i, path)
        x = tools.sample_inputs(onnx.load(str(path)), MATRIX_INPUTS, seed=i)
        layers, whole, _, _ = _measure(path, x)
        exact_models += whole[1] == 0
        exact_layers_models += all(m == 0 for _, m, _ in layers.values())
        values, mismatches = values + whole[0], mismatches + whole[1]
        layer_values += sum(v for v, _, _ in layers.values())
        layer_mismatches += sum(m for _, m, _ in layers.values())
        worst_model = max(worst_model, whole[2])
        worst_layer = max(worst_layer, max(lsb for _, _, lsb in layers.values()))
        lines.append(f"  {i:3d} {what}: model {whole[1]}/{whole[0]} max {whole[2]} LSB; layers "
                     + ", ".join(f"{m}/{v}:{lsb}" for v, m, lsb in layers.values()))
        assert max(lsb for _, _, lsb in layers.values()) <= 1, lines[-1]
    print("\n".join(lines))
    print(f"\n{MATRIX_MODELS} tool-quantized models x {MATRIX_INPUTS} inputs in {time.time() - start:.1f} s")
    print(f"  bit-exact with onnxruntime at the output: {exact_models} models; mismatching: "
          f"{MATRIX_MODELS - exact_models}")
    print(f"  every layer bit-exact (fed onnxruntime's inputs): {exact_layers_models} models")
    print(f"  output values differing: {mismatches}/{values} = {mismatches / values:.4%}, max {worst_model} LSB")
    print(f"  layer values differing: {layer_mismatches}/{layer_values} = {layer_mismatches / layer_values:.4%}, "
          f"max {worst_layer} LSB")
    assert layer_mismatches <= 0.01 * layer_values
