"""The device catalog (catalog.toml beside this file) read into frozen dataclasses.

Code asks a Device questions instead of carrying hardware numbers of its own.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources

from ..errors import DeviceError


@dataclass(frozen=True)
class Precision:
    key: str  # "<activation bits>x<weight bits>"
    macs_per_cycle: int
    accumulator_bits: int
    microtiles: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class Generation:
    key: str
    name: str
    arch: str
    data_memory_bytes: int
    banks: int
    bank_bytes: int
    program_memory_bytes: int
    neighbour_memory: tuple[str, ...]
    cascade_bits: int
    cascade_horizontal: str
    cascade_vertical: str
    core_stream_in: int
    core_stream_out: int
    core_stream_bits: int
    vector_load_bits: int
    vector_loads_per_cycle: int
    vector_store_bits: int
    tile_dma_s2mm: int
    tile_dma_mm2s: int
    tile_dma_bds: int
    tile_dma_dims: int
    stack_bytes: int
    heap_bytes: int
    word_bytes: int
    kernel_call_cycles: int
    block_overhead_cycles: int
    cascade_hop_cycles: int
    memtile_bytes: int
    memtile_banks: int
    memtile_s2mm: int
    memtile_mm2s: int
    memtile_bds: int
    memtile_dims: int
    memtile_neighbours: tuple[str, ...]
    shim_s2mm: int
    shim_mm2s: int
    shim_bytes_per_cycle: int
    rounding_modes: tuple[str, ...]
    saturation_modes: tuple[str, ...]
    precisions: dict[str, Precision]

    def precision(self, act_bits: int, weight_bits: int, node: str | None = None) -> Precision:
        key = f"{act_bits}x{weight_bits}"
        if key not in self.precisions:
            raise DeviceError(
                f"{self.name} has no {act_bits}-bit x {weight_bits}-bit matrix multiply",
                node=node, hint=f"use one of {', '.join(sorted(self.precisions))} (activation x weight bits)")
        return self.precisions[key]


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    board: str
    generation: Generation
    aliases: tuple[str, ...]
    columns: int
    rows: int
    memtile_rows: int
    clock_hz: float
    platform: str
    plio_bits: int
    plio_hz: float
    plio_first_column: int
    plio_inputs: int
    plio_outputs: int

    @property
    def tiles(self) -> int:
        return self.columns * self.rows

    @property
    def memtiles(self) -> int:
        return self.columns * self.memtile_rows

    def peak_ops_per_second(self, precision: str = "8x8") -> float:
        return self.tiles * self.generation.precisions[precision].macs_per_cycle * 2 * self.clock_hz


def _build(cls, key: str, raw: dict, **extra):
    names = {f.name for f in fields(cls)}
    missing = names - set(raw) - set(extra) - {"key"}
    if missing:
        raise DeviceError(f"catalog entry '{key}' lacks {', '.join(sorted(missing))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names}
    return cls(key=key, **values, **extra)


@lru_cache(maxsize=1)
def catalog() -> dict[str, Device]:
    """Every part in the catalog by its key."""
    text = resources.files(__package__).joinpath("catalog.toml").read_text()
    data = tomllib.loads(text)
    generations = {}
    for key, raw in data["generations"].items():
        precisions = {
            p: Precision(p, v["macs_per_cycle"], v["accumulator_bits"], tuple(tuple(m) for m in v["microtiles"]))
            for p, v in raw["precisions"].items()
        }
        generations[key] = _build(Generation, key, {k: v for k, v in raw.items() if k != "precisions"},
                                  precisions=precisions)
    parts = {}
    for key, raw in data["parts"].items():
        gen = generations[raw["generation"]]
        parts[key] = _build(Device, key, {k: v for k, v in raw.items() if k != "generation"}, generation=gen)
    return parts


def get_device(name: str) -> Device:
    """A part by its key, its name or an alias, case-insensitive: 've2802', 'XCVE2802', 'vek280'."""
    known = ", ".join(f"{d.aliases[0]} ({d.name})" for d in catalog().values())
    if not isinstance(name, str) or not name.strip():
        raise DeviceError(f"no device given ({name!r})", hint=f"choose one of {known}")
    wanted = name.strip().lower()
    for key, dev in catalog().items():
        if wanted in (key, dev.name.lower(), dev.board.lower() or None, *dev.aliases):
            return dev
    raise DeviceError(f"unknown device '{name}'", hint=f"choose one of {known}")
