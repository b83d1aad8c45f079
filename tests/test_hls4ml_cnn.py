"""hls4ml convolutional networks and io_stream against hls4ml's own C simulation (g++ and the open ap_types
headers, no Vitis), layer by layer through hls4ml's trace.

Each test builds as few C simulations as it can (one ModelGraph per io type, shared by its assertions); the
random sweep of CNNs (`-m full`) builds one per model.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import hls4ml  # noqa: E402  (`make test` installs the extra: missing is a failure, not a skip)

from aieflow.errors import ModelError  # noqa: E402
from aieflow.exactness import evaluate  # noqa: E402
from aieflow.frontends.hls4ml import import_hls4ml  # noqa: E402
from aieflow.numerics import round_shift  # noqa: E402

IO_TYPES = ("io_parallel", "io_stream")


# --- helpers ------------------------------------------------------------------------------------------------


def _inputs(rng, n, shape, bits, signed, frac):
    """Grid points over the whole range, half-way points (ties for the input cast) and values past it."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    q = rng.integers(lo, hi, (n, *shape), endpoint=True).astype(np.float64)
    kind = rng.integers(0, 6, q.shape)
    q = np.where(kind == 0, q + 0.5, q)
    q = np.where(kind == 1, rng.uniform(lo - 8, hi + 8, q.shape), q)
    q[0], q[1] = lo - 3, hi + 3
    return np.ldexp(q, -frac)


def _op_sums(op, graph, values):
    """The exact sums an op rounds (before its requantization), as [samples, ...] int64."""
    from aieflow.ops.conv import conv_sums, pad_map

    x = values[op.inputs[0]]
    if op.kind == "requant":
        return x * int(op.attrs.get("scale", 1)) + op.params["bias"][None, :]
    if op.kind == "dense":
        return x @ op.params["weight"] + op.params["bias"][None, :]
    if op.kind == "conv":
        xt, yt = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        shape = xt.shape if len(xt.shape) == 3 else (1, *xt.shape)
        oshape = yt.shape if len(yt.shape) == 3 else (1, *yt.shape)
        xm = x.reshape(-1, *shape)
        acc = conv_sums(pad_map(xm, op.attrs["pads"]), op.params["weight"], op.attrs["kernel"], op.attrs["strides"],
                        oshape[:2], op.attrs["depthwise"])
        return (acc + op.params["bias"]).reshape(len(x), -1)
    return None


def _compare(imported, x):
    """Mismatches of the Graph's integers with the C simulation's, per tensor the simulation exposes (every op
    fed the simulation's own values, or the Graph's own values computed from them where the simulation does
    not expose an op's input: an intermediate cast, a tensor a relu was fused into), the whole model from
    the input alone, and the ties and saturations the ops' roundings met."""
    from aieflow.exactness import evaluate_op

    ref = imported.reference(x)
    g = imported.graph
    known = {g.inputs[0]: ref[g.inputs[0]]}
    mism = {}
    stats = {"ties+": 0, "ties-": 0, "sat": 0}
    for op in g.ops:
        y = op.outputs[0]
        mine = evaluate_op(op, g, known)
        if y in ref:
            mism[y] = int(np.sum(mine != ref[y]))
        acc = _op_sums(op, g, known)
        known[y] = ref.get(y, mine)
        shift = int(op.attrs.get("shift", 0))
        t = g.tensors[y].type
        if acc is not None and shift > 0:
            rem = acc - ((acc >> shift) << shift)
            tie = rem == (1 << (shift - 1))
            stats["ties+"] += int(np.sum(tie & (acc > 0)))
            stats["ties-"] += int(np.sum(tie & (acc < 0)))
        if acc is not None:
            r = round_shift(acc, shift, t.rounding)
            stats["sat"] += int(np.sum((r > t.qmax) | (r < t.qmin)))
    vals = evaluate(g, ref[g.inputs[0]])
    mism["model"] = int(np.sum(vals[g.outputs[0]] != ref[g.outputs[0]]))
    return mism, stats


def _trace_all(cfg):
    for name in cfg["LayerName"]:
        cfg["LayerName"][name]["Trace"] = True
    return cfg


# --- io_stream MLP ------------------------------------------------------------------------------------------


