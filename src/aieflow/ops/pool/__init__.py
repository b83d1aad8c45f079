"""Pooling over 1-D and 2-D feature maps: max and average, windowed or global.

The op (pool_op): input x of shape (H, W, C) or (L, C), channels last (a 1-D map is one row); output
(HO, WO, C). Attributes: mode ("max" or "avg"), kernel (KH, KW), strides (SH, SW), pads (top, left, bottom,
right). A global pool is a window the size of the map. Max: y = the largest input of the window (padding
never wins), in the input's own type. Average: y = requantize(sum of the window + bias, multiplier, shift)
into y's type and zero point (numerics.requantize), where bias = -window x the input's zero point and
multiplier / 2**shift is the scale ratio over the window count: exact for a power-of-two window and
power-of-two scales, otherwise as close as a 31-bit multiplier gets, with the exactness measured. Average
pools count the whole window (padding, if any, reads as raw 0: a padded average needs zero point 0).

Mapping: the channels split over `chains` groups of n_tile (a multiple of LANES) and the output rows over
`row_splits` groups of `rows` (cas_num = row_splits x chains, chain c = r * chains + j, no cascade). Each
kernel reads the window rows of its output rows (halo included, the border as zeros from the memory
tile's padding) and its channels, pixel-major, exactly as a depthwise convolution does (ops/conv):
  input of chain (r, j)    [B][rows_in][cols_in][n_tile]   rows r*rows*SH - top .., columns -left ..
  output of chain (r, j)   [B][rows][WO][n_out]            n_out: the chain's real channels
rows_in = (rows - 1) * SH + KH, cols_in = (WO - 1) * SW + KW.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...devices import Device
from ...errors import NumericsError
from ...ir import Graph, Op
from ...numerics import MULTIPLIER_BITS, requantize
from ..base import Window, bank_assignment, ceil_div, cycles_from_terms, kernel_id, map_dims, storage_bytes

KIND = "pool"
# Channels one vector operation handles: 16 int8 or int16 lanes (acc32 for the average's sums).
LANES = 16


@dataclass(frozen=True)
class Config:
    in_shape: tuple[int, int, int]  # (H, W, C)
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    mode: str  # "max" or "avg"
    batch: int
    lanes: int
    chains: int
    row_splits: int
    n_tile: int
    rows: int
    in_bits: int
    out_bits: int
    cas_length: int = 1

    @property
    def cas_num(self) -> int:
        return self.chains * self.row_splits

    @property
    def tiles(self) -> int:
        return self.cas_num

    @property
    def microtile(self) -> tuple[int, int, int]:
        return (1, self.lanes, self.lanes)

    @property
    def rows_in(self) -> int:
        return (self.rows - 1) * self.strides[0] + self.kernel[0]

    @property
    def cols_in(self) -> int:
        return (self.out_shape[1] - 1) * self.strides[1] + self.kernel[1]

    @property
    def in_features(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_features(self) -> int:
        return int(np.prod(self.out_shape))

    def n_out(self, chain: int) -> int:
        return min(self.n_tile, self.out_shape[2] - chain * self.n_tile)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("in_shape", "out_shape", "kernel", "strides", "pads"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        tuples = ("in_shape", "out_shape", "kernel", "strides", "pads")
        return cls(**{k: (tuple(v) if k in tuples else v) for k, v in d.items()})

    def summary(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "cas_length": 1,
                "cas_num": self.cas_num, "microtile": list(self.microtile)}

    def tile_buffers(self, device: Device) -> list[tuple[str, int]]:
        gen = device.generation
        n_in = self.batch * self.rows_in * self.cols_in * self.n_tile * storage_bytes(self.in_bits)
        n_out = self.batch * self.rows * self.out_shape[1] * self.n_tile * storage_bytes(self.out_bits)
        return [("in_ping", n_in), ("in_pong", n_in), ("out_ping", n_out), ("out_pong", n_out),
                ("stack", gen.stack_bytes + gen.heap_bytes)]


def pool_op(name: str, x: str, y: str, mode: str, *, kernel, strides, pads, shift: int = 0, multiplier: int = 1,
            bias: int = 0) -> Op:
    """A pooling layer as every frontend writes it (see the module docstring)."""
    attrs = {"mode": mode, "kernel": [int(v) for v in kernel], "strides": [int(v) for v in strides],
             "pads": [int(v) for v in pads]}
    if mode == "avg":
        attrs.update({"shift": int(shift), "bias": int(bias)})
        if multiplier != 1:
            attrs["multiplier"] = int(multiplier)
    return Op(name, KIND, (x,), (y,), attrs, {})


def _geometry(op: Op, graph: Graph):
    c, w, h = map_dims(graph.tensors[op.inputs[0]].shape)
    co, wo, ho = map_dims(graph.tensors[op.outputs[0]].shape)
    return (h, w, c), (ho, wo, co), tuple(op.attrs["kernel"]), tuple(op.attrs["strides"]), tuple(op.attrs["pads"])


def _windows(x: np.ndarray, kernel, strides, out_hw) -> np.ndarray:
    """[n, Hp, Wp, C] -> [n, HO, WO, KH*KW, C]."""
    kh, kw = kernel
    sh, sw = strides
    ho, wo = out_hw
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))[:, : (ho - 1) * sh + 1: sh,
                                                                            : (wo - 1) * sw + 1: sw]
    return v.reshape(*v.shape[:4], kh * kw).transpose(0, 1, 2, 4, 3)


def pool_values(op: Op, out, x: np.ndarray, valid: np.ndarray | None, kernel, strides, out_hw,
                stats: dict | None = None) -> np.ndarray:
    """The pool of padded x [n, Hp, Wp, C]; `valid` [Hp, Wp] marks the map's own positions (max pools skip
    the others)."""
    win = _windows(x, kernel, strides, out_hw)
    if op.attrs["mode"] == "max":
        if valid is not None and not valid.all():
            mask = _windows(valid[None, :, :, None], kernel, strides, out_hw)[0]  # [HO, WO, taps, 1]
            win = np.where(mask[None], win, np.iinfo(np.int64).min)
        return win.max(axis=3)
    acc = win.sum(axis=3) + np.int64(op.attrs.get("bias", 0))
    return requantize(acc, int(op.attrs.get("multiplier", 1)), int(op.attrs["shift"]), out.zero_point, out.type,
                      False, stats)


def evaluate(op: Op, graph: Graph, values: dict[str, np.ndarray], stats: dict | None = None) -> np.ndarray:
    (h, w, c), (ho, wo, co), kernel, strides, pads = _geometry(op, graph)
    x = np.asarray(values[op.inputs[0]], dtype=np.int64).reshape(-1, h, w, c)
    t, l, b, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    valid = np.pad(np.ones((h, w), dtype=bool), ((t, b), (l, r)))
    y = pool_values(op, graph.tensors[op.outputs[0]], xp, valid, kernel, strides, (ho, wo), stats)
    return y.reshape(y.shape[0], -1)


def check_numerics(op: Op, graph: Graph, device: Device) -> None:
    x_t, y_t = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if len(x_t.shape) not in (2, 3) or len(y_t.shape) != len(x_t.shape):
        raise NumericsError(f"a pool maps a 1-D or 2-D feature map to one of the same rank, not "
                            f"{list(x_t.shape)} to {list(y_t.shape)}", node=op.name)
    (h, w, c), (ho, wo, co), (kh, kw), (sh, sw), pads = _geometry(op, graph)
    mode = op.attrs["mode"]
    if mode not in ("max", "avg"):
        raise NumericsError(f"pool mode {mode!r} is not max or avg", node=op.name)
    if c != co:
        raise NumericsError(f"a pool keeps its {c} channels, but its output has {co}", node=op.name)
    from ..conv import out_size

    if (out_size(h, kh, sh, pads[0], pads[2]), out_size(w, kw, sw, pads[1], pads[3])) != (ho, wo):
        raise NumericsError(f"a {kh}x{kw} window at stride {sh}x{sw} with pads {list(pads)} does not make "
                            f"{ho}x{wo} outputs", node=op.name)
    if min(pads) < 0 or pads[0] >= kh or pads[2] >= kh or pads[1] >= kw or pads[3] >= kw:
        raise NumericsError(f"pads {list(pads)} must be 0 to one less than the window", node=op.name)
    for t, what in ((x_t.type, "input"), (y_t.type, "output")):
        if t.storage_bits not in (8, 16) or (t.storage_bits == 16 and not t.signed):
            raise NumericsError(f"{what} type {t.describe()} does not fit int8, uint8 or int16", node=op.name)
    if mode == "max":
        if x_t.type != y_t.type or x_t.scale != y_t.scale or x_t.zero_point != y_t.zero_point:
            raise NumericsError("a max pool keeps its input's type, scale and zero point", node=op.name,
                                hint="requantize after the pool")
        return
    if any(pads) and x_t.zero_point:
        raise NumericsError("an average pool over padding needs an input zero point of 0", node=op.name)
    bound = kh * kw * x_t.type.magnitude + abs(int(op.attrs.get("bias", 0)))
    if bound > (1 << 31) - 1:
        raise NumericsError(f"the window's sum (worst case {bound}) does not fit 32 bits", node=op.name)
    multiplier = int(op.attrs.get("multiplier", 1))
    if not 1 <= multiplier < 1 << MULTIPLIER_BITS:
        raise NumericsError(f"multiplier {multiplier} is not a positive {MULTIPLIER_BITS}-bit integer", node=op.name)
    if not -31 <= int(op.attrs["shift"]) <= 63:
        raise NumericsError(f"shift {op.attrs['shift']} is out of range", node=op.name)
    if not y_t.type.qmin <= y_t.zero_point <= y_t.type.qmax:
        raise NumericsError(f"output zero point {y_t.zero_point} is outside {y_t.type.describe()}", node=op.name)


def candidates(op: Op, graph: Graph, device: Device, batch: int) -> list[Config]:
    (h, w, c), (ho, wo, co), kernel, strides, pads = _geometry(op, graph)
    x, y = graph.tensors[op.inputs[0]].type, graph.tensors[op.outputs[0]].type
    found = []
    for chains in range(1, min(device.rows, ceil_div(c, LANES)) + 1):
        n_tile = ceil_div(c, chains * LANES) * LANES
        if (chains - 1) * n_tile >= c:
            continue
        for rs in (r for r in range(1, ho + 1) if ho % r == 0 and chains * r <= device.rows):
            cfg = Config((h, w, c), (ho, wo, co), kernel, strides, pads, op.attrs["mode"], batch, LANES, chains, rs,
                         n_tile, ho // rs, x.storage_bits, y.storage_bits)
            if bank_assignment(cfg.tile_buffers(device), device) is not None:
                found.append(cfg)
    found.sort(key=lambda cf: (cf.tiles, cf.chains, cf.row_splits))
    return found


def tile_buffers(cfg: Config, stage: int, device: Device) -> list[tuple[str, int]]:
    return cfg.tile_buffers(device)


def pack(op: Op, cfg: Config) -> dict[str, np.ndarray]:
    """A pool holds no parameters (its bias and scale are constants of the kernel)."""
    return {}


def input_slices(op: Op, cfg: Config, port: int) -> list[Window]:
    sh = cfg.strides[0]
    top, left = cfg.pads[0], cfg.pads[1]
    return [Window((j * cfg.n_tile, -left, r * cfg.rows * sh - top), (cfg.n_tile, cfg.cols_in, cfg.rows_in),
                   (kernel_id(op.name, r * cfg.chains + j, 0),))
            for r in range(cfg.row_splits) for j in range(cfg.chains)]


def output_slices(op: Op, cfg: Config) -> list[Window]:
    wo = cfg.out_shape[1]
    return [Window((j * cfg.n_tile, 0, r * cfg.rows), (cfg.n_out(j), wo, cfg.rows),
                   (kernel_id(op.name, r * cfg.chains + j, 0),))
            for r in range(cfg.row_splits) for j in range(cfg.chains)]


def window_valid(cfg: Config, split: int) -> np.ndarray:
    """[rows_in, cols_in]: which positions of row split `split`'s input window lie on the map (the others
    are the memory tile's zero padding, which a max pool must not take)."""
    h, w, _ = cfg.in_shape
    row0 = split * cfg.rows * cfg.strides[0] - cfg.pads[0]
    rows = np.arange(row0, row0 + cfg.rows_in)
    cols = np.arange(-cfg.pads[1], -cfg.pads[1] + cfg.cols_in)
    return ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]


