"""The op-family contract: what every stage may ask of a family, and the small vocabulary they share.

A family is one folder, aieflow/ops/<kind>/, found by aieflow.ops.family(kind). Its package provides:
  KIND                                      the op kind it implements (the folder's name)
  Config                                    frozen dataclass: tiles, cas_length, cas_num, batch, to_dict(),
                                            from_dict(), summary() (the report's vocabulary: in_features,
                                            out_features, cas_length, cas_num, microtile)
  check_numerics(op, graph, device)         refuse types or ranges the hardware cannot do exactly
  candidates(op, graph, device, batch)      every legal Config, fewest tiles first
  tile_buffers(cfg, stage, device)          (name, bytes) a kernel at that cascade stage keeps in its banks
  pack(op, cfg)                             the integers the kernels hold (weights, bias, ...)
  input_slices(op, cfg, port)               which kernels read which part of input `port`: Slices of the
                                            features, or Windows of a feature map (halos, padding)
  output_slices(op, cfg)                    which kernel writes which part of the output (likewise)
  evaluate(op, graph, values, stats=None)   the op's integers on a whole batch, by the IR's definition (the
                                            one definition exactness and the tests use); `stats` counts ties
                                            and saturations of its rounding (numerics.requantize)
  emulate(layer, graph, inputs)             kernel output streams from kernel input streams (structural)
  cycle_terms(cfg, device), cycles(cfg, device), latency(cfg, device), macs(op, graph, batch)
and three modules beside it:
  emit.py   sources(design, layers), graph_fragment(design, layer, ns), RESERVED_NAMES (C++ names its
            shared code declares), HOST_INPUTS (the layer struct's type of each kernel input port) and
            host_output_elements(cfg, chain) (elements of the output buffer of chain `chain`'s last
            kernel): the project writer and the host run ask these
  check.py  the family's legality rules for the independent checker, re-derived from the catalog: it
            imports only the design, the device catalog and numerics, never the family's planner:
            input_ports(layer), buffers(design, layer, stage), PROGRAM_BYTES, rules(design, layer)
  fast.py   plan(layer, graph): the op on whole batches for the fast emulator, from the packed parameters
            (a FastOp: name, inputs, output, precision, run(values, precision, prep, exact_int) and, where
            the family runs on a GPU, run_torch(values, prep, xp, device))
Kernels are addressed as "<layer>_c<chain>_s<stage>"; input port p > 0 of a kernel as "<id>.in<p>".
tests/test_contract.py walks every folder and checks it provides all of this.
"""

from __future__ import annotations

from dataclasses import dataclass

from types import ModuleType

from ..devices import Device

# The contract (see the module docstring): (module, names it must define). "" is the family's package.
CONTRACT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("KIND", "Config", "check_numerics", "candidates", "tile_buffers", "pack", "input_slices",
          "output_slices", "evaluate", "emulate", "cycle_terms", "cycles", "latency", "macs")),
    ("emit", ("sources", "graph_fragment", "RESERVED_NAMES", "HOST_INPUTS", "host_output_elements")),
    ("check", ("input_ports", "buffers", "PROGRAM_BYTES", "rules")),
    ("fast", ("plan",)),
)
CONFIG_METHODS = ("to_dict", "from_dict", "summary", "tiles", "cas_length", "cas_num", "batch")


def missing_pieces(module: ModuleType) -> list[str]:
    """The names of the contract a family's folder lacks ("emit.sources", "Config.summary", ...)."""
    import importlib

    missing = []
    for sub, names in CONTRACT:
        if sub:
            try:
                m = importlib.import_module(f"{module.__name__}.{sub}")
            except ModuleNotFoundError as e:
                if e.name != f"{module.__name__}.{sub}":
                    raise
                missing.append(f"{sub}.py")
                continue
        else:
            m = module
        missing += [f"{sub + '.' if sub else ''}{n}" for n in names if not hasattr(m, n)]
    config = getattr(module, "Config", None)
    if config is not None:
        fields = getattr(config, "__dataclass_fields__", {})
        missing += [f"Config.{n}" for n in CONFIG_METHODS if not hasattr(config, n) and n not in fields]
    return missing


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


@dataclass(frozen=True)
class Window:
    """A box of a feature map that one kernel port reads or writes, in the tensor's own coordinates.

    A feature map of per-sample shape (H, W, C) (or (L, C), taken as H = 1) is held channels last: the box
    is offset (c, w, h) and size (c, w, h), and its stream is the box's values in that same order, channels
    fastest, then columns, rows, and the batch outermost: [B][h][w][c]. A reader's box may reach past the
    map (negative offsets, or past its end): those positions read as zeros, the memory tiles' zero padding,
    which is how a convolution's border and a row split's halo arrive without a kernel touching them. A
    writer's box lies inside the map. `peers` as for Slice.
    """

    offset: tuple[int, int, int]
    size: tuple[int, int, int]
    peers: tuple[str, ...]

    @property
    def rows(self) -> tuple[int, int]:
        return (self.offset[2], self.offset[2] + self.size[2])

    @property
    def layout(self) -> tuple:
        return ("window", self.offset, self.size)


def map_dims(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, W, H) of a feature map's per-sample shape (H, W, C) or (L, C) (a 1-D map is one row)."""
    if len(shape) == 3:
        return (int(shape[2]), int(shape[1]), int(shape[0]))
    if len(shape) == 2:
        return (int(shape[1]), int(shape[0]), 1)
    raise ValueError(f"a feature map has 2 or 3 dimensions, not shape {shape}")


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

    def summary(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "cas_length": self.cas_length,
                "cas_num": self.cas_num, "microtile": list(self.microtile)}

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
