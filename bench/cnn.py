"""CNNs: compile time beside aie4ml, the fast emulator beside onnxruntime, and the MNIST ConvNet's cycle model.

    .venv/bin/python bench/cnn.py [--part compile|emulator|mnist|all] [--repeat N]

- compile: a ResNet-8-sized QDQ CNN (32x32x3 NCHW input, batch fixed at 1, identity-shortcut residual
  blocks at 16, 32 and 64 channels, about 80k parameters, power-of-two int8) written to a file and compiled
  from it, search included, in this process (best of N wall seconds; the target is under 3 s). The same file goes to aie4ml
  0.2.1 (its venv .venv-aie4ml, see bench/vs_aie4ml.py): its time and the ratio, or its error when it
  cannot compile the file.
- emulator: that CNN's design on 1024 images in the fast emulator and in onnxruntime (graph optimizations
  off, as the exactness reference runs it, and the default session), one run after the other, best of N,
  and the ratio; the outputs are compared.
- mnist: AMD's MNIST ConvNet tutorial network (conv 3x3x16, max-pool, conv 3x3x64, max-pool, conv 3x3x128,
  flatten, dense 10) in int8, compiled one layer per chain (resource objective, as the tutorial places one
  layer per tile) and with the search free to use the array (throughput objective): per-layer cycles, MACs
  and MAC load, and the predicted frames per second (docs/calibration.md compares them with the tutorial).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def resnet8_model(batch=None):
    from aieflow.examples.cnn import AddSpec, ConvSpec, DenseSpec, FlattenSpec, GlobalPoolSpec, qdq_cnn

    layers = [ConvSpec(16, 3, 1, "same", relu="relu"),                      # 0
              ConvSpec(16, 3, 1, "same", relu="relu"), ConvSpec(16, 3, 1, "same"),
              AddSpec(source=0, relu="relu"),                                # 3: block 16
              ConvSpec(32, 3, 2, "same", relu="relu"),                      # 4: down
              ConvSpec(32, 3, 1, "same", relu="relu"), ConvSpec(32, 3, 1, "same"),
              AddSpec(source=4, relu="relu"),                                # 7: block 32
              ConvSpec(64, 3, 2, "same", relu="relu"),                      # 8: down
              ConvSpec(64, 3, 1, "same", relu="relu"),
              AddSpec(source=8, relu="relu"),                                # 10: block 64 (one conv)
              GlobalPoolSpec("avg"), FlattenSpec(), DenseSpec(10)]
    return qdq_cnn(layers, (3, 32, 32), seed=0, name="resnet8")


def mnist_model():
    from aieflow.examples.cnn import ConvSpec, DenseSpec, FlattenSpec, PoolSpec, qdq_cnn

    layers = [ConvSpec(16, 3, 1, 0, relu="relu"), PoolSpec("max", 2, 2), ConvSpec(64, 3, 1, 0, relu="relu"),
              PoolSpec("max", 2, 2), ConvSpec(128, 3, 1, 0, relu="relu"), FlattenSpec(), DenseSpec(10)]
    return qdq_cnn(layers, (1, 28, 28), seed=0, name="mnist_convnet")


def params(model) -> int:
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(i).size for i in model.graph.initializer
               if numpy_helper.to_array(i).dtype in (np.int8, np.int16, np.int32) and numpy_helper.to_array(i).size > 1)


def part_compile(repeat: int) -> None:
    import aieflow

    model = resnet8_model()
    # One file for both tools: the batch axis fixed at 1, since aie4ml takes the batch from the input's
    # leading axis and refuses a symbolic one.
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with tempfile.TemporaryDirectory(prefix="bench_cnn_") as tmp:
        path = Path(tmp) / "resnet8.onnx"
        path.write_bytes(model.SerializeToString())
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            design = aieflow.compile(str(path), batch=1, objective="throughput")
            times.append(time.perf_counter() - t)
        print(f"ResNet-8-sized CNN ({params(model):,} weights and biases, 32x32x3, batch 1): aieflow compile "
              f"(search, placement, transport, checker, exactness) best {min(times):.2f} s, median "
              f"{statistics.median(times):.2f} s over {repeat}; {len(design.tiles)} tiles; exactness: "
              f"{'bit-exact' if design.exactness and design.exactness.exact else design.exactness}")
        peer = REPO / ".venv-aie4ml" / "bin" / "python"
        if not peer.exists():
            print("aie4ml: no .venv-aie4ml (make bench-aie4ml creates it); not compared")
            return
        t = time.perf_counter()
        proc = subprocess.run([str(peer), str(REPO / "bench" / "vs_aie4ml.py"), "--peer-worker", str(path),
                               str(Path(tmp) / "peer"), "throughput"], capture_output=True, text=True)
        peer_s = time.perf_counter() - t
        if proc.returncode != 0:
            last = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
            print(f"aie4ml 0.2.1 on the same file: fails after {peer_s:.1f} s: {last[-1] if last else proc.returncode}")
        else:
            theirs = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
            print(f"aie4ml 0.2.1 on the same file: {peer_s:.2f} s, {theirs['tiles_used']} tiles; "
                  f"ratio aie4ml/aieflow {peer_s / min(times):.1f}x")


def part_emulator(repeat: int) -> None:
    import onnxruntime as ort

    import aieflow
    from aieflow.examples.cnn import sample_cnn_inputs
    from aieflow.simulate import fast

    model = resnet8_model()
    design = aieflow.compile(model, batch=1, measure=False)
    x = sample_cnn_inputs(model, 1024, seed=1)
    raw = model.SerializeToString()
    sessions = {}
    for label, level in (("onnxruntime (optimizations off)", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                         ("onnxruntime (default session)", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sessions[label] = ort.InferenceSession(raw, opts, providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    fast.run(design, x[:8], device="cpu")  # plans and caches built outside the timing
    ours = []
    for _ in range(repeat):
        t = time.perf_counter()
        y = fast.run(design, x, device="cpu")
        ours.append(time.perf_counter() - t)
    print(f"fast emulator, 1024 images: best {min(ours) * 1e3:.0f} ms")
    for label, s in sessions.items():
        s.run(None, {name: x[:8]})
        theirs = []
        for _ in range(repeat):
            t = time.perf_counter()
            ref = s.run(None, {name: x})[0]
            theirs.append(time.perf_counter() - t)
        same = np.array_equal(np.asarray(ref, dtype=np.float64).reshape(y.shape), y)
        print(f"{label}: best {min(theirs) * 1e3:.0f} ms; emulator / onnxruntime time ratio "
              f"{min(ours) / min(theirs):.2f} (below 1: the emulator is faster); outputs equal: {same}")


def part_mnist() -> None:
    import aieflow
    from aieflow.report.perf import predict

    model = mnist_model()
    for objective in ("resource", "throughput"):
        design = aieflow.compile(model, batch=1, objective=objective, measure=False)
        p = predict(design)
        print(f"\nMNIST ConvNet int8, batch 1, objective {objective}: {p.tiles_used} tiles, interval "
              f"{p.interval_cycles:,} cycles, {p.samples_per_s:,.0f} frames/s at {p.clock_hz / 1e9:.2f} GHz, "
              f"latency {p.latency_us:.1f} us")
        print(f"  {'layer':<34} {'kind':<6} {'tiles':>5} {'cycles':>9} {'cycles/frame':>12} {'MACs/frame':>11} "
              f"{'MAC load':>8}")
        for lp in p.layers:
            print(f"  {lp.name[:34]:<34} {lp.kind:<6} {lp.tiles:>5} {lp.cycles:>9,} {lp.cycles // design.batch:>12,} "
                  f"{lp.macs // design.batch:>11,} {lp.mac_load:>8.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=("compile", "emulator", "mnist", "all"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.part in ("compile", "all"):
        part_compile(args.repeat)
    if args.part in ("emulator", "all"):
        part_emulator(args.repeat)
    if args.part in ("mnist", "all"):
        part_mnist()


if __name__ == "__main__":
    sys.exit(main())
