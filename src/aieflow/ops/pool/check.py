"""The pool family's rules for the independent checker (aieflow.mapping.check), re-derived from the layer's
configuration and the catalog; nothing here imports the family's planner."""

from __future__ import annotations

from ..check_common import storage_bytes

# Program memory the kernel's code takes: the window loop over channel vectors and the average's finish.
PROGRAM_BYTES = 2048


def input_ports(layer) -> int:
    return 1


def buffers(design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    kh, kw = cfg.kernel
    sh, sw = cfg.strides
    wo = cfg.out_shape[1]
    n_in = cfg.batch * ((cfg.rows - 1) * sh + kh) * ((wo - 1) * sw + kw) * cfg.n_tile * storage_bytes(cfg.in_bits)
    n_out = cfg.batch * cfg.rows * wo * cfg.n_tile * storage_bytes(cfg.out_bits)
    return {"in_ping": n_in, "in_pong": n_in, "out_ping": n_out, "out_pong": n_out,
            "stack": gen.stack_bytes + gen.heap_bytes}


def rules(design, layer) -> list[str]:
    cfg, name = layer.config, layer.op.name
    found = []
    h, w, c = cfg.in_shape
    ho, wo, co = cfg.out_shape
    kh, kw = cfg.kernel
    sh, sw = cfg.strides
    top, left, bottom, right = cfg.pads
    if (h + top + bottom - kh) // sh + 1 != ho or (w + left + right - kw) // sw + 1 != wo or c != co:
        found.append(f"{name}: a {kh}x{kw} pool at stride {sh}x{sw} over {h}x{w}x{c} does not make {ho}x{wo}x{co}")
    if cfg.n_tile % cfg.lanes or cfg.n_tile * cfg.chains < c:
        found.append(f"{name}: {cfg.chains} chains of {cfg.n_tile} channels in vectors of {cfg.lanes} do not cover {c}")
    if cfg.rows * cfg.row_splits != ho:
        found.append(f"{name}: {cfg.row_splits} row splits of {cfg.rows} rows do not make the {ho} output rows")
    return found
