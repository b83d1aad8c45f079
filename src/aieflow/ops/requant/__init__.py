"""Elementwise requantization of one activation (no matrix product), feature by feature:

    y[:, j] = requantize(x[:, j] * scale + bias[j], multiplier, shift, zero_point_y, type_y, relu)

with numerics.requantize: the integers of x (as stored: a zero point of x is folded into the bias by the
frontend) times `scale`, an integer power of two that puts x on the bias's grid, plus the per-feature
`bias` (int64 [features]), times the integer `multiplier` (default 1), divided by 2**shift and rounded by
y's rounding mode, plus y's zero point, saturated (or wrapped, saturation none) into y's bits, which may be
fewer than its 8- or 16-bit storage; `relu` then keeps y >= zero point. It is what a dense op with the
weights scale * identity computes, without the n x n weights: frontends write a source's standalone
requantization (a QONNX Quant of an activation or Trunc, an hls4ml activation whose cast drops bits,
onnxruntime's QuantizeLinear -> Add(bias) -> QuantizeLinear) as this op (ops.requant.requant_op).

Attributes: shift (int), relu (bool), multiplier (int, default 1: power-of-two sources need none), scale
(int, default 1). Parameters: bias (int64 [features]).

The kernel: each LANES values of x are moved into an accumulator with an exact upshift by log2(scale), the
bias lanes added, and the sums finished as a dense layer's are (dense.h's requantize: the multiplier as
int32 x int32 into acc64, the zero point, narrow types, wrap and clamp, then SRS into the output). The
accumulator is acc32 while every sum fits 32 bits (and the shift is one acc32's SRS can do), else acc64.

The features are split over `cas_num` parallel kernels of `n_tile` features each (no cascade: `cas_length`
is always 1). Layouts, shared by the emitted kernel and the emulator:
  input and output of kernel c   row-major [B][Nt] of features [c*Nt, (c+1)*Nt)  (zero-padded past the end)
  bias of kernel c               [Nt] (int32 with acc32, int64 with acc64; zero past the end)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...devices import Device
from ...errors import NumericsError
from ...ir import Graph, Op
from ...numerics import MULTIPLIER_BITS, FixedType, requantize
from ..base import (ElementwiseConfig, Slice, bank_assignment, ceil_div, cycles_from_terms, feature_slices,
                    kernel_id, storage_bytes)

KIND = "requant"

# Values per vector operation: LANES acc32 lanes are one 512-bit accumulator (LANES acc64 lanes: 1024 bits),
# LANES int8 or int16 values one 128- or 256-bit vector. A choice of the kernel's, recorded in each Config.
LANES = 16


@dataclass(frozen=True)
class Config(ElementwiseConfig):
    """How one requantization is cut into kernels. Sizes are in elements; B is the batch."""

    features: int
    batch: int  # batch the kernels process per iteration
    lanes: int  # values one vector operation handles; n_tile is a multiple of it
    cas_length: int  # always 1: no cascade
    cas_num: int  # parallel kernels (split the features)
    n_tile: int  # features per kernel
    in_bits: int  # storage bits of the input and the output
    out_bits: int
    acc_bits: int  # 32 or 64: the accumulator the kernel sums in (and the bias's width)
    # Vector operations the requantizing finish adds per vector beyond the plain SRS (dense.emit.finish_vector_ops).
    finish_ops: int = 0

    def tile_buffers(self, device: Device) -> list[tuple[str, int]]:
        """(name, bytes) of every buffer a kernel keeps in data memory: the input and the output, each
        double-buffered, the bias, and the stack with the heap (counted together in the stack's bank)."""
        gen = device.generation
        n = self.batch * self.n_tile
        return [
            ("in_ping", n * storage_bytes(self.in_bits)),
            ("in_pong", n * storage_bytes(self.in_bits)),
            ("out_ping", n * storage_bytes(self.out_bits)),
            ("out_pong", n * storage_bytes(self.out_bits)),
            ("bias", self.n_tile * self.acc_bits // 8),
            ("stack", gen.stack_bytes + gen.heap_bytes),
        ]


def requant_op(name: str, x: str, y: str, bias, shift: int, multiplier: int = 1, relu: bool = False,
               scale: int = 1) -> Op:
    """The op as every frontend writes it (see the module docstring for its meaning); `multiplier` and
    `scale` are written only when they are not 1."""
    attrs = {"relu": bool(relu), "shift": int(shift)}
    if multiplier != 1:
        attrs["multiplier"] = int(multiplier)
    if scale != 1:
        attrs["scale"] = int(scale)
    return Op(name, KIND, (x,), (y,), attrs, {"bias": np.asarray(bias).astype(np.int64)})


def evaluate(op: Op, graph: Graph, values: dict[str, np.ndarray], stats: dict | None = None) -> np.ndarray:
    """The output integers for the input's integers [samples, features], exactly (int64)."""
    out = graph.tensors[op.outputs[0]]
    x = np.asarray(values[op.inputs[0]], dtype=np.int64)
    acc = x * np.int64(op.attrs.get("scale", 1)) + op.params["bias"].astype(np.int64)[None, :]
    return requantize(acc, int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]), out.zero_point,
                      out.type, bool(op.attrs.get("relu", False)), stats)


