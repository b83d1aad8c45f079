"""Convolutional networks through the QONNX and Brevitas frontends: bit-exact with qonnx's executor and with the
module's forward pass, layer by layer and through the compiled design, and every refusal one clear ModelError.

Default run: 12 random QONNX CNNs and 6 random Brevitas CNNs (each compiled with aieflow.compile, which
measures the design against the source; then every layer and the design's output compared on 64 more inputs
that hit ties and saturation), the small Brevitas CNN trained on synthetic 16x16 images, hand-built
BatchNormalization forms, the refusals, and the mapping of a requantized map whose size is no multiple of
the requant kernel's 16 lanes. `-m full`: 120 random QONNX CNNs and 100 random Brevitas CNNs
(asserted bit-exact or refused with a clear error); prints counts with -s.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import brevitas  # noqa: F401  (`make test` installs the extras: missing is a failure, not a skip)
import qonnx  # noqa: F401
import torch
from onnx import TensorProto, helper, numpy_helper

import aieflow
from aieflow.errors import ModelError
from aieflow.examples.brevitas import (brevitas_cnn, brevitas_cnn_inputs, random_brevitas_cnn, synthetic_images,
                                       train_cnn)
from aieflow.examples.qonnx import DOMAIN, MODES, qonnx_cnn_inputs, random_qonnx_cnn, run_graph
from aieflow.frontends.qonnx import import_qonnx
from aieflow.frontends.torch_module import import_torch

warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
BATCH = 4  # a map's iteration must be whole 4-byte PLIO words: 4 samples of any 8-bit map are


# --- the comparison ---------------------------------------------------------------------------------------------


def _counts() -> dict:
    return {"models": 0, "exact": 0, "refused": 0, "ties": 0, "saturations": 0, "layers": 0, "values": 0,
            "ops": {}, "forms": {}, "modes": set(), "dims": set(), "reasons": []}


def _bump(d: dict, key: str, n: int = 1) -> None:
    d[key] = d.get(key, 0) + n


def _compare(imported, x, counts: dict, what: str) -> None:
    """Compile (the compile measures the design against the source on its calibration inputs), then compare
    every layer the source exposes and the design's output with the source on x (ties, saturation)."""
    g = imported.graph
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # an inexact BatchNormalization fold would warn
        design = aieflow.compile(imported, batch=BATCH)
    rep = design.exactness
    assert rep.exact and rep.model.values > 0, f"{what}: " + "; ".join(rep.lines())
    ref = imported.reference(x)
    tin = g.tensors[g.inputs[0]]
    q_in = tin.from_source(ref[g.inputs[0]]) if g.inputs[0] in ref else tin.quantize(tin.from_source(x))
    assert np.array_equal(q_in, tin.quantize(tin.from_source(x))), f"{what}: input quantization differs"
    stats: dict = {}
    vals = run_graph(g, q_in, stats)
    for name, want in ref.items():  # every layer: the IR's integer semantics equal the source's
        want = g.tensors[name].from_source(want)
        diff = np.count_nonzero(vals[name] != want)
        assert diff == 0, f"{what}, tensor {name}: {diff} of {want.size} values differ"
        counts["values"] += want.size
    counts["layers"] += len(ref) - 1
    out = g.tensors[g.outputs[0]]
    y = design.simulate(tin.to_source(q_in), raw=True)
    diff = np.count_nonzero(out.from_source(y) != out.from_source(ref[g.outputs[0]]))
    assert diff == 0, f"{what}: {diff} design outputs differ from the source"
    counts["exact"] += 1
    counts["ties"] += stats.get("ties", 0)
    counts["saturations"] += stats.get("saturations", 0)
    for op in g.ops:
        _bump(counts["ops"], op.kind)


def _report(what: str, c: dict, seconds: float) -> str:
    ops = ", ".join(f"{k} {v}" for k, v in sorted(c["ops"].items()))
    forms = ", ".join(f"{k} {v}" for k, v in sorted(c["forms"].items()))
    return (f"{what}: {c['models']} models, {c['exact']} bit-exact, {c['refused']} refused; {c['layers']} layers "
            f"compared, {c['values']:,} values; {c['ties']} ties, {c['saturations']} saturations; ops: {ops}; "
            f"{forms}; {seconds:.1f} s")


