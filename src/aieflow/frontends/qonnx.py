"""QONNX models (Quant, BipolarQuant and Trunc nodes between Gemm / MatMul / Add / Relu, and Conv / pools /
BatchNormalization on feature maps) into the aieflow Graph.

The model is first cleaned by qonnx itself (the transforms of qonnx.util.cleanup.cleanup_model: shape
inference, constant folding of everything but the quantizers; node names are kept where they are unique, so
errors name the nodes the user wrote). Then, as in the QDQ frontend, each ONNX
tensor is given a symbolic meaning as the nodes are visited in order: the float graph input, a quantized
activation (a Quant output: QONNX has no separate dequantize, a Quant output is its own float view), an
exact constant (a weight or bias after its Quant), or a layer in progress (MatMul/Gemm, bias, ReLU) that the
next Quant completes. Each node type is one rule in `RULES`.

QONNX's Quant computes, in float32, y = round(clamp(x / scale + zeropt, min, max)) by its rounding_mode and
outputs (y - zeropt) * scale. The IR's requantize rounds first and adds the zero point after, so the rounding
mode is translated where the zero point changes it (ties to even with an odd zero point is ties to odd; the
sign-symmetric modes on an unsigned range, whose clamp keeps x / scale + zeropt >= 0, are the plain
floor / ceil / half-up / half-down modes) and refused where no mode is the same (a signed range with a zero
point and a sign-symmetric mode).

A Quant of an activation that is already quantized (a requantization), a Relu of an activation and a Trunc
become a requant op (ops.requant.requant_op): the elementwise "shift, round and saturate an activation", the
integers of a dense op with identity weights without its n x n weight matrix.

Feature maps (a graph input [N, C, H, W], or [N, C, L] in a model with Conv or pool nodes) follow the rules
of aieflow.frontends.qonnx_maps (Conv, pools, BatchNormalization, flattening into a dense layer), whose node
types join RULES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..ir import Graph, Tensor
from ..ops.add import add_op
from ..ops.dense import dense_op
from ..ops.requant import requant_op
from ..numerics import FixedType, Rounding, Saturation, choose_multiplier
from . import Imported
from .onnx_nodes import attr, check_gemm, check_view, constant_value, float_input, node_name, read_model

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "qonnx")

# QONNX rounding_mode (qonnx.custom_op.general.intquant.resolve_rounding_mode) -> the same integer rounding.
#   ROUND, HALF_EVEN  np.round: half to even               CONV_EVEN
#   CEIL              np.ceil                               CEIL
#   FLOOR             np.floor                              FLOOR
#   UP                sign(x) * ceil(|x|): away from zero   SYMMETRIC_CEIL
#   DOWN              np.fix: toward zero                   SYMMETRIC_FLOOR
#   HALF_UP           sign(x) * floor(|x| + 0.5)            SYMMETRIC_INF (ties away from zero)
#   HALF_DOWN         sign(x) * ceil(|x| - 0.5)             SYMMETRIC_ZERO (ties toward zero)
QONNX_ROUNDING = {
    "ROUND": Rounding.CONV_EVEN,
    "HALF_EVEN": Rounding.CONV_EVEN,
    "CEIL": Rounding.CEIL,
    "FLOOR": Rounding.FLOOR,
    "UP": Rounding.SYMMETRIC_CEIL,
    "DOWN": Rounding.SYMMETRIC_FLOOR,
    "HALF_UP": Rounding.SYMMETRIC_INF,
    "HALF_DOWN": Rounding.SYMMETRIC_ZERO,
}
# On values known to be >= 0 the sign-symmetric modes are these translation-invariant ones.
_NONNEGATIVE = {
    Rounding.SYMMETRIC_CEIL: Rounding.CEIL,
    Rounding.SYMMETRIC_FLOOR: Rounding.FLOOR,
    Rounding.SYMMETRIC_INF: Rounding.POSITIVE_INF,
    Rounding.SYMMETRIC_ZERO: Rounding.NEGATIVE_INF,
}
ACT_BITS = range(2, 17)


def _need_qonnx():
    try:
        import qonnx  # noqa: F401
        from qonnx.core.modelwrapper import ModelWrapper  # noqa: F401
    except ImportError:
        raise ModelError("reading QONNX models needs the qonnx package",
                         hint="pip install aieflow[qonnx]") from None


# --- what an ONNX tensor means ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatInput:
    name: str
    features: int
    shape: tuple = ()  # a map's per-sample shape, channels last ((H, W, C) or (L, C)); () for [batch, features]
    order: tuple = ()  # its source_order


@dataclass(frozen=True)
class Act:
    """A quantized activation: the IR tensor of that name (a Quant or Trunc output)."""

    tensor: str


@dataclass(frozen=True)
class Const:
    """A constant: its float values and, after a Quant, the exact integers q with values = q * scale."""

    values: np.ndarray
    q: np.ndarray | None = None
    scale: float | None = None
    bits: int | None = None  # bits of a signed type that holds q


@dataclass(frozen=True)
class PendingDense:
    """x @ W (+ b) (-> ReLU) waiting for the Quant that gives its output type."""

    node: str
    x: str  # IR tensor
    weight: np.ndarray  # [in, out] integers
    weight_scale: float
    weight_bits: int
    bias: Const | None
    relu: bool
    identity: bool = False  # the identity weights of a requantization: finished as a requant op


@dataclass(frozen=True)
class PendingAdd:
    """a + b (-> ReLU) of two activations, waiting for its output Quant."""

    node: str
    a: str
    b: str
    relu: bool


@dataclass(frozen=True)
class QuantParams:
    scale: float
    zero_point: int
    bits: int
    signed: bool
    narrow: bool
    mode: str  # the QONNX rounding_mode, upper case

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - (2 if self.narrow else 1)


@dataclass
class _State:
    values: dict
    tensors: dict
    ops: list
    opset: int  # version of the qonnx domain (Trunc_v1 or Trunc_v2)
    flat: set = field(default_factory=set)  # ONNX values that are a feature map flattened by the source
    # IR tensors the model has no ONNX value of its own for: (ONNX value, per-channel factor or None) whose
    # reference value, times the factor, is the tensor's real value
    sources: dict = field(default_factory=dict)


# --- entry point ------------------------------------------------------------------------------------------


def import_qonnx(path_or_model, name: str | None = None) -> Imported:
    """Read a QONNX model (a path, an onnx.ModelProto or a qonnx ModelWrapper) into a Graph, with qonnx's
    executor as the reference."""
    return _import_qonnx(path_or_model, name)[0]


def _import_qonnx(path_or_model, name: str | None = None) -> tuple[Imported, frozenset]:
    """import_qonnx, and the names of the IR tensors the frontend added (no node of the model writes them)."""
    _need_qonnx()
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    if isinstance(path_or_model, (str, Path)):
        proto, read_name = read_model(path_or_model, hint="give a .onnx file saved by a QONNX export (e.g. "
                                                          "brevitas.export.export_qonnx)")
        name = name or read_name
    elif isinstance(path_or_model, ModelWrapper):
        proto = path_or_model.model
    else:
        proto = path_or_model
    if not hasattr(proto, "graph") or not proto.graph.node:
        raise ModelError("the model has no graph nodes", hint="give a QONNX model (onnx.ModelProto or .onnx file)")
    name = name or proto.graph.name or "model"
    try:
        model = _cleanup(ModelWrapper(onnx.ModelProto.FromString(proto.SerializeToString())))
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - qonnx's transforms fail with many exception types
        raise ModelError(f"qonnx's cleanup failed on the model: {type(e).__name__}: {e}",
                         hint="check the model with qonnx.util.cleanup and onnx.checker first") from None
    graph, onnx_names = _convert(model, name)
    added = frozenset(t for t, src in onnx_names.items() if isinstance(src, tuple))
    return Imported(graph, "qonnx", _reference(model, graph, onnx_names)), added


def _cleanup(model):
    """qonnx.util.cleanup.cleanup_model's transforms, keeping the model's own node and tensor names (errors
    name the nodes the user wrote) unless they are missing or repeated."""
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (GiveUniqueParameterTensors, RemoveStaticGraphInputs,
                                              RemoveUnusedTensors)
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    for node in model.graph.node:  # as cleanup_model does: qonnx's executor finds its ops by this domain
        if node.op_type in QONNX_OPS and node.domain in ("", "onnx.brevitas", "finn.custom_op.general"):
            node.domain = "qonnx.custom_op.general"
    for t in (InferShapes(), GiveUniqueParameterTensors(),
              FoldConstants(exclude_op_types=["Quant", "IntQuant", "BipolarQuant", "QuantizeLinear",
                                              "DequantizeLinear"]),
              FoldTransposeIntoQuantInit(), RemoveUnusedTensors(), RemoveStaticGraphInputs()):
        model = model.transform(t)
    # Name only the nodes that have no name or share one (OpType_index, as GiveUniqueNodeNames would), so
    # errors still name the nodes the user named.
    seen: dict[str, int] = {}
    for n in model.graph.node:
        seen[n.name] = seen.get(n.name, 0) + 1
    taken = set(seen)
    counter: dict[str, int] = {}
    for n in model.graph.node:
        if n.name and seen[n.name] == 1:
            continue
        while True:
            i = counter.get(n.op_type, 0)
            counter[n.op_type] = i + 1
            name = f"{n.op_type}_{i}"
            if name not in taken:
                break
        taken.add(name)
        n.name = name
    return model


def _reference(model, graph: Graph, onnx_names: dict):
    """qonnx's execute_onnx on float inputs, read back as the integers of every IR tensor it computes."""
    cache = {}
    in_name = model.graph.input[0].name

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.change_batchsize import ChangeBatchSize
        from qonnx.transformation.infer_shapes import InferShapes

        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        n = x.shape[0]
        shape = model.get_tensor_shape(in_name)
        if n not in cache:
            cache[n] = model if shape[0] == n else model.transform(ChangeBatchSize(n)).transform(InferShapes())
        m = cache[n]
        shape = m.get_tensor_shape(in_name)
        ctx = execute_onnx(m, {in_name: x.reshape(shape)}, return_full_exec_context=True)
        out = {}
        for tname, t in graph.tensors.items():
            src, factor = onnx_names.get(tname), None
            if isinstance(src, tuple):
                src, factor = src
            if src is None or src not in ctx:
                continue
            v = np.asarray(ctx[src], dtype=np.float64)
            if factor is not None:  # per channel: axis 1 of the source's NCHW / NCL layout
                v = v * np.asarray(factor).reshape((1, -1) + (1,) * (v.ndim - 2))
            v = v.reshape(n, -1) / t.real_scale + t.zero_point
            q = np.rint(v)
            bad = np.abs(v - q) > 1e-3 * np.maximum(1.0, np.abs(q)) if t.scale is not None else v != q
            if np.any(bad):
                raise ModelError(f"qonnx's value of '{src}' is not on its quantization grid", node=src)
            out[tname] = q.astype(np.int64)
        return out

    return run


