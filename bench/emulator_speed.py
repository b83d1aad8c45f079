"""Fast emulator against onnxruntime: the 7 x 512 int8 QDQ MLP at batch 4096, bit-exact, in the same run.

    .venv/bin/python bench/emulator_speed.py [--samples 4096] [--repeat 7]

Both sides go from the same float32 inputs to float outputs: onnxruntime runs its QuantizeLinear, Gemm and
DequantizeLinear nodes; the emulator quantizes the input, runs the design's integers and dequantizes the
output. Each side is timed in blocks of --repeat runs, five rounds in turn (so a busy spell of the machine
slows both alike), with a pause between blocks; its best run gives samples/s, and the median is shown too. Two onnxruntime peers: graph optimizations disabled, as `run_onnxruntime` (the reference
the tests use) runs it, and its default optimizations (ORT_ENABLE_ALL), which fuse the QDQ pairs into
integer kernels. Both outputs are checked equal to the emulator's, bit for bit. Nothing in the environment
is changed: thread counts are whatever numpy's BLAS and onnxruntime pick by themselves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import aieflow
from aieflow.examples.onnx_qdq import qdq_mlp, sample_inputs
from aieflow.simulate import fast


# Each runner is timed in blocks of --repeat runs, ROUNDS times in turn, with a pause before each block:
# onnxruntime's worker threads keep spinning for a while after a run and, on a small machine, would slow
# whatever runs right after them.
ROUNDS = 5
PAUSE_S = 0.5


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=4, help="runs per block; the best run of each side is reported")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    import onnxruntime as ort

    model = qdq_mlp([512] * 8, seed=0, name="mlp7x512")
    design = aieflow.compile(model, device="ve2802")
    x = sample_inputs(model, args.samples, seed=0)
    sessions = {}
    for label, level in (("onnxruntime, optimizations off", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                         ("onnxruntime, default optimizations", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sessions[label] = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    runners = {label: (lambda s=s: s.run(None, {"x": x})[0]) for label, s in sessions.items()}
    where = "cuda" if args.device == "cuda" or (args.device == "auto" and fast.cuda_available()) else "cpu"
    emulator = f"aieflow fast emulator ({where})"
    runners[emulator] = lambda: fast.run(design, x, device=args.device)

    outputs = {label: fn() for label, fn in runners.items()}  # warm-up (and plan / cache building)
    times = {label: [] for label in runners}
    for _ in range(ROUNDS):
        for label, fn in runners.items():
            time.sleep(PAUSE_S)  # let the previous runner's worker threads stop spinning
            for _ in range(args.repeat):
                times[label].append(_timed(fn)[0])
    best = {label: min(ts) for label, ts in times.items()}
    median = {label: statistics.median(ts) for label, ts in times.items()}

    y = outputs[emulator]
    exact = {label: bool(np.array_equal(y, np.asarray(out, dtype=np.float64)))
             for label, out in outputs.items() if label != emulator}
    n = args.samples
    print(f"model: 7 x 512-wide int8 QDQ MLP, {n} samples; precisions: "
          f"{sorted(set(fast.precisions(design).values()))}; CPU cores: {os.cpu_count()}")
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    if coretype:
        print(f"note: OPENBLAS_CORETYPE={coretype} is set in the environment (left as it is)")
    print(f"{'runner':40s} {'best s':>9s} {'samples/s':>12s} {'median s':>9s}")
    for label in runners:
        print(f"{label:40s} {best[label]:9.4f} {n / best[label]:12.0f} {median[label]:9.4f}")
    for label in sessions:
        print(f"emulator / {label}: {best[label] / best[emulator]:.2f}x the samples/s "
              f"(medians: {median[label] / median[emulator]:.2f}x); bit-exact: {exact[label]}")
    if not all(exact.values()):
        raise SystemExit("the emulator's output differs from onnxruntime's")


if __name__ == "__main__":
    main()
