"""An independent legality check of a Design against its device.

It shares no code with the placer or the op families' own fitting: it re-derives every buffer size from
the layer configuration and every limit from the catalog, so a bug in one is caught by the other.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from ..design import Design
from ..errors import MappingError


def violations(design: Design) -> list[str]:
    """Every constraint the design breaks, one line each; empty when it is legal."""
    dev, gen = design.device, design.device.generation
    found: list[str] = []
    where = {}
    for t in design.tiles:
        if not (0 <= t.col < dev.columns and 0 <= t.row < dev.rows):
            found.append(f"{t.id} at ({t.col}, {t.row}) is outside the {dev.columns} x {dev.rows} array")
        if (t.col, t.row) in where:
            found.append(f"{t.id} and {where[(t.col, t.row)]} both sit at ({t.col}, {t.row})")
        where[(t.col, t.row)] = t.id

    for layer in design.layers:
        cfg = layer.config
        m, k, n = cfg.microtile
        kernels = {(t.chain, t.stage): t for t in design.tiles if t.layer == layer.op.name}
        if len(kernels) != cfg.cas_length * cfg.cas_num:
            found.append(f"{layer.op.name}: {len(kernels)} kernels for a {cfg.cas_num} x {cfg.cas_length} grid")
            continue
        if cfg.k_tile % k or cfg.n_tile % n or cfg.batch % m or cfg.batch < design.batch:
            found.append(f"{layer.op.name}: tile sizes {cfg.batch}x{cfg.k_tile}x{cfg.n_tile} are not whole microtiles {m}x{k}x{n}")
        if cfg.k_tile * cfg.cas_length < cfg.in_features or cfg.n_tile * cfg.cas_num < cfg.out_features:
            found.append(f"{layer.op.name}: the tile grid does not cover {cfg.in_features} x {cfg.out_features}")
        for (chain, stage), t in kernels.items():
            # Cascade: left to right within a row (AIE-ML and AIE-MLv2).
            if stage > 0:
                prev = kernels[(chain, stage - 1)]
                if gen.cascade_horizontal == "left_to_right" and not (prev.row == t.row and prev.col + 1 == t.col):
                    found.append(f"{t.id} at ({t.col}, {t.row}) is not the east neighbour of {prev.id} "
                                 f"at ({prev.col}, {prev.row}) on the cascade")
            if stage == 0 and t.col > 0 and where.get((t.col - 1, t.row)) is not None:
                found.append(f"{t.id}: its west neighbour ({t.col - 1}, {t.row}) holds {where[(t.col - 1, t.row)]}; "
                             "the first kernel of a chain keeps the west column free")
            found += _banks(design, layer, t, stage)

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
        u[0] += b.bytes
        u[1] += len(b.writers)
        u[2] += len(b.readers)
    for (col, row), (size, s2mm, mm2s) in sorted(used.items()):
        if size > gen.memtile_bytes:
            found.append(f"memory tile ({col}, {row}) holds {size} bytes > {gen.memtile_bytes}")
        if s2mm > gen.memtile_s2mm or mm2s > gen.memtile_mm2s:
            found.append(f"memory tile ({col}, {row}) uses {s2mm} S2MM / {mm2s} MM2S channels "
                         f"> {gen.memtile_s2mm} / {gen.memtile_mm2s}")
    for p in design.plios:
        t = design.graph.tensors[p.tensor]
        if p.row < t.features or (p.row * t.type.storage_bits // 8) % gen.word_bytes or p.elements != design.batch * p.row:
            found.append(f"PLIO {p.name} carries {p.row} elements a sample ({p.elements} an iteration) for "
                         f"{t.features} {t.type.storage} features: not whole {gen.word_bytes}-byte words")
    plio = Counter(p.direction for p in design.plios)
    if plio["in"] > dev.plio_inputs or plio["out"] > dev.plio_outputs:
        found.append(f"{plio['in']} input / {plio['out']} output PLIOs > {dev.plio_inputs} / {dev.plio_outputs}")
    return found


def _banks(design: Design, layer, t, stage: int) -> list[str]:
    """Re-derive the kernel's buffers and check each bank's load against the catalog."""
    gen = design.device.generation
    cfg = layer.config
    act = 1 if cfg.act_bits <= 8 else 2
    out = 1 if cfg.out_bits <= 8 else 2
    need = {"weights": cfg.k_tile * cfg.n_tile * cfg.weight_bits // 8,
            "in_ping": cfg.batch * cfg.k_tile * act, "in_pong": cfg.batch * cfg.k_tile * act,
            "stack": gen.stack_bytes + gen.heap_bytes}
    if stage == cfg.cas_length - 1:
        need |= {"bias": cfg.n_tile * cfg.acc_bits // 8,
                 "out_ping": cfg.batch * cfg.n_tile * out, "out_pong": cfg.batch * cfg.n_tile * out}
    found = []
    have = {b.name: b for b in t.buffers}
    if set(have) != set(need):
        return [f"{t.id}: buffers {sorted(have)} but the layer needs {sorted(need)}"]
    load = Counter()
    for name, size in need.items():
        b = have[name]
        if b.bytes != size:
            found.append(f"{t.id}: buffer {name} recorded as {b.bytes} bytes, needs {size}")
        if not 0 <= b.bank < gen.banks:
            found.append(f"{t.id}: buffer {name} in bank {b.bank} of {gen.banks}")
        load[b.bank] += size
    for bank, size in sorted(load.items()):
        if size > gen.bank_bytes:
            found.append(f"{t.id}: bank {bank} holds {size} bytes > {gen.bank_bytes}")
    return found


def check(design: Design) -> Design:
    """Raise MappingError naming the first broken constraint (and how many more), else return the design."""
    bad = violations(design)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise MappingError(f"illegal design: {bad[0]}{more}")
    return design
