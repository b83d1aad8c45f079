"""An independent legality check of a Design against its device.

It shares no code with the placer, the transport planner or the op families' planners: it re-derives every
buffer size and kernel port from the layer configuration with its own formulas (each family's rules are its
folder's check.py, which imports only the design, the catalog and numerics), and reads every limit from the
catalog, so a bug in one is caught by the other. `violations` lists every broken rule; `check` raises on
the first. Each rule is one function below.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..design import Design, KernelTile
from ..errors import MappingError

# Program memory the per-tile runtime takes beside a kernel's own code (main loop, locks).
RUNTIME_PROGRAM_BYTES = 1536
# PL stream widths the catalog's platforms offer (devices/catalog.toml plio_bits is the widest one).
PLIO_WIDTHS = (32, 64, 128)
BATCH_MAX = 4096


def _rules(kind: str):
    """The op family's own checker rules (ops/<kind>/check.py): they re-derive every figure themselves."""
    from ..ops import part

    return part(kind, "check")


def _kid(t: KernelTile) -> str:
    return f"{t.layer}_c{t.chain}_s{t.stage}"


def _kernels(design: Design):
    """(kernel tile, its layer) for every tile whose layer exists (_banks reports the others)."""
    layers = {l.op.name: l for l in design.layers}
    return [(t, layers[t.layer]) for t in design.tiles if t.layer in layers]


def violations(design: Design) -> list[str]:
    """Every constraint the design breaks, one line each; empty when it is legal."""
    found: list[str] = []
    for rule in (_batch, _tiles_in_range_and_apart, _layers, _banks, _program_memory, _memory_tiles, _tilings,
                 _every_input_fed, _tile_dma, _plio):
        try:
            found += rule(design)
        except Exception as e:  # noqa: BLE001 - a design the rule cannot even read breaks that rule
            found.append(f"rule {rule.__name__.lstrip('_')} cannot check this design: {type(e).__name__}: {e}")
    return found


def check(design: Design) -> Design:
    """Raise MappingError naming the first broken constraint (and how many more), else return the design."""
    bad = violations(design)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise MappingError(f"illegal design: {bad[0]}{more}")
    return design


def _batch(design: Design) -> list[str]:
    """The batch is a whole number of samples, 1 to BATCH_MAX (the layers' padded batches are _layers' rule)."""
    b = design.batch
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= BATCH_MAX:
        return [f"batch {b!r} is not a whole number of samples from 1 to {BATCH_MAX}"]
    return []


def _tiles_in_range_and_apart(design: Design) -> list[str]:
    dev = design.device
    found, where = [], {}
    for t in design.tiles:
        if not (0 <= t.col < dev.columns and 0 <= t.row < dev.rows):
            found.append(f"{_kid(t)} at ({t.col}, {t.row}) is outside the {dev.columns} x {dev.rows} array")
        if (t.col, t.row) in where:
            found.append(f"{_kid(t)} and {where[(t.col, t.row)]} both sit at ({t.col}, {t.row})")
        where[(t.col, t.row)] = _kid(t)
    return found


def _layers(design: Design) -> list[str]:
    """Each layer's kernel grid is whole, its cascades run east in one row, its west column is free."""
    gen = design.device.generation
    found = []
    where = {(t.col, t.row): t for t in design.tiles}
    link_sources = {(l.source, s.split(".in")[0]) for l in design.links for s in l.sinks}
    for layer in design.layers:
        cfg = layer.config
        kernels = {(t.chain, t.stage): t for t in design.tiles if t.layer == layer.op.name}
        # Counted before enumerated: a corrupt design.json may claim a grid of 2**40 kernels.
        if len(kernels) != cfg.cas_num * cfg.cas_length or \
                set(kernels) != {(c, s) for c in range(cfg.cas_num) for s in range(cfg.cas_length)}:
            found.append(f"{layer.op.name}: {len(kernels)} kernels for a {cfg.cas_num} x {cfg.cas_length} grid")
            continue
        found += _rules(layer.op.kind).rules(design, layer)
        for (chain, stage), t in kernels.items():
            if stage > 0:
                prev = kernels[(chain, stage - 1)]
                if gen.cascade_horizontal == "left_to_right" and not (prev.row == t.row and prev.col + 1 == t.col):
                    found.append(f"{_kid(t)} at ({t.col}, {t.row}) is not the east neighbour of {_kid(prev)} "
                                 f"at ({prev.col}, {prev.row}) on the cascade")
            west = where.get((t.col - 1, t.row))
            # The first kernel of a chain keeps its west neighbour free (its input buffers may live in that
            # tile's banks), unless that neighbour is its producer handing over directly.
            if stage == 0 and west is not None and (_kid(west), _kid(t)) not in link_sources:
                found.append(f"{_kid(t)}: its west neighbour ({t.col - 1}, {t.row}) holds {_kid(west)}; "
                             "the first kernel of a chain keeps the west column free")
    return found


