"""hls4ml convolutional networks and io_stream against hls4ml's own C simulation (g++ and the open ap_types
headers, no Vitis), layer by layer through hls4ml's trace.

Each test builds as few C simulations as it can (one ModelGraph per io type, shared by its assertions); the
random sweep of CNNs (`-m full`) builds one per model.
"""

from __future__ import annotations

import os

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
    fed the simulation's own inputs), and the ties and saturations the ops' roundings met."""
    from aieflow.exactness import evaluate_op

    ref = imported.reference(x)
    g = imported.graph
    vals = evaluate(g, ref[g.inputs[0]])
    known = {**vals, **ref}  # an input the simulation does not expose (a relu fused before it): the Graph's own
    mism = {}
    stats = {"ties+": 0, "ties-": 0, "sat": 0}
    for op in g.ops:
        y = op.outputs[0]
        if y in ref:
            mism[y] = int(np.sum(evaluate_op(op, g, known) != ref[y]))
        acc = _op_sums(op, g, known)
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
