"""Pools on whole batches for the fast emulator (aieflow.simulate.fast): the family's own evaluate, exact in
int64 (a pool holds no packed parameters)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import Graph, Op
from . import evaluate


@dataclass(frozen=True)
class PoolPlan:
    name: str
    x: str
    output: str
    op: Op
    graph: Graph
    precision: str = "int64"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)

    def run(self, values: list, precision: str, prep, exact_int: bool = False) -> np.ndarray:
        return evaluate(self.op, self.graph, {self.x: values[0]})


def plan(layer, graph) -> PoolPlan:
    op = layer.op
    return PoolPlan(op.name, op.inputs[0], op.outputs[0], op, graph)
