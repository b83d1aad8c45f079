"""Feature maps in the QONNX frontend: Conv (1-D and 2-D, group 1 or depthwise), MaxPool, AveragePool,
GlobalAveragePool / GlobalMaxPool, BatchNormalization, and the views that flatten a map into a Gemm / MatMul.

The QONNX frontend (aieflow.frontends.qonnx) visits the nodes; this module holds the rules of the nodes that
work on maps and the ends of the layers they start. A graph input [N, C, H, W] becomes a map of shape (H, W, C)
with source_order (1, 2, 0), an input [N, C, L] one of shape (L, C) with source_order (1, 0): the compiler
works channels last, the reference (qonnx's executor) and the comparison stay in the source's layout.

What each ONNX construct becomes (every op is named after the node that starts it):

  Conv (Quant'd weights, bias through a Quant or as floats on the accumulator grid), optional Relu, Quant
      a conv op: weights [KH, KW, C, CO] (depthwise [KH, KW, 1, C]), the bias on the accumulator grid (less
      input zero point x the window's weight sums), the Quant's scale as multiplier / shift and its zero
      point and rounding mode as in a dense layer. A padded Conv whose input has a zero point reads its
      padding as raw 0, so the input is first moved to zero point 0 (a requant op '<node>_zp0' into the
      narrowest signed type that holds q - zero point; the reference computes it too).
  Conv -> BatchNormalization (-> Relu) -> Quant
      BN is the per-channel affine y = a_c v + b_c on the conv's real output v, with a_c = gamma / sqrt(var +
      eps) and b_c = beta - mean a_c computed in float32 as onnxruntime computes them. Exact when every a_c
      is a small integer multiple f_c of one common scale (powers of two apart, of either sign, or zero)
      and b_c lies on a grid 2**-k of the folded accumulator: then
        (1) one conv op with weights f_c 2**k W and bias f_c 2**k bias + beta_c, when those fit 16-bit
            weights and a 32-bit accumulator, else
        (2) the conv op into an exact int16 intermediate (f_c x the sums, named after the ONNX value of the
            sums and bias, which the reference reads back) and a requant op: intermediate x 2**k + beta_c
            (the per-channel value repeated at every pixel), times the multiplier, shifted into the Quant's
            type.
      A bias b_c that needs a finer grid than either form can hold is rounded to the finest that fits (with
      a warning; the exactness measurement reports what that changes); per-channel scales that are not
      small integer multiples of one scale are refused (a trained BatchNorm's usually are not: fold it, or
      round it first, as examples.brevitas.snap_batchnorm does).
  Quant / Relu / BatchNormalization / Trunc of a quantized map (a requantization)
      a requant op (bias per feature: the zero point and the BN offset repeated over the pixels); per-channel
      BN scales of a map that a requant cannot apply become a 1x1 depthwise conv op. A Quant that only
      declares a map wider than its values already are is kept (a requant op), so that a residual Add,
      which takes full 8- or 16-bit maps, sees the declared type. (BatchNormalization of a [batch, features]
      activation is a requant op too, when one scale serves every feature.)
  MaxPool / GlobalMaxPool    a max pool op: the input's type, scale and zero point (padding never wins).
  AveragePool / GlobalAveragePool -> Quant
      an avg pool op: requantize(window sum - window x input zero point), the multiplier and shift the ratio
      input scale / (window x output scale). Exact for a window of a power-of-two count and power-of-two
      scales; otherwise as close as a 31-bit multiplier gets (measured).
  AveragePool -> Trunc (Brevitas' TruncAvgPool2d export)
      an avg pool op with shift log2(trunc scale) and the Trunc's rounding, as qonnx's Trunc computes it:
      the Trunc's input scale is the pool's input scale over the window, so the integers it rounds are the
      window sums.
  Flatten (axis 1) / Reshape to [N, -1] of a map, then Gemm / MatMul
      a dense op on the map (its features in the compiler's (H, W, C) order): the weight rows are permuted
      from the source's (C, H, W) flatten order.
  Add of two quantized maps -> Quant    a residual add op (as for activations).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from ..errors import ModelError
from ..ir import Tensor
from ..numerics import FixedType, Saturation, choose_multiplier
from ..ops.conv import conv_op, out_size
from ..ops.pool import pool_op
from ..ops.requant import requant_op
from .onnx_nodes import attr, node_name

MAP_OPS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
MAX_MAP_VALUES = 1 << 22  # values per sample of a graph input map, bounded before anything is allocated
ACC_LIMIT = (1 << 31) - 1  # a folded conv's sums stay within a 32-bit accumulator (and the multiplier's int32)
INT16_MAX = (1 << 15) - 1
MAX_BIAS_BITS = 30  # the finest bias grid searched: 2**-30 of the folded accumulator


# --- what an ONNX tensor means (beyond qonnx.py's) -------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """BatchNormalization's per-channel y = scale * v + bias (float32 values, held as float64)."""

    node: str
    scale: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class PendingConv:
    """Conv (+ bias) (-> BatchNormalization) (-> Relu) waiting for the Quant that gives its output type."""

    node: str
    out: str  # the ONNX value of the sums and bias (names the intermediate of a folded BN, and is its reference)
    x: str  # IR tensor (zero point 0 when padded)
    weight: np.ndarray  # [KH, KW, C | 1, CO] integers
    weight_scale: float
    weight_bits: int
    bias: object  # qonnx.Const or None
    kernel: tuple
    strides: tuple
    pads: tuple
    depthwise: bool
    out_shape: tuple  # the output map's per-sample shape
    relu: bool = False
    affine: Affine | None = None


