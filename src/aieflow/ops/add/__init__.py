"""Elementwise addition of two activations (residual joins): y = SRS((a << shift_a) + (b << shift_b)).

The two inputs may have different types and fractional bits. Each is moved exactly onto the finer of the
two grids (a left shift by shift_a or shift_b, one of them 0), the aligned values are added in a 32-bit
accumulator, and the sum is shifted, rounded and saturated into the output type by its own modes (shift =
common frac - output frac, of either sign), with an optional fused ReLU.

The features are split over `cas_num` parallel kernels of `n_tile` features each (there is no cascade:
`cas_length` is always 1). Every stream is row-major, so the emitted kernel and the emulator agree on one
layout:
  input a, input b, output of kernel c    [B][Nt] of features [c*Nt, (c+1)*Nt)  (zero-padded past the end)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...devices import Device
from ...errors import NumericsError
from ...ir import Graph, Op, Tensor
from ...numerics import FixedType, requantize, srs
from ..base import (ElementwiseConfig, Slice, bank_assignment, ceil_div, cycles_from_terms, feature_slices,
                    kernel_id, port, storage_bytes)

KIND = "add"

# The accumulator the kernel adds in (aie::accum<acc32, LANES>): 32 bits on AIE-ML and AIE-MLv2.
ACC_BITS = 32
# Values per vector operation, on every generation: LANES 16-bit inputs fill one 256-bit vector, and LANES
# acc32 lanes are one 512-bit accumulator (UG1583: sups v16int16 -> v16acc32); the negative-shift path's
# LANES acc64 lanes are one 1024-bit accumulator. A choice of the kernel's, not a hardware figure: the
# design records it in each add's Config.
LANES = 16


@dataclass(frozen=True)
class Config(ElementwiseConfig):
    """How one add is cut into kernels. Sizes are in elements; B is the padded batch."""

    features: int
    batch: int  # padded batch the kernels process per iteration
    lanes: int  # values one vector operation handles; n_tile is a multiple of it
    cas_length: int  # always 1: an add needs no cascade
    cas_num: int  # parallel kernels (split the features)
    n_tile: int  # features per kernel
    a_bits: int  # storage bits of input a, input b and the output
    b_bits: int
    out_bits: int

    def tile_buffers(self, device: Device) -> list[tuple[str, int]]:
        """(name, bytes) of every buffer a kernel keeps in data memory: both inputs and the output, each
        double-buffered, and the stack with the heap (counted together in the stack's bank)."""
        gen = device.generation
        n = self.batch * self.n_tile
        return [
            ("a_ping", n * storage_bytes(self.a_bits)),
            ("a_pong", n * storage_bytes(self.a_bits)),
            ("b_ping", n * storage_bytes(self.b_bits)),
            ("b_pong", n * storage_bytes(self.b_bits)),
            ("out_ping", n * storage_bytes(self.out_bits)),
            ("out_pong", n * storage_bytes(self.out_bits)),
            ("stack", gen.stack_bytes + gen.heap_bytes),
        ]


def add_op(name: str, a: Tensor, b: Tensor, y: str, out: FixedType, relu: bool = False) -> Op:
    """A residual add as every frontend writes it: both inputs moved onto the finer of their power-of-two
    grids by left shifts, added, and the sum shifted into y's type."""
    common = max(a.type.frac, b.type.frac)
    return Op(name, KIND, (a.name, b.name), (y,),
              {"relu": bool(relu), "shift_a": common - a.type.frac, "shift_b": common - b.type.frac,
               "shift": common - out.frac})


def evaluate(op: Op, graph: Graph, values: dict[str, np.ndarray], stats: dict | None = None) -> np.ndarray:
    """The add's output integers for its inputs' integers, any shape: align, add, SRS into the output, ReLU."""
    a, b = (np.asarray(values[t], dtype=np.int64) for t in op.inputs)
    acc = (a << np.int64(op.attrs["shift_a"])) + (b << np.int64(op.attrs["shift_b"]))
    return requantize(acc, 1, int(op.attrs["shift"]), 0, graph.tensors[op.outputs[0]].type,
                      bool(op.attrs.get("relu", False)), stats)


def _types(op: Op, graph: Graph) -> tuple[FixedType, FixedType, FixedType]:
    a, b = (graph.tensors[t].type for t in op.inputs)
    return a, b, graph.tensors[op.outputs[0]].type


def aligned_bound(op: Op, graph: Graph) -> int:
    """Worst-case |(a << shift_a) + (b << shift_b)|, exactly (Python ints)."""
    a, b, _ = _types(op, graph)
    return (a.magnitude << int(op.attrs["shift_a"])) + (b.magnitude << int(op.attrs["shift_b"]))


def check_numerics(op: Op, graph: Graph, device: Device) -> None:
    """Refuse types the kernel does not handle and sums that could overflow its 32-bit accumulator."""
    if len(op.inputs) != 2:
        raise NumericsError(f"an add takes two inputs, not {len(op.inputs)}", node=op.name)
    a, b, y = _types(op, graph)
    for t, what in ((a, "first input"), (b, "second input"), (y, "output")):
        if t.storage_bits not in (8, 16) or t.bits != t.storage_bits:
            raise NumericsError(f"{what} type {t.describe()} is not a full 8- or 16-bit integer",
                                node=op.name, hint="quantize activations to int8, uint8 or int16")
    for t in (*op.inputs, *op.outputs):
        if not graph.tensors[t].plain:
            raise NumericsError(f"tensor '{t}' has a scale that is not a power of two or a zero point; the add "
                                "kernel aligns power-of-two scales only", node=op.name,
                                hint="quantize both inputs and the output of a residual add with power-of-two "
                                     "scales and zero point 0")
    for key in ("shift_a", "shift_b"):
        if int(op.attrs[key]) < 0:
            raise NumericsError(f"{key} = {op.attrs[key]} is negative; inputs are aligned by left shifts only",
                                node=op.name)
    acc_max = (1 << (ACC_BITS - 1)) - 1
    bound = aligned_bound(op, graph)
    if bound > acc_max:
        raise NumericsError(
            f"the {ACC_BITS}-bit accumulator could overflow: worst case |a << {op.attrs['shift_a']} + "
            f"b << {op.attrs['shift_b']}| = {bound} > {acc_max}", node=op.name,
            hint="give the two inputs scales closer to each other")
    shift = int(op.attrs["shift"])
    if not -(ACC_BITS - 1) <= shift <= ACC_BITS - 1:
        raise NumericsError(f"shift of {shift} bits is outside what SRS can do on a {ACC_BITS}-bit accumulator",
                            node=op.name, hint="choose an output scale closer to the inputs' scales")


def candidates(op: Op, graph: Graph, device: Device, batch: int) -> list[Config]:
    """Every split of the features over 1 to device.rows kernels whose buffers fit the banks.

    The kernels of a layer sit in one column, one per row (the placer makes a box cas_num high), so more
    than `device.rows` kernels could never be placed. A last kernel of nothing but padding is skipped.
    """
    a, b, y = _types(op, graph)
    features = graph.tensors[op.outputs[0]].features
    found = []
    for cas_num in range(1, min(device.rows, ceil_div(features, LANES)) + 1):
        n_tile = ceil_div(features, cas_num * LANES) * LANES
        if (cas_num - 1) * n_tile >= features:
            continue
        cfg = Config(features, batch, LANES, 1, cas_num, n_tile, a.storage_bits, b.storage_bits, y.storage_bits)
        if bank_assignment(cfg.tile_buffers(device), device) is not None:
            found.append(cfg)
    found.sort(key=lambda c: (c.tiles, c.n_pad))
    return found


def tile_buffers(cfg: Config, stage: int, device: Device) -> list[tuple[str, int]]:
    return cfg.tile_buffers(device)


def pack(op: Op, cfg: Config) -> dict[str, np.ndarray]:
    """An add holds no parameters."""
    return {}


def input_slices(op: Op, cfg: Config, port_index: int) -> list[Slice]:
    """Kernel c reads features [c*Nt, (c+1)*Nt) of input `port_index`, row-major."""
    return feature_slices(op.name, cfg.cas_num, cfg.n_tile, port_index)


def output_slices(op: Op, cfg: Config) -> list[Slice]:
    """Kernel c writes features [c*Nt, (c+1)*Nt) of the output, row-major."""
    return feature_slices(op.name, cfg.cas_num, cfg.n_tile)


def kernel_add(a: np.ndarray, b: np.ndarray, shift_a: int, shift_b: int, shift: int, out: FixedType,
               relu: bool) -> np.ndarray:
    """One kernel's arithmetic on its streams: align, add, SRS into `out`, ReLU."""
    acc = (np.asarray(a, dtype=np.int64) << np.int64(shift_a)) + (np.asarray(b, dtype=np.int64) << np.int64(shift_b))
    y = srs(acc, shift, out)
    return np.maximum(y, 0) if relu else y


def emulate(layer, graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every kernel: its slice of a (port 0) plus its slice of b (port 1), streams in and out row-major."""
    cfg, op = layer.config, layer.op
    out_t = graph.tensors[op.outputs[0]].type
    streams = {}
    for chain in range(cfg.cas_num):
        kid = kernel_id(op.name, chain, 0)
        streams[kid] = kernel_add(inputs[kid], inputs[port(kid, 1)], int(op.attrs["shift_a"]),
                                  int(op.attrs["shift_b"]), int(op.attrs["shift"]), out_t,
                                  bool(op.attrs.get("relu", False)))
    return streams


def cycle_terms(cfg: Config, device: Device) -> dict[str, int]:
    """What one kernel's cycles per graph iteration are made of.

    Compute adds up: one vector of LANES values a cycle (two loads, two upshifts, an add, an SRS and a
    store pipeline into one issue per vector) and the fixed cost of a call. Terms named "stream ..." are not
    added: the two inputs arrive over two 32-bit streams in parallel (one S2MM channel each) while the
    ping-pong buffers let compute run, so the kernel takes the larger of its compute and its slower stream.
    The overheads are catalog estimates.
    """
    gen = device.generation
    values = cfg.batch * cfg.n_tile
    return {
        "vector": values // cfg.lanes,
        "per call": gen.kernel_call_cycles,
        "stream a": values * storage_bytes(cfg.a_bits) // gen.word_bytes,
        "stream b": values * storage_bytes(cfg.b_bits) // gen.word_bytes,
    }


def cycles(cfg: Config, device: Device) -> int:
    """Cycles of one kernel per graph iteration: the larger of its compute and its slower input stream."""
    return cycles_from_terms(cycle_terms(cfg, device))


def macs(op: Op, graph: Graph, batch: int) -> int:
    """Multiply-accumulates per graph iteration: none (an add's work is counted in its cycles only)."""
    return 0


def latency(cfg: Config, device: Device) -> int:
    """One iteration through the add: a kernel's cycles (there is no cascade)."""
    return cycles(cfg, device)