def _banks(design: Design) -> list[str]:
    """Re-derive every kernel's buffers and check each bank's load against the catalog."""
    gen = design.device.generation
    names = {l.op.name for l in design.layers}
    found = [f"{_kid(t)} belongs to no layer" for t in design.tiles if t.layer not in names]
    for t, layer in _kernels(design):
        need = _rules(layer.op.kind).buffers(design, layer, t.stage)
        have = {b.name: b for b in t.buffers}
        if set(have) != set(need):
            found.append(f"{_kid(t)}: buffers {sorted(have)} but the layer needs {sorted(need)}")
            continue
        load = Counter()
        for name, size in need.items():
            b = have[name]
            if b.bytes != size:
                found.append(f"{_kid(t)}: buffer {name} recorded as {b.bytes} bytes, needs {size}")
            if not 0 <= b.bank < gen.banks:
                found.append(f"{_kid(t)}: buffer {name} in bank {b.bank} of {gen.banks}")
            load[b.bank] += size
        for bank, size in sorted(load.items()):
            if size > gen.bank_bytes:
                found.append(f"{_kid(t)}: bank {bank} holds {size} bytes > {gen.bank_bytes}")
    return found


def _program_memory(design: Design) -> list[str]:
    limit = design.device.generation.program_memory_bytes
    found = []
    for layer in design.layers:
        size = _rules(layer.op.kind).PROGRAM_BYTES + RUNTIME_PROGRAM_BYTES
        if size > limit:
            found.append(f"{layer.op.name}: kernel code of about {size} bytes > {limit} bytes of program memory")
    return found


def _memory_tiles(design: Design) -> list[str]:
    dev, gen = design.device, design.device.generation
    found = []
    used = defaultdict(lambda: [0, 0, 0])
    spans = defaultdict(list)
    for b in design.memtile_buffers:
        if not (0 <= b.col < dev.columns and 0 <= b.row < dev.memtile_rows):
            found.append(f"memory-tile buffer {b.name} at ({b.col}, {b.row}) is outside the memory-tile rows")
        if b.offset < 0 or b.offset + b.bytes > gen.memtile_bytes:
            found.append(f"memory-tile buffer {b.name} spans bytes {b.offset}..{b.offset + b.bytes} "
                         f"of a {gen.memtile_bytes}-byte memory tile")
        if b.offset % gen.word_bytes:
            found.append(f"memory-tile buffer {b.name} starts at byte {b.offset}, not on a {gen.word_bytes}-byte word")
        for other, start, end in spans[(b.col, b.row)]:
            if start < b.offset + b.bytes and b.offset < end:
                found.append(f"memory-tile buffers {other} and {b.name} overlap in memory tile ({b.col}, {b.row})")
        spans[(b.col, b.row)].append((b.name, b.offset, b.offset + b.bytes))
        u = used[(b.col, b.row)]
        u[1] += len(b.writers)
        u[2] += len(b.readers)
    for (col, row), (_, s2mm, mm2s) in sorted(used.items()):
        if s2mm > gen.memtile_s2mm or mm2s > gen.memtile_mm2s:
            found.append(f"memory tile ({col}, {row}) uses {s2mm} S2MM / {mm2s} MM2S channels "
                         f"> {gen.memtile_s2mm} / {gen.memtile_mm2s}")
        # Each access keeps a buffer descriptor per buffer of a ping-pong pair.
        if 2 * (s2mm + mm2s) > gen.memtile_bds:
            found.append(f"memory tile ({col}, {row}) needs {2 * (s2mm + mm2s)} buffer descriptors > {gen.memtile_bds}")
    return found


