"""Per-layer directives and compile options, from Python or a TOML file (`aieflow compile --config`).

    [compile]
    objective = "throughput"      # resource | throughput | latency
    max_tiles = 200
    target_interval = 2000        # cycles per graph iteration, for the resource objective
    batch = 8

    [layers.fc1]                  # a layer by its op name
    cas_length = 4
    cas_num = 2
    microtile = [4, 8, 8]
    col = 10                      # pin: the layer's bottom-left kernel
    row = 0
    transport = "memtile"         # how its input arrives: auto | memtile | direct

A directive that cannot be met is an error naming the layer, never a silent override.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import MappingError

OBJECTIVES = ("resource", "throughput", "latency")
TRANSPORTS = ("auto", "memtile", "direct")


@dataclass(frozen=True)
class Directive:
    cas_length: int | None = None
    cas_num: int | None = None
    microtile: tuple[int, int, int] | None = None
    col: int | None = None
    row: int | None = None
    transport: str = "auto"

    @property
    def pinned(self) -> bool:
        return self.col is not None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) not in (None, "auto")}


@dataclass(frozen=True)
class Options:
    objective: str = "resource"
    max_tiles: int | None = None
    target_interval: int | None = None
    batch: int | None = None
    layers: dict[str, Directive] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.objective, str) or self.objective not in OBJECTIVES:
            raise MappingError(f"unknown objective '{self.objective}'", hint=f"use one of {', '.join(OBJECTIVES)}")
        for key in ("max_tiles", "target_interval", "batch"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise MappingError(f"{key} = {value!r} must be an integer")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise MappingError(f"max_tiles {self.max_tiles} must be at least 1")
        if self.target_interval is not None and self.target_interval < 1:
            raise MappingError(f"target_interval {self.target_interval} must be a positive number of cycles")


def directive(name: str, raw: dict) -> Directive:
    if not isinstance(raw, dict):
        raise MappingError(f"[layers] {name} = {raw!r} is not a table of directives",
                           hint=f"write [layers.{name}] with keys such as cas_length = 2")
    known = {f.name for f in fields(Directive)}
    unknown = set(raw) - known
    if unknown:
        raise MappingError(f"unknown directive {', '.join(sorted(unknown))}", node=name,
                           hint=f"use {', '.join(sorted(known))}")
    d = dict(raw)
    for key in ("cas_length", "cas_num", "col", "row"):
        if key in d and (not isinstance(d[key], int) or isinstance(d[key], bool) or d[key] < (1 if key.startswith("cas") else 0)):
            raise MappingError(f"directive {key} = {d[key]!r} must be a {'positive' if key.startswith('cas') else 'non-negative'} integer",
                               node=name)
    if "microtile" in d:
        mt = d["microtile"]
        if not (isinstance(mt, (list, tuple)) and len(mt) == 3 and all(isinstance(v, int) and v > 0 for v in mt)):
            raise MappingError(f"directive microtile = {mt!r} must be three positive integers [M, K, N]", node=name)
        d["microtile"] = tuple(mt)
    if (d.get("col") is None) != (d.get("row") is None):
        raise MappingError("a placement pin needs both col and row", node=name)
    if d.get("transport", "auto") not in TRANSPORTS:
        raise MappingError(f"directive transport = {d.get('transport')!r}", node=name, hint=f"use one of {', '.join(TRANSPORTS)}")
    return Directive(**d)


def load_options(path: str | Path | None = None, **overrides) -> Options:
    """Options from a TOML file (if given) with keyword overrides on top (None means: keep the file's)."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise MappingError(f"no such config file: {p}") from None
        except IsADirectoryError:
            raise MappingError(f"config {p} is a folder", hint="give a TOML file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise MappingError(f"{p} is not valid TOML: {e}") from None
    unknown = set(raw) - {"compile", "layers"}
    if unknown:
        raise MappingError(f"unknown config section(s) {', '.join(sorted(unknown))}", hint="use [compile] and [layers.NAME]")
    if not isinstance(raw.get("compile", {}), dict):
        raise MappingError("compile must be a table: [compile]")
    comp = dict(raw.get("compile", {}))
    bad = set(comp) - {"objective", "max_tiles", "target_interval", "batch"}
    if bad:
        raise MappingError(f"unknown [compile] key(s) {', '.join(sorted(bad))}",
                           hint="use objective, max_tiles, target_interval, batch")
    layers_raw = raw.get("layers", {})
    if not isinstance(layers_raw, dict):
        raise MappingError("[layers] must hold one table per layer, e.g. [layers.fc1]")
    layers = {name: directive(name, d) for name, d in layers_raw.items()}
    extra_layers = overrides.pop("layers", None) or {}
    for name, d in extra_layers.items():
        layers[name] = d if isinstance(d, Directive) else directive(name, d)
    comp.update({k: v for k, v in overrides.items() if v is not None})
    return Options(layers=layers, **comp)
