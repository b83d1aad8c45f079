"""QDQ models made by the tools users quantize with, for the frontend's tests and examples.

- `ort_quantized_mlp`: a float MLP built with onnx.helper, calibrated on synthetic data and quantized by
  onnxruntime's static quantizer (quantize_static, QDQ format, per-tensor), as a user of onnxruntime would.
- `torch_fakequant_mlp`: a PyTorch MLP whose activations and weights pass through
  torch.fake_quantize_per_tensor_affine, exported with the TorchScript exporter (QuantizeLinear /
  DequantizeLinear pairs).

Neither is built to be exact: their scales are whatever calibration gives (not powers of two) and their zero
points are what the tools choose. aieflow requantizes with an integer multiplier and shift, and how far that
is from onnxruntime's float32 arithmetic is measured (tests/test_onnx_tools.py), not assumed. Everything is
seeded: the same arguments give the same model.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..errors import ModelError

FORMS = ("gemm", "matmul_add")
ACTIVATIONS = ("quint8", "qint8")


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _float_layers(rng: np.random.Generator, sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weights [in, out] about 1/sqrt(fan-in) (a trained layer's magnitude) and small biases."""
    layers = []
    for k, n in zip(sizes[:-1], sizes[1:]):
        w = rng.normal(0.0, 1.0 / np.sqrt(k), (k, n)).astype(np.float32)
        b = rng.normal(0.0, 0.2, n).astype(np.float32)
        layers.append((w, b))
    return layers


def _check_sizes(sizes) -> list[int]:
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ModelError(f"sizes {sizes} must list at least an input and an output width, all positive")
    return sizes


