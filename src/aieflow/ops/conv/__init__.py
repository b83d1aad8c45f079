"""Convolutions, 1-D and 2-D: y = requantize(bias + sum over the window of x * W), optional ReLU or clip.

The op (conv_op): input x of shape (H, W, C) or (L, C), channels last (a 1-D map is one row: H = 1, and its
kernel 1 x K); output (HO, WO, CO). Attributes: kernel (KH, KW), strides (SH, SW), pads (top, left, bottom,
right), depthwise (groups = C = CO, one input channel per output channel), shift and multiplier (the layer's
requantization, numerics.requantize into y's type and zero point), relu, clip (optional [lo, hi] integer
bounds applied after, for ReLU6 and Clip), weight_type. Parameters: weight [KH, KW, C, CO] ([KH, KW, 1, C]
when depthwise) and bias [CO], integers on their final grids. Padding positions read as raw 0: a frontend
whose input has a zero point and padding first moves x to zero point 0 (a requant op).

Mapping. A convolution is an implicit GEMM on aie::mmul<M, K, N>: M output pixels along a row, K input
channels, N output channels; the product of a window tap's M x K input block and its K x N weight block is
accumulated over the taps and the input channels of a kernel. The layer is cut three ways:
  cas_length  stages of a cascade chain, each taking k_tile of the input channels (partial sums pass east)
  chains      output-channel groups of n_tile channels (parallel chains)
  row splits  groups of `rows` output rows (parallel chains, each reading its rows' input with the halo
              the kernel window needs)
so cas_num = row_splits x chains, chain index c = r * chains + j. A depthwise layer has no cascade: each
chain takes n_tile channels, in and out, and the kernel multiplies lanes elementwise.

Data layouts, pixel-major (channels fastest) everywhere, so each kernel port is one box of the map that a
memory-tile access delivers (base.Window): zero padding at the borders and past the last channel comes from
the DMA, never from the kernel.
  input of chain (r, j), stage s   [B][rows_in][cols_in][k_tile]  rows r*rows*SH - top .. + rows_in,
                                   columns -left .. -left + cols_in, channels s*k_tile ..
  output of chain (r, j)           [B][rows][WO][n_out]  output rows r*rows .., channels j*n_tile ..
                                   (n_out: the chain's real channels, n_tile but for the last chain)
  weights of tile (c, s)           [n_tile/N][KH][KW][k_tile/K][K][N]   (depthwise: [KH][KW][n_tile])
  bias of chain j                  [n_tile]
rows_in = (rows - 1) * SH + KH; cols_in = (max(WO, M) - 1) * SW + KW + SW - 1 (a stride-2 kernel loads
2M pixels at a time and keeps every other: one column more). The kernel computes ceil(WO / M) blocks of M
pixels a row, the last block moved left to end at WO (it overlaps its neighbour, recomputing a few
pixels); a row narrower than M is one block whose pixels past WO are computed from zeros and not stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ...devices import Device
from ...errors import NumericsError
from ...ir import Graph, Op
from ...fastmath import NUMPY, clip_bounds, float_ok, offset, precision_for, round_inplace
from ...numerics import MULTIPLIER_BITS, FixedType, requantize
from ..base import Window, bank_assignment, ceil_div, cycles_from_terms, kernel_id, map_dims, storage_bytes

KIND = "conv"
# Channels one vector of a depthwise kernel handles (lanes of acc32: one 512-bit accumulator).
LANES = 16


@dataclass(frozen=True)
class Config:
    """How one convolution is cut into kernels. Sizes are in elements; B is the batch."""

    in_shape: tuple[int, int, int]  # (H, W, C)
    out_shape: tuple[int, int, int]  # (HO, WO, CO)
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    depthwise: bool
    batch: int
    microtile: tuple[int, int, int]  # aie::mmul M, K, N (depthwise: 1, LANES, LANES)
    cas_length: int  # input-channel stages of a chain
    chains: int  # output-channel groups
    row_splits: int  # output-row groups
    k_tile: int  # input channels per stage
    n_tile: int  # output channels per chain
    rows: int  # output rows per kernel
    act_bits: int
    weight_bits: int
    out_bits: int
    acc_bits: int
    finish_ops: int = 0  # vector ops a requantizing finish adds per block row (dense.emit.finish_vector_ops)

    @property
    def cas_num(self) -> int:
        return self.chains * self.row_splits

    @property
    def tiles(self) -> int:
        return self.cas_length * self.cas_num

    @property
    def rows_in(self) -> int:
        return (self.rows - 1) * self.strides[0] + self.kernel[0]

    @property
    def cols_in(self) -> int:
        """Input columns a kernel reads: those of max(WO, M) output pixels (a row narrower than a pixel
        block is computed as one block, the pixels past WO never stored), plus one for stride 2."""
        wide = max(self.out_shape[1], self.microtile[0])
        return (wide - 1) * self.strides[1] + self.kernel[1] + self.strides[1] - 1

    @property
    def in_features(self) -> int:
        h, w, c = self.in_shape
        return h * w * c

    @property
    def out_features(self) -> int:
        h, w, c = self.out_shape
        return h * w * c

    def n_out(self, chain: int) -> int:
        """Real output channels of output-channel group `chain` (the last may hold fewer)."""
        return min(self.n_tile, self.out_shape[2] - chain * self.n_tile)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("in_shape", "out_shape", "kernel", "strides", "pads", "microtile"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        tuples = ("in_shape", "out_shape", "kernel", "strides", "pads", "microtile")
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items()})

    def summary(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "cas_length": self.cas_length,
                "cas_num": self.cas_num, "microtile": list(self.microtile)}

    def tile_buffers(self, stage: int, device: Device) -> list[tuple[str, int]]:
        gen = device.generation
        taps = self.kernel[0] * self.kernel[1]
        weights = taps * self.n_tile * (1 if self.depthwise else self.k_tile) * self.weight_bits // 8
        bufs = [("weights", weights),
                ("in_ping", self.batch * self.rows_in * self.cols_in * self.k_tile * storage_bytes(self.act_bits)),
                ("in_pong", self.batch * self.rows_in * self.cols_in * self.k_tile * storage_bytes(self.act_bits)),
                ("stack", gen.stack_bytes + gen.heap_bytes)]
        if stage == self.cas_length - 1:
            out = self.batch * self.rows * self.out_shape[1] * self.n_tile * storage_bytes(self.out_bits)
            bufs += [("bias", self.n_tile * self.acc_bits // 8), ("out_ping", out), ("out_pong", out)]
        return bufs


def out_size(size: int, kernel: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - kernel) // stride + 1


def conv_op(name: str, x: str, y: str, weight, bias, weight_type: FixedType, *, kernel, strides, pads,
            shift: int, multiplier: int = 1, relu: bool = False, depthwise: bool = False,
            clip: tuple[int, int] | None = None) -> Op:
    """A convolution as every frontend writes it (see the module docstring); weight [KH, KW, C, CO]
    ([KH, KW, 1, C] depthwise) and bias [CO] as int64."""
    attrs = {"kernel": [int(v) for v in kernel], "strides": [int(v) for v in strides],
             "pads": [int(v) for v in pads], "depthwise": bool(depthwise), "relu": bool(relu),
             "shift": int(shift), "weight_type": weight_type}
    if multiplier != 1:
        attrs["multiplier"] = int(multiplier)
    if clip is not None:
        attrs["clip"] = [int(clip[0]), int(clip[1])]
    return Op(name, KIND, (x,), (y,), attrs,
              {"weight": np.asarray(weight).astype(np.int64), "bias": np.asarray(bias).astype(np.int64)})


def _geometry(op: Op, graph: Graph):
    x = graph.tensors[op.inputs[0]]
    y = graph.tensors[op.outputs[0]]
    c, w, h = map_dims(x.shape)
    co, wo, ho = map_dims(y.shape)
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs["strides"]
    return (h, w, c), (ho, wo, co), (kh, kw), (sh, sw), tuple(op.attrs["pads"])


def windows(x: np.ndarray, kernel, strides, out_hw) -> np.ndarray:
    """x [n, Hp, Wp, C] (already padded) as [n, HO, WO, KH, KW, C]: each output pixel's input window."""
    kh, kw = kernel
    sh, sw = strides
    ho, wo = out_hw
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # [n, H', W', C, KH, KW]
    v = v[:, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw]
    return v.transpose(0, 1, 2, 4, 5, 3)