def _mlp(seed=0):
    import torch

    rng = np.random.default_rng(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 7), torch.nn.ReLU(),
                              torch.nn.Linear(7, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.tensor(rng.integers(-24, 24, p.shape) / 16.0))
    return net


def _mlp_config(net):
    cfg = hls4ml.utils.config_from_pytorch_model(net, input_shape=(6,), granularity="name", backend="Vivado")
    names = list(cfg["LayerName"])
    cfg["LayerName"][names[0]]["Precision"]["result"] = "fixed<8,3,RND,SAT>"
    dense = {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "accum": "fixed<24,10>"}
    cfg["LayerName"][names[1]]["Precision"] = {**dense, "result": "fixed<10,5,RND_CONV,SAT>"}
    cfg["LayerName"][names[2]]["Precision"]["result"] = "fixed<10,5,RND_CONV,SAT>"  # relu fused
    cfg["LayerName"][names[3]]["Precision"] = {**dense, "result": "fixed<12,6,RND_INF,WRAP>"}
    cfg["LayerName"][names[4]]["Precision"]["result"] = "ufixed<6,3,TRN_ZERO,SAT>"  # relu, then a requantize
    cfg["LayerName"][names[5]]["Precision"] = {**dense, "result": "fixed<8,4,RND_MIN_INF,SAT_SYM>"}
    return _trace_all(cfg)


@pytest.mark.parametrize("io_type", IO_TYPES)
def test_mlp_in_both_io_types_is_bit_exact(io_type, tmp_path):
    import aieflow

    net = _mlp()
    hm = hls4ml.converters.convert_from_pytorch_model(net, hls_config=_mlp_config(net), backend="Vivado",
                                                     io_type=io_type, output_dir=str(tmp_path / "prj"))
    imported = import_hls4ml(hm)
    assert [op.kind for op in imported.graph.ops] == ["dense", "dense", "requant", "dense"]
    x = _inputs(np.random.default_rng(2), 100, (6,), 8, True, 5)
    mism, stats = _compare(imported, x)
    assert len(mism) == 4 and all(v == 0 for v in mism.values()), mism  # every op, and the model
    assert stats["ties+"] and stats["ties-"] and stats["sat"], stats
    design = aieflow.compile(hm, calibration=x.astype(np.float32))
    rep = design.exactness
    assert rep.exact and rep.model.values == 400 and len(rep.layers) >= 2, rep.lines()


# --- CNNs ---------------------------------------------------------------------------------------------------


