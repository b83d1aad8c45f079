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

import aieflow  # noqa: E402
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


# io_parallel MLPs are tests/test_hls4ml.py's; the io_parallel case here runs with the full matrices.
@pytest.mark.parametrize("io_type", [pytest.param("io_parallel", marks=pytest.mark.full), "io_stream"])
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
    if io_type == "io_stream":  # the AIEFlow backend plugin: hls4ml converts, aieflow's emulator predicts
        cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="AIEFlow")
        cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = "fixed<8,3,RND_CONV,SAT>"
        for name, prec in precisions.items():
            cfg["LayerName"][name]["Precision"].update(prec)
        aie = hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend="AIEFlow", io_type=io_type,
                                                        output_dir=str(tmp_path / "aie"))
        ours, theirs = aie.predict(x), hm.predict(x)
        assert ours.shape == (100, 5) and np.array_equal(ours, np.asarray(theirs).reshape(ours.shape))


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


@pytest.mark.full  # about 7 s of C simulation; make test-all runs it
def test_resource_strategy_weights_are_read_in_their_order(tmp_path):
    """Strategy Resource transposes Conv2D and Dense weights in the ModelGraph ([F, H, W, C], [n_out, n_in]);
    they are read back in the IR's order."""
    import keras

    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.Flatten(name="fl"), keras.layers.Dense(5, name="d")])
    _keras_weights(model, 3)
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = "fixed<8,3,RND_CONV,SAT>"
    for name, prec in {"c1": {**CONV, "result": "fixed<10,4,RND,SAT>"},
                       "d": {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "accum": "fixed<32,14>",
                             "result": "fixed<12,6,RND,SAT>"}}.items():
        cfg["LayerName"][name].update({"Strategy": "Resource", "ReuseFactor": 2})
        cfg["LayerName"][name]["Precision"].update(prec)
    cfg["Model"]["Strategy"] = "Resource"
    hm = hls4ml.converters.convert_from_keras_model(model, hls_config=_trace_all(cfg), backend="Vivado",
                                                   io_type="io_parallel", output_dir=str(tmp_path / "prj"))
    assert all(l.get_attr("_weights_transposed") for l in hm.get_layers() if l.name in ("c1", "d"))
    mism, stats = _compare(import_hls4ml(hm, exact=True), _inputs(np.random.default_rng(1), 100, (6, 6, 2), 8, True, 5))
    assert set(mism) == {"c1", "d", "model"} and all(v == 0 for v in mism.values()), mism
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


# --- the full random sweep ---------------------------------------------------------------------------------

Q_MODES = ["TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"]
O_MODES = ["SAT", "SAT_SYM", "WRAP"]


def _rtype(rng, bits=(3, 16), signed=True, sat_zero=0.02):
    """A random fixed type (1 <= I <= W: the open ap_types headers abort on some casts into other types)."""
    bits = int(rng.integers(bits[0], bits[1] + 1))
    if not signed:
        bits = min(bits, 8)
    integer = int(rng.integers(1, bits + 1))
    o = "SAT_ZERO" if rng.random() < sat_zero else O_MODES[int(rng.integers(0, 3))]
    text = f"{'' if signed else 'u'}fixed<{bits},{integer},{Q_MODES[int(rng.integers(0, 7))]},{o}>"
    return text, (bits + (0 if signed else 1), bits - integer)  # (bits of a signed holder, frac)