def conv_sums(x: np.ndarray, weight: np.ndarray, kernel, strides, out_hw, depthwise: bool,
              dtype=None) -> np.ndarray:
    """The sums [n, HO, WO, CO] of a padded input [n, Hp, Wp, C] with weights [KH, KW, C|1, CO], as int64, or
    in `dtype` (float32 or float64) when the caller has bounded every partial sum below that float's exact
    range (2**24, 2**53): then every order of additions is exact. Tap by tap: each tap's strided view of the
    input times its C x CO weights (a batched product, no im2col copy: measured 2.5 to 5 times faster than
    one product over copied windows on ResNet-sized layers), summed over the taps."""
    if dtype is None:
        bound = int(np.abs(x).max(initial=0)) * int(np.abs(weight).reshape(-1, weight.shape[-1]).sum(axis=0).max(initial=0))
        return conv_sums(x, weight, kernel, strides, out_hw, depthwise,
                         np.float64 if bound < 2**53 else np.int64).astype(np.int64)
    kh, kw = kernel
    sh, sw = strides
    ho, wo = out_hw
    x = np.asarray(x).astype(dtype, copy=False)
    w = np.asarray(weight).astype(dtype)
    acc = None
    for i in range(kh):
        for j in range(kw):
            tap = x[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
            part = tap * w[i, j, 0] if depthwise else np.matmul(tap, w[i, j])
            if acc is None:
                acc = part
            else:
                acc += part
    return acc


def layer_output(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, op: Op, out, out_hw,
                 stats: dict | None = None, x_magnitude: int | None = None) -> np.ndarray:
    """The layer's output integers [n, HO, WO, CO] from its padded input integers [n, Hp, Wp, C], weights
    and bias: sums, bias, requantization, clip. Whole batches take the cheapest exact arithmetic
    (aieflow.fastmath): float32 or float64 sums with the shift folded in where the output is a plain SRS into
    a saturating type, int64 and numerics.requantize otherwise (and whenever `stats` counts the rounding).
    x may hold its integers as int64 or as floats; `x_magnitude` (the input type's largest magnitude) spares
    looking at every value for the bound. Returns integers, in a float array on the float path."""
    shift, multiplier = int(op.attrs["shift"]), int(op.attrs.get("multiplier", 1))
    relu = bool(op.attrs.get("relu", False))
    kernel, strides, depthwise = op.attrs["kernel"], op.attrs["strides"], bool(op.attrs["depthwise"])
    colsum = int(np.abs(weight.astype(np.int64)).reshape(-1, weight.shape[-1]).sum(axis=0).max(initial=0))
    magnitude = x_magnitude if x_magnitude is not None else int(np.abs(x).max(initial=0))
    bound = magnitude * colsum + int(np.abs(bias).max(initial=0)) + ((1 << shift) if shift > 0 else 0)
    dtype = {"float32": np.float32, "float64": np.float64}.get(precision_for(bound))
    plain = multiplier == 1 and out.zero_point == 0 and float_ok(out.type) and stats is None
    if dtype is not None and plain:
        z = conv_sums(x, weight, kernel, strides, out_hw, depthwise, dtype)
        z += (bias.astype(np.int64) + offset(out.type.rounding, shift)).astype(dtype)
        z *= dtype(2.0 ** -shift)  # a power of two: exact
        z = round_inplace(NUMPY, z, out.type.rounding, shift)
        lo, hi = clip_bounds(out.type, relu)
        y = np.clip(z, lo, hi, out=z)
        clip = op.attrs.get("clip")
        return np.clip(y, clip[0], clip[1]) if clip is not None else y
    acc = conv_sums(np.asarray(x).astype(np.int64), weight, kernel, strides, out_hw, depthwise) + bias.astype(np.int64)
    return finish(acc, op, out, stats)


def pad_map(x: np.ndarray, pads) -> np.ndarray:
    """[n, H, W, C] with zero rows and columns added: pads (top, left, bottom, right)."""
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))


