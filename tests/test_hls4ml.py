"""hls4ml ModelGraphs against hls4ml's own C simulation (g++ and the open ap_types headers, no Vitis).

The default slice builds two C simulations: a 21-layer Keras model whose layers' result types are the 7 ap_fixed
quantization modes x the 3 supported overflow modes, fed inputs that put sums exactly on half an LSB (both
signs) and past the range, compared layer by layer through hls4ml's trace; and a PyTorch model through the
AIEFlow backend plugin, compared with the same model's Vivado C simulation. Refusals need no C simulation.
The full matrix (`-m full`) builds >= 100 random models, each with its own C simulation.
"""

from __future__ import annotations

import os
import time
from collections import Counter

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import hls4ml  # noqa: E402  (`make test` installs the extra: missing is a failure, not a skip)

from aieflow.errors import ModelError  # noqa: E402
from aieflow.exactness import evaluate  # noqa: E402
from aieflow.frontends.hls4ml import import_hls4ml  # noqa: E402
from aieflow.numerics import round_shift  # noqa: E402

Q_MODES = ["TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"]
O_MODES = ["SAT", "SAT_SYM", "WRAP"]
K = 8  # copied input features every layer carries on (exactly) to the next


# --- helpers ------------------------------------------------------------------------------------------------


def _tie_stats(graph, values) -> dict[str, dict[str, int]]:
    """Per dense op: sums exactly half an LSB off the output grid (by sign), and outputs past the range."""
    stats = {}
    for op in graph.ops:
        x = values[op.inputs[0]]
        if op.kind == "requant":  # an activation's cast alone: x * scale + bias, feature by feature
            acc = x * int(op.attrs.get("scale", 1)) + op.params["bias"][None, :]
        else:
            acc = x @ op.params["weight"] + op.params["bias"][None, :]
        shift = int(op.attrs["shift"])
        t = graph.tensors[op.outputs[0]].type
        s = {"ties+": 0, "ties-": 0, "sat+": 0, "sat-": 0}
        if shift > 0:
            rem = acc - ((acc >> shift) << shift)
            tie = rem == (1 << (shift - 1))
            s["ties+"], s["ties-"] = int(np.sum(tie & (acc > 0))), int(np.sum(tie & (acc < 0)))
        r = round_shift(acc, shift, t.rounding)
        s["sat+"], s["sat-"] = int(np.sum(r > t.qmax)), int(np.sum(r < t.qmin))
        stats[op.name] = s
    return stats


def _compare(imported, x) -> tuple[dict, dict]:
    """The Graph's integers vs the C simulation's, for every tensor the simulation exposes."""
    ref = imported.reference(x)
    g = imported.graph
    vals = evaluate(g, ref[g.inputs[0]])
    mism = {t: int(np.sum(vals[t] != ref[t])) for t in ref}
    return mism, _tie_stats(g, vals)


