"""ONNX models quantized with QuantizeLinear / DequantizeLinear (QDQ) into the aieflow Graph.

Each ONNX tensor is given a symbolic meaning as the nodes are visited in order: a float graph input, a
quantized activation, its dequantized float view, an integer constant with its scale and zero point, or a
dense layer in progress (MatMul/Gemm, then bias, then ReLU) that the next QuantizeLinear completes. Each node
type is one rule in `RULES`; a node whose inputs have meanings no rule accepts ends in an error naming it.

Scales and zero points are per tensor. Power-of-two scales with zero point 0 give the exact fixed-point
layers of the fast path (a shift, multiplier 1). Anything else is what quantization tools produce
(onnxruntime's quantize_static, PyTorch fake-quant exports): an IR tensor keeps the float32 scale and the
zero point; a layer requantizes with numerics.choose_multiplier(s_x * s_w / s_y) (multiplier and shift),
folds the input zero point into the bias (bias -= zp_x * sum_k W[k, :]) and the weight zero point into the
weights (W - zp_w, int16 where it leaves int8), and adds the output zero point after rounding. Where that
integer arithmetic differs from onnxruntime's float32 arithmetic is measured against `import_onnx`'s
reference, never assumed.

The forms the tools emit, besides Gemm -> QuantizeLinear:
- MatMul -> QDQ -> Add(constant) -> [Relu] -> QuantizeLinear (onnxruntime quantizes a MatMul's output
  before its bias Add): the Add becomes a requant op of its own (ops.requant.requant_op), x * 2**k plus the constant
  on that grid, then requantized: what a dense layer with diagonal weights 2**k computes, without them.
- QuantizeLinear -> DequantizeLinear -> Relu -> QuantizeLinear with the same scale and zero point
  (onnxruntime keeps such a Relu with symmetric activations): the Relu folds into the layer that produced
  the activation (exact: it is max(q, zero point)).

Convolutional networks (feature-map inputs, Conv, pools, views of maps before a dense layer) are the rules
of onnx_cnn_rules, which wrap these; residual adds are onnx_add_rule's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from ..errors import ModelError
from ..ir import Graph, Tensor
from ..ops.dense import dense_op
from ..ops.requant import requant_op
from ..numerics import FixedType, Rounding, Saturation, choose_multiplier, quantize_float, round_fraction
from .onnx_nodes import attr, check_gemm, check_view, constant_value, node_name, read_model

# --- what an ONNX tensor means ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatInput:
    name: str
    features: int
    dims: tuple[int, ...] = ()  # a sample's shape as the model declares it (after the batch axis)


@dataclass(frozen=True)
class Quantized:
    tensor: str  # IR tensor name


@dataclass(frozen=True)
class Dequantized:
    tensor: str


@dataclass(frozen=True)
class Const:
    """A constant: float values, and when it is a dequantized integer constant, its integers q, their type
    (frac: the power-of-two scale 2**-frac, or 0 with `scale`), the float scale when not a power of two, and
    the zero point: values = (q - zero_point) * scale."""

    values: np.ndarray
    q: np.ndarray | None = None
    type: FixedType | None = None
    scale: float | None = None
    zero_point: int = 0

    @property
    def real_scale(self) -> float:
        return float(2.0 ** -self.type.frac) if self.scale is None else float(self.scale)


@dataclass(frozen=True)
class PendingDense:
    """x @ W (+ b) (-> ReLU) waiting for its output QuantizeLinear."""

    node: str
    x: str  # IR tensor
    weight: np.ndarray  # [in, out] integers, the weight zero point already subtracted
    weight_type: FixedType
    bias: np.ndarray | None  # on the accumulator grid
    relu: bool
    weight_scale: float | None = None  # None: the power of two 2**-weight_type.frac
    elementwise: bool = False  # a bias layer: weight is diag(2**k), finished as a requant op with scale 2**k


@dataclass(frozen=True)
class PendingRelu:
    """Relu of a dequantized activation, waiting for a QuantizeLinear with the same scale and zero point."""

    node: str
    tensor: str  # IR tensor


@dataclass
class _State:
    values: dict
    tensors: dict
    ops: list
    shapes: dict  # ONNX tensor name -> a sample's shape there, where it differs from its IR tensor's source shape
    uses: dict | None = None  # ONNX tensor name -> number of readers (graph outputs count as readers)
    # IR tensors the model does not hold, made from one it does: name -> (that tensor, an integer offset).
    derived: dict = field(default_factory=dict)
    # The graph input's IR tensor while it is flat but could be read as a one-channel feature map.
    promotable: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QParams:
    """The per-tensor scale (the float32 value, as a Python float) and zero point of a Q/DQ node, and its
    integer type where the node says it (bits None: a DequantizeLinear without a zero point)."""

    scale: float
    zero_point: int
    bits: int | None
    signed: bool | None

    @property
    def frac(self) -> int | None:
        """-log2(scale) when the scale is a power of two, else None."""
        m, e = math.frexp(self.scale)
        return -(e - 1) if m == 0.5 else None

    def activation(self, name: str, features: int) -> Tensor:
        # ONNX QuantizeLinear rounds half to even and saturates.
        frac = self.frac
        t = FixedType(self.bits, self.signed, frac if frac is not None else 0, Rounding.CONV_EVEN,
                      Saturation.SATURATE)
        return Tensor(name, (features,), t, None if frac is not None else self.scale, self.zero_point)


_ONNX_INT_TYPES = {2: (8, False), 3: (8, True), 4: (16, False), 5: (16, True), 6: (32, True)}
_TENSORPROTO = {(8, False): 2, (8, True): 3, (16, False): 4, (16, True): 5, (32, True): 6}


# What the exactness report compares against: onnxruntime with graph optimizations off computes the ONNX
# definition of a QDQ graph (DequantizeLinear -> float op -> QuantizeLinear). Its default session fuses
# QDQ groups into integer kernels (QGemm, int8 activations moved to uint8) whose x86 u8s8 GEMM saturates
# pairs of products in int16 on CPUs without VNNI; see docs/frontends.md.
ORT_REFERENCE = "onnxruntime (graph optimizations off: the ONNX definition)"


def load_onnx(path_or_model, name: str | None = None) -> Graph:
    """Read an ONNX QDQ model (a path or an onnx.ModelProto) into a Graph."""
    model, read_name = read_model(path_or_model)
    return _convert(model, name or read_name)


def import_onnx(path_or_model, name: str | None = None):
    """The Graph of an ONNX QDQ model and onnxruntime as its reference (frontends.Imported).

    The reference runs the model with graph optimizations off (ORT_DISABLE_ALL, so onnxruntime computes the
    float semantics of each QuantizeLinear / Gemm / DequantizeLinear rather than fused integer kernels) on
    float inputs [samples, features], with every IR tensor (the QuantizeLinear outputs the Graph names its
    tensors after) added as a graph output, and returns {IR tensor name: int64 [samples, features]}.
    """
    from . import Imported

    model, read_name = read_model(path_or_model)
    graph, st = _convert_state(model, name or read_name)
    return Imported(graph, ORT_REFERENCE, _OrtReference(model, graph, st.derived))


class _OrtReference:
    """Callable float inputs -> {IR tensor: int64}; the onnxruntime session is made on the first call.

    The input is fed in the model's own shape ([n, C, H, W] for an image model) and every IR tensor comes
    back as the model holds it, flattened per sample in its layout ([n, C*H*W]: exactness.measure converts
    with Tensor.from_source). `derived`: IR tensors the frontend made that the model does not hold (an
    input moved to zero point 0 before a padded convolution), {name: (model tensor, integer offset)}: the
    model's own integers of that tensor plus the offset."""

    def __init__(self, model, graph: Graph, derived: dict | None = None) -> None:
        import onnx

        m = onnx.ModelProto()
        m.CopyFrom(model)
        declared = {o.name for o in m.graph.output}
        self._derived = dict(derived or {})
        for t in graph.tensors.values():
            if t.name not in declared and t.name not in self._derived:
                key = (t.type.storage_bits, t.type.signed)
                m.graph.output.append(onnx.helper.make_tensor_value_info(t.name, _TENSORPROTO[key], None))
        self._bytes = m.SerializeToString()
        self._graph = graph
        vi = model.graph.input[[i.name for i in model.graph.input].index(_graph_input_name(model))]
        self._input = vi.name
        self._dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        self._session = None

    def __call__(self, x) -> dict[str, np.ndarray]:
        import onnxruntime as ort  # only the reference needs it, not the compiler

        if self._session is None:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self._session = ort.InferenceSession(self._bytes, options, providers=["CPUExecutionProvider"])
        g = self._graph
        features = g.tensors[g.inputs[0]].features
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1, features))
        samples = x.shape[0]
        batch = self._dims[0] if self._dims and self._dims[0] else max(samples, 1)
        # A sample as the model declares it: [C, H, W] for an image, [1, ..., features] or [features] flat.
        sample = [int(d) for d in self._dims[1:]] if all(self._dims[1:]) else [features]
        names = [n for n in g.tensors if n not in self._derived]
        chunks = {n: [] for n in names}
        for start in range(0, max(samples, 1), batch):
            part = x[start:start + batch]
            rows = part.shape[0]
            if rows < batch:  # a fixed batch dimension: pad the last chunk
                part = np.concatenate([part, np.zeros((batch - rows, features), np.float32)])
            outs = self._session.run(names, {self._input: part.reshape([batch] + sample)})
            for n, v in zip(names, outs):
                chunks[n].append(np.asarray(v).reshape(batch, -1)[:rows])
        values = {n: np.concatenate(v).astype(np.int64)[:samples] for n, v in chunks.items()}
        for n, (source, offset) in self._derived.items():
            values[n] = values[source] + np.int64(offset)
        return values


