"""The Design: everything downstream of mapping needs, in one immutable, serialisable object.

`design.json` is its only saved form; `load()` reads it back into an equal Design.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .devices import Device, get_device
from .errors import DesignError
from .exactness import ExactnessReport
from .ir import Graph, Op, Tensor
from .numerics import FixedType
from .tiling import Tiling

FORMAT = "aieflow-design"
VERSION = 1


@dataclass(frozen=True)
class BankBuffer:
    name: str
    bank: int
    bytes: int


@dataclass(frozen=True)
class KernelTile:
    """One kernel instance: chain `chain`, position `stage` in its cascade, at compute tile (col, row)."""

    layer: str
    chain: int
    stage: int
    col: int
    row: int
    buffers: tuple[BankBuffer, ...]

    @property
    def id(self) -> str:
        return f"{self.layer}_c{self.chain}_s{self.stage}"


@dataclass(frozen=True)
class Access:
    """One memory-tile DMA port: its access pattern and what sits at the other end.

    `peers` are PLIO names or kernel ports: a kernel id (KernelTile.id) alone is its input port 0, and
    "<id>.in<p>" its input port p. A read port with several peers broadcasts; a write port has one.
    """

    tiling: Tiling
    peers: tuple[str, ...]


@dataclass(frozen=True)
class MemtileBuffer:
    name: str
    tensor: str
    col: int
    row: int  # memory-tile row, 0 nearest the shim
    offset: int  # byte address inside the memory tile
    storage: str  # int8, uint8, int16
    dims: tuple[int, ...]  # buffer_dimension, dimension 0 fastest: (features, batch rows)
    writers: tuple[Access, ...]
    readers: tuple[Access, ...]

    @property
    def bytes(self) -> int:
        return int(np.prod(self.dims)) * np.dtype(self.storage).itemsize


@dataclass(frozen=True)
class Plio:
    """A PL stream port carrying features [lo, hi) of a graph input or output tensor."""

    name: str
    direction: str  # "in" or "out"
    tensor: str
    bits: int
    lo: int
    hi: int
    row: int  # elements per sample on the wire: hi - lo, zero-padded to whole DMA words
    elements: int  # elements per graph iteration (batch x row)


@dataclass(frozen=True)
class DirectLink:
    """A kernel's output buffer handed straight to other kernels' inputs, with no memory tile between.

    Used when the producer's output blocks are exactly the consumer's input blocks.
    """

    tensor: str
    source: str  # kernel id of the producer
    sinks: tuple[str, ...]  # input ports of the consumers (see Access.peers for the spelling)


@dataclass(frozen=True, eq=False)
class Layer:
    """One op of the graph as mapped: its configuration and its packed parameters."""

    op: Op
    config: Any  # the op family's Config
    packed: dict[str, np.ndarray]


@dataclass(frozen=True)
class SearchReport:
    """What the parallelism search proved and what the design got: the gap is placement's price."""

    objective: str
    budget: int
    bound_tiles: int
    bound_interval: int  # cycles per graph iteration, first (placement-free) optimum
    bound_latency: int
    tiles: int
    interval: int
    latency: int
    attempts: int


@dataclass(frozen=True, eq=False)
class Design:
    device: Device
    graph: Graph
    batch: int  # samples per graph iteration, as the user asked (kernels pad it to the microtile)
    layers: tuple[Layer, ...]
    tiles: tuple[KernelTile, ...]
    memtile_buffers: tuple[MemtileBuffer, ...]
    plios: tuple[Plio, ...]
    links: tuple[DirectLink, ...] = ()
    search: SearchReport | None = None
    # Bit-exactness against the source model, measured at compile time (aieflow.exactness); None when the
    # model came without a source to run (an ir.Graph) or the measurement was skipped.
    exactness: "ExactnessReport | None" = None

    def __repr__(self) -> str:
        """One line: what it is and where, not its 20,000 characters of parameters."""
        exact = ("not measured" if self.exactness is None
                 else "bit-exact" if self.exactness.exact else "NOT bit-exact")
        return (f"<aieflow Design '{self.graph.name}' on {self.device.name}: {len(self.layers)} layers, "
                f"{len(self.tiles)} of {self.device.tiles} tiles, batch {self.batch}, "
                f"exactness vs source {exact}>")

    def layer(self, name: str) -> Layer:
        return next(l for l in self.layers if l.op.name == name)

    def kernels_of(self, layer: str) -> list[KernelTile]:
        return [t for t in self.tiles if t.layer == layer]

    def simulate(self, x: np.ndarray, raw: bool = False, fast: bool | None = None) -> np.ndarray:
        """Run the design on inputs; floats are quantized like the model's input, integers taken as raw.

        Returns dequantized floats, or the output integers with `raw=True`. fast=None takes the whole-batch
        fast emulator (simulate/fast.py) for more than 4 graph iterations of samples, and the structural
        emulator otherwise or when the fast one does not know an op; True/False force one or the other.
        The structural emulator is the reference; the fast one is tested equal to it bit for bit.
        """
        from .simulate import emulator
        from .simulate import fast as fast_path

        if fast is None:
            tin = self.graph.tensors[self.graph.inputs[0]]
            samples = np.shape(x)[0] if np.ndim(x) == len(tin.shape) + 1 else 1
            if samples > self.batch * 4:
                try:
                    return fast_path.run(self, x, raw=raw)
                except NotImplementedError:
                    pass  # an op the fast path does not know: the structural emulator runs every design
            return emulator.run(self, x, raw=raw)
        return fast_path.run(self, x, raw=raw) if fast else emulator.run(self, x, raw=raw)

    def write(self, path: str | Path) -> Path:
        """Write the Vitis project (with design.json) to `path`, replacing what was there only on success."""
        from .emit import write_project

        return write_project(self, Path(path))

    def summary(self) -> dict:
        """The machine-readable summary `aieflow compile --json` prints."""
        return summary(self)

    def _repr_html_(self) -> str:
        """A Design shows itself in Jupyter: a summary table and the placement picture."""
        from .report.render import design_html

        return design_html(self)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), sort_keys=True, indent=1) + "\n"