def _inputs(rng, n, features, bits, signed, frac):
    """Grid points over the whole range, half-way points (ties for the input cast) and values past it."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    q = rng.integers(lo, hi, (n, features), endpoint=True).astype(np.float64)
    kind = rng.integers(0, 6, q.shape)
    q = np.where(kind == 0, q + 0.5, q)
    q = np.where(kind == 1, rng.uniform(lo - 8, hi + 8, q.shape), q)
    q[0], q[1] = lo - 3, hi + 3
    return np.ldexp(q, -frac)


# --- the 7 x 3 model ---------------------------------------------------------------------------------------


def _test_columns() -> np.ndarray:
    """[K, 8] weights on the copied features: halves and quarters (ties), large factors (saturation)."""
    w = np.zeros((K, 8))
    w[0, 0] = 0.5
    w[1, 1] = -0.5
    w[2, 2], w[3, 2] = 1.5, 0.5
    w[4, 3], w[5, 3] = 0.25, -0.25
    w[6, 4] = 8.0
    w[7, 5], w[0, 5] = -6.0, 0.5
    w[:, 6] = 0.5
    w[0, 7], w[1, 7], w[2, 7], w[3, 7] = 2.0, 2.0, 2.0, 0.5
    return w


@pytest.fixture(scope="module")
def modes_model(tmp_path_factory):
    import keras

    width = K + 8
    layers = [keras.Input((K,))]
    for i in range(len(Q_MODES) * len(O_MODES)):
        layers.append(keras.layers.Dense(width, name=f"m{i}"))
    model = keras.Sequential(layers)
    for i, layer in enumerate(model.layers):
        n_in = K if i == 0 else width
        w = np.zeros((n_in, width))
        w[:K, :K] = np.eye(K)  # the copy
        w[:K, K:] = _test_columns()
        b = np.zeros(width)
        b[K + 7] = -1 / 32  # a quarter LSB of the bias type's grid off, half an LSB of the result's
        layer.set_weights([w, b])
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = "fixed<8,4,RND_CONV,SAT>"
    modes = []
    for i in range(len(Q_MODES) * len(O_MODES)):
        q, o = Q_MODES[i % 7], O_MODES[i // 7]
        modes.append((q, o))
        cfg["LayerName"][f"m{i}"]["Precision"] = {"result": f"fixed<9,5,{q},{o}>", "weight": "fixed<8,5>",
                                                 "bias": "fixed<12,4>", "accum": "fixed<24,12>"}
        cfg["LayerName"][f"m{i}"]["Trace"] = True
    hm = hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend="Vivado", io_type="io_parallel",
                                                   output_dir=str(tmp_path_factory.mktemp("modes") / "prj"))
    return hm, modes


def test_all_rounding_and_overflow_modes_match_the_c_simulation(modes_model):
    hm, modes = modes_model
    imported = import_hls4ml(hm)
    assert imported.source == "hls4ml C simulation"
    g = imported.graph
    assert [op.name for op in g.ops] == [f"m{i}" for i in range(21)]
    rng = np.random.default_rng(1)
    x = _inputs(rng, 400, K, 8, True, 4)
    mism, stats = _compare(imported, x)
    assert set(mism) == {g.inputs[0], *(op.outputs[0] for op in g.ops)}  # every layer traced
    assert all(v == 0 for v in mism.values()), mism
    for op, (q, o) in zip(g.ops, modes):
        s = stats[op.name]
        assert s["ties+"] > 0 and s["ties-"] > 0 and s["sat+"] > 0 and s["sat-"] > 0, (op.name, q, o, s)
    print("\n7x3:", {f"{q}/{o}": stats[f"m{i}"] for i, (q, o) in enumerate(modes)})


# --- the backend plugin ----------------------------------------------------------------------------------


def _torch_mlp(seed=0):
    import torch

    rng = np.random.default_rng(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 7), torch.nn.ReLU(),
                              torch.nn.Linear(7, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.tensor(rng.integers(-24, 24, p.shape) / 16.0))
    return net


def _torch_config(net, backend):
    cfg = hls4ml.utils.config_from_pytorch_model(net, input_shape=(6,), granularity="name", backend=backend)
    names = list(cfg["LayerName"])
    cfg["LayerName"][names[0]]["Precision"]["result"] = "fixed<8,3,RND,SAT>"
    dense = {"weight": "fixed<8,3>", "bias": "fixed<8,3>", "accum": "fixed<24,10>"}
    cfg["LayerName"][names[1]]["Precision"] = {**dense, "result": "fixed<10,5,RND_CONV,SAT>"}
    cfg["LayerName"][names[2]]["Precision"]["result"] = "fixed<10,5,RND_CONV,SAT>"  # relu fused
    cfg["LayerName"][names[3]]["Precision"] = {**dense, "result": "fixed<12,6,RND_INF,WRAP>"}
    cfg["LayerName"][names[4]]["Precision"]["result"] = "ufixed<6,3,TRN_ZERO,SAT>"  # relu, then a requantize
    cfg["LayerName"][names[5]]["Precision"] = {**dense, "result": "fixed<8,4,RND_MIN_INF,SAT_SYM>"}
    return cfg


def test_aieflow_backend_plugin_matches_vivado_c_simulation(tmp_path):
    assert "AIEFlow" in [b.lower() for b in hls4ml.backends.get_available_backends()] or \
        "aieflow" in [b.lower() for b in hls4ml.backends.get_available_backends()]
    net = _torch_mlp()
    aie = hls4ml.converters.convert_from_pytorch_model(net, hls_config=_torch_config(net, "AIEFlow"),
                                                      backend="AIEFlow", output_dir=str(tmp_path / "aie"))
    aie.write()
    assert (tmp_path / "aie" / "design.json").is_file()
    aie.compile()
    viv = hls4ml.converters.convert_from_pytorch_model(net, hls_config=_torch_config(net, "Vivado"),
                                                      backend="Vivado", output_dir=str(tmp_path / "viv"),
                                                      io_type="io_parallel")
    viv.compile()
    x = _inputs(np.random.default_rng(2), 300, 6, 8, True, 5)
    ours, theirs = aie.predict(x), viv.predict(x)
    assert ours.shape == theirs.shape == (300, 4)
    assert np.array_equal(ours, theirs)
    imported = import_hls4ml(viv)
    kinds = [(op.name, op.kind, op.attrs["relu"]) for op in imported.graph.ops]
    assert len(kinds) == 4  # three dense layers, the second relu as a requantize (a requant op)
    assert [k for _, k, _ in kinds].count("requant") == 1
    mism, _ = _compare(imported, x)
    assert all(v == 0 for v in mism.values()), mism


def test_keras_converter_with_the_aieflow_backend_and_compile_of_a_vivado_model(keras_small, tmp_path):
    """The two ways in that the issue names: convert_from_keras_model(backend='AIEFlow') gives an aieflow
    project, and aieflow.compile(hls_model) of the Vivado conversion measures itself against its C simulation."""
    import aieflow

    viv = _convert_small(keras_small, tmp_path)
    design = aieflow.compile(viv)
    rep = design.exactness
    assert rep.source == "hls4ml C simulation" and rep.model.exact and rep.model.values > 0, rep.lines()
    cfg = hls4ml.utils.config_from_keras_model(keras_small, granularity="name", backend="AIEFlow")
    cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = "fixed<8,3,RND,SAT>"
    cfg["LayerName"]["d"]["Precision"] = {"result": "fixed<8,4,RND,SAT>", "weight": "fixed<8,3>",
                                         "bias": "fixed<8,3>", "accum": "fixed<24,12>"}
    aie = hls4ml.converters.convert_from_keras_model(keras_small, hls_config=cfg, backend="AIEFlow",
                                                    output_dir=str(tmp_path / "aie"))
    aie.write()
    assert (tmp_path / "aie" / "design.json").is_file() and (tmp_path / "aie" / "Makefile").is_file()
    x = _inputs(np.random.default_rng(5), 200, 4, 8, True, 5)
    assert np.array_equal(aie.predict(x), design.simulate(x.astype(np.float64)))


def _auto_result_model(tmp_path, **fc1):
    """Dense layers with hls4ml's 'auto' (exact, wide) result types, each read by a narrow activation: the
    usual shape of a QKeras/HGQ-style hls4ml configuration."""
    import keras

    rng = np.random.default_rng(11)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(12, name="fc1"),
                              keras.layers.Activation("relu", name="r1"), keras.layers.Dense(5, name="fc2"),
                              keras.layers.Activation("relu", name="r2"), keras.layers.Dense(3, name="fc3")])
    for layer in model.layers:
        w, b = layer.get_weights() if layer.get_weights() else (None, None)
        if w is not None:
            layer.set_weights([np.round(rng.normal(0, 0.6, w.shape) * 16) / 16, np.round(rng.normal(0, 0.5, b.shape) * 8) / 8])
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = "fixed<8,3,RND_CONV,SAT>"
    for name in ("fc1", "fc2", "fc3"):
        cfg["LayerName"][name]["Precision"].update({"weight": "fixed<8,3>", "bias": "fixed<8,4>"})
        cfg["LayerName"][name]["Trace"] = True
    cfg["LayerName"]["fc1"]["Precision"].update(fc1)
    cfg["LayerName"]["r1"]["Precision"]["result"] = "ufixed<6,2,RND,SAT>"
    cfg["LayerName"]["r2"]["Precision"]["result"] = "fixed<7,3,RND_ZERO,SAT_SYM>"
    cfg["LayerName"]["fc3"]["Precision"]["result"] = "fixed<10,4,RND_CONV,SAT>"
    for name in ("r1", "r2"):
        cfg["LayerName"][name]["Trace"] = True
    return hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend="Vivado", io_type="io_parallel",
                                                     output_dir=str(tmp_path / "prj"))


def test_wide_auto_results_fuse_into_the_activation_that_narrows_them(tmp_path):
    hm = _auto_result_model(tmp_path)
    assert any(l.get_output_variable().type.precision.width > 16 for l in hm.get_layers() if l.name == "fc1")
    imported = import_hls4ml(hm)
    assert [op.name for op in imported.graph.ops] == ["fc1", "fc2", "fc3"]  # no extra requantize layers
    assert imported.graph.ops[0].attrs["relu"] and imported.graph.ops[0].outputs == ("r1",)
    mism, _ = _compare(imported, _inputs(np.random.default_rng(3), 400, 10, 8, True, 5))
    assert set(mism) >= {"r1", "r2", "fc3"} and all(v == 0 for v in mism.values()), mism


def test_a_wide_result_that_rounds_before_the_activation_is_refused(tmp_path):
    hm = _auto_result_model(tmp_path, result="fixed<24,18,TRN,WRAP>")  # drops fractional bits of the sums
    with pytest.raises(ModelError, match="rounds or overflows before 'r1'") as err:
        import_hls4ml(hm, exact=True)
    assert "at most 16 bits" in str(err.value.hint)


# --- refusals ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_small():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    model.layers[0].set_weights([np.full((4, 3), 0.375), np.zeros(3)])
    return model


def _convert_small(model, tmp_path, **prec):
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend="Vivado")
    cfg["LayerName"][next(iter(cfg["LayerName"]))]["Precision"]["result"] = prec.pop("input", "fixed<8,3,RND,SAT>")
    cfg["LayerName"]["d"]["Precision"] = {"result": "fixed<8,4,RND,SAT>", "weight": "fixed<8,3>",
                                         "bias": "fixed<8,3>", "accum": "fixed<24,12>", **prec}
    return hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend="Vivado",
                                                     io_type="io_parallel", output_dir=str(tmp_path / "prj"))


@pytest.mark.parametrize("prec, words", [
    ({"result": "fixed<8,4,RND,SAT_ZERO>"}, ["SAT_ZERO", "SAT, SAT_SYM or WRAP"]),
    ({"accum": "fixed<16,10>"}, ["accum_t", "6 fractional bits", "ap_fixed<18,10>"]),  # products need 8
    ({"accum": "fixed<12,2,TRN,SAT>"}, ["could overflow", "ap_fixed<"]),
    ({"result": "fixed<20,8>"}, ["20 bits", "int16"]),
])
def test_refusals_name_the_layer_and_what_would_work(keras_small, tmp_path, prec, words):
    hm = _convert_small(keras_small, tmp_path, **prec)
    with pytest.raises(ModelError) as e:
        import_hls4ml(hm, exact=True)
    assert e.value.node == "d"
    for w in words:
        assert w in str(e.value), str(e.value)


def test_wrap_sm_is_refused():
    """hls4ml 1.3 cannot spell AP_WRAP_SM (its SaturationMode has no member for it); a precision carrying it
    anyway is refused like SAT_ZERO."""
    from hls4ml.model.types import FixedPrecisionType

    from aieflow.frontends.hls4ml import _ap_type

    p = FixedPrecisionType(8, 4, True, "RND", "SAT")
    p._saturation_mode = "WRAP_SM"
    with pytest.raises(ModelError, match="WRAP_SM.*SAT, SAT_SYM or WRAP") as e:
        _ap_type(p, "d", "result")
    assert e.value.node == "d"


def test_wrapping_accumulator_into_wrapping_result_is_exact_by_construction(keras_small, tmp_path):
    """accum WRAP with at least the result's integer bits and a sign-blind rounding: no refusal."""
    hm = _convert_small(keras_small, tmp_path, accum="fixed<14,4>", result="fixed<8,4,RND_CONV,WRAP>")
    g = import_hls4ml(hm).graph
    assert g.ops[0].attrs["shift"] == 4


