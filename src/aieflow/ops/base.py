"""What every op family tells the mapper and the emulator, in one small vocabulary.

A family module (aieflow/ops/<kind>/__init__.py) provides:
  Config                        frozen dataclass with cas_length, cas_num, batch, tiles, to_dict/from_dict
  check_numerics(op, graph, device)          refuse types or ranges the hardware cannot do exactly
  candidates(op, graph, device, batch)       every legal Config, fewest tiles first
  tile_buffers(cfg, stage, device)           (name, bytes) a kernel at that cascade stage keeps in its banks
  pack(op, cfg)                              the integers the kernels hold (weights, bias, ...)
  input_slices(op, cfg, port)                which kernels read which features of input `port` (Slices)
  output_slices(op, cfg)                     which kernel writes which features of the output (Slices)
  emulate(layer, graph, inputs)              kernel output streams from kernel input streams
  cycles(cfg, device)                        cycles of the slowest kernel per graph iteration
  latency(cfg, device)                       cycles from the first input word to the last output word
Kernels are addressed as "<layer>_c<chain>_s<stage>"; input port p > 0 of a kernel as "<id>.in<p>".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..devices import Device


@dataclass(frozen=True)
class Slice:
    """Features [lo, hi) of a tensor moved as blocks of `rows` x `cols`: [B/rows][(hi-lo)/cols][rows][cols].

    Row-major [B][hi-lo] is rows=1, cols=hi-lo. `peers` are the kernel ports that read this slice (all of
    them get the same stream) or, for an output slice, the one kernel that writes it.
    """

    lo: int
    hi: int
    rows: int
    cols: int
    peers: tuple[str, ...]

    @property
    def width(self) -> int:
        return self.hi - self.lo

    @property
    def layout(self) -> tuple[int, int, int, int]:
        return (self.lo, self.hi, self.rows, self.cols)


def kernel_id(layer: str, chain: int, stage: int) -> str:
    return f"{layer}_c{chain}_s{stage}"


def port(kid: str, index: int) -> str:
    return kid if index == 0 else f"{kid}.in{index}"


def bank_assignment(buffers: list[tuple[str, int]], device: Device) -> dict[str, int] | None:
    """Place each buffer whole in one bank, largest first, or None when they do not fit.

    First try the emptiest bank each time: it spreads the buffers, so ping and pong and the weights land
    in different banks and the core's loads do not collide with the DMA's writes. When that packs badly,
    fall back to first fit, which succeeds whenever a simple packing exists.
    """
    gen = device.generation
    order = sorted(buffers, key=lambda b: (-b[1], b[0]))
    for pick in (lambda free, size: max(range(len(free)), key=lambda i: (free[i], -i)),
                 lambda free, size: next((i for i, f in enumerate(free) if f >= size), 0)):
        free = [gen.bank_bytes] * gen.banks
        placed = {}
        for name, size in order:
            bank = pick(free, size)
            if free[bank] < size:
                break
            free[bank] -= size
            placed[name] = bank
        else:
            return placed
    return None


def storage_bytes(bits: int) -> int:
    """Bytes one value of a `bits`-bit storage type takes (int8, int16, int32)."""
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class ElementwiseConfig:
    """What the Configs of the elementwise families (add, requant) share: the features split over cas_num
    kernels of n_tile features (no cascade), described in dense's vocabulary for the design summary.
    A mixin for frozen dataclasses with fields features, lanes, cas_length, cas_num and n_tile."""

    features: int
    lanes: int
    cas_length: int
    cas_num: int
    n_tile: int

    @property
    def tiles(self) -> int:
        return self.cas_length * self.cas_num

    @property
    def n_pad(self) -> int:
        return self.n_tile * self.cas_num

    @property
    def in_features(self) -> int:
        return self.features

    @property
    def out_features(self) -> int:
        return self.features

    @property
    def microtile(self) -> tuple[int, int, int]:
        """The block one vector operation handles: 1 row x LANES features in, LANES features out."""
        return (1, self.lanes, self.lanes)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**d)


def feature_slices(op_name: str, cas_num: int, n_tile: int, port_index: int = 0) -> list[Slice]:
    """Elementwise kernels: kernel c reads (and writes) features [c*Nt, (c+1)*Nt), row-major; port_index
    names which input port (0 for the first input and for the output)."""
    return [Slice(c * n_tile, (c + 1) * n_tile, 1, n_tile, (port(kernel_id(op_name, c, 0), port_index),))
            for c in range(cas_num)]


def cycles_from_terms(terms: dict[str, int]) -> int:
    """A kernel's cycles per graph iteration from its cycle terms: the compute terms add up, the "stream ..."
    terms run beside them (ping-pong buffers), so the kernel takes the larger of its compute and its slowest
    stream."""
    compute = sum(v for t, v in terms.items() if not t.startswith("stream"))
    return max(compute, max((v for t, v in terms.items() if t.startswith("stream")), default=0))
