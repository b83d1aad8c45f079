"""C++ for requant layers: the kernels (AIE API), their bias headers and their part of the ADF graph.

The project writer (aieflow.emit) asks this module for the source files of every requant layer of a design
(`sources`) and the graph code of one layer (`graph_fragment`), as it asks every op family. Everything a
kernel computes with comes from the Design: the packed bias, the scale, multiplier and shift, the output
type's rounding, saturation, bits and zero point (dense.emit.requant_constants, the constants the dense
kernels' requantize reads), ReLU: the same numbers the emulator reads (aieflow.ops.requant.kernel_requant).
"""

from __future__ import annotations

from ...templating import environment
from ..dense.emit import Fragment, _array_lines, elementwise_tile_context, left_upshift, requant_constants
from . import scale_shift

# As for dense: every kernel has a tile of its own, and a ratio below 1 keeps the mapper from packing two.
RUNTIME_RATIO = 0.9

_ENV = environment("ops/requant/templates")

# The shared kernel header; named after its namespace, which the project writer keeps out of layer names.
SHARED_HEADER = "aieflow_requant.h"
RESERVED_NAMES = frozenset({"aieflow_requant"})
# The host run (aieflow.host.run): the layer struct's type of each kernel input port.
HOST_INPUTS = ("in_t",)


def host_output_elements(cfg, chain: int) -> int:
    """Elements of one kernel's output buffer: B x NT."""
    return cfg.batch * cfg.n_tile
# Alignment of the bias arrays: one 256-bit vector load (AM020), as for dense's parameters.
_PARAM_ALIGN_BYTES = 32


def kernel_member(ns: str, chain: int) -> str:
    return f"{ns}_c{chain}_s0"


def _bias_name(ns: str, chain: int) -> str:
    return f"{ns}_c{chain}_bias"


def _layer_context(design, layer, ns: str) -> dict:
    cfg = layer.config
    graph = design.graph
    x = graph.tensors[layer.op.inputs[0]].type
    y = graph.tensors[layer.op.outputs[0]].type
    shift = int(layer.op.attrs["shift"])
    return {
        "ns": ns,
        "name": layer.op.name,
        "cfg": cfg,
        "in_t": x.storage, "out_t": y.storage,
        "in_type": x.describe(), "out_type": y.describe(),
        "bias_t": f"int{cfg.acc_bits}", "acc_tag": f"acc{cfg.acc_bits}",
        "scale": int(layer.op.attrs.get("scale", 1)), "scale_shift": scale_shift(layer.op),
        "shift": shift, "upshift": left_upshift(shift, y),
        "rounding": y.rounding.api_name, "saturation": y.saturation.api_name,
        "relu": bool(layer.op.attrs.get("relu", False)),
        "rq": requant_constants(layer.op, graph),
    }


def _params_context(layer, ns: str) -> dict:
    bias = layer.packed["bias"]
    arrays = [{"name": _bias_name(ns, c), "ctype": f"int{bias.dtype.itemsize * 8}", "size": bias[c].size,
               "body": ",\n    ".join(_array_lines(bias[c])),
               "what": f"bias of kernel {c} on the grid of x * scale, one value per feature"}
              for c in range(layer.config.cas_num)]
    return {"name": layer.op.name, "arrays": arrays, "align": _PARAM_ALIGN_BYTES}


def sources(design, layers: list[tuple[object, str]]) -> dict[str, str]:
    """Kernel and bias files of the requant layers `layers` ((Layer, C identifier) pairs)."""
    files = {f"src/kernels/{SHARED_HEADER}": _ENV.get_template(f"{SHARED_HEADER}.j2").render()}
    for layer, ns in layers:
        ctx = _layer_context(design, layer, ns)
        files[f"src/kernels/{ns}.h"] = _ENV.get_template("layer.h.j2").render(**ctx)
        files[f"src/kernels/{ns}.cpp"] = _ENV.get_template("layer.cpp.j2").render(**ctx)
        files[f"src/params/{ns}.h"] = _ENV.get_template("params.h.j2").render(**_params_context(layer, ns))
    return files


_KNOWN_BUFFERS = {"in_ping", "in_pong", "out_ping", "out_pong", "bias", "stack"}


def _tile_context(layer, ns: str, tile) -> dict:
    return {**elementwise_tile_context(layer, tile, kernel_member(ns, tile.chain), _KNOWN_BUFFERS),
            "bias": _bias_name(ns, tile.chain)}


def graph_fragment(design, layer, ns: str) -> Fragment:
    """The graph code of one requant layer: its kernels with their bias, locations and buffer sizes."""
    ctx = _layer_context(design, layer, ns)
    tiles = [_tile_context(layer, ns, t) for t in design.kernels_of(layer.op.name)]
    members = _ENV.get_template("graph_members.j2").render(tiles=tiles, **ctx)
    body = _ENV.get_template("graph_body.j2").render(tiles=tiles, ratio=RUNTIME_RATIO, **ctx)
    data_in = {t["tile"].id: f"{t['member']}.in[0]" for t in tiles}
    data_out = {t["tile"].id: f"{t['member']}.out[0]" for t in tiles}
    return Fragment((f"kernels/{ns}.h", f"params/{ns}.h"), members, body, tuple(t["member"] for t in tiles),
                    data_in, data_out)