def test_missing_hls4ml_is_a_model_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_hls4ml(name, *a, **k):
        if name == "hls4ml" or name.startswith("hls4ml."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_hls4ml)
    with pytest.raises(ModelError, match=r"pip install aieflow\[hls4ml\]"):
        import_hls4ml(object())


# --- the full random matrix ------------------------------------------------------------------------------


def _random_type(rng, bits_range=(2, 16), signed=None, modes=True):
    bits = int(rng.integers(bits_range[0], bits_range[1] + 1))
    signed = bool(rng.random() < 0.85) if signed is None else signed
    if not signed:
        bits = min(bits, 8)
    # 1 <= I <= W: the open ap_types headers abort the C simulation (an assertion reading a bit past the MSB)
    # on some conversions into types with I > W or I < 1, so such types cannot be checked against it here.
    integer = int(rng.integers(1, bits + 1))
    name = "fixed" if signed else "ufixed"
    if not modes:
        return f"{name}<{bits},{integer}>", bits, signed, bits - integer
    q = Q_MODES[int(rng.integers(0, 7))]
    r = rng.random()
    o = "SAT_ZERO" if r < 0.03 else O_MODES[int(rng.integers(0, 3))]
    return f"{name}<{bits},{integer},{q},{o}>", bits, signed, bits - integer


