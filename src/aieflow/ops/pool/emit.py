"""C++ for pool layers: the kernels (AIE API) and their part of the ADF graph.

The project writer (aieflow.emit) asks this module for the source files of every pool layer of a design
(`sources`) and the graph code of one layer (`graph_fragment`), as it asks every op family. A pool holds no
parameters: what its kernels compute with are the layer's numbers (window, stride, the output type's modes,
the average's bias, multiplier, shift and zero point: dense.emit.requant_constants, read by dense.h's
finish) and, for a max pool, which positions of each kernel's input window lie on the map
(aieflow.ops.pool.window_valid), a rectangle given to the kernel as constants.

Kernel classes: every kernel is a `single`; kernels whose constants differ (the real output channels of the
last channel group; a max pool's rows on the map, which differ between the first, middle and last row
splits when the layer pads) have their class in a namespace of their own inside the layer's
(`<ns>::nout12_rows1_9::single`), the host run reads it from the graph.
"""

from __future__ import annotations

import numpy as np

from ...errors import DesignError
from ...templating import environment
from .. import pool as _pool
from ..conv.emit import finish_constants, host_output_elements, map_kernel_context  # noqa: F401 (host run)
from ..dense.emit import Fragment, kernel_member, shared_header, tile_banks

# As for dense: every kernel has a tile of its own, and a ratio below 1 keeps the mapper from packing two.
RUNTIME_RATIO = 0.9

_ENV = environment("ops/pool/templates")

# The shared kernel header; named after its namespace, which the project writer keeps out of layer names.
SHARED_HEADER = "aieflow_pool.h"
RESERVED_NAMES = frozenset({"aieflow_pool"})
# The host run (aieflow.host.run): the layer struct's type of each kernel input port.
HOST_INPUTS = ("in_t",)


def _span(valid: np.ndarray) -> tuple[int, int]:
    """[lo, hi) of the True entries of a 1-D mask, which must be one run."""
    idx = np.flatnonzero(valid)
    if idx.size == 0 or idx[-1] - idx[0] + 1 != idx.size:
        raise DesignError("a pool window's positions on the map are not one run of rows and columns")
    return int(idx[0]), int(idx[-1]) + 1


