"""`aieflow demo`: a bundled model end to end, checked against onnxruntime: the jet-tagging MLP, or
(--model cnn) a small calorimeter-image CNN."""

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
CNN_FILE = "calo_cnn.onnx"
INPUTS_FILE = "sample_inputs.npy"
MODELS = ("mlp", "cnn")


def calo_cnn():
    """The CNN demo: 16x16 single-channel calorimeter images, conv 3x3x8 + ReLU, max-pool 2, conv 3x3x16 +
    ReLU, global average pool, dense 5; int8 with power-of-two scales, built from a fixed seed."""
    from .examples.cnn import ConvSpec, DenseSpec, FlattenSpec, GlobalPoolSpec, PoolSpec, qdq_cnn

    layers = [ConvSpec(8, 3, 1, "same", relu="relu"), PoolSpec("max", 2, 2), ConvSpec(16, 3, 1, "same", relu="relu"),
              GlobalPoolSpec("avg"), FlattenSpec(), DenseSpec(5)]
    return qdq_cnn(layers, (1, 16, 16), seed=0, name="calo_cnn")


def run_demo(output: Path, console: Console | None = None, model_kind: str = "mlp") -> bool:
    """Build, compile, write and verify a demo model; True when the emulator matches onnxruntime."""
    c = console or _default()
    if model_kind == "cnn":
        from .examples.cnn import run_onnxruntime as run_cnn, sample_cnn_inputs

        model, name = calo_cnn(), CNN_FILE
        x = sample_cnn_inputs(model, SAMPLES, seed=1)
        ref_of = run_cnn
        what = "calorimeter-image CNN 1x16x16 -> conv 3x3x8 -> max-pool -> conv 3x3x16 -> global average -> 5"
    else:
        model, name = jet_tagger(), MODEL_FILE
        x = sample_inputs(model, SAMPLES, seed=1)
        ref_of = run_onnxruntime
        what = "jet-tagging MLP 16-64-32-32-5"
    design = compile_model(model, device="ve2802", batch=8)
    # The model and its sample inputs go into the project folder itself: the demo writes nowhere else.
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    write_project(design, output, extra={name: model.SerializeToString(), INPUTS_FILE: buf.getvalue()})
    c.print(f"model: {what}, int8, built from fixed seeds -> {output / name} "
            f"({SAMPLES} sample inputs in {output / INPUTS_FILE})")
    human_summary(design, output, c)
    y = design.simulate(x)
    ref = ref_of(model, x).reshape(y.shape)
    same = np.array_equal(y, ref.astype(np.float64))
    mismatches = int(np.sum(y != ref))
    c.print(f"emulator vs onnxruntime on {SAMPLES} inputs: "
            + ("[green]bit-exact[/]" if same else f"[red]{mismatches} of {y.size} outputs differ[/]"))
    c.print(f"build it with Vitis 2025.2: cd {output} && make aie && make aiesim && make check SIM=aiesim")
    return same
