"""CNNs as a new user brings them: a float PyTorch CNN (conv, BN, ReLU, max-pool, conv, ReLU, global average
pool, Linear), a depthwise-separable block and a Conv1d model, each exported with torch.onnx.export (torch's
default exporter) and quantized with onnxruntime's quantize_static (QUInt8 activations, QInt8 weights),
compiled from the command line: the exactness report is printed, layer by layer, and the output integers
the project's emulator gives equal onnxruntime's, measured here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from aieflow.cli import main
from aieflow.examples.cnn import TORCH_CNN_INPUT_SHAPES, export_and_quantize, run_onnxruntime, sample_cnn_inputs, torch_cnn


def _compile_and_check(kind: str, tmp_path, batch: int) -> str:
    model = export_and_quantize(torch_cnn(kind, seed=0), TORCH_CNN_INPUT_SHAPES[kind])
    path = tmp_path / f"{kind}.onnx"
    onnx.save(model, str(path))
    out = CliRunner().invoke(main, ["compile", str(path), "-o", str(tmp_path / "p"), "--batch", str(batch)],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "exactness vs onnxruntime" in out.output and "whole model: bit-exact" in out.output, out.output
    x = sample_cnn_inputs(model, 64, seed=2)
    np.save(tmp_path / "x.npy", x)
    sim = CliRunner().invoke(main, ["simulate", str(tmp_path / "p"), "-i", str(tmp_path / "x.npy"),
                                    "-o", str(tmp_path / "y.npy")], catch_exceptions=False)
    assert sim.exit_code == 0, sim.output
    y = np.load(tmp_path / "y.npy")
    ref = run_onnxruntime(model, x).reshape(y.shape)
    # Equal integers: onnxruntime dequantizes (q - zp) * scale in float32, aieflow in float64; each is the
    # exact product rounded, so they agree as float32 exactly when the integers do.
    assert np.array_equal(y.astype(np.float32), ref)
    return out.output


def test_a_torch_cnn_quantized_by_onnxruntime_compiles_from_the_command_line(tmp_path):
    printed = _compile_and_check("cnn", tmp_path, 8)
    assert "node_max_pool2d: bit-exact" in printed


@pytest.mark.full
@pytest.mark.parametrize("kind, batch", [("separable", 2), ("conv1d", 8)])
def test_the_other_torch_cnns_compile_from_the_command_line(kind, batch, tmp_path):
    _compile_and_check(kind, tmp_path, batch)