# --- random QONNX CNNs --------------------------------------------------------------------------------------------


def _qonnx_forms(spec, g, counts: dict) -> None:
    f = counts["forms"]
    counts["dims"].add(spec.dims)
    counts["modes"].add(spec.input.mode)
    for i, layer in enumerate(spec.layers):
        kind = layer["kind"]
        if "out" in layer:
            counts["modes"].add(layer["out"].mode)
            _bump(f, "zero points", int(layer["out"].zp != 0))
        if kind == "conv":
            _bump(f, "residual" if layer.get("residual") else ("depthwise" if layer["depthwise"] else "conv"))
            if layer["bn"] is not None:
                _bump(f, "bn in conv" if f"conv{i}" not in g.tensors else "bn as conv + requant")
            _bump(f, "stride 2", int(max(layer["strides"]) == 2))
            _bump(f, "padded", int(any(layer["pads"])))
        elif kind == "avgpool":
            _bump(f, "global avgpool" if layer["global"] else ("trunc avgpool" if layer["trunc"] else "avgpool"))
        elif kind == "requant" and layer["bn"] is not None:
            _bump(f, "bn of a map")
        else:
            _bump(f, kind)
    _bump(f, "zero point moved", sum(t.endswith("_zp0") for t in g.tensors))
    _bump(f, f"head {spec.head['kind'] if spec.head else 'map'}")
    _bump(f, f"{spec.dims}-D")


def _check_qonnx(seed: int, counts: dict, inputs: int = 64) -> None:
    rng = np.random.default_rng(seed)
    model, spec = random_qonnx_cnn(rng)
    counts["models"] += 1
    try:
        imported = import_qonnx(model)
        _qonnx_forms(spec, imported.graph, counts)
        x = qonnx_cnn_inputs(spec, inputs, rng)
        _compare(imported, x, counts, f"qonnx cnn {seed}")
    except aieflow.AieflowError as e:
        counts["refused"] += 1
        counts["reasons"].append(f"model {seed}: {e}")


def test_random_qonnx_cnns_slice():
    counts, t0 = _counts(), time.time()
    for seed in range(12):
        _check_qonnx(seed, counts)
    print("\n" + _report("qonnx cnns", counts, time.time() - t0))
    assert counts["exact"] == 12, counts["reasons"]
    assert counts["ties"] > 0 and counts["saturations"] > 0


@pytest.mark.full
def test_random_qonnx_cnns_full():
    counts, t0 = _counts(), time.time()
    for seed in range(1000, 1120):
        _check_qonnx(seed, counts)
    print("\n" + _report("qonnx cnns", counts, time.time() - t0))
    for r in counts["reasons"]:
        print("  refused:", r)
    assert counts["models"] >= 100 and counts["exact"] + counts["refused"] == counts["models"]
    assert counts["refused"] <= counts["models"] // 20, counts["reasons"]
    assert counts["modes"] == set(MODES) and counts["dims"] == {1, 2}
    assert counts["ties"] > 0 and counts["saturations"] > 0
    for form in ("depthwise", "residual", "bn in conv", "bn as conv + requant", "bn of a map", "trunc avgpool",
                 "avgpool", "maxpool", "zero point moved", "head flatten", "head gap", "head map"):
        assert counts["forms"].get(form, 0) > 0, form


# --- random Brevitas CNNs -----------------------------------------------------------------------------------------


def _check_brevitas(seed: int, counts: dict, inputs: int = 64) -> None:
    rng = np.random.default_rng(seed)
    module, desc = random_brevitas_cnn(rng)
    counts["models"] += 1
    counts["dims"].add(desc["dims"])
    for b in desc["blocks"]:
        _bump(counts["forms"], b["after"])
        _bump(counts["forms"], "depthwise", int(b["depthwise"]))
        if "pool" in b:
            _bump(counts["forms"], b["pool"].split(" ")[0].split("2")[0])
    try:
        imported = import_torch(module, torch.randn(2, *desc["input"]))
        x = brevitas_cnn_inputs(imported, inputs, rng)
        _compare(imported, x, counts, f"brevitas cnn {seed} {desc}")
    except aieflow.AieflowError as e:
        counts["refused"] += 1
        counts["reasons"].append(f"model {seed} {desc}: {e}")