def _footprint(t) -> list[tuple[int, int]]:
    """[lo, hi) per dimension of the box an access's tiles cover (before the boundary)."""
    spans = []
    for d in range(len(t.buffer_dimension)):
        steps = [s for s in t.traversal if s.dimension == d]
        lo = t.offset[d]
        hi = lo + t.tiling_dimension[d] + sum(s.stride * (s.wrap - 1) for s in steps)
        spans.append((lo, hi))
    return spans


def _mask(dims, spans) -> np.ndarray:
    """The buffer's elements (flat, dimension 0 fastest) inside the box `spans` (clipped to the buffer)."""
    m = np.zeros(tuple(reversed(dims)), dtype=bool)
    m[tuple(slice(max(lo, 0), max(min(hi, n), 0)) for (lo, hi), n in reversed(list(zip(spans, dims))))] = True
    return m.ravel()


def _tilings(design: Design) -> list[str]:
    """Every access views its buffer's memory whole, at most the memory tile's dimensions; a writer stays
    inside the buffer and a reader inside it or its padding (boundary); writers cover what readers read."""
    gen = design.device.generation
    found = []
    for b in design.memtile_buffers:
        elements = int(np.prod([int(d) for d in b.dims], dtype=object))
        if not 0 < elements <= gen.memtile_bytes:
            continue  # no memory tile holds it: _memory_tiles says so, and its accesses cannot be mapped
        written = np.zeros(elements, dtype=bool)
        reads = []
        for kind, accesses in (("writer", b.writers), ("reader", b.readers)):
            for a in accesses:
                t = a.tiling
                if int(np.prod([int(d) for d in t.buffer_dimension], dtype=object)) != elements:
                    found.append(f"{b.name}: a {kind} tiling views a {list(t.buffer_dimension)} buffer, not the "
                                 f"{elements} elements of {list(b.dims)}")
                    continue
                if len(t.buffer_dimension) > gen.memtile_dims:
                    found.append(f"{b.name}: {len(t.buffer_dimension)}-D access > {gen.memtile_dims}-D addressing")
                spans = _footprint(t)
                outside = any(lo < 0 or hi > n for (lo, hi), n in zip(spans, t.buffer_dimension))
                if kind == "writer":
                    if outside or t.boundary_dimension is not None:
                        found.append(f"{b.name}: a writer tiling reaches {spans} outside the buffer "
                                     f"{list(t.buffer_dimension)}")
                        continue
                    written |= _mask(t.buffer_dimension, spans)
                    continue
                edge = t.boundary_dimension
                if any(lo >= n or hi <= 0 for (lo, hi), n in zip(spans, t.buffer_dimension)):
                    found.append(f"{b.name}: a reader tiling reaches {spans} outside the buffer "
                                 f"{list(t.buffer_dimension)}: it would read nothing but padding")
                    continue
                if outside and edge is None:
                    found.append(f"{b.name}: a reader tiling reaches {spans} outside the buffer "
                                 f"{list(t.buffer_dimension)} without zero padding (a boundary)")
                    continue
                # What the reader takes from memory: its box inside both the boundary and the buffer.
                inside = [(max(lo, 0), min(hi, e, n)) for (lo, hi), e, n in
                          zip(spans, edge or t.buffer_dimension, t.buffer_dimension)]
                reads.append((a.peers[0], _mask(t.buffer_dimension, inside)))
        for peer, need in reads:
            missing = need & ~written
            if missing.any():
                found.append(f"{b.name}: a reader of {peer} reads {int(missing.sum())} element(s) that no writer "
                             "stores")
    return found


