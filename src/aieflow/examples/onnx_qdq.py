"""Quantized ONNX (QDQ) example models built in code, and onnxruntime as their reference executor.

The demo and the tests need models whose reference output is exactly defined, so every model built here is
made to be bit-exact under onnxruntime: power-of-two scales, zero points of 0, and weights small enough that
onnxruntime's float32 Gemm never rounds (see `qdq_mlp`). Nothing is downloaded; models come from
`onnx.helper` and a seeded random generator, so the same arguments give the same model, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError
from ..numerics import FixedType, srs

OPSET = 21  # QuantizeLinear / DequantizeLinear accept int16 and uint16 from opset 21 on
IR_VERSION = 10  # the newest IR that onnxruntime 1.17 and later all load

# onnxruntime's Gemm is float32: integer-valued partial sums are exact only below 2**24 in magnitude.
FLOAT32_EXACT = 1 << 24

_ONNX_TYPES = {
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int16): TensorProto.INT16,
    np.dtype(np.uint16): TensorProto.UINT16,
    np.dtype(np.int32): TensorProto.INT32,
}

# Calibration rows used to choose output fractional bits; enough for stable percentiles, cheap to run.
_CALIBRATION_ROWS = 512
# Typical |accumulator| (this percentile) is placed at half of the output range: large values saturate,
# small ones survive, so outputs are neither all saturated nor all zero.
_TYPICAL_PERCENTILE = 90.0


@dataclass(frozen=True)
class _Layer:
    """One dense layer on integer grids: weights [in, out], bias on the accumulator grid, output type."""

    weight: np.ndarray
    weight_dtype: str
    bias: np.ndarray
    weight_frac: int
    out: FixedType
    relu: bool


def activation_type(bits: int, signed: bool, frac: int) -> FixedType:
    """The FixedType of a QDQ activation; ONNX QuantizeLinear rounds half to even and saturates."""
    if bits not in (8, 16):
        raise ModelError(f"activations of {bits} bits are not supported", hint="use act_bits=8 or 16")
    return FixedType(bits, signed, frac)


def qdq_mlp(
    widths: list[int],
    *,
    act_bits: int = 8,
    act_signed: bool = True,
    weight_bits: int = 8,
    relu: list[bool] | bool = True,
    fracs: list[int] | None = None,
    weight_fracs: list[int] | None = None,
    seed: int = 0,
    batch: int | None = None,
    gemm: bool = True,
    trans_b: bool = False,
    name: str = "mlp",
    weight_range: int | None = None,
) -> onnx.ModelProto:
    """A QDQ MLP `widths[0] -> widths[1] -> ... -> widths[-1]` whose onnxruntime output is exact.

    Why each choice:
    - Scales are powers of two (2**-frac) and zero points 0, so the model means exactly integer arithmetic
      with a shift, the fast path of the compiler.
    - For every layer and output column j, act_magnitude * sum_k |w_q[k, j]| + |b_q[j]| < 2**24, so no
      partial sum of onnxruntime's float32 Gemm is ever rounded and the reference is bit-exact. Weights are
      shrunk per layer to guarantee it (and capped by `weight_range` when given).
    - Without `fracs`, each layer's output frac puts a typical |accumulator| (measured on random inputs
      spanning the whole input range) at the middle of the output range, so outputs neither all saturate
      nor all round to zero. `fracs` has len(widths) entries: the input's, then each layer output's.
    - `relu` is one flag for every layer or one per layer. Weights are [in, out] (Gemm transB=0) unless
      `trans_b`, which stores [out, in] with transB=1; `gemm=False` builds MatMul + Add instead (and
      ignores `trans_b`). The last layer's activation type is the hidden layers' type.
    """
    n_layers = len(widths) - 1
    _check_arguments(widths, weight_bits, fracs, weight_fracs, weight_range)
    relus = _per_layer(relu, n_layers, "relu")
    x_type = activation_type(act_bits, act_signed, fracs[0] if fracs else _default_input_frac(act_bits, act_signed))
    layers = _make_layers(widths, x_type, weight_bits, relus, fracs, weight_fracs, seed, weight_range)
    model = _build_model(name, widths, x_type, layers, batch, gemm, trans_b)
    onnx.checker.check_model(model, full_check=True)
    return model


def jet_tagger(seed: int = 0) -> onnx.ModelProto:
    """The bundled demo: a 16-64-32-32-5 jet-tagging MLP, int8 activations and weights.

    Its shape is the hls4ml jet-tagging benchmark, the model our users know; ReLU on the hidden layers and
    none on the logits, as in that benchmark.
    """
    return qdq_mlp(
        [16, 64, 32, 32, 5],
        act_bits=8,
        act_signed=True,
        weight_bits=8,
        relu=[True, True, True, False],
        seed=seed,
        name="jet_tagger",
    )


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run `model` on `x` with onnxruntime on the CPU and return its float output.

    Graph optimizations are disabled so onnxruntime does not fuse QDQ pairs into integer kernels with their
    own rounding: the float semantics of QuantizeLinear / Gemm / DequantizeLinear are what it computes.
    """
    import onnxruntime as ort  # optional dependency: only the reference needs it, not the compiler

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    (y,) = session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})
    return y