def _graph_input_name(model) -> str:
    inits = {i.name for i in model.graph.initializer}
    return next(vi.name for vi in model.graph.input if vi.name not in inits)


def _convert(model, name: str) -> Graph:
    return _convert_state(model, name)[0]


def _convert_state(model, name: str) -> tuple[Graph, _State]:
    """The Graph and the state the rules left (its derived tensors, for the reference)."""
    from onnx import numpy_helper

    g = model.graph
    st = _State(values={}, tensors={}, ops=[], shapes={}, uses={})
    for node in g.node:
        for i in node.input:
            st.uses[i] = st.uses.get(i, 0) + 1
    for vo in g.output:
        st.uses[vo.name] = st.uses.get(vo.name, 0) + 1
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        st.values[init.name] = Const(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)
    for node in g.node:
        if node.op_type == "Constant":
            arr = constant_value(node)
            st.values[node.output[0]] = Const(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)
    source = graph_input(g, st.values)
    st.values[source.name] = source

    ir_inputs = []
    for node in g.node:
        if node.op_type == "Constant":
            continue
        rule = RULES.get(node.op_type)
        if rule is None or node.domain not in ("", "ai.onnx"):
            raise ModelError(f"unsupported op {node.domain + '.' if node.domain else ''}{node.op_type}",
                             node=node_name(node), hint=f"supported: {', '.join(supported_ops())}")
        ins = []
        for i in node.input:
            if i == "":
                ins.append(None)
            elif i not in st.values:
                raise ModelError(f"input '{i}' is not produced by any earlier node", node=node_name(node))
            else:
                ins.append(st.values[i])
        out = rule(node, ins, st)
        if isinstance(out, Quantized) and isinstance(ins[0], FloatInput):
            ir_inputs.append(out.tensor)
        st.values[node.output[0]] = out

    outputs = []
    for vo in g.output:
        v = st.values.get(vo.name)
        if isinstance(v, (Dequantized, Quantized)):
            outputs.append(v.tensor)
        else:
            raise ModelError(f"graph output '{vo.name}' is not a quantized activation",
                             hint="end the model with QuantizeLinear (and optionally DequantizeLinear)")
    if not ir_inputs:
        raise ModelError("the graph input is never quantized", hint="start the model with QuantizeLinear")
    return Graph(name, st.tensors, tuple(st.ops), tuple(ir_inputs), tuple(outputs)).validate(), st


