"""hls4ml ModelGraphs (io_parallel and io_stream) into the aieflow Graph, bit-exact with hls4ml's C simulation.

io_stream changes how values travel between layers (FIFOs of packed pixels), not what a layer computes: its
Dense (nnet_dense_stream.h) unpacks the stream and calls the same dense kernel, and its activations cast each
value as io_parallel's do, so both io types convert alike.

hls4ml's C simulation computes a Dense layer (nnet_dense_latency.h) as: every product x * w exactly, cast to
accum_t; the bias cast to accum_t; the products added one by one into the accum_t accumulator (each sum cast
back to accum_t, with its overflow mode); the accumulator cast to result_t by result_t's quantization and
overflow modes. Weights and biases reach the C++ as decimal text (hls4ml prints each value with as many
decimals as the type has fractional bits) read into a double and converted to weight_t / bias_t.

The IR's dense op computes the same sum exactly and rounds once (numerics.requantize). The two agree when
every product lands on accum_t's grid and no partial sum can leave accum_t's range; both are proven here from
the weights and the input's range, layer by layer, and a layer where they cannot be proven is refused with
the accum_t that would work. The bias cast to accum_t is a constant and is reproduced exactly, whatever it
rounds or wraps. One exception to the range rule is exact too: a wrapping accumulator feeding a wrapping
result with no more integer bits and a rounding mode that does not look at the sign, since then the wrap
of the accumulator is lost in the wrap of the result.

Activation layers (relu, linear) cast their input to their own result type. When that cast is exact (no
bits lost, no overflow) a relu is fused into the producing dense op and a linear activation is nothing;
otherwise the activation becomes a requantization: a requant op (ops.requant.requant_op: the cast's shift, rounding,
saturation and relu, feature by feature, with no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from ..ir import Graph, Tensor
from ..ops.dense import dense_op
from ..ops.requant import requant_op
from ..numerics import (AP_NO_NATIVE_MODE, AP_ROUNDING, AP_SATURATION, FixedType, Rounding, Saturation,
                        quantize_float, srs)
from . import Imported

HINT_INSTALL = "pip install aieflow[hls4ml]"

# Rounding modes where round(v + k) = round(v) + k for every integer k (they do not look at the sign).
_TRANSLATION_INVARIANT = (Rounding.FLOOR, Rounding.CEIL, Rounding.POSITIVE_INF, Rounding.NEGATIVE_INF,
                          Rounding.CONV_EVEN, Rounding.CONV_ODD)
_PASS_THROUGH = ("Reshape", "Flatten")


@dataclass(frozen=True)
class ApType:
    """An hls4ml fixed-point precision: the exact value type, written as hls4ml writes it."""

    fixed: FixedType  # bits, signed, frac, rounding, saturation
    text: str

    @property
    def integer(self) -> int:
        return self.fixed.bits - self.fixed.frac


@dataclass
class _Value:
    """What an hls4ml layer's output is in the IR: a tensor whose integers at `type` are the layer's values
    exactly, with known bounds on those integers."""

    tensor: str
    type: FixedType
    lo: int
    hi: int
    producer: "_DenseSpec | None" = None  # the dense op making it, while it may still take a fused relu
    layer: str = ""  # the hls4ml layer whose output this is (for trace outputs)
    private: bool = False  # read by one layer only and not a model output: a relu may be fused into it
    # A dense result too wide to store (hls4ml's 'auto' result types are), waiting for the activation that
    # reads it: `exact` says whether hls4ml's cast of the sums into it loses nothing, so that the two casts
    # (dense result, then activation) are the activation's cast alone.
    wide: bool = False
    exact: bool = True


@dataclass
class _DenseSpec:
    name: str
    x: str
    out: str
    weight: np.ndarray
    weight_type: FixedType
    bias: np.ndarray
    shift: int
    out_type: FixedType
    relu: bool
    requant: bool = False  # an activation's cast on its own: a requant op (weight is the identity, bias 0)


def import_hls4ml(hls_model) -> Imported:
    """An hls4ml ModelGraph as an Imported: its Graph and hls4ml's own C simulation as the reference."""
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
    graph, traced = _convert(hls_model)
    backend = getattr(hls_model.config.backend, "name", "")
    reference = _csim_reference(hls_model, graph, traced) if backend != "AIEFlow" else None
    return Imported(graph, "hls4ml C simulation", reference)


