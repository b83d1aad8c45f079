"""Predicted performance of a Design: per-layer cycles, the pipeline's interval and latency, throughput.

The per-kernel cycle terms come from each op family (`cycle_terms`); the design-level numbers are:
- interval: cycles per graph iteration of the slowest stage (a layer's kernels run in parallel; layers
  run as a pipeline, each on its own tiles), including the PLIO transfers of the graph's input and output;
- latency: the critical path through the graph for one iteration (every layer's latency along the path,
  plus the transfers on it);
- samples/s = batch x clock / interval; TOPS = 2 x MACs per iteration / interval x clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..design import Design
from ..ops import family


@dataclass(frozen=True)
class LayerPerf:
    name: str
    kind: str
    tiles: int
    macs: int  # multiply-accumulates per graph iteration (real, unpadded work)
    cycles: int  # cycles per graph iteration of the layer's slowest kernel
    latency_cycles: int  # first input word to last output word of one iteration
    terms: dict[str, int]  # what the cycles are made of, largest term first
    bound: str  # the term that sets `cycles`
    # MACs over what the layer's tiles could do in its cycles at the catalog's rate for its operand types
    # (AMD's tutorials call it the vector load); 0 for a layer that counts no MACs.
    mac_load: float = 0.0


@dataclass(frozen=True)
class Performance:
    device: str
    clock_hz: float
    batch: int
    interval_cycles: int
    latency_cycles: int
    latency_us: float
    samples_per_s: float
    tops: float
    peak_tops: float
    peak_fraction: float
    bottleneck: str  # the layer (or PLIO) whose cycles set the interval
    bottleneck_term: str
    tiles_used: int
    tiles_total: int
    memtiles_used: int
    memtile_buffers: int
    layers: tuple[LayerPerf, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [asdict(l) for l in self.layers]
        return d


def _plio_cycles(design: Design) -> dict[str, int]:
    """AIE cycles to move one iteration through each PLIO (its width at the PL clock)."""
    dev = design.device
    out = {}
    for p in design.plios:
        bits = design.graph.tensors[p.tensor].type.storage_bits * p.elements
        words = -(-bits // p.bits)
        out[p.name] = int(-(-words * dev.clock_hz // dev.plio_hz))
    return out


def predict(design: Design) -> Performance:
    dev = design.device
    layers = []
    for layer in design.layers:
        fam = family(layer.op.kind)
        terms = fam.cycle_terms(layer.config, dev)
        cycles = fam.cycles(layer.config, dev)
        compute = {t: v for t, v in terms.items() if not t.startswith("stream")}
        streams = {t: v for t, v in terms.items() if t.startswith("stream")}
        slowest_stream = max(streams, key=streams.get, default=None)
        if slowest_stream is not None and streams[slowest_stream] > sum(compute.values()):
            bound = slowest_stream
        else:
            bound = max(compute, key=compute.get)
        macs = fam.macs(layer.op, design.graph, design.batch)
        layers.append(LayerPerf(layer.op.name, layer.op.kind, layer.config.tiles, macs, cycles,
                                fam.latency(layer.config, dev), dict(sorted(terms.items(), key=lambda kv: -kv[1])),
                                bound, _mac_load(layer, macs, cycles, dev)))
    plio = _plio_cycles(design)
    stages = [(l.cycles, l.name, l.bound) for l in layers] + [(c, f"PLIO {n}", "plio") for n, c in plio.items()]
    interval, bottleneck, term = max(stages)
    latency = _critical_path(design, {l.name: l.latency_cycles for l in layers}, plio)
    macs = sum(l.macs for l in layers)
    ops_per_s = 2 * macs * dev.clock_hz / interval
    peak = dev.peak_ops_per_second("8x8")
    return Performance(
        device=dev.name, clock_hz=dev.clock_hz, batch=design.batch, interval_cycles=interval,
        latency_cycles=latency, latency_us=latency / dev.clock_hz * 1e6,
        samples_per_s=design.batch * dev.clock_hz / interval, tops=ops_per_s / 1e12, peak_tops=peak / 1e12,
        peak_fraction=ops_per_s / peak, bottleneck=bottleneck, bottleneck_term=term,
        tiles_used=len(design.tiles), tiles_total=dev.tiles,
        memtiles_used=len({(b.col, b.row) for b in design.memtile_buffers}),
        memtile_buffers=len(design.memtile_buffers), layers=tuple(layers))


def _mac_load(layer, macs: int, cycles: int, dev) -> float:
    """macs / (cycles x tiles x MACs a cycle), at the rate of the layer's operand types where its config
    names them (act_bits, weight_bits), else the int8 rate."""
    cfg = layer.config
    key = f"{getattr(cfg, 'act_bits', 8)}x{getattr(cfg, 'weight_bits', 8)}"
    prec = dev.generation.precisions.get(key) or dev.generation.precisions["8x8"]
    capacity = cycles * cfg.tiles * prec.macs_per_cycle
    return macs / capacity if capacity else 0.0


def _critical_path(design: Design, layer_latency: dict[str, int], plio: dict[str, int]) -> int:
    """Longest path, in cycles, from the input PLIO through the layers to an output PLIO."""
    g = design.graph
    ready = {t: max((c for n, c in plio.items() if n.startswith("in_")), default=0) for t in g.inputs}
    for op in g.ops:
        start = max(ready.get(t, 0) for t in op.inputs)
        for t in op.outputs:
            ready[t] = start + layer_latency[op.name]
    return max(ready[t] for t in g.outputs) + max((c for n, c in plio.items() if n.startswith("out_")), default=0)