def _random_cnn(seed: int, out_dir: str):
    """A random Keras CNN (1-D or 2-D; 1-3 blocks of conv / depthwise / pointwise, kernels 1-3, strides 1-2,
    'valid' or 'same', ReLU, max or average pooling, BatchNormalization; then Flatten or a global pool and a
    Dense), random types of 3-16 bits with random modes (some 'auto', some narrow accumulators), weights on
    their grids, its hls4ml ModelGraph in a random io type, and 100 inputs."""
    import keras

    rng = np.random.default_rng(seed)
    io_type = IO_TYPES[int(rng.integers(0, 2))]
    two_d = bool(rng.random() < 0.6)
    dims = [int(rng.integers(4, 9)), int(rng.integers(4, 9))] if two_d else [int(rng.integers(6, 17))]
    chans = int(rng.integers(1, 4))
    L = keras.layers
    layers = [keras.Input((*dims, chans))]
    prec: dict[str, dict] = {}
    in_text, (xb, xf) = _rtype(rng, (4, 10), sat_zero=0)
    x = (xb, xf)  # the current values' type: bits of a signed holder, fractional bits (None: 'auto')

    def conv_prec(name, taps, relu_next):
        nonlocal x
        wt, (wb, wf) = _rtype(rng, (2, 8))
        wt = f"fixed<{wb},{wb - wf}>"
        bb = int(rng.integers(2, 13))
        bf = max(0, min(bb - 1, x[1] + wf - int(rng.integers(0, 4))))
        af = max(x[1] + wf, bf)
        ai = max(x[0] - x[1] + wb - wf + int(np.ceil(np.log2(taps + 1))) + 1, bb - bf + 1)
        acc = f"fixed<{ai + af},{ai}>"
        if rng.random() < 0.15:  # a narrower one, sometimes too narrow
            ai2 = max(1, ai - int(rng.integers(0, 5)))
            acc = f"fixed<{max(ai2, ai2 + af - int(rng.integers(0, 3)))},{ai2},{Q_MODES[int(rng.integers(0, 7))]}," \
                  f"{O_MODES[int(rng.integers(0, 3))]}>"
        rt, x_new = _rtype(rng)
        if relu_next and rng.random() < 0.3:
            rt, x_new = "auto", None
        prec[name] = {"weight": wt, "bias": f"fixed<{bb},{bb - bf}>", "accum": acc, "result": rt}
        x = x_new
        return wb, wf, bb, bf

    weights = {}
    for i in range(int(rng.integers(1, 4))):
        kind = ["conv", "conv", "conv", "depthwise", "pointwise"][int(rng.integers(0, 5))]
        k = 1 if kind == "pointwise" else int(rng.integers(1, 4))
        if min(dims) < k:
            break
        stride = 2 if rng.random() < 0.3 and min(dims) >= k + 1 else 1
        padding = "same" if rng.random() < 0.5 else "valid"
        name = f"c{i}"
        ks = (k, k) if two_d else (k,)
        if kind == "depthwise":
            layers.append((L.DepthwiseConv2D if two_d else L.DepthwiseConv1D)(ks, strides=stride, padding=padding,
                                                                              name=name))
            taps = k ** len(dims)
        else:
            co = int(rng.integers(1, 6))
            layers.append((L.Conv2D if two_d else L.Conv1D)(co, ks, strides=stride, padding=padding, name=name))
            taps = k ** len(dims) * chans
            chans = co
        dims = [(d + stride - 1) // stride if padding == "same" else (d - k) // stride + 1 for d in dims]
        relu = bool(rng.random() < 0.6)
        weights[name] = conv_prec(name, taps, relu)
        if relu:
            rt, x_new = _rtype(rng, signed=bool(rng.random() < 0.7)) if rng.random() < 0.6 or x is None else \
                (prec[name]["result"], x)
            layers.append(L.Activation("relu", name=f"r{i}"))
            prec[f"r{i}"] = {"result": rt}
            x = x_new
        if min(dims) >= 2 and rng.random() < 0.4:
            avg = bool(rng.random() < 0.5)
            layers.append((L.AveragePooling2D if avg else L.MaxPooling2D)(2, name=f"p{i}") if two_d else
                          (L.AveragePooling1D if avg else L.MaxPooling1D)(2, name=f"p{i}"))
            dims = [d // 2 for d in dims]
            if rng.random() < 0.4:
                rt, x_new = _rtype(rng)
                prec[f"p{i}"] = {"result": rt}
                x = x_new
        if rng.random() < 0.2:
            layers.append(L.BatchNormalization(name=f"bn{i}"))
            rt, x_new = _rtype(rng)
            prec[f"bn{i}"] = {"scale": f"fixed<8,{int(rng.integers(1, 5))}>", "bias": f"fixed<8,{int(rng.integers(1, 5))}>",
                              "result": rt}
            x = x_new
    end = ["flatten", "gap", "gmp"][int(rng.integers(0, 3))]
    if end == "flatten":
        layers.append(L.Flatten(name="fl"))
    else:
        glob = {"gap": (L.GlobalAveragePooling2D, L.GlobalAveragePooling1D),
                "gmp": (L.GlobalMaxPooling2D, L.GlobalMaxPooling1D)}[end]
        layers.append(glob[0 if two_d else 1](name=end))
        n = int(np.prod(dims))
        extra = int(np.ceil(np.log2(n))) if end == "gap" else 0
        if x is not None and rng.random() < 0.85:
            acc = f"fixed<{x[0] + 2 * extra},{x[0] - x[1] + extra}>"  # holds the sum and the exact average
        else:
            acc = _rtype(rng)[0]
        rt, x_new = _rtype(rng)
        prec[end] = {"accum": acc, "result": rt}
        x = x_new
    layers.append(L.Dense(int(rng.integers(1, 7)), name="d"))
    taps = int(np.prod(dims)) * chans if end == "flatten" else chans
    if x is None:
        x = (16, 8)
    weights["d"] = conv_prec("d", taps, False)
    model = keras.Sequential(layers)
    for layer in model.layers:
        ws = layer.get_weights()
        if layer.name in weights:
            wb, wf, bb, bf = weights[layer.name]
            w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), ws[0].shape).astype(np.float64)
            b = rng.integers(-(1 << (bb - 1)), 1 << (bb - 1), ws[1].shape).astype(np.float64)
            layer.set_weights([np.ldexp(w, -wf), np.ldexp(b, -bf)])
        elif ws:  # batch norm: gamma, beta, mean, variance
            c = ws[0].shape[0]
            layer.set_weights([rng.integers(-12, 13, c) / 8, rng.integers(-16, 17, c) / 8, np.zeros(c), np.ones(c)])
            layer.epsilon = 0.0
    hm = _convert(model, prec, io_type, out_dir, input_type=in_text)
    x_in = _inputs(rng, 100, (*[int(d) for d in model.input_shape[1:]],), xb, True, xf)
    return hm, x_in, io_type