def test_random_brevitas_cnns_slice():
    counts, t0 = _counts(), time.time()
    for seed in range(6):
        _check_brevitas(seed, counts)
    print("\n" + _report("brevitas cnns", counts, time.time() - t0))
    assert counts["exact"] == 6, counts["reasons"]


@pytest.mark.full
def test_random_brevitas_cnns_full():
    counts, t0 = _counts(), time.time()
    for seed in range(1000, 1100):
        _check_brevitas(seed, counts)
    print("\n" + _report("brevitas cnns", counts, time.time() - t0))
    for r in counts["reasons"]:
        print("  refused:", r)
    assert counts["models"] == 100 and counts["exact"] + counts["refused"] == counts["models"]
    assert counts["refused"] <= 5, counts["reasons"]
    assert counts["dims"] == {1, 2} and counts["ties"] > 0 and counts["saturations"] > 0
    for form in ("bn", "relu", "identity", "output", "depthwise", "max", "truncavg"):
        assert counts["forms"].get(form, 0) > 0, form


# --- the trained CNN ----------------------------------------------------------------------------------------------


def test_trained_cnn_compiles_and_matches_its_forward_pass():
    module = train_cnn(brevitas_cnn(), steps=60, seed=0)
    assert module.accuracy > 0.5  # four classes: better than chance
    x, _ = synthetic_images(8, 7)
    design = aieflow.compile(module, example_input=x, batch=BATCH)
    rep = design.exactness
    assert rep.source == "brevitas" and rep.exact, "\n".join(rep.lines())
    g = design.graph
    assert [op.kind for op in g.ops] == ["conv", "requant", "pool", "conv", "pool", "dense"]
    assert len(rep.layers) == len(g.ops)  # every layer measured (forward hooks), BatchNorm folded into the conv
    # and on images like the training data, and on inputs at the quantizer's ties and ends
    imported = import_torch(module, x)
    counts = _counts()
    xs = np.concatenate([synthetic_images(64, 11)[0].numpy(),
                         brevitas_cnn_inputs(imported, 64, np.random.default_rng(3))])
    _compare(imported, xs, counts, "trained cnn")
    scores = design.simulate(xs[:64])
    with torch.no_grad():
        want = module(torch.from_numpy(xs[:64]))
    want = (want.value if hasattr(want, "value") else want).numpy()
    assert np.array_equal(scores, want)  # dequantized class scores, equal as floats too
    print(f"\ntrained cnn: accuracy {module.accuracy:.2f}, {counts['values']:,} values compared, "
          f"{counts['ties']} ties, {counts['saturations']} saturations")


def test_a_trained_batchnorm_is_refused_and_the_hint_works():
    """A trained BatchNorm's per-channel scales are no small multiples of one scale: refused, naming it; merged
    into the conv as the hint says (brevitas.nn.utils.merge_bn), the model compiles bit-exact."""
    from brevitas.nn.utils import merge_bn

    module = train_cnn(brevitas_cnn(), steps=20, seed=1, snap=False)
    x, _ = synthetic_images(8, 5)
    with pytest.raises(ModelError) as e:
        aieflow.compile(module, example_input=x, batch=BATCH)
    assert "per-channel scales" in e.value.reason and "BatchNormalization" in e.value.node
    assert "merge_bn" in e.value.hint
    merge_bn(module[1], module[2])
    module[2] = torch.nn.Identity()
    design = aieflow.compile(module, example_input=x, batch=BATCH)
    assert design.exactness.exact, "\n".join(design.exactness.lines())


# --- hand-built models: BatchNormalization forms, pools, refusals ------------------------------------------------