def _every_input_fed(design: Design) -> list[str]:
    """Each kernel input port is fed exactly once; each writer and link source is a real output."""
    found = []
    fed = Counter()
    for b in design.memtile_buffers:
        for a in b.readers:
            fed.update(a.peers)
    for link in design.links:
        fed.update(link.sinks)
    outputs = {p.name for p in design.plios if p.direction == "in"}
    for t, layer in _kernels(design):
        if t.stage == layer.config.cas_length - 1:
            outputs.add(_kid(t))
        ports = _rules(layer.op.kind).input_ports(layer)
        for p in range(ports):
            name = _kid(t) if p == 0 else f"{_kid(t)}.in{p}"
            if fed[name] != 1:
                found.append(f"input {name} is fed {fed[name]} times, not once")
    for b in design.memtile_buffers:
        for a in b.writers:
            if len(a.peers) != 1 or a.peers[0] not in outputs:
                found.append(f"{b.name}: writer {list(a.peers)} is not a kernel output or input PLIO")
    for link in design.links:
        if link.source not in outputs:
            found.append(f"direct link from {link.source}, which writes no output")
    return found


def _tile_dma(design: Design) -> list[str]:
    """Per kernel: input ports on S2MM channels, its output on MM2S, two descriptors per ping-pong buffer."""
    gen = design.device.generation
    found = []
    for t, layer in _kernels(design):
        ins = _rules(layer.op.kind).input_ports(layer)
        outs = 1 if t.stage == layer.config.cas_length - 1 else 0
        if ins > gen.tile_dma_s2mm or outs > gen.tile_dma_mm2s:
            found.append(f"{_kid(t)}: {ins} inputs / {outs} outputs > {gen.tile_dma_s2mm} S2MM / {gen.tile_dma_mm2s} MM2S")
        if 2 * (ins + outs) > gen.tile_dma_bds:
            found.append(f"{_kid(t)}: {2 * (ins + outs)} buffer descriptors > {gen.tile_dma_bds}")
    return found


def _plio(design: Design) -> list[str]:
    dev, gen = design.device, design.device.generation
    found = []
    covered = defaultdict(list)
    for p in design.plios:
        if p.bits not in PLIO_WIDTHS or p.bits > dev.plio_bits:
            found.append(f"PLIO {p.name} is {p.bits} bits wide; the PLIO width must be one of "
                         f"{', '.join(str(w) for w in PLIO_WIDTHS if w <= dev.plio_bits)} bits on {dev.name}")
        t = design.graph.tensors.get(p.tensor)
        if t is None:
            found.append(f"PLIO {p.name} carries unknown tensor {p.tensor}")
            continue
        width = p.hi - p.lo
        # A flat tensor's samples are whole words each; a feature map's iteration is (its samples are back
        # to back in the memory tile, with no room for padding between them).
        words = p.elements if len(t.shape) > 1 else p.row
        if not (0 <= p.lo < p.hi <= t.features) or p.row < width or (words * t.type.storage_bits // 8) % gen.word_bytes \
                or p.elements != design.batch * p.row:
            found.append(f"PLIO {p.name} carries {p.row} elements a sample ({p.elements} an iteration) for "
                         f"features {p.lo}..{p.hi} of {t.features} {t.type.storage}: not whole {gen.word_bytes}-byte words")
        covered[(p.direction, p.tensor)].append((p.lo, p.hi))
    for (direction, tensor), spans in covered.items():
        n = design.graph.tensors[tensor].features
        hits = np.zeros(n, dtype=int)
        for lo, hi in spans:
            hits[max(lo, 0):min(hi, n)] += 1
        if not (hits == 1).all():
            found.append(f"{direction}put PLIOs of '{tensor}' do not cover its {n} features exactly once")
    for tensor in design.graph.inputs + design.graph.outputs:
        direction = "in" if tensor in design.graph.inputs else "out"
        if (direction, tensor) not in covered:
            found.append(f"graph {direction}put '{tensor}' has no PLIO")
    n_in = sum(p.direction == "in" for p in design.plios)
    n_out = sum(p.direction == "out" for p in design.plios)
    if n_in > dev.plio_inputs or n_out > dev.plio_outputs:
        found.append(f"{n_in} input / {n_out} output PLIOs > {dev.plio_inputs} / {dev.plio_outputs}")
    return found
