"""C++ for dense layers: the kernels (AIE API), their packed parameters, and their part of the ADF graph.

The project writer (aieflow.emit) asks this module for two things only: the source files of every dense
layer of a design (`sources`) and the graph code of one layer (`graph_fragment`). Everything the kernels
compute comes from the Design: the packed weights and bias, the microtile, the shift and the output type's
rounding and saturation, so the emitted kernels and the emulator (kernel_partial / kernel_finish) read the
same numbers and follow the same layouts (see this package's docstring). A layer that requantizes (an
integer multiplier, an output zero point, an output narrower than its storage: numerics.requantize) gets
the constants of requant_constants in its layer struct and dense.h's requantize() as its finish.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import DesignError
from ...numerics import FixedType, Saturation
from ...report.progress import progress
from ...templating import environment
from . import loop_blocking

# The runtime ratio tells the mapper how much of a core a kernel needs; every kernel has a tile of its own
# (the placement says which), so any value below 1 keeps the mapper from packing two on one core.
RUNTIME_RATIO = 0.9

_ENV = environment("ops/dense/templates")

# Names the dense code declares for every layer (its shared header dense.h and namespace): a layer may not
# take them as its C++ identifier.
RESERVED_NAMES = frozenset({"dense", "aieflow_dense"})
# The host run (aieflow.host.run): the layer struct's type of each kernel input port.
HOST_INPUTS = ("in_t",)


def host_output_elements(cfg, chain: int) -> int:
    """Elements of the output buffer of a chain's last kernel: B x NT."""
    return cfg.batch * cfg.n_tile

# Values per line in the parameter headers: short enough to read and diff.
_VALUES_PER_LINE = 16
# Alignment of the parameter arrays: one 256-bit vector load (AM020), so aie::load_v never straddles.
_PARAM_ALIGN_BYTES = 32


def left_upshift(shift: int, out: FixedType) -> int:
    """The upshift a kernel applies for a negative `shift` (a left shift), exactly as numerics.srs does.

    The kernel reads the accumulator as int32 lanes (exact for a 32-bit accumulator; a 64-bit one saturates
    into int32, or wraps with saturation none, which changes no result: saturation keeps the sign and a
    saturated value saturates again, and wrapping keeps the low bits), moves them into a 64-bit accumulator
    shifted up by this many bits, and lets the output type's saturation finish. Shifting by more bits than
    the output has changes nothing (the low bits are zero either way; any nonzero value saturates either
    way), so the shift is capped at the output's width, and int32 << 16 cannot overflow 64 bits.
    """
    return min(-shift, out.bits) if shift < 0 else 0


def requantizes(op, graph) -> bool:
    """Whether a layer's end needs more than the plain SRS (and ReLU at 0): a multiplier, an output zero
    point, or an output type narrower than its storage (numerics.requantize)."""
    y = graph.tensors[op.outputs[0]]
    return int(op.attrs.get("multiplier", 1)) != 1 or y.zero_point != 0 or y.type.bits != y.type.storage_bits


def requant_constants(op, graph) -> dict:
    """The numbers dense.h's requantize() reads from a layer struct (see its comments), from the op's
    multiplier, shift and ReLU and the output tensor's type and zero point.

    W (wide_t) is the output's storage type when the zero point is 0, else twice as wide. Saturating modes
    clamp the rounded values to [LO, HI], the output's range (the symmetric one for SYMMETRIC, from the zero
    point up with ReLU) less the zero point, then add the zero point; a clamp W's own SRS already does is
    skipped. Saturation none adds the zero point and keeps the low bits (see dense.h).
    """
    y_t = graph.tensors[op.outputs[0]]
    y = y_t.type
    zp = int(y_t.zero_point)
    relu = bool(op.attrs.get("relu", False))
    storage = y.storage_bits
    wide_bits = storage if zp == 0 else 2 * storage
    wide_signed = y.signed or zp != 0
    wide_t = y.storage if zp == 0 else f"int{wide_bits}"
    lo = y.qmin + (1 if y.saturation is Saturation.SYMMETRIC and y.signed else 0)
    hi = y.qmax
    if relu:
        lo = max(lo, zp)
    # The range W's SRS leaves (the symmetric one too): a clamp at or beyond it changes nothing.
    w_lo = -(1 << (wide_bits - 1)) if wide_signed else 0
    w_hi = (1 << (wide_bits - 1)) - 1 if wide_signed else (1 << wide_bits) - 1
    wrap_shift = wide_bits - y.bits
    wrap_bias = (1 << (y.bits - 1)) if (not y.signed and wide_signed and wrap_shift) else 0
    return {
        "requant": requantizes(op, graph),
        "describe": f"{y.describe()}, zero point {zp}",
        "multiplier": int(op.attrs.get("multiplier", 1)),
        "zero_point": zp,
        "bits": y.bits,
        "wide_t": wide_t,
        "narrow_tag": "acc32" if wide_bits <= 16 else "acc64",
        "wrap": y.saturation is Saturation.NONE,
        "lo": lo - zp, "hi": hi - zp,
        "clamp_lo": lo - zp > w_lo, "clamp_hi": hi - zp < w_hi,
        "wrap_offset": zp - wrap_bias, "wrap_shift": wrap_shift, "wrap_bias": wrap_bias,
    }