def _convert(model, name: str) -> tuple[Graph, dict]:
    from onnx import numpy_helper

    g = model.graph
    opset = next((o.version for o in model.model.opset_import if o.domain == "qonnx.custom_op.general"), 1)
    st = _State(values={}, tensors={}, ops=[], opset=opset)
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        st.values[init.name] = Const(np.asarray(arr, dtype=np.float64) if arr.dtype.kind in "fiub" else arr)
    if qonnx_maps.takes_map(g, st.values):
        fin = qonnx_maps.map_input(g, st.values)
        st.values[fin.name] = fin
    else:
        input_name, features = float_input(g, st.values, "a Quant node")
        st.values[input_name] = FloatInput(input_name, features)

    ir_inputs = []
    for node in g.node:
        if node.op_type == "Constant":
            st.values[node.output[0]] = Const(np.asarray(constant_value(node), dtype=np.float64))
            continue
        rule = RULES.get(node.op_type)
        qonnx_op = node.op_type in QONNX_OPS
        if rule is None or (qonnx_op and node.domain not in QONNX_DOMAINS) \
                or (not qonnx_op and node.domain not in ("", "ai.onnx")):
            raise ModelError(f"unsupported op {node.domain + '.' if node.domain else ''}{node.op_type}",
                             node=node_name(node), hint=f"supported: {', '.join(sorted(RULES))}")
        ins = []
        for i in node.input:
            if i == "":
                ins.append(None)
            elif i not in st.values:
                raise ModelError(f"input '{i}' is not produced by any earlier node", node=node_name(node))
            else:
                ins.append(st.values[i])
        out = rule(node, ins, st)
        if isinstance(out, Act) and ins and isinstance(ins[0], FloatInput):
            ir_inputs.append(out.tensor)
        st.values[node.output[0]] = out
        if node.op_type in _ELEMENTWISE and node.input and node.input[0] in st.flat:
            st.flat.add(node.output[0])  # a requantization of a flattened map is flattened too

    outputs = []
    for vo in g.output:
        v = st.values.get(vo.name)
        if isinstance(v, Act):
            outputs.append(v.tensor)
        else:
            raise ModelError(f"graph output '{vo.name}' is not a quantized activation ({type(v).__name__})",
                             hint="end the model with a Quant node (Brevitas: an output quantizer, e.g. "
                                  "output_quant=Int8ActPerTensorFixedPoint, or a final QuantIdentity)")
    if not ir_inputs:
        raise ModelError("the graph input is never quantized", hint="start the model with a Quant node "
                         "(Brevitas: QuantIdentity or input_quant)")
    onnx_names = {t: st.sources.get(t, t) for t in st.tensors}
    return Graph(name, st.tensors, tuple(st.ops), tuple(ir_inputs), tuple(outputs)).validate(), onnx_names