def emulate(layer, graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    cfg, op = layer.config, layer.op
    out = graph.tensors[op.outputs[0]]
    streams = {}
    for chain in range(cfg.cas_num):
        kid = kernel_id(op.name, chain, 0)
        x = np.asarray(inputs[kid], dtype=np.int64).reshape(cfg.batch, cfg.rows_in, cfg.cols_in, cfg.n_tile)
        y = pool_values(op, out, x, window_valid(cfg, chain // cfg.chains), cfg.kernel, cfg.strides,
                        (cfg.rows, cfg.out_shape[1]))
        streams[kid] = y[..., : cfg.n_out(chain % cfg.chains)].ravel()
    return streams


def cycle_terms(cfg: Config, device: Device) -> dict[str, int]:
    """One vector of LANES channels per window tap and output pixel (a max or an add), plus the average's
    requantization per output vector; the streams run beside (ping-pong buffers). Estimates."""
    gen = device.generation
    kh, kw = cfg.kernel
    wo = cfg.out_shape[1]
    vectors = cfg.batch * cfg.rows * wo * ceil_div(cfg.n_tile, cfg.lanes)
    stream_bytes = gen.core_stream_bits // 8
    return {
        "vector": vectors * kh * kw,
        "finish": vectors * (4 if cfg.mode == "avg" else 1),
        "per call": gen.kernel_call_cycles,
        "stream in": ceil_div(cfg.batch * cfg.rows_in * cfg.cols_in * cfg.n_tile * storage_bytes(cfg.in_bits),
                              stream_bytes),
        "stream out": ceil_div(cfg.batch * cfg.rows * wo * cfg.n_tile * storage_bytes(cfg.out_bits), stream_bytes),
    }


def cycles(cfg: Config, device: Device) -> int:
    return cycles_from_terms(cycle_terms(cfg, device))


def macs(op: Op, graph: Graph, batch: int) -> int:
    """None counted: a pool's work is in its cycles."""
    return 0


def latency(cfg: Config, device: Device) -> int:
    return cycles(cfg, device)