class _Net:
    """A QONNX model built node by node: x [in_shape] -> Quant 'qx' -> ... -> the last output."""

    def __init__(self, in_shape=(1, 3, 6, 6), x_scale=2.0 ** -4, x_zp=0.0, x_bits=8.0, x_signed=1):
        self.nodes, self.inits, self.in_shape = [], [], list(in_shape)
        self.last = self.quant("x", "qx", x_scale, zp=x_zp, bits=x_bits, signed=x_signed)

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def quant(self, x: str, out: str, scale, zp=0.0, bits=8.0, signed=1, narrow=0, mode="ROUND") -> str:
        ins = [x, self.const(f"{out}_s", scale), self.const(f"{out}_z", zp), self.const(f"{out}_b", bits)]
        self.nodes.append(helper.make_node("Quant", ins, [out], domain=DOMAIN, name=out, signed=signed,
                                           narrow=narrow, rounding_mode=mode))
        self.last = out
        return out

    def node(self, op: str, ins, out: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, list(ins), [out], name=out, domain=domain, **attrs))
        self.last = out
        return out

    def weights(self, name: str, shape, scale=2.0 ** -5, seed=0, lim=20) -> str:
        w = np.random.default_rng(seed).integers(-lim, lim + 1, shape) * scale
        return self.quant(self.const(name, w), f"{name}_q", scale)

    def conv(self, out: str, co=4, k=3, ci=None, **attrs) -> str:
        ci = self.in_shape[1] if ci is None else ci
        x = self.last
        dims = len(self.in_shape) - 2
        w = self.weights(f"{out}_w", (co, ci) + (k,) * dims)
        attrs.setdefault("kernel_shape", [k] * dims)
        return self.node("Conv", [x, w], out, **attrs)

    def batchnorm(self, out: str, scale, offset, eps=1e-5) -> str:
        scale, offset = np.asarray(scale, dtype=np.float64), np.asarray(offset, dtype=np.float64)
        var = np.full(scale.shape, 1024.0)
        ins = [self.last, self.const(f"{out}_g", scale * 32), self.const(f"{out}_b", offset),
               self.const(f"{out}_m", np.zeros_like(scale)), self.const(f"{out}_v", var)]
        return self.node("BatchNormalization", ins, out, epsilon=eps)

    def model(self):
        g = helper.make_graph(self.nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.in_shape)],
                              [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 2)])
        m.ir_version = 8
        return m


def _exact(net: _Net, samples: int = 64):
    """Import, compile (measured) and compare on random inputs; returns the imported model."""
    imported = import_qonnx(net.model())
    rng = np.random.default_rng(1)
    shape = (samples, *net.in_shape[1:])
    x = (rng.integers(-160, 160, shape) / 16.0 + rng.choice([0, 1 / 32], shape)).astype(np.float32)  # ties too
    _compare(imported, x, _counts(), "hand-built")
    return imported


def test_batchnorm_folded_into_the_conv():
    """Per-channel scales powers of two apart (and of either sign), offsets on the accumulator grid: one conv."""
    net = _Net()
    net.conv("conv", co=4, pads=[1, 1, 1, 1])
    net.batchnorm("bn", [1.0, 2.0, -0.5, 0.25], [0.5, -1.25, 0.0, 2.0])
    net.node("Relu", ["bn"], "relu")
    net.quant("relu", "y", 2.0 ** -2, signed=0)
    g = _exact(net).graph
    assert [op.kind for op in g.ops] == ["conv"] and g.ops[0].attrs["relu"]


def test_batchnorm_with_a_fine_offset_becomes_conv_then_requant():
    """An offset on a grid the 16-bit weights cannot reach: the conv's exact sums (an int16 intermediate named
    after the Conv output, measured too) and a requant op adding the offset on its finer grid, per pixel."""
    net = _Net(in_shape=(1, 2, 5, 5))
    net.conv("conv", co=3, k=1)
    net.batchnorm("bn", [0.75, 0.75, -1.5], np.array([3, -7, 1]) * 2.0 ** -20)
    net.quant("bn", "y", 2.0 ** -6)
    imported = _exact(net)
    g = imported.graph
    assert [op.kind for op in g.ops] == ["conv", "requant"] and "conv" in g.tensors
    assert g.ops[1].attrs["scale"] > 1 and g.ops[1].params["bias"].shape == (5 * 5 * 3,)
    assert "conv" in imported.reference(np.zeros((1, 2, 5, 5), np.float32))  # the intermediate is measured


def test_batchnorm_of_an_activation():
    """BN between two Quants: one scale for every channel is a requant op; scales per channel a 1x1 depthwise
    conv. Both with a zero point on the input."""
    for scales, kind in (([0.5, 0.5, 0.5], "requant"), ([0.5, -1.0, 2.0], "conv")):
        net = _Net(x_zp=-3.0)
        net.batchnorm("bn", scales, [0.25, -0.5, 1.0])
        net.quant("bn", "y", 2.0 ** -3, zp=2.0)
        g = _exact(net).graph
        assert [op.kind for op in g.ops] == [kind]