# --- scales and quantization parameters -------------------------------------------------------------------


def _pow2_frac(s: float) -> int | None:
    """frac with s == 2**-frac, or None when s is not a power of two."""
    m, e = math.frexp(s)
    return -(e - 1) if m == 0.5 else None


def _scalar(node, v, what: str, per_tensor_hint: str = "quantize with one per-tensor scale") -> float:
    if not isinstance(v, Const):
        raise ModelError(f"the {what} must be a constant", node=node_name(node),
                         hint="export with constant quantization parameters (qonnx cleanup folds computed ones)")
    a = np.asarray(v.values, dtype=np.float64).reshape(-1)
    if a.size != 1:
        if a.size > 1 and np.all(a == a[0]):
            return float(a[0])
        raise ModelError(f"per-channel {what}s ({a.size} values) are not supported", node=node_name(node),
                         hint=per_tensor_hint)
    return float(a[0])


def _quant_params(node, ins) -> QuantParams:
    if len(ins) != 4 or any(v is None for v in ins):
        raise ModelError(f"Quant takes 4 inputs (x, scale, zeropt, bitwidth), not {len(ins)}", node=node_name(node))
    scale = _scalar(node, ins[1], "scale")
    if not (scale > 0 and math.isfinite(scale)):
        raise ModelError(f"scale {scale} must be positive and finite", node=node_name(node))
    zp = _scalar(node, ins[2], "zero point")
    if zp != round(zp):
        raise ModelError(f"zero point {zp} is not an integer", node=node_name(node),
                         hint="use an integer zero point (Brevitas: zero_point_impl that rounds it)")
    bits = _scalar(node, ins[3], "bit width")
    if bits != round(bits) or bits < 1:
        raise ModelError(f"bit width {bits} is not a positive integer", node=node_name(node))
    mode = str(attr(node, "rounding_mode", "ROUND")).upper()
    if mode not in QONNX_ROUNDING:
        raise ModelError(f"unknown rounding_mode '{mode}'", node=node_name(node),
                         hint=f"use one of {', '.join(QONNX_ROUNDING)}")
    return QuantParams(scale, int(zp), int(bits), bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0)),
                       mode)


