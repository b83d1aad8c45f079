"""Placement search: where each op's block of kernels sits on the compute tiles.

An op with cas_num chains of cas_length kernels is a box cas_length wide and cas_num high: each chain in
one row with its cascade running left to right (AIE-ML and AIE-MLv2 cascade eastwards in every row), the
chains in consecutive rows. The column west of a box stays free of kernels, so the tools may place the
first kernels' input buffers in the west neighbour's banks (a core reaches its west neighbour's memory).

Ops are placed in graph order, pinned ones first; each unpinned op takes the free position with the least
cost (ties: lowest row, then lowest column), where the cost is the AIE4ML wire-length objective (Eq. 2)
extended to graphs and to the array's edges:
  sum over its producers of |col - producer's east face| + LAMBDA * |row - producer's row|
  + MU * (row + height)                         (low rows are next to the memory tiles)
  + NU * |col - first PL column|               (only for ops fed by a graph input)
The result is deterministic; when some op finds no room, place() names it, and the caller asks the
parallelism search for another shape for it, or for smaller configurations.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..devices import Device
from ..errors import MappingError
from ..ir import Graph
from .directives import Directive

LAMBDA = 1.0  # the AIE4ML reference's values
MU = 0.05
NU = 0.1


@dataclass(frozen=True)
class Box:
    op: str
    col: int
    row: int
    width: int  # cas_length
    height: int  # cas_num

    def cells(self) -> list[tuple[int, int]]:
        return [(self.col + dc, self.row + dr) for dr in range(self.height) for dc in range(self.width)]

    def west(self) -> list[tuple[int, int]]:
        return [(self.col - 1, self.row + dr) for dr in range(self.height)] if self.col > 0 else []


class _Grid:
    def __init__(self, device: Device):
        self.device = device
        self.used: set[tuple[int, int]] = set()
        self.kept_free: set[tuple[int, int]] = set()

    def fits(self, box: Box) -> bool:
        if box.col < 0 or box.row < 0 or box.col + box.width > self.device.columns:
            return False
        if box.row + box.height > self.device.rows:
            return False
        cells = box.cells()
        if any(c in self.used or c in self.kept_free for c in cells):
            return False
        return not any(c in self.used for c in box.west())

    def take(self, box: Box) -> None:
        self.used.update(box.cells())
        self.kept_free.update(box.west())


def place(graph: Graph, configs: dict, device: Device,
          layers: dict[str, Directive]) -> tuple[dict[str, Box] | None, str | None]:
    """A box per op (see the module docstring); or (None, the op that found no room)."""
    grid = _Grid(device)
    boxes: dict[str, Box] = {}
    producer_of = {t: op.name for op in graph.ops for t in op.outputs}
    for op in graph.ops:
        d = layers.get(op.name)
        if d is not None and d.pinned:
            cfg = configs[op.name]
            box = Box(op.name, d.col, d.row, cfg.cas_length, cfg.cas_num)
            if not grid.fits(box):
                raise MappingError(
                    f"cannot pin {cfg.cas_num} x {cfg.cas_length} kernels at col {d.col}, row {d.row}: "
                    + _why(grid, box), node=op.name, hint="choose another col/row or a smaller configuration")
            grid.take(box)
            boxes[op.name] = box
    for op in graph.ops:
        if op.name in boxes:
            continue
        cfg = configs[op.name]
        producers = [boxes[producer_of[t]] for t in op.inputs if t in producer_of and producer_of[t] in boxes]
        fed_by_input = any(t in graph.inputs for t in op.inputs)
        best = None
        for row in range(device.rows - cfg.cas_num + 1):
            for col in range(device.columns - cfg.cas_length + 1):
                box = Box(op.name, col, row, cfg.cas_length, cfg.cas_num)
                if not grid.fits(box):
                    continue
                cost = MU * (row + cfg.cas_num)
                for p in producers:
                    cost += abs(col - (p.col + p.width)) + LAMBDA * abs(row - p.row)
                if fed_by_input:
                    cost += NU * abs(col - device.plio_first_column)
                key = (cost, row, col)
                if best is None or key < best[0]:
                    best = (key, box)
        if best is None:
            return None, op.name
        grid.take(best[1])
        boxes[op.name] = best[1]
    return boxes, None


def _why(grid: _Grid, box: Box) -> str:
    dev = grid.device
    if box.col + box.width > dev.columns or box.row + box.height > dev.rows:
        return f"it would reach col {box.col + box.width - 1}, row {box.row + box.height - 1} of a {dev.columns} x {dev.rows} array"
    taken = [c for c in box.cells() if c in grid.used]
    if taken:
        return f"tile {taken[0]} is taken"
    if any(c in grid.kept_free for c in box.cells()):
        return "it covers the column another layer keeps free on its west side"
    return "its west column holds another layer's kernels"
