"""Compile time against model size: a grid of int8 QDQ MLPs, depth x width, with onnxruntime in the same run.

    .venv/bin/python bench/compile_scaling.py [--depths 1,4,16,64] [--widths 64,256,1024,2048] [--repeat 3]

Each model is `qdq_mlp([width] * (depth + 1))`, written to an ONNX file in a temporary folder. aieflow's time
is `aieflow.compile(file, device=...)` then `.write(project)` into that folder (in process, best of
--repeat); the peer is onnxruntime's session creation on the same file (graph optimizations off, as
`run_onnxruntime` runs it; best of --repeat), its own "compile" of the model. Designs that cannot fit the
device print "does not fit": a model whose int8 weights exceed one data-memory bank per tile (a kernel's
weights sit whole in one bank) is not even built, and a MappingError from compile is caught. The growth
rate is the slope of log time against log size (weights), fitted over the models that fit: 1 means linear
in the model. Most of the script's minute or so goes to building the larger models (examples.onnx_qdq.qdq_mlp
calibrates every layer), which is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import aieflow
from aieflow.devices import get_device
from aieflow.errors import MappingError
from aieflow.examples.onnx_qdq import qdq_mlp


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _slope(sizes: list[int], times: list[float]) -> float:
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="1,4,16,64")
    ap.add_argument("--widths", default="64,256,1024,2048")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="ve2802")
    args = ap.parse_args()
    import onnxruntime as ort

    depths = [int(d) for d in args.depths.split(",")]
    widths = [int(w) for w in args.widths.split(",")]
    dev = get_device(args.device)
    # A kernel's weights sit whole in one bank, so int8 weights beyond one bank per tile can never fit.
    weight_room = dev.tiles * dev.generation.bank_bytes
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    rows = []
    failed = 0
    print(f"device {dev.name}: {dev.tiles} tiles, one {dev.generation.bank_bytes // 1024} KiB bank each for weights "
          f"({weight_room / 2**20:.2f} MiB)")
    print(f"{'depth':>5s} {'width':>6s} {'weights':>10s} {'tiles':>6s} {'aieflow s':>10s} {'ort s':>8s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for depth in depths:
            for width in widths:
                weights = depth * width * width
                label = f"{depth:5d} {width:6d} {weights:10d}"
                if weights > weight_room:
                    print(f"{label}  does not fit (int8 weights {weights / 2**20:.1f} MiB > one bank per tile)")
                    continue
                model = qdq_mlp([width] * (depth + 1), seed=0, name=f"mlp{depth}x{width}")
                path = Path(tmp) / f"mlp{depth}x{width}.onnx"
                path.write_bytes(model.SerializeToString())
                out = Path(tmp) / "project"
                try:
                    design = aieflow.compile(path, device=args.device)
                except MappingError as e:
                    print(f"{label}  does not fit ({e.reason[:60]})")
                    continue
                try:
                    t_aie = _best(lambda: aieflow.compile(path, device=args.device).write(out), args.repeat)
                except Exception as e:  # a failure is reported per model; the grid goes on, the exit is non-zero
                    print(f"{label}  FAILED: {type(e).__name__}: {str(e)[:100]}")
                    failed += 1
                    continue
                t_ort = _best(lambda: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]),
                              args.repeat)
                tiles = design.summary()["tiles_used"]
                rows.append((depth, width, weights, t_aie, t_ort))
                print(f"{label} {tiles:6d} {t_aie:10.3f} {t_ort:8.3f} {t_aie / t_ort:6.1f}")
    if not rows:
        raise SystemExit("no model of the grid fits the device")
    if failed:
        print(f"{failed} models failed to compile or write")
    sizes = [r[2] for r in rows]
    print(f"growth, log time vs log weights over {len(rows)} models that fit: "
          f"aieflow {_slope(sizes, [r[3] for r in rows]):.2f}, onnxruntime {_slope(sizes, [r[4] for r in rows]):.2f}")
    by_depth = {}
    for d, w, n, t, _ in rows:
        by_depth.setdefault(w, []).append((d, t))
    for w, pts in sorted(by_depth.items()):
        if len(pts) >= 2:
            print(f"  width {w}: aieflow time vs depth slope {_slope([d for d, _ in pts], [t for _, t in pts]):.2f}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