def summary(d: Design) -> dict:
    layers = []
    for layer in d.layers:
        ks = d.kernels_of(layer.op.name)
        layers.append({
            "name": layer.op.name,
            "op": layer.op.kind,
            **layer.config.summary(),  # the family's sizes, in the report's vocabulary (ops/base.py)
            "tiles": len(ks),
            "col": min(k.col for k in ks),
            "row": min(k.row for k in ks),
        })
    return {
        "device": d.device.name,
        "board": d.device.board,
        "generation": d.device.generation.name,
        "batch": d.batch,
        "tiles_used": len(d.tiles),
        "tiles_total": d.device.tiles,
        "memtile_buffers": len(d.memtile_buffers),
        "direct_links": len(d.links),
        "memtile_bytes": sum(b.bytes for b in d.memtile_buffers),
        "plio_in": sum(p.direction == "in" for p in d.plios),
        "plio_out": sum(p.direction == "out" for p in d.plios),
        "layers": layers,
        "search": asdict(d.search) if d.search else None,
        "exactness": d.exactness.to_dict() if d.exactness else None,
    }


# --- JSON form -------------------------------------------------------------------------------------------


def _array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str.lstrip("<>|="), "shape": list(a.shape),
            "base64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()}


def _compact(a: np.ndarray) -> dict:
    """Graph parameters are int64 in memory; saved in the narrowest integer type that holds them."""
    for dt in (np.int8, np.int16, np.int32):
        if a.size == 0 or (a.min() >= np.iinfo(dt).min and a.max() <= np.iinfo(dt).max):
            return _array(a.astype(dt))
    return _array(a)


