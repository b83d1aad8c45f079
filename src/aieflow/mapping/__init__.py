"""Mapping: configurations (search.py), placement (place.py) and transport (transport.py) into a Design.

The three searches are run in turn. When placement finds no room for what the parallelism search chose,
the tile budget is lowered and the search runs again; when transport cannot wire a consumer's
configuration, that configuration is dropped from its options. The first search's result is kept as the
bound the final design is reported against.
"""

from __future__ import annotations

from ..design import BankBuffer, Design, KernelTile, Layer, SearchReport
from ..devices import Device
from ..errors import MappingError
from ..ir import Graph
from ..ops import family
from ..ops.base import kernel_id
from ..report.progress import progress
from . import search
from .directives import Options
from .place import Box, place
from .transport import Infeasible, plan

MAX_ATTEMPTS = 400


def map_design(graph: Graph, device: Device, batch: int, options: Options | None = None) -> Design:
    """Choose each op's configuration, place its kernels and plan the transport."""
    options = options or Options()
    unknown = set(options.layers) - {op.name for op in graph.ops}
    if unknown:
        names = ", ".join(op.name for op in graph.ops)
        raise MappingError(f"directives name unknown layer(s) {', '.join(sorted(unknown))}", hint=f"layers are: {names}")
    for op in graph.ops:
        family(op.kind).check_numerics(op, graph, device)
    opts = search.options(graph, device, batch, options.layers)
    budget = min(options.max_tiles or device.tiles, device.tiles)
    bound = _choose(graph, opts, budget, options)
    try:
        choice, boxes, wiring, attempt = _search_placement(graph, device, batch, opts, budget, options,
                                                           bound, reshape=False)
    except MappingError:
        # Lowering the budget cannot help when the objective fixes each op's tile count (a target interval)
        # or identical layers need another shape to pack: then steer shapes instead.
        choice, boxes, wiring, attempt = _search_placement(graph, device, batch, opts, budget, options,
                                                           bound, reshape=True)

    layers, tiles = [], []
    for op in graph.ops:
        cfg = choice.configs[op.name]
        layers.append(Layer(op, cfg, family(op.kind).pack(op, cfg)))
        tiles += _kernels(op.name, op.kind, cfg, boxes[op.name], device)
    report = SearchReport(options.objective, min(options.max_tiles or device.tiles, device.tiles),
                          bound.tiles, bound.interval, bound.latency, choice.tiles, choice.interval,
                          choice.latency, attempt)
    return Design(device, graph, batch, tuple(layers), tuple(tiles), wiring.memtile_buffers, wiring.plios,
                  wiring.links, report)


def _search_placement(graph: Graph, device: Device, batch: int, opts: dict, budget: int,
                      options: Options, choice: search.Choice, reshape: bool):
    """Place and wire the search's choice; when placement finds no room, either lower the tile budget
    (reshape=False) or rule out the failing shape, for every op that has it, and search again."""
    opts = {n: list(o) for n, o in opts.items()}
    live = opts
    for attempt in progress(range(1, MAX_ATTEMPTS + 1), None, "placing"):
        boxes, stuck = place(graph, choice.configs, device, options.layers)
        if boxes is None:
            try:
                if not reshape:
                    raise MappingError("lower the budget")
                shape = _shape(choice.configs[stuck])
                narrowed = {n: [o for o in live[n] if not (o.cfg == choice.configs[n] and _shape(o.cfg) == shape)]
                            for n in live}
                choice, live = _choose(graph, narrowed, budget, options), narrowed
            except MappingError:
                budget = choice.tiles - max(1, choice.tiles // 64)
                live = opts
                try:
                    choice = _choose(graph, live, budget, options)
                except MappingError:
                    raise MappingError(f"the layers do not fit on {device.name}'s {device.columns} x {device.rows} "
                                       "tiles in any configuration tried",
                                       hint="use a smaller batch, fewer tiles per layer or a larger device") from None
            continue
        try:
            wiring = plan(graph, choice.configs, boxes, device, batch, options.layers)
        except Infeasible as e:
            # A configuration that cannot be wired is dropped for good, whatever the budget.
            opts[e.op] = [o for o in opts[e.op] if o.cfg != choice.configs[e.op]]
            live = {**live, e.op: [o for o in live[e.op] if o.cfg != choice.configs[e.op]]}
            if not opts[e.op]:
                raise MappingError(f"no configuration can be wired: {e.reason}", node=e.op) from None
            choice = _choose(graph, live if live[e.op] else opts, budget, options)
            continue
        return choice, boxes, wiring, attempt
    raise MappingError(f"no legal mapping found in {MAX_ATTEMPTS} attempts")  # pragma: no cover


def _shape(cfg) -> tuple[int, int]:
    return (cfg.cas_length, cfg.cas_num)


def _choose(graph: Graph, opts: dict, budget: int, options: Options) -> search.Choice:
    best = search.choose(opts, budget, options.objective, options.target_interval)
    return search.prefer_direct(graph, opts, best, budget, options.objective, options.target_interval, options.layers)


def _kernels(name: str, kind: str, cfg, box: Box, device: Device) -> list[KernelTile]:
    fam = family(kind)
    out = []
    for chain in range(cfg.cas_num):
        for stage in range(cfg.cas_length):
            bufs = fam.tile_buffers(cfg, stage, device)
            banks = fam.bank_assignment(bufs, device)
            if banks is None:  # candidates() only proposes configurations whose buffers fit
                raise MappingError("kernel buffers do not fit the banks", node=name)
            out.append(KernelTile(name, chain, stage, box.col + stage, box.row + chain,
                                  tuple(BankBuffer(b, banks[b], size) for b, size in bufs)))
    return out


__all__ = ["map_design", "Options", "kernel_id"]