def _rounding(node, p: QuantParams) -> Rounding:
    """The IR rounding mode with round(v) + zp == QONNX's round(v + zp) on every value that reaches it."""
    r = QONNX_ROUNDING[p.mode]
    zp = p.zero_point
    if zp == 0:
        return r
    if r is Rounding.CONV_EVEN:
        return Rounding.CONV_EVEN if zp % 2 == 0 else Rounding.CONV_ODD
    if r in _NONNEGATIVE:
        if p.qmin >= 0:  # the clamp before the rounding keeps v + zp >= 0
            return _NONNEGATIVE[r]
        raise ModelError(f"rounding_mode {p.mode} with zero point {zp} on a signed range rounds around -zp, "
                         "which no integer rounding mode followed by adding the zero point reproduces",
                         node=node_name(node), hint="use zero point 0, an unsigned range, or ROUND / FLOOR / CEIL")
    return r  # FLOOR and CEIL commute with adding an integer


def _act_type(node, p: QuantParams) -> tuple[FixedType, float | None]:
    """(type, scale) of an activation quantized by p: scale None for powers of two."""
    if p.bits not in ACT_BITS:
        hint = ("1-bit (bipolar / binary) activations have no integer SRS equivalent" if p.bits == 1
                else "quantize activations to 2 to 16 bits")
        raise ModelError(f"activations of {p.bits} bits are not supported", node=node_name(node), hint=hint)
    if not p.signed and p.bits > 8:
        raise ModelError(f"unsigned activations of {p.bits} bits do not fit uint8 or int16", node=node_name(node),
                         hint="use signed activations above 8 bits, or 8 bits or fewer unsigned")
    if p.narrow and not p.signed:
        raise ModelError(f"unsigned narrow range [0, {p.qmax}] has no saturation mode", node=node_name(node),
                         hint="use narrow=0 for unsigned activations")
    if not p.qmin <= p.zero_point <= p.qmax:
        raise ModelError(f"zero point {p.zero_point} is outside the range [{p.qmin}, {p.qmax}]", node=node_name(node))
    frac = _pow2_frac(p.scale)
    sat = Saturation.SYMMETRIC if p.narrow else Saturation.SATURATE
    t = FixedType(p.bits, p.signed, frac if frac is not None else 0, _rounding(node, p), sat)
    return t, (None if frac is not None else p.scale)


def _quantize_const(values: np.ndarray, p: QuantParams) -> np.ndarray:
    """The integers QONNX's Quant gives a constant (its own float32 arithmetic), minus the zero point."""
    from qonnx.custom_op.general.intquant import resolve_rounding_mode

    x = np.asarray(values, dtype=np.float32)
    y = x / np.float32(p.scale) + np.float32(p.zero_point)
    if p.bits == 1 and p.signed:
        y = np.where(y >= 0.0, np.float32(1), np.float32(-1))
    else:
        y = np.clip(y, np.float32(p.qmin), np.float32(p.qmax))
        y = resolve_rounding_mode(p.mode)(y)
    return y.astype(np.int64) - p.zero_point