# --- quantization parameters ------------------------------------------------------------------------------

_ZP_KINDS = {np.dtype(np.int8): (8, True), np.dtype(np.uint8): (8, False), np.dtype(np.int16): (16, True),
             np.dtype(np.uint16): (16, False), np.dtype(np.int32): (32, True)}


def _scale(node, scale: Const) -> float:
    s = np.asarray(scale.values, dtype=np.float64)
    if s.size != 1:
        raise ModelError(f"per-channel scales ({s.size} values) are not supported", node=node_name(node),
                         hint="quantize with one per-tensor scale (onnxruntime: per_channel=False)")
    v = float(np.float32(s.reshape(-1)[0]))  # ONNX scales are float32 (float16/bfloat16 widen exactly)
    if not (v > 0 and math.isfinite(v)):
        raise ModelError(f"scale {v} must be positive and finite", node=node_name(node))
    return v


def _qparams(node, ins) -> QParams:
    """Scale, zero point and integer type of a QuantizeLinear / DequantizeLinear."""
    if len(ins) < 2 or not isinstance(ins[1], Const):
        raise ModelError("the scale must be a constant", node=node_name(node))
    scale = _scale(node, ins[1])
    zp = ins[2] if len(ins) > 2 else None
    if zp is None:
        bits, signed = (8, False) if node.op_type == "QuantizeLinear" else (None, None)
        if node.op_type == "QuantizeLinear" and attr(node, "output_dtype") not in (None, 0):
            bits, signed = _ONNX_INT_TYPES.get(attr(node, "output_dtype"), (None, None))
        return QParams(scale, 0, bits, signed)
    if not isinstance(zp, Const):
        raise ModelError("the zero point must be a constant", node=node_name(node))
    z = np.asarray(zp.values)
    if z.size != 1:
        raise ModelError(f"per-channel zero points ({z.size} values) are not supported", node=node_name(node),
                         hint="quantize with one per-tensor zero point (onnxruntime: per_channel=False)")
    if z.dtype not in _ZP_KINDS:
        raise ModelError(f"zero point type {z.dtype} is not supported", node=node_name(node),
                         hint="use int8, uint8 or int16")
    bits, signed = _ZP_KINDS[z.dtype]
    return QParams(scale, int(z.reshape(-1)[0]), bits, signed)