_REASONS = ("SAT_ZERO", "fractional bits but the products", "could overflow", "AI Engine activations",
            "rounds or overflows before", "weights are int8", "wrapping type", "cannot hold the sum",
            "not a power of two", "truncates it before", "average pooling over padding", "cannot be stored",
            "sign-dependent mode", "rounds or overflows it")


def _run_cnn(seed: int, root: str) -> dict:
    import contextlib
    import io

    out = {"seed": seed}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            hm, x, io_type = _random_cnn(seed, os.path.join(root, f"m{seed}"))
    except Exception as e:  # noqa: BLE001 - hls4ml's own converter failing is counted, not ours
        return {**out, "hls4ml_failed": f"{type(e).__name__}: {str(e)[:80]}"}
    out["io"] = io_type
    try:
        imported = import_hls4ml(hm, exact=True)
    except ModelError as e:
        out["refused"] = next((k for k in _REASONS if k in e.reason), e.reason[:60])
        try:  # what the default (exact=False) makes of it, measured
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imported = import_hls4ml(hm)
        except ModelError as e2:
            out["refused_default"] = next((k for k in _REASONS if k in e2.reason), e2.reason[:60])
            return out
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        mism, stats = _compare(imported, x)
    out.update(mism=mism, exact=all(v == 0 for v in mism.values()), ties=stats["ties+"] + stats["ties-"],
               sat=stats["sat"], kinds=sorted({op.kind for op in imported.graph.ops}), layers=len(imported.graph.ops),
               values=int(np.prod(x.shape[:1])) * imported.graph.tensors[imported.graph.outputs[0]].features)
    return out