def _keras_weights(model, seed, wfrac=4, wbits=6, bfrac=3, bbits=8):
    """Weights on their types' grids (so the weight types round nothing), biases and batch-norm statistics
    likewise, with enough spread to reach both ends of the layers' result types."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if type(layer).__name__ == "BatchNormalization":  # gamma, beta, mean, variance -> scale, bias
            c = ws[0].shape[0]
            layer.set_weights([rng.integers(-12, 13, c) / 8, rng.integers(-16, 17, c) / 8, np.zeros(c), np.ones(c)])
            layer.epsilon = 0.0
            continue
        new = [np.ldexp(rng.integers(-(1 << (wbits - 1)), 1 << (wbits - 1), ws[0].shape).astype(np.float64), -wfrac)]
        for b in ws[1:]:
            new.append(np.ldexp(rng.integers(-(1 << (bbits - 1)), 1 << (bbits - 1), b.shape).astype(np.float64), -bfrac))
        layer.set_weights(new)
    return model


def _convert(model, precisions: dict, io_type, out_dir, input_type="fixed<8,3,RND_CONV,SAT>"):
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = input_type
    for name, prec in precisions.items():
        cfg["LayerName"][name]["Precision"].update(prec)
    return hls4ml.converters.convert_from_keras_model(model, hls_config=_trace_all(cfg), backend="Vivado",
                                                     io_type=io_type, output_dir=str(out_dir))


CONV = {"weight": "fixed<6,2>", "bias": "fixed<8,5>", "accum": "fixed<28,12>"}


@pytest.fixture(scope="module")
def keras_cnn():
    """Conv2D 3x3 'same' + ReLU, MaxPooling2D, BatchNormalization, Conv2D 3x3 stride 2 'same',
    GlobalAveragePooling2D (over 2x2: a power of two), Dense; types with every kind of rounding in them."""
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same", name="c1"),
        keras.layers.Activation("relu", name="r1"), keras.layers.MaxPooling2D(2, name="p1"),
        keras.layers.BatchNormalization(name="bn"), keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c2"),
        keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(5, name="d")])
    _keras_weights(model, 3)
    precisions = {
        "c1": {**CONV, "result": "fixed<10,4,RND,SAT>"},
        "r1": {"result": "ufixed<8,3,RND_CONV,SAT>"},  # relu, then a requantization (drops a bit)
        "p1": {"accum": "ufixed<8,3>", "result": "ufixed<8,3>"},
        "bn": {"scale": "fixed<8,4>", "bias": "fixed<8,4>", "result": "fixed<10,4,RND_INF,SAT>"},
        "c2": {**CONV, "result": "fixed<12,5,TRN_ZERO,SAT_SYM>"},
        "gap": {"accum": "fixed<20,10>", "result": "fixed<10,4,RND_CONV,WRAP>"},
        "d": {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "accum": "fixed<32,14>",
              "result": "fixed<12,6,RND_MIN_INF,SAT>"},
    }
    return model, precisions


@pytest.mark.parametrize("io_type", IO_TYPES)
def test_keras_cnn_is_bit_exact_in_both_io_types(keras_cnn, io_type, tmp_path):
    model, precisions = keras_cnn
    hm = _convert(model, precisions, io_type, tmp_path / "prj")
    imported = import_hls4ml(hm, exact=True)
    g = imported.graph
    kinds = [(op.name, op.kind) for op in g.ops]
    assert kinds == [("c1", "conv"), ("r1", "requant"), ("p1", "pool"), ("bn", "conv"), ("c2", "conv"),
                     ("gap", "pool"), ("d", "dense")], kinds
    assert g.ops[3].attrs["depthwise"] and g.ops[4].attrs["pads"] == [0, 0, 1, 1]
    x = _inputs(np.random.default_rng(4), 100, (8, 8, 3), 8, True, 5)
    mism, stats = _compare(imported, x)
    assert set(mism) >= {"r1", "p1", "bn", "c2", "gap", "d", "model"}, mism
    assert all(v == 0 for v in mism.values()), mism
    assert stats["ties+"] and stats["ties-"] and stats["sat"], stats
    print(f"\n{io_type} CNN: {len(x)} inputs, {len(mism) - 1} traced layers bit-exact, {stats}")
    # The compiled design (mapping, kernels' emulation) against the same simulation, whole model.
    import aieflow

    rep = aieflow.compile(imported, calibration=x.astype(np.float32)).exactness
    assert rep.exact and rep.model.values == 500 and len(rep.layers) >= 5, rep.lines()


def test_conv1d_model_is_bit_exact(tmp_path):
    """Conv1D 'same' + ReLU, AveragePooling1D, Conv1D stride 2 'valid', GlobalMaxPooling1D, Dense (io_parallel)."""
    import keras

    model = keras.Sequential([
        keras.Input((16, 2)), keras.layers.Conv1D(4, 3, padding="same", name="c1"),
        keras.layers.Activation("relu", name="r1"), keras.layers.AveragePooling1D(2, name="p1"),
        keras.layers.Conv1D(5, 3, strides=2, name="c2"), keras.layers.GlobalMaxPooling1D(name="gmp"),
        keras.layers.Dense(3, name="d")])
    _keras_weights(model, 5)
    precisions = {
        "c1": {**CONV, "result": "fixed<10,4,RND_ZERO,SAT>"},
        "r1": {"result": "fixed<10,4,RND_ZERO,SAT>"},  # exact: fused into c1
        "p1": {"accum": "fixed<12,5>", "result": "fixed<8,3,RND,SAT>"},  # the average's extra bit, then a rounding
        "c2": {**CONV, "result": "fixed<9,4,RND_CONV,WRAP>"},
        "gmp": {"accum": "fixed<9,4>", "result": "fixed<9,4>"},
        "d": {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "accum": "fixed<32,14>", "result": "fixed<12,6,RND,SAT>"},
    }
    hm = _convert(model, precisions, "io_parallel", tmp_path / "prj")
    imported = import_hls4ml(hm, exact=True)
    g = imported.graph
    assert [(op.name, op.kind) for op in g.ops] == [("c1", "conv"), ("p1", "pool"), ("c2", "conv"),
                                                     ("gmp", "pool"), ("d", "dense")]
    assert g.ops[0].attrs["relu"] and g.ops[0].attrs["kernel"] == [1, 3] and g.tensors["r1"].shape == (16, 4)
    x = _inputs(np.random.default_rng(6), 100, (16, 2), 8, True, 5)
    mism, stats = _compare(imported, x)
    assert set(mism) >= {"r1", "p1", "c2", "gmp", "d", "model"} and all(v == 0 for v in mism.values()), mism
    assert stats["ties+"] and stats["ties-"] and stats["sat"], stats


def test_depthwise_separable_block_with_auto_types_is_bit_exact(tmp_path):
    """DepthwiseConv2D 'same' with hls4ml's exact 'auto' (wide) result + ReLU, pointwise Conv2D 1x1 + ReLU,
    AveragePooling2D, Flatten, Dense (io_stream: ZeroPadding before the depthwise convolution)."""
    import keras

    model = keras.Sequential([
        keras.Input((6, 6, 4)), keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
        keras.layers.Activation("relu", name="r1"), keras.layers.Conv2D(6, 1, name="pw"),
        keras.layers.Activation("relu", name="r2"), keras.layers.AveragePooling2D(2, name="ap"),
        keras.layers.Flatten(name="fl"), keras.layers.Dense(3, name="d")])
    _keras_weights(model, 7)
    precisions = {
        "dw": {"weight": "fixed<6,2>", "bias": "fixed<8,5>"},  # accum and result 'auto': exact, wide
        "r1": {"result": "ufixed<8,3,RND_CONV,SAT>"},
        "pw": {**CONV, "result": "fixed<10,5,RND,SAT>"},
        "r2": {"result": "ufixed<6,3,TRN,SAT>"},
        "ap": {"accum": "fixed<16,6>", "result": "ufixed<8,4,RND_INF,SAT>"},
        "d": {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "accum": "fixed<32,14>", "result": "fixed<12,6,RND,SAT>"},
    }
    hm = _convert(model, precisions, "io_stream", tmp_path / "prj")
    assert any(l.class_name == "ZeroPadding2D" for l in hm.get_layers())
    assert next(l for l in hm.get_layers() if l.name == "dw").get_output_variable().type.precision.width > 16
    imported = import_hls4ml(hm, exact=True)
    g = imported.graph
    assert [(op.name, op.kind) for op in g.ops] == [("dw", "conv"), ("pw", "conv"), ("r2", "requant"),
                                                     ("ap", "pool"), ("d", "dense")]
    dw = g.ops[0]
    assert dw.attrs["depthwise"] and dw.attrs["relu"] and dw.attrs["pads"] == [1, 1, 1, 1] and dw.outputs == ("r1",)
    x = _inputs(np.random.default_rng(8), 100, (6, 6, 4), 8, True, 5)
    mism, stats = _compare(imported, x)
    assert set(mism) >= {"r1", "r2", "ap", "d", "model"} and all(v == 0 for v in mism.values()), mism
    assert stats["ties+"] and stats["ties-"] and stats["sat"], stats


# --- hls4ml's default configuration: measured, not refused ---------------------------------------------------


def test_default_config_compiles_with_exact_products_and_reports_the_difference(keras_cnn, tmp_path):
    """granularity='model': ap_fixed<16,6> everywhere, accumulators included, which round every product.
    exact=True refuses (naming the accum_t that would work); the default compiles with exact products and
    the exactness measurement reports each layer's difference from the C simulation."""
    import aieflow

    model, _ = keras_cnn
    small = model.__class__.from_config(model.get_config())
    _keras_weights(small, 3, wfrac=6, wbits=5, bfrac=5, bbits=5)  # weights and inputs a trained model would have
    cfg = hls4ml.utils.config_from_keras_model(small, granularity="model", backend="Vivado")
    cfg["LayerName"] = {name: {"Trace": True} for name in ["input_layer", *(l.name for l in small.layers)]}
    hm = hls4ml.converters.convert_from_keras_model(small, hls_config=cfg, backend="Vivado", io_type="io_parallel",
                                                   output_dir=str(tmp_path / "prj"))
    assert all(l.get_output_variable().type.precision.definition_cpp() == "ap_fixed<16,6>" for l in hm.get_layers())
    with pytest.raises(ModelError, match=r"accum_t ap_fixed<16,6> has 10 fractional bits") as e:
        import_hls4ml(hm, exact=True)
    assert e.value.node == "c1" and "ap_fixed<22,6>" in e.value.hint
    with pytest.warns(UserWarning, match=r"c1: accum_t ap_fixed<16,6>.*d: accum_t"):
        imported = import_hls4ml(hm)
    x = _inputs(np.random.default_rng(4), 100, (8, 8, 3), 11, True, 10)  # [-1, 1] on the input's grid, ties
    rep = aieflow.compile(imported, calibration=x.astype(np.float32)).exactness
    print("\n" + "\n".join(rep.lines()))
    by = {c.name: c for c in rep.layers}
    assert set(by) == {"c1", "p1", "bn", "c2", "gap", "d"} and not rep.unmeasured, rep.lines()
    assert by["p1"].exact and by["bn"].exact  # no accumulator: exact whatever the types
    assert not by["c1"].exact and by["c1"].max_lsb <= 32  # hls4ml truncated each of 27 products
    assert rep.model.values == 500 and not rep.model.exact and rep.model.max_lsb <= 64


