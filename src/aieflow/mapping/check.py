"""An independent legality check of a Design against its device.

It shares no code with the placer, the transport planner or the op families: it re-derives every buffer
size and kernel port from the layer configuration with its own formulas, and reads every limit from the
catalog, so a bug in one is caught by the other. `violations` lists every broken rule; `check` raises on
the first. Each rule is one function below.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..design import Design, KernelTile
from ..errors import MappingError

# Program memory a kernel's code takes, by op kind: the kernel loop nest with its vector ops, plus the
# per-tile runtime (main loop, locks). Estimates from the size of comparable AIE API kernels; the check
# guards against a family whose code could not fit, not against a few hundred bytes.
PROGRAM_BYTES = {"dense": 3072, "add": 2048, "requant": 2048}
RUNTIME_PROGRAM_BYTES = 1536
# PL stream widths the catalog's platforms offer (devices/catalog.toml plio_bits is the widest one).
PLIO_WIDTHS = (32, 64, 128)
BATCH_MAX = 4096


def _bytes(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def _dense_buffers(design: Design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    need = {"weights": cfg.k_tile * cfg.n_tile * cfg.weight_bits // 8,
            "in_ping": cfg.batch * cfg.k_tile * _bytes(cfg.act_bits),
            "in_pong": cfg.batch * cfg.k_tile * _bytes(cfg.act_bits),
            "stack": gen.stack_bytes + gen.heap_bytes}
    if stage == cfg.cas_length - 1:
        need |= {"bias": cfg.n_tile * cfg.acc_bits // 8,
                 "out_ping": cfg.batch * cfg.n_tile * _bytes(cfg.out_bits),
                 "out_pong": cfg.batch * cfg.n_tile * _bytes(cfg.out_bits)}
    return need


def _add_buffers(design: Design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    g = design.graph
    a, b = (g.tensors[t].type for t in layer.op.inputs)
    out = g.tensors[layer.op.outputs[0]].type
    n = cfg.batch * cfg.n_tile
    return {"a_ping": n * _bytes(a.bits), "a_pong": n * _bytes(a.bits),
            "b_ping": n * _bytes(b.bits), "b_pong": n * _bytes(b.bits),
            "out_ping": n * _bytes(out.bits), "out_pong": n * _bytes(out.bits),
            "stack": gen.stack_bytes + gen.heap_bytes}


def _requant_buffers(design: Design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    g = design.graph
    x = g.tensors[layer.op.inputs[0]].type
    out = g.tensors[layer.op.outputs[0]].type
    n = cfg.batch * cfg.n_tile
    bias_bytes = 4 if cfg.acc_bits == 32 else 8
    return {"in_ping": n * _bytes(x.bits), "in_pong": n * _bytes(x.bits),
            "out_ping": n * _bytes(out.bits), "out_pong": n * _bytes(out.bits),
            "bias": cfg.n_tile * bias_bytes, "stack": gen.stack_bytes + gen.heap_bytes}


# Buffers each kernel needs, and its input ports, by op kind.
BUFFERS = {"dense": _dense_buffers, "add": _add_buffers, "requant": _requant_buffers}
INPUT_PORTS = {"dense": 1, "add": 2, "requant": 1}


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
        if set(kernels) != {(c, s) for c in range(cfg.cas_num) for s in range(cfg.cas_length)}:
            found.append(f"{layer.op.name}: {len(kernels)} kernels for a {cfg.cas_num} x {cfg.cas_length} grid")
            continue
        if layer.op.kind == "dense":
            m, k, n = cfg.microtile
            if cfg.k_tile % k or cfg.n_tile % n or cfg.batch % m or cfg.batch < design.batch:
                found.append(f"{layer.op.name}: tile sizes {cfg.batch}x{cfg.k_tile}x{cfg.n_tile} are not whole "
                             f"microtiles {m}x{k}x{n}")
            if cfg.k_tile * cfg.cas_length < cfg.in_features or cfg.n_tile * cfg.cas_num < cfg.out_features:
                found.append(f"{layer.op.name}: the tile grid does not cover {cfg.in_features} x {cfg.out_features}")
        elif cfg.n_tile * cfg.cas_num < cfg.out_features or cfg.n_tile % cfg.lanes:
            # Elementwise families (add, requant): the kernels split the features in whole vectors.
            found.append(f"{layer.op.name}: {cfg.cas_num} kernels of {cfg.n_tile} features in vectors of "
                         f"{cfg.lanes} do not cover {cfg.out_features} features")
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
        if layer.op.kind not in BUFFERS:
            found.append(f"{_kid(t)}: the checker does not know op kind '{layer.op.kind}'")
            continue
        need = BUFFERS[layer.op.kind](design, layer, t.stage)
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
        size = PROGRAM_BYTES.get(layer.op.kind, limit) + RUNTIME_PROGRAM_BYTES
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


def _footprint(t) -> tuple[np.ndarray, np.ndarray]:
    """Feature columns and rows an access touches (before the boundary), as index ranges per dimension."""
    spans = []
    for d in range(len(t.buffer_dimension)):
        steps = [s for s in t.traversal if s.dimension == d]
        lo = t.offset[d]
        hi = lo + t.tiling_dimension[d] + sum(s.stride * (s.wrap - 1) for s in steps)
        spans.append((lo, hi))
    return spans


def _tilings(design: Design) -> list[str]:
    """Every access stays inside its buffer, writers cover what readers read, and at most 4 dimensions."""
    gen = design.device.generation
    found = []
    for b in design.memtile_buffers:
        written = np.zeros(b.dims[0], dtype=bool)
        for kind, accesses in (("writer", b.writers), ("reader", b.readers)):
            for a in accesses:
                t = a.tiling
                if tuple(t.buffer_dimension) != tuple(b.dims):
                    found.append(f"{b.name}: a {kind} tiling describes a {t.buffer_dimension} buffer, not {b.dims}")
                    continue
                if len(t.buffer_dimension) > gen.memtile_dims:
                    found.append(f"{b.name}: {len(t.buffer_dimension)}-D access > {gen.memtile_dims}-D addressing")
                spans = _footprint(t)
                if any(lo < 0 or hi > n for (lo, hi), n in zip(spans, b.dims)):
                    found.append(f"{b.name}: a {kind} tiling reaches {spans} outside the buffer {b.dims}")
                    continue
                if kind == "writer":
                    written[spans[0][0]:spans[0][1]] = True
                else:
                    edge = (t.boundary_dimension or t.buffer_dimension)[0]
                    lo, hi = spans[0][0], min(spans[0][1], edge)
                    if hi > lo and not written[lo:hi].all():
                        found.append(f"{b.name}: a reader of {a.peers[0]} reads features {lo}..{hi} "
                                     "that no writer stores")
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
        ports = INPUT_PORTS.get(layer.op.kind, 1)
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
        ins = INPUT_PORTS.get(layer.op.kind, 1)
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
        if not (0 <= p.lo < p.hi <= t.features) or p.row < width or (p.row * t.type.storage_bits // 8) % gen.word_bytes \
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