def _signed_bits(q: np.ndarray) -> int:
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    return max(2, max(lo.bit_length() if lo >= 0 else (-lo - 1).bit_length(), hi.bit_length()) + 1)


# --- rules: one function per op type -------------------------------------------------------------------------


def _quant(node, ins, st: _State):
    x = ins[0]
    p = _quant_params(node, ins)
    if isinstance(x, Const):
        q = _quantize_const(x.values, p)
        declared = p.bits + (0 if p.signed else 1)
        return Const(q.astype(np.float64) * p.scale, q, p.scale, max(_signed_bits(q), min(declared, 64)))
    out, scale = _act_type(node, p)
    name = node.output[0]
    if isinstance(x, FloatInput):
        st.tensors[name] = Tensor(name, x.shape or (x.features,), out, scale, p.zero_point, x.order)
        return Act(name)
    if isinstance(x, PendingDense):
        return _finish_dense(node, x, out, scale, p.zero_point, st)
    if isinstance(x, PendingAdd):
        return _finish_add(node, x, out, scale, p.zero_point, st)
    if isinstance(x, Act):
        t = st.tensors[x.tensor]
        if t.scale == scale and t.type.frac == out.frac and t.zero_point == p.zero_point and t.type.signed == out.signed \
                and t.type.qmin >= p.qmin and t.type.qmax <= p.qmax and t.type.saturation is not Saturation.NONE \
                and (t.type.bits == out.bits or not qonnx_maps.is_map(t)):
            # every value already lies on this grid and inside this range: the Quant is the identity (a map
            # keeps a widening Quant as a requant op: a residual Add takes full 8-bit maps only)
            return x
        if qonnx_maps.is_map(t):
            return qonnx_maps.finish_map(node, qonnx_maps.PendingMap(node_name(node), x.tensor), out, scale,
                                         p.zero_point, st)
        return _finish_dense(node, _identity(node, x.tensor, st), out, scale, p.zero_point, st)
    if isinstance(x, qonnx_maps.PendingConv):
        return qonnx_maps.finish_conv(node, x, out, scale, p.zero_point, st)
    if isinstance(x, qonnx_maps.PendingMap):
        return qonnx_maps.finish_map(node, x, out, scale, p.zero_point, st)
    if isinstance(x, qonnx_maps.PendingPool):
        return qonnx_maps.finish_pool(node, x, out, scale, p.zero_point, st)
    raise ModelError(f"cannot quantize {type(x).__name__}", node=node_name(node),
                     hint="a Quant must follow the graph input, a constant, Gemm, MatMul(+Add), Add, Relu, Conv, "
                          "AveragePool or BatchNormalization")


def _bipolar_quant(node, ins, st: _State):
    x = ins[0]
    if len(ins) != 2:
        raise ModelError(f"BipolarQuant takes 2 inputs (x, scale), not {len(ins)}", node=node_name(node))
    scale = _scalar(node, ins[1], "scale")
    if isinstance(x, Const):
        q = np.where(np.asarray(x.values) >= 0.0, 1, -1).astype(np.int64)
        return Const(q.astype(np.float64) * scale, q, scale, 2)
    raise ModelError("BipolarQuant of an activation (the sign function) is not supported: sign(x) is not a "
                     "rounding of a shifted integer, which is all a layer's output can be", node=node_name(node),
                     hint="use bipolar weights only, and Quant with 2 or more bits for activations")


def _identity(node, x: str, st: _State) -> PendingDense:
    n = st.tensors[x].features
    return PendingDense(node_name(node), x, np.eye(n, dtype=np.int64), 1.0, 2, None, False, identity=True)


