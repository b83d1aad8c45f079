"""The dense family's rules for the independent checker (aieflow.mapping.check).

Re-derived from the layer's configuration and the catalog with formulas of their own: nothing here imports
the family's planner, so a mistake there is caught here.
"""

from __future__ import annotations

from ..check_common import storage_bytes

# Program memory the kernel's code takes: the loop nest with its vector ops (an estimate from comparable AIE
# API kernels; the check guards against code that could not fit, not against a few hundred bytes).
PROGRAM_BYTES = 3072


def input_ports(layer) -> int:
    return 1


def buffers(design, layer, stage: int) -> dict[str, int]:
    """Bytes of every buffer a kernel of this layer at cascade position `stage` needs in its banks."""
    cfg, gen = layer.config, design.device.generation
    need = {"weights": cfg.k_tile * cfg.n_tile * cfg.weight_bits // 8,
            "in_ping": cfg.batch * cfg.k_tile * storage_bytes(cfg.act_bits),
            "in_pong": cfg.batch * cfg.k_tile * storage_bytes(cfg.act_bits),
            "stack": gen.stack_bytes + gen.heap_bytes}
    if stage == cfg.cas_length - 1:
        need |= {"bias": cfg.n_tile * cfg.acc_bits // 8,
                 "out_ping": cfg.batch * cfg.n_tile * storage_bytes(cfg.out_bits),
                 "out_pong": cfg.batch * cfg.n_tile * storage_bytes(cfg.out_bits)}
    return need


def rules(design, layer) -> list[str]:
    """The kernels' tiles are whole microtiles and the tile grid covers the weight matrix."""
    cfg, name = layer.config, layer.op.name
    found = []
    m, k, n = cfg.microtile
    if cfg.k_tile % k or cfg.n_tile % n or cfg.batch % m or cfg.batch < design.batch:
        found.append(f"{name}: tile sizes {cfg.batch}x{cfg.k_tile}x{cfg.n_tile} are not whole microtiles {m}x{k}x{n}")
    if cfg.k_tile * cfg.cas_length < cfg.in_features or cfg.n_tile * cfg.cas_num < cfg.out_features:
        found.append(f"{name}: the tile grid does not cover {cfg.in_features} x {cfg.out_features}")
    return found