def _from_array(d: dict) -> np.ndarray:
    dt = np.dtype(d["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(d["base64"]), dtype=dt).astype(np.dtype(d["dtype"])).reshape(d["shape"])


def _plain(value: Any) -> Any:
    if isinstance(value, FixedType):
        return {"fixed": value.to_dict()}
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"fixed"}:
        return FixedType.from_dict(value["fixed"])
    return value


def _op_dict(op: Op) -> dict:
    return {"name": op.name, "kind": op.kind, "inputs": list(op.inputs), "outputs": list(op.outputs),
            "attrs": {k: _plain(v) for k, v in op.attrs.items()},
            "params": {k: _compact(v) for k, v in op.params.items()}}


def _op_from(d: dict) -> Op:
    return Op(d["name"], d["kind"], tuple(d["inputs"]), tuple(d["outputs"]),
              {k: _unplain(v) for k, v in d["attrs"].items()}, {k: _from_array(v).astype(np.int64) for k, v in d["params"].items()})


def _access_dict(a: Access) -> dict:
    return {"tiling": a.tiling.to_dict(), "peers": list(a.peers)}


def _access_from(d: dict) -> Access:
    return Access(Tiling.from_dict(d["tiling"]), tuple(d["peers"]))


def to_dict(d: Design) -> dict:
    g = d.graph
    return {
        "format": FORMAT,
        "version": VERSION,
        "device": d.device.key,
        "batch": d.batch,
        "graph": {
            "name": g.name,
            "inputs": list(g.inputs),
            "outputs": list(g.outputs),
            "tensors": [t.to_dict() for t in g.tensors.values()],
            "ops": [_op_dict(op) for op in g.ops],
        },
        "layers": [{"op": l.op.name, "config": l.config.to_dict(),
                    "packed": {k: _array(v) for k, v in sorted(l.packed.items())}} for l in d.layers],
        "tiles": [{"layer": t.layer, "chain": t.chain, "stage": t.stage, "col": t.col, "row": t.row,
                   "buffers": [{"name": b.name, "bank": b.bank, "bytes": b.bytes} for b in t.buffers]}
                  for t in d.tiles],
        "memtile_buffers": [{"name": m.name, "tensor": m.tensor, "col": m.col, "row": m.row, "offset": m.offset,
                             "storage": m.storage,
                             "dims": list(m.dims), "writers": [_access_dict(a) for a in m.writers],
                             "readers": [_access_dict(a) for a in m.readers]} for m in d.memtile_buffers],
        "plios": [{"name": p.name, "direction": p.direction, "tensor": p.tensor, "bits": p.bits, "lo": p.lo,
                   "hi": p.hi, "row": p.row, "elements": p.elements} for p in d.plios],
        "links": [{"tensor": l.tensor, "source": l.source, "sinks": list(l.sinks)} for l in d.links],
        "search": asdict(d.search) if d.search else None,
        "exactness": d.exactness.to_dict() if d.exactness else None,
    }


def from_dict(data: dict) -> Design:
    """Build a Design from a parsed design.json, validated first (design_schema); any bad field is a DesignError."""
    from .design_schema import validate

    validate(data)
    try:
        return _build(data)
    except DesignError:
        raise
    except (RecursionError, ValueError, TypeError, KeyError, OverflowError, AttributeError, IndexError,
            ArithmeticError) as e:
        raise DesignError(f"design.json: a field is out of shape ({type(e).__name__}: {e})".replace("\n", " "),
                          hint="recompile the model") from None


def _config(data: dict, ops: dict[str, Op]) -> list:
    """Each layer's config, read by its op family; what the family refuses names layers[i].config."""
    from .design_schema import config as generic_config
    from .ops import family

    configs = []
    for i, l in enumerate(data["layers"]):
        kind = ops[l["op"]].kind
        try:
            fam = family(kind)
        except DesignError:
            raise DesignError(f"design.json: layers[{i}].op is a {kind!r} op, which no op family implements") from None
        try:
            cfg = fam.Config.from_dict(l["config"])
            generic = dict(l["config"])
            for key, value in {**cfg.summary(), "batch": cfg.batch}.items():
                generic.setdefault(key, value)
        except Exception as e:  # noqa: BLE001 - whatever the family raises is a bad config
            raise DesignError(f"design.json: layers[{i}].config is not a valid {kind} config "
                              f"({type(e).__name__}: {e})".replace("\n", " ")) from None
        try:
            generic["microtile"] = list(generic["microtile"])
        except TypeError:
            pass
        generic_config(generic, f"layers[{i}].config")
        configs.append(cfg)
    return configs


def _build(data: dict) -> Design:
    g = data["graph"]
    tensors = {t["name"]: Tensor.from_dict(t) for t in g["tensors"]}
    ops = tuple(_op_from(o) for o in g["ops"])
    graph = Graph(g["name"], tensors, ops, tuple(g["inputs"]), tuple(g["outputs"]))
    by_name = {op.name: op for op in ops}
    configs = _config(data, by_name)
    layers = tuple(Layer(by_name[l["op"]], cfg, {k: _from_array(v) for k, v in l["packed"].items()})
                   for l, cfg in zip(data["layers"], configs))
    tiles = tuple(KernelTile(t["layer"], t["chain"], t["stage"], t["col"], t["row"],
                             tuple(BankBuffer(b["name"], b["bank"], b["bytes"]) for b in t["buffers"]))
                  for t in data["tiles"])
    mems = tuple(MemtileBuffer(m["name"], m["tensor"], m["col"], m["row"], m["offset"], m["storage"], tuple(m["dims"]),
                               tuple(_access_from(a) for a in m["writers"]),
                               tuple(_access_from(a) for a in m["readers"])) for m in data["memtile_buffers"])
    plios = tuple(Plio(p["name"], p["direction"], p["tensor"], p["bits"], p["lo"], p["hi"], p["row"], p["elements"]) for p in data["plios"])
    links = tuple(DirectLink(l["tensor"], l["source"], tuple(l["sinks"])) for l in data["links"])
    search = SearchReport(**data["search"]) if data.get("search") else None
    exactness = ExactnessReport.from_dict(data["exactness"]) if data.get("exactness") else None
    try:
        device = get_device(data["device"])
    except Exception as e:  # noqa: BLE001 - an unknown device key
        raise DesignError(f"design.json: device {data['device']!r} is not in the catalog ({e})".replace("\n", " ")) from None
    return Design(device, graph, data["batch"], layers, tiles, mems, plios, links, search, exactness)


def load(path: str | Path) -> Design:
    """Read a design back from a project folder (or a design.json file), validated: any flaw is one DesignError."""
    p = Path(path)
    f = p / "design.json" if p.is_dir() else p
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        raise DesignError(f"no design.json in {p}", hint="give the folder written by `aieflow compile`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DesignError(f"design.json: {f} is not valid JSON: {e}".replace("\n", " ")) from None
    except (RecursionError, ValueError, TypeError, OverflowError, MemoryError) as e:
        raise DesignError(f"design.json: {f} cannot be read as JSON ({type(e).__name__}, e.g. nested too deep)") from None
    try:
        return from_dict(data)
    except DesignError:
        raise
    except (RecursionError, ValueError, TypeError, KeyError, OverflowError, AttributeError, IndexError) as e:
        raise DesignError(f"design.json: {f} is not a complete aieflow design: bad field "
                          f"({type(e).__name__}: {e})".replace("\n", " "), hint="recompile the model") from None