def _trunc(node, ins, st: _State):
    x = ins[0]
    pool = isinstance(x, qonnx_maps.PendingPool)
    if not isinstance(x, Act) and not pool:
        raise ModelError(f"Trunc of {type(x).__name__} is not supported", node=node_name(node),
                         hint="Trunc must follow a quantized activation (a Quant output) or an AveragePool")
    t = st.tensors[x.x if pool else x.tensor]
    v2 = st.opset >= 2
    want = 6 if v2 else 5
    if len(ins) != want:
        raise ModelError(f"Trunc (version {2 if v2 else 1}) takes {want} inputs, not {len(ins)}", node=node_name(node))
    scale = _scalar(node, ins[1], "scale")
    zp = _scalar(node, ins[2], "zero point")
    if zp != 0 or t.zero_point != 0:
        raise ModelError("Trunc with a zero point is not supported", node=node_name(node), hint="use zero point 0")
    if scale != t.real_scale and not pool:
        raise ModelError(f"Trunc scale {scale!r} differs from its input's scale {t.real_scale!r}", node=node_name(node),
                         hint="give Trunc the scale of the activation it truncates")
    mode = str(attr(node, "rounding_mode", "FLOOR")).upper()
    if mode not in QONNX_ROUNDING:
        raise ModelError(f"unknown rounding_mode '{mode}'", node=node_name(node),
                         hint=f"use one of {', '.join(QONNX_ROUNDING)}")
    rounding = QONNX_ROUNDING[mode]
    if v2:
        out_scale = _scalar(node, ins[4], "output scale")
        bits = int(_scalar(node, ins[5], "output bit width"))
        signed = bool(attr(node, "signed", 1))
        narrow = bool(attr(node, "narrow", 0))
        # As qonnx computes it: the truncation is the power of two nearest the ratio of the scales.
        shift = int(np.round(np.log2(np.float64(out_scale) / np.float64(scale))))
    else:
        in_bits = int(_scalar(node, ins[3], "input bit width"))
        bits = int(_scalar(node, ins[4], "output bit width"))
        if t.type.bits > in_bits and not pool:
            raise ModelError(f"Trunc's input bit width {in_bits} is below its input's {t.type.bits} bits",
                             node=node_name(node))
        shift, out_scale, signed, narrow = in_bits - bits, scale, t.type.signed, False
        # Version 1 does not clamp: one more bit holds a value rounded up past the output range.
        bits += 0 if rounding in (Rounding.FLOOR, Rounding.SYMMETRIC_FLOOR) else 1
    p = QuantParams(out_scale, 0, bits, signed, narrow, mode)
    out, out_s = _act_type(node, p)
    if pool:
        return qonnx_maps.trunc_pool(node, x, scale, out, out_s, shift, st)
    if qonnx_maps.is_map(t):
        return qonnx_maps.trunc_map(node, t, out, out_s, shift, st)
    pending = _identity(node, x.tensor, st)
    return _finish_dense(node, pending, out, out_s, 0, st, forced_shift=shift)


def _view(node, ins, st: _State):
    x = ins[0]
    shape = ins[1] if node.op_type == "Reshape" else None
    if isinstance(x, Act) and qonnx_maps.is_map(st.tensors[x.tensor]):
        return qonnx_maps.view(node, x, shape.values if isinstance(shape, Const) else None, st)
    if isinstance(x, (qonnx_maps.PendingConv, qonnx_maps.PendingMap, qonnx_maps.PendingPool)):
        raise ModelError(f"{node.op_type} of a layer's output that was never quantized", node=node_name(node),
                         hint="quantize the feature map (a Quant node) before flattening it")
    check_view(node, shape.values if isinstance(shape, Const) else None, _features(x, st))
    return x


def _features(x, st: _State) -> int | None:
    if isinstance(x, FloatInput):
        return x.features
    if isinstance(x, Act):
        return st.tensors[x.tensor].features
    if isinstance(x, PendingDense):
        return x.weight.shape[1]
    return None


def _matmul_start(node, x, w, trans_b: bool, st: _State) -> PendingDense:
    if not isinstance(x, Act):
        raise ModelError(f"the input of {node.op_type} must be a quantized activation (a Quant output), "
                         f"not {type(x).__name__}", node=node_name(node),
                         hint="quantize the layer input with a Quant node (Brevitas: an input or activation quantizer)")
    if not isinstance(w, Const) or w.q is None:
        raise ModelError("the weight must be a constant quantized by a Quant or BipolarQuant node", node=node_name(node),
                         hint="quantize the weights (Brevitas: QuantLinear with a weight quantizer)")
    q = w.q.T if trans_b else w.q
    if q.ndim != 2:
        raise ModelError(f"the weight has shape {list(q.shape)}; expected two dimensions", node=node_name(node))
    if w.bits > 16:
        raise ModelError(f"weights need {w.bits} signed bits; at most 16 are supported", node=node_name(node),
                         hint="quantize weights to 16 bits or fewer")
    t = st.tensors[x.tensor]
    k = t.features
    if qonnx_maps.is_map(t) and node.input[0] not in st.flat:
        raise ModelError(f"{node.op_type} of a {list(t.source_shape)} feature map that was not flattened",
                         node=node_name(node), hint="flatten the map first (Flatten with axis=1, or Reshape to "
                                                    f"[batch, {k}])")
    if q.shape[0] != k:
        raise ModelError(f"the weight has {q.shape[0]} input features but the input has {k}", node=node_name(node))
    if qonnx_maps.is_map(t):
        q = qonnx_maps.flat_weight_rows(t, q)  # the source's (C, H, W) rows in the compiler's (H, W, C) order
    return PendingDense(node_name(node), x.tensor, q.astype(np.int64), float(w.scale), w.bits, None, False)


def _gemm(node, ins, st: _State):
    trans_b = check_gemm(node)
    dense = _matmul_start(node, ins[0], ins[1], trans_b, st)
    if len(ins) > 2 and ins[2] is not None:
        dense = _add_bias(node, dense, ins[2])
    return dense