def valid_box(cfg, split: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((row lo, row hi), (col lo, col hi)): the rectangle of row split `split`'s input window that lies on
    the map, from pool.window_valid (the emulator's mask), checked to be exactly that rectangle."""
    mask = _pool.window_valid(cfg, split)
    rows, cols = _span(mask.any(axis=1)), _span(mask.any(axis=0))
    box = np.zeros_like(mask)
    box[rows[0]:rows[1], cols[0]:cols[1]] = True
    if not np.array_equal(box, mask):
        raise DesignError("a pool window's positions on the map are not a rectangle")
    return rows, cols


def _class_key(layer, chain: int) -> tuple[int, int, int]:
    """(NOUT, VR_LO, VR_HI) of kernel `chain`: an average reads the padding's zeros, so only a max pool's
    classes differ by their rows on the map."""
    cfg = layer.config
    nout = cfg.n_out(chain % cfg.chains)
    if cfg.mode != "max":
        return nout, 0, cfg.rows_in
    (lo, hi), _ = valid_box(cfg, chain // cfg.chains)
    return nout, lo, hi


def class_groups(layer) -> list[dict]:
    """One kernel class per distinct (NOUT, rows on the map): [{sub, nout, rows}], sub None when one class
    serves every kernel."""
    cfg = layer.config
    keys = sorted({_class_key(layer, c) for c in range(cfg.cas_num)}, key=lambda k: (-k[0], k[1], k[2]))
    if len(keys) == 1:
        n, lo, hi = keys[0]
        return [{"sub": None, "nout": n, "rows": (lo, hi)}]
    return [{"sub": f"nout{n}_rows{lo}_{hi}", "nout": n, "rows": (lo, hi)} for n, lo, hi in keys]


def kernel_class(layer, ns: str, chain: int) -> str:
    """The C++ class of kernel `chain`, as the graph creates it."""
    groups = class_groups(layer)
    if len(groups) == 1:
        return f"{ns}::single"
    n, lo, hi = _class_key(layer, chain)
    return f"{ns}::nout{n}_rows{lo}_{hi}::single"


def _layer_context(design, layer, ns: str) -> dict:
    cfg, op = layer.config, layer.op
    graph = design.graph
    x = graph.tensors[op.inputs[0]].type
    y = graph.tensors[op.outputs[0]].type
    if cfg.n_tile % cfg.lanes:
        raise DesignError(f"{cfg.n_tile} channels per kernel are not whole vectors of {cfg.lanes}", node=op.name)
    ctx = {
        "ns": ns, "name": op.name, "cfg": cfg, "mode": cfg.mode,
        "in_t": x.storage, "out_t": y.storage, "in_type": x.describe(),
        "vc": valid_box(cfg, 0)[1],
        "class_groups": class_groups(layer),
    }
    if cfg.mode == "avg":
        shift, multiplier = int(op.attrs["shift"]), int(op.attrs.get("multiplier", 1))
        ctx.update({"bias": int(op.attrs.get("bias", 0)),
                    "acc_tag": "acc64" if multiplier == 1 and shift > 31 else "acc32",
                    "finish_constants": finish_constants(op, graph)})
    return ctx


def sources(design, layers: list[tuple[object, str]]) -> dict[str, str]:
    """Kernel files of the pool layers `layers` ((Layer, C identifier) pairs), with the shared headers
    aieflow_pool.h and dense.h (an average's finish)."""
    files = {f"src/kernels/{SHARED_HEADER}": _ENV.get_template(f"{SHARED_HEADER}.j2").render(),
             "src/kernels/dense.h": shared_header(design)}
    for layer, ns in layers:
        ctx = _layer_context(design, layer, ns)
        files[f"src/kernels/{ns}.h"] = _ENV.get_template("layer.h.j2").render(**ctx)
        files[f"src/kernels/{ns}.cpp"] = _ENV.get_template("layer.cpp.j2").render(**ctx)
    return files


_KNOWN_BUFFERS = {"in_ping", "in_pong", "out_ping", "out_pong", "stack"}


def _tile_context(layer, ns: str, tile) -> dict:
    cfg = layer.config
    banks = tile_banks(layer, tile, _KNOWN_BUFFERS)
    missing = _KNOWN_BUFFERS - set(banks)
    if missing:
        raise DesignError(f"kernel {tile.id} has no bank for {', '.join(sorted(missing))}", node=layer.op.name)
    return {
        "member": kernel_member(ns, tile.chain, 0), "tile": tile, "banks": banks,
        "cls": kernel_class(layer, ns, tile.chain),
        "in_elems": cfg.batch * cfg.rows_in * cfg.cols_in * cfg.n_tile,
        **map_kernel_context(cfg, tile.chain),
    }


def graph_fragment(design, layer, ns: str) -> Fragment:
    """The graph code of one pool layer: its kernels with their locations and buffer sizes."""
    ctx = _layer_context(design, layer, ns)
    tiles = [_tile_context(layer, ns, t) for t in design.kernels_of(layer.op.name)]
    members = _ENV.get_template("graph_members.j2").render(tiles=tiles, **ctx)
    body = _ENV.get_template("graph_body.j2").render(tiles=tiles, ratio=RUNTIME_RATIO, **ctx)
    data_in = {t["tile"].id: f"{t['member']}.in[0]" for t in tiles}
    data_out = {t["tile"].id: f"{t['member']}.out[0]" for t in tiles}
    return Fragment((f"kernels/{ns}.h",), members, body, tuple(t["member"] for t in tiles), data_in, data_out)