def scale_shift(op: Op) -> int:
    """log2 of the op's scale: the upshift that applies it (check_numerics refuses other scales)."""
    scale = int(op.attrs.get("scale", 1))
    return scale.bit_length() - 1


def sums_bound(op: Op, graph: Graph) -> int:
    """Worst-case |x * scale + bias[j]| over all features, exactly (Python ints)."""
    x = graph.tensors[op.inputs[0]].type
    bias = op.params["bias"].astype(np.int64)
    return x.magnitude * int(op.attrs.get("scale", 1)) + int(np.max(np.abs(bias), initial=0))


def acc_bits(op: Op, graph: Graph) -> int:
    """32 when every sum fits an int32 and acc32's SRS can take the shift (or a multiplier reads the sums as
    int32 and SRSes a 64-bit product anyway), else 64."""
    fits = sums_bound(op, graph) <= (1 << 31) - 1
    shift = int(op.attrs["shift"])
    return 32 if fits and (int(op.attrs.get("multiplier", 1)) != 1 or -31 <= shift <= 31) else 64


def check_numerics(op: Op, graph: Graph, device: Device) -> None:
    """Refuse what the kernel cannot compute exactly: its types, scales, sums and shifts."""
    if len(op.inputs) != 1 or len(op.outputs) != 1:
        raise NumericsError(f"a requantization takes one input and one output, not {len(op.inputs)} and "
                            f"{len(op.outputs)}", node=op.name)
    x_t, y_t = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x_t.features != y_t.features:
        raise NumericsError(f"a requantization keeps its {x_t.features} features, but its output has "
                            f"{y_t.features}", node=op.name)
    for t, what in ((x_t.type, "input"), (y_t.type, "output")):
        if t.storage_bits not in (8, 16) or (t.storage_bits == 16 and not t.signed):
            raise NumericsError(f"{what} type {t.describe()} does not fit int8, uint8 or int16", node=op.name,
                                hint="quantize activations to 16 bits or fewer (unsigned: 8 or fewer)")
    bias = op.params.get("bias")
    if bias is None or np.shape(bias) != (y_t.features,):
        raise NumericsError(f"the bias must hold one integer per feature ({y_t.features}), not shape "
                            f"{None if bias is None else list(np.shape(bias))}", node=op.name)
    scale = int(op.attrs.get("scale", 1))
    if scale < 1 or scale & (scale - 1) or scale > 1 << 30:
        raise NumericsError(f"scale {scale} is not a power of two from 1 to 2**30; the requantize kernel applies "
                            "its scale as an exact upshift", node=op.name)
    multiplier = int(op.attrs.get("multiplier", 1))
    if not 1 <= multiplier < 1 << MULTIPLIER_BITS:
        raise NumericsError(f"requantization multiplier {multiplier} is not a positive {MULTIPLIER_BITS}-bit integer",
                            node=op.name)
    bound = sums_bound(op, graph)
    if multiplier != 1 and bound > (1 << 31) - 1:
        raise NumericsError(f"the sums x * {scale} + bias (worst case {bound}) do not fit the int32 the "
                            "multiplier reads", node=op.name,
                            hint="give the bias a coarser grid (a smaller scale) or the input fewer bits")
    if bound > (1 << 62) - 1:
        raise NumericsError(f"the sums x * {scale} + bias (worst case {bound}) do not fit the 64-bit accumulator",
                            node=op.name)
    shift = int(op.attrs["shift"])
    srs_bits = 64 if multiplier != 1 else acc_bits(op, graph)
    if not -(srs_bits - 1) <= shift <= min(srs_bits - 1, 62):
        raise NumericsError(f"shift of {shift} bits is outside what SRS can do on a {srs_bits}-bit accumulator",
                            node=op.name, hint="choose an output scale closer to the input's scale")
    zp = y_t.zero_point
    if not y_t.type.qmin <= zp <= y_t.type.qmax:
        raise NumericsError(f"output zero point {zp} is outside {y_t.type.describe()}", node=op.name)