def _describe(scale: float, zero_point: int) -> str:
    m, e = math.frexp(scale)
    s = f"2**-{-(e - 1)}" if m == 0.5 else repr(scale)
    return s if zero_point == 0 else f"{s} and zero point {zero_point}"


# --- rules: one function per ONNX op type -------------------------------------------------------------------


def _quantize_const(node, values: np.ndarray, qp: QParams) -> np.ndarray:
    """A float constant behind QuantizeLinear, quantized exactly as onnxruntime does: x / scale in float32,
    rounded half to even, plus the zero point, saturated."""
    bits, signed = qp.bits, qp.signed
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    dtype = np.dtype(f"{'' if signed else 'u'}int{bits}")
    if qp.frac is not None and qp.zero_point == 0:
        t = FixedType(bits, signed, qp.frac, Rounding.CONV_EVEN, Saturation.SATURATE)
        return np.asarray(quantize_float(np.asarray(values, dtype=np.float64), t)).astype(dtype)
    v = np.asarray(values, dtype=np.float32) / np.float32(qp.scale)
    if not np.all(np.isfinite(v)):
        raise ModelError("cannot quantize NaN or infinite constants", node=node_name(node))
    q = np.rint(v.astype(np.float64))  # rint rounds half to even, exactly, on the float32 quotient
    return np.clip(q + qp.zero_point, lo, hi).astype(dtype)


