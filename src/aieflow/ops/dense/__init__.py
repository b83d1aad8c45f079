"""Dense (fully connected) layers: y = requantize(bias + x @ W) with optional fused ReLU.

The end of a layer is numerics.requantize: the sums times an integer `multiplier` (attribute, default 1:
power-of-two scales need none), shifted by `shift` and rounded by the output type's mode, plus the output
tensor's zero point, saturated (or wrapped) into the output type's bits, which may be fewer than its 8- or
16-bit storage; ReLU clamps at the zero point.

A layer is split over a grid of tiles: the input features over a cascade chain of `cas_length` kernels
(partial accumulators pass left to right on the cascade port) and the output features over `cas_num`
parallel chains. The last kernel of each chain adds the bias, shifts, rounds, saturates and applies ReLU.

Data layouts (the emitted kernel and the emulator use the same ones):
  input stream of stage s   blocks [B/M][Kt/K][M][K] of x[:, s*Kt:(s+1)*Kt]
  weights of tile (c, s)    blocks [Nt/N][Kt/K][K][N] of W[s*Kt:(s+1)*Kt, c*Nt:(c+1)*Nt]
  output stream of chain c  blocks [B/M][Nt/N][M][N] of y[:, c*Nt:(c+1)*Nt]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

from ...devices import Device, get_device
from ...errors import NumericsError
from ...ir import Graph, Op
from ...numerics import MULTIPLIER_BITS, FixedType, accumulator_bound, requantize
from ..base import Slice, bank_assignment, ceil_div, cycles_from_terms, kernel_id, storage_bytes

KIND = "dense"


@dataclass(frozen=True)
class Config:
    """How one dense layer is cut into kernels. Sizes are in elements; B is the padded batch."""

    in_features: int
    out_features: int
    batch: int  # padded batch the kernels process per iteration
    microtile: tuple[int, int, int]  # aie::mmul M, K, N
    cas_length: int  # kernels in one cascade chain (splits the input features)
    cas_num: int  # parallel chains (split the output features)
    k_tile: int  # input features per kernel
    n_tile: int  # output features per kernel
    act_bits: int
    weight_bits: int
    out_bits: int
    acc_bits: int
    # Vector operations a requantizing finish adds per cascade word (emit.finish_vector_ops; 0 when plain).
    finish_ops: int = 0

    @property
    def tiles(self) -> int:
        return self.cas_length * self.cas_num

    @property
    def k_pad(self) -> int:
        return self.k_tile * self.cas_length

    @property
    def n_pad(self) -> int:
        return self.n_tile * self.cas_num

    def to_dict(self) -> dict:
        d = asdict(self)
        d["microtile"] = list(self.microtile)
        if not self.finish_ops:
            del d["finish_ops"]  # plain designs keep the design.json they always had
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls(**{**d, "microtile": tuple(d["microtile"])})

    def summary(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "cas_length": self.cas_length,
                "cas_num": self.cas_num, "microtile": list(self.microtile)}

    def tile_buffers(self, stage: int, device: Device) -> list[tuple[str, int]]:
        """(name, bytes) of every buffer a kernel of this layer keeps in data memory."""
        gen = device.generation
        bufs = [
            ("weights", self.k_tile * self.n_tile * self.weight_bits // 8),
            ("in_ping", self.batch * self.k_tile * storage_bytes(self.act_bits)),
            ("in_pong", self.batch * self.k_tile * storage_bytes(self.act_bits)),
            # Stack and heap, counted together in the stack's bank (the heap is not pinned separately).
            ("stack", gen.stack_bytes + gen.heap_bytes),
        ]
        if stage == self.cas_length - 1:
            bufs += [
                ("bias", self.n_tile * self.acc_bits // 8),
                ("out_ping", self.batch * self.n_tile * storage_bytes(self.out_bits)),
                ("out_pong", self.batch * self.n_tile * storage_bytes(self.out_bits)),
            ]
        return bufs


def dense_op(name: str, x: str, y: str, weight, bias, weight_type: FixedType, shift: int, multiplier: int = 1,
             relu: bool = False) -> Op:
    """A dense layer as every frontend writes it: y = requantize(x @ weight + bias, multiplier, shift,
    zero point and type of y, relu) (numerics.requantize); weight [in, out] and bias [out] as int64."""
    attrs = {"relu": bool(relu), "shift": int(shift), "weight_type": weight_type}
    if multiplier != 1:
        attrs["multiplier"] = int(multiplier)
    return Op(name, KIND, (x,), (y,), attrs,
              {"weight": np.asarray(weight).astype(np.int64), "bias": np.asarray(bias).astype(np.int64)})


def evaluate(op: Op, graph: Graph, values: dict[str, np.ndarray], stats: dict | None = None) -> np.ndarray:
    """The layer's output integers for its input integers [samples, in_features], exactly (int64)."""
    out = graph.tensors[op.outputs[0]]
    x = np.asarray(values[op.inputs[0]], dtype=np.int64)
    w = op.params["weight"].astype(np.int64)
    # float64 BLAS is exact while every partial sum stays below 2**53; int64 matmul is exact but slow.
    bound = int(np.abs(x).max(initial=0)) * int(np.abs(w).sum(axis=0).max(initial=0))
    prod = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64) if bound < 2**53 else x @ w
    acc = prod + op.params["bias"].astype(np.int64)[None, :]
    return requantize(acc, int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]), out.zero_point,
                      out.type, bool(op.attrs.get("relu", False)), stats)


