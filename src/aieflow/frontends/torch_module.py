"""PyTorch / Brevitas modules: exported with Brevitas' QONNX export, read by the QONNX frontend, and measured
against the module's own forward pass.

The Graph is the QONNX frontend's (aieflow.frontends.qonnx) on the exported file. The reference runs the
module itself (eval mode, torch.no_grad, float32) and returns the integers of its output: output / scale +
zero point, which is an integer exactly when the output is quantized. Where the module's activation
quantizers (QuantIdentity, QuantReLU, QuantHardTanh, and layers with an output quantizer), its truncating
pools (TruncAvgPool2d) and its max pools map one to one, in call order, onto the Graph's tensors (those the
QONNX frontend did not add itself), their outputs are returned too.

Convolutional modules take images: example_input [batch, channels, height, width] (QuantConv2d) or [batch,
channels, length] (QuantConv1d); the Graph's maps are channels last, and the reference returns the module's
own NCHW / NCL values (aieflow.exactness compares them in that layout).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import ModelError
from . import Imported


def _need_torch():
    try:
        import brevitas  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise ModelError("compiling PyTorch modules needs torch and brevitas", hint="pip install aieflow[torch]") from None


_OUTPUT_HINT = ("end the module with a quantizer: output_quant=Int8ActPerTensorFixedPoint on the last QuantLinear, "
                "or a final QuantIdentity")


def import_torch(module, example_input, name: str | None = None) -> Imported:
    """Export `module` (a Brevitas-quantized torch.nn.Module) to QONNX and import it; `example_input` is a
    [batch, features], [batch, channels, length] or [batch, channels, height, width] tensor or array the
    export traces with."""
    _need_torch()
    import torch

    from .qonnx import _import_qonnx

    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32) if not isinstance(example_input, torch.Tensor)
                        else example_input.detach().to(torch.float32))
    if x.ndim not in (2, 3, 4):
        raise ModelError(f"example_input has shape {list(x.shape)}; expected [batch, features], [batch, channels, "
                         "length] or [batch, channels, height, width]", hint="give the input the module takes")
    if x.ndim > 2 and not _has_maps(module):
        raise ModelError(f"example_input has shape {list(x.shape)}; a module without convolutions or pools takes "
                         "[batch, features]", hint="flatten the input to two dimensions")
    module.eval()
    _check_output_quantized(module, x)
    name = name or type(module).__name__.lower()
    with tempfile.TemporaryDirectory(prefix="aieflow-qonnx-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        _export(module, x, path)
        try:
            imported, added = _import_qonnx(path, name=name)
        except ModelError as e:
            if "is not a quantized activation" in e.reason:
                raise ModelError(f"the module's output is not quantized ({e.reason})", hint=_OUTPUT_HINT) from None
            raise
    graph = imported.graph
    return Imported(graph, "brevitas", _reference(module, graph, added))


def _export(module, x, path: Path) -> None:
    import warnings

    try:
        from brevitas.export import export_qonnx
    except ImportError:
        raise ModelError("Brevitas' QONNX export is missing", hint="pip install aieflow[torch]") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # The TorchScript exporter: a tenth of the dynamo exporter's time on small MLPs.
                export_qonnx(module, x, str(path), dynamo=False)
            except ModuleNotFoundError:
                raise
            except Exception:  # noqa: BLE001 - a torch without it, or a module it cannot trace: dynamo
                export_qonnx(module, x, str(path), dynamo=True)
    except ModuleNotFoundError as e:
        raise ModelError(f"Brevitas' QONNX export needs a package that is not installed: {e}",
                         hint="pip install aieflow[torch] (it brings onnx and onnxoptimizer)") from None
    except Exception as e:  # noqa: BLE001 - torch.onnx / brevitas fail with many exception types
        raise ModelError(f"Brevitas' QONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                         hint="use Brevitas quantized layers (QuantIdentity, QuantLinear, QuantConv2d, QuantReLU) "
                              "on a [batch, features] or image input") from None


def _has_maps(module) -> bool:
    """Whether the module has a convolution or a pool (it reads feature maps)."""
    import torch

    kinds = (torch.nn.modules.conv._ConvNd, torch.nn.modules.pooling._MaxPoolNd, torch.nn.modules.pooling._AvgPoolNd,
             torch.nn.modules.pooling._AdaptiveAvgPoolNd, torch.nn.modules.pooling._AdaptiveMaxPoolNd)
    return any(isinstance(m, kinds) for m in module.modules())


def _forward(module, x):
    import torch

    with torch.no_grad():
        out = module(torch.as_tensor(np.asarray(x, dtype=np.float32)))
    return out


def _check_output_quantized(module, x) -> None:
    """Refuse a module whose forward pass returns plain floats off any quantization grid."""
    out = _forward(module, x[:1])
    if hasattr(out, "scale") and out.scale is not None:
        return
    last = None
    for m in module.modules():
        if any(hasattr(m, a) for a in ("act_quant", "output_quant", "weight_quant")):
            last = m
    if last is None:
        raise ModelError("the module has no Brevitas quantizers", hint="quantize it with brevitas.nn layers")
    quantizing = hasattr(last, "act_quant") or (
        hasattr(last, "output_quant") and getattr(last.output_quant, "is_quant_enabled", False))
    if not quantizing:
        raise ModelError(f"the module's output is not quantized: its last quantized layer "
                         f"({type(last).__name__}) has no output quantizer", node=_module_name(module, last),
                         hint=_OUTPUT_HINT)


def _module_name(module, target) -> str | None:
    return next((n for n, m in module.named_modules() if m is target), None)


def _is_act_quantizer(m) -> bool:
    if hasattr(m, "act_quant") and getattr(m.act_quant, "is_quant_enabled", True):
        return True
    return hasattr(m, "output_quant") and getattr(m.output_quant, "is_quant_enabled", False)


def _makes_tensor(m) -> bool:
    """A module whose output is one of the Graph's tensors: an activation quantizer, a truncating pool
    (TruncAvgPool2d: AveragePool -> Trunc) or a max pool."""
    import torch

    if _is_act_quantizer(m):
        return True
    if hasattr(m, "trunc_quant") and getattr(m, "is_trunc_quant_enabled", False):
        return True
    return isinstance(m, (torch.nn.MaxPool1d, torch.nn.MaxPool2d))


def _reference(module, graph, added=()):
    """The module's forward pass as integers of the Graph's output (and of hooked layers where they map)."""
    out_t = graph.tensors[graph.outputs[0]]
    # The Graph's tensors in order: input(s), then each op's output but those the frontend added (a zero point
    # moved off, a BatchNormalization's intermediate); hooks collect the outputs of the modules that make a
    # tensor in call order, and are used only when the counts agree.
    order = list(graph.inputs) + [op.outputs[0] for op in graph.ops if op.outputs[0] not in added]

    def to_int(v, t):
        v = np.asarray(v, dtype=np.float64).reshape(v.shape[0], -1) / t.real_scale + t.zero_point
        q = np.rint(v)
        tol = 1e-3 * np.maximum(1.0, np.abs(q)) if t.scale is not None else 0
        return q.astype(np.int64), bool(np.all(np.abs(v - q) <= tol))

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        seen = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out))
                 for m in module.modules() if _makes_tensor(m)]
        try:
            out = _forward(module, x)
        finally:
            for h in hooks:
                h.remove()
        out = out.value if hasattr(out, "value") else out
        q, ok = to_int(out.detach().cpu().numpy(), out_t)
        if not ok:
            raise ModelError("the module's output is not on its quantization grid", hint=_OUTPUT_HINT)
        result = {out_t.name: q}
        if len(seen) == len(order):
            layers = {}
            for tname, v in zip(order, seen):
                v = v.value if hasattr(v, "value") else v
                v = v.detach().cpu().numpy()
                t = graph.tensors[tname]
                if tuple(v.shape[1:]) not in ((t.features,), tuple(t.source_shape)):
                    break
                qi, ok = to_int(v, t)
                if not ok:
                    break
                layers[tname] = qi
            else:
                result.update(layers)
        return result

    return run
