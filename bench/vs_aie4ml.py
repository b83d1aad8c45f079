"""aieflow against aie4ml 0.2.1 (the published AIE4ML compiler) on one ONNX file: wall time and tiles used.

    .venv/bin/python bench/vs_aie4ml.py [--model FILE.onnx] [--repeat N] [--objective throughput]

Both tools are timed as subprocesses starting from the same file on disk, best of N wall-clock seconds:
- aieflow: `aieflow compile MODEL -o DIR --json --batch B --objective OBJ` (the main venv's CLI);
- aie4ml: `aie4ml.from_onnx(MODEL, ...)` then its pipeline (the design search `ChooseParallelism` and the
  placement) and its project write, in its own venv (.venv-aie4ml). It needs no AMD tools for this; its
  Vitis steps (`build`, `predict`) are never called.
Without --model the script writes the 7-layer, 512-wide int8 QDQ MLP `qdq_mlp([512] * 8, seed=0, batch=B)`.
aie4ml refuses a dynamic batch axis (it takes the batch from the input's leading axis), so the model's batch
is fixed, and aieflow is given the same batch.

Tiles used, for both: AIE compute tiles holding kernels (memory tiles and interface tiles not counted).
aieflow's is `tiles_used` from its JSON; aie4ml's is the sum of width x height over the placements in the
project it wrote (aie_pipeline.json), checked against its search's own count.

The peer's venv (not a dependency of aieflow; nothing here is imported from it):
    python3 -m venv .venv-aie4ml && .venv-aie4ml/bin/pip install "aie4ml[onnx]==0.2.1"
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = REPO / ".venv-aie4ml"
PEER_VERSION = "0.2.1"
PEER_INSTALL = f'python3 -m venv .venv-aie4ml && .venv-aie4ml/bin/pip install "aie4ml[onnx]=={PEER_VERSION}"'
PEER_PART = "xilinx_vek280_base"  # aie4ml's name for the VEK280 board (XCVE2802); aieflow's is ve2802


def peer_worker(model: str, out: str, optimize: str) -> None:
    """Runs inside the aie4ml venv: import, search + place, write; prints one JSON line last."""
    t0 = time.perf_counter()
    import aie4ml
    from aie4ml.writer import AIEProjectEmitter

    t1 = time.perf_counter()
    config = {"Part": PEER_PART, "AIEConfig": {"Optimize": optimize, "Iterations": 8}}
    design = aie4ml.from_onnx(model, config, output_dir=out)
    t2 = time.perf_counter()
    design.run_pipeline()  # ChooseParallelism (the search), resolution, placement, memory plan
    t3 = time.perf_counter()
    AIEProjectEmitter().emit(design.context)  # the project write; run_pipeline + this is AIEModel.write()
    t4 = time.perf_counter()
    written = json.loads((Path(out) / "aie_pipeline.json").read_text())
    placed = written["physical"]["placements"].values()
    tiles = sum(p["width"] * p["height"] for p in placed)
    searched = written["optimizer"]["tiles"]
    if tiles != searched:
        raise SystemExit(f"aie4ml placed {tiles} tiles but its search counted {searched}")
    print(json.dumps({
        "version": aie4ml.__version__, "tiles_used": tiles, "mode": written["optimizer"]["mode"],
        "parallelism": written["optimizer"]["parallelism"],
        "seconds": {"import": t1 - t0, "load": t2 - t1, "search_place": t3 - t2, "write": t4 - t3},
    }))


def run_timed(cmd: list[str], repeat: int, out_root: Path, label: str) -> tuple[list[float], dict]:
    """Best-of-N subprocess wall times (a fresh output folder each run) and the last run's JSON line."""
    times, result = [], {}
    for i in range(repeat):
        out = out_root / f"{label}{i}"
        full = [str(out) if part == "{out}" else part for part in cmd]
        t = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"{label} failed (exit {proc.returncode}): {' '.join(full)}\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1])
        shutil.rmtree(out, ignore_errors=True)
        print(f"  {label} run {i + 1}/{repeat}: {times[-1]:.2f} s, {result['tiles_used']} tiles", flush=True)
    return times, result


