"""C++ for add layers: the kernels (AIE API) and their part of the ADF graph.

The project writer (aieflow.emit) asks this module for the source files of every add layer of a design
(`sources`) and the graph code of one layer (`graph_fragment`), as it asks every op family. An add holds no
parameters, so there are no parameter headers: everything a kernel computes with comes from the Design
(the shifts, the output type's rounding and saturation, ReLU), the same numbers the emulator reads.
"""

from __future__ import annotations

from ...templating import environment
from ..dense.emit import Fragment, elementwise_tile_context, left_upshift

# As for dense: every kernel has a tile of its own, and a ratio below 1 keeps the mapper from packing two.
RUNTIME_RATIO = 0.9

_ENV = environment("ops/add/templates")

# The shared kernel header; named after its namespace, which the project writer keeps out of layer names.
SHARED_HEADER = "aieflow_add.h"
RESERVED_NAMES = frozenset({"aieflow_add"})
# The host run (aieflow.host.run): the layer struct's type of each kernel input port.
HOST_INPUTS = ("a_t", "b_t")


def host_output_elements(cfg, chain: int) -> int:
    """Elements of one kernel's output buffer: B x NT."""
    return cfg.batch * cfg.n_tile


def kernel_member(ns: str, chain: int) -> str:
    return f"{ns}_c{chain}_s0"


def _layer_context(design, layer, ns: str) -> dict:
    cfg = layer.config
    graph = design.graph
    a, b = (graph.tensors[t].type for t in layer.op.inputs)
    y = graph.tensors[layer.op.outputs[0]].type
    shift = int(layer.op.attrs["shift"])
    return {
        "ns": ns,
        "name": layer.op.name,
        "cfg": cfg,
        "a_t": a.storage, "b_t": b.storage, "out_t": y.storage,
        "a_type": a.describe(), "b_type": b.describe(), "out_type": y.describe(),
        "shift_a": int(layer.op.attrs["shift_a"]), "shift_b": int(layer.op.attrs["shift_b"]),
        "shift": shift, "upshift": left_upshift(shift, y),
        "rounding": y.rounding.api_name, "saturation": y.saturation.api_name,
        "relu": bool(layer.op.attrs.get("relu", False)),
    }


def sources(design, layers: list[tuple[object, str]]) -> dict[str, str]:
    """Kernel files of the add layers `layers` ((Layer, C identifier) pairs)."""
    files = {f"src/kernels/{SHARED_HEADER}": _ENV.get_template(f"{SHARED_HEADER}.j2").render()}
    for layer, ns in layers:
        ctx = _layer_context(design, layer, ns)
        files[f"src/kernels/{ns}.h"] = _ENV.get_template("layer.h.j2").render(**ctx)
        files[f"src/kernels/{ns}.cpp"] = _ENV.get_template("layer.cpp.j2").render(**ctx)
    return files


_KNOWN_BUFFERS = {"a_ping", "a_pong", "b_ping", "b_pong", "out_ping", "out_pong", "stack"}


def _tile_context(layer, ns: str, tile) -> dict:
    return elementwise_tile_context(layer, tile, kernel_member(ns, tile.chain), _KNOWN_BUFFERS)


def graph_fragment(design, layer, ns: str) -> Fragment:
    """The graph code of one add layer: its kernels, their locations and buffer sizes, two inputs each."""
    ctx = _layer_context(design, layer, ns)
    tiles = [_tile_context(layer, ns, t) for t in design.kernels_of(layer.op.name)]
    members = _ENV.get_template("graph_members.j2").render(tiles=tiles, **ctx)
    body = _ENV.get_template("graph_body.j2").render(tiles=tiles, ratio=RUNTIME_RATIO, **ctx)
    data_in = {}
    for t in tiles:
        data_in[t["tile"].id] = f"{t['member']}.in[0]"
        data_in[t["tile"].id + ".in1"] = f"{t['member']}.in[1]"
    data_out = {t["tile"].id: f"{t['member']}.out[0]" for t in tiles}
    return Fragment((f"kernels/{ns}.h",), members, body, tuple(t["member"] for t in tiles), data_in, data_out)
