"""hls4ml ModelGraphs (io_parallel and io_stream, MLPs and CNNs) into the aieflow Graph, bit-exact with
hls4ml's C simulation where that can be proven, and measured against it everywhere.

Dense and convolutions. hls4ml's C simulation computes a Dense layer (nnet_dense_latency.h) as: every product
x * w exactly, cast to accum_t; the bias cast to accum_t; the products added one by one into the accum_t
accumulator (each sum cast back to accum_t, with its overflow mode); the accumulator cast to result_t by
result_t's quantization and overflow modes. Its convolutions (Conv1D/2D, Pointwise, Depthwise; nnet_conv*_latency,
nnet_conv_stream.h, nnet_depthwise_product.h) are the same product over each output pixel's window (zero
padding, in io_stream a ZeroPadding layer before the convolution), in both io types. Weights and biases reach
the C++ as decimal text (hls4ml prints each value with as many decimals as the type has fractional bits) read
into a double and converted to weight_t / bias_t.

The IR's dense and conv ops compute the same sum exactly and round once (numerics.requantize). The two agree
when every product lands on accum_t's grid and no partial sum can leave accum_t's range; both are proven here
from the weights and the input's range, layer by layer. The bias cast to accum_t is a constant and is
reproduced exactly, whatever it rounds or wraps. One exception to the range rule is exact too: a wrapping
accumulator feeding a wrapping result with no more integer bits and a rounding mode that does not look at the
sign, since then the wrap of the accumulator is lost in the wrap of the result.

BatchNormalization (nnet_batchnorm.h) is x * scale + bias computed exactly and cast once to result_t: a
depthwise 1x1 convolution (a diagonal dense op on a flat vector) with no accumulator type.

Pooling (nnet_pooling.h, nnet_pooling_stream.h). Max: the window's values cast to accum_t, their largest, cast
to result_t: a pool op (the max of the input itself) then the casts, which commute with the max when the
cast into accum_t loses nothing. Average: the window's values summed in accum_t, the sum divided by the count
as ap_fixed divides by an integer (truncated toward zero on accum_t's grid), cast to result_t: exact as one
pool op when the count is a power of two 2^k and accum_t has k fractional bits more than the input (hls4ml's
inferred types do), since then the division loses nothing and the cast is the only rounding. A 'same' average
pool whose border windows count fewer values is refused.

Activation layers (relu, linear) cast their input to their own result type. When that cast is exact (no
bits lost, no overflow) a relu is fused into the producing dense or conv op and a linear activation is
nothing; otherwise the activation becomes a requantization: a requant op (ops.requant.requant_op: the cast's
shift, rounding, saturation and relu, feature by feature, with no weights). Flatten and Reshape keep the
values (hls4ml is channels last, as the IR is), and io_stream's ZeroPadding becomes the pads of the
convolution that reads it.

io_stream changes how values travel between layers (FIFOs of packed pixels), not what a layer computes: its
Dense (nnet_dense_stream.h) unpacks the stream and calls the same dense kernel, its convolutions call it on
each window, and its activations cast each value as io_parallel's do, so both io types convert alike.

Exact or measured. With exact=True every layer is proven bit-exact or refused (the accum_t that would work is
named). By default (exact=False) the layers hls4ml computes in ways one rounding cannot reproduce compile
anyway, each as its exact-product equivalent, and the exactness measurement (aieflow.exactness, against the
C simulation's traced layer outputs) reports how far they are: an accum_t that rounds the products or could
overflow (hls4ml's default ap_fixed<16,6> everywhere), an average over a window that is not a power of two,
and types wider than the 16 bits an AI Engine activation holds (hls4ml's 'auto' results and wide inputs),
which are held as the narrowest int16 type covering the values' proven range (see _narrow). A warning lists
what was approximated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError
from ..ir import Graph, Tensor
from ..ops.conv import conv_op, out_size
from ..ops.dense import dense_op
from ..ops.pool import pool_op
from ..ops.requant import requant_op
from ..numerics import (AP_NO_NATIVE_MODE, AP_ROUNDING, AP_SATURATION, FixedType, Rounding, Saturation,
                        choose_multiplier, quantize_float, srs)
from . import Imported

HINT_INSTALL = "pip install aieflow[hls4ml]"

# Rounding modes where round(v + k) = round(v) + k for every integer k (they do not look at the sign).
_TRANSLATION_INVARIANT = (Rounding.FLOOR, Rounding.CEIL, Rounding.POSITIVE_INF, Rounding.NEGATIVE_INF,
                          Rounding.CONV_EVEN, Rounding.CONV_ODD)
_PASS_THROUGH = ("Reshape", "Flatten", "Repack")
_CONV = ("Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D", "DepthwiseConv1D", "DepthwiseConv2D")
_POOL = ("Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D")
_PADDING = ("ZeroPadding1D", "ZeroPadding2D")
_SUPPORTED = ("supported: Input, Dense, Conv1D/2D, DepthwiseConv1D/2D, PointwiseConv1D/2D, MaxPooling and "
              "AveragePooling 1D/2D, GlobalMax/AveragePooling 1D/2D, BatchNormalization, Activation (relu, linear), "
              "Flatten/Reshape, ZeroPadding1D/2D")


@dataclass(frozen=True)
class ApType:
    """An hls4ml fixed-point precision: the exact value type, written as hls4ml writes it."""

    fixed: FixedType  # bits, signed, frac, rounding, saturation
    text: str

    @property
    def integer(self) -> int:
        return self.fixed.bits - self.fixed.frac


@dataclass
class _Spec:
    """An op being built: its parameters may still change (a fused relu, a renamed output, the output type an
    activation decides)."""

    kind: str  # dense, conv, requant, pool
    name: str
    x: str
    out: str
    bias: np.ndarray
    shift: int
    out_type: FixedType
    relu: bool = False
    weight: np.ndarray | None = None
    weight_type: FixedType | None = None
    multiplier: int = 1
    attrs: dict = field(default_factory=dict)
    bounds: tuple[int, int] = (0, 0)  # of the exact sums, at 2^-(shift + out_type.frac) (a wide result's)

    @property
    def fusable(self) -> bool:
        """A relu can be applied by this op (a pool op has none)."""
        return self.kind in ("dense", "conv", "requant")

    def op(self):
        if self.kind == "dense":
            return dense_op(self.name, self.x, self.out, self.weight, self.bias, self.weight_type, self.shift,
                            self.multiplier, self.relu)
        if self.kind == "requant":
            return requant_op(self.name, self.x, self.out, self.bias, self.shift, self.multiplier, self.relu)
        a = self.attrs
        if self.kind == "conv":
            return conv_op(self.name, self.x, self.out, self.weight, self.bias, self.weight_type, kernel=a["kernel"],
                           strides=a["strides"], pads=a["pads"], shift=self.shift, multiplier=self.multiplier,
                           relu=self.relu, depthwise=a["depthwise"])
        return pool_op(self.name, self.x, self.out, a["mode"], kernel=a["kernel"], strides=a["strides"],
                       pads=a["pads"], shift=self.shift, multiplier=self.multiplier)


@dataclass
class _Value:
    """What an hls4ml layer's output is in the IR: a tensor whose integers at `type` are the layer's values
    exactly (or, for a tensor in _Ctx.approx, as near as an int16 type holds them), with known bounds on
    those integers."""

    tensor: str
    type: FixedType
    lo: int
    hi: int
    producer: _Spec | None = None  # the op making it, while it may still take a fused relu
    layer: str = ""  # the hls4ml layer whose output this is (for trace outputs)
    private: bool = False  # read by one layer only and not a model output: a relu may be fused into it
    # A dense or conv result too wide to store (hls4ml's 'auto' result types are), waiting for the activation
    # that reads it: `exact` says whether hls4ml's cast of the sums into it loses nothing, so that the two
    # casts (layer result, then activation) are the activation's cast alone.
    wide: bool = False
    exact: bool = True
    # A ZeroPadding's output: the tensor is the unpadded map; the convolution reading it adds these
    # (top, left, bottom, right) to its own pads.
    pads: tuple[int, int, int, int] | None = None


class _Ctx:
    """The conversion's state: the IR tensors and ops so far, and what was approximated (exact=False)."""

    def __init__(self, exact: bool, stream: bool = False):
        self.exact = exact
        self.stream = stream  # io_stream (some layers order their casts differently)
        self.tensors: dict[str, Tensor] = {}
        self.specs: list[_Spec] = []
        self.changed: set[str] = set()  # tensors a relu was fused into after their layers' outputs were recorded
        self.approx: set[str] = set()  # tensors whose type only approximates the hls4ml layer's (narrowed)
        self.notes: list[str] = []  # what was approximated, for the warning

    def inexact(self, layer: str, reason: str, hint: str | None = None) -> None:
        """A layer one rounding cannot reproduce: refused when exact, else compiled and noted."""
        if self.exact:
            raise ModelError(reason, node=layer, hint=hint)
        self.notes.append(f"{layer}: {reason}")

    def tensor(self, name: str, shape, t: FixedType) -> None:
        self.tensors[name] = Tensor(name, tuple(int(d) for d in shape), t)


