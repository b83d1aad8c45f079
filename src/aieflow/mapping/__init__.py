"""Mapping, first version: a legal placement of a chain of layers and memory-tile transport between them.

Placement rules (AM020 and the AIE4ML reference):
- a chain's kernels sit in one row, stage s at column col + s: the cascade runs left to right;
- parallel chains of a layer take consecutive rows;
- the column west of a layer's first stage stays free, so that the tools may put that kernel's input
  buffers in the west neighbour's banks (a core reaches its west neighbour's memory);
- layers go left to right in bands of rows; a layer that does not fit the band's remaining columns starts
  a new band above it.
Every layer reads its input from a memory-tile buffer and its last kernels write into the next one; the
graph input and output pass through PLIO ports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..design import Access, BankBuffer, Design, KernelTile, Layer, MemtileBuffer, Plio
from ..devices import Device
from ..errors import MappingError
from ..ir import Graph, Op
from ..ops import dense
from ..ops.dense import DenseConfig
from ..tiling import Tiling, Traversal


@dataclass(frozen=True)
class Origin:
    col: int
    row: int


def check_chain(graph: Graph) -> None:
    """This version maps chains: each layer reads the previous layer's output, which nothing else reads."""
    expected = graph.inputs[0]
    for op in graph.ops:
        if op.inputs != (expected,):
            raise MappingError(f"reads {list(op.inputs)} but this version maps only chains of layers fed by "
                               f"'{expected}'", node=op.name, hint="map one branch at a time")
        if len(graph.consumers(expected)) > 1:
            raise MappingError(f"tensor '{expected}' feeds {len(graph.consumers(expected))} layers; this version "
                               "maps only chains", node=op.name)
        expected = op.outputs[0]
    if graph.outputs != (expected,):
        raise MappingError(f"the graph outputs {list(graph.outputs)}; this version maps one chain ending in '{expected}'")


def place(configs: list[tuple[Op, DenseConfig]], device: Device) -> list[Origin]:
    """Bottom-left corner of every layer's block of tiles (see the module docstring for the rules)."""
    origins = []
    col, band_row, band_height = 0, 0, 0
    for op, cfg in configs:
        if cfg.cas_length > device.columns:
            raise MappingError(f"a cascade of {cfg.cas_length} does not fit {device.columns} columns", node=op.name)
        if col > 0 and col + 1 + cfg.cas_length > device.columns:
            col, band_row, band_height = 0, band_row + band_height, 0
        start = col + 1 if col > 0 else col  # keep the west column free
        if band_row + cfg.cas_num > device.rows:
            raise MappingError(
                f"out of tiles: the layer needs {cfg.cas_num} rows from row {band_row} of {device.rows}",
                node=op.name, hint="use a smaller batch, fewer layers or a larger device")
        origins.append(Origin(start, band_row))
        col = start + cfg.cas_length
        band_height = max(band_height, cfg.cas_num)
    return origins


def _kernels(op: Op, cfg: DenseConfig, origin: Origin, device: Device) -> list[KernelTile]:
    tiles = []
    for chain in range(cfg.cas_num):
        for stage in range(cfg.cas_length):
            banks = dense.bank_assignment(cfg.tile_buffers(stage, device), device)
            if banks is None:  # candidates() only proposes configurations whose buffers fit
                raise MappingError("kernel buffers do not fit the banks", node=op.name)
            bufs = tuple(BankBuffer(name, banks[name], size) for name, size in cfg.tile_buffers(stage, device))
            tiles.append(KernelTile(op.name, chain, stage, origin.col + stage, origin.row + chain, bufs))
    return tiles


