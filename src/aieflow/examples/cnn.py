"""Quantized CNNs as ONNX files, for the convolution tests and benchmarks (not part of the compiler).

- `qdq_cnn`: a QDQ CNN built with onnx.helper from a list of layer specs (ConvSpec, PoolSpec, ...), in the
  form onnxruntime's QDQ quantizer writes: QuantizeLinear / DequantizeLinear around every float op, integer
  weights and an int32 bias behind DequantizeLinear. With pow2=True every scale is 2**-k and every zero point
  0, and the weights are bounded so that onnxruntime's float32 arithmetic is exact (the compiler's fast
  path); with pow2=False scales are arbitrary float32 values and unsigned activations get zero points.
- `random_qdq_cnn`: a random valid CNN of 1 to 4 layers (1-D or 2-D), and a description of what was drawn.
- `sample_cnn_inputs`: float inputs [n, C, H, W] (or [n, C, L]) covering the input quantizer's whole range.
- `run_onnxruntime` / `ort_tensor_values`: onnxruntime (graph optimizations off) as the reference.
- `torch_cnn` / `export_and_quantize`: float PyTorch CNNs, exported by torch.onnx.export and quantized by
  onnxruntime's quantize_static, as a user of those tools would.

Everything is seeded: the same arguments give the same model. torch and onnxruntime are imported only by the
functions that need them.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from ..errors import ModelError

# onnxruntime's Conv / Gemm / pools compute in float32: integer-valued sums are exact below 2**24.
FLOAT32_EXACT = 1 << 24

# Activation (and weight) storage types: numpy dtype and ONNX element type.
_TYPES = {
    "int8": (np.int8, TensorProto.INT8),
    "uint8": (np.uint8, TensorProto.UINT8),
    "int16": (np.int16, TensorProto.INT16),
    "uint16": (np.uint16, TensorProto.UINT16),
}
_OPSET_16_BIT = 21  # QuantizeLinear / DequantizeLinear accept int16 and uint16 from opset 21 on
_RELUS = (None, "relu", "relu6")

# Calibration: a few random input images on the input grid are propagated to choose scales and biases;
# fewer for large inputs (one image of 128 x 64 x 64 already gives every channel 4096 values).
_CALIBRATION_SAMPLES = 4
_CALIBRATION_VALUES = 1 << 14
# Typical |value| (this percentile) is placed at half of an activation type's range (pow2 mode).
_TYPICAL_PERCENTILE = 90.0


# --- layer specs -------------------------------------------------------------------------------------------
#
# `pads` (Conv and pools): an int (every side), a tuple of one int per spatial axis (both sides), a tuple of
# 2 * dims ints in ONNX order (x1_begin, x2_begin, ..., x1_end, x2_end, ...), or 'same' / 'same_lower' (the
# auto_pad attribute SAME_UPPER / SAME_LOWER, output size ceil(in / stride)). Explicit pads are written as
# the `pads` attribute. `act` overrides the model's activation type for a layer's output: 'int8', 'uint8',
# 'int16' or 'uint16'. `source` (Add, Concat) is 'input' (the quantized model input) or the index of an
# earlier layer in the list, whose output is joined with the previous layer's output.


@dataclass(frozen=True)
class ConvSpec:
    """Conv (1-D or 2-D, by the input's rank), bias, then Relu / Clip(0, 6) when `relu` says.

    groups: 1, 'depthwise' (groups = input channels; out_channels None means as many as the input has), or
    any int dividing both channel counts."""

    out_channels: int | None = None
    kernel: int | tuple[int, ...] = 3
    stride: int | tuple[int, ...] = 1
    pads: int | tuple[int, ...] | str = "same"
    groups: int | str = 1
    relu: str | None = None
    weight_bits: int = 8
    act: str | None = None


@dataclass(frozen=True)
class PoolSpec:
    """MaxPool or AveragePool; stride None means the kernel (non-overlapping windows).

    A max pool's output has its input's scale and zero point (as onnxruntime's quantizer writes it); an
    average pool's output gets its own scale. count_include_pad is written only when 1 (ONNX default 0)."""

    kind: str = "max"
    kernel: int | tuple[int, ...] = 2
    stride: int | tuple[int, ...] | None = None
    pads: int | tuple[int, ...] | str = 0
    count_include_pad: int = 0
    act: str | None = None


@dataclass(frozen=True)
class GlobalPoolSpec:
    """GlobalAveragePool ('avg'), GlobalMaxPool ('max') or ReduceMean over the spatial axes, keepdims=1
    ('reducemean': axes an attribute below opset 18, an input from 18 on). Output [N, C, 1, 1] (or [N, C, 1])."""

    kind: str = "avg"
    act: str | None = None


@dataclass(frozen=True)
class AddSpec:
    """Residual Add of the previous output and `source`'s output (same shape), then an optional Relu."""

    source: int | str = "input"
    relu: str | None = None
    act: str | None = None


@dataclass(frozen=True)
class ConcatSpec:
    """Concat along channels (axis 1) of the previous output and `source`'s output (same spatial shape)."""

    source: int | str = "input"
    act: str | None = None


@dataclass(frozen=True)
class FlattenSpec:
    """Flatten(axis=1) ('flatten') or Reshape to [-1, features] ('reshape', as the dynamo exporter writes a
    view); the output keeps its input's scale and zero point."""

    form: str = "flatten"


@dataclass(frozen=True)
class DenseSpec:
    """Gemm on [N, features] with int weights stored [out, in] (transB=1, as PyTorch's Linear) or [in, out]."""

    out: int
    relu: str | None = None
    weight_bits: int = 8
    trans_b: bool = True
    act: str | None = None


LayerSpec = ConvSpec | PoolSpec | GlobalPoolSpec | AddSpec | ConcatSpec | FlattenSpec | DenseSpec
_SPEC_KIND = {ConvSpec: "conv", PoolSpec: "pool", GlobalPoolSpec: "global_pool", AddSpec: "add",
              ConcatSpec: "concat", FlattenSpec: "flatten", DenseSpec: "dense"}


# --- quantization types ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _QType:
    """A quantized activation: storage type, float32 scale, zero point; `frac` when the scale is 2**-frac."""

    dtype: str
    scale: float
    zero_point: int
    frac: int | None = None

    @property
    def qmin(self) -> int:
        return int(np.iinfo(_TYPES[self.dtype][0]).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(_TYPES[self.dtype][0]).max)

    @property
    def magnitude(self) -> int:
        """Largest |q - zero_point|: the worst-case integer an op sees."""
        return max(self.zero_point - self.qmin, self.qmax - self.zero_point)

    def fake_quantize(self, v: np.ndarray) -> np.ndarray:
        """QuantizeLinear then DequantizeLinear (round half to even, saturate), in float64."""
        q = np.clip(np.round(v / self.scale) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * self.scale


@dataclass
class _Tensor:
    """A dequantized float tensor of the graph: its name, shape without the batch, type, calibration values."""

    name: str
    shape: tuple[int, ...]
    qtype: _QType
    scale_name: str
    zero_name: str
    values: np.ndarray  # [calibration samples, *shape], float64, on the qtype's grid


# --- the builder -------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, rng: np.random.Generator, pow2: bool, opset: int, default_act: str) -> None:
        self.rng = rng
        self.pow2 = pow2
        self.opset = opset
        self.default_act = default_act
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    # graph pieces

    def constant(self, name: str, value) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs))
        return output

    def qdq(self, source: str, prefix: str, qtype: _QType, shape, values, shared: _Tensor | None = None) -> _Tensor:
        """QuantizeLinear then DequantizeLinear of `source`; `shared` reuses an input's scale and zero point."""
        if shared is not None:
            scale, zero = shared.scale_name, shared.zero_name
        else:
            scale = self.constant(f"{prefix}_scale", np.float32(qtype.scale))
            zero = self.constant(f"{prefix}_zero_point", np.array(qtype.zero_point, dtype=_TYPES[qtype.dtype][0]))
        q = self.node("QuantizeLinear", [source, scale, zero], f"{prefix}_q")
        dq = self.node("DequantizeLinear", [q, scale, zero], f"{prefix}_dq")
        return _Tensor(dq, tuple(shape), qtype, scale, zero, qtype.fake_quantize(values))

    def dequantized(self, prefix: str, q: np.ndarray, dtype: str, scale: float) -> str:
        """An integer initializer behind a DequantizeLinear of per-tensor `scale`, zero point 0."""
        stored = self.constant(f"{prefix}_quantized", q.astype(dtype))
        s = self.constant(f"{prefix}_scale", np.float32(scale))
        z = self.constant(f"{prefix}_zero_point", np.zeros((), dtype=dtype))
        return self.node("DequantizeLinear", [stored, s, z], f"{prefix}_dq")

    def activation(self, x: str, relu: str | None, prefix: str) -> str:
        if relu == "relu":
            return self.node("Relu", [x], f"{prefix}_relu")
        if relu == "relu6":
            if self.opset >= 11:
                lo = self.constant(f"{prefix}_clip_min", np.float32(0.0))
                hi = self.constant(f"{prefix}_clip_max", np.float32(6.0))
                return self.node("Clip", [x, lo, hi], f"{prefix}_relu6")
            return self.node("Clip", [x], f"{prefix}_relu6", min=0.0, max=6.0)
        return x

    # numbers

    def act_type(self, spec_act: str | None) -> str:
        act = spec_act or self.default_act
        if act not in _TYPES:
            raise ModelError(f"activation type {act!r} is not one of {tuple(_TYPES)}")
        return act

    def choose_qtype(self, values: np.ndarray, dtype: str) -> _QType:
        """An output type for these calibration values: typical |v| at half range (pow2), or min/max (not)."""
        info = np.iinfo(_TYPES[dtype][0])
        signed = info.min < 0
        if self.pow2:
            seen = values if signed else np.maximum(values, 0.0)
            typical = float(np.percentile(np.abs(seen), _TYPICAL_PERCENTILE)) if seen.size else 0.0
            if typical == 0.0:
                typical = float(np.abs(seen).max(initial=0.0)) or 1.0
            frac = int(np.clip(np.round(np.log2((info.max / 2) / typical)), -24, 40))
            return _QType(dtype, float(2.0 ** -frac), 0, frac)
        # Arbitrary scales, as a calibrating quantizer gives them: the observed range, a little widened.
        lo, hi = min(float(values.min(initial=0.0)), 0.0), max(float(values.max(initial=0.0)), 0.0)
        widen = float(self.rng.uniform(1.0, 1.2))
        if signed:
            bound = max(-lo, hi) * widen or 1.0
            scale = np.float32(bound / info.max)
            return _QType(dtype, float(scale), 0)
        span = (hi - lo) * widen or 1.0
        scale = np.float32(span / (int(info.max) - int(info.min)))
        zero = int(np.clip(np.round(-lo * widen / float(scale)), info.min, info.max))
        return _QType(dtype, float(scale), zero)

    def weights(self, shape: tuple[int, ...], fan_in: int, bits: int, x: _QType, what: str):
        """Integer weights (both signs, the largest at the bound) and their per-tensor scale.

        pow2: act_magnitude * fan_in * w_max < 2**24, so every partial sum of a float32 Conv / Gemm is an
        exact integer (with the bias bound in `bias`). Real weights are about 1/sqrt(fan_in) in spread, as a
        trained layer's are, so activations keep their magnitude from layer to layer."""
        if bits not in (8, 16):
            raise ModelError(f"{what}: weights of {bits} bits are not supported", hint="use weight_bits=8 or 16")
        w_max = (1 << (bits - 1)) - 1
        if self.pow2:
            w_max = min(w_max, (FLOAT32_EXACT - 1) // (x.magnitude * fan_in))
            if w_max < 1:
                raise ModelError(f"{what}: a fan-in of {fan_in} cannot stay float32-exact with inputs up to "
                                 f"{x.magnitude} in magnitude", hint="fewer channels or a smaller kernel, or "
                                 "8-bit activations")
        z = self.rng.normal(size=shape)
        peak = float(np.abs(z).max()) or 1.0
        q = np.round(z / peak * w_max).astype(np.int64)
        spread = float(q.std()) or 1.0
        if self.pow2:
            frac = int(np.round(np.log2(spread * np.sqrt(fan_in))))
            return q, float(2.0 ** -frac)
        return q, float(np.float32(float(self.rng.uniform(0.7, 1.4)) / (spread * np.sqrt(fan_in))))

    def bias(self, acc: np.ndarray, unit: float, w: np.ndarray, x: _QType) -> np.ndarray:
        """int32 bias on the accumulator grid (scale s_x * s_w): cancels each channel's mean on the calibration
        values (as training would) plus a modest random part of both signs; float32-exact in pow2 mode."""
        m = acc.shape[1]
        axes = (0,) + tuple(range(2, acc.ndim))
        centre = -acc.mean(axis=axes)
        typical = float(np.percentile(np.abs(acc - acc.mean(axis=axes, keepdims=True)), 75)) if acc.size else 0.0
        signs = self.rng.permutation(np.where(np.arange(m) % 2 == 0, 1.0, -1.0))
        real = centre + signs * self.rng.uniform(0.0, 0.25, size=m) * typical
        q = np.round(real / unit)
        if self.pow2:
            room = FLOAT32_EXACT - 1 - x.magnitude * np.abs(w.reshape(m, -1)).sum(axis=1)
            q = np.clip(q, -room, room)
        return np.clip(q, -(2 ** 31), 2 ** 31 - 1).astype(np.int64)


def _ints(v, d: int, what: str) -> tuple[int, ...]:
    t = (int(v),) * d if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)
    if len(t) != d or any(a < 1 for a in t):
        raise ModelError(f"{what} {v!r} needs {d} positive value(s), one per spatial axis")
    return t


def _resolve_pads(pads, spatial, kernel, stride, what: str):
    """(begins, ends, attributes) of a Conv / pool: explicit `pads`, or auto_pad SAME_UPPER / SAME_LOWER."""
    d = len(spatial)
    if isinstance(pads, str):
        mode = {"same": "SAME_UPPER", "same_upper": "SAME_UPPER", "same_lower": "SAME_LOWER"}.get(pads.lower())
        if mode is None:
            raise ModelError(f"{what}: pads {pads!r} is not 'same', 'same_lower' or explicit integers")
        begins, ends = [], []
        for n, k, s in zip(spatial, kernel, stride):
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            small = total // 2
            begins.append(small if mode == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return tuple(begins), tuple(ends), {"auto_pad": mode}
    p = (int(pads),) * (2 * d) if isinstance(pads, (int, np.integer)) else tuple(int(a) for a in pads)
    if len(p) == d:
        p = p + p
    if len(p) != 2 * d or any(a < 0 for a in p):
        raise ModelError(f"{what}: pads {pads!r} needs 1, {d} or {2 * d} non-negative integers")
    return p[:d], p[d:], {"pads": list(p)}


def _out_size(spatial, kernel, stride, begins, ends, what: str) -> tuple[int, ...]:
    out = tuple((n + b + e - k) // s + 1 for n, k, s, b, e in zip(spatial, kernel, stride, begins, ends))
    if any(n + b + e < k for n, k, b, e in zip(spatial, kernel, begins, ends)):
        raise ModelError(f"{what}: a kernel {kernel} does not fit the padded input {spatial}")
    return out


def _windows(x: np.ndarray, kernel, stride, begins, ends, fill: float) -> np.ndarray:
    """[n, C, *out, *kernel] windows of x [n, C, *spatial] padded with `fill`."""
    d = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(begins, ends)), constant_values=fill)
    win = sliding_window_view(xp, tuple(kernel), axis=tuple(range(2, 2 + d)))
    return win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]


