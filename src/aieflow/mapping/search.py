"""Parallelism search: one configuration per op for the whole graph, under the user's objective.

Each op family proposes its legal configurations; each is reduced to (tiles, interval cycles, latency
cycles). The search is exact over that model:
- throughput: the smallest bottleneck interval whose cheapest configurations fit the tile budget (scan of
  the distinct intervals, each op taking its fewest-tile option at or under the threshold);
- latency: a multiple-choice knapsack (dynamic programming over the tile budget) minimising the summed
  latency of the ops, which is the critical path of a chain and an upper bound for other graphs;
- resource: each op's fewest tiles, under the target interval if one is given.
Placement may not fit what the search chose; the caller then lowers the budget and searches again, and
the report gives the bound the first search proved, so the gap is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..devices import Device
from ..errors import MappingError
from ..ir import Graph
from ..ops import family
from .directives import Directive


@dataclass(frozen=True)
class Option:
    cfg: object
    tiles: int
    interval: int
    latency: int


@dataclass(frozen=True)
class Choice:
    configs: dict  # op name -> config
    tiles: int
    interval: int  # cycles per graph iteration of the slowest kernel
    latency: int  # summed op latencies (critical path of a chain)


def options(graph: Graph, device: Device, batch: int, layers: dict[str, Directive]) -> dict[str, list[Option]]:
    """Every op's configurations that honour its directives, each op at the smallest padded batch it has
    configurations for (a dense layer pads the batch to its microtile's height; a convolution computes
    pixel blocks and takes the batch as it is). Memory-tile buffers between ops of different padded
    batches hold the writer's rows; a reader's extra rows arrive as zeros."""
    found = {}
    for op in graph.ops:
        fam = family(op.kind)
        d = layers.get(op.name, Directive())
        padded = _padded_batch(op, graph, device, batch)
        cands = [c for c in fam.candidates(op, graph, device, padded) if c.batch == padded]
        kept = [c for c in cands
                if (d.cas_length is None or c.cas_length == d.cas_length)
                and (d.cas_num is None or c.cas_num == d.cas_num)
                and (d.microtile is None or tuple(getattr(c, "microtile", ())) == d.microtile)]
        if not kept:
            raise MappingError(_no_option_message(cands, d), node=op.name,
                               hint="relax the directive or use a smaller batch")
        found[op.name] = _pareto([Option(c, c.tiles, fam.cycles(c, device), fam.latency(c, device)) for c in kept])
    return found


def _no_option_message(cands: list, d: Directive) -> str:
    if not cands:
        return "no configuration fits the device at this batch"
    asked = ", ".join(f"{k}={v}" for k, v in d.to_dict().items() if k in ("cas_length", "cas_num", "microtile"))
    same_length = [c for c in cands if d.cas_length is None or c.cas_length == d.cas_length]
    if d.cas_length is not None and same_length:
        legal = f"with cas_length={d.cas_length} the legal cas_num are {_ranges(sorted({c.cas_num for c in same_length}))}"
    else:
        legal = (f"legal cas_length: {_ranges(sorted({c.cas_length for c in cands}))}; "
                 f"cas_num: {_ranges(sorted({c.cas_num for c in cands}))}")
    return f"no legal configuration with {asked} ({legal}; buffers must fit their banks)"


def _ranges(values: list[int]) -> str:
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def _padded_batch(op, graph: Graph, device: Device, batch: int) -> int:
    """The smallest padding of the batch (microtile heights are powers of 2) at which the op has a
    configuration."""
    fam = family(op.kind)
    for padded in sorted({-(-batch // m) * m for m in (1, 2, 4, 8, 16)}):
        if any(c.batch == padded for c in fam.candidates(op, graph, device, padded)):
            return padded
    raise MappingError(
        f"no configuration fits {device.name} at batch {batch}: every split over at most "
        f"{device.columns} x {device.rows} tiles leaves a buffer larger than a "
        f"{device.generation.bank_bytes // 1024} KB bank", node=op.name,
        hint="use a smaller batch or a narrower layer")


def _pareto(opts: list[Option]) -> list[Option]:
    """Drop options another beats on tiles, interval and latency at once (ties keep the first)."""
    opts = sorted(opts, key=lambda o: (o.tiles, o.interval, o.latency))
    kept: list[Option] = []
    for o in opts:
        if not any(k.tiles <= o.tiles and k.interval <= o.interval and k.latency <= o.latency for k in kept):
            kept.append(o)
    return kept


def _total(pick: dict[str, Option]) -> Choice:
    return Choice({n: o.cfg for n, o in pick.items()}, sum(o.tiles for o in pick.values()),
                  max(o.interval for o in pick.values()), sum(o.latency for o in pick.values()))


def choose(opts: dict[str, list[Option]], budget: int, objective: str, target_interval: int | None) -> Choice:
    """The best configuration per op for `objective` within `budget` tiles (exact over the cost model)."""
    fewest = {n: min(o, key=lambda x: (x.tiles, x.interval, x.latency)) for n, o in opts.items()}
    if sum(o.tiles for o in fewest.values()) > budget:
        raise MappingError(f"the graph needs at least {sum(o.tiles for o in fewest.values())} tiles; "
                           f"the budget is {budget}", hint="raise --max-tiles, use a smaller batch or a larger device")
    if objective == "resource":
        if target_interval is None:
            return _total(fewest)
        pick = {}
        for n, o in opts.items():
            ok = [x for x in o if x.interval <= target_interval]
            if not ok:
                best = min(x.interval for x in o)
                raise MappingError(f"no configuration reaches an interval of {target_interval} cycles "
                                   f"(best {best})", node=n, hint="raise the target interval")
            pick[n] = min(ok, key=lambda x: (x.tiles, x.interval, x.latency))
        choice = _total(pick)
        if choice.tiles > budget:
            raise MappingError(f"meeting an interval of {target_interval} cycles needs {choice.tiles} tiles; "
                               f"the budget is {budget}")
        return choice
    if objective == "throughput":
        for threshold in sorted({x.interval for o in opts.values() for x in o}):
            pick = {}
            for n, o in opts.items():
                ok = [x for x in o if x.interval <= threshold]
                if not ok:
                    break
                pick[n] = min(ok, key=lambda x: (x.tiles, x.latency))
            else:
                if sum(x.tiles for x in pick.values()) <= budget:
                    return _total(pick)
        return _total(fewest)  # pragma: no cover - the fewest-tile pick always fits at its own bottleneck
    return _latency_knapsack(opts, budget)


def _latency_knapsack(opts: dict[str, list[Option]], budget: int) -> Choice:
    """Minimum summed latency within `budget` tiles: DP over ops x tiles (options are Pareto-pruned)."""
    inf = float("inf")
    best = [0.0] + [inf] * budget  # best[t]: least latency using exactly t tiles so far
    back: list[list[tuple[int, int] | None]] = []
    for n, o in opts.items():
        nxt = [inf] * (budget + 1)
        arg: list[tuple[int, int] | None] = [None] * (budget + 1)
        for t, lat in enumerate(best):
            if lat == inf:
                continue
            for i, x in enumerate(o):
                u = t + x.tiles
                if u <= budget and lat + x.latency < nxt[u]:
                    nxt[u], arg[u] = lat + x.latency, (t, i)
        best = nxt
        back.append(arg)
    t = min(range(budget + 1), key=lambda u: (best[u], u))
    picks = {}
    for (n, o), arg in zip(reversed(list(opts.items())), reversed(back)):
        prev, i = arg[t]
        picks[n] = o[i]
        t = prev
    return _total({n: picks[n] for n in opts})


def prefer_direct(graph: Graph, opts: dict[str, list[Option]], choice: Choice, budget: int, objective: str,
                  target_interval: int | None, layers: dict[str, Directive]) -> Choice:
    """Swap a consumer to an option whose input slices are exactly its producer's output slices, so the
    data can pass directly instead of through a memory tile, when that costs the objective nothing."""
    producer = {t: op for op in graph.ops for t in op.outputs}
    picked = {n: next(o for o in opts[n] if o.cfg == c) for n, c in choice.configs.items()}
    for op in graph.ops:
        if layers.get(op.name, Directive()).transport == "memtile":
            continue
        for port, tensor in enumerate(op.inputs):
            prod = producer.get(tensor)
            if prod is None:
                continue
            out = [s.layout for s in family(prod.kind).output_slices(prod, picked[prod.name].cfg)]
            fam = family(op.kind)
            if [s.layout for s in fam.input_slices(op, picked[op.name].cfg, port)] == out:
                continue
            cur = picked[op.name]
            total = _total(picked)
            ok = []
            for o in opts[op.name]:
                if [s.layout for s in fam.input_slices(op, o.cfg, port)] != out:
                    continue
                if total.tiles - cur.tiles + o.tiles > budget:
                    continue
                if objective == "throughput" and o.interval > total.interval:
                    continue
                if objective == "latency" and o.latency > cur.latency:
                    continue
                if objective == "resource" and (o.tiles > cur.tiles or (target_interval and o.interval > target_interval)):
                    continue
                ok.append(o)
            if ok:
                picked[op.name] = min(ok, key=lambda x: (x.tiles, x.interval, x.latency))
    return _total(picked)