def finish_vector_ops(op, graph, acc_bits: int) -> int:
    """Vector operations dense.h's requantize() issues per cascade word beyond the plain finish (SRS, ReLU),
    0 for a layer that does not requantize: a count for the cycle model (dense.Config.finish_ops)."""
    if not requantizes(op, graph):
        return 0
    c = requant_constants(op, graph)
    shift, relu = int(op.attrs["shift"]), bool(op.attrs.get("relu", False))
    plain = (3 if shift < 0 else 1) + int(relu)  # [read as int32, upshift,] SRS; max
    ops = 3 if c["multiplier"] != 1 else 0  # read as int32, multiply (32b x 32b: two passes)
    acc32 = c["multiplier"] == 1 and acc_bits == 32
    ops += 3 if shift < 0 or (c["wide_t"] == "int32" and acc32) else 1  # (read, upshift into acc64,) SRS
    if c["wrap"]:
        ops += int(c["wrap_offset"] != 0) + 2 * int(c["wrap_shift"] != 0) + int(c["wrap_bias"] != 0) + int(relu)
    else:  # ReLU is in the low clamp
        ops += int(c["clamp_lo"]) + int(c["clamp_hi"]) + int(c["zero_point"] != 0)
    if c["wide_t"] != graph.tensors[op.outputs[0]].type.storage:
        ops += 2  # into an accumulator, SRS into the storage type
    return max(ops - plain, 0)


@dataclass(frozen=True)
class Fragment:
    """One layer's part of the graph class: headers, member declarations, constructor code, data ports."""

    includes: tuple[str, ...]
    members: str
    body: str
    kernels: tuple[str, ...]  # the graph members this fragment declares
    data_in: dict[str, str]  # kernel id -> the port its input buffer arrives on
    data_out: dict[str, str]  # kernel id (last stage of a chain) -> the port its output buffer leaves on


def role(stage: int, cas_length: int) -> str:
    """Which kernel class a stage uses: its cascade ports differ."""
    if cas_length == 1:
        return "single"
    if stage == 0:
        return "first"
    return "last" if stage == cas_length - 1 else "middle"


def kernel_member(ns: str, chain: int, stage: int) -> str:
    return f"{ns}_c{chain}_s{stage}"


def _ctype(bits: int, signed: bool = True) -> str:
    return f"{'' if signed else 'u'}int{bits}"


