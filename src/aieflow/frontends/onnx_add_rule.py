"""ONNX rules for the sum of two activations (a residual join), for the QDQ frontend's RULES table.

    Add(Dequantized a, Dequantized b)   -> PendingAdd
    Relu(PendingAdd)                     -> PendingAdd with relu
    QuantizeLinear(PendingAdd)           -> the IR op "add" (inputs a, b) and its Quantized output

Any other Add, Relu or QuantizeLinear goes to the rule it replaces, so the bias Add of MatMul and the ReLU
of a dense layer are untouched. `rules(base)` gives the three wrapped rules; onnx_qdq wires them with
`RULES.update(rules(RULES))`.

The op's attrs: shift_a and shift_b move each input onto the finer of the two grids (common frac =
max(frac_a, frac_b); one of them is 0), and shift = common frac - output frac. onnxruntime adds the two
dequantized float32 values, exact whenever the aligned sum is below 2**24 in magnitude, then QuantizeLinear
rounds half to even and saturates: the op's SRS with the output type's modes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ModelError
from ..ir import Tensor
from ..ops.add import add_op
from ..numerics import FixedType, Rounding, Saturation
from .onnx_nodes import node_name


def _qdq():
    """The QDQ frontend, imported when a rule runs: it imports this module to build its RULES, so a
    top-level import here would be circular whichever of the two is imported first."""
    from . import onnx_qdq

    return onnx_qdq


@dataclass(frozen=True)
class PendingAdd:
    """a + b (-> ReLU) waiting for its output QuantizeLinear."""

    node: str
    a: str  # IR tensors
    b: str
    relu: bool


def add(node, ins, st, base):
    """Add of two quantized activations; anything else is base's (the bias of MatMul)."""
    qdq = _qdq()
    if len(ins) == 2 and all(isinstance(v, qdq.Dequantized) for v in ins):
        a, b = (st.tensors[v.tensor] for v in ins)
        for t in (a, b):
            if not t.plain:
                raise ModelError(f"adds activation '{t.name}' of scale {qdq._describe(t.real_scale, t.zero_point)}, "
                                 "which is not a power of two with zero point 0", node=node_name(node),
                                 hint="quantize both inputs and the output of a residual add with power-of-two "
                                      "scales and zero point 0")
        if a.shape != b.shape or a.source_order != b.source_order:
            what = (f"{a.features} and {b.features} features" if len(a.shape) == len(b.shape) == 1
                    else f"shapes {list(a.source_shape)} and {list(b.source_shape)}")
            raise ModelError(f"adds activations of {what}", node=node_name(node),
                             hint="broadcasting is not supported: add activations of the same shape")
        return PendingAdd(node_name(node), a.name, b.name, False)
    unquantized = (qdq.PendingDense, PendingAdd)
    if len(ins) == 2 and all(isinstance(v, (qdq.Dequantized, *unquantized)) for v in ins) \
            and any(isinstance(v, unquantized) for v in ins):
        raise ModelError("adds a layer's output that was never quantized", node=node_name(node),
                         hint="put QuantizeLinear + DequantizeLinear on both inputs of the Add")
    return base(node, ins, st)


def relu(node, ins, st, base):
    x = ins[0]
    if isinstance(x, PendingAdd):
        return replace(x, relu=True)
    return base(node, ins, st)


def quantize(node, ins, st, base):
    x = ins[0]
    if not isinstance(x, PendingAdd):
        return base(node, ins, st)
    qdq = _qdq()
    qp = qdq._qparams(node, ins)
    frac, bits, signed = qp.frac, qp.bits, qp.signed
    if frac is None or qp.zero_point != 0:
        raise ModelError(f"the sum of two activations is quantized with scale {qdq._describe(qp.scale, qp.zero_point)}, "
                         "which is not a power of two with zero point 0", node=node_name(node),
                         hint="quantize both inputs and the output of a residual add with power-of-two "
                              "scales and zero point 0")
    if bits not in (8, 16) or (bits == 16 and not signed):
        raise ModelError(f"activations of {bits} bits ({'signed' if signed else 'unsigned'}) are not supported",
                         node=node_name(node), hint="quantize activations to int8, uint8 or int16")
    # ONNX QuantizeLinear rounds half to even and saturates.
    out = FixedType(bits, signed, frac, Rounding.CONV_EVEN, Saturation.SATURATE)
    return finish(node.output[0], x, out, st)


def finish(name: str, pending: PendingAdd, out: FixedType, st):
    """Record the IR op and its output tensor; return the output's meaning."""
    a, b = st.tensors[pending.a], st.tensors[pending.b]
    st.tensors[name] = Tensor(name, a.shape, out, source_order=a.source_order)  # a feature map stays one
    st.ops.append(add_op(pending.node, a, b, name, out, pending.relu))
    return _qdq().Quantized(name)


def rules(base: dict) -> dict:
    """The Add, Relu and QuantizeLinear rules of `base` extended with the residual join."""
    def wrap(rule, fallback):
        return lambda node, ins, st: rule(node, ins, st, fallback)

    return {"Add": wrap(add, base["Add"]), "Relu": wrap(relu, base["Relu"]),
            "QuantizeLinear": wrap(quantize, base["QuantizeLinear"])}