def test_batchnorm_offsets_off_every_grid_are_rounded_and_measured():
    """Offsets of a trained BatchNorm are on no grid the layer can hold: rounded (a warning says so), and the
    measurement says whether that changed anything."""
    net = _Net()
    net.conv("conv", co=3)
    net.batchnorm("bn", [1.0, 1.0, 1.0], [0.1, -0.3, 0.7])  # not dyadic after float32: 2**-25 grids and finer
    net.quant("bn", "y", 2.0 ** -3)
    with pytest.warns(UserWarning, match="rounded"):
        imported = import_qonnx(net.model())
    design = aieflow.compile(imported, batch=BATCH)
    assert design.exactness.model.values > 0  # measured; the rounding is far below the output's step


def test_padded_conv_and_average_pool_of_an_input_with_a_zero_point():
    """Padding reads the real zero: the input moves to zero point 0 first (a requant op, measured too)."""
    net = _Net(x_zp=5.0, x_signed=0, in_shape=(1, 2, 6, 6))
    net.node("AveragePool", ["qx"], "pool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1],
             count_include_pad=1)
    net.quant("pool", "p", 2.0 ** -4, zp=-3.0)
    net.conv("conv", co=3, ci=2, pads=[1, 0, 1, 2], strides=[1, 2])
    net.quant("conv", "y", 2.0 ** -3)
    g = _exact(net).graph
    assert [op.kind for op in g.ops] == ["requant", "pool", "requant", "conv"]
    assert all(g.tensors[op.inputs[0]].zero_point == 0 for op in g.ops if op.kind in ("pool", "conv"))


def test_trunc_avg_pool_and_1d_maps():
    """AveragePool -> Trunc (TruncAvgPool2d's export), MaxPool, GlobalAveragePool on a 1-D map [N, C, L]."""
    net = _Net(in_shape=(1, 3, 16))
    net.conv("conv", co=4, k=3, pads=[1, 1])
    net.quant("conv", "a", 2.0 ** -3, signed=0)
    net.node("MaxPool", ["a"], "mp", kernel_shape=[2], strides=[2])
    net.node("AveragePool", ["mp"], "ap", kernel_shape=[2], strides=[2])
    ins = ["ap", net.const("t_s", 2.0 ** -4), net.const("t_z", 0.0), net.const("t_ib", 9.0),
           net.const("t_os", 2.0 ** -3), net.const("t_ob", 8.0)]
    net.node("Trunc", ins, "trunc", domain=DOMAIN, rounding_mode="round", signed=0, narrow=0)
    net.node("GlobalAveragePool", ["trunc"], "gap")
    net.quant("gap", "y", 2.0 ** -5, signed=0)
    g = _exact(net).graph
    assert [op.kind for op in g.ops] == ["conv", "pool", "pool", "pool"]
    assert g.tensors["y"].shape == (1, 4) and g.tensors["qx"].source_order == (1, 0)
    assert g.ops[2].attrs["shift"] == 1 and g.ops[3].attrs["kernel"] == [1, 4]


def test_flatten_permutes_the_dense_rows():
    """Flatten of an NCHW map into a Gemm: the weight rows move from (C, H, W) order to (H, W, C)."""
    net = _Net(in_shape=(1, 2, 3, 4))
    net.conv("conv", co=3, k=1)
    net.quant("conv", "a", 2.0 ** -3)
    net.node("Flatten", ["a"], "flat", axis=1)
    w = net.weights("fc_w", (36, 5), seed=4)
    net.node("MatMul", ["flat", w], "fc")
    net.quant("fc", "y", 2.0 ** -2)
    g = _exact(net).graph
    dense = g.ops[-1]
    src = np.random.default_rng(4).integers(-20, 21, (36, 5))
    assert np.array_equal(dense.params["weight"], src.reshape(3, 3, 4, 5).transpose(1, 2, 0, 3).reshape(36, 5))


def test_residual_add_of_maps():
    net = _Net(in_shape=(1, 4, 5, 5))
    net.conv("conv", co=4, pads=[1, 1, 1, 1])
    net.quant("conv", "c", 2.0 ** -3)
    net.node("Add", ["qx", "c"], "sum")
    net.node("Relu", ["sum"], "r")
    net.quant("r", "y", 2.0 ** -2)
    g = _exact(net).graph
    assert [op.kind for op in g.ops] == ["conv", "add"] and g.tensors["y"].shape == (5, 5, 4)