def test_an_input_wider_than_16_bits_is_held_as_int16_and_measured(tmp_path):
    """ap_fixed<32,16> input: held as ap_fixed<16,16> (its whole declared range, no fractional bits), so
    inputs with fractions differ from the C simulation's and the measurement says by how much."""
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="d")])
    _keras_weights(model, 9, wfrac=3, wbits=8, bfrac=3, bbits=8)
    hm = _convert(model, {"d": {"weight": "fixed<8,5>", "bias": "fixed<8,5>", "accum": "fixed<40,24>",
                                "result": "fixed<16,14,RND,SAT>"}}, "io_parallel", tmp_path / "prj",
                  input_type="fixed<32,16,RND_CONV,SAT>")
    with pytest.raises(ModelError, match=r"input type ap_fixed<32,16,AP_RND_CONV,AP_SAT,0> cannot be stored"):
        import_hls4ml(hm, exact=True)
    with pytest.warns(UserWarning, match=r"input type ap_fixed<32,16.*held as ap_fixed<16,16>"):
        imported = import_hls4ml(hm)
    t = imported.graph.tensors[imported.graph.inputs[0]].type
    assert (t.bits, t.frac) == (16, 0)
    rng = np.random.default_rng(10)
    whole = rng.integers(-300, 300, (100, 6)).astype(np.float64)
    ints, halves = whole, whole + 0.5
    mism_int, _ = _compare(imported, ints)
    mism_half, _ = _compare(imported, halves)
    print(f"\n<32,16> input held as <16,16>: integer inputs {mism_int}, half-integer inputs {mism_half}")
    assert mism_int["d"] == 0 and mism_int["model"] == 0  # on the int16 grid: exact
    assert mism_half["model"] > 0  # the dropped fractions change outputs