def check_numerics(op: Op, graph: Graph, device: Device) -> None:
    """Refuse a layer whose accumulator could overflow or whose types the hardware lacks."""
    x = graph.tensors[op.inputs[0]].type
    y = graph.tensors[op.outputs[0]].type
    w: FixedType = op.attrs["weight_type"]
    prec = device.generation.precision(x.storage_bits, w.storage_bits, node=op.name)
    for t, what in ((x, "input"), (y, "output")):
        if t.storage_bits not in (8, 16) or (t.storage_bits == 16 and not t.signed):
            raise NumericsError(f"{what} type {t.describe()} does not fit int8, uint8 or int16",
                                node=op.name, hint="quantize activations to 16 bits or fewer (unsigned: 8 or fewer)")
    if w.storage_bits not in (8, 16) or not w.signed:
        raise NumericsError(f"weight type {w.describe()} does not fit int8 or int16", node=op.name,
                            hint="quantize weights to signed integers of 16 bits or fewer")
    acc_max = (1 << (prec.accumulator_bits - 1)) - 1
    weights = op.params["weight"].astype(np.int64)
    bias = op.params["bias"].astype(np.int64)
    if int(np.max(np.abs(bias), initial=0)) > acc_max:
        raise NumericsError(f"bias does not fit the {prec.accumulator_bits}-bit accumulator", node=op.name)
    bound = accumulator_bound(x, np.abs(weights).sum(axis=0), np.abs(bias))
    if bound > acc_max:
        raise NumericsError(
            f"the {prec.accumulator_bits}-bit accumulator could overflow: worst case |acc| = {bound} > {acc_max}",
            node=op.name, hint="use fewer input features, narrower weights or inputs, or split the layer")
    shift = op.attrs["shift"]
    multiplier = int(op.attrs.get("multiplier", 1))
    # With a multiplier the kernel reads the sums as int32 and multiplies them into a 64-bit accumulator.
    srs_bits = 64 if multiplier != 1 else prec.accumulator_bits
    if not 1 <= multiplier < 1 << MULTIPLIER_BITS:
        raise NumericsError(f"requantization multiplier {multiplier} is not a positive {MULTIPLIER_BITS}-bit integer",
                            node=op.name)
    if multiplier != 1 and bound > (1 << 31) - 1:
        raise NumericsError(f"the sums (worst case {bound}) do not fit the int32 the multiplier reads",
                            node=op.name, hint="use fewer input features, narrower weights or inputs")
    if not -(srs_bits - 1) <= shift <= srs_bits - 1:
        raise NumericsError(f"shift of {shift} bits is outside what SRS can do on a {srs_bits}-bit accumulator",
                            node=op.name, hint="choose output scales closer to input x weight scales")
    zp = graph.tensors[op.outputs[0]].zero_point
    if not y.qmin <= zp <= y.qmax:
        raise NumericsError(f"output zero point {zp} is outside {y.describe()}", node=op.name)


