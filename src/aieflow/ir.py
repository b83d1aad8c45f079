"""The quantized graph every frontend produces and every later stage reads.

Activations are [batch, features] integer tensors with a FixedType; ops are listed in topological order.
Op parameters are exact integer arrays already on their final grid (weights as stored, bias on the
accumulator grid), so nothing downstream touches floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelError
from .numerics import FixedType


@dataclass(frozen=True)
class Tensor:
    name: str
    features: int
    type: FixedType


@dataclass(frozen=True, eq=False)
class Op:
    """One operation. `kind` names its op family (a folder under aieflow/ops)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    tensors: dict[str, Tensor]
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def producer(self, tensor: str) -> Op | None:
        return next((op for op in self.ops if tensor in op.outputs), None)

    def consumers(self, tensor: str) -> list[Op]:
        return [op for op in self.ops if tensor in op.inputs]

    def validate(self) -> "Graph":
        """Every tensor an op reads is defined before it; names are unique."""
        defined = set(self.inputs)
        for op in self.ops:
            for t in op.inputs:
                if t not in defined:
                    raise ModelError(f"reads tensor '{t}' before it is produced", node=op.name)
            for t in op.outputs:
                if t in defined:
                    raise ModelError(f"writes tensor '{t}' that already exists", node=op.name)
                defined.add(t)
        for t in self.outputs:
            if t not in defined:
                raise ModelError(f"graph output '{t}' is never produced")
        return self