def import_hls4ml(hls_model, exact: bool = False) -> Imported:
    """An hls4ml ModelGraph as an Imported: its Graph and hls4ml's own C simulation as the reference.

    exact=True refuses every layer that cannot be proven bit-exact with the C simulation (naming what would
    work); exact=False (the default) compiles such layers with exact products and lets the exactness
    measurement report the difference, with a warning listing them (see the module docstring)."""
    try:
        import hls4ml  # noqa: F401
    except ImportError:
        raise ModelError("hls4ml is not installed", hint=HINT_INSTALL) from None
    if not hasattr(hls_model, "get_layers"):
        raise ModelError(f"expected an hls4ml ModelGraph, got {type(hls_model).__name__}")
    io_type = hls_model.config.get_config_value("IOType")
    if io_type not in (None, "io_parallel", "io_stream"):
        raise ModelError(f"IOType '{io_type}' is not supported", hint="convert the model with io_type='io_parallel' "
                                                                     "or 'io_stream'")
    ctx = _Ctx(bool(exact), io_type == "io_stream")
    graph, traced = _convert(hls_model, ctx)
    if ctx.notes:
        warnings.warn(f"hls4ml model '{graph.name}' is not provably bit-exact with its C simulation (compiled with "
                      f"exact products, the difference is measured; import_hls4ml(model, exact=True) refuses "
                      f"instead): " + "; ".join(ctx.notes), stacklevel=2)
    backend = getattr(hls_model.config.backend, "name", "")
    reference = _csim_reference(hls_model, graph, traced, ctx.approx) if backend != "AIEFlow" else None
    return Imported(graph, "hls4ml C simulation", reference)


# --- precisions -------------------------------------------------------------------------------------------


def _ap_type(precision, layer: str, what: str) -> ApType:
    """An hls4ml precision as an exact FixedType; refuses what has no exact equivalent. An accumulator wider
    or result than 64 bits (hls4ml's 'auto' types of deep layers) is read as its 64 lowest bits: the same
    grid, and a range no int64 sum of the IR leaves."""
    from hls4ml.model.types import FixedPrecisionType, IntegerPrecisionType

    text = _cpp(precision)
    if isinstance(precision, FixedPrecisionType):
        width, integer, signed = int(precision.width), int(precision.integer), bool(precision.signed)
        rnd = str(precision.rounding_mode) if precision.rounding_mode is not None else "TRN"
        sat = str(precision.saturation_mode) if precision.saturation_mode is not None else "WRAP"
        nbits = int(precision.saturation_bits or 0)
    elif isinstance(precision, IntegerPrecisionType):
        width, integer, signed, rnd, sat, nbits = int(precision.width), int(precision.width), bool(
            precision.signed), "TRN", "WRAP", 0
    else:
        raise ModelError(f"{what} type {text} is not a fixed-point type", node=layer,
                         hint="give the layer ap_fixed / ap_int precisions (not 'auto' floats or exponents)")
    q, o = (m.upper() if m.upper().startswith("AP_") else "AP_" + m.upper() for m in (rnd, sat))
    if o in AP_NO_NATIVE_MODE:
        raise ModelError(f"{what} type {text}: overflow mode {o} has no exact AIE-ML equivalent", node=layer,
                         hint="use SAT, SAT_SYM or WRAP")
    if q not in AP_ROUNDING or o not in AP_SATURATION:
        raise ModelError(f"{what} type {text}: unknown quantization/overflow mode {q}/{o}", node=layer)
    if nbits and o != "AP_WRAP":
        raise ModelError(f"{what} type {text}: saturation bits N={nbits} are not supported", node=layer,
                         hint="use N=0")
    if nbits:
        raise ModelError(f"{what} type {text}: saturation bits N={nbits} are not supported", node=layer,
                         hint="use N=0")
    if what in ("accum", "result") and width > 64:
        integer, width = integer - (width - 64), 64
    if width < 1 or width > 64:
        raise ModelError(f"{what} type {text}: width {width} is outside 1..64", node=layer)
    return ApType(FixedType(width, signed, width - integer, AP_ROUNDING[q], AP_SATURATION[o]), text)


def _cpp(precision) -> str:
    try:
        return precision.definition_cpp()
    except Exception:  # noqa: BLE001 - any precision has a str
        return str(precision)


def _storable(t: ApType, layer: str, what: str, relu_after: bool = False) -> tuple[FixedType, bool]:
    """The IR type holding an activation of type t, and whether the producer must clamp at zero for it.

    Activations are stored as int8, uint8 or int16. An unsigned type of 9 to 15 bits is held as a signed type
    one bit wider, exact when it saturates (the producer then clamps at zero: max(sat, 0) is the unsigned
    saturation); a wrapping one cannot be, nor can anything wider than 16 bits."""
    f = t.fixed
    if f.signed and f.bits <= 16 or not f.signed and f.bits <= 8:
        return f, False
    if not f.signed and f.bits <= 15 and f.saturation is not Saturation.NONE:
        return FixedType(f.bits + 1, True, f.frac, f.rounding, Saturation.SATURATE), True
    raise ModelError(f"{what} type {t.text} has {f.bits} bits; AI Engine activations are int8, uint8 or int16",
                     node=layer, hint="use at most 16 bits (unsigned: 8, or up to 15 with SAT)")