def _matmul(node, ins, st: _State):
    return _matmul_start(node, ins[0], ins[1], False, st)


def _add(node, ins, st: _State):
    a, b = ins[0], ins[1]
    if isinstance(b, (PendingDense, qonnx_maps.PendingConv)) and isinstance(a, Const):
        a, b = b, a
    if isinstance(a, qonnx_maps.PendingConv) and isinstance(b, Const):
        return qonnx_maps.conv_bias(node, a, b)
    if isinstance(a, PendingDense) and isinstance(b, Const):
        if a.bias is not None or a.relu:
            raise ModelError("a second bias after MatMul/Gemm (or a bias after Relu) is not supported",
                             node=node_name(node))
        return _add_bias(node, a, b)
    if isinstance(a, Act) and isinstance(b, Act):
        ta, tb = st.tensors[a.tensor], st.tensors[b.tensor]
        if ta.features != tb.features:
            raise ModelError(f"adds activations of {ta.features} and {tb.features} features", node=node_name(node),
                             hint="broadcasting is not supported: add activations of the same width")
        if ta.shape != tb.shape or (node.input[0] in st.flat) != (node.input[1] in st.flat):
            raise ModelError(f"adds a {list(ta.source_shape)} and a {list(tb.source_shape)} activation",
                             node=node_name(node), hint="add feature maps of the same shape")
        for t in (ta, tb):
            _check_add_type(node, t.type, t.scale, t.zero_point, f"input '{t.name}'")
        return PendingAdd(node_name(node), a.tensor, b.tensor, False)
    pending = (PendingDense, PendingAdd, qonnx_maps.PendingConv, qonnx_maps.PendingMap, qonnx_maps.PendingPool)
    if any(isinstance(v, pending) for v in (a, b)) and all(isinstance(v, (Act,) + pending) for v in (a, b)):
        raise ModelError("adds a layer's output that was never quantized", node=node_name(node),
                         hint="put a Quant node on both inputs of a residual Add")
    raise ModelError("Add is supported as the bias of MatMul (MatMul -> Add with a constant) or as the sum of "
                     f"two quantized activations, not {type(a).__name__} + {type(b).__name__}", node=node_name(node))


def _check_add_type(node, t: FixedType, scale, zp: int, what: str) -> None:
    if scale is not None or zp != 0:
        raise ModelError(f"{what} of a residual Add has a scale that is not a power of two or a zero point",
                         node=node_name(node), hint="quantize both inputs and the output of a residual Add with "
                                              "power-of-two scales and zero point 0")
    if t.bits != t.storage_bits or (t.bits == 16 and not t.signed):
        raise ModelError(f"{what} of a residual Add is {t.bits}-bit {'signed' if t.signed else 'unsigned'}; the "
                         "add kernel takes full int8, uint8 or int16", node=node_name(node),
                         hint="quantize the inputs and output of a residual Add to 8 or 16 bits")


def _add_bias(node, dense: PendingDense, b: Const) -> PendingDense:
    n = dense.weight.shape[1]
    values = np.asarray(b.values, dtype=np.float64).reshape(-1)
    if values.size not in (1, n):
        raise ModelError(f"the bias has {values.size} values for {n} output features", node=node_name(node))
    return replace(dense, bias=b)


def _relu(node, ins, st: _State):
    x = ins[0]
    if isinstance(x, (PendingDense, PendingAdd, qonnx_maps.PendingConv, qonnx_maps.PendingMap)):
        return replace(x, relu=True)
    if isinstance(x, qonnx_maps.PendingPool):
        raise ModelError("Relu between an AveragePool and its Quant is not supported", node=node_name(node),
                         hint="quantize the pool's output first (a Quant node), then apply the Relu")
    if isinstance(x, Act):
        if qonnx_maps.is_map(st.tensors[x.tensor]):
            return qonnx_maps.PendingMap(node_name(node), x.tensor, relu=True)
        return replace(_identity(node, x.tensor, st), relu=True)
    raise ModelError(f"Relu of {type(x).__name__} is not supported", node=node_name(node),
                     hint="place Relu after Gemm, MatMul(+Add), Add or a quantized activation, before a Quant")


def _bias_on_grid(node, dense: PendingDense, acc_scale: float, exact: bool) -> np.ndarray:
    """The bias as integers on the accumulator grid (scale acc_scale)."""
    return _bias_ints(dense.node, dense.bias, dense.weight.shape[1], acc_scale, exact)


