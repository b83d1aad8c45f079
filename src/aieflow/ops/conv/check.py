"""The conv family's rules for the independent checker (aieflow.mapping.check), re-derived from the layer's
configuration and the catalog with formulas of their own; nothing here imports the family's planner."""

from __future__ import annotations

from ..check_common import storage_bytes

# Program memory the kernel's code takes: the tap and channel loops around the mmul, the finish (an
# estimate from comparable AIE API kernels).
PROGRAM_BYTES = 4096


def input_ports(layer) -> int:
    return 1


def buffers(design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    kh, kw = cfg.kernel
    sh, sw = cfg.strides
    ho, wo, _ = cfg.out_shape
    rows_in = (cfg.rows - 1) * sh + kh
    m = 1 if cfg.depthwise else cfg.microtile[0]
    cols_in = (max(wo, m) - 1) * sw + kw + sw - 1
    per_tap = cfg.n_tile * (1 if cfg.depthwise else cfg.k_tile)
    need = {"weights": kh * kw * per_tap * cfg.weight_bits // 8,
            "in_ping": cfg.batch * rows_in * cols_in * cfg.k_tile * storage_bytes(cfg.act_bits),
            "in_pong": cfg.batch * rows_in * cols_in * cfg.k_tile * storage_bytes(cfg.act_bits),
            "stack": gen.stack_bytes + gen.heap_bytes}
    if stage == cfg.cas_length - 1:
        out = cfg.batch * cfg.rows * wo * cfg.n_tile * storage_bytes(cfg.out_bits)
        need |= {"bias": cfg.n_tile * cfg.acc_bits // 8, "out_ping": out, "out_pong": out}
    return need


def rules(design, layer) -> list[str]:
    """Whole microtiles; the tiles cover the channels and the rows; the window, padding and stride make
    the output map."""
    cfg, name = layer.config, layer.op.name
    found = []
    m, k, n = cfg.microtile
    h, w, c = cfg.in_shape
    ho, wo, co = cfg.out_shape
    kh, kw = cfg.kernel
    sh, sw = cfg.strides
    top, left, bottom, right = cfg.pads
    if (h + top + bottom - kh) // sh + 1 != ho or (w + left + right - kw) // sw + 1 != wo:
        found.append(f"{name}: a {kh}x{kw} window at stride {sh}x{sw} over {h}x{w} padded by {list(cfg.pads)} "
                     f"does not make {ho}x{wo}")
    if cfg.k_tile % k or cfg.n_tile % n:
        found.append(f"{name}: {cfg.k_tile} input and {cfg.n_tile} output channels per kernel are not whole {m}x{k}x{n} microtiles")
    if cfg.depthwise:  # each chain reads the channels it writes
        short = cfg.k_tile != cfg.n_tile or cfg.cas_length != 1 or cfg.n_tile * cfg.chains < co
    else:
        short = cfg.k_tile * cfg.cas_length < c or cfg.n_tile * cfg.chains < co
    if short:
        found.append(f"{name}: the tile grid does not cover {c} input and {co} output channels")
    if cfg.rows * cfg.row_splits != ho:
        found.append(f"{name}: {cfg.row_splits} row splits of {cfg.rows} rows do not make the {ho} output rows")
    if cfg.cas_num != cfg.chains * cfg.row_splits:
        found.append(f"{name}: cas_num {cfg.cas_num} is not {cfg.chains} chains x {cfg.row_splits} row splits")
    return found