def _narrow(R: FixedType, lo: int, hi: int, frac: int) -> tuple[FixedType, bool]:
    """An int16 type for values of R (wider than an AI Engine activation) that lie in [lo, hi] * 2^-frac:
    the most fractional bits (at most R's) with which the whole proven range fits 16 bits, and never fewer
    integer bits than R has, so that where R itself would saturate or wrap the int16 type does at the same
    bound. Returns the type and whether the producer clamps at zero (an unsigned R is held signed)."""
    need_int = R.bits - R.frac + (0 if R.signed else 1)  # a signed type's integer bits holding R's whole range
    f_min = 16 - need_int
    f = R.frac
    while f > f_min:
        s = frac - f
        lo_f = lo >> s if s >= 0 else lo << -s
        hi_f = -((-hi) >> s) if s >= 0 else hi << -s
        if -(1 << 15) <= lo_f and hi_f <= (1 << 15) - 1:
            break
        f -= 1
    sat = R.saturation if R.signed else Saturation.SATURATE
    return FixedType(16, True, f, R.rounding, sat), not R.signed


def _store_type(ctx: _Ctx, rt: ApType, layer: str, tensor: str, lo: int, hi: int, frac: int,
                what: str = "result") -> tuple[FixedType, bool]:
    """The IR type of a tensor holding a layer's values of type rt (in [lo, hi] * 2^-frac before the cast),
    and whether the producer must clamp at zero for it: rt itself when an activation can hold it; else
    refused (exact) or the int16 type of _narrow, the tensor then marked approximate."""
    try:
        return _storable(rt, layer, what)
    except ModelError:
        if ctx.exact:
            raise
    st, clamp = _narrow(rt.fixed, lo, hi, frac)
    ctx.notes.append(f"{layer}: {what} type {rt.text} held as ap_fixed<16,{16 - st.frac}>")
    ctx.approx.add(tensor)
    return st, clamp


# --- values as hls4ml's C++ sees them -----------------------------------------------------------------------


def _weight_integers(var, t: ApType) -> np.ndarray:
    """The integers weight_t holds in the C simulation: the decimal text hls4ml writes, read into a double,
    converted by the type's own quantization and overflow modes."""
    text = list(var)  # WeightVariable iterates its values formatted exactly as the writer prints them
    values = np.array([float(s) for s in text], dtype=np.float64).reshape(np.shape(var.data))
    return quantize_float(values, t.fixed)


def _v2(a: np.ndarray) -> int | None:
    """The smallest power of two dividing every nonzero entry (None when all are zero)."""
    nz = [int(v) for v in np.asarray(a).ravel() if v != 0]
    if not nz:
        return None
    return min((v & -v).bit_length() - 1 for v in nz)


def _signed_bits(lo: int, hi: int) -> int:
    b = 1
    while not (-(1 << (b - 1)) <= lo and hi <= (1 << (b - 1)) - 1):
        b += 1
    return b


def _range(t: FixedType, nonneg: bool = False) -> tuple[int, int]:
    lo = t.qmin + (1 if t.signed and t.saturation is Saturation.SYMMETRIC else 0)
    return (max(lo, 0) if nonneg else lo), t.qmax


def _regrid(a, frm: int, to: int) -> np.ndarray:
    """Integers at 2^-frm as integers at 2^-to (exact: a coarser grid only where every entry is on it)."""
    a = np.asarray(a, dtype=object)
    return a * 2 ** (to - frm) if to >= frm else a // 2 ** (frm - to)


def _cast_exact(t: FixedType, lo: int, hi: int, R: FixedType) -> bool:
    """Casting values of t in [lo, hi] into R loses nothing (no bits, no overflow)."""
    d = R.frac - t.frac
    if d < 0 or not (R.qmin <= lo * 2**d and hi * 2**d <= R.qmax):
        return False
    return not (R.saturation is Saturation.SYMMETRIC and R.signed and lo * 2**d <= R.qmin)


def _real(q: int, frac: int) -> str:
    return format(q / 2**frac, "g") if abs(q) < 2**53 else f"{q}*2^-{frac}"


# --- the conversion -----------------------------------------------------------------------------------------


