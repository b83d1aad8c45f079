"""What the families' checker rules share (ops/<kind>/check.py). Like those rules, it imports nothing of
the planners: the checker re-derives every figure on its own."""

from __future__ import annotations


def storage_bytes(bits: int) -> int:
    """Bytes one value of a `bits`-bit type takes in memory (int8, int16, int32)."""
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def elementwise_cover(layer) -> list[str]:
    """An elementwise layer's kernels split its features in whole vectors and cover them."""
    cfg = layer.config
    if cfg.n_tile * cfg.cas_num < cfg.out_features or cfg.n_tile % cfg.lanes:
        return [f"{layer.op.name}: {cfg.cas_num} kernels of {cfg.n_tile} features in vectors of "
                f"{cfg.lanes} do not cover {cfg.out_features} features"]
    return []