def _quantize(node, ins, st: _State):
    x = ins[0]
    qp = _qparams(node, ins)
    if isinstance(x, Const):
        # Weights exported as float constants behind QuantizeLinear: quantize them exactly as ONNX would.
        return Const(_quantize_const(node, x.values, qp))
    bits, signed = qp.bits, qp.signed
    if bits not in (8, 16) or (bits == 16 and not signed):
        raise ModelError(f"activations of {bits} bits ({'signed' if signed else 'unsigned'}) are not supported",
                         node=node_name(node), hint="quantize activations to int8, uint8 or int16")
    name = node.output[0]
    if isinstance(x, FloatInput):
        st.tensors[name] = qp.activation(name, x.features)
        return Quantized(name)
    if isinstance(x, PendingDense):
        return _finish_dense(node, x, qp, st)
    if isinstance(x, PendingRelu):
        return _finish_relu(node, x, qp, st)
    if isinstance(x, Dequantized):
        raise ModelError("requantizing an activation on its own (DequantizeLinear -> QuantizeLinear) is not supported",
                         node=node_name(node), hint="quantize each activation once")
    raise ModelError(f"cannot quantize {type(x).__name__}", node=node_name(node),
                     hint="QuantizeLinear must follow the graph input, Gemm, MatMul+Add or Relu")


def _dequantize(node, ins, st: _State):
    x = ins[0]
    if isinstance(x, Quantized):
        qp = _qparams(node, ins)
        t = st.tensors[x.tensor]
        if qp.scale != t.real_scale or qp.zero_point != t.zero_point:
            if t.scale is None and qp.frac is not None and t.zero_point == qp.zero_point == 0:
                raise ModelError(f"dequantizes with 2**-{qp.frac} a tensor quantized with 2**-{t.type.frac}",
                                 node=node_name(node), hint="use the same scale in the QuantizeLinear / DequantizeLinear pair")
            raise ModelError(f"dequantizes with scale {_describe(qp.scale, qp.zero_point)} a tensor quantized with "
                             f"scale {_describe(t.real_scale, t.zero_point)}", node=node_name(node),
                             hint="use the same scale and zero point in the QuantizeLinear / DequantizeLinear pair")
        return Dequantized(x.tensor)
    if isinstance(x, Const):
        if len(ins) < 2 or not isinstance(ins[1], Const):
            raise ModelError("the scale must be a constant", node=node_name(node))
        qp = _qparams(node, ins)
        q = np.asarray(x.values)
        if q.dtype.kind not in "iu":
            raise ModelError(f"dequantizes a {q.dtype} constant; expected integers", node=node_name(node))
        bits = q.dtype.itemsize * 8
        frac = qp.frac
        t = FixedType(bits, q.dtype.kind == "i", frac if frac is not None else 0)
        values = (q.astype(np.float64) - qp.zero_point) * qp.scale
        return Const(values, q.astype(np.int64), t, None if frac is not None else qp.scale, qp.zero_point)
    raise ModelError(f"DequantizeLinear of {type(x).__name__} is not supported", node=node_name(node))


def _view(node, ins, st: _State):
    """Identity, Flatten, Reshape and Squeeze-like views that keep [batch, features] as it is."""
    x = ins[0]
    shape = ins[1] if node.op_type == "Reshape" else None
    check_view(node, shape.values if isinstance(shape, Const) else None, _features(x, st))
    return x


def _features(x, st: _State) -> int | None:
    if isinstance(x, FloatInput):
        return x.features
    if isinstance(x, (Quantized, Dequantized)):
        return st.tensors[x.tensor].features
    if isinstance(x, PendingDense):
        return x.weight.shape[1]
    return None


def _weight(node, w, transpose: bool) -> tuple[np.ndarray, FixedType, float | None]:
    """The weight's integers with its zero point subtracted, their type, and the float scale (None: a power
    of two, 2**-type.frac)."""
    if not isinstance(w, Const) or w.q is None:
        raise ModelError("the weight must be a DequantizeLinear of an int8 or int16 constant", node=node_name(node),
                         hint="export with quantized weights (QDQ format)")
    q = w.q.T if transpose else w.q
    if q.ndim != 2:
        raise ModelError(f"the weight has shape {list(q.shape)}; expected two dimensions", node=node_name(node))
    if w.type.bits not in (8, 16):
        raise ModelError(f"weights of type {w.type.storage} are not supported", node=node_name(node),
                         hint="quantize weights to int8 or int16")
    if w.zero_point == 0 and w.type.signed:
        return q.astype(np.int64), w.type, w.scale
    # An asymmetric (or unsigned) weight: W - zp_w exactly, as int8 where it fits, else int16.
    folded = q.astype(np.int64) - w.zero_point
    lo, hi = int(folded.min(initial=0)), int(folded.max(initial=0))
    bits = 8 if -128 <= lo and hi <= 127 else 16
    if not -(1 << 15) <= lo <= hi < (1 << 15):
        raise ModelError(f"the weight minus its zero point {w.zero_point} spans [{lo}, {hi}], beyond int16",
                         node=node_name(node), hint="quantize 16-bit weights symmetrically (zero point 0)")
    return folded, FixedType(bits, True, w.type.frac), w.scale


