"""Validation of a saved design.json, by hand: one DesignError naming the first bad field by its JSON path.

`validate(data)` checks structure, types, ranges and references before design.from_dict builds anything.
Op families' configs are not described here: each family's own Config.from_dict is asked (see design.py).
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

from .errors import DesignError

BATCH_MAX = 4096
PLIO_BITS = (32, 64, 128)
STORAGES = ("int8", "uint8", "int16", "uint16", "int32", "uint32")
# Generic fields every op family's Config.to_dict holds (dense spells features as in/out_features).
CONFIG_POSITIVE = ("in_features", "out_features", "features", "cas_length", "cas_num", "batch", "k_tile",
                   "n_tile", "lanes")


def fail(path: str, what: str, value=None, got: bool = True) -> DesignError:
    shown = ""
    if got:
        try:
            shown = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            shown = repr(type(value).__name__)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        shown = f", got {shown}"
    return DesignError(f"design.json: {path} {what}{shown}".replace("\n", " "))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def need(d: dict, key: str, path: str):
    if key not in d:
        raise fail(f"{path}.{key}" if path else key, "is missing", got=False)
    return d[key]


def obj(v, path: str) -> dict:
    if not isinstance(v, dict):
        raise fail(path, "must be an object", v)
    return v


def lst(v, path: str) -> list:
    if not isinstance(v, list):
        raise fail(path, "must be a list", v)
    return v


def string(v, path: str) -> str:
    if not isinstance(v, str):
        raise fail(path, "must be a string", v)
    return v


def integer(v, path: str, lo: int | None = 0, hi: int | None = None) -> int:
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        if hi is not None:
            raise fail(path, f"must be an integer from {lo} to {hi}", v)
        raise fail(path, "must be an integer" + (f" >= {lo}" if lo is not None else ""), v)
    return v


def strings(v, path: str) -> list[str]:
    return [string(x, f"{path}[{i}]") for i, x in enumerate(lst(v, path))]


def ints(v, path: str, lo: int = 0) -> list[int]:
    return [integer(x, f"{path}[{i}]", lo) for i, x in enumerate(lst(v, path))]


def field(d: dict, key: str, path: str, check, *args):
    return check(need(d, key, path), f"{path}.{key}" if path else key, *args)


def array(v, path: str) -> None:
    """A saved array: dtype, shape and base64 bytes that decode to exactly dtype x shape."""
    obj(v, path)
    dt = field(v, "dtype", path, string)
    try:
        dtype = np.dtype(dt)
    except (TypeError, ValueError):
        raise fail(f"{path}.dtype", "must be a numpy integer dtype", dt) from None
    if dtype.kind not in "iu":
        raise fail(f"{path}.dtype", "must be a numpy integer dtype", dt)
    shape = field(v, "shape", path, ints)
    if len(shape) > 8 or any(n > 2**31 for n in shape):
        raise fail(f"{path}.shape", "is not a plausible array shape", shape)
    text = field(v, "base64", path, string)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise fail(f"{path}.base64", "is not valid base64", got=False) from None
    if len(raw) != int(np.prod(shape, dtype=object)) * dtype.itemsize:
        raise fail(f"{path}.base64", f"holds {len(raw)} bytes, not the {dtype} x {shape} declared", got=False)


def tiling(v, path: str) -> None:
    obj(v, path)
    dims = field(v, "buffer_dimension", path, ints, 1)
    # An offset may be negative: a reader starting before the buffer reads zeros there (memory-tile padding).
    for key, lo in (("tiling_dimension", 0), ("offset", -(1 << 24))):
        got = field(v, key, path, ints, lo)
        if len(got) != len(dims):
            raise fail(f"{path}.{key}", f"must have {len(dims)} entries like buffer_dimension", got)
    if v.get("boundary_dimension") is not None:
        if len(field(v, "boundary_dimension", path, ints)) != len(dims):
            raise fail(f"{path}.boundary_dimension", f"must have {len(dims)} entries", v["boundary_dimension"])
    for i, s in enumerate(field(v, "tile_traversal", path, lst)):
        p = f"{path}.tile_traversal[{i}]"
        obj(s, p)
        field(s, "dimension", p, integer, 0, len(dims) - 1)
        field(s, "stride", p, integer, 0)
        field(s, "wrap", p, integer, 1)


def config(cfg: dict, path: str) -> None:
    """The generic fields every family's config has, as positive integers."""
    for key in CONFIG_POSITIVE:
        if key in cfg:
            lo = 1 if key not in ("in_features", "out_features", "features") else 1
            integer(cfg[key], f"{path}.{key}", lo, BATCH_MAX if key == "batch" else None)
    if "microtile" in cfg:
        mt = ints(cfg["microtile"], f"{path}.microtile", 1)
        if len(mt) != 3:
            raise fail(f"{path}.microtile", "must be 3 positive integers [M, K, N]", mt)
    for key, v in cfg.items():
        if key.endswith("_bits") or key == "finish_ops":
            integer(v, f"{path}.{key}", 0 if key == "finish_ops" else 1, 64 if key != "finish_ops" else None)


