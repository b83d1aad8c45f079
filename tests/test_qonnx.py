"""The QONNX frontend: random Quant-based MLPs equal qonnx's executor bit for bit, and bad models end in one
clear error naming the node.

Default run: the rounding-mode table against qonnx's own functions, 10 random models compiled and emulated,
hand-built Trunc / BipolarQuant models, and the refusals. `-m full`: 120 random models (depth 1-4, widths
1-64, activations 2-16 bits signed / unsigned / narrow, zero points, every rounding mode, Trunc and requantizing
Quant layers), 100 inputs each with ties on both signs and saturating values; prints counts with -s.
"""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

import qonnx  # noqa: E402,F401  (`make test` installs the extra: missing is a failure, not a skip)
from onnx import TensorProto, helper  # noqa: E402

import aieflow  # noqa: E402
from aieflow.errors import ModelError  # noqa: E402
from aieflow.examples.qonnx import DOMAIN, MODES, QSpec, build_qonnx, qonnx_inputs, random_qonnx_mlp, run_graph  # noqa: E402
from aieflow.frontends.qonnx import QONNX_ROUNDING, QuantParams, _rounding, import_qonnx  # noqa: E402
from aieflow.numerics import round_fraction  # noqa: E402


def _check_model(seed: int, counts: dict, inputs: int = 100) -> None:
    rng = np.random.default_rng(seed)
    model, spec = random_qonnx_mlp(rng)
    counts["models"] += 1
    for layer in [{"out": spec.input}] + spec.layers:
        counts["modes"].add(layer["out"].mode)
        counts["zero_points"] += int(layer["out"].zp != 0)
        counts["bits"].add(layer["out"].bits)
    counts["trunc"] += sum(layer["kind"] == "trunc" for layer in spec.layers)
    try:
        imported = import_qonnx(model)
        design = aieflow.compile(imported.graph, device="ve2802", batch=int(rng.integers(1, 9)), measure=False)
    except aieflow.AieflowError as e:
        counts["refused"] += 1
        counts["reasons"].append(f"model {seed}: {e}")
        return
    g = imported.graph
    x = qonnx_inputs(spec, inputs, rng)
    ref = imported.reference(x)
    q_in = ref[g.inputs[0]]
    assert np.array_equal(q_in, g.tensors[g.inputs[0]].quantize(x)), f"model {seed}: input quantization differs"
    stats = {}
    vals = run_graph(g, q_in, stats)
    for name, want in ref.items():  # every layer: the IR's integer semantics equal qonnx
        diff = np.flatnonzero(vals[name] != want)
        assert diff.size == 0, f"model {seed}, tensor {name}: {diff.size} values differ"
    y = design.simulate(q_in, raw=True)
    diff = np.flatnonzero(y != ref[g.outputs[0]])
    assert diff.size == 0, f"model {seed}: {diff.size} of {y.size} outputs differ from qonnx"
    counts["exact"] += 1
    counts["ties"] += stats.get("ties", 0)
    counts["saturations"] += stats.get("saturations", 0)


def _counts() -> dict:
    return {"models": 0, "exact": 0, "refused": 0, "ties": 0, "saturations": 0, "zero_points": 0, "trunc": 0,
            "modes": set(), "bits": set(), "reasons": []}


def _report(counts: dict, seconds: float) -> str:
    return (f"qonnx: {counts['models']} models, {counts['exact']} bit-exact, {counts['refused']} refused, "
            f"{counts['ties']} hidden ties, {counts['saturations']} saturations, {counts['zero_points']} zero points, "
            f"{counts['trunc']} Trunc, modes {sorted(counts['modes'])}, bits {sorted(counts['bits'])}, {seconds:.1f} s")


def test_random_qonnx_models_slice():
    counts, t0 = _counts(), time.time()
    for seed in range(10):
        _check_model(seed, counts)
    print("\n" + _report(counts, time.time() - t0))
    assert counts["exact"] == 10, counts["reasons"]


@pytest.mark.full
def test_random_qonnx_models_full():
    counts, t0 = _counts(), time.time()
    for seed in range(100, 220):
        _check_model(seed, counts)
    print("\n" + _report(counts, time.time() - t0))
    for r in counts["reasons"]:
        print("  refused:", r)
    assert counts["models"] >= 100 and counts["exact"] + counts["refused"] == counts["models"]
    assert counts["modes"] == set(MODES)
    assert counts["ties"] > 0 and counts["saturations"] > 0