# --- refusals: one clear ModelError naming the layer ---------------------------------------------------------


def _keras_convert_only(model, tmp_path, io_type="io_parallel"):
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    return hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend="Vivado", io_type=io_type,
                                                     output_dir=str(tmp_path / "prj"))


@pytest.mark.parametrize("build, node, words", [
    (lambda k: [k.Input((6, 6, 2)), k.layers.Conv2D(3, 3, name="c"), k.layers.UpSampling2D(2, name="up")],
     "up", ["layer type Resize is not supported", "Conv1D/2D"]),
    (lambda k: [k.Input((6, 6, 2)), k.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")],
     "dw", ["depth multiplier 2"]),
    (lambda k: [k.Input((5, 5, 2)), k.layers.AveragePooling2D(2, padding="same", name="ap")],
     "ap", ["average pooling over padding", "padding='valid'"]),
    (lambda k: [k.Input((6, 6, 2)), k.layers.Conv2D(3, 3, dilation_rate=2, name="dil")],
     "dil", ["dilat", "2x2 outputs"]),
])
def test_refusals_name_the_layer(tmp_path, build, node, words):
    import keras

    layers = build(keras) + [keras.layers.Flatten(name="fl"), keras.layers.Dense(2, name="d")]
    hm = _keras_convert_only(keras.Sequential(layers), tmp_path)
    with pytest.raises(ModelError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 'auto' types before the refused layer are approximated
        import_hls4ml(hm)  # refused even when approximations are allowed
    assert e.value.node == node, str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)