@pytest.mark.full
def test_full_random_cnn_sweep_against_c_simulation(tmp_path):
    import concurrent.futures as cf
    import multiprocessing as mp
    import time
    from collections import Counter

    target = int(os.environ.get("AIEFLOW_HLS4ML_CNN_MODELS", "40"))  # CNNs compared with exact=True
    t0 = time.time()
    workers = max(1, min(16, (os.cpu_count() or 2)))
    results: list[dict] = []

    def strict(r):
        return "mism" in r and "refused" not in r

    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        while sum(map(strict, results)) < target and len(results) < 4 * target:
            more = max(workers, int(1.3 * (target - sum(map(strict, results)))))
            seeds = range(len(results), len(results) + more)
            results += list(pool.map(_run_cnn, seeds, [str(tmp_path)] * len(seeds)))
    ran = [r for r in results if strict(r)]
    exact = sum(r["exact"] for r in ran)
    refused = Counter(r["refused"] for r in results if "refused" in r)
    approx = [r for r in results if "refused" in r and "mism" in r]
    failed = Counter(r["hls4ml_failed"] for r in results if "hls4ml_failed" in r)
    ios = Counter(r["io"] for r in ran)
    kinds = Counter(k for r in ran for k in r["kinds"])
    print(f"\nhls4ml CNN sweep: {len(results)} models, {len(ran)} compared with the C simulation under exact=True "
          f"({dict(ios)}), {exact} bit-exact, layers {sum(r['layers'] for r in ran)} {dict(kinds)}, ties hit "
          f"{sum(r['ties'] for r in ran)}, saturations/wraps {sum(r['sat'] for r in ran)}; refused by exact=True "
          f"{sum(refused.values())} {dict(refused)}; of those, compiled by the default and measured: {len(approx)}, "
          f"bit-exact anyway {sum(r['exact'] for r in approx)}, output values differing "
          f"{sum(r['mism']['model'] for r in approx)} of {sum(r['values'] for r in approx)}; refused by the default "
          f"too {dict(Counter(r['refused_default'] for r in results if 'refused_default' in r))}; hls4ml itself "
          f"failed {sum(failed.values())} {dict(failed)}; {time.time() - t0:.0f} s")
    bad = [r for r in ran if not r["exact"]]
    assert not bad, bad[:5]
    assert len(ran) >= target


def test_a_pytorch_cnn_through_hls4ml_keeps_its_channels_first_input(tmp_path):
    """hls4ml's PyTorch converter puts a Transpose (channels first to last) after the input: aieflow reads it
    as the input's layout, so the compiled design takes and is measured on the model's own NCHW input."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 6 * 6, 5))
    cfg = hls4ml.utils.config_from_pytorch_model(module, (3, 8, 8), granularity="name")
    for name in cfg["LayerName"]:
        cfg["LayerName"][name]["Precision"] = (
            {"result": "ap_fixed<10,2>"} if name == "input_1" else
            {"result": "ap_fixed<16,6>", "accum": "ap_fixed<32,12>", "weight": "ap_fixed<8,2>", "bias": "ap_fixed<16,6>"})
    hls_model = hls4ml.converters.convert_from_pytorch_model(module, hls_config=cfg, output_dir=str(tmp_path / "h"),
                                                            backend="Vivado", io_type="io_parallel")
    assert any(layer.class_name == "Transpose" for layer in hls_model.get_layers())
    x = np.random.default_rng(0).uniform(-1, 1, (64, 3, 8, 8)).astype(np.float32)
    design = aieflow.compile(hls_model, calibration=x)
    tin = design.graph.tensors[design.graph.inputs[0]]
    assert tin.shape == (8, 8, 3) and tin.source_order == (1, 2, 0)
    assert design.exactness.exact and design.exactness.model.values == 64 * 5
