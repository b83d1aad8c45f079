"""`aieflow demo`: the bundled jet-tagging MLP, end to end, checked against onnxruntime."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from rich.console import Console

from . import compile as compile_model
from .emit import write_project
from .examples.onnx_qdq import jet_tagger, run_onnxruntime, sample_inputs
from .report import _default, human_summary

SAMPLES = 1000
MODEL_FILE = "jet_tagger.onnx"
INPUTS_FILE = "sample_inputs.npy"


def run_demo(output: Path, console: Console | None = None) -> bool:
    """Build, compile, write and verify the demo model; True when the emulator matches onnxruntime."""
    c = console or _default()
    model = jet_tagger()
    x = sample_inputs(model, SAMPLES, seed=1)
    design = compile_model(model, device="ve2802", batch=8)
    # The model and its sample inputs go into the project folder itself: the demo writes nowhere else.
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    write_project(design, output, extra={MODEL_FILE: model.SerializeToString(), INPUTS_FILE: buf.getvalue()})
    c.print(f"model: jet-tagging MLP 16-64-32-32-5, int8, built from fixed seeds -> {output / MODEL_FILE} "
            f"({SAMPLES} sample inputs in {output / INPUTS_FILE})")
    human_summary(design, output, c)
    y = design.simulate(x)
    ref = run_onnxruntime(model, x)
    same = np.array_equal(y, ref.astype(np.float64))
    mismatches = int(np.sum(y != ref))
    c.print(f"emulator vs onnxruntime on {SAMPLES} inputs: "
            + ("[green]bit-exact[/]" if same else f"[red]{mismatches} of {y.size} outputs differ[/]"))
    c.print(f"build it with Vitis 2025.2: cd {output} && make aie && make aiesim && make check SIM=aiesim")
    return same