# --- the rounding modes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("zp,signed", [(0, True), (0, False), (3, False), (4, False), (-3, True), (6, True)])
def test_rounding_table_matches_qonnx(mode, zp, signed):
    """round(v) + zp by the mapped IR mode equals qonnx's round(clamp(v + zp)) on ties and near-ties."""
    from qonnx.custom_op.general.intquant import resolve_rounding_mode

    p = QuantParams(1.0, zp, 8, signed, False, mode)
    try:
        r = _rounding(None, p)
    except ModelError:
        assert signed and zp != 0 and QONNX_ROUNDING[mode].name.startswith("SYMMETRIC")
        return
    v = np.arange(-40, 41) / 4.0  # quarters: exact ties and both sides of them, both signs
    want = resolve_rounding_mode(mode)(np.clip(v + zp, p.qmin, p.qmax))
    got = [min(max(round_fraction(Fraction(e), r) + zp, p.qmin), p.qmax) for e in v]
    assert np.array_equal(np.asarray(got), want.astype(np.int64))


# --- hand-built models ------------------------------------------------------------------------------------


def _quant(x, out, scale, zp=0.0, bits=8.0, signed=1, narrow=0, mode="ROUND"):
    return [helper.make_node("Quant", [x, f"{out}_s", f"{out}_z", f"{out}_b"], [out], domain=DOMAIN, name=out,
                             signed=signed, narrow=narrow, rounding_mode=mode)], \
        [helper.make_tensor(f"{out}_s", TensorProto.FLOAT, [], [scale]),
         helper.make_tensor(f"{out}_z", TensorProto.FLOAT, [], [zp]),
         helper.make_tensor(f"{out}_b", TensorProto.FLOAT, [], [bits])]


def _model(nodes, inits, out, features=4, out_features=3, opset=2):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, out_features])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, opset)])
    m.ir_version = 8
    return m


def _dense_model(w_node="Quant", act_out=None, extra=None, w=None):
    """x -> Quant -> Gemm(weights through w_node) -> Relu -> Quant (act_out) [-> extra nodes]."""
    rng = np.random.default_rng(0)
    n, i = _quant("x", "qx", 2.0 ** -4)
    w = w if w is not None else (rng.integers(-20, 21, (4, 3)) / 32.0).astype(np.float32)
    inits = i + [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w.ravel())]
    if w_node == "Quant":
        wn, wi = _quant("w", "qw", 2.0 ** -5)
    else:
        wn = [helper.make_node("BipolarQuant", ["w", "qw_s"], ["qw"], domain=DOMAIN, name="qw")]
        wi = [helper.make_tensor("qw_s", TensorProto.FLOAT, [], [0.25])]
    n += wn
    inits += wi
    n += [helper.make_node("Gemm", ["qx", "qw"], ["mm"], name="fc"), helper.make_node("Relu", ["mm"], ["r"], name="relu")]
    an, ai = act_out or _quant("r", "y", 2.0 ** -3, signed=0)
    n += an
    inits += ai
    out = an[-1].output[0]
    if extra:
        en, ei, out = extra
        n += en
        inits += ei
    return _model(n, inits, out)


def _exact_against_qonnx(model, features=4, samples=64):
    imported = import_qonnx(model)
    g = imported.graph
    rng = np.random.default_rng(1)
    x = (rng.integers(-300, 300, (samples, features)) / 32.0).astype(np.float32)
    ref = imported.reference(x)
    vals = run_graph(g, ref[g.inputs[0]])
    for name, want in ref.items():
        assert np.array_equal(vals[name], want), name
    design = aieflow.compile(g, measure=False)
    assert np.array_equal(design.simulate(ref[g.inputs[0]], raw=True), ref[g.outputs[0]])
    return imported


def test_dense_model_and_reference_layers():
    imported = _exact_against_qonnx(_dense_model())
    assert imported.source == "qonnx"
    assert [op.kind for op in imported.graph.ops] == ["dense"]


def test_bipolar_weights():
    imported = _exact_against_qonnx(_dense_model("BipolarQuant"))
    op = imported.graph.ops[0]
    assert set(np.unique(op.params["weight"])) <= {-1, 1}


@pytest.mark.parametrize("mode", ["FLOOR", "ROUND", "CEIL", "HALF_UP"])
def test_trunc_v2_is_a_shift(mode):
    trunc = [helper.make_node("Trunc", ["y", "t_s", "t_z", "t_ib", "t_os", "t_ob"], ["t"], domain=DOMAIN, name="trunc",
                              rounding_mode=mode, signed=0)]
    ti = [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in
          (("t_s", 2.0 ** -3), ("t_z", 0.0), ("t_ib", 8.0), ("t_os", 2.0 ** -1), ("t_ob", 5.0))]
    imported = _exact_against_qonnx(_dense_model(extra=(trunc, ti, "t")))
    op = imported.graph.ops[-1]
    assert op.name == "trunc" and op.attrs["shift"] == 2


