"""Convolutions on whole batches for the fast emulator (aieflow.simulate.fast): the packed weights unpacked
back into [KH, KW, C, CO], then the family's own exact arithmetic (layer_output: float32 or float64 BLAS
where every sum is exact, int64 otherwise) over the whole batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...ir import Op, Tensor
from . import layer_output, pad_map, unpack_weights


@dataclass(frozen=True)
class ConvPlan:
    name: str
    x: str
    output: str
    op: Op
    out: Tensor
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    weight: np.ndarray  # [KH, KW, C|1, CO] from the packed blocks
    bias: np.ndarray
    x_magnitude: int  # the input type's largest magnitude, for the exactness bound
    precision: str = "int64"  # exact by layer_output's own choice
    # Its products are many small ones per tap, which run on one core: the fast emulator may run chunks
    # of a batch side by side.
    single_threaded: bool = True

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.x,)

    def run(self, values: list, precision: str, prep, exact_int: bool = False) -> np.ndarray:
        cfg_op = self.op
        h, w, c = self.in_shape
        ho, wo, _ = self.out_shape
        x = np.asarray(values[0]).reshape(-1, h, w, c)  # int64, or floats holding the integers
        y = layer_output(pad_map(x, cfg_op.attrs["pads"]), self.weight, self.bias, cfg_op, self.out, (ho, wo),
                         x_magnitude=self.x_magnitude)
        return y.reshape(x.shape[0], -1)


def plan(layer, graph) -> ConvPlan:
    cfg, op = layer.config, layer.op
    co = cfg.out_shape[2]
    c = cfg.in_shape[2]
    if cfg.depthwise:
        weight = np.concatenate([unpack_weights(cfg, layer.packed["weights"][j, 0]) for j in range(cfg.chains)],
                                axis=3)[..., :co]
    else:
        rows = [np.concatenate([unpack_weights(cfg, layer.packed["weights"][j, s]) for j in range(cfg.chains)], axis=3)
                for s in range(cfg.cas_length)]
        weight = np.concatenate(rows, axis=2)[:, :, :c, :co]
    bias = np.asarray(layer.packed["bias"][: cfg.chains]).astype(np.int64).reshape(-1)[:co]
    return ConvPlan(op.name, op.inputs[0], op.outputs[0], op, graph.tensors[op.outputs[0]], cfg.in_shape,
                    cfg.out_shape, weight, bias, graph.tensors[op.inputs[0]].type.magnitude)