def sample_inputs(model: onnx.ModelProto, n: int, seed: int = 0) -> np.ndarray:
    """float32 inputs [n, in_features] that exercise every corner of the input QuantizeLinear.

    A mix of values on the grid across the whole range, exact ties halfway between two steps (both signs,
    where the rounding mode shows), values beyond both ends (saturation), zeros, negatives and random values
    in between. The special values are placed first and then shuffled, so every kind is present whenever
    n * in_features is at least 16.
    """
    scale, qmin, qmax, features = _input_quantizer(model)
    rng = np.random.default_rng(seed)
    size = n * features
    special = _special_inputs(qmin, qmax)[:size]
    rest = _random_inputs(rng, size - len(special), qmin, qmax)
    q = np.concatenate([special, rest])  # in units of the input step; halves are ties
    rng.shuffle(q)
    return (q * scale).astype(np.float32).reshape(n, features)


# --- argument checks ---------------------------------------------------------------------------------------


def _check_arguments(widths, weight_bits, fracs, weight_fracs, weight_range) -> None:
    if len(widths) < 2 or any(int(w) < 1 for w in widths):
        raise ModelError(f"widths {widths} must list at least an input and an output width, all positive")
    if weight_bits not in (8, 16):
        raise ModelError(f"weights of {weight_bits} bits are not supported", hint="use weight_bits=8 or 16")
    if fracs is not None and len(fracs) != len(widths):
        raise ModelError(f"fracs needs {len(widths)} entries (input, then each layer output), got {len(fracs)}")
    if weight_fracs is not None and len(weight_fracs) != len(widths) - 1:
        raise ModelError(f"weight_fracs needs {len(widths) - 1} entries, one per layer, got {len(weight_fracs)}")
    if weight_range is not None and weight_range < 1:
        raise ModelError(f"weight_range {weight_range} must be at least 1")


def _per_layer(flag: list[bool] | bool, n_layers: int, what: str) -> list[bool]:
    if isinstance(flag, bool):
        return [flag] * n_layers
    if len(flag) != n_layers:
        raise ModelError(f"{what} needs {n_layers} entries, one per layer, got {len(flag)}")
    return [bool(f) for f in flag]


def _default_input_frac(bits: int, signed: bool) -> int:
    # The input range is about [-4, 4) (or [0, 4) unsigned): a plausible range for normalised features.
    return bits - (1 if signed else 0) - 2


# --- choosing integer parameters ---------------------------------------------------------------------------


def _make_layers(widths, x_type, weight_bits, relus, fracs, weight_fracs, seed, weight_range) -> list[_Layer]:
    """Draw each layer's weights and bias, then its output type from the activations it actually sees."""
    rng = np.random.default_rng(seed)
    # A separate stream for calibration, so the choice of fracs never changes the weights drawn.
    calibration = np.random.default_rng([seed, 1])
    x_q = calibration.integers(x_type.qmin, x_type.qmax, size=(_CALIBRATION_ROWS, widths[0]), endpoint=True)
    layers = []
    for i, (k, m) in enumerate(zip(widths[:-1], widths[1:])):
        weight = _draw_weights(rng, k, m, x_type.magnitude, weight_bits, weight_range)
        bias = _draw_bias(rng, weight, x_q, x_type.magnitude)
        w_frac = weight_fracs[i] if weight_fracs else _default_weight_frac(weight)
        acc = x_q @ weight + bias  # exact: int64 and far below 2**63
        acc_frac = x_type.frac + w_frac
        out_frac = fracs[i + 1] if fracs else acc_frac - _typical_shift(acc, x_type, relus[i])
        out = FixedType(x_type.bits, x_type.signed, out_frac)
        _check_scale(acc_frac, f"layer {i}'s accumulator")
        _check_scale(out_frac, f"layer {i}'s output")
        layers.append(_Layer(weight, f"int{weight_bits}", bias, w_frac, out, relus[i]))
        x_q = _requantize(acc, acc_frac - out_frac, out, relus[i])
        x_type = out
    return layers