def _random_case(seed: int, out_dir: str):
    """A random torch MLP (1-4 dense layers, widths 1-32, types of 2-16 bits, random modes, ReLUs with
    their own types), its Vivado ModelGraph, and 100 inputs."""
    import torch

    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 5))
    widths = [int(rng.integers(1, 33)) for _ in range(depth + 1)]
    mods, relu_after = [], []
    for i in range(depth):
        mods.append(torch.nn.Linear(widths[i], widths[i + 1]))
        relu_after.append(bool(rng.random() < 0.5) and i < depth - 1)
        if relu_after[-1]:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    cfg = hls4ml.utils.config_from_pytorch_model(net, input_shape=(widths[0],), granularity="name",
                                                 backend="Vivado")
    names = list(cfg["LayerName"])
    in_text, in_bits, in_signed, in_frac = _random_type(rng, signed=bool(rng.random() < 0.8))
    in_text = in_text.replace("SAT_ZERO", "SAT")
    cfg["LayerName"][names[0]]["Precision"]["result"] = in_text
    k = 1
    x_bits, x_frac = in_bits, in_frac
    with torch.no_grad():
        for i, m in enumerate(mods):
            if isinstance(m, torch.nn.ReLU):
                before = cfg["LayerName"][names[k - 1]]["Precision"]["result"]
                rt = _random_type(rng)[0] if rng.random() < 0.5 or before == "auto" else before
                cfg["LayerName"][names[k]]["Precision"]["result"] = rt
                r = rt.split("<")[1].split(",")
                x_bits, x_frac = int(r[0]) + (rt.startswith("ufixed")), int(r[0]) - int(r[1])
                k += 1
                continue
            wt, wbits, wsigned, wfrac = _random_type(rng, (2, 12), signed=True, modes=rng.random() < 0.3)
            bbits = int(rng.integers(2, 17))  # a bias on or above the products' grid, as trained models have
            bfrac = max(0, min(bbits - 1, x_frac + wfrac - int(rng.integers(0, 5))))
            bt = f"fixed<{bbits},{bbits - bfrac}>"
            lo, hi = -(1 << (wbits - 1)), (1 << (wbits - 1)) - 1
            wq = rng.integers(lo, hi, tuple(m.weight.shape), endpoint=True).astype(np.float64)
            if "," in wt.split(">")[0] and rng.random() < 0.5:  # off-grid floats, rounded by the weight type
                wq = wq + rng.uniform(-1, 1, wq.shape)
            m.weight.copy_(torch.tensor(np.ldexp(wq, -wfrac)))
            bq = rng.integers(-(1 << (bbits - 1)), (1 << (bbits - 1)), tuple(m.bias.shape))
            m.bias.copy_(torch.tensor(np.ldexp(bq.astype(np.float64), -bfrac)))
            rt = _random_type(rng)[0]
            if i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.ReLU) and rng.random() < 0.3:
                rt = "auto"  # hls4ml's exact (wide) result type, which the ReLU's own type narrows
            # an accumulator that holds everything, mostly; sometimes a random (narrower) one
            acc_frac = max(x_frac + wfrac, bfrac)
            acc_int = x_bits - x_frac + wbits - wfrac + int(np.ceil(np.log2(m.in_features + 1))) + 2
            acc_int = max(acc_int, bbits - bfrac + 1)
            at = f"fixed<{acc_int + acc_frac},{acc_int}>"
            if rng.random() < 0.15:
                ai = max(1, acc_int - int(rng.integers(0, 6)))
                at = f"fixed<{max(ai, acc_int + acc_frac - int(rng.integers(0, 4)))},{ai}," \
                     f"{Q_MODES[int(rng.integers(0, 7))]},{O_MODES[int(rng.integers(0, 3))]}>"
            cfg["LayerName"][names[k]]["Precision"] = {"weight": wt, "bias": bt, "result": rt, "accum": at}
            k += 1
            if rt != "auto":  # else the ReLU's type sets them
                r = rt.split("<")[1].split(",")
                x_bits, x_frac = int(r[0]), int(r[0]) - int(r[1])
    hm = hls4ml.converters.convert_from_pytorch_model(net, hls_config=cfg, backend="Vivado", io_type="io_parallel",
                                                     output_dir=out_dir)
    x = _inputs(rng, 100, widths[0], in_bits, in_signed, in_frac)
    return hm, x


