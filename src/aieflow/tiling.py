"""DMA access patterns (ADF `adf::tiling_parameters`) and their exact numpy meaning.

The emitter writes these descriptors into the graph; the emulator moves data with `read_tiles` and
`write_tiles`, so both follow the same descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Traversal:
    dimension: int  # which buffer dimension the tile steps along
    stride: int  # elements stepped each time
    wrap: int  # how many steps


@dataclass(frozen=True)
class Tiling:
    """One DMA access of an N-d buffer; dimension 0 is the fastest-varying (ADF convention).

    Tiles of `tiling_dimension` start at `offset` and step by `traversal`, first entry innermost.
    Reads outside `boundary_dimension` (default: the buffer) give zeros: the memory tiles' zero padding.
    """

    buffer_dimension: tuple[int, ...]
    tiling_dimension: tuple[int, ...]
    offset: tuple[int, ...]
    traversal: tuple[Traversal, ...]
    boundary_dimension: tuple[int, ...] | None = None

    @property
    def elements(self) -> int:
        n = int(np.prod(self.tiling_dimension))
        for t in self.traversal:
            n *= t.wrap
        return n

    def to_dict(self) -> dict:
        d = {
            "buffer_dimension": list(self.buffer_dimension),
            "tiling_dimension": list(self.tiling_dimension),
            "offset": list(self.offset),
            "tile_traversal": [{"dimension": t.dimension, "stride": t.stride, "wrap": t.wrap} for t in self.traversal],
        }
        if self.boundary_dimension is not None:
            d["boundary_dimension"] = list(self.boundary_dimension)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Tiling":
        return cls(
            tuple(d["buffer_dimension"]),
            tuple(d["tiling_dimension"]),
            tuple(d["offset"]),
            tuple(Traversal(t["dimension"], t["stride"], t["wrap"]) for t in d["tile_traversal"]),
            tuple(d["boundary_dimension"]) if "boundary_dimension" in d else None,
        )


@lru_cache(maxsize=256)
def _indices(t: Tiling) -> tuple[np.ndarray, np.ndarray]:
    """Multi-indices (one row per element, in stream order) and whether each lies inside the boundary."""
    nd = len(t.buffer_dimension)
    # Element order inside one tile: dimension 0 fastest.
    grids = np.meshgrid(*[np.arange(n) for n in reversed(t.tiling_dimension)], indexing="ij")
    in_tile = np.stack([g.ravel() for g in reversed(grids)], axis=1)  # (tile_elems, nd)
    starts = [np.array(t.offset, dtype=np.int64)]
    for step in t.traversal:  # innermost first
        grown = []
        for w in range(step.wrap):
            for s in starts:
                moved = s.copy()
                moved[step.dimension] += w * step.stride
                grown.append(moved)
        # The new step is outer: all earlier starts for w=0, then for w=1, ...
        starts = grown
    origins = np.stack(starts)  # (tiles, nd)
    idx = (origins[:, None, :] + in_tile[None, :, :]).reshape(-1, nd)
    bound = np.array(t.boundary_dimension or t.buffer_dimension)
    inside = np.all((idx >= 0) & (idx < bound), axis=1)
    return idx, inside


def _flat(idx: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    flat = np.zeros(len(idx), dtype=np.int64)
    stride = 1
    for d, n in enumerate(dims):
        flat += idx[:, d] * stride
        stride *= n
    return flat


@lru_cache(maxsize=256)
def _addresses(t: Tiling) -> tuple[np.ndarray, np.ndarray]:
    """Flat buffer addresses of the in-boundary elements, and where they sit in the stream."""
    idx, inside = _indices(t)
    return _flat(idx[inside], t.buffer_dimension), np.flatnonzero(inside)


def address_map(t: Tiling) -> np.ndarray:
    """The flat buffer address of every stream position of this access, -1 outside the boundary
    (for code outside Python, such as the host harness, that applies the same descriptor)."""
    addr, where = _addresses(t)
    out = np.full(t.elements, -1, dtype=np.int64)
    out[where] = addr
    return out


def read_tiles(buffer: np.ndarray, t: Tiling) -> np.ndarray:
    """The 1-D stream an MM2S channel sends for this access; `buffer` is flat in dimension-0-fastest order."""
    addr, where = _addresses(t)
    out = np.zeros(t.elements, dtype=buffer.dtype)
    out[where] = buffer[addr]
    return out


def write_tiles(buffer: np.ndarray, t: Tiling, stream: np.ndarray) -> None:
    """Store a stream into a flat buffer as an S2MM channel with this access would (outside: dropped)."""
    addr, where = _addresses(t)
    if len(stream) != t.elements:
        raise ValueError(f"stream of {len(stream)} elements for an access of {t.elements}")
    buffer[addr] = stream[where]