def finish(acc: np.ndarray, op: Op, out, stats: dict | None = None) -> np.ndarray:
    """The layer's end: requantize into the output type (ReLU at its zero point), then the clip."""
    y = requantize(acc, int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]), out.zero_point, out.type,
                   bool(op.attrs.get("relu", False)), stats)
    clip = op.attrs.get("clip")
    return np.clip(y, clip[0], clip[1]) if clip is not None else y


def evaluate(op: Op, graph: Graph, values: dict[str, np.ndarray], stats: dict | None = None) -> np.ndarray:
    """The layer's output integers [samples, HO*WO*CO] for its input integers [samples, H*W*C], exactly."""
    (h, w, c), (ho, wo, co), kernel, strides, pads = _geometry(op, graph)
    x = np.asarray(values[op.inputs[0]], dtype=np.int64).reshape(-1, h, w, c)
    y = layer_output(pad_map(x, pads), op.params["weight"], op.params["bias"], op, graph.tensors[op.outputs[0]],
                     (ho, wo), stats)
    return y.astype(np.int64).reshape(y.shape[0], -1)


def check_numerics(op: Op, graph: Graph, device: Device) -> None:
    """Refuse types the kernels lack, shapes that do not add up and sums that could overflow."""
    x_t, y_t = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if len(x_t.shape) not in (2, 3) or len(y_t.shape) != len(x_t.shape):
        raise NumericsError(f"a convolution maps a 1-D or 2-D feature map to one of the same rank, not "
                            f"{list(x_t.shape)} to {list(y_t.shape)}", node=op.name)
    (h, w, c), (ho, wo, co), (kh, kw), (sh, sw), pads = _geometry(op, graph)
    weight = op.params["weight"]
    depthwise = bool(op.attrs["depthwise"])
    want = (kh, kw, 1, co) if depthwise else (kh, kw, c, co)
    if tuple(weight.shape) != want or (depthwise and c != co):
        raise NumericsError(f"weights of shape {list(weight.shape)} do not fit a {kh}x{kw} "
                            f"{'depthwise ' if depthwise else ''}convolution of {c} to {co} channels", node=op.name)
    if (out_size(h, kh, sh, pads[0], pads[2]), out_size(w, kw, sw, pads[1], pads[3])) != (ho, wo):
        raise NumericsError(f"a {kh}x{kw} window at stride {sh}x{sw} with pads {list(pads)} makes "
                            f"{out_size(h, kh, sh, pads[0], pads[2])}x{out_size(w, kw, sw, pads[1], pads[3])} "
                            f"outputs, not {ho}x{wo}", node=op.name)
    if min(pads) < 0 or pads[0] >= kh or pads[2] >= kh or pads[1] >= kw or pads[3] >= kw:
        raise NumericsError(f"pads {list(pads)} must be 0 to one less than the window", node=op.name)
    if sh not in (1, 2) or sw not in (1, 2):
        raise NumericsError(f"stride {sh}x{sw}: the convolution kernels take strides 1 and 2", node=op.name,
                            hint="use stride 1 or 2")
    x, y, wt = x_t.type, y_t.type, op.attrs["weight_type"]
    prec = device.generation.precision(x.storage_bits, wt.storage_bits, node=op.name)
    for t, what in ((x, "input"), (y, "output")):
        if t.storage_bits not in (8, 16) or (t.storage_bits == 16 and not t.signed):
            raise NumericsError(f"{what} type {t.describe()} does not fit int8, uint8 or int16", node=op.name,
                                hint="quantize activations to 16 bits or fewer (unsigned: 8 or fewer)")
    if wt.storage_bits not in (8, 16) or not wt.signed:
        raise NumericsError(f"weight type {wt.describe()} does not fit int8 or int16", node=op.name)
    if x_t.zero_point and any(pads):
        raise NumericsError("an input with a zero point is padded with its raw zero, not its real zero",
                            node=op.name, hint="move the input to zero point 0 first (a requant op)")
    acc_max = (1 << (prec.accumulator_bits - 1)) - 1
    colsum = np.abs(weight.astype(np.int64)).reshape(-1, weight.shape[-1]).sum(axis=0)
    bound = int(np.max(colsum * x.magnitude + np.abs(op.params["bias"].astype(np.int64)), initial=0))
    if bound > acc_max:
        raise NumericsError(f"the {prec.accumulator_bits}-bit accumulator could overflow: worst case |acc| = "
                            f"{bound} > {acc_max}", node=op.name, hint="use narrower weights or inputs")
    multiplier = int(op.attrs.get("multiplier", 1))
    if not 1 <= multiplier < 1 << MULTIPLIER_BITS:
        raise NumericsError(f"requantization multiplier {multiplier} is not a positive {MULTIPLIER_BITS}-bit integer",
                            node=op.name)
    if multiplier != 1 and bound > (1 << 31) - 1:
        raise NumericsError(f"the sums (worst case {bound}) do not fit the int32 the multiplier reads", node=op.name)
    shift = int(op.attrs["shift"])
    srs_bits = 64 if multiplier != 1 else prec.accumulator_bits
    if not -(srs_bits - 1) <= shift <= srs_bits - 1:
        raise NumericsError(f"shift of {shift} bits is outside what SRS can do on a {srs_bits}-bit accumulator",
                            node=op.name)
    if not y.qmin <= y_t.zero_point <= y.qmax:
        raise NumericsError(f"output zero point {y_t.zero_point} is outside {y.describe()}", node=op.name)


