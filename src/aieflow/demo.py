"""`aieflow demo`: the bundled jet-tagging MLP, end to end, checked against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console

from . import compile as compile_model
from .examples import jet_tagger, run_onnxruntime, sample_inputs
from .report import _default, human_summary

SAMPLES = 1000


def run_demo(output: Path, console: Console | None = None) -> bool:
    """Build, compile, write and verify the demo model; True when the emulator matches onnxruntime."""
    c = console or _default()
    model = jet_tagger()
    output.parent.mkdir(parents=True, exist_ok=True)
    model_path = output.parent / "jet_tagger.onnx"
    model_path.write_bytes(model.SerializeToString())
    c.print(f"model: jet-tagging MLP 16-64-32-32-5, int8, built from fixed seeds -> {model_path}")
    design = compile_model(model_path, device="ve2802", batch=8)
    design.write(output)
    human_summary(design, output, c)
    x = sample_inputs(model, SAMPLES, seed=1)
    y = design.simulate(x)
    ref = run_onnxruntime(model, x)
    same = np.array_equal(y, ref.astype(np.float64))
    mismatches = int(np.sum(y != ref))
    c.print(f"emulator vs onnxruntime on {SAMPLES} inputs: "
            + ("[green]bit-exact[/]" if same else f"[red]{mismatches} of {y.size} outputs differ[/]"))
    c.print(f"build it with Vitis 2025.2: cd {output} && make aie && make aiesim && make check")
    return same