def candidates(op: Op, graph: Graph, device: Device, batch: int) -> list[Config]:
    """Every legal (microtile, cas_length, cas_num) for this layer on this device, fewest tiles first."""
    x = graph.tensors[op.inputs[0]].type
    y = graph.tensors[op.outputs[0]].type
    w: FixedType = op.attrs["weight_type"]
    device.generation.precision(x.storage_bits, w.storage_bits, node=op.name)  # refuses a missing precision
    k_in, n_out = op.params["weight"].shape
    found = list(_candidates(k_in, n_out, x.storage_bits, w.storage_bits, y.storage_bits, device.key, batch))
    from .emit import finish_vector_ops  # emit imports this module

    extra = finish_vector_ops(op, graph, found[0].acc_bits) if found else 0
    return [replace(c, finish_ops=extra) for c in found] if extra else found


@lru_cache(maxsize=512)
def _candidates(k_in: int, n_out: int, act_bits: int, weight_bits: int, out_bits: int, device_key: str,
                batch: int) -> tuple[Config, ...]:
    """The candidates of one layer shape; cached because graphs repeat shapes (and the search asks twice)."""
    device = get_device(device_key)
    gen = device.generation
    prec = gen.precision(act_bits, weight_bits)
    found = []
    # Memory-tile sharding serves any number of stages and chains, so the array bounds the split.
    max_len = device.columns
    max_num = device.rows
    for m, k, n in prec.microtiles:
        b_pad = ceil_div(batch, m) * m
        for cas_length in range(1, min(max_len, ceil_div(k_in, k)) + 1):
            k_tile = ceil_div(k_in, cas_length * k) * k
            for cas_num in range(1, min(max_num, ceil_div(n_out, n)) + 1):
                n_tile = ceil_div(n_out, cas_num * n) * n
                cfg = Config(k_in, n_out, b_pad, (m, k, n), cas_length, cas_num, k_tile, n_tile,
                             act_bits, weight_bits, out_bits, prec.accumulator_bits)
                # A last stage or chain of nothing but padding would be a kernel with no work.
                if (cas_length - 1) * k_tile >= k_in or (cas_num - 1) * n_tile >= n_out:
                    continue
                if all(bank_assignment(cfg.tile_buffers(s, device), device) is not None
                       for s in {0, cas_length - 1}):
                    found.append(cfg)
    found.sort(key=lambda c: (c.tiles, c.k_pad * c.n_pad, c.cas_length, prec.microtiles.index(c.microtile)))
    return tuple(found)