def test_non_power_of_two_average_is_measured_not_assumed():
    """A 3x3 average divides by 9: a 31-bit multiplier, exact unless a window sum lands on a tie of the
    output (measured by the compile)."""
    net = _Net(in_shape=(1, 2, 6, 6))
    net.node("AveragePool", ["qx"], "pool", kernel_shape=[3, 3], strides=[3, 3])
    net.quant("pool", "y", 2.0 ** -4)
    design = aieflow.compile(import_qonnx(net.model()), batch=BATCH)
    assert design.exactness.model.values > 0
    assert design.graph.ops[0].attrs.get("multiplier", 1) > 1


# --- refusals: one clear ModelError each, naming the node --------------------------------------------------------


def _refused(net_or_model, *words, node=None):
    model = net_or_model.model() if isinstance(net_or_model, _Net) else net_or_model
    with pytest.raises(ModelError) as e:
        import_qonnx(model)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    if node is not None:
        assert e.value.node == node, msg
    assert e.value.hint or "not supported" in msg, msg
    return e.value


def _conv_then_quant(**attrs) -> _Net:
    net = _Net(in_shape=(1, 4, 8, 8))
    net.conv("conv", **attrs)
    net.quant("conv", "y", 2.0 ** -3)
    return net


@pytest.mark.parametrize("attrs,words", [
    ({"dilations": [2, 2]}, "dilations"),
    ({"group": 2, "ci": 2}, "grouped convolution"),
    ({"group": 4, "ci": 1, "co": 8}, "grouped convolution"),
    ({"strides": [3, 3]}, "strides 1 and 2"),
    ({"pads": [3, 0, 0, 0]}, "whole window"),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2], "k": 2}, None),  # accepted: SAME_LOWER computed
])
def test_conv_attributes(attrs, words):
    net = _conv_then_quant(**attrs)
    if words is None:
        _exact(net)
    else:
        _refused(net, words, node="conv")


