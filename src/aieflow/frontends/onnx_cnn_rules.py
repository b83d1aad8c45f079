"""ONNX rules for convolutional networks, for the QDQ frontend's RULES table (see onnx_qdq).

Feature maps. A float graph input [N, C, H, W] (or [N, C, L]) becomes an IR tensor of shape (H, W, C)
(or (L, C)) with source_order (1, 2, 0) (or (1, 0)), and so does every feature map after it: the compiler
holds maps channels last, and the exactness measurement compares them in the model's NCHW. An input
[N, 1, F] (or [N, 1, 1, F]) stays the flat (F,) of an MLP, as before, and becomes a one-channel map (the
same integers in the same order) only when a Conv or a pool reads it.

Each ONNX name that holds a map has its per-sample ONNX shape in `st.shapes` where it is not its IR
tensor's source shape: Flatten, Reshape, Squeeze, Unsqueeze and Identity are views that change only that
shape (the data is the source's C-major order either way), and the rule that reads a view checks it:
  Conv, MaxPool, AveragePool        the map itself ([C, H, W] / [C, L])
  global pools, ReduceMean          [C, *spatial] with the map's channels and as many positions
  Gemm, MatMul                      flat ([features], or ones before it): the weight's rows are permuted
                                    from the source's (C, H, W) flatten order to the compiler's (H, W, C);
                                    the dense op reads the map tensor itself (features flat)
  Add                               two maps of the same shape (the residual rule, onnx_add_rule)

The rules, each turning a QDQ pattern into one IR op when the output's QuantizeLinear comes:
  Conv(DQ x, DQ w, [DQ b]) [-> Relu | Clip]* -> QuantizeLinear          conv_op
  MaxPool / GlobalMaxPool (DQ x) -> QuantizeLinear (x's scale)          pool_op max
  AveragePool / GlobalAveragePool / ReduceMean (DQ x) [-> views] -> Q   pool_op avg
  QuantizeLinear of a dequantized view with its own scale and zero point: the same tensor (exact)

Numerics. A convolution requantizes as a dense layer does (power-of-two scales: a shift; otherwise
numerics.choose_multiplier(s_x * s_w / s_y)); the weight's zero point is subtracted from its integers, the
input's is folded into the bias when there is no padding. Padding reads as raw 0, so a padded convolution
(or a padded average) of an input with a zero point first moves it to zero point 0 with a requant op
(int8 when the moved range fits, else int16): a tensor the model does not hold, which the reference
computes from the model's own (st.derived). Relu and Clip are clamps after the requantization, their bounds
quantized as the QuantizeLinear quantizes (Q is monotonic, so Q(clip(v, a, b)) = clip(Q(v), Q(a), Q(b))).
An average pool's output is round(sum(q - zp_x) * s_x / (n * s_y)) + zp_y: bias -n * zp_x, then a shift
(power-of-two scales and window count: exact) or choose_multiplier. onnxruntime divides the float sum by
n; where n is not a power of two the multiplier is within 2**-31 of 1/n, which can only differ from it on
exact ties (measured, never assumed: see tests/test_frontend_cnn.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ModelError
from ..ir import Tensor
from ..numerics import FixedType, choose_multiplier
from ..ops.conv import conv_op
from ..ops.pool import pool_op
from ..ops.requant import requant_op
from .onnx_nodes import MAX_DECLARED_BATCH, attr, float_input, node_name

# A feature map of at most this many values per sample (the graph input's bound).
MAX_MAP_FEATURES = 1 << 24
_LATER = "aieflow will support it in a later version"


def _qdq():
    """The QDQ frontend, imported when a rule runs (it imports this module to build its RULES)."""
    from . import onnx_qdq

    return onnx_qdq


# --- what an ONNX tensor means (besides onnx_qdq's) ---------------------------------------------------------


@dataclass(frozen=True)
class PendingConv:
    """A convolution (-> Relu / Clip) waiting for its output QuantizeLinear."""

    node: str
    x: str  # IR tensor read (zero point folded into the bias, or moved to 0 when padded)
    weight: np.ndarray  # [KH, KW, C, CO] ([KH, KW, 1, C] depthwise), the weight zero point subtracted
    weight_type: FixedType
    weight_scale: float | None  # None: 2**-weight_type.frac
    bias: np.ndarray  # [CO] on the accumulator grid
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    depthwise: bool
    shape: tuple[int, ...]  # the output's IR shape
    order: tuple[int, ...]  # its source_order
    bounds: tuple = ()  # (min, max) float clamps in order (Relu: (0.0, None)); None: unbounded


@dataclass(frozen=True)
class PendingPool:
    """A pool waiting for its output QuantizeLinear (through float views, as exporters leave ReduceMean)."""

    node: str
    x: str
    mode: str  # "max" or "avg"
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    shape: tuple[int, ...]
    order: tuple[int, ...]


# --- the graph input ----------------------------------------------------------------------------------------


def _is_map(dims: list) -> bool:
    """[N, C, L] or [N, C, H, W] with more than one value before the last axis: a feature map."""
    return len(dims) in (3, 4) and all(d is not None for d in dims[1:]) and any(d > 1 for d in dims[1:-1])


def graph_input(graph, known):
    """The model's one float input (onnx_qdq.FloatInput, its declared sample shape in `dims`): a feature map
    [N, C, H, W] / [N, C, L], or [batch, features] (ones allowed between) as onnx_nodes.float_input reads."""
    q = _qdq()
    free = [vi for vi in graph.input if vi.name not in known]
    if len(free) == 1:
        vi = free[0]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if len(dims) in (3, 4) and any(d is None for d in dims[1:]):
            raise ModelError(f"graph input '{vi.name}' has shape {dims}; a feature map needs fixed channels and "
                             "spatial sizes", hint="export with a fixed input size (only the batch may vary)")
        if _is_map(dims):
            features = math.prod(dims[1:])
            if min(dims[1:]) < 1 or features > MAX_MAP_FEATURES or (
                    dims[0] is not None and not 0 <= dims[0] <= MAX_DECLARED_BATCH):
                raise ModelError(f"graph input '{vi.name}' declares shape {dims}",
                                 hint=f"at most {MAX_MAP_FEATURES} values a sample and a fixed batch at most "
                                      f"{MAX_DECLARED_BATCH} (or leave it symbolic)")
            if vi.type.tensor_type.elem_type != 1:
                raise ModelError(f"graph input '{vi.name}' must be float32 (QuantizeLinear quantizes it)")
            return q.FloatInput(vi.name, features, tuple(int(d) for d in dims[1:]))
    name, features = float_input(graph, known, "QuantizeLinear")
    vi = next(v for v in graph.input if v.name == name)
    dims = [d.dim_value for d in vi.type.tensor_type.shape.dim][1:]
    return q.FloatInput(name, features, tuple(int(d) for d in dims))


def _map_layout(source_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(IR shape, source_order) of a map whose sample is [C, H, W] or [C, L] in the source."""
    if len(source_shape) == 3:
        c, h, w = source_shape
        return (h, w, c), (1, 2, 0)
    c, n = source_shape
    return (n, c), (1, 0)


