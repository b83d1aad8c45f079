"""Transport planning: how every tensor gets from its producer to its consumers.

For each consumer input, in order of preference:
- a direct hand-off, when the producer's output slices are exactly the consumer's input slices (same
  features, same block shape): the producer's output buffer goes straight to the consumer kernels;
- memory-tile buffers: the consumer's input slices are grouped, in feature order, into shards that one
  memory tile can serve (at most its MM2S channels of readers, its S2MM channels of writers, its
  capacity); each shard holds the features its readers need, written by every producer slice that
  overlaps them, and each reader streams its blocks out zero-padded past the real features.
Graph inputs arrive on one PLIO, broadcast to every shard that needs them; graph outputs leave on one PLIO
per group of producer slices that a memory tile can collect.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..design import Access, DirectLink, MemtileBuffer, Plio
from ..devices import Device
from ..errors import MappingError
from ..ir import Graph
from ..ops import family
from ..ops.base import Slice, Window, map_dims
from ..tiling import Tiling, Traversal
from .directives import Directive
from .place import Box


class Infeasible(Exception):
    """This choice of configurations cannot be wired; `op` is the consumer to steer away from."""

    def __init__(self, op: str, reason: str):
        super().__init__(reason)
        self.op = op
        self.reason = reason


@dataclass(frozen=True)
class Plan:
    memtile_buffers: tuple[MemtileBuffer, ...]
    plios: tuple[Plio, ...]
    links: tuple[DirectLink, ...]


def wire_row(features: int, bits: int, device: Device) -> int:
    """Elements per sample on a PLIO: the features zero-padded to whole DMA words, so every sample, and so
    every transfer, is a whole number of words whatever the batch."""
    per_word = device.generation.word_bytes * 8 // bits
    return -(-features // per_word) * per_word


class _Memtiles:
    """Memory tiles in use: bytes and DMA channels taken, to pick the nearest one with room."""

    def __init__(self, device: Device):
        self.device = device
        self.used: dict[tuple[int, int], list[int]] = {}

    def take(self, near_col: int, size: int, s2mm: int, mm2s: int, what: str) -> tuple[int, int, int]:
        """(col, row, byte offset) of the nearest memory tile with room; buffers start on a vector word."""
        gen = self.device.generation
        align = gen.vector_load_bits // 8
        rows = range(self.device.memtile_rows - 1, -1, -1)  # the row next to the compute tiles first
        for dist in range(self.device.columns):
            for col in dict.fromkeys((near_col - dist, near_col + dist)):
                if not 0 <= col < self.device.columns:
                    continue
                for row in rows:
                    b, w, r = self.used.get((col, row), [0, 0, 0])
                    offset = -(-b // align) * align
                    if (offset + size <= gen.memtile_bytes and w + s2mm <= gen.memtile_s2mm
                            and r + mm2s <= gen.memtile_mm2s):
                        self.used[(col, row)] = [offset + size, w + s2mm, r + mm2s]
                        return col, row, offset
        raise MappingError(f"no memory tile has {size} bytes and {s2mm}+{mm2s} DMA channels free for {what}",
                           hint="use a smaller batch")


def _tiling(s: Slice, lo: int, dims: tuple[int, int], boundary: tuple[int, int] | None, plio: bool,
            rows: int) -> Tiling:
    """The access of slice `s` in a buffer holding features [lo, lo + dims[0]) of `dims[1]` rows.

    A kernel slice walks its blocks over the `rows` rows its kernels take (their padded batch, which may
    differ from the buffer's: rows past the buffer's read as zeros through the boundary); a PLIO slice
    (rows = the batch, one block) is one plain [batch, width] tile.
    """
    if plio:
        return Tiling(dims, (s.cols, s.rows), (s.lo - lo, 0), (), boundary)
    return Tiling(dims, (s.cols, s.rows), (s.lo - lo, 0),
                  (Traversal(0, s.cols, s.width // s.cols), Traversal(1, s.rows, rows // s.rows)), boundary)


def _overlaps(a: Slice, lo: int, hi: int) -> bool:
    return a.lo < hi and lo < a.hi


def plan(graph: Graph, configs: dict, boxes: dict[str, Box], device: Device, batch: int,
         layers: dict[str, Directive]) -> Plan:
    gen = device.generation
    producer = {t: op for op in graph.ops for t in op.outputs}
    tiles = _Memtiles(device)
    buffers: list[MemtileBuffer] = []
    plios: list[Plio] = []
    links: list[DirectLink] = []
    plio_names: set[str] = set()

    def rows_of(s) -> int:
        """Rows (samples) an access moves: its kernels' padded batch, or the batch on a PLIO."""
        return batch if s.peers[0] in plio_names else configs[_reader_op(s)].batch

    def add_buffer(tensor: str, writers: list[Slice], readers: list[tuple[Slice, tuple[int, int] | None]],
                   near: int) -> None:
        t = graph.tensors[tensor]
        lo = min([w.lo for w in writers] + [r.lo for r, _ in readers])
        hi = max([w.hi for w in writers] + [r.hi for r, _ in readers])
        held = max(rows_of(w) for w in writers)  # the rows the writers store
        dims = (hi - lo, held)
        size = dims[0] * held * t.type.storage_bits // 8
        col, row, offset = tiles.take(near, size, len(writers), len(readers), f"tensor '{tensor}'")
        name = f"mt_{len(buffers)}"
        buffers.append(MemtileBuffer(
            name, tensor, col, row, offset, t.type.storage, dims,
            tuple(Access(_tiling(w, lo, dims, None, w.peers[0] in plio_names, rows_of(w)), w.peers)
                  for w in writers),
            tuple(Access(_tiling(r, lo, dims, None if bound is None else (bound[0] - lo, bound[1]),
                                 r.peers[0] in plio_names, rows_of(r)), r.peers)
                  for r, bound in readers)))

    for tensor, t in graph.tensors.items():
        if tensor in graph.inputs:
            prod = None
            writers = []  # input PLIOs, made below once the readers say how to split the features
        else:
            prod = producer[tensor]
            writers = family(prod.kind).output_slices(prod, configs[prod.name])

        readers: list[tuple[Slice, int]] = []  # (slice, column of its kernels) still needing a memory tile
        for op in graph.ops:
            for port, name in enumerate(op.inputs):
                if name != tensor:
                    continue
                wanted = family(op.kind).input_slices(op, configs[op.name], port)
                mode = layers.get(op.name, Directive()).transport
                direct = (prod is not None and [w.layout for w in writers] == [r.layout for r in wanted]
                          and configs[prod.name].batch == configs[op.name].batch)
                if mode == "direct" and not direct:
                    raise MappingError(
                        f"cannot take input '{tensor}' directly: the producer '{prod.name if prod else 'PLIO'}' "
                        "writes slices that are not this layer's input slices", node=op.name,
                        hint="give both layers matching cas_num / cas_length and microtiles, or use transport = 'memtile'")
                if direct and mode != "memtile":
                    links += [DirectLink(tensor, w.peers[0], r.peers) for w, r in zip(writers, wanted)]
                    continue
                readers += [(r, boxes[op.name].col + i) for i, r in enumerate(wanted)]

        if len(t.shape) > 1:  # a feature map: its buffers hold whole rows of the map (see _plan_map)
            _plan_map(t, prod, writers, readers, device, batch, tiles, buffers, plios, plio_names,
                      tensor in graph.outputs, boxes, rows_of)
            continue

        if prod is None:
            free = device.plio_inputs - sum(p.direction == "in" for p in plios)
            for lo, hi in _plio_ranges(t.features, [r for r, _ in readers], free, t.type.storage_bits, device):
                row = wire_row(hi - lo, t.type.storage_bits, device)
                name = f"in_{sum(p.direction == 'in' for p in plios)}"
                plios.append(Plio(name, "in", tensor, device.plio_bits, lo, hi, row, batch * row))
                plio_names.add(name)
                # [batch, row] row-major; rows past the batch are never written (readers zero them).
                writers.append(Slice(lo, lo + row, batch, row, (name,)))

        # Group the readers into shards one memory tile can serve.
        bound = (t.features, batch)
        def shard_writers(group):
            lo, hi = min(x.lo for x, _ in group), max(x.hi for x, _ in group)
            return [x for x in writers if _overlaps(x, lo, min(hi, t.features))]

        def fits(group) -> bool:
            w = shard_writers(group)
            lo = min([x.lo for x in w] + [x.lo for x, _ in group])
            hi = max([x.hi for x in w] + [x.hi for x, _ in group])
            size = (hi - lo) * max([rows_of(x) for x in w] or [batch]) * t.type.storage_bits // 8
            return len(group) <= gen.memtile_mm2s and len(w) <= gen.memtile_s2mm and size <= gen.memtile_bytes

        def flush(group) -> None:
            near = sorted(c for _, c in group)[len(group) // 2]
            add_buffer(tensor, shard_writers(group), [(x, bound) for x, _ in group], near)

        group: list[tuple[Slice, int]] = []
        for r in sorted(readers, key=lambda x: (x[0].lo, x[0].hi)):
            if fits(group + [r]):
                group.append(r)
                continue
            if group:
                flush(group)
            if not fits([r]):
                raise Infeasible(_reader_op(r[0]), f"features [{r[0].lo}, {r[0].hi}) of '{tensor}' need "
                                 f"{len(shard_writers([r]))} writers in one memory tile")
            group = [r]
        if group:
            flush(group)

        if tensor in graph.outputs:
            # One output PLIO per producer slice, so each stream carries one kernel's share; fewer (each a
            # group a memory tile can collect) when the platform has not that many ports.
            ordered = [w for w in sorted(writers, key=lambda x: x.lo) if w.lo < t.features]
            free = device.plio_outputs - sum(p.direction == "out" for p in plios)
            size = max(-(-len(ordered) // max(free, 1)), 1)
            if size > gen.memtile_s2mm:
                raise MappingError(f"graph output '{tensor}' needs more PLIO ports than {device.name} offers")
            for i in range(0, len(ordered), size):
                part = ordered[i:i + size]
                lo, hi = part[0].lo, min(part[-1].hi, t.features)
                if lo >= t.features:
                    break
                row = wire_row(hi - lo, t.type.storage_bits, device)
                name = f"out_{sum(p.direction == 'out' for p in plios)}"
                plios.append(Plio(name, "out", tensor, device.plio_bits, lo, hi, row, batch * row))
                plio_names.add(name)
                reader = Slice(lo, lo + row, batch, row, (name,))
                near = boxes[prod.name].col + boxes[prod.name].width - 1 if prod is not None else 0
                add_buffer(tensor, part, [(reader, (hi, batch))], near)

    if sum(p.direction == "in" for p in plios) > device.plio_inputs or \
            sum(p.direction == "out" for p in plios) > device.plio_outputs:
        raise MappingError(f"the design needs more PLIO ports than {device.name} offers "
                           f"({device.plio_inputs} in / {device.plio_outputs} out)")
    return Plan(tuple(buffers), tuple(plios), tuple(links))


def _plan_map(t, prod, writers: list, readers: list, device: Device, batch: int, tiles: "_Memtiles",
              buffers: list, plios: list, plio_names: set, is_output: bool, boxes: dict, rows_of) -> None:
    """Memory-tile buffers of a feature map (a tensor of shape (H, W, C) or (L, C)).

    A buffer holds whole rows [r0, r1) of the map, channels last, for every sample: dims (C, W, r1 - r0, B).
    Each reader's rows (its window's rows inside the map, or the rows a flat slice of the features spans)
    and every writer that overlaps them must lie in one buffer, since a write can drop nothing; readers are
    grouped in row order into as few such buffers as memory-tile room and DMA channels allow (a writer feeds
    every buffer its rows meet). Windows are accessed as boxes of the 4-D buffer (zero padding past the
    map, the rows past the batch and the channels past C through the boundary); flat slices as blocks of
    the same memory seen as [B][(r1 - r0) * W * C]. A flat writer whose last block runs past the map's
    features (an elementwise kernel's padded tile) gets rows past the map's end to store them in; readers
    see those rows as padding (their boundary ends at the map). The graph's input arrives on one PLIO and its output
    leaves on one, each a whole sample of the map a row.
    """
    gen = device.generation
    c, w, h = map_dims(t.shape)
    per_row = w * c
    features = t.features
    if prod is None or is_output:
        # The samples of an iteration follow each other on the wire unpadded (the map's layout in the memory
        # tile has no room between samples), so it is the iteration that must be whole words (a PLIO of a
        # band of rows carries whole rows: a row of the map must then be whole words too).
        nbytes = batch * (features if prod is None else per_row) * t.type.storage_bits // 8
        if nbytes % gen.word_bytes:
            raise MappingError(f"feature map '{t.name}' of {list(t.shape)} is {nbytes} bytes an iteration of "
                               f"{batch} samples, not whole {gen.word_bytes}-byte PLIO words",
                               hint="use a batch that makes whole words (a multiple of 4 for 8-bit maps)")
    if prod is None:
        name = f"in_{sum(p.direction == 'in' for p in plios)}"
        plios.append(Plio(name, "in", t.name, device.plio_bits, 0, features, features, batch * features))
        plio_names.add(name)
        writers = [Slice(0, features, batch, features, (name,))]
    readers = list(readers)
    writer_ids = {id(x) for x in writers}

    def span(a) -> tuple[int, int]:
        if isinstance(a, Window):
            return max(a.offset[2], 0), min(a.offset[2] + a.size[2], h)
        if id(a) in writer_ids:  # a write drops nothing: its padding past the map needs rows to land in
            return a.lo // per_row, max(-(-a.hi // per_row), 1)
        return a.lo // per_row, min(-(-min(a.hi, features) // per_row), h)

    if is_output:
        # One output PLIO per band of rows whose writers one memory tile can collect.
        col = boxes[prod.name].col + boxes[prod.name].width - 1 if prod is not None else 0
        bands: list[list[int]] = []  # [first row, end row, writers]
        for x in sorted(writers, key=span):
            r0, r1 = span(x)
            # A writer overlapping the band must join it; another joins while the band has channels left.
            if bands and (r0 < bands[-1][1] or bands[-1][2] < gen.memtile_s2mm):
                bands[-1][1] = max(bands[-1][1], r1)
                bands[-1][2] += 1
            else:
                bands.append([r0, r1, 1])
        if len(bands) > device.plio_outputs - sum(p.direction == "out" for p in plios):
            raise MappingError(f"graph output '{t.name}' needs {len(bands)} PLIO ports", hint="use fewer row splits")
        for r0, r1, _ in bands:
            lo, hi = r0 * per_row, min(r1, h) * per_row
            name = f"out_{sum(p.direction == 'out' for p in plios)}"
            plios.append(Plio(name, "out", t.name, device.plio_bits, lo, hi, hi - lo, batch * (hi - lo)))
            plio_names.add(name)
            readers.append((Slice(lo, hi, batch, hi - lo, (name,)), col))

    def band(group) -> tuple[tuple[int, int], list]:
        """The rows a group of readers needs, grown until every writer it meets lies inside, and those writers."""
        r0 = min(span(a)[0] for a, _ in group)
        r1 = max(span(a)[1] for a, _ in group)
        while True:
            met = [x for x in writers if span(x)[0] < r1 and r0 < span(x)[1]]
            n0, n1 = min([r0] + [span(x)[0] for x in met]), max([r1] + [span(x)[1] for x in met])
            if (n0, n1) == (r0, r1):
                return (r0, r1), met
            r0, r1 = n0, n1

    held = max(rows_of(x) for x in writers)  # the samples the writers store (their padded batch)

    def size(rows: tuple[int, int]) -> int:
        return (rows[1] - rows[0]) * per_row * held * t.type.storage_bits // 8

    def fits(group) -> bool:
        rows, met = band(group)
        return len(group) <= gen.memtile_mm2s and len(met) <= gen.memtile_s2mm and size(rows) <= gen.memtile_bytes

    def access(a, rows: tuple[int, int], reader: bool) -> Access:
        r0, r1 = rows
        dims = (c, w, r1 - r0, held)
        if isinstance(a, Window):
            boundary = (c, w, min(r1, h) - r0, batch) if reader else None
            (c0, w0, h0), (sc, sw, sh) = a.offset, a.size
            return Access(Tiling(dims, (sc, sw, sh, rows_of(a)), (c0, w0, h0 - r0, 0), (), boundary), a.peers)
        flat = ((r1 - r0) * per_row, held)
        lo = r0 * per_row
        boundary = (min(features, r1 * per_row) - lo, batch) if reader else None
        return Access(_tiling(a, lo, flat, boundary, a.peers[0] in plio_names, rows_of(a)), a.peers)

    def flush(group) -> None:
        rows, met = band(group)
        near = sorted(col for _, col in group)[len(group) // 2]
        col, row, offset = tiles.take(near, size(rows), len(met), len(group), f"tensor '{t.name}'")
        buffers.append(MemtileBuffer(f"mt_{len(buffers)}", t.name, col, row, offset, t.type.storage,
                                     (c, w, rows[1] - rows[0], held),
                                     tuple(access(x, rows, False) for x in met),
                                     tuple(access(a, rows, True) for a, _ in group)))

    group: list = []
    for r in sorted(readers, key=lambda x: span(x[0])):
        if fits(group + [r]):
            group.append(r)
            continue
        if group:
            flush(group)
        if not fits([r]):
            rows, met = band([r])
            # Too many writers is the producer's split to change; too many bytes, the reader's.
            blame = prod.name if prod is not None and len(met) > gen.memtile_s2mm else _reader_op(r[0])
            raise Infeasible(blame, f"rows {rows[0]}..{rows[1]} of feature map '{t.name}' need "
                             f"{size(rows)} bytes and {len(met)} writers in one memory tile")
        group = [r]
    if group:
        flush(group)


def _plio_ranges(features: int, readers: list[Slice], free: int, bits: int, device: Device) -> list[tuple[int, int]]:
    """Feature ranges of a graph input's PLIOs: one per distinct slice its readers take, so that each
    stream feeds one kernel's share, merged evenly when the platform has fewer ports. Inner boundaries
    fall on whole DMA words, so no PLIO's padding overlaps the next one's features."""
    per_word = device.generation.word_bytes * 8 // bits
    cuts = sorted({0, features} | {r.lo // per_word * per_word for r in readers if 0 < r.lo < features})
    # A reader whose features span more PLIOs than a memory tile has write channels could not be served:
    # drop every other cut inside its span until it fits.
    limit = device.generation.memtile_s2mm
    changed = True
    while changed:
        changed = False
        for r in readers:
            inside = [c for c in cuts if r.lo < c < min(r.hi, features)]
            if len(inside) + 1 > limit:
                cuts = [c for c in cuts if c not in inside[::2]]
                changed = True
    ranges = list(zip(cuts, cuts[1:]))
    if free < 1:
        raise MappingError("the graph input needs a PLIO port and the platform has none left")
    groups = min(len(ranges), free)
    # Contiguous groups of near-equal size.
    bounds = [round(i * len(ranges) / groups) for i in range(groups + 1)]
    return [(ranges[a][0], ranges[b - 1][1]) for a, b in zip(bounds, bounds[1:])]


def _reader_op(s: Slice) -> str:
    return s.peers[0].split(".in")[0].rsplit("_c", 1)[0]
