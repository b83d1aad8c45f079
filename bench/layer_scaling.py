"""Layer scaling, as in the AIE4ML paper's experiment: one dense layer split over 1, 2, 4, ... tiles up to
the whole device, then a chain of layers filling the device.

    .venv/bin/python bench/layer_scaling.py [--device ve2802] [--batch 8]

Weak scaling: every kernel keeps the same work (a K_TILE x N_TILE int8 block of weights), so a layer on
L x C tiles is (L * K_TILE) x (C * N_TILE). For each size it prints the tiles placed, whether the
independent checker passes the design, the predicted interval (cycles per graph iteration, from the
performance model, PLIO transfers included) and the efficiency against one kernel: (MACs per cycle of the design) / (tiles x MACs
per cycle of the one-tile design). The paper reports 296 of 304 tiles at 98.6%.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import aieflow
from aieflow.ir import Graph, Op, Tensor
from aieflow.mapping.check import violations
from aieflow.numerics import FixedType
from aieflow.report.perf import predict

K_TILE = 128
N_TILE = 128
T8 = FixedType(8, True, 0)


def _dense(name: str, x: str, y: str, k: int, n: int, rng) -> Op:
    return Op(name, "dense", (x,), (y,), {"relu": True, "shift": 8, "weight_type": T8},
              {"weight": rng.integers(-3, 4, (k, n)), "bias": rng.integers(-100, 100, n)})


def chain_graph(widths: list[int], seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    names = [f"t{i}" for i in range(len(widths))]
    tensors = {n: Tensor(n, (w,), T8) for n, w in zip(names, widths)}
    ops = tuple(_dense(f"fc{i}", names[i], names[i + 1], widths[i], widths[i + 1], rng) for i in range(len(widths) - 1))
    return Graph("scaling", tensors, ops, (names[0],), (names[-1],))


def run(graph: Graph, device: str, batch: int, directives: dict) -> tuple:
    start = time.perf_counter()
    d = aieflow.compile(graph, device=device, batch=batch, layers=directives)
    seconds = time.perf_counter() - start
    macs = sum(op.params["weight"].size for op in graph.ops) * batch
    return d, macs, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="ve2802")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    dev = aieflow.devices.get_device(args.device)
    shapes = [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4), (8, 8), (16, 8), (32, 8), (dev.columns, dev.rows)]
    shapes = [(l, c) for l, c in shapes if l <= dev.columns and c <= dev.rows]
    print(f"one dense layer, weak scaling ({K_TILE} x {N_TILE} int8 weights per kernel), {dev.name}, batch {args.batch}")
    print(f"{'cas_length x cas_num':>22} {'tiles':>6} {'legal':>6} {'interval':>9} {'MAC/cycle':>10} {'efficiency':>10} {'compile s':>9}")
    base = None
    for length, num in shapes:
        g = chain_graph([length * K_TILE, num * N_TILE])
        d, macs, seconds = run(g, args.device, args.batch, {"fc0": {"cas_length": length, "cas_num": num}})
        rate = macs / predict(d).interval_cycles
        base = base or rate
        eff = rate / (len(d.tiles) * base)
        print(f"{f'{length} x {num}':>22} {len(d.tiles):>6} {str(not violations(d)):>6} {predict(d).interval_cycles:>9} "
              f"{rate:>10.1f} {eff:>9.1%} {seconds:>9.2f}")

    # A chain of layers filling the device: full-width layers stacked in bands of rows need no free
    # column on their west side, so every tile can hold a kernel.
    rows_per_layer = 2 if dev.rows % 2 == 0 else 1
    layers = dev.rows // rows_per_layer
    width = dev.columns * 16  # input features: 16 per stage
    widths = [width] * (layers + 1)
    g = chain_graph(widths, seed=1)
    directives = {op.name: {"cas_length": dev.columns, "cas_num": rows_per_layer} for op in g.ops}
    d, macs, seconds = run(g, args.device, args.batch, directives)
    one = chain_graph([16, width // rows_per_layer])
    d1, macs1, _ = run(one, args.device, args.batch, {"fc0": {"cas_length": 1, "cas_num": 1}})
    eff = (macs / predict(d).interval_cycles) / (len(d.tiles) * macs1 / predict(d1).interval_cycles)
    print(f"\nchain of {layers} layers {width} wide, {dev.columns} x {rows_per_layer} tiles each: "
          f"{len(d.tiles)}/{dev.tiles} tiles, legal {not violations(d)}, interval {predict(d).interval_cycles} cycles, "
          f"efficiency {eff:.1%} against one {16} x {width // rows_per_layer} kernel, compiled in {seconds:.2f} s")


if __name__ == "__main__":
    main()
