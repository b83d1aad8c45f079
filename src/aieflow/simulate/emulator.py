"""The bit-exact emulator: runs a Design the way the emitted graph does.

Data move through the memory-tile buffers with the design's own DMA descriptors, every kernel computes on
its own packed weights and passes its accumulator down the cascade, and the last kernel of each chain
applies the bias, shift, rounding, saturation and ReLU recorded in the design. Inputs are processed in
graph iterations of `design.batch` samples, as the hardware does.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..design import Design, MemtileBuffer
from ..errors import DesignError
from ..numerics import dequantize, quantize_float, saturate
from ..ops import dense
from ..tiling import Tiling, read_tiles, write_tiles


def run(design: Design, x: np.ndarray, raw: bool = False) -> np.ndarray:
    """Outputs for inputs x [samples, features]: floats are quantized, integers taken as they are."""
    g = design.graph
    tin = g.tensors[g.inputs[0]]
    tout = g.tensors[g.outputs[0]]
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != tin.features:
        raise DesignError(f"input of shape {list(x.shape)}; the design expects [samples, {tin.features}]")
    if x.dtype.kind == "f":
        q = quantize_float(x, tin.type)
    elif x.dtype.kind in "iu":
        q = x.astype(np.int64)
        if np.any((q < tin.type.qmin) | (q > tin.type.qmax)):
            raise DesignError(f"raw input values outside {tin.type.storage} [{tin.type.qmin}, {tin.type.qmax}]")
    else:
        raise DesignError(f"input of dtype {x.dtype}; give floats or integers")
    samples = q.shape[0]
    outs = []
    for start in range(0, samples, design.batch):
        chunk = np.zeros((design.batch, tin.features), dtype=np.int64)
        part = q[start:start + design.batch]
        chunk[: len(part)] = part
        outs.append(_iteration(design, chunk)[: len(part)])
    y = np.concatenate(outs) if outs else np.zeros((0, tout.features), dtype=np.int64)
    return y if raw else dequantize(y, tout.type)


def _iteration(design: Design, x: np.ndarray) -> np.ndarray:
    """One graph iteration: x [batch, features] integers in, the output integers out."""
    pin = next(p for p in design.plios if p.direction == "in")
    wire = np.zeros((design.batch, pin.row), dtype=np.int64)  # the PLIO carries whole words per sample
    wire[:, : x.shape[1]] = x
    streams: dict[str, np.ndarray] = {pin.name: wire.ravel()}  # what each kernel or PLIO port sends
    by_tensor = {m.tensor: m for m in design.memtile_buffers}
    for layer in design.layers:
        buf = _fill(by_tensor[layer.op.inputs[0]], streams)
        inputs = {peer: read_tiles(buf, a.tiling) for a in by_tensor[layer.op.inputs[0]].readers for peer in a.peers}
        cfg = layer.config
        out_t = design.graph.tensors[layer.op.outputs[0]].type
        for chain in range(cfg.cas_num):
            acc = None
            for stage in range(cfg.cas_length):
                kid = f"{layer.op.name}_c{chain}_s{stage}"
                acc = dense.kernel_partial(cfg, inputs[kid], layer.packed["weights"][chain, stage], acc)
            streams[kid] = dense.kernel_finish(cfg, acc, layer.packed["bias"][chain], layer.op.attrs["shift"],
                                               out_t, layer.op.attrs["relu"])
    last = by_tensor[design.graph.outputs[0]]
    buf = _fill(last, streams)
    (reader,) = last.readers
    tout = design.graph.tensors[design.graph.outputs[0]]
    pout = next(p for p in design.plios if p.direction == "out")
    return read_tiles(buf, reader.tiling).reshape(design.batch, pout.row)[:, : tout.features]


def _fill(m: MemtileBuffer, streams: dict[str, np.ndarray]) -> np.ndarray:
    """The memory-tile buffer after every writer has stored its stream, in the buffer's storage type."""
    buf = np.zeros(int(np.prod(m.dims)), dtype=np.int64)
    for a in m.writers:
        (peer,) = a.peers
        write_tiles(buf, a.tiling, streams[peer])
    return buf
