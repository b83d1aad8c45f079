"""ONNX models quantized with QuantizeLinear / DequantizeLinear (QDQ) into the aieflow Graph.

Each ONNX tensor is given a symbolic meaning as the nodes are visited in order: a float graph input, a
quantized activation, its dequantized (exact) float view, an exact fixed-point constant, or a dense layer
in progress (MatMul/Gemm, then bias, then ReLU) that the next QuantizeLinear completes. Each node type is
one rule in `RULES`; a node whose inputs have meanings no rule accepts ends in an error naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..ir import Graph, Op, Tensor
from ..numerics import FixedType, Rounding, Saturation, quantize_float

# --- what an ONNX tensor means ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatInput:
    name: str
    features: int


@dataclass(frozen=True)
class Quantized:
    tensor: str  # IR tensor name


@dataclass(frozen=True)
class Dequantized:
    tensor: str


@dataclass(frozen=True)
class Const:
    """A constant: float values, and when exactly known, its integers and fractional bits."""

    values: np.ndarray
    q: np.ndarray | None = None
    type: FixedType | None = None


@dataclass(frozen=True)
class PendingDense:
    """x @ W (+ b) (-> ReLU) waiting for its output QuantizeLinear."""

    node: str
    x: str  # IR tensor
    weight: np.ndarray  # [in, out] integers
    weight_type: FixedType
    bias: np.ndarray | None  # on the accumulator grid
    relu: bool


@dataclass
class _State:
    values: dict
    tensors: dict
    ops: list
    shapes: dict


_ONNX_INT_TYPES = {2: (8, False), 3: (8, True), 4: (16, False), 5: (16, True), 6: (32, True)}


def load_onnx(path_or_model) -> Graph:
    """Read an ONNX QDQ model (a path or an onnx.ModelProto) into a Graph."""
    import onnx

    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        if not path.is_file():
            raise ModelError(f"no such file: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as e:  # onnx raises DecodeError and others for non-ONNX bytes
            raise ModelError(f"{path} is not an ONNX model ({type(e).__name__})",
                             hint="give a .onnx file saved by onnx.save or a framework's ONNX export") from None
        if not model.graph.node:
            raise ModelError(f"{path} is not an ONNX model (it has no graph nodes)",
                             hint="give a .onnx file saved by onnx.save or a framework's ONNX export")
        name = path.stem
    else:
        model = path_or_model
        name = model.graph.name or "model"
    return _convert(model, name)


def _convert(model, name: str) -> Graph:
    from onnx import numpy_helper

    g = model.graph
    st = _State(values={}, tensors={}, ops=[], shapes={})
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        st.values[init.name] = Const(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)
    for node in g.node:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is None:
                raise ModelError("only Constant nodes with a tensor 'value' are supported", node=_nm(node))
            arr = numpy_helper.to_array(attr.t)
            st.values[node.output[0]] = Const(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)
    graph_inputs = []
    for vi in g.input:
        if vi.name in st.values:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if len(dims) < 2 or dims[-1] is None or any(d is None or d > 1 for d in dims[1:-1]):
            raise ModelError(f"graph input '{vi.name}' has shape {dims}; expected [batch, features]",
                             hint="flatten the input to two dimensions before export")
        if vi.type.tensor_type.elem_type != 1:
            raise ModelError(f"graph input '{vi.name}' must be float32 (QuantizeLinear quantizes it)")
        st.values[vi.name] = FloatInput(vi.name, dims[-1])
        graph_inputs.append(vi.name)
    if len(graph_inputs) != 1:
        raise ModelError(f"the model has {len(graph_inputs)} inputs; aieflow supports one")

    ir_inputs = []
    for node in g.node:
        if node.op_type == "Constant":
            continue
        rule = RULES.get(node.op_type)
        if rule is None or node.domain not in ("", "ai.onnx"):
            raise ModelError(f"unsupported op {node.domain + '.' if node.domain else ''}{node.op_type}",
                             node=_nm(node), hint=f"supported: {', '.join(sorted(RULES))}")
        ins = []
        for i in node.input:
            if i == "":
                ins.append(None)
            elif i not in st.values:
                raise ModelError(f"input '{i}' is not produced by any earlier node", node=_nm(node))
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
    return Graph(name, st.tensors, tuple(st.ops), tuple(ir_inputs), tuple(outputs)).validate()


def _nm(node) -> str:
    return node.name or f"{node.op_type}({', '.join(node.output)})"


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# --- quantization parameters ------------------------------------------------------------------------------


def _scale_frac(node, scale: Const) -> int:
    s = np.asarray(scale.values, dtype=np.float64)
    if s.size != 1:
        raise ModelError(f"per-channel scales ({s.size} values) are not supported", node=_nm(node),
                         hint="quantize with one per-tensor scale")
    v = float(s.reshape(-1)[0])
    if not v > 0:
        raise ModelError(f"scale {v} must be positive", node=_nm(node))
    m, e = math.frexp(v)
    if m != 0.5:
        raise ModelError(f"scale {v!r} is not a power of two", node=_nm(node),
                         hint="use power-of-two scales (e.g. 2**-5 = 0.03125); other scales need requantization support")
    return -(e - 1)  # v = 2**(e-1) = 2**-frac


def _qparams(node, ins) -> tuple[int, int, bool]:
    """(frac, bits, signed) of a QuantizeLinear / DequantizeLinear."""
    if len(ins) < 2 or not isinstance(ins[1], Const):
        raise ModelError("the scale must be a constant", node=_nm(node))
    frac = _scale_frac(node, ins[1])
    zp = ins[2] if len(ins) > 2 else None
    if zp is None:
        bits, signed = (8, False) if node.op_type == "QuantizeLinear" else (None, None)
        if node.op_type == "QuantizeLinear" and _attr(node, "output_dtype") not in (None, 0):
            bits, signed = _ONNX_INT_TYPES.get(_attr(node, "output_dtype"), (None, None))
        return frac, bits, signed
    if not isinstance(zp, Const):
        raise ModelError("the zero point must be a constant", node=_nm(node))
    z = np.asarray(zp.values)
    if np.any(z != 0):
        raise ModelError(f"zero point {z.reshape(-1)[:4].tolist()} is not 0", node=_nm(node),
                         hint="use symmetric quantization (zero point 0)")
    kinds = {np.dtype(np.int8): (8, True), np.dtype(np.uint8): (8, False), np.dtype(np.int16): (16, True),
             np.dtype(np.uint16): (16, False), np.dtype(np.int32): (32, True)}
    if z.dtype not in kinds:
        raise ModelError(f"zero point type {z.dtype} is not supported", node=_nm(node),
                         hint="use int8, uint8 or int16")
    bits, signed = kinds[z.dtype]
    return frac, bits, signed


# --- rules: one function per ONNX op type -------------------------------------------------------------------


def _quantize(node, ins, st: _State):
    x = ins[0]
    frac, bits, signed = _qparams(node, ins)
    if isinstance(x, Const):
        # Weights exported as float constants behind QuantizeLinear: quantize them exactly as ONNX would.
        t = FixedType(bits, signed, frac, Rounding.CONV_EVEN, Saturation.SATURATE)
        q = quantize_float(np.asarray(x.values, dtype=np.float64), t)
        return Const(np.asarray(q).astype(np.dtype(t.storage)))
    if bits not in (8, 16) or (bits == 16 and not signed):
        raise ModelError(f"activations of {bits} bits ({'signed' if signed else 'unsigned'}) are not supported",
                         node=_nm(node), hint="quantize activations to int8, uint8 or int16")
    # ONNX QuantizeLinear rounds half to even and saturates.
    t = FixedType(bits, signed, frac, Rounding.CONV_EVEN, Saturation.SATURATE)
    name = node.output[0]
    if isinstance(x, FloatInput):
        st.tensors[name] = Tensor(name, x.features, t)
        return Quantized(name)
    if isinstance(x, PendingDense):
        return _finish_dense(node, x, t, st)
    if isinstance(x, Dequantized):
        raise ModelError("requantizing an activation on its own (DequantizeLinear -> QuantizeLinear) is not supported",
                         node=_nm(node), hint="quantize each activation once")
    raise ModelError(f"cannot quantize {type(x).__name__}", node=_nm(node),
                     hint="QuantizeLinear must follow the graph input, Gemm, MatMul+Add or Relu")


def _dequantize(node, ins, st: _State):
    x = ins[0]
    if isinstance(x, Quantized):
        frac, _, _ = _qparams(node, ins)
        t = st.tensors[x.tensor].type
        if frac != t.frac:
            raise ModelError(f"dequantizes with 2**-{frac} a tensor quantized with 2**-{t.frac}", node=_nm(node),
                             hint="use the same scale in the QuantizeLinear / DequantizeLinear pair")
        return Dequantized(x.tensor)
    if isinstance(x, Const):
        if len(ins) < 2 or not isinstance(ins[1], Const):
            raise ModelError("the scale must be a constant", node=_nm(node))
        frac, _, _ = _qparams(node, ins)
        q = np.asarray(x.values)
        if q.dtype.kind not in "iu":
            raise ModelError(f"dequantizes a {q.dtype} constant; expected integers", node=_nm(node))
        bits = q.dtype.itemsize * 8
        t = FixedType(bits, q.dtype.kind == "i", frac)
        return Const(np.ldexp(q.astype(np.float64), -frac), q.astype(np.int64), t)
    raise ModelError(f"DequantizeLinear of {type(x).__name__} is not supported", node=_nm(node))


def _view(node, ins, st: _State):
    """Identity, Flatten, Reshape and Squeeze-like views that keep [batch, features] as it is."""
    x = ins[0]
    if node.op_type == "Flatten" and _attr(node, "axis", 1) != 1:
        raise ModelError(f"Flatten with axis={_attr(node, 'axis')} changes the data layout", node=_nm(node),
                         hint="use axis=1")
    if node.op_type == "Reshape":
        shape = ins[1]
        if not isinstance(shape, Const):
            raise ModelError("Reshape needs a constant shape", node=_nm(node))
        dims = [int(d) for d in np.asarray(shape.values).reshape(-1)]
        features = _features(x, st)
        if len(dims) != 2 or dims[1] != features:
            raise ModelError(f"Reshape to {dims} changes the [batch, {features}] layout", node=_nm(node),
                             hint="only reshapes to [-1, features] or [batch, features] are supported")
    return x


def _features(x, st: _State) -> int | None:
    if isinstance(x, FloatInput):
        return x.features
    if isinstance(x, (Quantized, Dequantized)):
        return st.tensors[x.tensor].features
    if isinstance(x, PendingDense):
        return x.weight.shape[1]
    return None


def _weight(node, w, transpose: bool) -> tuple[np.ndarray, FixedType]:
    if not isinstance(w, Const) or w.q is None:
        raise ModelError("the weight must be a DequantizeLinear of an int8 or int16 constant", node=_nm(node),
                         hint="export with quantized weights (QDQ format)")
    q = w.q.T if transpose else w.q
    if q.ndim != 2:
        raise ModelError(f"the weight has shape {list(q.shape)}; expected two dimensions", node=_nm(node))
    if w.type.bits not in (8, 16) or not w.type.signed:
        raise ModelError(f"weights of type {w.type.storage} are not supported", node=_nm(node),
                         hint="quantize weights to int8 or int16")
    return q, w.type


def _matmul_start(node, x, w, trans_b: bool) -> PendingDense:
    if not isinstance(x, Dequantized):
        raise ModelError(f"the input of {node.op_type} must be a quantized activation (DequantizeLinear output)",
                         node=_nm(node), hint="quantize the input with QuantizeLinear/DequantizeLinear")
    q, wt = _weight(node, w, trans_b)
    return PendingDense(_nm(node), x.tensor, q, wt, None, False)


def _gemm(node, ins, st: _State):
    if _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
        raise ModelError("Gemm with alpha or beta other than 1 is not supported", node=_nm(node),
                         hint="fold alpha and beta into the weights before export")
    if _attr(node, "transA", 0) != 0:
        raise ModelError("Gemm with transA=1 is not supported", node=_nm(node))
    dense = _matmul_start(node, ins[0], ins[1], bool(_attr(node, "transB", 0)))
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
                         node=_nm(node))


def _add(node, ins, st: _State):
    a, b = ins[0], ins[1]
    if isinstance(b, PendingDense) and isinstance(a, Const):
        a, b = b, a
    if isinstance(a, PendingDense) and isinstance(b, Const):
        if a.bias is not None or a.relu:
            raise ModelError("a second bias after MatMul is not supported", node=_nm(node))
        return _add_bias(node, a, b, st)
    raise ModelError("Add is supported as the bias of MatMul (MatMul -> Add with a constant) or as the sum of "
                     "two quantized activations", node=_nm(node),
                     hint="quantize both inputs with QuantizeLinear/DequantizeLinear")


def _add_bias(node, dense: PendingDense, b: Const, st: _State) -> PendingDense:
    acc_frac = st.tensors[dense.x].type.frac + dense.weight_type.frac
    n = dense.weight.shape[1]
    values = np.asarray(b.values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.full(n, values[0])
    if values.size != n:
        raise ModelError(f"the bias has {values.size} values for {n} output features", node=_nm(node))
    if b.q is not None:
        shift = acc_frac - b.type.frac
        if shift < 0:
            raise ModelError(f"the bias has {b.type.frac} fractional bits, more than the accumulator's {acc_frac}",
                             node=_nm(node), hint="quantize the bias with scale = input scale x weight scale")
        q = np.broadcast_to(b.q.reshape(-1), (n,)).astype(np.int64) << shift
    else:
        scaled = np.ldexp(values, acc_frac)
        if np.any(scaled != np.round(scaled)):
            raise ModelError("the float bias is not on the accumulator grid (input scale x weight scale)",
                             node=_nm(node), hint="quantize the bias to int32 with scale = input scale x weight scale")
        q = scaled.astype(np.int64)
    return replace(dense, bias=q)


def _relu(node, ins, st: _State):
    x = ins[0]
    if isinstance(x, PendingDense):
        if x.relu:
            return x
        return replace(x, relu=True)
    raise ModelError("Relu is supported only after Gemm or MatMul+Add, before QuantizeLinear", node=_nm(node),
                     hint="place Relu between the layer and its output QuantizeLinear")


def _finish_dense(node, dense: PendingDense, out: FixedType, st: _State) -> Quantized:
    x = st.tensors[dense.x]
    n = dense.weight.shape[1]
    bias = dense.bias if dense.bias is not None else np.zeros(n, dtype=np.int64)
    name = node.output[0]
    st.tensors[name] = Tensor(name, n, out)
    shift = x.type.frac + dense.weight_type.frac - out.frac
    st.ops.append(Op(dense.node, "dense", (dense.x,), (name,),
                     {"relu": dense.relu, "shift": shift, "weight_type": dense.weight_type},
                     {"weight": dense.weight.astype(np.int64), "bias": bias.astype(np.int64)}))
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