def _new_name(item: dict, path: str, seen, what: str) -> str:
    """item's "name", refused when it is not a string or repeats one in `seen`."""
    name = field(item, "name", path, string)
    if name in seen:
        raise fail(f"{path}.name", f"repeats {what} name", name)
    return name


def validate(data) -> None:
    """Raise DesignError naming the first field of `data` (a parsed design.json) that is missing or wrong."""
    obj(data, "the root")
    if data.get("format") != "aieflow-design" or data.get("version") != 1:
        raise DesignError(f"design.json: not an aieflow design (format {data.get('format')!r}, version "
                          f"{data.get('version')!r})", hint="expected format 'aieflow-design' version 1; recompile the model")
    field(data, "device", "", string)
    field(data, "batch", "", integer, 1, BATCH_MAX)

    g = field(data, "graph", "", obj)
    field(g, "name", "graph", string)
    tensors = set()
    for i, t in enumerate(field(g, "tensors", "graph", lst)):
        p = f"graph.tensors[{i}]"
        obj(t, p)
        tensors.add(_new_name(t, p, tensors, "a tensor"))
        if "shape" in t or "features" not in t:  # 0.1 designs wrote a flat "features" count
            shape = field(t, "shape", p, lst)
            if not 1 <= len(shape) <= 4:
                raise fail(f"{p}.shape", "must list 1 to 4 dimensions", shape)
            size = 1
            for j, v in enumerate(shape):
                size *= integer(v, f"{p}.shape[{j}]", 1, 1 << 24)
            if size > 1 << 24:
                raise fail(f"{p}.shape", f"holds {size} values a sample, more than {1 << 24}", shape)
        else:
            field(t, "features", p, integer, 1)
        if "source_order" in t:
            order = field(t, "source_order", p, lst)
            if sorted(order) != list(range(len(t.get("shape", [0])))) or any(isinstance(v, bool) for v in order):
                raise fail(f"{p}.source_order", "must order the shape's dimensions", order)
        ty = field(t, "type", p, obj)
        field(ty, "bits", f"{p}.type", integer, 1, 64)
        field(ty, "frac", f"{p}.type", integer, None)
        if not isinstance(need(ty, "signed", f"{p}.type"), bool):
            raise fail(f"{p}.type.signed", "must be true or false", ty["signed"])
        for key in ("rounding", "saturation"):
            if key in ty:
                string(ty[key], f"{p}.type.{key}")
    for key in ("inputs", "outputs"):
        for j, name in enumerate(field(g, key, "graph", strings)):
            if name not in tensors:
                raise fail(f"graph.{key}[{j}]", "names no tensor in graph.tensors", name)
    ops = {}
    for i, o in enumerate(field(g, "ops", "graph", lst)):
        p = f"graph.ops[{i}]"
        obj(o, p)
        ops[_new_name(o, p, ops, "an op")] = field(o, "kind", p, string)
        for key in ("inputs", "outputs"):
            for j, tname in enumerate(field(o, key, p, strings)):
                if tname not in tensors:
                    raise fail(f"{p}.{key}[{j}]", "names no tensor in graph.tensors", tname)
        attrs = field(o, "attrs", p, obj)
        for k, v in attrs.items():
            if isinstance(v, dict) and set(v) == {"fixed"}:
                obj(v["fixed"], f"{p}.attrs.{k}.fixed")
        for k, v in field(o, "params", p, obj).items():
            array(v, f"{p}.params.{k}")

    layers = set()
    for i, l in enumerate(field(data, "layers", "", lst)):
        p = f"layers[{i}]"
        obj(l, p)
        op = field(l, "op", p, string)
        if op not in ops:
            raise fail(f"{p}.op", "names no op in graph.ops", op)
        layers.add(op)
        config(field(l, "config", p, obj), f"{p}.config")
        for k, v in field(l, "packed", p, obj).items():
            array(v, f"{p}.packed.{k}")

    for i, t in enumerate(field(data, "tiles", "", lst)):
        p = f"tiles[{i}]"
        obj(t, p)
        layer = field(t, "layer", p, string)
        if layer not in layers:
            raise fail(f"{p}.layer", "names no layer in layers", layer)
        for key in ("chain", "stage", "col", "row"):
            field(t, key, p, integer, 0)
        for j, b in enumerate(field(t, "buffers", p, lst)):
            q = f"{p}.buffers[{j}]"
            obj(b, q)
            field(b, "name", q, string)
            field(b, "bank", q, integer, 0)
            field(b, "bytes", q, integer, 0)

    for i, m in enumerate(field(data, "memtile_buffers", "", lst)):
        p = f"memtile_buffers[{i}]"
        obj(m, p)
        field(m, "name", p, string)
        if field(m, "tensor", p, string) not in tensors:
            raise fail(f"{p}.tensor", "names no tensor in graph.tensors", m["tensor"])
        for key in ("col", "row", "offset"):
            field(m, key, p, integer, 0)
        if field(m, "storage", p, string) not in STORAGES:
            raise fail(f"{p}.storage", f"must be one of {', '.join(STORAGES)}", m["storage"])
        dims = field(m, "dims", p, ints, 1)
        if not dims or len(dims) > 8 or int(np.prod(dims, dtype=object)) > 2**40:
            raise fail(f"{p}.dims", "must be 1 to 8 positive sizes", dims)
        for key in ("writers", "readers"):
            for j, a in enumerate(field(m, key, p, lst)):
                q = f"{p}.{key}[{j}]"
                obj(a, q)
                tiling(need(a, "tiling", q), f"{q}.tiling")
                if not field(a, "peers", q, strings):
                    raise fail(f"{q}.peers", "must name at least one peer", a["peers"])

    for i, pl in enumerate(field(data, "plios", "", lst)):
        p = f"plios[{i}]"
        obj(pl, p)
        field(pl, "name", p, string)
        if field(pl, "direction", p, string) not in ("in", "out"):
            raise fail(f"{p}.direction", 'must be "in" or "out"', pl["direction"])
        if field(pl, "tensor", p, string) not in tensors:
            raise fail(f"{p}.tensor", "names no tensor in graph.tensors", pl["tensor"])
        # bits: a positive integer here; which widths the device allows is the legality checker's rule.
        field(pl, "bits", p, integer, 1)
        for key in ("lo", "hi", "row", "elements"):
            field(pl, key, p, integer, 0)

    for i, lk in enumerate(field(data, "links", "", lst)):
        p = f"links[{i}]"
        obj(lk, p)
        if field(lk, "tensor", p, string) not in tensors:
            raise fail(f"{p}.tensor", "names no tensor in graph.tensors", lk["tensor"])
        field(lk, "source", p, string)
        field(lk, "sinks", p, strings)

    if data.get("search") is not None:
        s = obj(data["search"], "search")
        field(s, "objective", "search", string)
        for key in ("budget", "bound_tiles", "bound_interval", "bound_latency", "tiles", "interval", "latency",
                    "attempts"):
            field(s, key, "search", integer, 0)
    if data.get("exactness") is not None:
        obj(data["exactness"], "exactness")