def _layer_context(design, layer, ns: str) -> dict:
    cfg = layer.config
    graph = design.graph
    m, k, n = cfg.microtile
    x = graph.tensors[layer.op.inputs[0]].type
    y = graph.tensors[layer.op.outputs[0]].type
    w: FixedType = layer.op.attrs["weight_type"]
    gen = design.device.generation
    lanes = gen.cascade_bits // cfg.acc_bits  # accumulator lanes in one cascade word
    if (m * n) % lanes or lanes % n or (lanes // n) & (lanes // n - 1):
        raise DesignError(
            f"the {m}x{k}x{n} microtile with a {cfg.acc_bits}-bit accumulator does not split into "
            f"{gen.cascade_bits}-bit cascade words of whole rows", node=layer.op.name,
            hint="the dense emitter needs N to divide the lanes of a cascade word")
    shift = int(layer.op.attrs["shift"])
    roles = sorted({role(s, cfg.cas_length) for s in range(cfg.cas_length)},
                   key=("single", "first", "middle", "last").index)
    # The register blocking of the kernel loop, from the one place the rest of aieflow reads it too.
    row_group, col_group = loop_blocking(cfg)
    return {
        "ns": ns,
        "name": layer.op.name,
        "cfg": cfg,
        "M": m, "K": k, "N": n,
        "in_t": x.storage, "w_t": _ctype(w.storage_bits), "out_t": y.storage,
        "bias_t": _ctype(cfg.acc_bits), "acc_tag": f"acc{cfg.acc_bits}",
        "lanes": lanes, "reps": lanes // n, "words": m * n // lanes,
        "shift": shift, "upshift": left_upshift(shift, y),
        "rounding": y.rounding.api_name, "saturation": y.saturation.api_name,
        "relu": bool(layer.op.attrs.get("relu", False)),
        "out_type": y.describe(),
        "roles": roles,
        "row_group": row_group, "col_group": col_group,
    }


def _array_lines(values: np.ndarray) -> list[str]:
    values = np.asarray(values)
    if values.dtype.itemsize < 4:
        flat = [str(v) for v in values.ravel().tolist()]  # every value is its own literal: the fast path
    else:
        flat = [_literal(v, values.dtype) for v in values.ravel().tolist()]
    return [", ".join(flat[i:i + _VALUES_PER_LINE]) for i in range(0, len(flat), _VALUES_PER_LINE)]


def _literal(v: int, dtype: np.dtype) -> str:
    if np.dtype(dtype).itemsize == 8:
        # A 64-bit literal needs its suffix; the most negative value has no literal of its own.
        return "(-9223372036854775807LL - 1)" if v == -(1 << 63) else f"{v}LL"
    if np.dtype(dtype).itemsize == 4 and v == -(1 << 31):
        return "(-2147483647 - 1)"
    return str(v)


def params_context(layer, ns: str, order: str = "[Nt/N][Kt/K][K][N] blocks") -> dict:
    """The parameter arrays of a cascaded layer's kernels (weights per tile in their block `order`, bias per
    chain), as params.h.j2 writes them: dense's, and conv's with its own block order."""
    cfg = layer.config
    weights = layer.packed["weights"]
    bias = layer.packed["bias"]
    arrays = []
    for chain in range(cfg.cas_num):
        for stage in range(cfg.cas_length):
            w = weights[chain, stage]
            arrays.append({"name": f"{kernel_member(ns, chain, stage)}_weights", "ctype": _ctype(w.dtype.itemsize * 8),
                           "size": w.size, "body": ",\n    ".join(_array_lines(w)),
                           "what": f"weights of chain {chain}, stage {stage}: {order}"})
        b = bias[chain]
        arrays.append({"name": f"{ns}_c{chain}_bias", "ctype": _ctype(b.dtype.itemsize * 8), "size": b.size,
                       "body": ",\n    ".join(_array_lines(b)),
                       "what": f"bias of chain {chain} on the accumulator grid, added by its last stage"})
    return {"ns": ns, "name": layer.op.name, "arrays": arrays, "align": _PARAM_ALIGN_BYTES}


def finishes_with_dense_h(layer) -> bool:
    """Whether a layer's kernels end with dense.h's finish (bias words, SRS and ReLU, requantize): dense and
    conv layers, and average pools."""
    kind = layer.op.kind
    return kind in ("dense", "conv") or (kind == "pool" and layer.op.attrs.get("mode") == "avg")


def shared_requant(design) -> bool:
    """Whether the design's dense.h carries the requantization code: some layer that finishes with it
    requantizes. Every family that writes dense.h writes the same text, whichever writes it last."""
    return any(requantizes(layer.op, design.graph) for layer in design.layers if finishes_with_dense_h(layer))


def shared_header(design) -> str:
    """The text of src/kernels/dense.h for `design` (see shared_requant)."""
    return _ENV.get_template("dense.h.j2").render(requant=shared_requant(design))


def sources(design, layers: list[tuple[object, str]]) -> dict[str, str]:
    """Kernel and parameter files of the dense layers `layers` ((Layer, C identifier) pairs).

    The requantization code (dense.h requantize, the layer structs' REQUANT constants) is written only into
    designs with a layer that needs it (a dense one, or another family's that finishes with dense.h:
    shared_requant), so a design of plain SRS layers gets exactly the files it always got.
    """
    requant = shared_requant(design)
    files = {"src/kernels/dense.h": shared_header(design)}
    for layer, ns in progress(layers, description="weight headers"):
        ctx = _layer_context(design, layer, ns)
        ctx["requant"] = requant
        ctx["rq"] = requant_constants(layer.op, design.graph)
        files[f"src/kernels/{ns}.h"] = _ENV.get_template("layer.h.j2").render(**ctx)
        files[f"src/kernels/{ns}.cpp"] = _ENV.get_template("layer.cpp.j2").render(**ctx)
        files[f"src/params/{ns}.h"] = _ENV.get_template("params.h.j2").render(**params_context(layer, ns))
    return files


_PORT_OF_BUFFER = {"in_ping": "in", "in_pong": "in", "out_ping": "out", "out_pong": "out"}
_KNOWN_BUFFERS = {"weights", "bias", "stack", *_PORT_OF_BUFFER}


def tile_banks(layer, tile, known: set[str]) -> dict[str, int]:
    """The bank of each of a kernel's buffers, refusing a buffer this family's emitter does not place."""
    banks = {}
    for b in tile.buffers:
        if b.name not in known:
            raise DesignError(f"kernel {tile.id} has a buffer '{b.name}' the {layer.op.kind} emitter does not know",
                              node=layer.op.name, hint=f"expected {', '.join(sorted(known))}")
        banks[b.name] = b.bank
    return banks


def elementwise_tile_context(layer, tile, member: str, known: set[str]) -> dict:
    """What the graph templates of an elementwise family (add, requant) need of one kernel: its member name,
    the bank of each of its buffers (every one of `known` placed), its element count and its feature range."""
    cfg = layer.config
    banks = tile_banks(layer, tile, known)
    missing = known - set(banks)
    if missing:
        raise DesignError(f"kernel {tile.id} has no bank for {', '.join(sorted(missing))}", node=layer.op.name)
    return {
        "member": member, "tile": tile, "banks": banks,
        "elems": cfg.batch * cfg.n_tile,
        "lo": tile.chain * cfg.n_tile, "hi": (tile.chain + 1) * cfg.n_tile,
    }


def _tile_context(layer, ns: str, tile) -> dict:
    cfg = layer.config
    banks = tile_banks(layer, tile, _KNOWN_BUFFERS)
    r = role(tile.stage, cfg.cas_length)
    member = kernel_member(ns, tile.chain, tile.stage)
    last = r in ("single", "last")
    return {
        "member": member, "role": r, "tile": tile, "last": last,
        "prev": kernel_member(ns, tile.chain, tile.stage - 1) if tile.stage > 0 else None,
        "weights": f"{member}_weights", "bias": f"{ns}_c{tile.chain}_bias",
        "banks": banks,
        "in_elems": cfg.batch * cfg.k_tile, "out_elems": cfg.batch * cfg.n_tile,
    }


def graph_fragment(design, layer, ns: str) -> Fragment:
    """The graph code of one dense layer: kernels, constraints, buffer sizes and cascade connections."""
    ctx = _layer_context(design, layer, ns)
    tiles = [_tile_context(layer, ns, t) for t in design.kernels_of(layer.op.name)]
    members = _ENV.get_template("graph_members.j2").render(tiles=tiles, **ctx)
    body = _ENV.get_template("graph_body.j2").render(tiles=tiles, ratio=RUNTIME_RATIO, **ctx)
    data_in = {t["tile"].id: f"{t['member']}.in[0]" for t in tiles}
    data_out = {t["tile"].id: f"{t['member']}.out[0]" for t in tiles if t["last"]}
    return Fragment((f"kernels/{ns}.h", f"params/{ns}.h"), members, body, tuple(t["member"] for t in tiles),
                    data_in, data_out)