def test_pool_refusals():
    net = _Net()
    net.node("AveragePool", ["qx"], "pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    net.quant("pool", "y", 2.0 ** -4)
    _refused(net, "count_include_pad", node="pool")
    net = _Net(in_shape=(1, 3, 5, 5))
    net.node("MaxPool", ["qx"], "pool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    _refused(net, "ceil_mode", node="pool")
    net = _Net()
    net.node("AveragePool", ["qx"], "pool", kernel_shape=[2, 2])
    net.node("Relu", ["pool"], "relu")
    net.quant("relu", "y", 2.0 ** -4)
    _refused(net, "Relu between an AveragePool", node="relu")
    net = _Net()
    net.node("AveragePool", ["qx"], "pool", kernel_shape=[2, 2])
    ins = ["pool", net.const("t_s", 2.0 ** -4), net.const("t_z", 0.0), net.const("t_ib", 10.0),
           net.const("t_os", 2.0 ** -4), net.const("t_ob", 8.0)]
    net.node("Trunc", ins, "trunc", domain=DOMAIN, rounding_mode="ROUND")
    _refused(net, "window", node="trunc")


def test_batchnorm_refusals():
    net = _Net()
    net.conv("conv", co=3)
    net.batchnorm("bn", [1.0, 0.3, 0.7], [0.0, 0.0, 0.0])  # no common scale: factors of 2**23
    net.quant("bn", "y", 2.0 ** -3)
    _refused(net, "per-channel scales", node="bn")
    net = _Net()
    net.conv("conv", co=3)
    net.node("Relu", ["conv"], "relu")
    net.batchnorm("bn", [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    _refused(net, "BatchNormalization after Relu", node="bn")


def test_view_and_dense_refusals():
    net = _Net(in_shape=(1, 2, 3, 4))
    w = net.weights("w", (4, 5))
    net.node("MatMul", ["qx", w], "fc")
    _refused(net, "not flattened", node="fc")
    net = _Net(in_shape=(1, 2, 3, 4))
    net.node("Reshape", ["qx", net.const("shape", [1, 2, 12], np.int64)], "rs")
    _refused(net, "Reshape of a [2, 3, 4] feature map", node="rs")
    net = _Net(in_shape=(1, 2, 3, 4))
    net.node("Flatten", ["qx"], "flat", axis=2)
    _refused(net, "axis=2", node="flat")
    net = _Net(in_shape=(1, 2, 3, 4))
    net.conv("conv", co=2, k=1)
    net.node("Flatten", ["conv"], "flat", axis=1)
    _refused(net, "never quantized", node="flat")


def test_input_and_weight_refusals():
    net = _Net(in_shape=(1, 2, 3, 4, 5))
    net.conv("conv", co=2, k=1)
    net.quant("conv", "y", 2.0 ** -3)
    _refused(net, "[batch, channels, height, width]")
    net = _Net()
    net.nodes.append(helper.make_node("Conv", ["x", net.const("w", np.ones((2, 3, 1, 1)))], ["conv"], name="conv"))
    net.last = "conv"
    _refused(net, "not quantized", node="conv")
    net = _Net()
    net.node("Conv", ["qx", net.const("w", np.ones((2, 3, 1, 1)))], "conv")
    _refused(net, "weight must be a constant quantized", node="conv")
    net = _Net(x_bits=16.0, x_zp=3.0)
    net.conv("conv", co=2, pads=[1, 1, 1, 1])
    _refused(net, "zero point", node="conv")
    net = _Net()
    net.node("LRN", ["qx"], "lrn", size=3)
    e = _refused(net, "unsupported op LRN", node="lrn")
    assert "Conv" in e.hint


def test_brevitas_refusals():
    from brevitas import nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerChannelFloat

    m = torch.nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
                            qnn.QuantConv2d(2, 3, 3, weight_quant=Int8WeightPerChannelFloat,
                                            output_quant=Int8ActPerTensorFixedPoint))
    with pytest.raises(ModelError, match="per-channel"):
        import_torch(m, torch.randn(2, 2, 6, 6))
    with pytest.raises(ModelError, match="example_input has shape"):
        import_torch(m, torch.randn(2, 2, 6, 6, 6))


# --- the mapping: a requantization of a map whose size is no multiple of the kernel's lanes -------------------


@pytest.mark.parametrize("shape", [(4, 6, 3), (10, 3), (5, 5, 5)])
def test_a_requant_of_a_map_writes_its_padded_tile_past_the_map(shape):
    """The requant kernel's last tile is padded to 16 lanes; its memory-tile buffer gets rows past the map for
    the padding (readers see them as zeros), so the design is legal and equals the IR, as a graph output and
    before a padded conv that reads the map through windows."""
    from aieflow.exactness import evaluate
    from aieflow.ir import Graph, Tensor
    from aieflow.mapping.check import violations
    from aieflow.numerics import FixedType
    from aieflow.ops.conv import conv_op
    from aieflow.ops.requant import requant_op

    t8 = FixedType(8, True, 0)
    order = (1, 2, 0) if len(shape) == 3 else (1, 0)
    n, c = int(np.prod(shape)), shape[-1]
    rng = np.random.default_rng(0)
    k = (3, 3) if len(shape) == 3 else (1, 3)
    pads = (1, 1, 1, 1) if len(shape) == 3 else (0, 1, 0, 1)
    for with_conv in (False, True):
        tensors = {name: Tensor(name, shape, t8, source_order=order) for name in ("x", "m", "y")}
        ops = [requant_op("rq", "x", "m", rng.integers(-20, 20, n), 1)]
        if with_conv:
            ops.append(conv_op("cv", "m", "y", rng.integers(-5, 5, (*k, c, c)), np.zeros(c), t8, kernel=k,
                               strides=(1, 1), pads=pads, shift=3))
        out = "y" if with_conv else "m"
        g = Graph("g", {t: v for t, v in tensors.items() if with_conv or t != "y"}, tuple(ops), ("x",), (out,))
        for objective in ("resource", "throughput"):
            design = aieflow.compile(g.validate(), batch=BATCH, objective=objective)
            assert violations(design) == []
            q = rng.integers(-128, 128, (9, *tensors["x"].source_shape))
            want = evaluate(g, tensors["x"].from_source(q))[out]
            for fast in (False, True):
                assert np.array_equal(tensors[out].from_source(design.simulate(q, raw=True, fast=fast)), want)