def float_mlp(sizes, *, seed=0, relu=True, form: str = "gemm", opset: int = 17):
    """The float MLP `sizes[0] -> ... -> sizes[-1]` as an onnx.ModelProto: Gemm (or MatMul + Add) per layer,
    then a ReLU where `relu` says (one flag for every layer, or a list with one per layer)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sizes = _check_sizes(sizes)
    if form not in FORMS:
        raise ModelError(f"form {form!r} is not one of {FORMS}")
    n_layers = len(sizes) - 1
    relus = [bool(relu)] * n_layers if isinstance(relu, bool) else [bool(r) for r in relu]
    if len(relus) != n_layers:
        raise ModelError(f"relu needs {n_layers} entries, one per layer")
    rng = _rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, (w, b) in enumerate(_float_layers(rng, sizes)):
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        if form == "gemm":
            nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}"], name=f"fc{i}"))
        else:
            nodes.append(helper.make_node("MatMul", [cur, f"fc{i}.weight"], [f"fc{i}_mm"], name=f"fc{i}_matmul"))
            nodes.append(helper.make_node("Add", [f"fc{i}_mm", f"fc{i}.bias"], [f"fc{i}"], name=f"fc{i}_add"))
        cur = f"fc{i}"
        if relus[i]:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}"], name=f"relu{i}"))
            cur = f"relu{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="output"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", sizes[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="aieflow")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def calibration_data(sizes, seed=0, rows: int = 256) -> np.ndarray:
    """Synthetic float inputs: normal features with per-feature offsets and spreads, as real features have."""
    rng = np.random.default_rng([int(seed) if not isinstance(seed, np.random.Generator) else 0, 7])
    k = int(sizes[0])
    centre = rng.normal(0.0, 0.5, k)
    spread = rng.uniform(0.5, 1.5, k)
    return (centre + spread * rng.normal(0.0, 1.0, (rows, k))).astype(np.float32)


class _Reader:
    """A CalibrationDataReader over in-memory batches (onnxruntime only calls get_next)."""

    def __init__(self, name: str, data: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{name: data[i:i + batch]} for i in range(0, len(data), batch)])

    def get_next(self):
        return next(self._batches, None)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizer logs a pre-processing advice at WARNING; the tests do not need it."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def ort_quantized_mlp(path, sizes=(16, 32, 8), *, seed=0, relu=True, form: str = "gemm",
                      activation: str = "quint8", activation_symmetric: bool = False,
                      weight_symmetric: bool = True, keep_relu: bool = False, calibration_rows: int = 256,
                      per_channel: bool = False):
    """A float MLP quantized by onnxruntime.quantization.quantize_static to QDQ, saved at `path`.

    activation: "quint8" or "qint8"; activation_symmetric / weight_symmetric: onnxruntime's
    ActivationSymmetric / WeightSymmetric (weights are QInt8); keep_relu: QDQKeepRemovableActivations (a Relu
    that the output quantizer's range would make redundant is otherwise removed); form "gemm" or
    "matmul_add" (onnxruntime then quantizes the MatMul's output before the bias Add). Calibration: MinMax on
    `calibration_data`. Returns the quantized onnx.ModelProto.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if activation not in ACTIVATIONS:
        raise ModelError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    sizes = _check_sizes(sizes)
    path = Path(path)
    model = float_mlp(sizes, seed=seed, relu=relu, form=form)
    data = calibration_data(sizes, seed if not isinstance(seed, np.random.Generator) else 0, calibration_rows)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        source = Path(tmp) / "float.onnx"
        onnx.save(model, str(source))
        quantize_static(
            str(source), str(path), _Reader("x", data),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if activation == "quint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": bool(activation_symmetric),
                           "WeightSymmetric": bool(weight_symmetric),
                           "QDQKeepRemovableActivations": bool(keep_relu)},
        )
    return onnx.load(str(path))


def _affine(lo: float, hi: float, qmin: int, qmax: int, symmetric: bool) -> tuple[float, int]:
    """Scale and zero point covering [lo, hi] (widened to hold 0), as PyTorch's MinMax observers choose them
    (a scale of at least float32's eps)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    eps = float(np.finfo(np.float32).eps)
    if symmetric:
        scale = float(np.float32(max(2 * max(-lo, hi) / (qmax - qmin), eps)))
        return scale, (qmin + qmax + 1) // 2 if qmin == 0 else 0
    scale = float(np.float32(max((hi - lo) / (qmax - qmin), eps)))
    zp = int(np.clip(qmin - round(lo / scale), qmin, qmax))
    return scale, zp


def torch_fakequant_mlp(path, sizes=(16, 32, 8), *, seed=0, relu=True, activation: str = "quint8",
                        activation_symmetric: bool = False, weight_symmetric: bool = True,
                        calibration_rows: int = 256):
    """A PyTorch MLP with per-tensor fake quantization of its input, weights and every layer's output,
    exported by torch.onnx.export(dynamo=False) to QuantizeLinear / DequantizeLinear pairs at `path`.

    Activation scales and zero points come from the min and max each activation takes on
    `calibration_data` (asymmetric unless activation_symmetric); weights are int8, symmetric unless
    weight_symmetric is False. Returns the exported onnx.ModelProto.
    """
    import onnx
    import torch

    if activation not in ACTIVATIONS:
        raise ModelError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    sizes = _check_sizes(sizes)
    n_layers = len(sizes) - 1
    relus = [bool(relu)] * n_layers if isinstance(relu, bool) else [bool(r) for r in relu]
    rng = _rng(seed)
    layers = _float_layers(rng, sizes)
    data = calibration_data(sizes, seed if not isinstance(seed, np.random.Generator) else 0, calibration_rows)
    aq = (0, 255) if activation == "quint8" else (-128, 127)

    # Calibrate in float64 numpy: each activation's range after the fake quantization before it.
    def fq(v, scale, zp, lo, hi):
        return (np.clip(np.rint(v / np.float32(scale)) + zp, lo, hi) - zp) * scale

    params = []
    a = data.astype(np.float64)
    s, z = _affine(float(a.min()), float(a.max()), *aq, activation_symmetric)
    params.append((s, z))
    a = fq(a, s, z, *aq)
    wparams = []
    for (w, b), r in zip(layers, relus):
        ws, wz = _affine(float(w.min()), float(w.max()), -128, 127, weight_symmetric)
        wparams.append((ws, wz))
        a = a @ fq(w.astype(np.float64), ws, wz, -128, 127) + b
        if r:
            a = np.maximum(a, 0.0)
        s, z = _affine(float(a.min()), float(a.max()), *aq, activation_symmetric)
        params.append((s, z))
        a = fq(a, s, z, *aq)

    class FakeQuantMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fcs = torch.nn.ModuleList(torch.nn.Linear(k, n) for k, n in zip(sizes[:-1], sizes[1:]))
            with torch.no_grad():
                for fc, (w, b) in zip(self.fcs, layers):
                    fc.weight.copy_(torch.from_numpy(w.T.copy()))
                    fc.bias.copy_(torch.from_numpy(b))

        def forward(self, x):
            s0, z0 = params[0]
            x = torch.fake_quantize_per_tensor_affine(x, s0, z0, *aq)
            for i, fc in enumerate(self.fcs):
                ws, wz = wparams[i]
                w = torch.fake_quantize_per_tensor_affine(fc.weight, ws, wz, -128, 127)
                x = torch.nn.functional.linear(x, w, fc.bias)
                if relus[i]:
                    x = torch.relu(x)
                s, z = params[i + 1]
                x = torch.fake_quantize_per_tensor_affine(x, s, z, *aq)
            return x

    path = Path(path)
    with _quiet():
        torch.onnx.export(FakeQuantMLP().eval(), (torch.from_numpy(data[:2]),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return onnx.load(str(path))


def sample_inputs(model_or_sizes, n: int, seed: int = 0) -> np.ndarray:
    """float32 inputs for comparing with the reference: calibration-like values, a few far outside the
    calibrated range (saturation) and some exact zeros."""
    k = int(model_or_sizes[0]) if not hasattr(model_or_sizes, "graph") else \
        model_or_sizes.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    x = calibration_data([k], seed + 1000, n).astype(np.float64)
    rng = np.random.default_rng([seed, 11])
    kind = rng.integers(0, 10, x.shape)
    x = np.where(kind == 0, x * 4.0, x)
    x = np.where(kind == 1, 0.0, x)
    return x.astype(np.float32)