@dataclass(frozen=True)
class PendingMap:
    """An elementwise requantization of a map (a Quant, Relu, BatchNormalization or Trunc of an activation)."""

    node: str
    x: str
    relu: bool = False
    affine: Affine | None = None


@dataclass(frozen=True)
class PendingPool:
    """AveragePool / GlobalAveragePool waiting for its Quant or Trunc."""

    node: str
    x: str
    kernel: tuple
    strides: tuple
    pads: tuple
    out_shape: tuple

    @property
    def count(self) -> int:
        return int(self.kernel[0]) * int(self.kernel[1])


# --- geometry ---------------------------------------------------------------------------------------------------


def hwc(shape) -> tuple[int, int, int]:
    """(H, W, C) of a map's per-sample shape ((L, C) is one row)."""
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    return 1, int(shape[0]), int(shape[1])


def like(shape, h: int, w: int, c: int) -> tuple:
    """A shape of the same rank as `shape` with these sizes."""
    return (h, w, c) if len(shape) == 3 else (w, c)


def is_map(t: Tensor) -> bool:
    return len(t.shape) > 1


def takes_map(graph, known) -> bool:
    """Whether the model's input is a feature map: it has Conv or pool nodes, or an input of more than two
    dimensions that is not [batch, 1, ..., features] (which the MLP rules read as [batch, features])."""
    if any(n.op_type in MAP_OPS for n in graph.node):
        return True
    for vi in graph.input:
        if vi.name in known:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if len(dims) in (3, 4) and any(d is None or d > 1 for d in dims[1:-1]):
            return True
    return False


def map_input(graph, known) -> q.FloatInput:
    """The one float32 [N, C, H, W] or [N, C, L] graph input of a model with Conv or pool nodes."""
    found = []
    for vi in graph.input:
        if vi.name in known:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if len(dims) not in (3, 4) or any(d is None or d < 1 for d in dims[1:]):
            raise ModelError(f"graph input '{vi.name}' has shape {dims}; a model with Conv or pool nodes takes "
                             "[batch, channels, height, width] or [batch, channels, length]",
                             hint="export with a fixed image size (the batch may stay symbolic)")
        if math.prod(dims[1:]) > MAX_MAP_VALUES:
            raise ModelError(f"graph input '{vi.name}' declares shape {dims}",
                             hint=f"at most {MAX_MAP_VALUES} values per sample")
        if vi.type.tensor_type.elem_type != 1:
            raise ModelError(f"graph input '{vi.name}' must be float32 (a Quant node quantizes it)")
        found.append((vi.name, dims))
    if len(found) != 1:
        raise ModelError(f"the model has {len(found)} inputs; aieflow supports one")
    name, dims = found[0]
    c = dims[1]
    if len(dims) == 4:
        shape, order = (dims[2], dims[3], c), (1, 2, 0)
    else:
        shape, order = (dims[2], c), (1, 0)
    return q.FloatInput(name, math.prod(shape), tuple(shape), order)


def _ints(v, n: int, what: str, node) -> list[int]:
    a = [int(x) for x in v]
    if len(a) != n:
        raise ModelError(f"{what} {a} does not have {n} values", node=node_name(node))
    return a


