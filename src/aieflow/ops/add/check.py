"""The add family's rules for the independent checker (aieflow.mapping.check), re-derived from the layer's
configuration, the graph's types and the catalog; nothing here imports the family's planner."""

from __future__ import annotations

from ..check_common import storage_bytes, elementwise_cover

# Program memory the kernel's code takes (an estimate: a short vector loop).
PROGRAM_BYTES = 2048


def input_ports(layer) -> int:
    return 2


def buffers(design, layer, stage: int) -> dict[str, int]:
    cfg, gen = layer.config, design.device.generation
    g = design.graph
    a, b = (g.tensors[t].type for t in layer.op.inputs)
    out = g.tensors[layer.op.outputs[0]].type
    n = cfg.batch * cfg.n_tile
    return {"a_ping": n * storage_bytes(a.bits), "a_pong": n * storage_bytes(a.bits),
            "b_ping": n * storage_bytes(b.bits), "b_pong": n * storage_bytes(b.bits),
            "out_ping": n * storage_bytes(out.bits), "out_pong": n * storage_bytes(out.bits),
            "stack": gen.stack_bytes + gen.heap_bytes}


def rules(design, layer) -> list[str]:
    """The kernels split the features in whole vectors and cover them."""
    return elementwise_cover(layer)