def candidates(op: Op, graph: Graph, device: Device, batch: int) -> list[Config]:
    """Every legal split (microtile, stages, chains, row splits) whose buffers fit the banks, fewest tiles first.

    Row splits divide the output rows evenly (every kernel writes whole rows of the map); a chain or stage
    of nothing but padding is skipped.
    """
    (h, w, c), (ho, wo, co), kernel, strides, pads = _geometry(op, graph)
    x, y, wt = (graph.tensors[op.inputs[0]].type, graph.tensors[op.outputs[0]].type, op.attrs["weight_type"])
    gen = device.generation
    prec = gen.precision(x.storage_bits, wt.storage_bits, node=op.name)
    depthwise = bool(op.attrs["depthwise"])
    from ..dense.emit import finish_vector_ops  # emit imports the dense family

    extra = finish_vector_ops(op, graph, prec.accumulator_bits) + (2 if op.attrs.get("clip") else 0)
    shapes = [(1, LANES, LANES)] if depthwise else list(prec.microtiles)
    splits = [r for r in range(1, ho + 1) if ho % r == 0 and r <= device.rows]
    found = []
    for m, k, n in shapes:
        for length in ([1] if depthwise else range(1, min(device.columns, ceil_div(c, k)) + 1)):
            k_tile = ceil_div(c, length * k) * k
            if (length - 1) * k_tile >= c:
                continue
            for chains in range(1, min(device.rows, ceil_div(co, n)) + 1):
                n_tile = ceil_div(co, chains * n) * n
                if (chains - 1) * n_tile >= co:
                    continue
                for rs in splits:
                    if chains * rs > device.rows:
                        continue
                    cfg = Config((h, w, c), (ho, wo, co), kernel, strides, pads, depthwise, batch, (m, k, n),
                                 length, chains, rs, n_tile if depthwise else k_tile, n_tile, ho // rs,
                                 x.storage_bits, wt.storage_bits, y.storage_bits, prec.accumulator_bits, extra)
                    if all(bank_assignment(cfg.tile_buffers(s, device), device) is not None
                           for s in {0, length - 1}):
                        found.append(cfg)
    found.sort(key=lambda cf: (cf.tiles, cf.cas_length, cf.chains, cf.row_splits))
    return found