def _conv(x, w, b, stride, begins, ends, groups) -> np.ndarray:
    """The float Conv of x [n, C, *spatial] with w [M, C / groups, *kernel] and b [M] (calibration only)."""
    n, c = x.shape[:2]
    d = x.ndim - 2
    m = w.shape[0]
    win = _windows(x, w.shape[2:], stride, begins, ends, 0.0)
    out = win.shape[2:2 + d]
    win = win.reshape(n, groups, c // groups, *out, *w.shape[2:])
    wg = w.reshape(groups, m // groups, c // groups, *w.shape[2:])
    o, k = "pqr"[:d], "uvw"[:d]
    y = np.einsum(f"ngc{o}{k},gmc{k}->ngm{o}", win, wg, optimize=True).reshape(n, m, *out)
    return y + b.reshape(1, m, *([1] * d))


def _pool(x, kind, kernel, stride, begins, ends, count_include_pad) -> np.ndarray:
    d = len(kernel)
    axes = tuple(range(-d, 0))
    if kind == "max":
        return _windows(x, kernel, stride, begins, ends, -np.inf).max(axis=axes)
    total = _windows(x, kernel, stride, begins, ends, 0.0).sum(axis=axes)
    if count_include_pad:
        return total / float(np.prod(kernel))
    ones = np.ones((1, 1) + x.shape[2:])
    return total / _windows(ones, kernel, stride, begins, ends, 0.0).sum(axis=axes)


def _relu(v: np.ndarray, relu: str | None) -> np.ndarray:
    if relu == "relu":
        return np.maximum(v, 0.0)
    if relu == "relu6":
        return np.clip(v, 0.0, 6.0)
    return v


def _check_exact_sum(b: _Builder, terms: int, magnitude: int, what: str) -> None:
    """pow2 mode: a float32 sum of `terms` integers up to `magnitude` must stay below 2**24 to be exact."""
    if b.pow2 and terms * magnitude >= FLOAT32_EXACT:
        raise ModelError(f"{what}: a sum of {terms} values up to {magnitude} is not float32-exact",
                         hint="a smaller window or spatial size, or 8-bit activations")


def _source(tensors: list[_Tensor], source, i: int, what: str) -> _Tensor:
    if source == "input":
        return tensors[0]
    if not isinstance(source, (int, np.integer)) or not 0 <= int(source) < i:
        raise ModelError(f"{what}: source {source!r} must be 'input' or the index of an earlier layer (< {i})")
    return tensors[int(source) + 1]


def _layer(b: _Builder, spec, i: int, x: _Tensor, tensors: list[_Tensor]) -> _Tensor:
    """Emit layer `i` after x; return its dequantized output."""
    what = f"layer {i} ({type(spec).__name__})"
    p = f"l{i}"
    if isinstance(spec, ConvSpec):
        return _conv_layer(b, spec, p, x, what)
    if isinstance(spec, PoolSpec):
        return _pool_layer(b, spec, p, x, what)
    if isinstance(spec, GlobalPoolSpec):
        return _global_pool_layer(b, spec, p, x, what)
    if isinstance(spec, (AddSpec, ConcatSpec)):
        return _join_layer(b, spec, p, x, _source(tensors, spec.source, i, what), what)
    if isinstance(spec, FlattenSpec):
        if len(x.shape) < 2:
            raise ModelError(f"{what}: the input is already flat")
        features = int(np.prod(x.shape))
        if spec.form == "flatten":
            y = b.node("Flatten", [x.name], f"{p}_flatten", axis=1)
        elif spec.form == "reshape":
            shape = b.constant(f"{p}_shape", np.array([-1, features], dtype=np.int64))
            y = b.node("Reshape", [x.name, shape], f"{p}_reshape")
        else:
            raise ModelError(f"{what}: form {spec.form!r} is not 'flatten' or 'reshape'")
        values = x.values.reshape(len(x.values), features)
        return b.qdq(y, f"{p}_out", x.qtype, (features,), values, shared=x)
    if isinstance(spec, DenseSpec):
        return _dense_layer(b, spec, p, x, what)
    raise ModelError(f"{what}: {spec!r} is not a layer spec", hint=f"use one of {[t.__name__ for t in _SPEC_KIND]}")


def _check_relu(relu, what: str) -> None:
    if relu not in _RELUS:
        raise ModelError(f"{what}: relu {relu!r} is not one of {_RELUS}")


def _conv_layer(b: _Builder, spec: ConvSpec, p: str, x: _Tensor, what: str) -> _Tensor:
    if len(x.shape) < 2:
        raise ModelError(f"{what}: a Conv needs a [C, *spatial] input, not {x.shape}")
    _check_relu(spec.relu, what)
    c, spatial = x.shape[0], x.shape[1:]
    d = len(spatial)
    groups = c if spec.groups == "depthwise" else int(spec.groups)
    m = int(spec.out_channels) if spec.out_channels is not None else c
    if groups < 1 or c % groups or m % groups or m < 1:
        raise ModelError(f"{what}: groups {spec.groups!r} must divide both {c} input and {m} output channels")
    kernel = _ints(spec.kernel, d, "kernel")
    stride = _ints(spec.stride, d, "stride")
    begins, ends, pad_attrs = _resolve_pads(spec.pads, spatial, kernel, stride, what)
    out_sp = _out_size(spatial, kernel, stride, begins, ends, what)
    fan_in = (c // groups) * int(np.prod(kernel))
    wq, ws = b.weights((m, c // groups, *kernel), fan_in, spec.weight_bits, x.qtype, what)
    w_real = wq * ws
    acc = _conv(x.values, w_real, np.zeros(m), stride, begins, ends, groups)
    unit = float(np.float32(x.qtype.scale) * np.float32(ws))  # the bias scale, a float32 product
    bq = b.bias(acc, unit, wq, x.qtype)
    pre = acc + (bq * unit).reshape(1, m, *([1] * d))
    w_name = b.dequantized(f"{p}_weight", wq, f"int{spec.weight_bits}", ws)
    b_name = b.dequantized(f"{p}_bias", bq, "int32", unit)
    y = b.node("Conv", [x.name, w_name, b_name], f"{p}_conv", kernel_shape=list(kernel), strides=list(stride),
               group=groups, **pad_attrs)
    y = b.activation(y, spec.relu, p)
    values = _relu(pre, spec.relu)
    out_type = b.choose_qtype(values, b.act_type(spec.act))
    return b.qdq(y, f"{p}_out", out_type, (m, *out_sp), values)


def _pool_layer(b: _Builder, spec: PoolSpec, p: str, x: _Tensor, what: str) -> _Tensor:
    if spec.kind not in ("max", "avg"):
        raise ModelError(f"{what}: kind {spec.kind!r} is not 'max' or 'avg'")
    if len(x.shape) < 2:
        raise ModelError(f"{what}: a pool needs a [C, *spatial] input, not {x.shape}")
    spatial = x.shape[1:]
    d = len(spatial)
    kernel = _ints(spec.kernel, d, "kernel")
    stride = _ints(spec.stride if spec.stride is not None else kernel, d, "stride")
    begins, ends, pad_attrs = _resolve_pads(spec.pads, spatial, kernel, stride, what)
    if any(v >= k for v, k in zip(begins + ends, kernel + kernel)):
        raise ModelError(f"{what}: pads {begins + ends} must be smaller than the kernel {kernel}")
    out_sp = _out_size(spatial, kernel, stride, begins, ends, what)
    values = _pool(x.values, spec.kind, kernel, stride, begins, ends, spec.count_include_pad)
    shape = (x.shape[0], *out_sp)
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), **pad_attrs)
    if spec.kind == "max":
        if spec.act is not None and spec.act != x.qtype.dtype:
            raise ModelError(f"{what}: a max pool keeps its input's type {x.qtype.dtype}, not {spec.act}")
        y = b.node("MaxPool", [x.name], f"{p}_maxpool", **attrs)
        return b.qdq(y, f"{p}_out", x.qtype, shape, values, shared=x)
    _check_exact_sum(b, int(np.prod(kernel)), x.qtype.magnitude, what)
    if spec.count_include_pad not in (0, 1):
        raise ModelError(f"{what}: count_include_pad must be 0 or 1")
    if spec.count_include_pad:
        attrs["count_include_pad"] = 1
    y = b.node("AveragePool", [x.name], f"{p}_avgpool", **attrs)
    return b.qdq(y, f"{p}_out", b.choose_qtype(values, b.act_type(spec.act)), shape, values)


def _global_pool_layer(b: _Builder, spec: GlobalPoolSpec, p: str, x: _Tensor, what: str) -> _Tensor:
    if len(x.shape) < 2:
        raise ModelError(f"{what}: a global pool needs a [C, *spatial] input, not {x.shape}")
    d = len(x.shape) - 1
    axes = tuple(range(2, 2 + d))
    shape = (x.shape[0],) + (1,) * d
    if spec.kind == "max":
        if spec.act is not None and spec.act != x.qtype.dtype:
            raise ModelError(f"{what}: a max pool keeps its input's type {x.qtype.dtype}, not {spec.act}")
        y = b.node("GlobalMaxPool", [x.name], f"{p}_globalmaxpool")
        return b.qdq(y, f"{p}_out", x.qtype, shape, x.values.max(axis=axes, keepdims=True), shared=x)
    if spec.kind == "avg":
        y = b.node("GlobalAveragePool", [x.name], f"{p}_globalavgpool")
    elif spec.kind == "reducemean":
        if b.opset >= 18:
            axes_name = b.constant(f"{p}_axes", np.array(axes, dtype=np.int64))
            y = b.node("ReduceMean", [x.name, axes_name], f"{p}_reducemean", keepdims=1)
        else:
            y = b.node("ReduceMean", [x.name], f"{p}_reducemean", axes=list(axes), keepdims=1)
    else:
        raise ModelError(f"{what}: kind {spec.kind!r} is not 'avg', 'max' or 'reducemean'")
    _check_exact_sum(b, int(np.prod(x.shape[1:])), x.qtype.magnitude, what)
    values = x.values.mean(axis=axes, keepdims=True)
    return b.qdq(y, f"{p}_out", b.choose_qtype(values, b.act_type(spec.act)), shape, values)


def _join_layer(b: _Builder, spec, p: str, x: _Tensor, other: _Tensor, what: str) -> _Tensor:
    if isinstance(spec, AddSpec):
        _check_relu(spec.relu, what)
        if other.shape != x.shape:
            raise ModelError(f"{what}: Add needs equal shapes, not {x.shape} and {other.shape}")
        if b.pow2:  # both grids on the finer one, the sum below 2**24 of its steps
            fine = max(x.qtype.frac, other.qtype.frac)
            bound = sum(t.qtype.magnitude << (fine - t.qtype.frac) for t in (x, other))
            _check_exact_sum(b, 1, bound, what)
        y = b.node("Add", [x.name, other.name], f"{p}_add")
        y = b.activation(y, spec.relu, p)
        values, shape = _relu(x.values + other.values, spec.relu), x.shape
    else:
        if len(x.shape) < 2 or other.shape[1:] != x.shape[1:]:
            raise ModelError(f"{what}: Concat needs equal spatial shapes, not {x.shape} and {other.shape}")
        y = b.node("Concat", [x.name, other.name], f"{p}_concat", axis=1)
        values = np.concatenate([x.values, other.values], axis=1)
        shape = (x.shape[0] + other.shape[0], *x.shape[1:])
    return b.qdq(y, f"{p}_out", b.choose_qtype(values, b.act_type(spec.act)), shape, values)


def _dense_layer(b: _Builder, spec: DenseSpec, p: str, x: _Tensor, what: str) -> _Tensor:
    if len(x.shape) != 1:
        raise ModelError(f"{what}: Gemm needs a flat [features] input, not {x.shape}", hint="add a FlattenSpec")
    _check_relu(spec.relu, what)
    k, m = x.shape[0], int(spec.out)
    if m < 1:
        raise ModelError(f"{what}: out {spec.out} must be positive")
    wq, ws = b.weights((m, k), k, spec.weight_bits, x.qtype, what)  # [out, in]
    acc = x.values @ (wq * ws).T
    unit = float(np.float32(x.qtype.scale) * np.float32(ws))
    bq = b.bias(acc, unit, wq, x.qtype)
    values = _relu(acc + bq * unit, spec.relu)
    stored = wq if spec.trans_b else wq.T
    w_name = b.dequantized(f"{p}_weight", stored, f"int{spec.weight_bits}", ws)
    b_name = b.dequantized(f"{p}_bias", bq, "int32", unit)
    y = b.node("Gemm", [x.name, w_name, b_name], f"{p}_gemm", transB=1 if spec.trans_b else 0)
    y = b.activation(y, spec.relu, p)
    return b.qdq(y, f"{p}_out", b.choose_qtype(values, b.act_type(spec.act)), (m,), values)


def _input_type(b: _Builder, dtype: str) -> _QType:
    """The input quantizer: a range of about [-4, 4) (signed) or [0, 4) / [-2, 2) (unsigned, pow2 / not)."""
    info = np.iinfo(_TYPES[dtype][0])
    if b.pow2:
        frac = int(info.bits - (1 if info.min < 0 else 0) - 2)
        return _QType(dtype, float(2.0 ** -frac), 0, frac)
    span = 8.0 if info.min < 0 else 4.0
    scale = float(np.float32(span * float(b.rng.uniform(0.8, 1.25)) / (int(info.max) - int(info.min))))
    if info.min < 0:
        return _QType(dtype, scale, 0)
    mid = (int(info.max) + 1) // 2
    return _QType(dtype, scale, int(mid + b.rng.integers(-(mid // 8), mid // 8, endpoint=True)))


@dataclass
class _Built:
    """A built model with the calibration inputs and the outputs the builder expects for them."""

    model: onnx.ModelProto
    x: np.ndarray  # float32 [samples, *input_shape]
    y: np.ndarray  # float64 [samples, *output_shape]: exact in pow2 mode for models without average pools


def _build(layers, input_shape, *, seed, act_bits=8, signed=True, pow2=True, opset=17, name="cnn") -> _Built:
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) not in (2, 3) or any(v < 1 for v in input_shape):
        raise ModelError(f"input_shape {input_shape} must be (C, L) or (C, H, W), all positive")
    if not layers:
        raise ModelError("a CNN needs at least one layer")
    if act_bits not in (8, 16):
        raise ModelError(f"activations of {act_bits} bits are not supported", hint="use act_bits=8 or 16")
    if opset < 10:
        raise ModelError(f"opset {opset} has no QuantizeLinear", hint="use opset 10 or later")
    default_act = f"{'' if signed else 'u'}int{act_bits}"
    wide = [s for s in layers if getattr(s, "weight_bits", 8) == 16 or getattr(s, "act", None) in ("int16", "uint16")]
    if (act_bits == 16 or wide) and opset < _OPSET_16_BIT:
        raise ModelError(f"16-bit activations or weights need opset {_OPSET_16_BIT}, not {opset}",
                         hint=f"pass opset={_OPSET_16_BIT}")
    b = _Builder(np.random.default_rng(seed), pow2, opset, default_act)
    x_type = _input_type(b, default_act)
    # Calibration inputs: random values on the whole input grid (a separate stream, so the draws of weights
    # do not depend on how many samples calibrate).
    cal = np.random.default_rng([int(seed), 1])
    samples = int(np.clip(_CALIBRATION_VALUES // int(np.prod(input_shape)), 1, _CALIBRATION_SAMPLES))
    x_q = cal.integers(x_type.qmin, x_type.qmax, size=(samples, *input_shape), endpoint=True)
    x_real = ((x_q - x_type.zero_point) * x_type.scale).astype(np.float32)
    current = b.qdq("x", "input", x_type, input_shape, x_real.astype(np.float64))
    tensors = [current]
    for i, spec in enumerate(layers):
        current = _layer(b, spec, i, current, tensors)
        tensors.append(current)
    # The graph output is named y: rename the last DequantizeLinear's output.
    b.nodes[-1].output[0] = "y"
    b.nodes[-1].name = "y_DequantizeLinear"
    graph = helper.make_graph(
        b.nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *current.shape])],
        initializer=b.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="aieflow")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model, full_check=True)
    return _Built(model, x_real, current.values)


def qdq_cnn(layers: list, input_shape, *, seed: int, act_bits: int = 8, signed: bool = True, pow2: bool = True,
            opset: int = 17, name: str = "cnn") -> onnx.ModelProto:
    """A QDQ CNN: float input x [N, *input_shape] ('N' symbolic; input_shape (C, H, W) or (C, L)), then
    `layers` (ConvSpec, PoolSpec, GlobalPoolSpec, AddSpec, ConcatSpec, FlattenSpec, DenseSpec), output y.

    Every float op reads DequantizeLinear outputs and feeds a QuantizeLinear (then a DequantizeLinear for the
    next op), as onnxruntime's QDQ format does. Weights are int8 (int16 with weight_bits=16) initializers
    behind a per-tensor DequantizeLinear; the bias is int32 behind a DequantizeLinear of scale s_x * s_w,
    zero point 0, Conv's (Gemm's) third input. Relu is its own node between Conv and QuantizeLinear, relu6 a
    Clip(0, 6) (min and max initializers from opset 11 on, attributes before). Activations are int8 /
    uint8 / int16 / uint16 (act_bits, signed, or a spec's `act`); 16-bit types need opset 21.

    pow2=True: every scale is 2**-k and every zero point 0, and the weights, biases and sums are bounded so
    onnxruntime's float32 Conv / Gemm / Add / pools compute exact integers (a ModelError says when a layer
    cannot be). pow2=False: scales are arbitrary float32 values from calibration, and unsigned activations
    get zero points (nonzero where the values go negative; the input's always).

    Scales and biases are chosen on a few random calibration inputs, so activations neither all saturate
    nor all vanish; the same arguments give the same model, byte for byte.
    """
    return _build(layers, input_shape, seed=seed, act_bits=act_bits, signed=signed, pow2=pow2, opset=opset,
                  name=name).model


# --- random models -----------------------------------------------------------------------------------------


def _draw_layers(rng: np.random.Generator, dims: int, c: int, spatial: list[int], act: str, max_channels: int,
                 small_fan_in: bool) -> list:
    """1 to 4 layers: a body of convs, pools and residual adds, then a global pool or Flatten + Gemm."""
    layers: list = []
    shape = (c, *spatial)
    n_layers = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.25, 0.3, 0.35]))
    max_kernel = 9 if dims == 1 else 7
    # 16-bit activations: keep fan-ins small enough for exact float32 sums (pow2 mode) with useful weights.
    cap_c = min(max_channels, 8) if small_fan_in else max_channels
    cap_k = (9 if dims == 1 else 3) if small_fan_in else max_kernel

    def head() -> list:
        features = int(np.prod(shape))
        if len(shape) > 1 and (rng.random() < 0.5 or (small_fan_in and features > 128)):
            kind = str(rng.choice(["avg", "max", "reducemean"]))
            return [GlobalPoolSpec(kind)]
        out = int(rng.integers(1, min(16, max_channels) + 1))
        form = "reshape" if rng.random() < 0.25 else "flatten"
        return ([FlattenSpec(form)] if len(shape) > 1 else []) + [DenseSpec(out, relu=None)]

    while len(layers) < n_layers - 1:
        sp = shape[1:]
        r = rng.random()
        if r < 0.15:
            # Residual: a shape-keeping conv whose output is added to its input.
            k = int(rng.integers(1, min(cap_k, max(sp)) + 1))
            groups = "depthwise" if rng.random() < 0.3 else 1
            layers.append(ConvSpec(shape[0], kernel=k, stride=1, pads="same", groups=groups,
                                   relu=str(rng.choice(["relu", "relu6"]))))
            if len(layers) < n_layers - 1:
                layers.append(AddSpec(source=len(layers) - 2 if len(layers) >= 2 else "input",
                                      relu="relu" if rng.random() < 0.5 else None))
            continue
        if r < 0.45 and min(sp) >= 2:
            kind = str(rng.choice(["max", "avg"]))
            k, s = [(2, 2), (3, 2), (3, 1), (2, 1)][int(rng.integers(0, 4))]
            k = min(k, min(sp))
            pads = 0
            if k >= 2 and rng.random() < 0.3:
                pads = k // 2 if k > 2 else 1
                pads = min(pads, k - 1)
            cip = int(kind == "avg" and pads and rng.random() < 0.5)
            spec = PoolSpec(kind, kernel=k, stride=s, pads=pads, count_include_pad=cip)
            out = tuple((n + 2 * pads - k) // s + 1 for n in sp)
            layers.append(spec)
            shape = (shape[0], *out)
            continue
        k = int(rng.integers(1, min(cap_k, max(sp)) + 1))
        k = min(k, max(sp))
        s = int(rng.integers(1, 3))
        depthwise = rng.random() < 0.3
        m = shape[0] * int(rng.integers(1, 3)) if depthwise else int(rng.integers(1, cap_c + 1))
        m = min(m, max_channels) if not depthwise else (shape[0] if m > max_channels else m)
        if rng.random() < 0.5:
            pads = "same" if rng.random() < 0.8 else "same_lower"
            out = tuple(-(-n // s) for n in sp)
        else:
            per_side = [int(v) for v in rng.integers(0, k, size=2 * dims)]
            if rng.random() < 0.5:
                per_side = per_side[:dims] * 2  # symmetric
            pads = tuple(per_side)
            if any(n + per_side[j] + per_side[j + dims] < k for j, n in enumerate(sp)):
                pads = tuple([k - 1] * (2 * dims))
            out = tuple((n + per_side_j - k) // s + 1
                        for n, per_side_j in zip(sp, (pads[j] + pads[j + dims] for j in range(dims))))
        relu = [None, "relu", "relu6"][int(rng.integers(0, 3))]
        layers.append(ConvSpec(m, kernel=k, stride=s, pads=pads, groups="depthwise" if depthwise else 1,
                               relu=relu))
        shape = (m, *out)
    return layers + head()


def random_qdq_cnn(seed: int, *, dims: int | None = 2, pow2: bool = True, max_channels: int = 32,
                   max_spatial: int = 16) -> tuple[onnx.ModelProto, dict]:
    """A random valid QDQ CNN of 1 to 4 layers and a description of what was drawn (JSON-friendly).

    Drawn: 1-D or 2-D (dims=None draws it), input channels 1..max_channels (at most 128) and spatial sizes
    4..max_spatial (at most 64) per axis; convs with kernels 1..7 (1..9 in 1-D), stride 1 or 2, explicit
    (sometimes asymmetric) pads or auto_pad SAME_UPPER / SAME_LOWER, groups 1 or depthwise, Relu / Clip(0, 6)
    / none; max and average pools (window = stride, and overlapping windows like 3/2), residual Adds after
    shape-keeping convs; activations int8, uint8 (zero points where pow2=False) or int16 (opset 21); the
    opset 13, 17 or 21 otherwise. The model ends with a global pool (GlobalAveragePool, GlobalMaxPool or
    ReduceMean) or Flatten / Reshape + Gemm. Every model passes onnx.checker (full check) and runs on
    onnxruntime. A draw that qdq_cnn refuses (a pow2 layer that cannot be float32-exact) is drawn again from
    the same seeded stream.
    """
    if not 1 <= max_channels <= 128:
        raise ModelError(f"max_channels {max_channels} must be 1..128")
    if not 4 <= max_spatial <= 64:
        raise ModelError(f"max_spatial {max_spatial} must be 4..64")
    if dims not in (None, 1, 2):
        raise ModelError(f"dims {dims!r} must be 1, 2 or None (drawn)")
    rng = np.random.default_rng([int(seed), 2024])
    last = None
    for _ in range(50):
        d = int(rng.integers(1, 3)) if dims is None else int(dims)
        act = str(rng.choice(["int8", "uint8", "int16"], p=[0.45, 0.35, 0.2]))
        opset = _OPSET_16_BIT if act == "int16" else int(rng.choice([13, 17, 21]))
        c = int(rng.integers(1, (min(max_channels, 8) if act == "int16" and pow2 else max_channels) + 1))
        spatial = [int(v) for v in rng.integers(4, max_spatial + 1, size=d)]
        layers = _draw_layers(rng, d, c, spatial, act, max_channels, small_fan_in=(act == "int16" and pow2))
        bits, signed = {"int8": (8, True), "uint8": (8, False), "int16": (16, True)}[act]
        model_seed = int(rng.integers(0, 2 ** 31))
        try:
            model = qdq_cnn(layers, (c, *spatial), seed=model_seed, act_bits=bits, signed=signed, pow2=pow2,
                            opset=opset, name=f"random_cnn_{seed}")
        except ModelError as e:
            last = e
            continue
        out = [dim.dim_value or dim.dim_param for dim in model.graph.output[0].type.tensor_type.shape.dim]
        description = {
            "seed": int(seed), "model_seed": model_seed, "dims": d, "pow2": bool(pow2), "act": act,
            "opset": opset, "input_shape": [c, *spatial], "output_shape": out[1:],
            "layers": [{"type": _SPEC_KIND[type(s)], **asdict(s)} for s in layers],
        }
        return model, description
    raise ModelError(f"no valid random CNN drawn for seed {seed} in 50 tries: {last}")


# --- inputs and onnxruntime --------------------------------------------------------------------------------


def _input_quantizer(model: onnx.ModelProto) -> tuple[float, int, np.dtype, tuple[int, ...]]:
    """Scale, zero point and type of the QuantizeLinear fed by the graph input, and the input's shape."""
    graph = model.graph
    source = graph.input[0].name
    node = next((n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == source), None)
    if node is None:
        raise ModelError(f"the graph input '{source}' does not feed a QuantizeLinear")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scale = float(np.asarray(inits[node.input[1]]).reshape(-1)[0])
    if len(node.input) > 2 and node.input[2]:
        zero = np.asarray(inits[node.input[2]])
        dtype, zero_point = zero.dtype, int(zero.reshape(-1)[0])
    else:
        dtype, zero_point = np.dtype(np.uint8), 0
    dims = graph.input[0].type.tensor_type.shape.dim
    shape = tuple(int(dim.dim_value) for dim in dims[1:])
    if any(v < 1 for v in shape):
        raise ModelError(f"the graph input '{source}' needs a fixed shape after the batch axis")
    return scale, zero_point, np.dtype(dtype), shape


def _special_steps(qmin: int, qmax: int, zero: int) -> np.ndarray:
    """Values in integer steps q (the float value is (q - zero) * scale) that every sample set contains."""
    return np.array([
        zero, zero + 0.5, zero - 0.5, zero + 1.5, zero - 1.5, zero + 2.5, zero - 2.5,  # ties around 0.0
        qmax - 0.5, qmin + 0.5,  # ties at both ends of the range
        qmax, qmin,  # the extremes, exactly
        qmax + 0.5, qmin - 0.5,  # ties just outside: round, then saturate
        qmax + 3.0, qmin - 3.0,  # beyond both ends
        zero - 1.0,
    ], dtype=np.float64)


def sample_cnn_inputs(model: onnx.ModelProto, n: int, seed: int = 0) -> np.ndarray:
    """float32 inputs [n, C, H, W] (or [n, C, L]) that exercise every corner of the input QuantizeLinear.

    In units of the input step q (the float value is (q - zero_point) * scale): values on the grid across
    the whole range, exact ties halfway between two steps (both signs and ends, where round-half-to-even
    shows), values past both ends (saturation), zeros and arbitrary values in between. The special values
    come first and are then shuffled, so each is present whenever the sample holds at least 16 values. Ties
    are exact ties for power-of-two scales; with other scales they are the nearest float32 values.
    """
    scale, zero, dtype, shape = _input_quantizer(model)
    info = np.iinfo(dtype)
    qmin, qmax = int(info.min), int(info.max)
    rng = np.random.default_rng([int(seed), 17])
    size = int(n) * int(np.prod(shape))
    special = _special_steps(qmin, qmax, zero)[:size]
    m = size - len(special)
    span = qmax - qmin
    kind = rng.integers(0, 4, size=m)
    on_grid = rng.integers(qmin, qmax, size=m, endpoint=True).astype(np.float64)
    ties = rng.integers(qmin - 2, qmax + 2, size=m, endpoint=True) + 0.5
    anywhere = np.round(rng.uniform(qmin - 0.1 * span, qmax + 0.1 * span, size=m) * 256) / 256
    past = rng.integers(1, max(span // 4, 1), size=m, endpoint=True)
    beyond = np.where(rng.random(m) < 0.5, qmin - past, qmax + past).astype(np.float64)
    q = np.concatenate([special, np.choose(kind, [on_grid, ties, anywhere, beyond])])
    rng.shuffle(q)
    return ((q - zero) * scale).astype(np.float32).reshape(int(n), *shape)


def _session(model: onnx.ModelProto):
    import onnxruntime as ort  # optional: only the reference needs it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's (first) output for x with onnxruntime on the CPU, graph optimizations disabled, so no QDQ
    pair is fused into an integer kernel with its own rounding: the ONNX definition is what runs."""
    session = _session(model)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
    return session.run([session.get_outputs()[0].name], feed)[0]


def ort_tensor_values(model: onnx.ModelProto, x: np.ndarray, names) -> dict[str, np.ndarray]:
    """The values of the named tensors for input x (onnxruntime, optimizations off, as run_onnxruntime).

    Intermediate tensors are added as graph outputs, typed from ONNX shape inference (value_info); the
    model passed in is not changed. Initializers and the graph input are returned as they are."""
    names = list(names)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    graph = m.graph
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for node in graph.node for o in node.output}
    inits = {t.name: t for t in graph.initializer}
    input_name = graph.input[0].name
    outputs = {o.name for o in graph.output}
    for name in names:
        if name in inits or name == input_name or name in outputs:
            continue
        if name not in produced:
            raise ModelError(f"no node of the model produces a tensor named '{name}'")
        info = infos.get(name)
        if info is None or not info.type.tensor_type.elem_type:
            raise ModelError(f"ONNX shape inference gives no type for '{name}'")
        graph.output.append(info)
        outputs.add(name)
    session = _session(m)
    feed_x = np.ascontiguousarray(x, dtype=np.float32)
    fetch = [n for n in names if n not in inits and n != input_name]
    values = dict(zip(fetch, session.run(fetch, {input_name: feed_x}))) if fetch else {}
    result = {}
    for name in names:
        if name in inits:
            result[name] = numpy_helper.to_array(inits[name])
        elif name == input_name:
            result[name] = feed_x
        else:
            result[name] = values[name]
    return result


# --- PyTorch models, exported and quantized by the users' tools --------------------------------------------

TORCH_CNN_KINDS = ("cnn", "separable", "conv1d")
# The input of each torch_cnn kind, without the batch axis.
TORCH_CNN_INPUT_SHAPES = {"cnn": (3, 16, 16), "separable": (3, 16, 16), "conv1d": (2, 64)}


def torch_cnn(kind: str, seed: int = 0):
    """A float torch.nn.Module (eval mode) with seeded weights; its input is TORCH_CNN_INPUT_SHAPES[kind].

    - 'cnn': Conv2d 3->8 3x3, BatchNorm2d, ReLU, MaxPool2d 2, Conv2d 8->16 3x3, ReLU, AdaptiveAvgPool2d(1),
      Flatten, Linear 16->10; input 3x16x16.
    - 'separable': depthwise Conv2d 3x3 (groups=3) + pointwise 1x1 3->16, BatchNorm2d, ReLU6; depthwise 3x3
      stride 2 (groups=16), BatchNorm2d, ReLU6, pointwise 16->32, BatchNorm2d, ReLU6; AdaptiveAvgPool2d(1),
      Flatten, Linear 32->10; input 3x16x16 (a MobileNet block).
    - 'conv1d': Conv1d 2->8 k7 on [N, 2, 64] I/Q traces, ReLU, MaxPool1d 2, Conv1d 8->16 k5, ReLU,
      AdaptiveAvgPool1d(1), Flatten, Linear 16->8.
    Convs pad to keep their size ('same' for odd kernels). BatchNorm statistics and affine parameters are
    drawn too (not 0 / 1), so folding them changes the weights.
    """
    import torch
    from torch import nn

    if kind not in TORCH_CNN_KINDS:
        raise ModelError(f"kind {kind!r} is not one of {TORCH_CNN_KINDS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "cnn":
            module = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
            )
        elif kind == "separable":
            module = nn.Sequential(
                nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
                nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
            )
        else:
            module = nn.Sequential(
                nn.Conv1d(2, 8, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
                nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 8),
            )
        with torch.no_grad():
            for layer in module.modules():
                if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    layer.running_mean.normal_(0.0, 0.2)
                    layer.running_var.uniform_(0.5, 2.0)
                    layer.weight.uniform_(0.5, 1.5)
                    layer.bias.normal_(0.0, 0.1)
    return module.eval()


@contextlib.contextmanager
def _quiet():
    """The exporters and the quantizer log progress and advice (pre-processing) the tests do not need."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _export(module, example, path: Path, dynamo: bool | None) -> tuple[str, str]:
    """torch.onnx.export with torch's default exporter (dynamo in torch 2.13), its default opset and
    optimizations, a dynamic batch axis 'N'; the TorchScript exporter when dynamo fails or is refused.
    Returns (exporter, why the default fell back to TorchScript, or '')."""
    import torch

    names = dict(input_names=["x"], output_names=["y"])
    reason = ""
    if dynamo is not False:
        try:
            with _quiet():
                torch.onnx.export(module, (example,), str(path), dynamic_shapes=({0: torch.export.Dim("N")},),
                                  verbose=False, **names)
            return "dynamo", ""
        except Exception as e:  # noqa: BLE001 - the dynamo exporter fails with many exception types
            if dynamo:
                raise ModelError(f"the dynamo exporter failed: {type(e).__name__}: {e}") from None
            first_line = str(e).splitlines()[0] if str(e) else ""
            reason = f"the default (dynamo) exporter failed: {type(e).__name__}: {first_line}"
            warnings.warn(f"{reason}; falling back to dynamo=False (TorchScript)", stacklevel=3)
    with _quiet():
        torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                          **names)
    return "torchscript", reason


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over in-memory batches."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 8) -> None:
        self._batches = iter([{name: data[i:i + batch]} for i in range(0, len(data), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # part of the protocol; one pass is all quantize_static makes here
        pass


def export_and_quantize(module, input_shape, path_or_none=None, calib_samples: int = 32, seed: int = 0, *,
                        dynamo: bool | None = None) -> onnx.ModelProto:
    """Export `module` with torch.onnx.export (batch axis 'N' dynamic) and quantize it with onnxruntime's
    quantize_static: QuantFormat.QDQ, activations QUInt8, weights QInt8, per-tensor, calibrated (MinMax,
    the default) on `calib_samples` seeded standard-normal inputs [input_shape] (no batch axis).

    dynamo=None is torch's default: the dynamo exporter, falling back to TorchScript (with a warning) if it
    fails; True / False ask for one. The model's metadata_props record which ran: 'aieflow.exporter'
    ('dynamo' or 'torchscript') and, after a fallback, 'aieflow.exporter_fallback' (why). The model is saved
    to `path_or_none` when given."""
    import torch
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    shape = tuple(int(v) for v in input_shape)
    rng = np.random.default_rng([int(seed), 5])
    example = torch.from_numpy(rng.standard_normal((2, *shape)).astype(np.float32))
    calibration = rng.standard_normal((int(calib_samples), *shape)).astype(np.float32)
    module = module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        float_path, quantized_path = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        exporter, reason = _export(module, example, float_path, dynamo)
        input_name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
        with _quiet():
            quantize_static(str(float_path), str(quantized_path), _CalibrationReader(input_name, calibration),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=False)
        model = onnx.load(str(quantized_path))
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "aieflow.exporter": exporter,
                                   **({"aieflow.exporter_fallback": reason} if reason else {})})
    if path_or_none is not None:
        onnx.save(model, str(path_or_none))
    return model