def _run_case(seed: int, root: str) -> dict:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        hm, x = _random_case(seed, os.path.join(root, f"m{seed}"))
    try:
        imported = import_hls4ml(hm, exact=True)
    except ModelError as e:
        reason = e.reason.split(":")[0] if "could overflow" not in e.reason else "accum_t could overflow"
        for key in ("SAT_ZERO", "WRAP_SM", "fractional bits but the products", "AI Engine activations",
                    "rounds or overflows before",
                    "weights are int8", "wrapping type", "saturation bits"):
            if key in e.reason:
                reason = key
        return {"seed": seed, "refused": reason}
    with contextlib.redirect_stdout(io.StringIO()):
        mism, stats = _compare(imported, x)
    wide = sum(1 for layer in hm.get_layers() if layer.class_name == "Dense"
               and layer.get_output_variable().type.precision.width > 16)
    return {"seed": seed, "exact": all(v == 0 for v in mism.values()), "mism": mism, "wide": wide,
            "ties": sum(s["ties+"] + s["ties-"] for s in stats.values()),
            "sat": sum(s["sat+"] + s["sat-"] for s in stats.values()), "layers": len(imported.graph.ops)}


@pytest.mark.full
def test_full_random_matrix_against_c_simulation(tmp_path):
    import concurrent.futures as cf
    import multiprocessing as mp

    target = int(os.environ.get("AIEFLOW_HLS4ML_MODELS", "100"))  # models compared with their C simulation
    t0 = time.time()
    workers = max(1, min(16, (os.cpu_count() or 2)))
    results: list[dict] = []
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        while sum("refused" not in r for r in results) < target and len(results) < 4 * target:
            more = max(workers, int(1.3 * (target - sum("refused" not in r for r in results))))
            seeds = range(len(results), len(results) + more)
            results += list(pool.map(_run_case, seeds, [str(tmp_path)] * len(seeds)))
    n = len(results)
    refused = Counter(r["refused"] for r in results if "refused" in r)
    ran = [r for r in results if "refused" not in r]
    exact = sum(r["exact"] for r in ran)
    print(f"\nhls4ml full matrix: {n} models, {len(ran)} compared with the C simulation, {exact} exact, "
          f"refused {sum(refused.values())} {dict(refused)}, ties hit {sum(r['ties'] for r in ran)}, "
          f"saturations/wraps {sum(r['sat'] for r in ran)}, layers {sum(r['layers'] for r in ran)}, "
          f"wide auto results fused {sum(r['wide'] for r in ran)}, "
          f"{time.time() - t0:.0f} s")
    bad = [r for r in ran if not r["exact"]]
    assert not bad, bad[:5]
    assert len(ran) >= target
