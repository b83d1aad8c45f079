"""What the two ONNX frontends (QDQ and QONNX) read from nodes the same way: names, attributes, and the
checks on the graph ops both accept (Gemm's attributes, views that must keep [batch, features])."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelError


def node_name(node) -> str | None:
    """The node's name for messages (its op type and outputs when it has none)."""
    if node is None:
        return None
    return node.name or f"{node.op_type}({', '.join(node.output)})"


def attr(node, name: str, default=None):
    """An attribute's value (strings decoded), or `default` when the node does not set it."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def check_gemm(node) -> bool:
    """Refuse the Gemm attributes a dense layer cannot mean; returns transB."""
    if attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
        raise ModelError("Gemm with alpha or beta other than 1 is not supported", node=node_name(node),
                         hint="fold alpha and beta into the weights before export")
    if attr(node, "transA", 0) != 0:
        raise ModelError("Gemm with transA=1 is not supported", node=node_name(node))
    return bool(attr(node, "transB", 0))


def check_view(node, shape_values, features: int | None) -> None:
    """Identity, Flatten (axis 1) and Reshape to [-1 or batch, features] keep the layout; refuse the rest.
    shape_values: Reshape's constant shape (None when it is not a constant)."""
    if node.op_type == "Flatten" and attr(node, "axis", 1) != 1:
        raise ModelError(f"Flatten with axis={attr(node, 'axis')} changes the data layout", node=node_name(node),
                         hint="use axis=1")
    if node.op_type == "Reshape":
        if shape_values is None:
            raise ModelError("Reshape needs a constant shape", node=node_name(node))
        dims = [int(d) for d in np.asarray(shape_values).reshape(-1)]
        if len(dims) != 2 or dims[1] != features:
            raise ModelError(f"Reshape to {dims} changes the [batch, {features}] layout", node=node_name(node),
                             hint="only reshapes to [-1, features] or [batch, features] are supported")


def constant_value(node) -> np.ndarray:
    """The tensor a Constant node holds (only the tensor form, `value`, is accepted)."""
    from onnx import numpy_helper

    t = next((a for a in node.attribute if a.name == "value"), None)
    if t is None:
        raise ModelError("only Constant nodes with a tensor 'value' are supported", node=node_name(node))
    return numpy_helper.to_array(t.t)


# Bounds on what a model file may declare, checked before any array is made from it.
MAX_FEATURES = 1 << 16
MAX_DECLARED_BATCH = 1 << 16


def float_input(graph, known, quantizer: str) -> tuple[str, int]:
    """The one float32 [batch, features] graph input that is not an initializer: (name, features)."""
    found = []
    for vi in graph.input:
        if vi.name in known:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if len(dims) < 2 or dims[-1] is None or any(d is None or d > 1 for d in dims[1:-1]):
            raise ModelError(f"graph input '{vi.name}' has shape {dims}; expected [batch, features]",
                             hint="flatten the input to two dimensions before export")
        if not 1 <= dims[-1] <= MAX_FEATURES or (dims[0] is not None and not 0 <= dims[0] <= MAX_DECLARED_BATCH):
            # Bounded before anything is allocated from them (the reference runs in chunks of a fixed batch).
            raise ModelError(f"graph input '{vi.name}' declares shape {dims}",
                             hint=f"features must be 1 to {MAX_FEATURES} and a fixed batch at most "
                                  f"{MAX_DECLARED_BATCH} (or leave it symbolic)")
        if vi.type.tensor_type.elem_type != 1:
            raise ModelError(f"graph input '{vi.name}' must be float32 ({quantizer} quantizes it)")
        found.append((vi.name, dims[-1]))
    if len(found) != 1:
        raise ModelError(f"the model has {len(found)} inputs; aieflow supports one")
    return found[0]


ONNX_FILE_HINT = "give a .onnx file saved by onnx.save or a framework's ONNX export"


def read_model(path_or_model, hint: str = ONNX_FILE_HINT):
    """(onnx.ModelProto, model name) from a file path (named after the file) or a ModelProto (its graph's
    name); a missing file, bytes that are not ONNX and a graph without nodes are refused with `hint`."""
    import onnx

    if isinstance(path_or_model, (str, Path)):
        path = Path(path_or_model)
        if not path.is_file():
            raise ModelError(f"no such file: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and others for non-ONNX bytes
            raise ModelError(f"{path} is not an ONNX model ({type(e).__name__})", hint=hint) from None
        if not model.graph.node:
            raise ModelError(f"{path} is not an ONNX model (it has no graph nodes)", hint=hint)
        return model, path.stem
    return path_or_model, path_or_model.graph.name or "model"