def window(node, in_hw: tuple[int, int], kernel: list[int], dims: int, pool: bool):
    """(kernel (KH, KW), strides (SH, SW), pads (top, left, bottom, right)) of a Conv or pool node, in the
    2-D form (a 1-D node is one row), after auto_pad, with the attributes no kernel has refused."""
    nm = node_name(node)
    kernel = _ints(kernel, dims, "kernel_shape", node)
    strides = _ints(attr(node, "strides", [1] * dims), dims, "strides", node)
    dil = _ints(attr(node, "dilations", [1] * dims), dims, "dilations", node)
    if any(d != 1 for d in dil):
        raise ModelError(f"dilations {dil} are not supported", node=nm, hint="use dilation 1")
    if any(s < 1 for s in strides) or any(k < 1 for k in kernel):
        raise ModelError(f"kernel {kernel} and strides {strides} must be positive", node=nm)
    spatial = list(in_hw[2 - dims:])
    auto = str(attr(node, "auto_pad", "NOTSET")).upper()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s in zip(spatial, kernel, strides):
            total = max(0, (-(-size // s) - 1) * s + k - size)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        pads = begin + end
    elif auto == "VALID":
        pads = [0] * (2 * dims)
    elif auto == "NOTSET":
        pads = _ints(attr(node, "pads", [0] * (2 * dims)), 2 * dims, "pads", node)
    else:
        raise ModelError(f"auto_pad {auto} is not supported", node=nm,
                         hint="use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    if any(p < 0 for p in pads):
        raise ModelError(f"negative pads {pads} are not supported", node=nm)
    if any(pads[i] >= kernel[i] or pads[dims + i] >= kernel[i] for i in range(dims)):
        raise ModelError(f"pads {pads} reach a whole window ({kernel}) past the map", node=nm,
                         hint="pad each side by less than the kernel size")
    if pool and int(attr(node, "ceil_mode", 0)):
        for i, (size, k, s) in enumerate(zip(spatial, kernel, strides)):
            span = size + pads[i] + pads[dims + i] - k
            if span % s:
                raise ModelError("ceil_mode=1 adds a partial window at the end of the map", node=nm,
                                 hint="use ceil_mode=0, or a map size the windows tile exactly")
    if dims == 1:
        return (1, kernel[0]), (1, strides[0]), (0, pads[0], 0, pads[1])
    return tuple(kernel), tuple(strides), (pads[0], pads[1], pads[2], pads[3])


def _out_hw(node, in_hw, kernel, strides, pads) -> tuple[int, int]:
    ho = out_size(in_hw[0], kernel[0], strides[0], pads[0], pads[2])
    wo = out_size(in_hw[1], kernel[1], strides[1], pads[1], pads[3])
    if ho < 1 or wo < 1:
        raise ModelError(f"a {kernel[0]}x{kernel[1]} window does not fit the {in_hw[0]}x{in_hw[1]} map",
                         node=node_name(node))
    return ho, wo


def _map_act(node, x, st, what: str) -> Tensor:
    """The IR tensor of a quantized map input, or one clear refusal."""
    if isinstance(x, q.Act):
        t = st.tensors[x.tensor]
        if is_map(t):
            return t
        raise ModelError(f"{what} of a [batch, features] activation", node=node_name(node),
                         hint="feed it a feature map [batch, channels, height, width] or [batch, channels, length]")
    if isinstance(x, q.FloatInput):
        raise ModelError(f"the input of {what} is not quantized", node=node_name(node),
                         hint="quantize the graph input with a Quant node (Brevitas: QuantIdentity)")
    if isinstance(x, (PendingConv, PendingMap, PendingPool, q.PendingAdd, q.PendingDense)):
        raise ModelError(f"the input of {what} is a layer's output that was never quantized", node=node_name(node),
                         hint="put a Quant node before it (Brevitas: an activation or output quantizer)")
    raise ModelError(f"the input of {what} must be a quantized feature map, not {type(x).__name__}",
                     node=node_name(node))


def zero_point_free(node, t: Tensor, st) -> Tensor:
    """A requant op moving map t to zero point 0 (same scale, a signed type wide enough), so that padding
    reads the real 0; its values are the reference's too (the same real values on the same grid)."""
    lo, hi = t.type.qmin - t.zero_point, t.type.qmax - t.zero_point
    bits = q._signed_bits(np.array([lo, hi]))
    if bits > 16:
        raise ModelError(f"the padded input '{t.name}' has a zero point; without it its values need {bits} bits",
                         node=node_name(node), hint="quantize the input of a padded layer with zero point 0")
    name = f"{t.name}_zp0"
    while name in st.tensors:
        name += "_"
    out = FixedType(bits, True, t.type.frac, t.type.rounding, Saturation.SATURATE)
    st.tensors[name] = Tensor(name, t.shape, out, t.scale, 0, t.source_order)
    st.ops.append(requant_op(_op_name(f"{node_name(node)}_zp0", st), t.name, name,
                             np.full(t.features, -t.zero_point, dtype=np.int64), 0))
    st.sources[name] = (t.name, None)
    return st.tensors[name]


def _op_name(name: str, st) -> str:
    taken = {op.name for op in st.ops}
    base, i = name, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    return name


# --- rules ------------------------------------------------------------------------------------------------------


def conv(node, ins, st):
    nm = node_name(node)
    if len(ins) < 2 or ins[1] is None:
        raise ModelError("Conv needs an input and a weight", node=nm)
    t = _map_act(node, ins[0], st, "Conv")
    w = ins[1]
    if not isinstance(w, q.Const) or w.q is None:
        raise ModelError("the weight must be a constant quantized by a Quant or BipolarQuant node", node=nm,
                         hint="quantize the weights (Brevitas: QuantConv2d / QuantConv1d with a weight quantizer)")
    dims = len(t.shape) - 1
    wq = np.asarray(w.q, dtype=np.int64)
    if wq.ndim != dims + 2:
        raise ModelError(f"the weight has shape {list(wq.shape)}; a {dims}-D Conv takes [out, in / group, "
                         f"{', '.join(['k'] * dims)}]", node=nm)
    if w.bits > 16:
        raise ModelError(f"weights need {w.bits} signed bits; at most 16 are supported", node=nm,
                         hint="quantize weights to 16 bits or fewer")
    h, wd, c = hwc(t.shape)
    co = wq.shape[0]
    group = int(attr(node, "group", 1))
    depthwise = False
    if group == 1:
        if wq.shape[1] != c:
            raise ModelError(f"the weight takes {wq.shape[1]} input channels but the input has {c}", node=nm)
    elif group == c and co == c and wq.shape[1] == 1:
        depthwise = True
    else:
        raise ModelError(f"a grouped convolution (group={group}, {c} input and {co} output channels) is not "
                         "supported", node=nm, hint="use group=1, or a depthwise convolution (group = input "
                                                    "channels = output channels)")
    ks = attr(node, "kernel_shape")
    if ks is not None and [int(k) for k in ks] != list(wq.shape[2:]):
        raise ModelError(f"kernel_shape {list(ks)} differs from the weight's {list(wq.shape[2:])}", node=nm)
    kernel, strides, pads = window(node, (h, wd), list(wq.shape[2:]), dims, pool=False)
    if any(s not in (1, 2) for s in strides):
        raise ModelError(f"stride {list(strides[2 - dims:])}: the convolution kernels take strides 1 and 2",
                         node=nm, hint="use stride 1 or 2 (or a stride-1 Conv and a pool)")
    ho, wo = _out_hw(node, (h, wd), kernel, strides, pads)
    weight = wq if dims == 2 else wq[:, :, None, :]
    weight = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO ([KH, KW, 1, C] depthwise)
    if t.zero_point and any(pads):
        t = zero_point_free(node, t, st)
    pc = PendingConv(nm, node.output[0], t.name, np.ascontiguousarray(weight), float(w.scale), w.bits, None,
                     kernel, strides, pads, depthwise, like(t.shape, ho, wo, co))
    if len(ins) > 2 and ins[2] is not None:
        pc = conv_bias(node, pc, ins[2])
    return pc


def conv_bias(node, pc: PendingConv, b) -> PendingConv:
    co = pc.weight.shape[-1]
    if not isinstance(b, q.Const):
        raise ModelError("the bias must be a constant", node=node_name(node))
    if pc.bias is not None or pc.relu or pc.affine is not None:
        raise ModelError("a second bias after Conv (or a bias after Relu / BatchNormalization) is not supported",
                         node=node_name(node))
    values = np.asarray(b.values, dtype=np.float64)
    if values.size not in (1, co) or (values.size > 1 and max(values.shape) != co):
        raise ModelError(f"the bias has shape {list(values.shape)} for {co} output channels", node=node_name(node))
    b = replace(b, values=values.reshape(-1), q=None if b.q is None else np.asarray(b.q).reshape(-1))
    return replace(pc, bias=b, out=node.output[0])  # the sums with their bias: the Conv's, or the Add's output


def _pool_common(node, ins, st, mode: str):
    nm = node_name(node)
    t = _map_act(node, ins[0], st, node.op_type)
    if len(node.output) > 1 and node.output[1]:
        raise ModelError("MaxPool's Indices output is not supported", node=nm)
    dims = len(t.shape) - 1
    h, wd, c = hwc(t.shape)
    if node.op_type.startswith("Global"):
        kernel, strides, pads = (h, wd), (1, 1), (0, 0, 0, 0)
    else:
        ks = attr(node, "kernel_shape")
        if ks is None:
            raise ModelError(f"{node.op_type} needs kernel_shape", node=nm)
        kernel, strides, pads = window(node, (h, wd), list(ks), dims, pool=True)
        if mode == "avg" and any(pads) and not int(attr(node, "count_include_pad", 0)):
            raise ModelError("an AveragePool over padding that does not count the padding (count_include_pad=0) "
                             "divides border windows by fewer values", node=nm,
                             hint="use count_include_pad=1, or pad the map with a Conv's padding instead")
    ho, wo = _out_hw(node, (h, wd), kernel, strides, pads)
    return t, kernel, strides, pads, like(t.shape, ho, wo, c)


def max_pool(node, ins, st):
    t, kernel, strides, pads, shape = _pool_common(node, ins, st, "max")
    name = node.output[0]
    st.tensors[name] = Tensor(name, shape, t.type, t.scale, t.zero_point, t.source_order)
    st.ops.append(pool_op(_op_name(node_name(node), st), t.name, name, "max", kernel=kernel, strides=strides,
                          pads=pads))
    return q.Act(name)


def avg_pool(node, ins, st):
    t, kernel, strides, pads, shape = _pool_common(node, ins, st, "avg")
    if t.zero_point and any(pads):
        t = zero_point_free(node, t, st)
    return PendingPool(node_name(node), t.name, kernel, strides, pads, shape)


def batch_norm(node, ins, st):
    nm = node_name(node)
    if len(ins) != 5 or any(not isinstance(v, q.Const) for v in ins[1:]):
        raise ModelError("BatchNormalization needs constant scale, bias, mean and variance", node=nm,
                         hint="export the model in eval mode (running statistics)")
    if int(attr(node, "training_mode", 0)):
        raise ModelError("BatchNormalization in training mode is not supported", node=nm,
                         hint="export the model in eval mode")
    if len(node.output) > 1 and any(node.output[1:]):
        raise ModelError("BatchNormalization's running-statistics outputs are not supported", node=nm)
    gamma, beta, mean, var = (np.asarray(v.values, dtype=np.float32).reshape(-1) for v in ins[1:])
    eps = np.float32(attr(node, "epsilon", 1e-5))
    # As onnxruntime computes it, in float32: 1 / sqrt(var + eps), times gamma; beta - mean * that.
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (np.float32(1) / np.sqrt(var + eps)) * gamma
        b = beta - mean * a
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ModelError("BatchNormalization's variance + epsilon is not positive", node=nm)
    affine = Affine(nm, a.astype(np.float64), b.astype(np.float64))
    x = ins[0]
    channels = None
    if isinstance(x, PendingConv):
        channels = x.weight.shape[-1]
    elif isinstance(x, q.Act):
        channels = st.tensors[x.tensor].channels
    elif isinstance(x, PendingMap):
        channels = st.tensors[x.x].channels
    if channels is not None and a.size != channels:
        raise ModelError(f"BatchNormalization has {a.size} channels; its input has {channels}", node=nm)
    if isinstance(x, (PendingConv, PendingMap)):
        if x.relu or x.affine is not None:
            raise ModelError(f"BatchNormalization after {'Relu' if x.relu else 'another BatchNormalization'} is "
                             "not supported", node=nm, hint="place one BatchNormalization between the Conv and its "
                                                            "Relu / Quant")
        return replace(x, affine=affine)
    if isinstance(x, q.Act):
        return PendingMap(nm, x.tensor, affine=affine)
    raise ModelError(f"BatchNormalization of {type(x).__name__} is not supported", node=nm,
                     hint="place it after a Conv or a quantized activation, before a Quant")


# --- the ends of the layers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """A BatchNormalization folded onto integer sums s_c (real value s_c * unit0):
        a_c * real + b_c = unit0 * 2**-k * (factors_c * 2**k * s_c + beta_c)."""

    factors: np.ndarray  # int64 per channel
    unit0: Fraction
    k: int
    beta: np.ndarray  # int64 per channel
    exact: bool  # beta is b_c exactly (else rounded to the grid)

    @property
    def unit(self) -> Fraction:
        return self.unit0 / (1 << self.k)


def _factors(affine: Affine, s_acc: Fraction, channels: int):
    """Candidates (factors, unit0) with a_c = factors_c * unit0 / s_acc exactly, smallest factors first."""
    if affine is None:
        return [(np.ones(channels, dtype=np.int64), s_acc)]
    a = [Fraction(float(v)) for v in affine.scale]
    nz = [v for v in a if v != 0]
    if not nz:
        return [(np.zeros(channels, dtype=np.int64), s_acc)]
    lsb = min(Fraction(1, v.denominator) for v in nz)  # every a_c is an integer multiple of lsb (dyadic)
    n = [int(v / lsb) for v in a]
    g_full = 0
    for v in n:
        g_full = math.gcd(g_full, abs(v))
    g_pow2 = g_full & -g_full
    out = []
    for g in dict.fromkeys((g_full, g_pow2)):
        f = np.array([v // g for v in n], dtype=object)
        if max(abs(int(v)) for v in f) > INT16_MAX:
            continue
        out.append((f.astype(np.int64), s_acc * lsb * g))
    if not out:
        worst = max(abs(v) for v in n) // g_full
        raise ModelError(f"BatchNormalization's per-channel scales gamma / sqrt(var + eps) are not small integer "
                         f"multiples of one scale (they need factors up to {worst})", node=affine.node,
                         hint="fold the BatchNormalization into the Conv before quantizing it (Brevitas: "
                              "brevitas.nn.utils.merge_bn(conv, bn), then drop the BatchNorm), or round its scales "
                              "to powers of two apart (aieflow.examples.brevitas.snap_batchnorm)")
    return out


def _exact_k(affine: Affine | None, unit0: Fraction) -> int | None:
    """The smallest k with every b_c / unit0 * 2**k an integer (k <= MAX_BIAS_BITS), else None."""
    if affine is None:
        return 0
    k = 0
    for v in affine.bias:
        d = (Fraction(float(v)) / unit0).denominator
        if d & (d - 1):
            return None
        k = max(k, d.bit_length() - 1)
    return k if k <= MAX_BIAS_BITS else None


def _fold(affine: Affine | None, factors: np.ndarray, unit0: Fraction, k: int, k_exact: int | None) -> Fold:
    """The bias on the grid 2**-k of unit0: exactly when k_exact <= k (then on 2**-k_exact), else rounded."""
    c = factors.shape[0]
    if affine is None:
        return Fold(factors, unit0, 0, np.zeros(c, dtype=np.int64), True)
    exact = k_exact is not None and k_exact <= k
    k = k_exact if exact else k
    beta = [Fraction(float(v)) / unit0 * (1 << k) for v in affine.bias]
    return Fold(factors, unit0, k, np.array([round(v) for v in beta], dtype=np.int64), exact)


def _real_scale(t: Tensor) -> Fraction:
    return Fraction(t.real_scale)


def _out_tensor(node, st, shape, out: FixedType, out_scale, zp: int, order) -> str:
    name = node.output[0]
    if name in st.tensors:
        raise ModelError(f"tensor '{name}' is written twice", node=node_name(node))
    st.tensors[name] = Tensor(name, tuple(shape), out, out_scale, zp, tuple(order))
    return name


def _multiplier(ratio: Fraction) -> tuple[int, int]:
    return choose_multiplier(float(ratio))


def _bound(weight: np.ndarray, bias: np.ndarray, x: FixedType) -> int:
    """Worst-case |sum| of a conv with these weights and bias on inputs of type x (Python ints: exact)."""
    col = np.abs(weight).reshape(-1, weight.shape[-1]).sum(axis=0)
    return max((int(c) * x.magnitude + abs(int(b)) for c, b in zip(col, np.asarray(bias).reshape(-1))), default=0)


def _pow2(r: Fraction) -> bool:
    return _frac_of(r) is not None


def finish_conv(node, pc: PendingConv, out: FixedType, out_scale, zp: int, st) -> q.Act:
    x = st.tensors[pc.x]
    co = pc.weight.shape[-1]
    s_acc = _real_scale(x) * Fraction(pc.weight_scale)
    w_frac = q._pow2_frac(pc.weight_scale)
    bias = q._bias_ints(pc.node, pc.bias, co, float(s_acc), exact=x.scale is None and w_frac is not None)
    weight = pc.weight.astype(np.int64)
    if x.zero_point:  # unpadded here: the zero point comes off the window sums
        bias = bias - np.int64(x.zero_point) * weight.sum(axis=(0, 1, 2))
    y_scale = _y_scale(out, out_scale)
    name = node.output[0]
    attrs = dict(kernel=pc.kernel, strides=pc.strides, pads=pc.pads, depthwise=pc.depthwise)
    if pc.affine is None:
        multiplier, shift = _multiplier(s_acc / y_scale)
        _out_tensor(node, st, pc.out_shape, out, out_scale, zp, x.source_order)
        wt = FixedType(pc.weight_bits, True, w_frac if w_frac is not None else 0)
        st.ops.append(conv_op(_op_name(pc.node, st), pc.x, name, weight, bias, wt, shift=shift,
                              multiplier=multiplier, relu=pc.relu, **attrs))
        return q.Act(name)
    plans = []  # (inexact, order, kind, fold, weights, bias)
    for factors, unit0 in _factors(pc.affine, s_acc, co):
        k_exact = _exact_k(pc.affine, unit0)
        # (1) all in the conv: weights factors_c 2**k W, on the finest grid that fits
        for k in range(MAX_BIAS_BITS, -1, -1):
            w1 = weight * (factors << k)
            if not _fits_conv(w1, x.type):
                continue
            fold = _fold(pc.affine, factors, unit0, k, k_exact)
            w1 = weight * (factors << fold.k)
            b1 = bias * (factors << fold.k) + fold.beta
            if _bound(w1, b1, x.type) <= ACC_LIMIT:
                plans.append((not fold.exact, 0, "conv", fold, w1, b1))
                break
        # (2) the conv into an exact int16 intermediate, then a requant op adds the bias on its finer grid
        w2, b2 = weight * factors, bias * factors
        if _fits_weights(w2) and _bound(w2, b2, x.type) <= INT16_MAX:
            limit = ((1 << 62) if _pow2(unit0 / y_scale) else (1 << 31)) - 1
            for k in range(MAX_BIAS_BITS, -1, -1):
                fold = _fold(pc.affine, factors, unit0, k, k_exact)
                if (INT16_MAX + 1 << fold.k) + int(np.max(np.abs(fold.beta), initial=0)) <= limit:
                    plans.append((not fold.exact, 1, "requant", fold, w2, b2))
                    break
    if not plans:
        raise ModelError(f"folding BatchNormalization '{pc.affine.node}' into Conv '{pc.node}' needs weights or "
                         "sums beyond 16-bit weights and a 32-bit accumulator", node=pc.node,
                         hint="use narrower weights or inputs, or fold the BatchNormalization before quantizing")
    plans.sort(key=lambda p: (p[0], p[1]))
    _, _, kind, fold, w, b = plans[0]
    _warn_inexact(pc.affine, fold)
    wt = FixedType(q._signed_bits(w), True, 0)
    if kind == "conv":
        multiplier, shift = _multiplier(fold.unit / y_scale)
        _out_tensor(node, st, pc.out_shape, out, out_scale, zp, x.source_order)
        st.ops.append(conv_op(_op_name(pc.node, st), pc.x, name, w, b, wt, shift=shift, multiplier=multiplier,
                              relu=pc.relu, **attrs))
        return q.Act(name)
    # The intermediate, named after the Conv's output: factors_c x the sums, exactly, on the scale unit0. The
    # reference's Conv output is s_acc x the sums, so factors_c x unit0 / s_acc of it is the intermediate's
    # real value.
    mid = pc.out if pc.out not in st.tensors else f"{pc.out}_sums"
    frac = _frac_of(fold.unit0)
    st.tensors[mid] = Tensor(mid, pc.out_shape, FixedType(16, True, frac if frac is not None else 0),
                             None if frac is not None else float(fold.unit0), 0, x.source_order)
    st.sources[mid] = (pc.out, fold.factors.astype(np.float64) * float(fold.unit0 / s_acc))
    st.ops.append(conv_op(_op_name(pc.node, st), pc.x, mid, w, b, wt, shift=0, **attrs))
    return _finish_requant(node, st.tensors[mid], fold, out, out_scale, zp, y_scale, pc.relu, st,
                           _op_name(pc.affine.node, st))


def _warn_inexact(affine: Affine | None, fold: Fold) -> None:
    if affine is not None and not fold.exact:
        warnings.warn(f"BatchNormalization '{affine.node}': its offsets beta - mean * gamma / sqrt(var + eps) are "
                      f"not on any grid the folded layer can hold; rounded to 2**-{fold.k} of its sums (whether "
                      "that changes an output is measured: design.exactness)", stacklevel=4)


def _y_scale(out: FixedType, out_scale) -> Fraction:
    return Fraction(out_scale) if out_scale is not None else Fraction(1) / (Fraction(2) ** out.frac)


def _frac_of(s: Fraction) -> int | None:
    if s.numerator == 1 and s.denominator & (s.denominator - 1) == 0:
        return s.denominator.bit_length() - 1
    if s.denominator == 1 and s.numerator & (s.numerator - 1) == 0:
        return -(s.numerator.bit_length() - 1)
    return None


def _fits_weights(w: np.ndarray) -> bool:
    return int(np.max(np.abs(w), initial=0)) <= INT16_MAX


def _fits_conv(w: np.ndarray, x: FixedType) -> bool:
    return _fits_weights(w) and _bound(w, np.zeros(w.shape[-1], dtype=np.int64), x) <= ACC_LIMIT


def _finish_requant(node, x: Tensor, fold: Fold, out: FixedType, out_scale, zp: int, y_scale: Fraction, relu: bool,
                    st, op_name: str) -> q.Act:
    """requant: x * 2**k + beta_c (x's zero point taken off), per pixel, into the output."""
    _, _, c = hwc(x.shape) if is_map(x) else (1, 1, x.features)
    pixels = x.features // c
    scale = 1 << fold.k
    bias = np.tile(fold.beta - np.int64(x.zero_point) * scale, pixels)
    multiplier, shift = _multiplier(fold.unit / y_scale)
    name = _out_tensor(node, st, x.shape, out, out_scale, zp, x.source_order)
    st.ops.append(requant_op(op_name, x.name, name, bias, shift, multiplier, relu, scale=scale))
    return q.Act(name)


def finish_map(node, pm: PendingMap, out: FixedType, out_scale, zp: int, st) -> q.Act:
    """A requantization of a map (or, under a BatchNormalization, of an activation): a requant op, or a 1x1
    depthwise conv op when a BatchNormalization scales the channels differently."""
    x = st.tensors[pm.x]
    c = x.channels
    y_scale = _y_scale(out, out_scale)
    cands = _factors(pm.affine, _real_scale(x), c)
    plans = []  # (inexact, order, kind, fold)
    for factors, unit0 in cands:
        k_exact = _exact_k(pm.affine, unit0)
        if np.all(factors == 1):
            limit = ((1 << 62) if _pow2(unit0 / y_scale) else (1 << 31)) - 1
            for k in range(MAX_BIAS_BITS, -1, -1):
                fold = _fold(pm.affine, factors, unit0, k, k_exact)
                bias = fold.beta - np.int64(x.zero_point) * (1 << fold.k)
                if (x.type.magnitude << fold.k) + int(np.max(np.abs(bias), initial=0)) <= limit:
                    plans.append((not fold.exact, 0, "requant", fold))
                    break
        if is_map(x):
            for k in range(MAX_BIAS_BITS, -1, -1):
                if not _fits_conv((factors << k).reshape(1, 1, 1, c), x.type):
                    continue
                fold = _fold(pm.affine, factors, unit0, k, k_exact)
                w = (factors << fold.k).reshape(1, 1, 1, c)
                if _bound(w, fold.beta - np.int64(x.zero_point) * w.reshape(-1), x.type) <= ACC_LIMIT:
                    plans.append((not fold.exact, 1, "conv", fold))
                    break
    if not plans:
        hint = ("place the BatchNormalization after a Conv (folded into it), or fold it before quantizing"
                if not is_map(x) else "fold the BatchNormalization before quantizing")
        raise ModelError("this requantization's per-channel scales and offsets do not fit a requantization "
                         "(one scale for every feature) or a 1x1 depthwise convolution (16-bit weights)",
                         node=pm.node, hint=hint)
    plans.sort(key=lambda p: (p[0], p[1]))
    _, _, kind, fold = plans[0]
    _warn_inexact(pm.affine, fold)
    if kind == "requant":
        return _finish_requant(node, x, fold, out, out_scale, zp, y_scale, pm.relu, st, _op_name(pm.node, st))
    w = (fold.factors << fold.k).reshape(1, 1, 1, c)
    b = fold.beta - np.int64(x.zero_point) * w.reshape(-1)
    multiplier, shift = _multiplier(fold.unit / y_scale)
    name = _out_tensor(node, st, x.shape, out, out_scale, zp, x.source_order)
    st.ops.append(conv_op(_op_name(pm.node, st), x.name, name, w, b, FixedType(q._signed_bits(w), True, 0),
                          kernel=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0), shift=shift, multiplier=multiplier,
                          relu=pm.relu, depthwise=True))
    return q.Act(name)


def finish_pool(node, pp: PendingPool, out: FixedType, out_scale, zp: int, st) -> q.Act:
    """AveragePool -> Quant: requantize(window sum - window x zero point) by input scale / (window x output)."""
    x = st.tensors[pp.x]
    multiplier, shift = _multiplier(_real_scale(x) / (pp.count * _y_scale(out, out_scale)))
    name = _out_tensor(node, st, pp.out_shape, out, out_scale, zp, x.source_order)
    st.ops.append(pool_op(_op_name(pp.node, st), pp.x, name, "avg", kernel=pp.kernel, strides=pp.strides, pads=pp.pads,
                          shift=shift, multiplier=multiplier, bias=-pp.count * x.zero_point))
    return q.Act(name)


def trunc_pool(node, pp: PendingPool, scale: float, out: FixedType, out_scale, shift: int, st) -> q.Act:
    """AveragePool -> Trunc: the Trunc's input scale is the pool's input scale over the window, so the values
    it rounds are the window sums; shifted right by log2(trunc scale) with the Trunc's rounding."""
    x = st.tensors[pp.x]
    if x.zero_point:
        raise ModelError("Trunc after an AveragePool of an input with a zero point is not supported",
                         node=node_name(node), hint="use zero point 0")
    want = np.float32(x.real_scale) / np.float32(pp.count)
    if not math.isclose(scale, float(want), rel_tol=1e-6):
        raise ModelError(f"Trunc scale {scale!r} is not the pool input's scale over its {pp.count}-value window "
                         f"({float(want)!r})", node=node_name(node),
                         hint="give the Trunc after an AveragePool the scale of the window sums (as Brevitas' "
                              "TruncAvgPool2d exports it)")
    name = _out_tensor(node, st, pp.out_shape, out, out_scale, 0, x.source_order)
    st.ops.append(pool_op(_op_name(pp.node, st), pp.x, name, "avg", kernel=pp.kernel, strides=pp.strides, pads=pp.pads,
                          shift=shift, multiplier=1, bias=0))
    return q.Act(name)


def trunc_map(node, x: Tensor, out: FixedType, out_scale, shift: int, st) -> q.Act:
    """Trunc of a quantized map: a requant op shifting the integers."""
    name = _out_tensor(node, st, x.shape, out, out_scale, 0, x.source_order)
    st.ops.append(requant_op(_op_name(node_name(node), st), x.name, name, np.zeros(x.features, dtype=np.int64), shift))
    return q.Act(name)


# --- flattening a map into a dense layer ------------------------------------------------------------------------


def view(node, x, shape_values, st):
    """Flatten (axis 1) / Reshape to [N, -1] or [N, features] of a quantized map: the map, marked flat (its
    consumer's weights are permuted); Identity keeps it as it is."""
    nm = node_name(node)
    t = st.tensors[x.tensor]
    if node.op_type == "Identity":
        if node.input[0] in st.flat:
            st.flat.add(node.output[0])
        return x
    if node.op_type == "Flatten":
        if int(attr(node, "axis", 1)) != 1:
            raise ModelError(f"Flatten with axis={attr(node, 'axis')} of a feature map is not supported", node=nm,
                             hint="flatten everything but the batch (axis=1)")
    else:
        if shape_values is None:
            raise ModelError("Reshape needs a constant shape", node=nm)
        dims = [int(d) for d in np.asarray(shape_values).reshape(-1)]
        if len(dims) != 2 or dims[1] not in (-1, t.features) or dims[0] == 0:
            raise ModelError(f"Reshape of a {list(t.source_shape)} feature map to {dims} is not supported", node=nm,
                             hint=f"flatten it to [batch, {t.features}] (Flatten, or Reshape to [-1, "
                                  f"{t.features}]) before a Gemm / MatMul")
    st.flat.add(node.output[0])
    return x


def flat_weight_rows(t: Tensor, w: np.ndarray) -> np.ndarray:
    """Dense weights [features, out] whose rows follow the source's flatten order (C, H, W) -> the compiler's
    (H, W, C) order."""
    n = w.shape[1]
    src = w.reshape(*t.source_shape, n)
    return np.ascontiguousarray(src.transpose(*t.source_order, len(t.shape))).reshape(t.features, n)


RULES = {
    "Conv": conv,
    "MaxPool": max_pool,
    "GlobalMaxPool": max_pool,
    "AveragePool": avg_pool,
    "GlobalAveragePool": avg_pool,
    "BatchNormalization": batch_norm,
}

# Last: the QONNX frontend imports this module at its end, and this one reads the frontend's values (Act,
# Const, FloatInput, ...) and helpers as `q` when a rule runs; either may be imported first.
from . import qonnx as q  # noqa: E402
