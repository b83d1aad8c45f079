"""Random QDQ graphs with chains, fan-outs and residual joins, exact under onnxruntime.

`qdq_graph(seed)` grows a graph from one input by random steps, each ending in a new activation that the
next step consumes, so nothing dangles and there is one graph output:
- dense:     x -> Gemm (or MatMul + Add) -> [Relu] -> QDQ
- residual:  x -> dense -> [dense] -> Add(with x) -> [Relu] -> QDQ
- parallel:  x -> dense, x -> dense, Add of the two -> [Relu] -> QDQ       (fan-out and join)
- skip:      Add(x, an earlier activation of the same width) -> [Relu] -> QDQ
The two inputs of every Add have different fractional bits, so the join must align them.

Exactness, as for onnx_qdq.qdq_mlp (whose helpers draw the dense layers here): power-of-two scales, zero
points of 0, every dense partial sum below 2**24 in float32, and every Add's aligned sum too (the inputs'
fractional bits differ by at most MAX_FRAC_GAP and activations have at most 16 bits). Activations of 16
bits are kept at most WIDTH_16 wide, so a layer reading them still gets weights of a few bits. Output
scales come from calibration data, so outputs neither all saturate nor all vanish; a draw whose graph
output is constant on the calibration data is replaced by the next (deterministically).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import ModelError
from ..numerics import FixedType
from .onnx_qdq import (
    _CALIBRATION_ROWS,
    IR_VERSION,
    OPSET,
    FLOAT32_EXACT,
    _check_scale,
    _default_input_frac,
    _default_weight_frac,
    _dense,
    _draw_bias,
    _draw_weights,
    _GraphBuilder,
    _Layer,
    _requantize,
    _typical_shift,
    activation_type,
)

ACTIVATION_TYPES = {"int8": (8, True), "uint8": (8, False), "int16": (16, True)}
# The two inputs of an Add differ by 1 to this many fractional bits: 2**15 << 6 + 2**15 < 2**24 keeps the
# aligned sum float32-exact for every activation type.
MAX_FRAC_GAP = 6
# Widest 16-bit activation: a dense layer reading it still gets weights up to 3 (see onnx_qdq._draw_weights).
WIDTH_16 = 128
# Shifts kept well inside what SRS on a 32-bit accumulator does (the families refuse beyond +-31).
_MAX_SHIFT = 24
_MAX_ATTEMPTS = 50


class _Redraw(Exception):
    """This draw broke a bound; the next attempt draws again."""


@dataclass(frozen=True)
class _Value:
    """An activation: the ONNX name of its DequantizeLinear output, its width and type, and its integers on
    the calibration inputs."""

    name: str
    width: int
    type: FixedType
    calib: np.ndarray


def qdq_graph(seed: int, *, max_layers: int = 6, max_width: int = 512, act_bits: int = 8,
              act_types: tuple[str, ...] | None = None, weight_bits: int = 8,
              name: str = "graph") -> onnx.ModelProto:
    """A random QDQ graph of 1 to `max_layers` ops (dense and Add), widths 1 to `max_width`.

    Activation types are drawn per tensor from `act_types` (names of ACTIVATION_TYPES), by default int8
    and uint8 for act_bits=8 and int16 for act_bits=16. The same arguments give the same model.
    """
    if max_layers < 1 or max_width < 1:
        raise ModelError(f"max_layers {max_layers} and max_width {max_width} must be at least 1")
    if weight_bits not in (8, 16):
        raise ModelError(f"weights of {weight_bits} bits are not supported", hint="use weight_bits=8 or 16")
    pool = _pool(act_bits, act_types)
    for attempt in range(_MAX_ATTEMPTS):
        try:
            growth = _Growth(np.random.default_rng([seed, attempt]), pool, max_layers, max_width, weight_bits)
            model = growth.model(name)
        except _Redraw:
            continue
        onnx.checker.check_model(model, full_check=True)
        return model
    raise ModelError(f"no usable graph in {_MAX_ATTEMPTS} draws for seed {seed}")  # pragma: no cover


def _pool(act_bits: int, act_types) -> tuple[FixedType, ...]:
    names = act_types or {8: ("int8", "uint8"), 16: ("int16",)}.get(act_bits)
    if not names:
        raise ModelError(f"activations of {act_bits} bits are not supported", hint="use act_bits=8 or 16")
    unknown = [n for n in names if n not in ACTIVATION_TYPES]
    if unknown:
        raise ModelError(f"unknown activation types {unknown}", hint=f"use {', '.join(ACTIVATION_TYPES)}")
    # Prototypes (frac 0): a drawn type gets its frac from calibration.
    return tuple(FixedType(*ACTIVATION_TYPES[n], 0) for n in names)


def _width_cap(t: FixedType, max_width: int) -> int:
    return min(max_width, WIDTH_16) if t.bits > 8 else max_width


class _Growth:
    """One draw of a graph: the steps of the module docstring, each adding nodes and a new activation."""

    def __init__(self, rng: np.random.Generator, pool, max_layers: int, max_width: int, weight_bits: int):
        self.rng = rng
        self.pool = pool
        self.max_width = max_width
        self.weight_bits = weight_bits
        self.ops_left = int(rng.integers(1, max_layers + 1))
        self.g = _GraphBuilder()
        self.values: list[_Value] = []
        self.n_dense = 0
        self.n_add = 0

    # --- drawing -------------------------------------------------------------------------------------------

    def _type(self, width: int | None = None) -> FixedType:
        """A prototype activation type that can be `width` wide (any, when width is None)."""
        ok = [t for t in self.pool if width is None or width <= _width_cap(t, self.max_width)]
        return ok[int(self.rng.integers(len(ok)))]

    def _width(self, t: FixedType) -> int:
        """Log-uniform in [1, cap]: mostly narrow, a steady share of wide ones; sometimes an earlier
        activation's width, so that skip joins have partners."""
        cap = _width_cap(t, self.max_width)
        earlier = [v.width for v in self.values if v.width <= cap]
        if earlier and self.rng.random() < 0.3:
            return earlier[int(self.rng.integers(len(earlier)))]
        return int(np.clip(round(2 ** self.rng.uniform(0, np.log2(cap))), 1, cap)) if cap > 1 else 1

    def _flag(self) -> bool:
        return bool(self.rng.random() < 0.5)

    # --- the graph -----------------------------------------------------------------------------------------

    def model(self, name: str) -> onnx.ModelProto:
        t = self._type()
        width = self._width(t)
        x_type = activation_type(t.bits, t.signed, _default_input_frac(t.bits, t.signed))
        calibration = np.random.default_rng(self.rng.integers(1 << 32))
        x_q = calibration.integers(x_type.qmin, x_type.qmax, size=(_CALIBRATION_ROWS, width), endpoint=True)
        current = _Value(self.g.qdq("x", "input", x_type), width, x_type, x_q)
        self.values.append(current)
        while self.ops_left > 0:
            current = self._step(current)
            self.values.append(current)
        if np.unique(current.calib).size < 2:
            raise _Redraw("the graph output is constant on the calibration inputs")
        # The graph output is named y: rename the last DequantizeLinear's output (nothing reads it).
        self.g.nodes[-1].output[0] = "y"
        self.g.nodes[-1].name = "y_DequantizeLinear"
        graph = helper.make_graph(
            self.g.nodes, name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", current.width])],
            initializer=self.g.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aieflow")
        model.ir_version = IR_VERSION
        return model

    def _step(self, current: _Value) -> _Value:
        left = self.ops_left
        kinds = ["dense"]
        if left >= 2:
            kinds += ["residual", "residual"]
        if left >= 3:
            kinds.append("parallel")
        partners = [v for v in self.values[:-1] if v.width == current.width
                    and 1 <= abs(v.type.frac - current.type.frac) <= MAX_FRAC_GAP]
        if partners:
            kinds += ["skip", "skip"]
        kind = kinds[int(self.rng.integers(len(kinds)))]
        if kind == "dense":
            return self._dense(current, self._type())
        if kind == "residual":
            h = current
            if left >= 3 and self._flag():
                h = self._dense(h, self._type())
            h = self._dense(h, self._type(current.width), width=current.width, avoid=current.type.frac)
            return self._add(h, current) if self._flag() else self._add(current, h)
        if kind == "parallel":
            t = self._type()
            width = self._width(t)
            p = self._dense(current, t, width=width)
            q = self._dense(current, self._type(width), width=width, avoid=p.type.frac)
            return self._add(p, q)
        partner = partners[int(self.rng.integers(len(partners)))]
        return self._add(current, partner) if self._flag() else self._add(partner, current)

    def _dense(self, x: _Value, proto: FixedType, width: int | None = None, avoid: int | None = None) -> _Value:
        """A dense layer from x, its output of the prototype's type; `avoid`: a frac the output must not
        have (the other input of the Add it feeds), kept within MAX_FRAC_GAP of it."""
        rng = self.rng
        m = width if width is not None else self._width(proto)
        weight = _draw_weights(rng, x.width, m, x.type.magnitude, self.weight_bits, None)
        bias = _draw_bias(rng, weight, x.calib, x.type.magnitude)
        w_frac = _default_weight_frac(weight)
        relu = self._flag()
        acc = x.calib @ weight + bias  # exact: int64, far below 2**63
        acc_frac = x.type.frac + w_frac
        out_frac = acc_frac - _typical_shift(acc, proto, relu)
        if avoid is not None:
            out_frac = self._beside(out_frac, avoid)
        out = FixedType(proto.bits, proto.signed, out_frac)
        self._check(acc_frac - out_frac, out_frac, acc_frac)
        prefix = f"fc{self.n_dense}"
        self.n_dense += 1
        self.ops_left -= 1
        layer = _Layer(weight, f"int{self.weight_bits}", bias, w_frac, out, relu)
        node = _dense(self.g, prefix, x.name, layer, x.type.frac, gemm=bool(rng.random() < 0.7),
                      trans_b=bool(rng.random() < 0.3))
        if relu:
            node = self.g.node("Relu", [node], f"{prefix}_relu")
        name = self.g.qdq(node, f"{prefix}_out", out)
        return _Value(name, m, out, _requantize(acc, acc_frac - out_frac, out, relu))

    def _beside(self, frac: int, other: int) -> int:
        """The frac nearest `frac` that differs from `other` by 1 to MAX_FRAC_GAP bits."""
        frac = int(np.clip(frac, other - MAX_FRAC_GAP, other + MAX_FRAC_GAP))
        if frac == other:
            frac += 1 if self._flag() else -1
        return frac

    def _add(self, a: _Value, b: _Value) -> _Value:
        """Add(a, b) -> [Relu] -> QDQ, the output type drawn; a and b have different fracs."""
        assert a.width == b.width and a.type.frac != b.type.frac
        common = max(a.type.frac, b.type.frac)
        shift_a, shift_b = common - a.type.frac, common - b.type.frac
        if (a.type.magnitude << shift_a) + (b.type.magnitude << shift_b) >= FLOAT32_EXACT:
            raise _Redraw("an aligned sum could leave float32's exact range")  # pragma: no cover - by MAX_FRAC_GAP
        acc = (a.calib << shift_a) + (b.calib << shift_b)
        proto = self._type(a.width)
        relu = self._flag()
        # Sometimes a bit or two finer than typical: more saturation, and left shifts (output frac above the
        # inputs') where the sum is small.
        out_frac = common - _typical_shift(acc, proto, relu) + int(self.rng.choice([0, 0, 0, 1, 2]))
        out = FixedType(proto.bits, proto.signed, out_frac)
        self._check(common - out_frac, out_frac, common)
        prefix = f"add{self.n_add}"
        self.n_add += 1
        self.ops_left -= 1
        node = self.g.node("Add", [a.name, b.name], f"{prefix}_sum")
        if relu:
            node = self.g.node("Relu", [node], f"{prefix}_relu")
        name = self.g.qdq(node, f"{prefix}_out", out)
        return _Value(name, a.width, out, _requantize(acc, common - out_frac, out, relu))

    @staticmethod
    def _check(shift: int, *fracs: int) -> None:
        if abs(shift) > _MAX_SHIFT:
            raise _Redraw(f"a shift of {shift} bits")
        for f in fracs:
            try:
                _check_scale(f, "a scale")
            except ModelError:
                raise _Redraw(f"{f} fractional bits") from None
