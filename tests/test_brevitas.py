"""Brevitas modules through QONNX export: the emulator equals the module's own forward pass bit for bit.

Default run: a trained MLP imported, compiled and matched on 128 inputs (output and every hidden layer), 6
random power-of-two models, one learned-float-scale model (mismatch recorded, not asserted), and the
refusals. `-m full`: 100 random power-of-two models (asserted bit-exact, or refused with a clear error) and 30
float-scale models (mismatches counted); prints counts with -s.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

# `make test` installs the frontends' extras: a missing one is a failure here, not a skip.
import brevitas  # noqa: E402,F401
import onnxoptimizer  # noqa: E402,F401  (Brevitas' ONNX export needs it)
import qonnx  # noqa: E402,F401
import torch  # noqa: E402

import aieflow  # noqa: E402
from aieflow.errors import ModelError  # noqa: E402
from aieflow.examples.brevitas import brevitas_inputs, brevitas_mlp, random_brevitas_mlp, train  # noqa: E402
from aieflow.examples.qonnx import run_graph  # noqa: E402
from aieflow.frontends.torch_module import import_torch  # noqa: E402

warnings.filterwarnings("ignore")


def _compare(imported, x):
    """(design, reference dict, emulated output, IR values per tensor) on float inputs x."""
    g = imported.graph
    ref = imported.reference(x)
    q_in = g.tensors[g.inputs[0]].quantize(x)
    design = aieflow.compile(imported.graph, device="ve2802", measure=False)
    y = design.simulate(q_in, raw=True)
    return design, ref, y, run_graph(g, q_in)


def test_trained_mlp_bit_exact():
    module = train(brevitas_mlp((16, 32, 32, 4)), steps=150, seed=0)
    imported = import_torch(module, torch.randn(4, 16))
    assert imported.source == "brevitas"
    g = imported.graph
    assert [op.kind for op in g.ops] == ["dense"] * 3 and all(t.plain for t in g.tensors.values())
    x = brevitas_inputs(imported, 128, np.random.default_rng(0))
    x[:64] = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)  # and typical data
    _, ref, y, vals = _compare(imported, x)
    assert len(ref) == 4  # the input, both hidden layers and the output, from forward hooks
    assert np.array_equal(ref[g.inputs[0]], g.tensors[g.inputs[0]].quantize(x))
    for name, want in ref.items():
        assert np.array_equal(vals[name], want), name
    assert np.array_equal(y, ref[g.outputs[0]])


def _check(seed: int, counts: dict, float_scales: bool = False) -> None:
    rng = np.random.default_rng(seed)
    module, desc = random_brevitas_mlp(rng, float_scales=float_scales)
    counts["models"] += 1
    try:
        imported = import_torch(module, torch.randn(2, desc["widths"][0]))
        x = brevitas_inputs(imported, 100, rng)
        design, ref, y, vals = _compare(imported, x)
    except aieflow.AieflowError as e:
        counts["refused"] += 1
        counts["reasons"].append(f"model {seed} {desc}: {e}")
        return
    g = imported.graph
    stats = {}
    run_graph(g, g.tensors[g.inputs[0]].quantize(x), stats)
    counts["ties"] += stats.get("ties", 0)
    counts["saturations"] += stats.get("saturations", 0)
    counts["bits"].update(desc["act_bits"])
    wrong = int(np.sum(y != ref[g.outputs[0]]))
    if float_scales:
        counts["values"] += y.size
        counts["mismatched"] += wrong
        counts["exact"] += int(wrong == 0)
        if wrong:
            counts["max_lsb"] = max(counts["max_lsb"], int(np.max(np.abs(y - ref[g.outputs[0]]))))
        return
    for name, want in ref.items():
        assert np.array_equal(vals[name], want), f"model {seed} {desc}: tensor {name} differs"
    assert wrong == 0, f"model {seed} {desc}: {wrong} of {y.size} outputs differ from the forward pass"
    counts["exact"] += 1


def _counts() -> dict:
    return {"models": 0, "exact": 0, "refused": 0, "ties": 0, "saturations": 0, "values": 0, "mismatched": 0,
            "max_lsb": 0, "bits": set(), "reasons": []}


def _report(what: str, c: dict, seconds: float) -> str:
    s = (f"brevitas {what}: {c['models']} models, {c['exact']} bit-exact, {c['refused']} refused, "
         f"{c['ties']} hidden ties, {c['saturations']} saturations, activation bits {sorted(c['bits'])}")
    if c["values"]:
        s += f", {c['mismatched']} of {c['values']} outputs differ (max {c['max_lsb']} LSB)"
    return s + f", {seconds:.1f} s"


def test_random_brevitas_slice():
    c, t0 = _counts(), time.time()
    for seed in range(6):
        _check(seed, c)
    print("\n" + _report("power-of-two", c, time.time() - t0))
    assert c["exact"] == 6, c["reasons"]


def test_float_scale_model_is_measured_not_assumed():
    c, t0 = _counts(), time.time()
    _check(0, c, float_scales=True)
    print("\n" + _report("float-scale", c, time.time() - t0))
    assert c["refused"] == 0, c["reasons"]


@pytest.mark.full
def test_random_brevitas_full():
    c, t0 = _counts(), time.time()
    for seed in range(100, 200):
        _check(seed, c)
    print("\n" + _report("power-of-two", c, time.time() - t0))
    for r in c["reasons"]:
        print("  refused:", r)
    assert c["models"] == 100 and c["exact"] + c["refused"] == c["models"]
    assert c["ties"] > 0 and c["saturations"] > 0
    f, t1 = _counts(), time.time()
    for seed in range(300, 330):
        _check(seed, f, float_scales=True)
    print(_report("float-scale", f, time.time() - t1))
    for r in f["reasons"]:
        print("  refused:", r)


# --- refusals ---------------------------------------------------------------------------------------------


def test_unquantized_output_refused():
    from brevitas import nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint

    m = torch.nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
                            qnn.QuantLinear(4, 3, bias=False, weight_quant=Int8WeightPerTensorFixedPoint))
    with pytest.raises(ModelError) as e:
        import_torch(m, torch.randn(2, 4))
    assert "output is not quantized" in str(e.value) and "output_quant=Int8ActPerTensorFixedPoint" in e.value.hint


def test_plain_torch_module_refused():
    with pytest.raises(ModelError, match="no Brevitas quantizers"):
        import_torch(torch.nn.Sequential(torch.nn.Linear(4, 3)), torch.randn(2, 4))


def test_input_shape_refused():
    with pytest.raises(ModelError, match="batch, features"):
        import_torch(brevitas_mlp((4, 3)), torch.randn(2, 3, 4))
