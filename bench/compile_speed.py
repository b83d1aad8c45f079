"""Compile speed and emulator speed on a 7-layer, 512-wide int8 MLP, against onnxruntime in the same run.

    make bench        (or: .venv/bin/python bench/compile_speed.py [--repeat N])

Peers: onnxruntime's session creation (its own "compile" of the same model) and its inference on the same
inputs. Ratios above 1 mean aieflow took longer. The issue's budget is a written project in under 5 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import aieflow
from aieflow.examples.onnx_qdq import qdq_mlp, sample_inputs


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--samples", type=int, default=256)
    args = ap.parse_args()
    import onnxruntime as ort

    model = qdq_mlp([512] * 8, seed=0, name="mlp7x512")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        path.write_bytes(model.SerializeToString())
        out = Path(tmp) / "project"
        compile_best, compile_med = _best(lambda: aieflow.compile(path, device="ve2802").write(out), args.repeat)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ort_best, _ = _best(lambda: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]),
                            args.repeat)
        design = aieflow.load(out)
        x = sample_inputs(model, args.samples, seed=0)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        sim_best, _ = _best(lambda: design.simulate(x), args.repeat)
        run_best, _ = _best(lambda: sess.run(None, {"x": x}), args.repeat)
    print(f"model: 7 x 512-wide int8 QDQ MLP, device ve2802, {design.summary()['tiles_used']} tiles")
    print(f"compile + write project  best {compile_best:.3f} s  median {compile_med:.3f} s  (budget 5 s)")
    print(f"onnxruntime session      best {ort_best:.3f} s   ratio aieflow/ort {compile_best / ort_best:.1f}")
    print(f"emulator, {args.samples} samples    best {sim_best:.3f} s")
    print(f"onnxruntime, same inputs best {run_best:.4f} s  ratio emulator/ort {sim_best / run_best:.1f}")


if __name__ == "__main__":
    main()