def candidates(op: Op, graph: Graph, device: Device, batch: int) -> list[Config]:
    """Every split of the features over 1 to device.rows kernels whose buffers fit the banks, fewest first.

    The kernels of a layer sit in one column, one per row, so more than `device.rows` kernels could never be
    placed. A last kernel of nothing but padding is skipped.
    """
    from ..dense.emit import finish_vector_ops  # emit imports the dense family

    x = graph.tensors[op.inputs[0]].type
    y = graph.tensors[op.outputs[0]].type
    features = graph.tensors[op.outputs[0]].features
    acc = acc_bits(op, graph)
    extra = finish_vector_ops(op, graph, acc)
    found = []
    for cas_num in range(1, min(device.rows, ceil_div(features, LANES)) + 1):
        n_tile = ceil_div(features, cas_num * LANES) * LANES
        if (cas_num - 1) * n_tile >= features:
            continue
        cfg = Config(features, batch, LANES, 1, cas_num, n_tile, x.storage_bits, y.storage_bits, acc, extra)
        if bank_assignment(cfg.tile_buffers(device), device) is not None:
            found.append(cfg)
    found.sort(key=lambda c: (c.tiles, c.n_pad))
    return found


def tile_buffers(cfg: Config, stage: int, device: Device) -> list[tuple[str, int]]:
    return cfg.tile_buffers(device)


def pack(op: Op, cfg: Config) -> dict[str, np.ndarray]:
    """The bias of each kernel [cas_num, Nt], zero-padded, as int32 (acc32) or int64 (acc64)."""
    b = np.zeros(cfg.n_pad, dtype=np.int64)
    b[: cfg.features] = op.params["bias"]
    return {"bias": b.reshape(cfg.cas_num, cfg.n_tile).astype(np.int32 if cfg.acc_bits == 32 else np.int64)}


def input_slices(op: Op, cfg: Config, port_index: int) -> list[Slice]:
    """Kernel c reads features [c*Nt, (c+1)*Nt) of the input, row-major."""
    return feature_slices(op.name, cfg.cas_num, cfg.n_tile)


def output_slices(op: Op, cfg: Config) -> list[Slice]:
    """Kernel c writes features [c*Nt, (c+1)*Nt) of the output, row-major."""
    return feature_slices(op.name, cfg.cas_num, cfg.n_tile)


def kernel_requant(cfg: Config, x: np.ndarray, bias: np.ndarray, scale: int, multiplier: int, shift: int,
                   zero_point: int, out: FixedType, relu: bool) -> np.ndarray:
    """One kernel's arithmetic on its row-major stream [B*Nt]: x * scale + bias, requantized into `out`."""
    xs = np.asarray(x, dtype=np.int64).reshape(cfg.batch, cfg.n_tile)
    acc = xs * np.int64(scale) + np.asarray(bias, dtype=np.int64)[None, :]
    return requantize(acc, multiplier, shift, zero_point, out, relu).ravel()


def emulate(layer, graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every kernel: its slice of x and its bias, requantized, streams in and out row-major."""
    cfg, op = layer.config, layer.op
    y = graph.tensors[op.outputs[0]]
    streams = {}
    for chain in range(cfg.cas_num):
        kid = kernel_id(op.name, chain, 0)
        streams[kid] = kernel_requant(cfg, inputs[kid], layer.packed["bias"][chain], int(op.attrs.get("scale", 1)),
                                      int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]), y.zero_point,
                                      y.type, bool(op.attrs.get("relu", False)))
    return streams


def cycle_terms(cfg: Config, device: Device) -> dict[str, int]:
    """What one kernel's cycles per graph iteration are made of.

    Compute adds up: one vector of LANES values a cycle (load, upshift, bias add, SRS and store pipeline into
    one issue per vector, as in the add kernel), the vector operations a requantizing finish adds per vector
    (the multiply, the zero point, clamps or wrap: Config.finish_ops), and the fixed cost of a call. Terms
    named "stream ..." are not added: the input and output move over 32-bit streams while the ping-pong
    buffers let compute run, so the kernel takes the larger of its compute and its slower stream. The
    overheads are catalog estimates.
    """
    gen = device.generation
    values = cfg.batch * cfg.n_tile
    vectors = values // cfg.lanes
    return {
        "vector": vectors,
        "finish": vectors * cfg.finish_ops,
        "per call": gen.kernel_call_cycles,
        "stream in": values * storage_bytes(cfg.in_bits) // gen.word_bytes,
        "stream out": values * storage_bytes(cfg.out_bits) // gen.word_bytes,
    }


def cycles(cfg: Config, device: Device) -> int:
    """Cycles of one kernel per graph iteration: the larger of its compute and its slower stream."""
    return cycles_from_terms(cycle_terms(cfg, device))


def macs(op: Op, graph: Graph, batch: int) -> int:
    """Multiply-accumulates per graph iteration: none counted (the work is in the cycles)."""
    return 0


def latency(cfg: Config, device: Device) -> int:
    """One iteration through the requantization: a kernel's cycles (there is no cascade)."""
    return cycles(cfg, device)