# --- precisions -------------------------------------------------------------------------------------------


def _ap_type(precision, layer: str, what: str) -> ApType:
    """An hls4ml precision as an exact FixedType; refuses what has no exact equivalent."""
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


# --- the conversion -----------------------------------------------------------------------------------------


def _convert(model) -> tuple[Graph, dict[str, str]]:
    tensors: dict[str, Tensor] = {}
    specs: list[_DenseSpec] = []
    values: dict[str, _Value] = {}  # hls4ml output variable / layer name -> value
    inputs: list[str] = []
    layers = list(model.get_layers())
    readers: dict[str, int] = {}
    for layer in layers:
        for i in layer.inputs:
            readers[i] = readers.get(i, 0) + 1
    model_outputs = set(_output_layers(model))
    changed: set[str] = set()  # tensors a relu was fused into after their layers' outputs were recorded
    for layer in layers:
        kind = layer.class_name
        name = layer.name
        srcs = [values[i] for i in layer.inputs if i in values]
        if kind in ("Input", "InputLayer"):
            t = _ap_type(layer.get_output_variable().type.precision, name, "input")
            ft, _ = _storable(t, name, "input")
            if ft is not t.fixed:
                raise ModelError(f"input type {t.text} cannot be stored as int8, uint8 or int16", node=name,
                                 hint="use a signed input type of at most 16 bits or an unsigned one of at most 8")
            n = _features(layer)
            tensors[name] = Tensor(name, (n,), ft)
            inputs.append(name)
            lo, hi = _range(ft)
            values[name] = _Value(name, ft, lo, hi, None, name)
        elif len(srcs) != len(layer.inputs) or len(srcs) != 1:
            raise ModelError(f"layer {kind} reads {list(layer.inputs)}; aieflow supports one input per layer",
                             node=name, hint="use a chain of Dense and Activation layers")
        elif kind in _PASS_THROUGH:
            values[name] = _Value(**{**srcs[0].__dict__, "layer": name})
        elif kind == "Dense":
            values[name] = _dense(layer, srcs[0], tensors, specs, _feeds_one_activation(layer, layers, model_outputs))
        elif kind == "Activation" or kind == "ReLU":
            act = str(layer.get_attr("activation", "relu" if kind == "ReLU" else "")).lower()
            if act not in ("relu", "linear"):
                raise ModelError(f"activation '{act}' is not supported", node=name, hint="use relu or linear")
            values[name] = _activation(layer, srcs[0], act == "relu", tensors, specs, changed)
        elif kind == "BatchNormalization":
            raise ModelError("a BatchNormalization that hls4ml did not fold into the Dense before it is not "
                             "supported", node=name, hint="place BatchNormalization right after a Dense layer "
                                                         "so that hls4ml's fuse_batchnorm folds it")
        else:
            raise ModelError(f"layer type {kind} is not supported", node=name,
                             hint="supported: Input, Dense, Activation (relu, linear), Reshape/Flatten")
        v = values.get(name)
        if v is not None:
            v.private = readers.get(name, 0) == 1 and name not in model_outputs and (
                kind not in _PASS_THROUGH or srcs[0].private)
            for o in layer.outputs:
                values.setdefault(o, v)
    outs = [values[o] for o in _output_layers(model)]
    if len(inputs) != 1 or len(outs) != 1:
        raise ModelError(f"the model has {len(inputs)} inputs and {len(outs)} outputs; aieflow supports one each")
    ops = tuple(requant_op(s.name, s.x, s.out, s.bias, s.shift, 1, s.relu) if s.requant else
                dense_op(s.name, s.x, s.out, s.weight, s.bias, s.weight_type, s.shift, 1, s.relu) for s in specs)
    out = outs[0]
    if out.tensor == inputs[0]:
        raise ModelError("the model computes nothing", hint="add a Dense layer")
    traced = {}  # IR tensor -> hls4ml layer whose (traced) output it holds exactly
    for v in values.values():
        if v.tensor != inputs[0] and v.tensor not in changed:
            traced.setdefault(v.tensor, [])
            traced[v.tensor].append(v.layer)
    name = str(model.config.get_project_name() or "hls4ml_model")
    return Graph(name, tensors, ops, tuple(inputs), (out.tensor,)).validate(), traced