class _Memtiles:
    """Memory tiles in use: bytes and DMA channels taken, to pick the nearest one with room."""

    def __init__(self, device: Device):
        self.device = device
        self.used: dict[tuple[int, int], list[int]] = {}

    def take(self, near_col: int, size: int, s2mm: int, mm2s: int, what: str) -> tuple[int, int, int]:
        """(col, row, byte offset) of the nearest memory tile with room; buffers start on a vector word."""
        gen = self.device.generation
        align = gen.vector_load_bits // 8
        row = self.device.memtile_rows - 1  # the memory-tile row next to the compute rows
        for dist in range(self.device.columns):
            for col in (near_col - dist, near_col + dist):
                if not 0 <= col < self.device.columns:
                    continue
                b, w, r = self.used.get((col, row), [0, 0, 0])
                offset = -(-b // align) * align
                if offset + size <= gen.memtile_bytes and w + s2mm <= gen.memtile_s2mm and r + mm2s <= gen.memtile_mm2s:
                    self.used[(col, row)] = [offset + size, w + s2mm, r + mm2s]
                    return col, row, offset
        raise MappingError(f"no memory tile has {size} bytes and {s2mm}+{mm2s} DMA channels free for {what}",
                           hint="use a smaller batch")


def _reader(cfg: DenseConfig, stage: int, dims: tuple[int, int], real: tuple[int, int]) -> Tiling:
    """Stage `stage` of a layer reads its input slice in [B/M][Kt/K][M][K] blocks, zero padded."""
    m, k, _ = cfg.microtile
    return Tiling(dims, (k, m), (stage * cfg.k_tile, 0),
                  (Traversal(0, k, cfg.k_tile // k), Traversal(1, m, cfg.batch // m)), real)


def _writer(cfg: DenseConfig, chain: int, dims: tuple[int, int]) -> Tiling:
    """Chain `chain` writes its output slice from [B/M][Nt/N][M][N] blocks."""
    m, _, n = cfg.microtile
    return Tiling(dims, (n, m), (chain * cfg.n_tile, 0),
                  (Traversal(0, n, cfg.n_tile // n), Traversal(1, m, cfg.batch // m)))


def _wire_row(features: int, bits: int, device: Device) -> int:
    """Elements per sample on a PLIO: the features zero-padded to whole DMA words, so that every sample,
    and so every transfer, is a whole number of words whatever the batch."""
    per_word = device.generation.word_bytes * 8 // bits
    return -(-features // per_word) * per_word


def map_design(graph: Graph, device: Device, batch: int) -> Design:
    """Choose each layer's configuration, place the kernels and plan the transport."""
    check_chain(graph)
    for op in graph.ops:
        dense.check_numerics(op, graph, device)
    configs = [(op, dense.choose(op, graph, device, batch)) for op in graph.ops]
    # Every layer of one design processes the same padded batch, a multiple of every microtile's M
    # (all powers of two, so raising it to the largest padding converges in a step or two).
    padded = batch
    while any(cfg.batch != padded for _, cfg in configs):
        padded = max(cfg.batch for _, cfg in configs)
        configs = [(op, dense.choose(op, graph, device, padded)) for op, _ in configs]
    origins = place(configs, device)
    layers, tiles = [], []
    for (op, cfg), origin in zip(configs, origins):
        layers.append(Layer(op, cfg, dense.pack(op, cfg)))
        tiles += _kernels(op, cfg, origin, device)

    memtiles = _Memtiles(device)
    buffers, plios = [], []
    gin, gout = graph.inputs[0], graph.outputs[0]
    wire = {t: _wire_row(graph.tensors[t].features, graph.tensors[t].type.storage_bits, device) for t in (gin, gout)}
    plios.append(Plio("in_0", "in", gin, device.plio_bits, 0, graph.tensors[gin].features, wire[gin], batch * wire[gin]))
    plios.append(Plio("out_0", "out", gout, device.plio_bits, 0, graph.tensors[gout].features, wire[gout], batch * wire[gout]))
    producer: tuple[Op, DenseConfig] | None = None
    for i in range(len(configs) + 1):
        consumer = configs[i] if i < len(configs) else None
        tensor = consumer[0].inputs[0] if consumer else gout
        t = graph.tensors[tensor]
        width = producer[1].n_pad if producer else wire[tensor]
        width = max(width, consumer[1].k_pad if consumer else wire[tensor])
        dims = (width, padded)
        real = (t.features, batch)
        if producer is None:
            writers = (Access(Tiling(dims, (wire[tensor], batch), (0, 0), ()), ("in_0",)),)
        else:
            pop, pcfg = producer
            writers = tuple(Access(_writer(pcfg, c, dims), (f"{pop.name}_c{c}_s{pcfg.cas_length - 1}",))
                            for c in range(pcfg.cas_num))
        if consumer is None:
            readers = (Access(Tiling(dims, (wire[tensor], batch), (0, 0), (), real), ("out_0",)),)
            near = origins[-1].col + configs[-1][1].cas_length - 1
        else:
            cop, ccfg = consumer
            readers = tuple(Access(_reader(ccfg, s, dims, real), tuple(f"{cop.name}_c{c}_s{s}" for c in range(ccfg.cas_num)))
                            for s in range(ccfg.cas_length))
            near = origins[i].col
        size = width * padded * t.type.storage_bits // 8
        col, row, offset = memtiles.take(near, size, len(writers), len(readers), f"tensor '{tensor}'")
        buffers.append(MemtileBuffer(f"mt_{i}", tensor, col, row, offset, t.type.storage, dims, writers, readers))
        producer = consumer
    return Design(device, graph, batch, tuple(layers), tuple(tiles), tuple(buffers), tuple(plios))
