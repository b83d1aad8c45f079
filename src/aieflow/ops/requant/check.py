"""The requant family's rules for the independent checker (aieflow.mapping.check), re-derived from the
layer's configuration, the graph's types and the catalog; nothing here imports the family's planner."""

from __future__ import annotations

from ..check_common import storage_bytes, elementwise_cover

# Program memory the kernel's code takes (an estimate: a short vector loop and the requantizing finish).
PROGRAM_BYTES = 2048


def input_ports(layer) -> int:
    return 1


def buffers(design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    g = design.graph
    x = g.tensors[layer.op.inputs[0]].type
    out = g.tensors[layer.op.outputs[0]].type
    n = cfg.batch * cfg.n_tile
    bias_bytes = 4 if cfg.acc_bits == 32 else 8
    return {"in_ping": n * storage_bytes(x.bits), "in_pong": n * storage_bytes(x.bits),
            "out_ping": n * storage_bytes(out.bits), "out_pong": n * storage_bytes(out.bits),
            "bias": cfg.n_tile * bias_bytes, "stack": gen.stack_bytes + gen.heap_bytes}


def rules(design, layer) -> list[str]:
    """The kernels split the features in whole vectors and cover them."""
    return elementwise_cover(layer)