def _feeds_one_activation(layer, layers, model_outputs) -> bool:
    """The layer's output is read by exactly one relu/linear Activation and is not a model output."""
    readers = [l for l in layers if layer.name in l.inputs or any(o in l.inputs for o in layer.outputs)]
    if len(readers) != 1 or layer.name in model_outputs:
        return False
    r = readers[0]
    act = str(r.get_attr("activation", "relu" if r.class_name == "ReLU" else "")).lower()
    return r.class_name in ("Activation", "ReLU") and act in ("relu", "linear")


def _features(layer) -> int:
    shape = [int(d) for d in layer.get_output_variable().shape]
    if len(shape) != 1 and not (len(shape) > 1 and all(d == 1 for d in shape[:-1])):
        raise ModelError(f"output shape {shape} is not a flat feature vector", node=layer.name,
                         hint="aieflow maps [batch, features] models")
    return shape[-1]


def _output_layers(model) -> list[str]:
    outs = list(getattr(model, "outputs", []) or [])
    if not outs:
        outs = [model.get_layers()[-1].name] if model.get_layers() else []
    return outs


def _dense(layer, x: _Value, tensors, specs, before_activation: bool = False) -> _Value:
    name = layer.name
    strategy = str(layer.get_attr("strategy", "latency")).lower()
    if strategy not in ("latency", "resource"):
        raise ModelError(f"strategy '{strategy}' is not supported", node=name, hint="use Strategy: Latency")
    n_in, n_out = int(layer.get_attr("n_in")), int(layer.get_attr("n_out"))
    w_var, b_var = layer.weights["weight"], layer.weights.get("bias")
    wt = _ap_type(w_var.type.precision, name, "weight")
    acc_t = _ap_type(layer.get_attr("accum_t").precision, name, "accum")
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    w = _weight_integers(w_var, wt)
    from hls4ml.model.types import IntegerPrecisionType

    if isinstance(w_var.type.precision, IntegerPrecisionType) and wt.fixed.bits == 2 and wt.fixed.signed \
            and np.any(w == -2):
        raise ModelError(f"weight type {wt.text} makes hls4ml use its ternary product, which reads -2 as +1",
                         node=name, hint="use weights in {-1, 0, 1} or a wider weight type")
    if w.size != n_in * n_out:
        raise ModelError(f"weight has {w.size} values, expected {n_in} x {n_out}", node=name)
    w = w.reshape(n_in, n_out).astype(object)
    A = acc_t.fixed
    fx, fw, fa = x.type.frac, wt.fixed.frac, A.frac
    if b_var is not None:
        bt = _ap_type(b_var.type.precision, name, "bias")
        b = _weight_integers(b_var, bt).reshape(n_out)
        b_acc = srs(b, bt.fixed.frac - fa, A) if bt.fixed.frac - fa < 63 else np.zeros(n_out, np.int64)
    else:
        b_acc = np.zeros(n_out, dtype=np.int64)
    b_acc = b_acc.astype(object)
    # The grid of the products: the weights' common power of two may make it coarser than fx + fw.
    v2w = _v2(w)
    g = fw - v2w if v2w is not None else fa - fx
    if fx + g > fa:
        need = fx + g
        raise ModelError(
            f"accum_t {acc_t.text} has {fa} fractional bits but the products input x weight need {need}: "
            f"hls4ml rounds every product to the accumulator, which one rounding at the end cannot reproduce",
            node=name, hint=f"use accum_t ap_fixed<{acc_t.integer + need},{acc_t.integer}> or wider")
    v2b = _v2(np.array(b_acc))
    F = max(fx + g, fa - v2b if v2b is not None else fx + g)  # the IR accumulator's fractional bits, <= fa
    wq = [[int(v) * 2 ** (F - fx - fw) if F - fx - fw >= 0 else int(v) // 2 ** (fx + fw - F) for v in row]
          for row in w]
    bias = [int(v) // 2 ** (fa - F) for v in b_acc]
    wmax = max((abs(v) for row in wq for v in row), default=0)
    wbits = max(2, _signed_bits(-wmax, wmax))
    if wbits > 16:
        raise ModelError(f"weight type {wt.text} on the accumulator's grid needs {wbits} bits; AI Engine "
                         f"weights are int8 or int16", node=name, hint="use weights of at most 16 bits")
    # Bounds of every partial sum, on the IR grid F.
    lows, highs = [], []
    for j in range(n_out):  # the bias alone, each product alone, and every partial sum lie in [lo, hi]
        lo, hi = min(0, bias[j]), max(0, bias[j])
        for k in range(n_in):
            a, c = wq[k][j] * x.lo, wq[k][j] * x.hi
            lo += min(0, a, c)
            hi += max(0, a, c)
        lows.append(lo)
        highs.append(hi)
    lo_a, hi_a = min(lows, default=0) * 2 ** (fa - F), max(highs, default=0) * 2 ** (fa - F)
    fits = A.qmin <= lo_a and hi_a <= A.qmax
    R = rt.fixed
    try:
        st, relu_for_storage = _storable(rt, name, "result")
    except ModelError:
        if not before_activation:
            raise
        return _wide_dense(name, x, wq, fx, bias, F, rt, fits, lows, highs, n_in, n_out, tensors, specs)
    if not fits:
        wrap_ok = (A.saturation is Saturation.NONE and R.saturation is Saturation.NONE and not relu_for_storage
                   and R.rounding in _TRANSLATION_INVARIANT and acc_t.integer >= rt.integer)
        if not wrap_ok:
            ibits = _signed_bits(lo_a, hi_a) - fa
            raise ModelError(
                f"accum_t {acc_t.text} could overflow: partial sums reach [{_real(lo_a, fa)}, {_real(hi_a, fa)}], "
                f"which hls4ml would {'saturate' if A.saturation is not Saturation.NONE else 'wrap'} before "
                f"the result cast", node=name,
                hint=f"use accum_t ap_fixed<{ibits + fa},{ibits}> or wider")
    wtype = FixedType(wbits, True, F - fx)
    out = name
    spec = _DenseSpec(name, x.tensor, out, np.array(wq, dtype=np.int64).reshape(n_in, n_out),
                      wtype, np.array(bias, dtype=np.int64), F - st.frac, st, relu_for_storage)
    specs.append(spec)
    tensors[out] = Tensor(out, (n_out,), st)
    lo, hi = _range(st, nonneg=relu_for_storage)
    return _Value(out, st, lo, hi, spec, name)


def _wide_dense(name, x, wq, fx, bias, F, rt, fits, lows, highs, n_in, n_out, tensors, specs) -> _Value:
    """A dense whose result type cannot be stored, read only by an activation: kept as a spec whose output
    type the activation decides (see _activation). hls4ml casts the sums into the result type first; that
    cast is exact when the type has the sums' fractional bits and range."""
    R = rt.fixed
    lo, hi = min(lows, default=0), max(highs, default=0)
    d = R.frac - F
    exact = fits and d >= 0 and R.qmin <= lo * 2**d and hi * 2**d <= R.qmax
    if exact and R.saturation is Saturation.SYMMETRIC and R.signed:
        exact = lo * 2**d > R.qmin
    wmax = max((abs(v) for row in wq for v in row), default=0)
    spec = _DenseSpec(name, x.tensor, name, np.array(wq, dtype=np.int64).reshape(n_in, n_out),
                      FixedType(max(2, _signed_bits(-wmax, wmax)), True, F - fx), np.array(bias, dtype=np.int64),
                      F - R.frac, R, False)
    specs.append(spec)
    tensors[name] = Tensor(name, (n_out,), R)
    return _Value(name, R, lo * 2**max(d, 0), hi * 2**max(d, 0), spec, name, wide=True, exact=exact)


def _activation_of_wide(layer, x: _Value, relu: bool, rt: ApType, tensors) -> _Value:
    """relu / linear after a dense whose result is too wide to store: when hls4ml's cast into that result
    loses nothing, the dense op produces the activation's type directly (its rounding, saturation, relu)."""
    name = layer.name
    spec = x.producer
    wide_text = f"ap_{'' if x.type.signed else 'u'}fixed<{x.type.bits},{x.type.bits - x.type.frac}>"
    if not x.exact:
        raise ModelError(f"the result type {wide_text} of '{spec.name}' has {x.type.bits} bits (more than the "
                         f"16 an AI Engine activation holds) and hls4ml's cast into it rounds or overflows before "
                         f"'{name}' casts again", node=name,
                         hint=f"give '{spec.name}' a result type of at most 16 bits, or one wide enough to hold "
                              "its sums exactly (hls4ml's 'auto')")
    st, relu_for_storage = _storable(rt, name, "result")
    if relu and rt.fixed.saturation is Saturation.NONE and x.lo < 0:
        raise ModelError(f"relu into the wrapping type {rt.text} after a layer that can be negative cannot be "
                         "fused exactly", node=name, hint="use SAT or SAT_SYM for this activation")
    F = spec.shift + spec.out_type.frac  # the sums' fractional bits
    spec.shift = F - st.frac
    spec.out_type = st
    spec.relu = relu or relu_for_storage
    tensors.pop(spec.out)
    spec.out = name
    tensors[name] = Tensor(name, (int(spec.weight.shape[1]),), st)
    lo, hi = _range(st, nonneg=spec.relu)
    return _Value(name, st, lo, hi, spec, name)


def _real(q: int, frac: int) -> str:
    return format(q / 2**frac, "g") if abs(q) < 2**53 else f"{q}*2^-{frac}"


def _activation(layer, x: _Value, relu: bool, tensors, specs, changed) -> _Value:
    """relu / linear: the input cast to this layer's result type (relu first)."""
    name = layer.name
    rt = _ap_type(layer.get_output_variable().type.precision, name, "result")
    if x.wide:
        return _activation_of_wide(layer, x, relu, rt, tensors)
    R = rt.fixed
    lo = max(x.lo, 0) if relu else x.lo
    hi = max(x.hi, 0) if relu else x.hi
    d = R.frac - x.type.frac
    exact = d >= 0 and R.qmin <= lo * 2**d and hi * 2**d <= R.qmax
    if R.saturation is Saturation.SYMMETRIC and R.signed:
        exact = exact and lo * 2**d > R.qmin
    fusable = x.producer is not None and x.private and x.producer.out == x.tensor
    if exact and (not relu or x.lo >= 0):
        return _Value(x.tensor, x.type, lo, hi, x.producer, name)
    if exact and fusable:  # a relu the producing dense op can apply: its output type already holds the result
        spec = x.producer
        spec.relu = True
        _rename(spec, name, tensors)
        return _Value(name, x.type, lo, hi, spec, name)
    # A requantization: a requant op (the cast alone, feature by feature).
    st, relu_for_storage = _storable(rt, name, "result")
    clamp = relu_for_storage
    if relu:
        if fusable:
            x.producer.relu = True  # the identity op then reads relu(x), exactly what hls4ml's relu casts
            changed.add(x.tensor)
        elif x.lo < 0 and R.saturation is Saturation.NONE:
            raise ModelError(f"relu into the wrapping type {rt.text} after a tensor with other readers cannot be "
                             "reproduced exactly", node=name, hint="use SAT or SAT_SYM for this activation")
        else:
            clamp = True  # saturation maps negative values to <= 0, so clamping after is relu before
    n = tensors[x.tensor].features
    spec = _DenseSpec(name, x.tensor, name, np.eye(n, dtype=np.int64), FixedType(2, True, 0),
                      np.zeros(n, dtype=np.int64), x.type.frac - st.frac, st, clamp, requant=True)
    specs.append(spec)
    tensors[name] = Tensor(name, (n,), st)
    lo2, hi2 = _range(st, nonneg=clamp)
    return _Value(name, st, lo2, hi2, spec, name)


def _rename(spec: _DenseSpec, new: str, tensors) -> None:
    t = tensors.pop(spec.out)
    tensors[new] = Tensor(new, (t.features,), t.type)
    spec.out = new


# --- the reference: hls4ml's own C simulation ---------------------------------------------------------------


def _csim_reference(model, graph: Graph, traced: dict[str, list[str]]):
    """Run the ModelGraph's C simulation (compiled on first use) and return the integers of the IR tensors
    it exposes: the input (as ap_fixed converts the doubles), the output and, when the model was converted
    with Trace enabled, every layer output the IR holds."""
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
        result[out] = _integers(y.reshape(len(x), -1), graph.tensors[out].type.frac, out)
        for t, layers in want.items():
            for layer in layers:
                if layer in traces and t != out:
                    result[t] = _integers(traces[layer].reshape(len(x), -1), graph.tensors[t].type.frac, t)
        return result

    return reference


def _integers(y: np.ndarray, frac: int, what: str) -> np.ndarray:
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