def fixed_batch(path: Path) -> int:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].HasField("dim_value"):
        sys.exit(f"{path}: the input's batch axis is dynamic; aie4ml needs it fixed (re-export with a fixed batch)")
    return int(dims[0].dim_value)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--peer-worker":
        return peer_worker(*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX file (default: write the 7 x 512 int8 MLP)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is reported (default 3)")
    ap.add_argument("--objective", default="throughput", help="aieflow --objective and aie4ml Optimize")
    ap.add_argument("--batch", type=int, default=8, help="batch of the written model (default 8)")
    ap.add_argument("--peer-venv", type=Path, default=PEER_VENV)
    args = ap.parse_args()

    peer_python = args.peer_venv / "bin" / "python"
    if not peer_python.exists():
        sys.exit(f"no aie4ml venv at {args.peer_venv}; create it from the repository root with:\n    {PEER_INSTALL}")
    probe = subprocess.run([str(peer_python), "-c", "import aie4ml; print(aie4ml.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"{peer_python} cannot import aie4ml; (re)create the venv with:\n    {PEER_INSTALL}\n{probe.stderr}")
    if probe.stdout.strip() != PEER_VERSION:
        print(f"note: aie4ml {probe.stdout.strip()} installed; this comparison is written for {PEER_VERSION}")

    aieflow = Path(sys.executable).parent / "aieflow"
    with tempfile.TemporaryDirectory(prefix="vs_aie4ml_") as tmp:
        tmp = Path(tmp)
        if args.model is None:
            from aieflow.examples.onnx_qdq import qdq_mlp

            model = tmp / f"mlp7x512_b{args.batch}.onnx"
            model.write_bytes(qdq_mlp([512] * 8, seed=0, batch=args.batch, name="mlp7x512").SerializeToString())
        else:
            model = args.model.resolve()
        batch = fixed_batch(model)

        ours = [str(aieflow), "compile", str(model), "-o", "{out}", "--json", "--batch", str(batch)]
        helptext = subprocess.run([str(aieflow), "compile", "--help"], capture_output=True, text=True).stdout
        if "--objective" in helptext:
            ours += ["--objective", args.objective]
        else:
            print(f"note: this aieflow has no --objective; compiling with its default (asked: {args.objective})")
        peer = [str(peer_python), str(Path(__file__).resolve()), "--peer-worker", str(model), "{out}", args.objective]

        print(f"model {model.name}, batch {batch}, best of {args.repeat}")
        try:
            try:
                our_times, our = run_timed(ours, args.repeat, tmp, "aieflow")
            except RuntimeError as failure:
                if "--objective" not in ours or "objective" not in str(failure).split("\n", 1)[1]:
                    raise
                print(f"note: aieflow rejected --objective {args.objective}; compiling with its default")
                our_times, our = run_timed(ours[:-2], args.repeat, tmp, "aieflow")
            peer_times, theirs = run_timed(peer, args.repeat, tmp, "aie4ml")
        except RuntimeError as failure:
            sys.exit(str(failure))

    rows = [("aieflow", metadata.version("aieflow"), min(our_times), statistics.median(our_times), our["tiles_used"]),
            ("aie4ml", theirs["version"], min(peer_times), statistics.median(peer_times), theirs["tiles_used"])]
    print(f"\n{'tool':<8} {'version':<10} {'best s':>8} {'median s':>9} {'tiles used':>11}")
    for tool, version, best, median, tiles in rows:
        print(f"{tool:<8} {version:<10} {best:>8.2f} {median:>9.2f} {tiles:>11}")
    print(f"ratio aie4ml/aieflow: wall {rows[1][2] / rows[0][2]:.1f}x, tiles {rows[1][4] / rows[0][4]:.2f}x")
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in theirs["seconds"].items())
    print(f"aie4ml (Optimize={theirs['mode']}), last run in-process: {phases}")
    predicted_side_by_side(model, batch, args.objective, theirs["parallelism"])


def predicted_side_by_side(model: Path, batch: int, objective: str, parallelism: dict) -> None:
    """Both tools' chosen configurations under aieflow's performance model (aie4ml keeps no cycle model).

    aie4ml's per-layer choice (cas_num x cas_length, its default 4x8x8 int8 microtile) is compiled by
    aieflow as directives, so placement and transport are aieflow's in both rows: the difference is the
    configuration each search chose.
    """
    import aieflow
    from aieflow.report.perf import predict

    layers = {name.removesuffix("_aie"): {"cas_length": p["cas_length"], "cas_num": p["cas_num"], "microtile": [4, 8, 8]}
              for name, p in parallelism.items()}
    rows = []
    for label, kwargs in (("aieflow", {"objective": objective}), ("aie4ml's choice", {"layers": layers})):
        try:
            p = predict(aieflow.compile(str(model), batch=batch, **kwargs))
        except aieflow.AieflowError as e:
            print(f"{label}: cannot be modelled ({e})")
            return
        rows.append((label, p))
    print(f"\npredicted by aieflow's model ({rows[0][1].device}, batch {batch}):")
    print(f"{'configuration':<16} {'tiles':>6} {'interval':>9} {'latency us':>11} {'samples/s':>12} {'TOPS':>7}")
    for label, p in rows:
        print(f"{label:<16} {p.tiles_used:>6} {p.interval_cycles:>9} {p.latency_us:>11.2f} {p.samples_per_s:>12.3g} {p.tops:>7.1f}")
    print(f"throughput ratio aieflow / aie4ml's choice: {rows[0][1].samples_per_s / rows[1][1].samples_per_s:.2f}x")


if __name__ == "__main__":
    main()