def _matmul_start(node, x, w, trans_b: bool) -> PendingDense:
    if not isinstance(x, Dequantized):
        raise ModelError(f"the input of {node.op_type} must be a quantized activation (DequantizeLinear output)",
                         node=node_name(node), hint="quantize the input with QuantizeLinear/DequantizeLinear")
    q, wt, scale = _weight(node, w, trans_b)
    return PendingDense(node_name(node), x.tensor, q, wt, None, False, scale)


def _gemm(node, ins, st: _State):
    trans_b = check_gemm(node)
    dense = _matmul_start(node, ins[0], ins[1], trans_b)
    _check_in_features(node, dense, st)
    if len(ins) > 2 and ins[2] is not None:
        dense = _add_bias(node, dense, ins[2], st)
    return dense


def _matmul(node, ins, st: _State):
    dense = _matmul_start(node, ins[0], ins[1], False)
    _check_in_features(node, dense, st)
    return dense


def _check_in_features(node, dense: PendingDense, st: _State) -> None:
    k = st.tensors[dense.x].features
    if dense.weight.shape[0] != k:
        raise ModelError(f"the weight has {dense.weight.shape[0]} input features but the input has {k}",
                         node=node_name(node))


def _add(node, ins, st: _State):
    a, b = ins[0], ins[1]
    if isinstance(b, (PendingDense, Dequantized)) and isinstance(a, Const):
        a, b = b, a
    if isinstance(a, PendingDense) and isinstance(b, Const):
        if a.bias is not None or a.relu:
            raise ModelError("a second bias after MatMul is not supported", node=node_name(node))
        return _add_bias(node, a, b, st)
    if isinstance(a, Dequantized) and isinstance(b, Const):
        return _bias_layer(node, a, b, st)
    raise ModelError("Add is supported as the bias of MatMul (MatMul -> Add with a constant) or as the sum of "
                     "two quantized activations", node=node_name(node),
                     hint="quantize both inputs with QuantizeLinear/DequantizeLinear")


# The scale of a bias layer (its diagonal weights): 2**14, the largest power of two of int16, as when the
# layer was a dense op with int16 weights.
_BIAS_LAYER_MAX_K = 14


def _bias_layer(node, a: Dequantized, b: Const, st: _State) -> PendingDense:
    """A quantized activation plus a constant (onnxruntime quantizes a MatMul's output before the bias Add):
    x * 2**k + the constant on a grid 2**k times finer than the activation's, a requant op (pending here as
    the dense layer with diagonal weights 2**k it equals). Power-of-two scales take the smallest k that
    holds the constant exactly; others 2**14."""
    x = st.tensors[a.tensor]
    n = x.features
    k = _BIAS_LAYER_MAX_K
    if x.scale is None and (b.q is None or b.scale is None):
        needed = [0]
        if b.q is not None:
            needed.append(b.type.frac - x.type.frac)
        else:
            v = np.asarray(b.values, dtype=np.float64).reshape(-1)
            exact = [j for j in range(_BIAS_LAYER_MAX_K + 1)
                     if np.all(np.ldexp(v, x.type.frac + j) == np.round(np.ldexp(v, x.type.frac + j)))]
            needed.append(exact[0] if exact else _BIAS_LAYER_MAX_K)
        k = min(max(needed), _BIAS_LAYER_MAX_K)
    wt = FixedType(8 if k <= 6 else 16, True, k)
    weight = np.diag(np.full(n, 1 << k, dtype=np.int64))
    dense = PendingDense(node_name(node), a.tensor, weight, wt, None, False, None, elementwise=True)
    return _add_bias(node, dense, b, st)