def _convert(model, ctx: _Ctx) -> tuple[Graph, dict[str, list[str]]]:
    values: dict[str, _Value] = {}  # hls4ml output variable / layer name -> value
    inputs: list[str] = []
    layers = list(model.get_layers())
    readers: dict[str, int] = {}
    for layer in layers:
        for i in layer.inputs:
            readers[i] = readers.get(i, 0) + 1
    model_outputs = set(_output_layers(model))
    for layer in layers:
        kind = layer.class_name
        name = layer.name
        srcs = [values[i] for i in layer.inputs if i in values]
        if kind in ("Input", "InputLayer"):
            values[name] = _input(ctx, layer)
            inputs.append(name)
        elif len(srcs) != len(layer.inputs) or len(srcs) != 1:
            raise ModelError(f"layer {kind} reads {list(layer.inputs)}; aieflow supports one input per layer",
                             node=name, hint="use a chain of layers without branches or merges")
        elif srcs[0].pads is not None and kind not in _CONV:
            raise ModelError(f"the padding '{srcs[0].layer}' is read by a {kind}; aieflow pads only convolutions",
                             node=name)
        elif kind == "Transpose" and srcs[0].tensor in inputs and srcs[0].layer in inputs:
            values[name] = _input_transpose(ctx, layer, srcs[0])
        elif kind in _PASS_THROUGH:
            values[name] = _Value(**{**srcs[0].__dict__, "layer": name})
        elif kind in _PADDING:
            values[name] = _zero_padding(ctx, layer, srcs[0])
        elif kind == "Dense":
            values[name] = _dense(ctx, layer, srcs[0], _feeds_one_activation(layer, layers, model_outputs))
        elif kind in _CONV:
            values[name] = _conv(ctx, layer, srcs[0], _feeds_one_activation(layer, layers, model_outputs))
        elif kind in _POOL:
            values[name] = _pool(ctx, layer, srcs[0])
        elif kind == "BatchNormalization":
            values[name] = _batchnorm(ctx, layer, srcs[0], _feeds_one_activation(layer, layers, model_outputs))
        elif kind == "Activation" or kind == "ReLU":
            act = str(layer.get_attr("activation", "relu" if kind == "ReLU" else "")).lower()
            if act not in ("relu", "linear"):
                raise ModelError(f"activation '{act}' is not supported", node=name, hint="use relu or linear")
            rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
            values[name] = _cast(ctx, name, srcs[0], rt, act == "relu")
        elif kind.startswith("SeparableConv"):
            raise ModelError(f"layer type {kind} is not supported as one layer", node=name,
                             hint="write it as a DepthwiseConv followed by a 1x1 (pointwise) Conv")
        else:
            raise ModelError(f"layer type {kind} is not supported", node=name, hint=_SUPPORTED)
        v = values.get(name)
        if v is not None:
            v.private = readers.get(name, 0) == 1 and name not in model_outputs and (
                kind not in _PASS_THROUGH + _PADDING or srcs[0].private)
            for o in layer.outputs:
                values.setdefault(o, v)
    outs = [values[o] for o in _output_layers(model)]
    if len(inputs) != 1 or len(outs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs and {len(outs)} outputs; aieflow supports one each")
    out = outs[0]
    if out.pads is not None:
        raise ModelError("the model ends in a padding layer", node=out.layer)
    if out.tensor == inputs[0]:
        raise ModelError("the model computes nothing", hint="add a Dense or convolution layer")
    traced: dict[str, list[str]] = {}  # IR tensor -> hls4ml layers whose (traced) output it holds
    for v in values.values():
        if v.tensor != inputs[0] and v.tensor not in ctx.changed and v.pads is None and not v.wide:
            traced.setdefault(v.tensor, [])
            if v.layer not in traced[v.tensor]:
                traced[v.tensor].append(v.layer)
    name = str(model.config.get_project_name() or "hls4ml_model")
    ops = tuple(s.op() for s in ctx.specs)
    return Graph(name, ctx.tensors, ops, tuple(inputs), (out.tensor,)).validate(), traced


def _input(ctx: _Ctx, layer) -> _Value:
    name = layer.name
    t = _ap_type(layer.get_output_variable().type.precision, name, "input")
    shape = _shape(layer)
    try:
        ft, _ = _storable(t, name, "input")
        ok = ft is t.fixed
    except ModelError:
        ok = False
    if not ok:
        if ctx.exact:
            raise ModelError(f"input type {t.text} cannot be stored as int8, uint8 or int16", node=name,
                             hint="use a signed input type of at most 16 bits or an unsigned one of at most 8")
        # The only range the model states for its input is its type's: keep all its integer bits (so that
        # the input saturates or wraps where hls4ml's does) and as many fractional bits as 16 bits leave
        # (ap_fixed<32,16> becomes ap_fixed<16,16>), rounded as the input type rounds.
        ft, _ = _narrow(t.fixed, t.fixed.qmin, t.fixed.qmax, t.fixed.frac)
        ft = FixedType(ft.bits, ft.signed, ft.frac, t.fixed.rounding, Saturation.SATURATE)
        ctx.notes.append(f"{name}: input type {t.text} held as ap_fixed<16,{16 - ft.frac}>")
    ctx.tensor(name, shape, ft)
    lo, hi = _range(ft)
    return _Value(name, ft, lo, hi, None, name)


def _input_transpose(ctx: _Ctx, layer, x: _Value) -> _Value:
    """hls4ml's PyTorch converter moves a channels-first input to channels last with a Transpose right after
    the input. The compiler holds maps channels last, so the Transpose is the input's source layout: the
    input tensor takes the transposed shape and records the permutation (Tensor.source_order), and inputs,
    the exactness measurement and simulate keep the model's own channels-first layout."""
    perm = tuple(int(p) for p in layer.get_attr("perm"))
    t = ctx.tensors[x.tensor]
    if perm not in ((1, 2, 0), (1, 0)) or len(perm) != len(t.shape):
        raise ModelError(f"a Transpose of the input with perm {list(perm)}: aieflow reads the one that moves "
                         "channels first to channels last", node=layer.name)
    ctx.tensors[x.tensor] = Tensor(t.name, tuple(t.shape[p] for p in perm), t.type, t.scale, t.zero_point, perm)
    return _Value(**{**x.__dict__, "layer": layer.name})


def _shape(layer) -> tuple[int, ...]:
    shape = tuple(int(d) for d in layer.get_output_variable().shape)
    if len(shape) > 3:
        raise ModelError(f"output shape {list(shape)} has more than 3 dimensions", node=layer.name,
                         hint="aieflow maps vectors and 1-D and 2-D feature maps (channels last)")
    return shape


def _map(ctx: _Ctx, x: _Value, layer: str) -> tuple[int, int, int]:
    """(H, W, C) of the feature map x holds (a 1-D map is one row); refuses a flat vector."""
    shape = ctx.tensors[x.tensor].shape
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    raise ModelError(f"expects a feature map, but its input has shape {list(shape)}", node=layer)


def _feeds_one_activation(layer, layers, model_outputs) -> bool:
    """The layer's output is read by exactly one relu/linear Activation and is not a model output."""
    readers = [l for l in layers if layer.name in l.inputs or any(o in l.inputs for o in layer.outputs)]
    if len(readers) != 1 or layer.name in model_outputs:
        return False
    r = readers[0]
    act = str(r.get_attr("activation", "relu" if r.class_name == "ReLU" else "")).lower()
    return r.class_name in ("Activation", "ReLU") and act in ("relu", "linear")


def _output_layers(model) -> list[str]:
    outs = list(getattr(model, "outputs", []) or [])
    if not outs:
        outs = [model.get_layers()[-1].name] if model.get_layers() else []
    return outs


def _strategy(layer) -> None:
    strategy = str(layer.get_attr("strategy", "latency")).lower()
    if strategy not in ("latency", "resource"):
        raise ModelError(f"strategy '{strategy}' is not supported", node=layer.name,
                         hint="use Strategy: Latency or Resource")


def _bias(layer, n: int):
    b_var = layer.weights.get("bias")
    if b_var is None:
        return None, None
    bt = _ap_type(b_var.type.precision, layer.name, "bias")
    return _weight_integers(b_var, bt).reshape(n), bt


def _dense(ctx: _Ctx, layer, x: _Value, before_activation: bool) -> _Value:
    name = layer.name
    _strategy(layer)
    n_in, n_out = int(layer.get_attr("n_in")), int(layer.get_attr("n_out"))
    if n_in != ctx.tensors[x.tensor].features:
        raise ModelError(f"Dense of {n_in} inputs reads a tensor of shape {list(ctx.tensors[x.tensor].shape)}",
                         node=name, hint="Flatten the feature map before the Dense layer")
    w_var = layer.weights["weight"]
    wt = _ap_type(w_var.type.precision, name, "weight")
    w = _weight_integers(w_var, wt)
    if layer.get_attr("_weights_transposed", False):  # the Resource strategy stores them [n_out, n_in]
        w = w.T
    _ternary(layer, w_var, wt, w)
    if w.size != n_in * n_out:
        raise ModelError(f"weight has {w.size} values, expected {n_in} x {n_out}", node=name)
    w = w.reshape(n_in, n_out)
    b, bt = _bias(layer, n_out)
    acc_t = _ap_type(layer.get_attr("accum_t").precision, name, "accum")
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    return _linear(ctx, name, x, "dense", w, wt, b, bt, acc_t, rt, w, (n_out,), {}, before_activation)


def _ternary(layer, w_var, wt: ApType, w) -> None:
    from hls4ml.model.types import IntegerPrecisionType

    if isinstance(w_var.type.precision, IntegerPrecisionType) and wt.fixed.bits == 2 and wt.fixed.signed \
            and np.any(w == -2):
        raise ModelError(f"weight type {wt.text} makes hls4ml use its ternary product, which reads -2 as +1",
                         node=layer.name, hint="use weights in {-1, 0, 1} or a wider weight type")


def _conv(ctx: _Ctx, layer, x: _Value, before_activation: bool) -> _Value:
    name, kind = layer.name, layer.class_name
    depthwise = kind.startswith("Depthwise")
    one_d = kind.endswith("1D")
    for attr in ("dilation", "dilation_height", "dilation_width", "dilation_rate"):
        d = layer.get_attr(attr, 1)
        if any(int(v) != 1 for v in np.ravel([d])):
            raise ModelError(f"{kind} with {attr} {d} is not supported", node=name, hint="use dilation 1")
    _strategy(layer)
    h, w_in, c = _map(ctx, x, name)
    w_var = layer.weights["weight"]
    wt = _ap_type(w_var.type.precision, name, "weight")
    w = _weight_integers(w_var, wt)
    if layer.get_attr("_weights_transposed", False):  # Resource: (F, [H,] W, C)
        w = np.moveaxis(w, 0, -1)
    _ternary(layer, w_var, wt, w)
    if one_d:
        w = w[None]
    if w.ndim != 4:
        raise ModelError(f"weight of shape {list(w.shape)} is not a 1-D or 2-D kernel", node=name)
    kh, kw = int(w.shape[0]), int(w.shape[1])
    if depthwise:
        if w.shape[3] != 1 or w.shape[2] != c:
            raise ModelError(f"{kind} with depth multiplier {int(w.shape[3])} is not supported", node=name,
                             hint="use depth_multiplier=1 (then a pointwise Conv for more channels)")
        w = w.reshape(kh, kw, c)[:, :, None, :]
        co = c
    else:
        co = int(w.shape[3])
        if w.shape[2] != c:
            raise ModelError(f"weight of shape {list(w.shape)} does not read {c} channels", node=name)
    if one_d:
        strides = (1, int(layer.get_attr("stride_width", 1)))
        pads = [0, int(layer.get_attr("pad_left", 0)), 0, int(layer.get_attr("pad_right", 0))]
    else:
        strides = (int(layer.get_attr("stride_height", 1)), int(layer.get_attr("stride_width", 1)))
        pads = [int(layer.get_attr(k, 0)) for k in ("pad_top", "pad_left", "pad_bottom", "pad_right")]
    if x.pads is not None:
        pads = [a + b for a, b in zip(pads, x.pads)]
    out_shape = _shape(layer)
    oh, ow = (1, out_shape[0]) if len(out_shape) == 2 else out_shape[:2]
    if (out_size(h, kh, strides[0], pads[0], pads[2]), out_size(w_in, kw, strides[1], pads[1], pads[3])) != (oh, ow):
        raise ModelError(f"a {kh}x{kw} window at stride {strides[0]}x{strides[1]} with pads {pads} over a {h}x{w_in} "
                         f"map does not make the {oh}x{ow} outputs hls4ml declares (a dilated kernel? hls4ml's "
                         f"Keras 3 converter keeps the dilated output shape but drops the dilation)", node=name,
                         hint="use dilation 1")
    if pads[0] >= kh or pads[2] >= kh or pads[1] >= kw or pads[3] >= kw:
        raise ModelError(f"pads {pads} reach a whole {kh}x{kw} window past the map", node=name,
                         hint="pad by less than the kernel size")
    b, bt = _bias(layer, co)
    acc_t = _ap_type(layer.get_attr("accum_t").precision, name, "accum")
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    cols = w[:, :, 0, :].reshape(kh * kw, co) if depthwise else w.reshape(kh * kw * c, co)
    attrs = {"kernel": (kh, kw), "strides": strides, "pads": tuple(pads), "depthwise": depthwise}
    return _linear(ctx, name, x, "conv", w, wt, b, bt, acc_t, rt, cols, out_shape, attrs, before_activation)


def _batchnorm(ctx: _Ctx, layer, x: _Value, before_activation: bool) -> _Value:
    """x * scale + bias, exact, cast once to result_t: a depthwise 1x1 convolution of a feature map, or a
    diagonal dense op of a vector."""
    name = layer.name
    s_var, b_var = layer.weights["scale"], layer.weights["bias"]
    st_ = _ap_type(s_var.type.precision, name, "scale")
    bt = _ap_type(b_var.type.precision, name, "bias")
    s = _weight_integers(s_var, st_).ravel()
    b = _weight_integers(b_var, bt).ravel()
    shape = ctx.tensors[x.tensor].shape
    n = shape[-1] if len(shape) > 1 else shape[0]
    if s.size != n or b.size != n:
        raise ModelError(f"{s.size} scales for {n} channels", node=name,
                         hint="normalize the last (channel) axis")
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    if len(shape) == 1:
        w = np.diag(s)
        return _linear(ctx, name, x, "dense", w, st_, b, bt, None, rt, w, shape, {}, before_activation)
    attrs = {"kernel": (1, 1), "strides": (1, 1), "pads": (0, 0, 0, 0), "depthwise": True}
    return _linear(ctx, name, x, "conv", s.reshape(1, 1, 1, n), st_, b, bt, None, rt, s.reshape(1, n), shape,
                   attrs, before_activation)


def _linear(ctx: _Ctx, name: str, x: _Value, kind: str, w, wt: ApType, b, bt: ApType | None, acc_t: ApType | None,
            rt: ApType, cols, out_shape, attrs: dict, before_activation: bool) -> _Value:
    """A dense, conv or batch-norm layer: sums of products x * w plus the bias, in accum_t (None: exact), cast
    to result_t. `w` is in the op's layout; `cols` [taps, outputs] lists the weights each output sums (for
    the bounds)."""
    n_out = int(cols.shape[1])
    fx, fw = x.type.frac, wt.fixed.frac
    A = acc_t.fixed if acc_t is not None else None
    if b is None:
        b_acc, fa = np.zeros(n_out, dtype=np.int64), (A.frac if A is not None else fx + fw)
    elif A is not None:
        fa = A.frac
        b_acc = srs(b, bt.fixed.frac - fa, A) if bt.fixed.frac - fa < 63 else np.zeros(n_out, np.int64)
    else:
        b_acc, fa = np.asarray(b, dtype=np.int64), bt.fixed.frac
    # The grid of the products: the weights' common power of two may make it coarser than fx + fw.
    v2w = _v2(w)
    g = fw - v2w if v2w is not None else fa - fx
    if A is not None and fx + g > fa:
        need = fx + g
        ctx.inexact(name, f"accum_t {acc_t.text} has {fa} fractional bits but the products input x weight need "
                          f"{need}: hls4ml rounds every product to the accumulator, which one rounding at the end "
                          f"cannot reproduce",
                    hint=f"use accum_t ap_fixed<{acc_t.integer + need},{acc_t.integer}> or wider")
    v2b = _v2(b_acc)
    F = max(fx + g, fa - v2b if v2b is not None else fx + g)  # the IR accumulator's fractional bits
    wq = _regrid(w, fx + fw, F)
    cq = _regrid(cols, fx + fw, F)
    bias = _regrid(b_acc, fa, F)
    wmax = max((abs(int(v)) for v in wq.ravel()), default=0)
    wbits = max(2, _signed_bits(-wmax, wmax))
    if wbits > 16:
        raise ModelError(f"weight type {wt.text} on the accumulator's grid needs {wbits} bits; AI Engine "
                         f"weights are int8 or int16", node=name, hint="use weights of at most 16 bits")
    if max((abs(int(v)) for v in bias), default=0) >= 2**62:
        raise ModelError(f"bias type {bt.text} on the accumulator's grid 2^-{F} needs more than 62 bits", node=name)
    # Bounds of every partial sum (the bias alone, each product alone, and every partial sum lie in them).
    a, c = cq * x.lo, cq * x.hi
    low = np.minimum(np.minimum(a, c), 0).sum(axis=0) + np.minimum(bias, 0)
    high = np.maximum(np.maximum(a, c), 0).sum(axis=0) + np.maximum(bias, 0)
    lo_s, hi_s = int(min(low, default=0)), int(max(high, default=0))
    R = rt.fixed
    fits = True
    if A is not None:
        lo_a, hi_a = (lo_s * 2 ** (fa - F), hi_s * 2 ** (fa - F)) if fa >= F else (lo_s >> (F - fa), -((-hi_s) >> (F - fa)))
        fits = A.qmin <= lo_a and hi_a <= A.qmax
    try:
        st, relu_for_storage = _storable(rt, name, "result")
    except ModelError:
        if before_activation:
            return _wide(ctx, name, x, kind, wq, fx, bias, F, rt, fits, lo_s, hi_s, out_shape, attrs)
        st, relu_for_storage = _store_type(ctx, rt, name, name, lo_s, hi_s, F)
    if not fits:
        wrap_ok = (A.saturation is Saturation.NONE and R.saturation is Saturation.NONE and not relu_for_storage
                   and R.rounding in _TRANSLATION_INVARIANT and acc_t.integer >= rt.integer and st == R)
        if not wrap_ok:
            ibits = _signed_bits(lo_a, hi_a) - fa
            ctx.inexact(name, f"accum_t {acc_t.text} could overflow: partial sums reach [{_real(lo_a, fa)}, "
                              f"{_real(hi_a, fa)}], which hls4ml would "
                              f"{'saturate' if A.saturation is not Saturation.NONE else 'wrap'} before the result cast",
                        hint=f"use accum_t ap_fixed<{ibits + fa},{ibits}> or wider")
    wtype = FixedType(wbits, True, F - fx)
    spec = _Spec(kind, name, x.tensor, name, np.array(bias.tolist(), dtype=np.int64), F - st.frac, st,
                 relu_for_storage, np.array(wq.tolist(), dtype=np.int64).reshape(np.shape(w)), wtype, attrs=attrs)
    ctx.specs.append(spec)
    ctx.tensor(name, out_shape, st)
    lo, hi = _range(st, nonneg=relu_for_storage)
    return _Value(name, st, lo, hi, spec, name)


def _wide(ctx: _Ctx, name, x, kind, wq, fx, bias, F, rt, fits, lo, hi, out_shape, attrs) -> _Value:
    """A layer whose result type cannot be stored, read only by an activation: kept as a spec whose output
    type the activation decides (see _activation_of_wide). hls4ml casts the sums into the result type first;
    that cast is exact when the type has the sums' fractional bits and range."""
    R = rt.fixed
    d = R.frac - F
    exact = fits and d >= 0 and R.qmin <= lo * 2**d and hi * 2**d <= R.qmax
    if exact and R.saturation is Saturation.SYMMETRIC and R.signed:
        exact = lo * 2**d > R.qmin
    wmax = max((abs(int(v)) for v in wq.ravel()), default=0)
    spec = _Spec(kind, name, x.tensor, name, np.array(bias.tolist(), dtype=np.int64), F - R.frac, R, False,
                 np.array(wq.tolist(), dtype=np.int64), FixedType(max(2, _signed_bits(-wmax, wmax)), True, F - fx),
                 attrs=attrs, bounds=(lo, hi))
    ctx.specs.append(spec)
    ctx.tensor(name, out_shape, R)
    return _Value(name, R, lo * 2**max(d, 0), hi * 2**max(d, 0), spec, name, wide=True, exact=exact)


def _activation_of_wide(ctx: _Ctx, name: str, x: _Value, relu: bool, rt: ApType) -> _Value:
    """relu / linear after a layer whose result is too wide to store: when hls4ml's cast into that result
    loses nothing, the layer's op produces the activation's type directly (its rounding, saturation, relu)."""
    spec = x.producer
    wide_text = f"ap_{'' if x.type.signed else 'u'}fixed<{x.type.bits},{x.type.bits - x.type.frac}>"
    if not x.exact:
        ctx.inexact(name, f"the result type {wide_text} of '{spec.name}' has {x.type.bits} bits (more than the "
                          f"16 an AI Engine activation holds) and hls4ml's cast into it rounds or overflows before "
                          f"'{name}' casts again",
                    hint=f"give '{spec.name}' a result type of at most 16 bits, or one wide enough to hold "
                         "its sums exactly (hls4ml's 'auto')")
    F = spec.shift + spec.out_type.frac  # the sums' fractional bits
    lo, hi = spec.bounds
    if relu:
        lo, hi = max(lo, 0), max(hi, 0)
    st, relu_for_storage = _store_type(ctx, rt, name, name, lo, hi, F)
    if relu and rt.fixed.saturation is Saturation.NONE and x.lo < 0:
        ctx.inexact(name, f"relu into the wrapping type {rt.text} after a layer that can be negative cannot be "
                          "fused exactly", hint="use SAT or SAT_SYM for this activation")
    spec.shift = F - st.frac
    spec.out_type = st
    spec.relu = relu or relu_for_storage
    shape = ctx.tensors.pop(spec.out).shape
    spec.out = name
    ctx.tensor(name, shape, st)
    lo, hi = _range(st, nonneg=spec.relu)
    return _Value(name, st, lo, hi, spec, name)


def _cast(ctx: _Ctx, name: str, x: _Value, rt: ApType, relu: bool) -> _Value:
    """x (relu'd first if asked) cast to rt, as a layer named `name`: nothing when exact, a relu fused into
    the producer, or a requant op."""
    if x.wide:
        return _activation_of_wide(ctx, name, x, relu, rt)
    R = rt.fixed
    lo = max(x.lo, 0) if relu else x.lo
    hi = max(x.hi, 0) if relu else x.hi
    exact = _cast_exact(x.type, lo, hi, R)
    fusable = x.producer is not None and x.producer.fusable and x.private and x.producer.out == x.tensor
    if exact and (not relu or x.lo >= 0):
        return _Value(x.tensor, x.type, lo, hi, x.producer, name)
    if exact and fusable:  # a relu the producing op can apply: its output type already holds the result
        spec = x.producer
        spec.relu = True
        _rename(spec, name, ctx.tensors)
        return _Value(name, x.type, lo, hi, spec, name)
    # A requantization: a requant op (the cast alone, feature by feature).
    st, relu_for_storage = _store_type(ctx, rt, name, name, lo, hi, x.type.frac)
    clamp = relu_for_storage
    if relu:
        if fusable:
            x.producer.relu = True  # the requant op then reads relu(x), exactly what hls4ml's relu casts
            ctx.changed.add(x.tensor)
        elif x.lo < 0 and R.saturation is Saturation.NONE:
            ctx.inexact(name, f"relu into the wrapping type {rt.text} after a tensor with other readers cannot be "
                              "reproduced exactly", hint="use SAT or SAT_SYM for this activation")
            clamp = True
        else:
            clamp = True  # saturation maps negative values to <= 0, so clamping after is relu before
    t = ctx.tensors[x.tensor]
    spec = _Spec("requant", name, x.tensor, name, np.zeros(t.features, dtype=np.int64), x.type.frac - st.frac, st,
                 clamp)
    ctx.specs.append(spec)
    ctx.tensor(name, t.shape, st)
    lo2, hi2 = _range(st, nonneg=clamp)
    return _Value(name, st, lo2, hi2, spec, name)


def _rename(spec: _Spec, new: str, tensors) -> None:
    t = tensors.pop(spec.out)
    tensors[new] = Tensor(new, t.shape, t.type)
    spec.out = new


def _zero_padding(ctx: _Ctx, layer, x: _Value) -> _Value:
    """ZeroPadding (io_stream's 'same' convolutions): the values cast to its type, the zeros left for the
    convolution that reads it (its pads)."""
    name = layer.name
    if layer.class_name.endswith("1D"):
        pads = (0, int(layer.get_attr("pad_left", 0)), 0, int(layer.get_attr("pad_right", 0)))
    else:
        pads = tuple(int(layer.get_attr(k, 0)) for k in ("pad_top", "pad_left", "pad_bottom", "pad_right"))
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    v = _cast(ctx, name, x, rt, False)
    if x.pads is not None:
        pads = tuple(a + b for a, b in zip(pads, x.pads))
    return _Value(**{**v.__dict__, "layer": name, "pads": pads})


def _pool(ctx: _Ctx, layer, x: _Value) -> _Value:
    name, kind = layer.name, layer.class_name
    mode = {"max": "max", "average": "avg"}.get(str(layer.get_attr("pool_op", "")).lower())
    if mode is None:
        raise ModelError(f"pooling '{layer.get_attr('pool_op')}' is not supported", node=name,
                         hint="use max or average pooling")
    h, w, c = _map(ctx, x, name)
    rank = len(ctx.tensors[x.tensor].shape)
    if kind.startswith("Global"):
        kernel, strides, pads = (h, w), (1, 1), (0, 0, 0, 0)
        out_shape = (1, 1, c) if rank == 3 else (1, c)
    else:
        if kind.endswith("1D"):
            kernel = (1, int(layer.get_attr("pool_width")))
            strides = (1, int(layer.get_attr("stride_width")))
            pads = (0, int(layer.get_attr("pad_left", 0)), 0, int(layer.get_attr("pad_right", 0)))
        else:
            kernel = (int(layer.get_attr("pool_height")), int(layer.get_attr("pool_width")))
            strides = (int(layer.get_attr("stride_height")), int(layer.get_attr("stride_width")))
            pads = tuple(int(layer.get_attr(k, 0)) for k in ("pad_top", "pad_left", "pad_bottom", "pad_right"))
        out_shape = _shape(layer)
        oh, ow = (1, out_shape[0]) if len(out_shape) == 2 else out_shape[:2]
        if (out_size(h, kernel[0], strides[0], pads[0], pads[2]),
                out_size(w, kernel[1], strides[1], pads[1], pads[3])) != (oh, ow):
            raise ModelError(f"a {kernel[0]}x{kernel[1]} pool at stride {strides[0]}x{strides[1]} with pads "
                             f"{list(pads)} over a {h}x{w} map does not make hls4ml's {oh}x{ow}", node=name)
    acc_t = _ap_type(layer.get_attr("accum_t").precision, name, "accum")
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    A = acc_t.fixed
    attrs = {"mode": mode, "kernel": kernel, "strides": strides, "pads": pads}
    into_acc = not _cast_exact(x.type, x.lo, x.hi, A)
    if mode == "max":
        # io_parallel takes the largest input, then casts it into accum_t (nnet_pooling.h); io_stream casts
        # every input into accum_t first (nnet_pooling_stream.h). The two differ only for a wrapping cast;
        # each order is reproduced exactly, the cast into accum_t a requant op when it changes values.
        v = x
        if into_acc and ctx.stream:
            v = _cast(ctx, f"{name}_acc", v, acc_t, False)
        v = _pool_spec(ctx, f"{name}_pool", v, attrs, out_shape, v.type, 0, 1)
        if into_acc and not ctx.stream:
            v = _cast(ctx, f"{name}_acc", v, acc_t, False)
        return _named(ctx, _cast(ctx, name, v, rt, False), name)
    n = kernel[0] * kernel[1]
    if any(pads) and not layer.get_attr("count_pad", False):
        raise ModelError(f"average pooling over padding ({list(pads)}) divides its border windows by the values "
                         "they overlap, which a pool op cannot", node=name, hint="use padding='valid'")
    # The window's values are summed in accum_t: io_stream casts each into accum_t, io_parallel casts each
    # partial sum, which is the same while the sums stay in range and the rounding mode does not look at
    # the sign (round(y + x) = y + round(x) for y on accum_t's grid). Such a cast is a requant op before the
    # pool; then the sum must stay in accum_t, and hls4ml's division (truncated toward zero on accum_t's
    # grid) must lose nothing for the pool op's one rounding to be exact.
    v = x
    if into_acc:
        if not ctx.stream and A.rounding not in _TRANSLATION_INVARIANT:
            ctx.inexact(name, f"io_parallel average pooling rounds each partial sum into accum_t {acc_t.text} by "
                              f"a sign-dependent mode, which rounding each input cannot reproduce",
                        hint="use an accum_t that holds the input type")
        v = _cast(ctx, f"{name}_acc", v, acc_t, False)
    fx = v.type.frac
    k = n.bit_length() - 1 if n & (n - 1) == 0 else None
    lo_sum, hi_sum = min(0, n * v.lo), max(0, n * v.hi)
    if not _cast_exact(v.type, lo_sum, hi_sum, A):
        ibits = _signed_bits(lo_sum, hi_sum) - fx
        ctx.inexact(name, f"accum_t {acc_t.text} cannot hold the sum of {n} inputs exactly",
                    hint=f"use accum_t ap_fixed<{ibits + max(A.frac, fx)},{ibits}> or wider")
    elif k is None:
        ctx.inexact(name, f"hls4ml divides the sum of {n} values by {n} (not a power of two), truncating on "
                          f"accum_t's grid, and then rounds to result_t: the pool op's one rounding is an "
                          f"approximation", hint="use a window of a power-of-two size")
    elif A.frac < fx + k:
        ctx.inexact(name, f"accum_t {acc_t.text} has {A.frac} fractional bits, but the average of {n} inputs "
                          f"needs {fx + k}: hls4ml truncates it before the result cast",
                    hint=f"use accum_t with at least {fx + k} fractional bits")
    st, clamp = (_store_type(ctx, rt, name, name, v.lo * n, v.hi * n, fx + k) if k is not None else
                 _store_type(ctx, rt, name, name, v.lo, v.hi, fx))
    if clamp and v.lo < 0:
        ctx.inexact(name, f"result type {rt.text} is held signed, and a pool op cannot clamp it at zero")
    if k is not None:
        multiplier, shift = 1, fx + k - st.frac
    else:
        multiplier, shift = choose_multiplier(2.0 ** (st.frac - fx) / n)
    return _pool_spec(ctx, name, v, attrs, out_shape, st, shift, multiplier)


def _pool_spec(ctx: _Ctx, name: str, x: _Value, attrs: dict, out_shape, st: FixedType, shift: int,
               multiplier: int) -> _Value:
    spec = _Spec("pool", name, x.tensor, name, np.zeros(0, np.int64), shift, st, multiplier=multiplier, attrs=attrs)
    ctx.specs.append(spec)
    ctx.tensor(name, out_shape, st)
    lo, hi = (x.lo, x.hi) if attrs["mode"] == "max" else _range(st)
    return _Value(name, st, lo, hi, spec, name)


def _named(ctx: _Ctx, v: _Value, name: str) -> _Value:
    """v as the output of the layer `name`: the op making it (the last one, an intermediate of the layer)
    takes the layer's name, so that the exactness report names the layer."""
    spec = v.producer
    if v.tensor != name and spec is not None and spec is ctx.specs[-1] and spec.out == v.tensor \
            and name not in ctx.tensors:
        old = v.tensor
        _rename(spec, name, ctx.tensors)
        spec.name = name
        if old in ctx.approx:
            ctx.approx.discard(old)
            ctx.approx.add(name)
        v = _Value(**{**v.__dict__, "tensor": name})
    return _Value(**{**v.__dict__, "layer": name})


# --- the reference: hls4ml's own C simulation ---------------------------------------------------------------


def _csim_reference(model, graph: Graph, traced: dict[str, list[str]], approx: set[str] = frozenset()):
    """Run the ModelGraph's C simulation (compiled on first use) and return the integers of the IR tensors
    it exposes: the input (as ap_fixed converts the doubles), the output and, when the model was converted
    with Trace enabled, every layer output the IR holds (channels last, flattened). A tensor in `approx`
    holds a wider hls4ml type in fewer bits: the simulation's values are rounded onto it by its own modes."""
    out = graph.outputs[0]
    tin = graph.tensors[graph.inputs[0]]
    want = {t: layers for t, layers in traced.items() if t in graph.tensors}
    state = {"compiled": False}

    def reference(x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
        if not state["compiled"]:
            if getattr(model, "_top_function_lib", None) is None:
                if any(layer.get_attr("trace", False) for layer in model.get_layers()):
                    model.config.trace_output = True
                model.compile()
            state["compiled"] = True
        result = {graph.inputs[0]: tin.quantize(x)}
        traces = _trace(model, x) if model.config.trace_output else {}
        y = np.asarray(model._predict(x) if not traces else traces.pop("__output__"), dtype=np.float64)
        result[out] = _integers(y.reshape(len(x), -1), graph.tensors[out].type, out, out in approx)
        for t, layers in want.items():
            for layer in layers:
                if layer in traces and t != out:
                    result[t] = _integers(traces[layer].reshape(len(x), -1), graph.tensors[t].type, t, t in approx)
                    break
        return result

    return reference


def _integers(y: np.ndarray, t: FixedType, what: str, approx: bool = False) -> np.ndarray:
    if approx:
        return quantize_float(y, t)
    frac = t.frac
    scaled = np.ldexp(y, frac)
    q = np.round(scaled)
    if np.any(q != scaled):
        raise ModelError(f"the C simulation's values of '{what}' are not on the grid 2^-{frac}")
    return q.astype(np.int64)


def _trace(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-layer outputs from the compiled C simulation's trace storage (as ModelGraph.trace collects them,
    without compiling again)."""
    import ctypes
    import os

    lib = model._top_function_lib
    if not hasattr(lib, "collect_trace_output"):
        return {}
    top, ctype = model._get_top_function(x)
    sizes = {layer.name: int(np.prod(layer.get_output_variable().shape)) for layer in model.get_layers()
             if layer.get_attr("function_cpp", None) and layer.get_attr("trace", False)}

    class TraceData(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.c_void_p)]

    n_traced = sum(len(layer.get_variables()) for layer in model.get_layers()
                   if layer.name in sizes)
    lib.collect_trace_output.argtypes = [ctypes.POINTER(TraceData)]
    lib.collect_trace_output.restype = None
    lib.allocate_trace_storage.argtypes = [ctypes.c_size_t]
    lib.allocate_trace_storage.restype = None
    lib.free_trace_storage.argtypes = None
    lib.free_trace_storage.restype = None
    data = (TraceData * n_traced)()
    n_out = int(np.prod(model.get_output_variables()[0].shape))
    traces: dict[str, list] = {k: [] for k in sizes}
    outputs = []
    cwd = os.getcwd()
    os.chdir(model.config.get_output_dir() + "/firmware")
    try:
        lib.allocate_trace_storage(ctypes.sizeof(ctype))
        for row in x:
            y = np.zeros(n_out, dtype=np.float64)
            top(np.ascontiguousarray(row), y)
            outputs.append(y)
            lib.collect_trace_output(data)
            for item in data:
                nm = item.name.decode()
                arr = np.ctypeslib.as_array(ctypes.cast(item.data, ctypes.POINTER(ctypes.c_double)),
                                            shape=(sizes[nm],))
                traces[nm].append(arr.copy())
        lib.free_trace_storage()
    finally:
        os.chdir(cwd)
    res = {k: np.asarray(v) for k, v in traces.items()}
    res["__output__"] = np.asarray(outputs)
    return res


__all__ = ["import_hls4ml", "HINT_INSTALL"]