def pack(op: Op, cfg: Config) -> dict[str, np.ndarray]:
    """Weights per tile in microtile block order, bias per chain, zero-padded to the tile grid."""
    m, k, n = cfg.microtile
    w = np.zeros((cfg.k_pad, cfg.n_pad), dtype=np.int64)
    w[: cfg.in_features, : cfg.out_features] = op.params["weight"]
    b = np.zeros(cfg.n_pad, dtype=np.int64)
    b[: cfg.out_features] = op.params["bias"]
    kt, nt = cfg.k_tile, cfg.n_tile
    # [cas_num][cas_length][Nt/N][Kt/K][K][N]
    blocks = w.reshape(cfg.cas_length, kt // k, k, cfg.cas_num, nt // n, n).transpose(3, 0, 4, 1, 2, 5)
    wdtype = np.int8 if cfg.weight_bits == 8 else np.int16
    bdtype = np.int32 if cfg.acc_bits == 32 else np.int64
    return {
        "weights": np.ascontiguousarray(blocks.reshape(cfg.cas_num, cfg.cas_length, kt * nt)).astype(wdtype),
        "bias": b.reshape(cfg.cas_num, nt).astype(bdtype),
    }


def kernel_partial(cfg: Config, in_stream: np.ndarray, weights: np.ndarray,
                   cascade_in: np.ndarray | None) -> np.ndarray:
    """One kernel's accumulator [B, Nt]: what it passes on the cascade (or finishes if last)."""
    m, k, n = cfg.microtile
    bp, kt, nt = cfg.batch, cfg.k_tile, cfg.n_tile
    x = in_stream.reshape(bp // m, kt // k, m, k).transpose(0, 2, 1, 3).reshape(bp, kt)
    w = weights.reshape(nt // n, kt // k, k, n).transpose(1, 2, 0, 3).reshape(kt, nt)
    if cfg.acc_bits <= 32:
        # Exact: the overflow check bounds every partial sum below 2**31, far inside float64's 2**53.
        acc = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    else:
        acc = x.astype(np.int64) @ w.astype(np.int64)
    return acc if cascade_in is None else acc + cascade_in


def kernel_finish(cfg: Config, acc: np.ndarray, bias: np.ndarray, shift: int, out: FixedType,
                  relu: bool, multiplier: int = 1, zero_point: int = 0) -> np.ndarray:
    """Last kernel of a chain: bias, requantize into the output type (ReLU at the zero point); returns the
    output block stream."""
    m, _, n = cfg.microtile
    y = requantize(acc + bias[None, :].astype(np.int64), multiplier, shift, zero_point, out, relu)
    return y.reshape(cfg.batch // m, m, cfg.n_tile // n, n).transpose(0, 2, 1, 3).ravel()


def loop_blocking(cfg: Config) -> tuple[int, int]:
    """(row blocks, column blocks) of output a kernel computes together in its inner loop (register blocking).

    One aie::mmul needs an M x K block of A and a K x N block of B; loading both for every mmul (96 bytes
    at int8 4x8x8) outruns AIE-ML's two 256-bit loads a cycle. Computing a 2 x 2 group of output blocks
    together loads 2 A and 2 B blocks per k step for 4 mmuls, which keeps the MACs busy. A group must tile
    the kernel's blocks exactly, so a side whose block count is odd stays 1 wide. The emitted kernel takes
    its blocking from here, and every stage of a chain walks its groups (and their blocks, row by row) in
    the same order, which is the order of the partial sums on the cascade.
    """
    m, _, n = cfg.microtile
    return (2 if (cfg.batch // m) % 2 == 0 else 1, 2 if (cfg.n_tile // n) % 2 == 0 else 1)


def tile_buffers(cfg: Config, stage: int, device: Device) -> list[tuple[str, int]]:
    return cfg.tile_buffers(stage, device)


def input_slices(op: Op, cfg: Config, port: int) -> list[Slice]:
    """Stage s of every chain reads features [s*Kt, (s+1)*Kt) in M x K blocks."""
    m, k, _ = cfg.microtile
    return [Slice(s * cfg.k_tile, (s + 1) * cfg.k_tile, m, k,
                  tuple(kernel_id(op.name, c, s) for c in range(cfg.cas_num)))
            for s in range(cfg.cas_length)]


def output_slices(op: Op, cfg: Config) -> list[Slice]:
    """The last stage of chain c writes features [c*Nt, (c+1)*Nt) in M x N blocks."""
    m, _, n = cfg.microtile
    return [Slice(c * cfg.n_tile, (c + 1) * cfg.n_tile, m, n, (kernel_id(op.name, c, cfg.cas_length - 1),))
            for c in range(cfg.cas_num)]


def emulate(layer, graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every chain: partial sums down the cascade, then bias, SRS and ReLU in its last kernel."""
    cfg, op = layer.config, layer.op
    out_t = graph.tensors[op.outputs[0]].type
    streams = {}
    for chain in range(cfg.cas_num):
        acc = None
        for stage in range(cfg.cas_length):
            kid = kernel_id(op.name, chain, stage)
            acc = kernel_partial(cfg, inputs[kid], layer.packed["weights"][chain, stage], acc)
        streams[kid] = kernel_finish(cfg, acc, layer.packed["bias"][chain], op.attrs["shift"], out_t,
                                     op.attrs["relu"], int(op.attrs.get("multiplier", 1)),
                                     graph.tensors[op.outputs[0]].zero_point)
    return streams


def cycle_terms(cfg: Config, device: Device, finish_ops: int | None = None) -> dict[str, int]:
    """What the slowest kernel of the layer spends per graph iteration, term by term (catalog figures).

    Compute terms add up:
      mmul        (B/M) x (Nt/N) x (Kt/K) aie::mmul issues, each M x K x N MACs at the catalog's MACs per
                  cycle (a shape above the native rate takes more than a cycle, one below wastes lanes)
      load stall  cycles the loop waits on operands: each k step of a register-blocked group of output
                  blocks (loop_blocking) loads its A and B blocks through the core's vector load ports
      per block   each output block's fixed cost (the loop's prologue), plus whatever of its hand-off
                  (accumulator words over the cascade in and/or out, by the kernel's place in the chain, or
                  the SRS and store) does not fit under the next block's MACs: the hand-off uses the
                  move and store slots, which a software-pipelined loop issues beside the vector MACs
      per call    kernel entry, buffer locks and loop set-up
    `finish_ops` (default: the config's) is what a requantizing layer's finish issues per cascade word beyond the plain SRS and ReLU
    (dense.emit.finish_vector_ops: the multiply, the zero point, the clamps or the wrap, the narrowing; 0 for
    a plain layer): one vector operation a cycle, added to the hand-off of a chain's last kernel.
    Terms named "stream ..." are not added: a kernel's input and output move over its 32-bit (AIE-ML) DMA
    streams while the ping-pong buffers let compute run, so the kernel takes the largest of its compute
    and its streams.
    """
    gen = device.generation
    m, k, n = cfg.microtile
    rows, cols, steps = cfg.batch // m, cfg.n_tile // n, cfg.k_tile // k
    group_rows, group_cols = loop_blocking(cfg)
    load_bytes_per_cycle = gen.vector_loads_per_cycle * gen.vector_load_bits // 8
    step_bytes = group_rows * m * k * storage_bytes(cfg.act_bits) + group_cols * k * n * cfg.weight_bits // 8
    rate = gen.precisions[f"{cfg.act_bits}x{cfg.weight_bits}"].macs_per_cycle
    per_issue = -(-m * k * n // rate)
    step_cycles = max(group_rows * group_cols * per_issue, -(-step_bytes // load_bytes_per_cycle))
    groups = (rows // group_rows) * (cols // group_cols)
    issues = rows * cols * steps * per_issue
    cascade_words = -(-m * n * cfg.acc_bits // gen.cascade_bits)
    store = -(-m * n * cfg.out_bits // gen.vector_store_bits)
    # The slowest kernel's hand-off per block: a lone kernel stores; the last of a chain reads the cascade
    # and stores; a middle one reads and writes the cascade.
    finish = store + (cfg.finish_ops if finish_ops is None else finish_ops) * cascade_words
    if cfg.cas_length == 1:
        hand_off = finish
    elif cfg.cas_length == 2:
        hand_off = cascade_words + finish
    else:
        hand_off = max(2 * cascade_words, cascade_words + finish)
    loop_per_block = steps * step_cycles // (group_rows * group_cols)
    stream_bytes = gen.core_stream_bits // 8
    return {
        "mmul": issues,
        "load stall": groups * steps * step_cycles - issues,
        "per block": rows * cols * (gen.block_overhead_cycles + max(0, hand_off - loop_per_block)),
        "per call": gen.kernel_call_cycles,
        "stream in": -(-cfg.batch * cfg.k_tile * storage_bytes(cfg.act_bits) // stream_bytes),
        "stream out": -(-cfg.batch * cfg.n_tile * storage_bytes(cfg.out_bits) // stream_bytes),
    }


def cycles(cfg: Config, device: Device) -> int:
    """Cycles of the layer's slowest kernel per graph iteration: the larger of its compute and its streams."""
    return cycles_from_terms(cycle_terms(cfg, device))


def macs(op: Op, graph: Graph, batch: int) -> int:
    """Multiply-accumulates of the layer per graph iteration (the real sizes, not the padding)."""
    k_in, n_out = op.params["weight"].shape
    return batch * k_in * n_out


def latency(cfg: Config, device: Device) -> int:
    """One iteration through the layer: its input arrives, the kernels compute (the cascade adds a hop per
    stage), and its output leaves."""
    gen = device.generation
    terms = cycle_terms(cfg, device)
    compute = sum(v for t, v in terms.items() if not t.startswith("stream"))
    return terms["stream in"] + compute + (cfg.cas_length - 1) * gen.cascade_hop_cycles + terms["stream out"]