def _add_bias(node, dense: PendingDense, b: Const, st: _State) -> PendingDense:
    q = bias_integers(node, st.tensors[dense.x], dense.weight_type, dense.weight_scale, dense.weight.shape[1], b)
    return replace(dense, bias=q)


def bias_integers(node, x: Tensor, weight_type: FixedType, weight_scale: float | None, n: int, b: Const) -> np.ndarray:
    """A layer's bias (n values, or one broadcast) on its accumulator grid (input scale x weight scale),
    int64: shifted exactly on power-of-two grids (or refused), else rounded half to even to the grid."""
    values = np.asarray(b.values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(n, values[0])
    if values.size != n:
        raise ModelError(f"the bias has {values.size} values for {n} output features", node=node_name(node))
    pow2 = x.scale is None and weight_scale is None
    if pow2 and (b.q is None or b.scale is None):
        # Power-of-two grids: the bias is shifted up exactly, or refused.
        acc_frac = x.type.frac + weight_type.frac
        if b.q is not None:
            shift = acc_frac - b.type.frac
            if shift < 0:
                raise ModelError(f"the bias has {b.type.frac} fractional bits, more than the accumulator's {acc_frac}",
                                 node=node_name(node), hint="quantize the bias with scale = input scale x weight scale")
            q = (np.broadcast_to(b.q.reshape(-1), (n,)).astype(np.int64) - b.zero_point) << shift
        else:
            scaled = np.ldexp(values, acc_frac)
            if np.any(scaled != np.round(scaled)):
                raise ModelError("the float bias is not on the accumulator grid (input scale x weight scale)",
                                 node=node_name(node), hint="quantize the bias to int32 with scale = input scale x weight scale")
            q = scaled.astype(np.int64)
        return q
    # Arbitrary scales: the bias's real value on the accumulator grid (s_x * s_w), rounded half to even when
    # it is not on it (onnxruntime quantizes the bias with the float32 product, one rounding away).
    w_scale = weight_scale if weight_scale is not None else 2.0 ** -weight_type.frac
    acc = Fraction(x.real_scale) * Fraction(w_scale)
    if b.q is not None:
        ints = np.broadcast_to(b.q.reshape(-1), (n,)).astype(np.int64) - b.zero_point
        ratio = Fraction(b.real_scale) / acc
        q = [round_fraction(int(v) * ratio, Rounding.CONV_EVEN) for v in ints]
    else:
        q = [round_fraction(Fraction(float(v)) / acc, Rounding.CONV_EVEN) for v in values]
    if any(abs(v) >= 1 << 62 for v in q):
        raise ModelError("the bias is far beyond the accumulator's range", node=node_name(node))
    return np.array(q, dtype=np.int64)


def _relu(node, ins, st: _State):
    x = ins[0]
    if isinstance(x, PendingDense):
        if x.relu:
            return x
        return replace(x, relu=True)
    if isinstance(x, Dequantized) and _foldable_relu(node, x, st):
        return PendingRelu(node_name(node), x.tensor)
    raise ModelError("Relu is supported only after Gemm or MatMul+Add, before QuantizeLinear, or on the "
                     "dequantized output of such a layer that nothing else reads", node=node_name(node),
                     hint="place Relu between the layer and its output QuantizeLinear")


def _foldable_relu(node, x: Dequantized, st: _State) -> bool:
    """Relu(DequantizeLinear(QuantizeLinear(layer))): foldable into the layer when the layer is an op (not
    the graph input) and neither the quantized activation nor its dequantized view has another reader."""
    if st.uses is None or not any(op.outputs == (x.tensor,) and "relu" in op.attrs for op in st.ops):
        return False
    # Every ONNX name that means this activation (its QuantizeLinear output, the DequantizeLinear output,
    # views of either) is read exactly once: a chain with no branch, ending at this Relu.
    aliases = [n for n, v in st.values.items() if v in (Quantized(x.tensor), Dequantized(x.tensor))]
    return all(st.uses.get(n, 0) == 1 for n in aliases)


def _finish_relu(node, pending: PendingRelu, qp: QParams, st: _State) -> Quantized:
    """Fold Relu -> QuantizeLinear into the layer before it: same scale and zero point, so the Relu is
    max(q, zero point) on the layer's own integers, which the layer's fused ReLU computes."""
    t = st.tensors[pending.tensor]
    same = (qp.scale == t.real_scale and qp.zero_point == t.zero_point and qp.bits == t.type.bits
            and qp.signed == t.type.signed)
    if not same:
        raise ModelError(f"Relu between a tensor of scale {_describe(t.real_scale, t.zero_point)} and a "
                         f"QuantizeLinear of scale {_describe(qp.scale, qp.zero_point)} requantizes an activation "
                         "on its own, which is not supported", node=node_name(node),
                         hint="quantize the Relu's input and output with the same scale and zero point, or put "
                              "the Relu before the layer's QuantizeLinear")
    name = node.output[0]
    i = next(i for i, op in enumerate(st.ops) if op.outputs == (pending.tensor,))
    op = st.ops[i]
    st.ops[i] = replace(op, outputs=(name,), attrs={**op.attrs, "relu": True})
    st.tensors = {(name if k == pending.tensor else k): (replace(v, name=name) if k == pending.tensor else v)
                  for k, v in st.tensors.items()}
    return Quantized(name)


def _finish_dense(node, dense: PendingDense, qp: QParams, st: _State) -> Quantized:
    x = st.tensors[dense.x]
    n = dense.weight.shape[1]
    weight = dense.weight.astype(np.int64)
    bias = dense.bias if dense.bias is not None else np.zeros(n, dtype=np.int64)
    bias = bias.astype(np.int64)
    if x.zero_point:
        # (q_x - zp_x) @ W + b = q_x @ W + (b - zp_x * sum_k W[k, :]), exactly.
        bias = bias - np.int64(x.zero_point) * weight.sum(axis=0)
    name = node.output[0]
    out = qp.activation(name, n)
    st.tensors[name] = out
    if x.scale is None and dense.weight_scale is None and out.scale is None:
        multiplier, shift = 1, x.type.frac + dense.weight_type.frac - out.type.frac
    else:
        # float64 product of float32 scales (exact), divided once: the real requantization ratio.
        w_scale = dense.weight_scale if dense.weight_scale is not None else 2.0 ** -dense.weight_type.frac
        multiplier, shift = choose_multiplier(x.real_scale * w_scale / out.real_scale)
    if dense.elementwise:  # x @ diag(2**k) + bias is x * 2**k + bias, feature by feature
        scale = int(weight[0, 0]) if weight.size else 1
        st.ops.append(requant_op(dense.node, dense.x, name, bias, shift, multiplier, dense.relu, scale=scale))
    else:
        st.ops.append(dense_op(dense.node, dense.x, name, weight, bias, dense.weight_type, shift, multiplier, dense.relu))
    return Quantized(name)


RULES = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Relu": _relu,
    "Identity": _view,
    "Flatten": _view,
    "Reshape": _view,
}

# Residual joins: the sum of two activations (see onnx_add_rule). Imported last: it reads this module's rules.
from .onnx_add_rule import rules as _add_rules  # noqa: E402

RULES.update(_add_rules(RULES))

# Convolutional networks (see onnx_cnn_rules): feature-map inputs, Conv, pools, views of feature maps, and
# clear refusals of the ops not supported yet. Imported last: its rules wrap the ones above.
from .onnx_cnn_rules import REFUSED as _REFUSED  # noqa: E402
from .onnx_cnn_rules import graph_input  # noqa: E402
from .onnx_cnn_rules import rules as _cnn_rules  # noqa: E402

RULES.update(_cnn_rules(RULES))


def supported_ops() -> list[str]:
    """The ONNX op types the frontend converts (the refused ones, which have rules of their own, left out)."""
    return sorted(k for k in RULES if k not in _REFUSED)
