"""C++ for conv layers: the kernels (AIE API), their packed parameters, and their part of the ADF graph.

The project writer (aieflow.emit) asks this module for the source files of every conv layer of a design
(`sources`) and the graph code of one layer (`graph_fragment`), as it asks every op family. Everything the
kernels compute with comes from the Design: the packed weights and bias, the microtile, the tiles' channels
and rows, the window, stride and padding (through the input windows' sizes), the shift, the output type's
rounding, saturation, bits and zero point, the multiplier, ReLU and the clip: the numbers the emulator
reads (aieflow.ops.conv.kernel_partial / emulate), in the layouts of this package's docstring.

The arithmetic is in the shared header aieflow_conv.h (templates/aieflow_conv.h.j2); the end of a layer is
dense.h's (bias words, the plain SRS and ReLU, or requantize() with dense.emit.requant_constants), so a
design with conv layers also gets dense.h.

Kernel classes: every kernel of a layer shares its layer struct; what differs between chains is the number
of real output channels a chain writes (the last output-channel group may hold fewer than n_tile). When the
chains differ, the output stages' classes of each channel count live in a namespace of their own inside the
layer's (`<ns>::nout12::last`); the class's own name is always its cascade role (single, first, middle,
last), which is what the host run reads from the graph.
"""

from __future__ import annotations

from ...errors import DesignError
from ...report.progress import progress
from ...templating import environment
from ..base import kernel_id, storage_bytes
from ..dense.emit import (Fragment, _ctype, kernel_member, left_upshift, params_context, requant_constants, role,
                          shared_header, tile_banks)

# As for dense: every kernel has a tile of its own, and a ratio below 1 keeps the mapper from packing two.
RUNTIME_RATIO = 0.9

_ENV = environment("ops/conv/templates")

# The shared kernel header; named after its namespace, which the project writer keeps out of layer names.
SHARED_HEADER = "aieflow_conv.h"
RESERVED_NAMES = frozenset({"aieflow_conv"})
# The host run (aieflow.host.run): the layer struct's type of each kernel input port.
HOST_INPUTS = ("in_t",)

# The smallest vector AIE-ML has (UG1529 "Supported vector types and sizes") and the largest one the A
# gathering loads at once.
_MIN_VECTOR_BITS = 128
_MAX_SPAN_BITS = 1024