def _draw_weights(rng, k: int, m: int, act_magnitude: int, weight_bits: int, weight_range: int | None):
    """Weights [k, m] with act_magnitude * sum_k |w[k, j]| < 2**24 for every j, both signs."""
    type_max = (1 << (weight_bits - 1)) - 1
    exact_max = (FLOAT32_EXACT - 1) // (act_magnitude * k)  # so the weights alone stay below 2**24
    w_max = min(type_max, exact_max, weight_range or type_max)
    if w_max < 1:
        raise ModelError(f"a layer of {k} inputs cannot stay float32-exact with activations up to {act_magnitude}",
                         hint="use fewer inputs per layer or 8-bit activations")
    return rng.integers(-w_max, w_max, size=(k, m), endpoint=True).astype(np.int64)


def _draw_bias(rng, weight: np.ndarray, x_q: np.ndarray, act_magnitude: int) -> np.ndarray:
    """Bias [m] on the accumulator grid with act_magnitude * sum_k |w[k, j]| + |b[j]| < 2**24 for every j.

    Inputs after a ReLU or of an unsigned type are all >= 0, so x . w has a large mean of either sign per
    column; without a bias to cancel it (as training would) many outputs are constant: always clipped to 0 or
    saturated. So the bias cancels the mean seen on the calibration inputs, plus a modest random part (about
    a quarter of a typical accumulator), half of it negative.
    """
    k, m = weight.shape
    w_max = int(np.abs(weight).max())
    modest = max(1, int(act_magnitude * w_max * np.sqrt(k)) // 4)
    magnitude = np.floor(rng.uniform(0.0, 1.0, size=m) * (modest + 1)).astype(np.int64)
    # Half the random parts negative, in random places: both signs appear even in a narrow layer.
    signs = rng.permutation(np.where(np.arange(m) % 2 == 0, 1, -1))
    centre = -np.round(x_q.mean(axis=0) @ weight).astype(np.int64)
    room = FLOAT32_EXACT - 1 - act_magnitude * np.abs(weight).sum(axis=0)  # left under the float32 bound
    return np.clip(centre + signs * np.minimum(magnitude, modest), -room, room)


def _check_scale(frac: int, what: str) -> None:
    # Scales are float32 2**-frac: outside the normal range they would round, and exactness would be lost.
    if not -126 <= frac <= 126:
        raise ModelError(f"{what} has {frac} fractional bits; its scale 2**-{frac} is not a normal float32",
                         hint="choose fracs between -126 and 126")


def _default_weight_frac(weight: np.ndarray) -> int:
    # Any frac is exact; this one makes real weights about 1/sqrt(fan-in), like a trained layer's, so real
    # activations keep about the input's magnitude from layer to layer and the model reads naturally.
    fan_in = weight.shape[0]
    return int(np.abs(weight).max()).bit_length() + int(np.round(np.log2(fan_in) / 2))


def _typical_shift(acc: np.ndarray, x_type: FixedType, relu: bool) -> int:
    """The right shift that puts a typical |acc| at half of the output type's largest value."""
    seen = np.maximum(acc, 0) if relu or not x_type.signed else acc
    typical = float(np.percentile(np.abs(seen), _TYPICAL_PERCENTILE))
    if typical == 0.0:
        return 0
    target = x_type.qmax / 2
    return int(np.round(np.log2(typical / target)))


def _requantize(acc: np.ndarray, shift: int, out: FixedType, relu: bool) -> np.ndarray:
    # ReLU after rounding equals ReLU before quantization (rounding is monotone and keeps 0).
    y = srs(acc, shift, out)
    return np.maximum(y, 0) if relu else y


# --- ONNX graph --------------------------------------------------------------------------------------------


class _GraphBuilder:
    """Collects nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs))
        return output

    def qdq(self, source: str, prefix: str, t: FixedType) -> str:
        """QuantizeLinear then DequantizeLinear onto t: the float value x means round-and-saturate(x)."""
        scale = self.constant(f"{prefix}_scale", np.float32(2.0**-t.frac))
        zero = self.constant(f"{prefix}_zero_point", np.zeros((), dtype=t.storage))
        q = self.node("QuantizeLinear", [source, scale, zero], f"{prefix}_q")
        return self.node("DequantizeLinear", [q, scale, zero], f"{prefix}_dq")

    def dequantized(self, prefix: str, values: np.ndarray, dtype: str, frac: int) -> str:
        """An integer initializer behind a DequantizeLinear of scale 2**-frac, zero point 0."""
        stored = self.constant(f"{prefix}_q", values.astype(dtype))
        scale = self.constant(f"{prefix}_scale", np.float32(2.0**-frac))
        zero = self.constant(f"{prefix}_zero_point", np.zeros((), dtype=dtype))
        return self.node("DequantizeLinear", [stored, scale, zero], f"{prefix}_dq")


def _build_model(name, widths, x_type, layers, batch, gemm, trans_b) -> onnx.ModelProto:
    g = _GraphBuilder()
    current = g.qdq("x", "input", x_type)
    in_frac = x_type.frac
    for i, layer in enumerate(layers):
        current = _dense(g, f"fc{i}", current, layer, in_frac, gemm, trans_b)
        if layer.relu:
            current = g.node("Relu", [current], f"fc{i}_relu")
        current = g.qdq(current, f"fc{i}_out", layer.out)
        in_frac = layer.out.frac
    # The graph output is named y: rename the last DequantizeLinear's output.
    g.nodes[-1].output[0] = "y"
    g.nodes[-1].name = "y_DequantizeLinear"
    rows = batch if batch is not None else "N"
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, widths[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, widths[-1]])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aieflow")
    model.ir_version = IR_VERSION
    return model


def _dense(g: _GraphBuilder, prefix: str, x: str, layer: _Layer, in_frac: int, gemm: bool, trans_b: bool) -> str:
    """Gemm (or MatMul + Add) of x with dequantized int weights and an int32 bias on the accumulator grid."""
    stored = layer.weight.T if (gemm and trans_b) else layer.weight
    w = g.dequantized(f"{prefix}_weight", stored, layer.weight_dtype, layer.weight_frac)
    b = g.dequantized(f"{prefix}_bias", layer.bias, "int32", in_frac + layer.weight_frac)
    if gemm:
        return g.node("Gemm", [x, w, b], f"{prefix}_gemm", transB=1 if trans_b else 0)
    product = g.node("MatMul", [x, w], f"{prefix}_matmul")
    return g.node("Add", [product, b], f"{prefix}_add")


# --- sample inputs -----------------------------------------------------------------------------------------


def _input_quantizer(model: onnx.ModelProto) -> tuple[float, int, int, int]:
    """Scale, qmin, qmax of the QuantizeLinear fed by the graph input, and the number of input features."""
    graph = model.graph
    source = graph.input[0].name
    node = next((n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == source), None)
    if node is None:
        raise ModelError(f"the graph input '{source}' does not feed a QuantizeLinear")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scale = float(inits[node.input[1]])
    dtype = inits[node.input[2]].dtype if len(node.input) > 2 and node.input[2] else np.dtype(np.uint8)
    info = np.iinfo(dtype)
    features = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    return scale, int(info.min), int(info.max), int(features)


def _special_inputs(qmin: int, qmax: int) -> np.ndarray:
    """Values in units of the input step that every sample must contain."""
    return np.array(
        [
            0.0,
            0.5, -0.5, 1.5, -1.5, 2.5, -2.5,  # ties next to zero, both signs, odd and even neighbours
            qmax - 0.5, qmin + 0.5,  # ties at the top and bottom of the range
            qmax, qmin,  # the extremes, exactly
            qmax + 0.5, qmin - 0.5,  # ties just outside: round, then saturate
            qmax + 3.0, qmin - 3.0,  # beyond the range on both ends
            -1.0,
        ]
    )


def _random_inputs(rng: np.random.Generator, size: int, qmin: int, qmax: int) -> np.ndarray:
    """A mix of on-grid values, ties, arbitrary values and saturating values, in units of the step."""
    span = qmax - qmin
    kind = rng.integers(0, 4, size=size)
    on_grid = rng.integers(qmin, qmax, size=size, endpoint=True).astype(np.float64)
    ties = rng.integers(qmin - 2, qmax + 2, size=size, endpoint=True) + 0.5
    anywhere = rng.uniform(qmin - 0.1 * span, qmax + 0.1 * span, size=size)
    # Off-grid values in float32: round to 1/256 of a step so the scaled float32 value is what we meant.
    anywhere = np.round(anywhere * 256) / 256
    past = rng.integers(1, span // 4 + 1, size=size, endpoint=True)
    beyond = np.where(rng.random(size) < 0.5, qmin - past, qmax + past).astype(np.float64)
    return np.choose(kind, [on_grid, ties, anywhere, beyond])