def test_trunc_v1():
    trunc = [helper.make_node("Trunc", ["y", "t_s", "t_z", "t_ib", "t_ob"], ["t"], domain=DOMAIN, name="trunc",
                              rounding_mode="FLOOR")]
    ti = [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in
          (("t_s", 2.0 ** -3), ("t_z", 0.0), ("t_ib", 8.0), ("t_ob", 6.0))]
    m = _dense_model(extra=(trunc, ti, "t"))
    m.opset_import[1].version = 1
    _exact_against_qonnx(m)


def test_requantize_and_zero_point():
    """A second Quant on an activation, with a zero point and an odd zero point under ROUND (ties to odd)."""
    act = _quant("r", "y", 2.0 ** -3, zp=3.0, signed=0)
    extra = _quant("y", "z", 2.0 ** -2, zp=-5.0, bits=6.0, signed=1, mode="ROUND")
    _exact_against_qonnx(_dense_model(act_out=act, extra=(*extra, "z")))


# --- refusals: one clear ModelError each, naming the node ------------------------------------------------


def _refused(model, *words, node=None):
    with pytest.raises(ModelError) as e:
        import_qonnx(model)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    if node:
        assert e.value.node == node, msg
    return e.value


def test_unsupported_op_names_the_node():
    m = _dense_model(extra=([helper.make_node("Sigmoid", ["y"], ["s"], name="sig")], [], "s"))
    e = _refused(m, "unsupported op Sigmoid", node="sig")
    assert "Quant" in e.hint


def test_bipolar_activation_refused():
    extra = ([helper.make_node("BipolarQuant", ["y", "b_s"], ["b"], domain=DOMAIN, name="bip")],
             [helper.make_tensor("b_s", TensorProto.FLOAT, [], [1.0])], "b")
    _refused(_dense_model(extra=extra), "BipolarQuant of an activation", node="bip")


def test_unsigned_narrow_refused():
    _refused(_dense_model(act_out=_quant("r", "y", 2.0 ** -3, signed=0, narrow=1)), "narrow", node="y")


def test_symmetric_rounding_with_signed_zero_point_refused():
    _refused(_dense_model(act_out=_quant("r", "y", 2.0 ** -3, zp=2.0, signed=1, mode="HALF_UP")), "zero point",
             node="y")


def test_unsigned_16_bit_activation_refused():
    _refused(_dense_model(act_out=_quant("r", "y", 2.0 ** -3, bits=12.0, signed=0)), "unsigned", node="y")


def test_one_bit_activation_refused():
    _refused(_dense_model(act_out=_quant("r", "y", 2.0 ** -3, bits=1.0, signed=0)), "1 bits", node="y")


def test_output_not_quantized_refused():
    n, i = _quant("x", "qx", 2.0 ** -4)
    wn, wi = _quant("w", "qw", 2.0 ** -5)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.zeros(12, np.float32))
    m = _model(n + wn + [helper.make_node("MatMul", ["qx", "qw"], ["mm"], name="fc")], i + wi + [w], "mm")
    e = _refused(m, "not a quantized activation")
    assert "output_quant" in e.hint


def test_float_weights_refused():
    n, i = _quant("x", "qx", 2.0 ** -4)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.zeros(12, np.float32))
    yn, yi = _quant("mm", "y", 2.0 ** -3)
    m = _model(n + [helper.make_node("MatMul", ["qx", "w"], ["mm"], name="fc")] + yn, i + [w] + yi, "y")
    _refused(m, "weight must be a constant quantized", node="fc")


def test_bias_off_grid_refused():
    rng = np.random.default_rng(0)
    n, i = _quant("x", "qx", 2.0 ** -4)
    wn, wi = _quant("w", "qw", 2.0 ** -5)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], (rng.integers(-9, 9, 12) / 32).astype(np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], [0.001, 0.0, 0.0])
    yn, yi = _quant("mm", "y", 2.0 ** -3)
    m = _model(n + wn + [helper.make_node("Gemm", ["qx", "qw", "b"], ["mm"], name="fc")] + yn, i + wi + [w, b] + yi, "y")
    _refused(m, "accumulator grid", node="fc")


def test_per_channel_scale_refused():
    n, i = _quant("x", "qx", 2.0 ** -4)
    i[0] = helper.make_tensor("qx_s", TensorProto.FLOAT, [4], [0.5, 0.25, 0.5, 0.5])
    yn, yi = _quant("qx", "y", 2.0 ** -3)
    _refused(_model(n + yn, i + yi, "y", out_features=4), "per-channel", node="qx")


def test_not_a_file():
    with pytest.raises(ModelError, match="no such file"):
        import_qonnx("/nonexistent/model.onnx")


def test_generator_spec_round_trip():
    spec_model = build_qonnx(random_qonnx_mlp(np.random.default_rng(5))[1])
    assert any(n.op_type == "Quant" for n in spec_model.graph.node)
    assert QSpec(4, False, False, 0, 3).magnitude == 12