def _bias_ints(layer: str, b, n: int, acc_scale: float, exact: bool) -> np.ndarray:
    """A layer's bias (a Const or None) as n integers on the accumulator grid (scale acc_scale): exactly on it
    when `exact` (power-of-two scales), else within float32's rounding of input scale x weight scale."""
    if b is None:
        return np.zeros(n, dtype=np.int64)
    if b.q is not None and b.scale is not None:
        ratio = b.scale / acc_scale
        if ratio == round(ratio) and ratio >= 1:
            q = b.q.reshape(-1).astype(np.int64) * int(ratio)
            return np.broadcast_to(q, (n,)).copy()
    values = np.broadcast_to(np.asarray(b.values, dtype=np.float64).reshape(-1), (n,))
    if exact:
        frac = _pow2_frac(acc_scale)
        scaled = np.ldexp(values, frac)
        if np.any(scaled != np.round(scaled)):
            raise ModelError("the bias is not on the accumulator grid (input scale x weight scale)",
                             node=layer, hint="quantize the bias with scale = input scale x weight scale "
                                                   "(Brevitas: bias_quant=Int32Bias)")
        return scaled.astype(np.int64)
    scaled = values / acc_scale
    r = np.rint(scaled)
    # Brevitas computes the bias scale input x weight scale in float32: accept that rounding of the grid.
    if np.any(np.abs(scaled - r) > 1e-4 * np.maximum(1.0, np.abs(r))):
        raise ModelError("the bias is not an integer multiple of input scale x weight scale", node=layer,
                         hint="quantize the bias with scale = input scale x weight scale (Brevitas: Int32Bias)")
    return r.astype(np.int64)


def _finish_dense(node, dense: PendingDense, out: FixedType, out_scale: float | None, zp: int, st: _State,
                  forced_shift: int | None = None) -> Act:
    x = st.tensors[dense.x]
    n = dense.weight.shape[1]
    w_frac = _pow2_frac(dense.weight_scale)
    weight_type = FixedType(dense.weight_bits, True, w_frac if w_frac is not None else 0)
    if forced_shift is not None:  # Trunc: the integers are shifted, whatever the scales say
        multiplier, shift, acc_scale, exact = 1, forced_shift, x.real_scale, True
    elif x.scale is None and out_scale is None and w_frac is not None:
        multiplier, shift, exact = 1, x.type.frac + w_frac - out.frac, True
        acc_scale = math.ldexp(1.0, -(x.type.frac + w_frac))
    else:
        acc_scale = x.real_scale * dense.weight_scale
        y_scale = out_scale if out_scale is not None else math.ldexp(1.0, -out.frac)
        multiplier, shift = choose_multiplier(acc_scale / y_scale)
        exact = False
    bias = _bias_on_grid(node, dense, acc_scale, exact)
    if x.zero_point:
        bias = bias - np.int64(x.zero_point) * dense.weight.sum(axis=0)
    name = node.output[0]
    if name in st.tensors:
        raise ModelError(f"tensor '{name}' is written twice", node=node_name(node))
    st.tensors[name] = Tensor(name, (n,), out, out_scale, zp)
    op_name = dense.node
    if any(op.name == op_name for op in st.ops):
        op_name = node_name(node)
    if dense.identity:  # x @ I + bias is x + bias, feature by feature
        st.ops.append(requant_op(op_name, dense.x, name, bias, shift, multiplier, dense.relu))
    else:
        st.ops.append(dense_op(op_name, dense.x, name, dense.weight, bias, weight_type, shift, multiplier, dense.relu))
    return Act(name)


def _finish_add(node, pending: PendingAdd, out: FixedType, out_scale, zp: int, st: _State) -> Act:
    _check_add_type(node, out, out_scale, zp, "the output")
    a, b = st.tensors[pending.a], st.tensors[pending.b]
    name = node.output[0]
    st.tensors[name] = Tensor(name, a.shape, out, source_order=a.source_order)
    st.ops.append(add_op(pending.node, a, b, name, out, pending.relu))
    return Act(name)


RULES = {
    "Quant": _quant,
    "IntQuant": _quant,
    "BipolarQuant": _bipolar_quant,
    "Trunc": _trunc,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Relu": _relu,
    "Identity": _view,
    "Flatten": _view,
    "Reshape": _view,
}
QONNX_OPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc")
# Elementwise nodes: their output is a flattened map when their input is one.
_ELEMENTWISE = ("Quant", "IntQuant", "Trunc", "Relu", "Identity")

from . import qonnx_maps  # noqa: E402 - it reads this module's values and helpers (a cycle resolved at call time)

RULES.update(qonnx_maps.RULES)


def is_qonnx(model) -> bool:
    """Whether an onnx.ModelProto is this frontend's: a node of a QONNX or FINN domain, or a Quant,
    BipolarQuant or Trunc node in any domain (the cleanup moves those into qonnx's)."""
    return any(n.domain.startswith(("qonnx", "finn")) or n.op_type in ("Quant", "BipolarQuant", "Trunc")
               for n in model.graph.node)