def host_output_elements(cfg, chain: int) -> int:
    """Elements of chain `chain`'s output buffer (a conv's or a pool's): B x rows x WO x its real channels."""
    return cfg.batch * cfg.rows * cfg.out_shape[1] * cfg.n_out(chain % cfg.chains)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def gather_mode(cfg) -> tuple[str, int]:
    """How the kernel gathers an M x K block of A from its pixel-major input, and P, the channels it loads
    per pixel at a time (see aieflow_conv.h):
      SPAN    one load of the block's M pixels' M x SW x KT values (at most 1024 bits), when KT is one
              channel block, or less than 128 bits in a power of two of blocks
      WINDOW  per pixel, P = max(K, 128 bits of channels) at a time, when KT >= P
      LANE    lane by lane, otherwise (narrow pixels of 3, 5, 6 or 7 channel blocks)
    """
    m, k, _ = cfg.microtile
    bits = storage_bytes(cfg.act_bits) * 8
    p = max(k, _MIN_VECTOR_BITS // bits)
    s = cfg.strides[1] * cfg.k_tile
    span = m * s * bits
    if (cfg.k_tile == k or (cfg.k_tile < p and _pow2(s // k))) and span <= _MAX_SPAN_BITS and _pow2(span // bits):
        return "SPAN", p
    if cfg.k_tile >= p:
        return "WINDOW", p
    return "LANE", p


def column_group(cfg) -> int:
    """Output-channel blocks a stage computes together: enough that a pixel's channels of the group fill one
    128-bit vector (AIE-ML's smallest), so the last stage stores each pixel's group with one vector store;
    1 when a block's row of N outputs already does."""
    _, _, n = cfg.microtile
    return max(1, _MIN_VECTOR_BITS // (n * storage_bytes(cfg.out_bits) * 8))


def _clip_bounds(op, graph) -> tuple[int | None, int | None]:
    """The clip's bounds as the kernel applies them (None: the clamp changes nothing, the requantized values
    already lie inside). A bound the output's storage cannot hold is refused."""
    clip = op.attrs.get("clip")
    if clip is None:
        return None, None
    y = graph.tensors[op.outputs[0]].type
    bits = y.storage_bits
    s_lo, s_hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if y.signed else (0, (1 << bits) - 1)
    lo, hi = int(clip[0]), int(clip[1])
    if lo > s_hi or hi < s_lo:
        raise DesignError(f"clip [{lo}, {hi}] lies outside the output's {y.storage} range", node=op.name)
    return (lo if lo > y.qmin else None), (hi if hi < y.qmax else None)


def finish_context(op, graph) -> dict:
    """What the finish constants of a layer struct (templates/finish_constants.j2) read: the output type, its
    modes, the shift, ReLU and dense.emit.requant_constants."""
    y = graph.tensors[op.outputs[0]].type
    shift = int(op.attrs["shift"])
    return {
        "out_t": y.storage, "out_type": y.describe(),
        "shift": shift, "upshift": left_upshift(shift, y),
        "rounding": y.rounding.api_name, "saturation": y.saturation.api_name,
        "relu": bool(op.attrs.get("relu", False)),
        "rq": requant_constants(op, graph),
    }


def finish_constants(op, graph) -> str:
    """The layer struct's lines for dense.h's finish (the output type, SHIFT, modes, requantize's constants)."""
    return _ENV.get_template("finish_constants.j2").render(**finish_context(op, graph)).rstrip("\n")


def _output_role(cfg) -> str:
    return role(cfg.cas_length - 1, cfg.cas_length)


def class_groups(layer) -> list[dict]:
    """The kernel classes of a layer, by namespace: [{sub, nout, roles}]. One group of every role when all
    chains write the same number of channels; otherwise the input stages' roles in the layer's namespace
    and an output role per channel count in namespace nout<count>."""
    cfg = layer.config
    roles = sorted({role(s, cfg.cas_length) for s in range(cfg.cas_length)},
                   key=("single", "first", "middle", "last").index)
    nouts = sorted({cfg.n_out(j) for j in range(cfg.chains)}, reverse=True)
    if len(nouts) == 1:
        return [{"sub": None, "nout": nouts[0], "roles": roles}]
    out = _output_role(cfg)
    return ([{"sub": None, "nout": None, "roles": [r for r in roles if r != out]}]
            + [{"sub": f"nout{n}", "nout": n, "roles": [out]} for n in nouts])


def kernel_class(layer, ns: str, chain: int, stage: int) -> str:
    """The C++ class of kernel (chain, stage), as the graph creates it: <ns>[::nout<count>]::<role>."""
    cfg = layer.config
    r = role(stage, cfg.cas_length)
    groups = class_groups(layer)
    if len(groups) == 1 or r != _output_role(cfg):
        return f"{ns}::{r}"
    return f"{ns}::nout{cfg.n_out(chain % cfg.chains)}::{r}"


def _layer_context(design, layer, ns: str) -> dict:
    cfg, op = layer.config, layer.op
    graph = design.graph
    m, k, n = cfg.microtile
    x = graph.tensors[op.inputs[0]].type
    w = op.attrs["weight_type"]
    gen = design.device.generation
    lanes = gen.cascade_bits // cfg.acc_bits
    if not cfg.depthwise and (m * n) % lanes:
        raise DesignError(f"an {m}x{n} block of {cfg.acc_bits}-bit sums is not whole {gen.cascade_bits}-bit "
                          "cascade words", node=op.name)
    gather, p = gather_mode(cfg)
    g = column_group(cfg)
    if g not in (1, 2, 4) or g > m:
        raise DesignError(f"a column group of {g} blocks does not fit the {m}x{k}x{n} microtile", node=op.name)
    taps = cfg.kernel[0] * cfg.kernel[1]
    weights_size = taps * cfg.n_tile * (1 if cfg.depthwise else cfg.k_tile)
    if layer.packed["weights"].shape[-1] != weights_size:
        raise DesignError(f"packed weights of {layer.packed['weights'].shape[-1]} values per tile, the kernel "
                          f"reads {weights_size}", node=op.name)
    clip_lo, clip_hi = _clip_bounds(op, graph)
    return {
        "ns": ns, "name": op.name, "cfg": cfg,
        "M": m, "K": k, "N": n,
        "in_t": x.storage, "w_t": _ctype(w.storage_bits), "bias_t": _ctype(cfg.acc_bits),
        "acc_tag": f"acc{cfg.acc_bits}",
        "gather_name": gather, "P": p, "G": g,
        "cas_lanes": lanes, "cas_words": (m * n) // lanes,
        "weights_size": weights_size,
        "finish_constants": finish_constants(op, graph),
        "clip_lo": clip_lo, "clip_hi": clip_hi,
        "class_groups": class_groups(layer),
    }


def sources(design, layers: list[tuple[object, str]]) -> dict[str, str]:
    """Kernel and parameter files of the conv layers `layers` ((Layer, C identifier) pairs), with the shared
    headers aieflow_conv.h and dense.h (the finish)."""
    files = {f"src/kernels/{SHARED_HEADER}": _ENV.get_template(f"{SHARED_HEADER}.j2").render(),
             "src/kernels/dense.h": shared_header(design)}
    for layer, ns in progress(layers, description="conv weight headers"):
        ctx = _layer_context(design, layer, ns)
        files[f"src/kernels/{ns}.h"] = _ENV.get_template("layer.h.j2").render(**ctx)
        files[f"src/kernels/{ns}.cpp"] = _ENV.get_template("layer.cpp.j2").render(**ctx)
        files[f"src/params/{ns}.h"] = _ENV.get_template("params.h.j2").render(**params_context(
            layer, ns, "[KH][KW][NT]" if layer.config.depthwise else "[NT/N][KH][KW][KT/K][K][N]"))
    return files


_KNOWN_BUFFERS = {"weights", "bias", "stack", "in_ping", "in_pong", "out_ping", "out_pong"}


def _tile_context(layer, ns: str, tile) -> dict:
    cfg = layer.config
    r = role(tile.stage, cfg.cas_length)
    member = kernel_member(ns, tile.chain, tile.stage)
    last = r in ("single", "last")
    return {
        "member": member, "role": r, "tile": tile, "last": last,
        "cls": kernel_class(layer, ns, tile.chain, tile.stage),
        "prev": kernel_member(ns, tile.chain, tile.stage - 1) if tile.stage > 0 else None,
        "weights": f"{member}_weights", "bias": f"{ns}_c{tile.chain}_bias",
        "banks": tile_banks(layer, tile, _KNOWN_BUFFERS),
        "in_elems": cfg.batch * cfg.rows_in * cfg.cols_in * cfg.k_tile,
        **map_kernel_context(cfg, tile.chain),
    }


def map_kernel_context(cfg, chain: int) -> dict:
    """What the graph code of a feature-map kernel (conv, pool) says of chain `chain`: its output buffer's
    elements, its real output channels, and the output rows and channels it writes."""
    j, split = chain % cfg.chains, chain // cfg.chains
    return {
        "out_elems": host_output_elements(cfg, chain),
        "nout": cfg.n_out(j),
        "rows": (split * cfg.rows, (split + 1) * cfg.rows),
        "channels": (j * cfg.n_tile, j * cfg.n_tile + cfg.n_out(j)),
    }


def graph_fragment(design, layer, ns: str) -> Fragment:
    """The graph code of one conv layer: kernels, constraints, buffer sizes and cascade connections."""
    ctx = _layer_context(design, layer, ns)
    tiles = [_tile_context(layer, ns, t) for t in design.kernels_of(layer.op.name)]
    known = {kernel_id(layer.op.name, c, s) for c in range(layer.config.cas_num) for s in range(layer.config.cas_length)}
    if {t["tile"].id for t in tiles} != known:
        raise DesignError(f"the design places kernels {sorted(t['tile'].id for t in tiles)}, the layer has "
                          f"{sorted(known)}", node=layer.op.name)
    missing = [f"{t['tile'].id}: {b}" for t in tiles for b in ("weights", "stack", "in_ping", "in_pong")
               + (("bias", "out_ping", "out_pong") if t["last"] else ()) if b not in t["banks"]]
    if missing:
        raise DesignError(f"no bank for {', '.join(missing)}", node=layer.op.name)
    members = _ENV.get_template("graph_members.j2").render(tiles=tiles, **ctx)
    body = _ENV.get_template("graph_body.j2").render(tiles=tiles, ratio=RUNTIME_RATIO, **ctx)
    data_in = {t["tile"].id: f"{t['member']}.in[0]" for t in tiles}
    data_out = {t["tile"].id: f"{t['member']}.out[0]" for t in tiles if t["last"]}
    return Fragment((f"kernels/{ns}.h", f"params/{ns}.h"), members, body, tuple(t["member"] for t in tiles),
                    data_in, data_out)