# --- shapes ---------------------------------------------------------------------------------------------------


def onnx_shape(name: str, value, st) -> tuple[int, ...] | None:
    """A sample's shape under ONNX name `name` (meaning `value`), where known."""
    if name in st.shapes:
        return tuple(st.shapes[name])
    q = _qdq()
    if isinstance(value, (q.Quantized, q.Dequantized)):
        return tuple(st.tensors[value.tensor].source_shape)
    if isinstance(value, q.FloatInput):
        return tuple(value.dims) or (value.features,)
    return None


def _is_map_value(value, st) -> bool:
    """Whether a meaning holds a feature map (or a float map input), whose views the map rules track."""
    q = _qdq()
    if isinstance(value, (PendingConv, PendingPool)):
        return True
    if isinstance(value, (q.Quantized, q.Dequantized)):
        return len(st.tensors[value.tensor].shape) > 1 or value.tensor in st.promotable
    if isinstance(value, q.FloatInput):
        return _is_map(["N", *value.dims])
    return False


def _carry_shape(node, st) -> None:
    """An elementwise node: its output has its input's shape."""
    if node.input and node.input[0] in st.shapes:
        st.shapes[node.output[0]] = st.shapes[node.input[0]]


def _map_input(node, value, name: str, st, what: str, exact_view: bool = True) -> tuple[Tensor, tuple[int, ...]]:
    """The IR map a Conv or a pool reads, and its ONNX shape there. exact_view: the map itself ([C, H, W]),
    not a view of it (global pools accept any [C, *spatial] of the same channels and positions)."""
    q = _qdq()
    if not isinstance(value, q.Dequantized):
        raise ModelError(f"the input of {what} must be a quantized activation (a DequantizeLinear output), "
                         f"not {type(value).__name__}", node=node_name(node),
                         hint="quantize the input with QuantizeLinear/DequantizeLinear")
    shape = onnx_shape(name, value, st)
    t = st.tensors[value.tensor]
    if shape is None or len(shape) not in (2, 3):
        raise ModelError(f"{what} reads a tensor of shape {list(shape or ())} per sample; expected a feature map "
                         "[C, L] or [C, H, W]", node=node_name(node),
                         hint="1-D and 2-D convolutions and pools are supported")
    if len(t.shape) == 1 and st.promotable.get(value.tensor) == shape:
        # The flat graph input read as a one-channel map: the same integers in the same order.
        ir_shape, order = _map_layout(st.promotable.pop(value.tensor))
        t = replace(t, shape=ir_shape, source_order=order)
        st.tensors[t.name] = t
    if len(t.shape) == 1:
        raise ModelError(f"{what} reads '{name}', a flat activation of {t.features} features reshaped into "
                         f"{list(shape)}", node=node_name(node),
                         hint="reshaping a flat activation into a feature map is not supported")
    if exact_view and shape != tuple(t.source_shape):
        raise ModelError(f"{what} reads '{name}', a view {list(shape)} of the feature map {list(t.source_shape)}",
                         node=node_name(node), hint=f"give {what} the feature map itself")
    if not exact_view and (shape[0] != t.channels or math.prod(shape[1:]) != t.features // t.channels):
        raise ModelError(f"{what} reads '{name}', a view {list(shape)} of the feature map {list(t.source_shape)} "
                         "that mixes its channels", node=node_name(node),
                         hint=f"give {what} the feature map, [C, *spatial]")
    return t, shape


# --- windows ------------------------------------------------------------------------------------------------


def _ints(node, name: str, default: list[int], size: int, what: str) -> list[int]:
    v = attr(node, name)
    v = list(default) if v is None or len(v) == 0 else [int(a) for a in v]
    if len(v) != size:
        raise ModelError(f"{what}'s {name} {v} needs {size} values", node=node_name(node))
    return v


def _window(node, spatial, kernel, what: str, ceil_ok: bool = False):
    """(strides, begins, ends, output sizes) of a Conv or pool window over `spatial` (ONNX order)."""
    d = len(spatial)
    strides = _ints(node, "strides", [1] * d, d, what)
    dilations = _ints(node, "dilations", [1] * d, d, what)
    if any(v != 1 for v in dilations):
        raise ModelError(f"{what} with dilations {dilations} is not supported", node=node_name(node),
                         hint=f"use dilations of 1 ({_LATER} if needed)")
    if any(s < 1 for s in strides) or any(k < 1 for k in kernel):
        raise ModelError(f"{what} has kernel {list(kernel)} and strides {strides}; both must be positive",
                         node=node_name(node))
    auto = attr(node, "auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = _ints(node, "pads", [0] * 2 * d, 2 * d, what)
        if any(p < 0 for p in pads):
            raise ModelError(f"{what} has negative pads {pads}", node=node_name(node))
        begins, ends = pads[:d], pads[d:]
    elif auto == "VALID":
        begins, ends = [0] * d, [0] * d
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for n, k, s in zip(spatial, kernel, strides):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            small = total // 2
            begins.append(small if auto == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
    else:
        raise ModelError(f"{what} with auto_pad {auto!r} is not supported", node=node_name(node),
                         hint="use NOTSET (explicit pads), VALID, SAME_UPPER or SAME_LOWER")
    out = []
    for n, k, s, b, e in zip(spatial, kernel, strides, begins, ends):
        if n + b + e < k:
            raise ModelError(f"{what}'s window {list(kernel)} does not fit the padded input {list(spatial)}",
                             node=node_name(node))
        size = (n + b + e - k) // s + 1
        if attr(node, "ceil_mode", 0):
            ceil = -(-(n + b + e - k) // s) + 1
            if ceil != size and not ceil_ok:
                raise ModelError(f"{what} with ceil_mode=1 makes {ceil} outputs where floor makes {size} "
                                 "(a last window past the padding)", node=node_name(node),
                                 hint="use ceil_mode=0, or sizes where both agree")
        out.append(size)
    return strides, begins, ends, out


def _ir_window(kernel, strides, begins, ends):
    """ONNX window (spatial axes in order) as the IR's (kernel, strides, pads (top, left, bottom, right));
    a 1-D window is one row: (1, K)."""
    if len(kernel) == 1:
        return (1, kernel[0]), (1, strides[0]), (0, begins[0], 0, ends[0])
    return tuple(kernel), tuple(strides), (begins[0], begins[1], ends[0], ends[1])


def _zero_point_free(node, t: Tensor, st) -> Tensor:
    """t moved to zero point 0 (q - zp, exact: int8 when that range fits, else int16) by a requant op, for
    a padded window that reads padding as raw 0; t itself when its zero point is 0."""
    zp = int(t.zero_point)
    if zp == 0:
        return t
    name = f"{t.name}_zero_point_0"
    if name in st.tensors:
        return st.tensors[name]
    lo, hi = t.type.qmin - zp, t.type.qmax - zp
    if not -(1 << 15) <= lo <= hi < (1 << 15):
        raise ModelError(f"'{t.name}' (zero point {zp}) is read with padding, and q - {zp} spans [{lo}, {hi}], "
                         "beyond int16", node=node_name(node),
                         hint="quantize a padded layer's input with zero point 0, or pad explicitly with zeros")
    bits = 8 if -128 <= lo and hi <= 127 else 16
    out = Tensor(name, t.shape, FixedType(bits, True, t.type.frac, t.type.rounding, t.type.saturation), t.scale, 0,
                 t.source_order)
    st.tensors[name] = out
    st.ops.append(requant_op(name, t.name, name, np.full(t.features, -zp, dtype=np.int64), 0))
    st.derived[name] = (t.name, -zp)
    return out


# --- Conv -----------------------------------------------------------------------------------------------------


def _conv_weight(node, w) -> tuple[np.ndarray, FixedType, float | None]:
    """The weight's integers minus its zero point ([CO, C/group, *kernel]), their type and float scale."""
    q = _qdq()
    if not isinstance(w, q.Const) or w.q is None:
        raise ModelError("the weight must be a DequantizeLinear of an int8 or int16 constant", node=node_name(node),
                         hint="export with quantized weights (QDQ format)")
    if w.type.bits not in (8, 16):
        raise ModelError(f"weights of type {w.type.storage} are not supported", node=node_name(node),
                         hint="quantize weights to int8 or int16")
    ints = np.asarray(w.q, dtype=np.int64)
    if w.zero_point == 0 and w.type.signed:
        return ints, w.type, w.scale
    folded = ints - w.zero_point
    lo, hi = int(folded.min(initial=0)), int(folded.max(initial=0))
    if not -(1 << 15) <= lo <= hi < (1 << 15):
        raise ModelError(f"the weight minus its zero point {w.zero_point} spans [{lo}, {hi}], beyond int16",
                         node=node_name(node), hint="quantize 16-bit weights symmetrically (zero point 0)")
    return folded, FixedType(8 if -128 <= lo and hi <= 127 else 16, True, w.type.frac), w.scale


def conv(node, ins, st):
    """Conv of a quantized map with a DequantizeLinear'd integer weight and optional bias -> PendingConv."""
    q = _qdq()
    what = "Conv"
    t, shape = _map_input(node, ins[0], node.input[0], st, what)
    d = len(shape) - 1
    c = shape[0]
    weight, wt, ws = _conv_weight(node, ins[1] if len(ins) > 1 else None)
    if weight.ndim != d + 2:
        raise ModelError(f"the weight has shape {list(weight.shape)}; a {d}-D convolution needs {d + 2} dimensions",
                         node=node_name(node))
    co, per_group, kernel = int(weight.shape[0]), int(weight.shape[1]), tuple(int(k) for k in weight.shape[2:])
    ks = attr(node, "kernel_shape")
    if ks and tuple(int(k) for k in ks) != kernel:
        raise ModelError(f"kernel_shape {list(ks)} differs from the weight's {list(kernel)}", node=node_name(node))
    group = int(attr(node, "group", 1))
    depthwise = group > 1
    if group == 1 and per_group != c:
        raise ModelError(f"the weight reads {per_group} input channels; the input has {c}", node=node_name(node))
    if depthwise and not (group == c == co and per_group == 1):
        raise ModelError(f"a grouped convolution (group={group}, {c} input and {co} output channels) is not "
                         "supported", node=node_name(node),
                         hint="use group=1, or a depthwise convolution with group = input channels = output "
                              f"channels (a channel multiplier: follow it with a 1x1 convolution); {_LATER}")
    strides, begins, ends, out = _window(node, shape[1:], kernel, what)
    if any(s not in (1, 2) for s in strides):
        raise ModelError(f"Conv with strides {strides} is not supported", node=node_name(node),
                         hint="use strides 1 or 2")
    k2, s2, p2 = _ir_window(kernel, strides, begins, ends)
    # OIHW -> HWIO (depthwise: [KH, KW, 1, C]); a 1-D kernel [CO, C, K] is one row: [1, K, C, CO].
    hwio = weight.transpose(2, 3, 1, 0) if d == 2 else weight.transpose(2, 1, 0)[None]
    b = ins[2] if len(ins) > 2 else None
    if b is not None and not isinstance(b, q.Const):
        raise ModelError("the bias must be a constant (a DequantizeLinear of int32 at scale input x weight)",
                         node=node_name(node))
    x = _zero_point_free(node, t, st) if any(p2) else t
    bias = (q.bias_integers(node, x, wt, ws, co, b) if b is not None else np.zeros(co, dtype=np.int64))
    if x.zero_point:
        # No padding: (q_x - zp) * W summed = q_x * W summed - zp * sum(W), exactly.
        bias = bias - np.int64(x.zero_point) * hwio.sum(axis=(0, 1, 2))
    ir_shape, order = _map_layout((co, *out))
    st.shapes[node.output[0]] = (co, *out)
    return PendingConv(node_name(node), x.name, hwio, wt, ws, bias.astype(np.int64), k2, s2, p2, depthwise,
                       ir_shape, order)


def _clamp(lo, hi, a, b):
    """clip(clip(y, lo, hi), a, b) = clip(y, clamp(lo), clamp(hi)) for lo <= hi."""
    return min(max(lo, a), b), min(max(hi, a), b)


def _finish_conv(node, pending: PendingConv, qp, st):
    q = _qdq()
    name = node.output[0]
    out = _map_tensor(qp, name, pending.shape, pending.order)
    st.tensors[name] = out
    x = st.tensors[pending.x]
    if x.scale is None and pending.weight_scale is None and out.scale is None:
        multiplier, shift = 1, x.type.frac + pending.weight_type.frac - out.type.frac
    else:
        ws = pending.weight_scale if pending.weight_scale is not None else 2.0 ** -pending.weight_type.frac
        multiplier, shift = choose_multiplier(x.real_scale * ws / out.real_scale)
    qmin, qmax, zp = out.type.qmin, out.type.qmax, out.zero_point
    lo, hi = qmin, qmax
    for a, b in pending.bounds:
        # The bounds quantized as QuantizeLinear quantizes them: Q(clip(v, a, b)) = clip(Q(v), Q(a), Q(b)).
        qa = int(q._quantize_const(node, np.array([a]), qp)[0]) if a is not None else qmin
        qb = int(q._quantize_const(node, np.array([b]), qp)[0]) if b is not None else qmax
        lo, hi = _clamp(lo, hi, qa, qb)
    relu = lo == zp
    clip = None if hi >= qmax and (relu or lo <= qmin) else (lo, hi)
    st.ops.append(conv_op(pending.node, pending.x, name, pending.weight, pending.bias, pending.weight_type,
                          kernel=pending.kernel, strides=pending.strides, pads=pending.pads, shift=shift,
                          multiplier=multiplier, relu=relu, depthwise=pending.depthwise, clip=clip))
    return q.Quantized(name)


def _map_tensor(qp, name: str, shape, order) -> Tensor:
    return replace(qp.activation(name, 1), shape=tuple(shape), source_order=tuple(order))


def _bound(node, value, name: str) -> float | None:
    q = _qdq()
    if value is None:
        return None
    if not isinstance(value, q.Const) or np.asarray(value.values).size != 1:
        raise ModelError(f"Clip's {name} must be a constant scalar", node=node_name(node))
    return float(np.float32(np.asarray(value.values, dtype=np.float64).reshape(-1)[0]))


def clip(node, ins, st):
    """Clip(min, max) (inputs from opset 11, attributes before) after a Conv -> a clamp of the conv."""
    x = ins[0]
    if not isinstance(x, PendingConv):
        raise ModelError("Clip is supported only between a Conv and its QuantizeLinear", node=node_name(node),
                         hint="place Clip (ReLU6) right after the Conv, before its QuantizeLinear")
    if len(ins) > 1:
        a = _bound(node, ins[1], "min")
        b = _bound(node, ins[2], "max") if len(ins) > 2 else None
    else:
        a, b = attr(node, "min"), attr(node, "max")
        a = float(np.float32(a)) if a is not None else None
        b = float(np.float32(b)) if b is not None else None
    _carry_shape(node, st)
    return replace(x, bounds=x.bounds + ((a, b),))


# --- pools ----------------------------------------------------------------------------------------------------


def _pool_of(node, t: Tensor, mode: str, kernel, strides, pads) -> PendingPool:
    order = t.source_order
    c = t.channels
    if len(t.shape) == 3:
        h, w = t.shape[:2]
        ho = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
        wo = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
        ir_shape = (ho, wo, c)
    else:
        n = t.shape[0]
        ir_shape = ((n + pads[1] + pads[3] - kernel[1]) // strides[1] + 1, c)
    return PendingPool(node_name(node), t.name, mode, tuple(kernel), tuple(strides), tuple(pads), ir_shape, order)


def window_pool(node, ins, st):
    """MaxPool / AveragePool over a quantized map -> PendingPool."""
    what = node.op_type
    if len(node.output) > 1 and node.output[1]:
        raise ModelError("MaxPool's indices output is not supported", node=node_name(node),
                         hint="export the pool without indices")
    t, shape = _map_input(node, ins[0], node.input[0], st, what)
    ks = attr(node, "kernel_shape")
    if not ks or len(ks) != len(shape) - 1:
        raise ModelError(f"{what} needs a kernel_shape of {len(shape) - 1} values", node=node_name(node))
    kernel = [int(k) for k in ks]
    strides, begins, ends, out = _window(node, shape[1:], kernel, what)
    if any(b >= k or e >= k for b, e, k in zip(begins, ends, kernel)):
        raise ModelError(f"{what} pads {begins + ends} must be smaller than the window {kernel}", node=node_name(node))
    k2, s2, p2 = _ir_window(kernel, strides, begins, ends)
    mode = "max" if what == "MaxPool" else "avg"
    if mode == "avg" and any(p2):
        if not attr(node, "count_include_pad", 0):
            raise ModelError("AveragePool with padding and count_include_pad=0 divides by a window size that "
                             "changes at the borders, which is not supported", node=node_name(node),
                             hint=f"use count_include_pad=1, or no padding; {_LATER}")
        t = _zero_point_free(node, t, st)
    st.shapes[node.output[0]] = (shape[0], *out)
    return _pool_of(node, t, mode, k2, s2, p2)


def _global(node, t: Tensor, mode: str, out_shape, st) -> PendingPool:
    spatial = t.shape[:-1]
    kernel = tuple(spatial) if len(spatial) == 2 else (1, spatial[0])
    st.shapes[node.output[0]] = tuple(out_shape)
    return _pool_of(node, t, mode, kernel, (1, 1), (0, 0, 0, 0))


def global_pool(node, ins, st):
    """GlobalAveragePool / GlobalMaxPool -> PendingPool with the map's size as its window."""
    what = node.op_type
    t, shape = _map_input(node, ins[0], node.input[0], st, what, exact_view=False)
    return _global(node, t, "max" if what == "GlobalMaxPool" else "avg", (shape[0],) + (1,) * (len(shape) - 1), st)


def reduce_mean(node, ins, st):
    """ReduceMean over every spatial axis of a map (keepdims or not; axes an attribute, or an input from opset
    18; negative axes too): a global average pool."""
    q = _qdq()
    t, shape = _map_input(node, ins[0], node.input[0], st, "ReduceMean", exact_view=False)
    rank = len(shape) + 1
    if len(ins) > 1 and ins[1] is not None:
        if not isinstance(ins[1], q.Const):
            raise ModelError("ReduceMean's axes must be a constant", node=node_name(node))
        axes = [int(a) for a in np.asarray(ins[1].values).reshape(-1)]
    else:
        axes = [int(a) for a in (attr(node, "axes") or [])]
    if not axes and attr(node, "noop_with_empty_axes", 0):
        raise ModelError("ReduceMean with no axes and noop_with_empty_axes=1 is an identity", node=node_name(node),
                         hint="remove the node")
    axes = sorted({a + rank if a < 0 else a for a in axes}) if axes else list(range(rank))
    spatial = list(range(2, rank))
    if axes != spatial:
        raise ModelError(f"ReduceMean over axes {axes} of a [N, {', '.join(map(str, shape))}] map; only the mean "
                         f"over all spatial axes {spatial} (a global average pool) is supported", node=node_name(node),
                         hint="average over every spatial axis (AdaptiveAvgPool to 1), keeping the batch and channels")
    keep = int(attr(node, "keepdims", 1))
    out_shape = (shape[0],) + ((1,) * (len(shape) - 1) if keep else ())
    return _global(node, t, "avg", out_shape, st)


def _finish_pool(node, pending: PendingPool, qp, st):
    q = _qdq()
    name = node.output[0]
    x = st.tensors[pending.x]
    if pending.mode == "max":
        same = (qp.scale == x.real_scale and qp.zero_point == x.zero_point and qp.bits == x.type.bits
                and qp.signed == x.type.signed)
        if not same:
            raise ModelError(f"a max pool's input has scale {q._describe(x.real_scale, x.zero_point)} and its "
                             f"QuantizeLinear {q._describe(qp.scale, qp.zero_point)}", node=node_name(node),
                             hint="quantize a max pool's output with its input's scale, zero point and type (as "
                                  "onnxruntime's quantizer does)")
        st.tensors[name] = replace(x, name=name, shape=pending.shape)
        st.ops.append(pool_op(pending.node, pending.x, name, "max", kernel=pending.kernel, strides=pending.strides,
                              pads=pending.pads))
        return q.Quantized(name)
    out = _map_tensor(qp, name, pending.shape, pending.order)
    st.tensors[name] = out
    n = int(np.prod(pending.kernel))
    pow2_window = n & (n - 1) == 0
    if x.scale is None and out.scale is None and pow2_window:
        multiplier, shift = 1, x.type.frac - out.type.frac + n.bit_length() - 1
    else:
        multiplier, shift = choose_multiplier(x.real_scale / (n * out.real_scale))
    st.ops.append(pool_op(pending.node, pending.x, name, "avg", kernel=pending.kernel, strides=pending.strides,
                          pads=pending.pads, shift=shift, multiplier=multiplier, bias=-n * int(x.zero_point)))
    return q.Quantized(name)


# --- views ----------------------------------------------------------------------------------------------------


def _axes(node, ins, what: str) -> list[int] | None:
    q = _qdq()
    if len(ins) > 1 and ins[1] is not None:
        if not isinstance(ins[1], q.Const):
            raise ModelError(f"{what}'s axes must be a constant", node=node_name(node))
        return [int(a) for a in np.asarray(ins[1].values).reshape(-1)]
    v = attr(node, "axes")
    return [int(a) for a in v] if v is not None else None


def _view_shape(node, ins, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A sample's shape after a view node of a sample of `shape` (the batch axis stays first)."""
    q = _qdq()
    op = node.op_type
    features = math.prod(shape)
    rank = len(shape) + 1
    if op == "Identity":
        return shape
    if op == "Flatten":
        axis = int(attr(node, "axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis == 0:
            raise ModelError("Flatten with axis=0 merges the batch into the features", node=node_name(node),
                             hint="use axis=1")
        return (features,) if axis == 1 else (math.prod(shape[:axis - 1]), math.prod(shape[axis - 1:]))
    if op == "Reshape":
        if len(ins) < 2 or not isinstance(ins[1], q.Const):
            raise ModelError("Reshape needs a constant shape", node=node_name(node))
        dims = [int(v) for v in np.asarray(ins[1].values).reshape(-1)]
        keep_zero = bool(attr(node, "allowzero", 0))
        per = []
        for i, v in enumerate(dims[1:], start=1):
            if v == 0 and not keep_zero:
                if i - 1 >= len(shape):
                    raise ModelError(f"Reshape to {dims} copies an axis the input lacks", node=node_name(node))
                v = shape[i - 1]
            per.append(v)
        if not dims or dims[0] == 0 and keep_zero or any(v < -1 for v in dims) or per.count(-1) > 1 or (
                dims[0] == -1 and -1 in per):
            raise ModelError(f"Reshape to {dims} does not keep the batch as the first axis", node=node_name(node),
                             hint="reshape to [-1, features] or [batch, ...]")
        if -1 in per:
            known = math.prod(v for v in per if v != -1)
            if known == 0 or features % known:
                raise ModelError(f"Reshape to {dims} does not divide {features} values a sample", node=node_name(node))
            per[per.index(-1)] = features // known
        if math.prod(per) != features:
            raise ModelError(f"Reshape to {dims} changes the {features} values of a [N, {', '.join(map(str, shape))}] "
                             "sample", node=node_name(node), hint="keep the batch first and the values a sample")
        return tuple(per)
    if op == "Squeeze":
        axes = _axes(node, ins, op)
        if axes is None:
            return tuple(v for v in shape if v != 1)
        axes = {a + rank if a < 0 else a for a in axes}
        if 0 in axes or any(not 1 <= a < rank or shape[a - 1] != 1 for a in axes):
            raise ModelError(f"Squeeze of axes {sorted(axes)} of [N, {', '.join(map(str, shape))}]",
                             node=node_name(node), hint="squeeze axes of size 1 after the batch")
        return tuple(v for i, v in enumerate(shape, start=1) if i not in axes)
    if op == "Unsqueeze":
        axes = _axes(node, ins, op)
        out_rank = rank + len(axes or [])
        axes = {a + out_rank if a < 0 else a for a in (axes or [])}
        if not axes or 0 in axes or any(not 0 < a < out_rank for a in axes):
            raise ModelError(f"Unsqueeze of axes {sorted(axes)} of [N, {', '.join(map(str, shape))}]",
                             node=node_name(node), hint="insert axes after the batch")
        rest = iter(shape)
        return tuple(1 if i in axes else next(rest) for i in range(1, out_rank))
    raise ModelError(f"{op} is not a view", node=node_name(node))


def view(node, ins, st, base):
    """A view: the meaning stays, the ONNX shape changes (tracked where known). Identity, Flatten and
    Reshape of anything but a feature map are base's first (onnx_qdq._view: [batch, features] kept)."""
    x = ins[0]
    is_map = x is not None and _is_map_value(x, st)
    out = x if is_map or base is None else base(node, ins, st)
    shape = onnx_shape(node.input[0], x, st) if x is not None else None
    if shape is not None:
        st.shapes[node.output[0]] = _view_shape(node, ins, shape)
    elif is_map:
        raise ModelError(f"{node.op_type} of a tensor of unknown shape", node=node_name(node))
    return out


# --- wrapped rules --------------------------------------------------------------------------------------------


def quantize(node, ins, st, base):
    q = _qdq()
    x = ins[0]
    if isinstance(x, (PendingConv, PendingPool, q.FloatInput, q.Dequantized)):
        qp = q._qparams(node, ins)
        if qp.bits not in (8, 16) or (qp.bits == 16 and not qp.signed):
            raise ModelError(f"activations of {qp.bits} bits ({'signed' if qp.signed else 'unsigned'}) are not "
                             "supported", node=node_name(node), hint="quantize activations to int8, uint8 or int16")
        if isinstance(x, PendingConv):
            out = _finish_conv(node, x, qp, st)
        elif isinstance(x, PendingPool):
            out = _finish_pool(node, x, qp, st)
        elif isinstance(x, q.FloatInput):
            out = base(node, ins, st)
            name = out.tensor
            if _is_map(["N", *x.dims]):
                # The input map in the model's own layout, whatever view of it is quantized here.
                st.tensors[name] = _map_tensor(qp, name, *_map_layout(x.dims))
            elif len(x.dims) in (2, 3) and x.dims[0] == 1:
                st.promotable[name] = tuple(x.dims)  # [1, F] or [1, 1, F]: a one-channel map, if read as one
        else:
            t = st.tensors[x.tensor]
            same = (qp.scale == t.real_scale and qp.zero_point == t.zero_point and qp.bits == t.type.bits
                    and qp.signed == t.type.signed)
            if not same:
                return base(node, ins, st)
            # A dequantized activation (or a view of it) quantized again with its own scale and zero point:
            # the same integers ((q - zp) * s / s rounds back to q - zp in float32 below 2**22).
            out = q.Quantized(x.tensor)
        shape = onnx_shape(node.input[0], x, st)
        if shape is not None and (not isinstance(out, q.Quantized) or shape != st.tensors[out.tensor].source_shape):
            st.shapes[node.output[0]] = shape
        return out
    out = base(node, ins, st)
    _carry_shape(node, st)
    return out


def dequantize(node, ins, st, base):
    out = base(node, ins, st)
    _carry_shape(node, st)
    return out


def relu(node, ins, st, base):
    x = ins[0]
    if isinstance(x, PendingConv):
        _carry_shape(node, st)
        return replace(x, bounds=x.bounds + ((0.0, None),))
    out = base(node, ins, st)
    _carry_shape(node, st)
    return out


def add(node, ins, st, base):
    """Add of two feature maps: the residual rule (onnx_add_rule) when both are the same map shape; a map
    plus a constant is refused (the bias layer is per feature of a flat activation)."""
    q = _qdq()
    maps = [v for v in ins if v is not None and _is_map_value(v, st)]
    if not maps:
        return base(node, ins, st)
    if len(ins) == 2 and all(isinstance(v, q.Dequantized) for v in ins):
        shapes = [onnx_shape(n, v, st) for n, v in zip(node.input, ins)]
        if shapes[0] != shapes[1]:
            raise ModelError(f"adds feature maps of shapes {list(shapes[0])} and {list(shapes[1])}",
                             node=node_name(node), hint="broadcasting is not supported: add maps of the same shape")
        out = base(node, ins, st)
        st.shapes[node.output[0]] = shapes[0]
        return out
    if any(isinstance(v, q.Const) for v in ins):
        raise ModelError("adds a constant to a feature map, which is not supported", node=node_name(node),
                         hint=f"fold the constant into the Conv's bias before export; {_LATER}")
    return base(node, ins, st)


def dense(node, ins, st, base):
    """Gemm / MatMul: base's rule; when it reads a feature map (flattened), the weight's rows are permuted from
    the source's flatten order (C, H, W) to the compiler's (H, W, C), and the dense op reads the map."""
    q = _qdq()
    x = ins[0]
    if not (isinstance(x, q.Dequantized) and len(st.tensors[x.tensor].shape) > 1):
        return base(node, ins, st)
    t = st.tensors[x.tensor]
    shape = onnx_shape(node.input[0], x, st)
    if any(v != 1 for v in shape[:-1]):
        raise ModelError(f"{node.op_type} reads '{node.input[0]}', a feature map {list(shape or ())}, not a flat "
                         "[batch, features] activation", node=node_name(node),
                         hint="Flatten (or Reshape to [-1, features]) the map before the dense layer")
    pending = base(node, ins, st)
    # Row j of the compiler's weight is the source row of the feature the compiler holds at position j.
    rows = t.from_source(np.arange(t.features)[None, :])[0]
    return replace(pending, weight=pending.weight[rows])


# --- ops not supported yet ------------------------------------------------------------------------------------


REFUSED = {
    "BatchNormalization": ("BatchNormalization is not supported",
                           "fold it into the preceding Conv before quantizing (torch.onnx.export of a module in "
                           f"eval mode folds it); {_LATER}"),
    "Concat": ("Concat is not supported yet", f"{_LATER}; until then keep the branches apart or use an Add"),
    "Transpose": ("Transpose is not supported: it changes the layout of the activation",
                  f"export without the transpose (keep NCHW); {_LATER}"),
    "Pad": ("Pad is not supported as a node of its own", "put the padding in the Conv's or pool's pads attribute; "
                                                          f"{_LATER}"),
    "ConvTranspose": ("ConvTranspose is not supported", _LATER),
    "Resize": ("Resize is not supported", _LATER),
    "Upsample": ("Upsample is not supported", _LATER),
    "LpPool": ("LpPool is not supported", f"use MaxPool or AveragePool; {_LATER}"),
}


def _refuse(node, ins, st):
    reason, hint = REFUSED[node.op_type]
    raise ModelError(reason, node=node_name(node), hint=hint)


def rules(base: dict) -> dict:
    """base's rules extended with the feature-map rules; new rules for Conv, pools, Clip, views and refusals."""
    def wrap(rule, fallback):
        return lambda node, ins, st: rule(node, ins, st, fallback)

    out = {
        "QuantizeLinear": wrap(quantize, base["QuantizeLinear"]),
        "DequantizeLinear": wrap(dequantize, base["DequantizeLinear"]),
        "Relu": wrap(relu, base["Relu"]),
        "Add": wrap(add, base["Add"]),
        "Gemm": wrap(dense, base["Gemm"]),
        "MatMul": wrap(dense, base["MatMul"]),
        "Conv": conv,
        "Clip": clip,
        "MaxPool": window_pool,
        "AveragePool": window_pool,
        "GlobalMaxPool": global_pool,
        "GlobalAveragePool": global_pool,
        "ReduceMean": reduce_mean,
    }
    for op in ("Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"):
        out[op] = wrap(view, base.get(op))
    out.update({op: _refuse for op in REFUSED})
    return out