def tile_buffers(cfg: Config, stage: int, device: Device) -> list[tuple[str, int]]:
    return cfg.tile_buffers(stage, device)


def pack(op: Op, cfg: Config) -> dict[str, np.ndarray]:
    """Weights per (chain, stage) in the kernel's block order, bias per chain, zero-padded channels.

    Every row split holds the same weights: weights are [cas_num, cas_length, ...] with chain c = r *
    chains + j holding output-channel group j."""
    kh, kw = cfg.kernel
    m, k, n = cfg.microtile
    co = cfg.out_shape[2]
    wdtype = np.int8 if cfg.weight_bits == 8 else np.int16
    bdtype = np.int32 if cfg.acc_bits == 32 else np.int64
    b = np.zeros(cfg.chains * cfg.n_tile, dtype=np.int64)
    b[:co] = op.params["bias"]
    if cfg.depthwise:
        w = np.zeros((kh, kw, cfg.chains * cfg.n_tile), dtype=np.int64)
        w[:, :, :co] = op.params["weight"][:, :, 0, :]
        blocks = w.reshape(kh, kw, cfg.chains, cfg.n_tile).transpose(2, 0, 1, 3).reshape(cfg.chains, 1, -1)
    else:
        c = cfg.in_shape[2]
        w = np.zeros((kh, kw, cfg.cas_length * cfg.k_tile, cfg.chains * cfg.n_tile), dtype=np.int64)
        w[:, :, :c, :co] = op.params["weight"]
        # [KH][KW][stage][KT/K][K][chain][NT/N][N] -> [chain][stage][NT/N][KH][KW][KT/K][K][N]
        w = w.reshape(kh, kw, cfg.cas_length, cfg.k_tile // k, k, cfg.chains, cfg.n_tile // n, n)
        blocks = w.transpose(5, 2, 6, 0, 1, 3, 4, 7).reshape(cfg.chains, cfg.cas_length, -1)
    blocks = np.tile(blocks, (cfg.row_splits, 1, 1))  # chain r * chains + j
    bias = np.tile(b.reshape(cfg.chains, cfg.n_tile), (cfg.row_splits, 1))
    return {"weights": np.ascontiguousarray(blocks).astype(wdtype), "bias": bias.astype(bdtype)}


def input_slices(op: Op, cfg: Config, port: int) -> list[Window]:
    """Chain (r, j), stage s reads rows of its output rows' windows (halo included), every column the
    window needs (borders past the map: zeros), and its stage's channels (depthwise: its chain's)."""
    sh, sw = cfg.strides
    top, left = cfg.pads[0], cfg.pads[1]
    out = []
    for stage in range(cfg.cas_length):
        for r in range(cfg.row_splits):
            peers = []
            for j in range(cfg.chains):
                peers.append(kernel_id(op.name, r * cfg.chains + j, stage))
            row0 = r * cfg.rows * sh - top
            if cfg.depthwise:  # each chain reads its own channels
                out += [Window((j * cfg.n_tile, -left, row0), (cfg.n_tile, cfg.cols_in, cfg.rows_in), (p,))
                        for j, p in enumerate(peers)]
            else:
                out.append(Window((stage * cfg.k_tile, -left, row0), (cfg.k_tile, cfg.cols_in, cfg.rows_in),
                                  tuple(peers)))
    return out


def output_slices(op: Op, cfg: Config) -> list[Window]:
    """The last stage of chain (r, j) writes output rows [r*rows, (r+1)*rows), every column, and the real
    channels of group j."""
    wo = cfg.out_shape[1]
    return [Window((j * cfg.n_tile, 0, r * cfg.rows), (cfg.n_out(j), wo, cfg.rows),
                   (kernel_id(op.name, r * cfg.chains + j, cfg.cas_length - 1),))
            for r in range(cfg.row_splits) for j in range(cfg.chains)]


def unpack_weights(cfg: Config, block: np.ndarray) -> np.ndarray:
    """One tile's packed weights back as [KH, KW, k_tile, n_tile] ([KH, KW, 1, n_tile] depthwise)."""
    kh, kw = cfg.kernel
    _, k, n = cfg.microtile
    if cfg.depthwise:
        return np.asarray(block, dtype=np.int64).reshape(kh, kw, 1, cfg.n_tile)
    w = np.asarray(block, dtype=np.int64).reshape(cfg.n_tile // n, kh, kw, cfg.k_tile // k, k, n)
    return w.transpose(1, 2, 3, 4, 0, 5).reshape(kh, kw, cfg.k_tile, cfg.n_tile)


def kernel_partial(cfg: Config, stream: np.ndarray, weights: np.ndarray, cascade_in: np.ndarray | None) -> np.ndarray:
    """One kernel's sums [B, rows, WO, n_tile] from its input window stream and packed weights."""
    x = np.asarray(stream, dtype=np.int64).reshape(cfg.batch, cfg.rows_in, cfg.cols_in, cfg.k_tile)
    acc = conv_sums(x, unpack_weights(cfg, weights), cfg.kernel, cfg.strides, (cfg.rows, cfg.out_shape[1]),
                    cfg.depthwise)
    return acc if cascade_in is None else acc + cascade_in


def emulate(layer, graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every chain: partial sums down the cascade, then bias, requantization and clip in its last kernel;
    its stream holds the chain's real channels."""
    cfg, op = layer.config, layer.op
    out = graph.tensors[op.outputs[0]]
    streams = {}
    for chain in range(cfg.cas_num):
        acc = None
        for stage in range(cfg.cas_length):
            kid = kernel_id(op.name, chain, stage)
            acc = kernel_partial(cfg, inputs[kid], layer.packed["weights"][chain, stage], acc)
        acc = acc + layer.packed["bias"][chain].astype(np.int64)
        y = finish(acc, op, out)[..., : cfg.n_out(chain % cfg.chains)]
        streams[kid] = y.ravel()
    return streams


def cycle_terms(cfg: Config, device: Device) -> dict[str, int]:
    """What the slowest kernel of the layer spends per graph iteration (catalog figures, estimates marked).

      mmul        B x rows x ceil(WO/M) pixel blocks x (NT/N) x taps x (KT/K) issues of M x K x N MACs
                  (depthwise: B x rows x WO x taps x NT/LANES elementwise vector MACs)
      load stall  the A blocks gathered pixel by pixel (one load per pixel unless a block's M pixels are
                  contiguous: K = KT and stride 1) and the B blocks, through two vector loads a cycle
      store       each output pixel's channels stored on their own (pixel-major output), plus a
                  requantizing finish's extra vector operations, beside the cascade words of a chain
      per call    kernel entry, locks and loop set-up
    The "stream ..." terms run beside the compute (ping-pong buffers).
    """
    gen = device.generation
    m, k, n = cfg.microtile
    kh, kw = cfg.kernel
    wo = cfg.out_shape[1]
    taps = kh * kw
    rate = gen.precisions[f"{cfg.act_bits}x{cfg.weight_bits}"].macs_per_cycle
    if cfg.depthwise:
        vectors = cfg.batch * cfg.rows * wo * taps * ceil_div(cfg.n_tile, LANES)
        issues = vectors * ceil_div(LANES * 2, max(rate // 8, 1))  # elementwise MACs run at 1/8 the mmul rate
        loads = vectors  # one pixel's channel vector per MAC, weights kept in registers per tap
        stall = max(0, ceil_div(2 * loads, gen.vector_loads_per_cycle) - issues)
        stores = cfg.batch * cfg.rows * wo * ceil_div(cfg.n_tile, LANES) * (1 + cfg.finish_ops)
        cascade = 0
    else:
        blocks = cfg.batch * cfg.rows * ceil_div(wo, m) * (cfg.n_tile // n)
        steps = taps * (cfg.k_tile // k)
        per_issue = ceil_div(m * k * n, rate)
        issues = blocks * steps * per_issue
        a_loads = 1 if (cfg.k_tile == k and cfg.strides[1] == 1) else m
        stall = max(0, blocks * steps * ceil_div(a_loads + 1, gen.vector_loads_per_cycle) - issues)
        cascade_words = ceil_div(m * n * cfg.acc_bits, gen.cascade_bits)
        stores = blocks * (m + cfg.finish_ops * cascade_words)
        cascade = blocks * cascade_words if cfg.cas_length > 1 else 0
    stream_bytes = gen.core_stream_bits // 8
    in_bytes = cfg.batch * cfg.rows_in * cfg.cols_in * cfg.k_tile * storage_bytes(cfg.act_bits)
    out_bytes = cfg.batch * cfg.rows * wo * cfg.n_tile * storage_bytes(cfg.out_bits)
    return {
        "mmul": issues,
        "load stall": stall,
        "store": stores + cascade,
        "per call": gen.kernel_call_cycles,
        "stream in": ceil_div(in_bytes, stream_bytes),
        "stream out": ceil_div(out_bytes, stream_bytes),
    }


def cycles(cfg: Config, device: Device) -> int:
    return cycles_from_terms(cycle_terms(cfg, device))


def macs(op: Op, graph: Graph, batch: int) -> int:
    """Multiply-accumulates per graph iteration (the real sizes, not the padding)."""
    kh, kw, cin, co = op.params["weight"].shape
    out = graph.tensors[op.outputs[0]]
    return batch * (out.features // out.channels) * kh * kw * cin * co


def latency(cfg: Config, device: Device) -> int:
    gen = device.generation
    terms = cycle_terms(cfg, device)
    compute = sum(v for t, v in terms.items() if not t.startswith("stream"))
    return terms["stream in"] + compute + (cfg.cas_length - 1) * gen.cascade_hop_cycles + terms["stream out"]
