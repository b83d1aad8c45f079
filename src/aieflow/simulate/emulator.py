"""The bit-exact emulator: runs a Design the way the emitted graph does.

Data move through the memory-tile buffers with the design's own DMA descriptors or straight from kernel
to kernel along its direct links; every kernel computes on its own packed parameters (the op family's
`emulate`), with the shift, rounding, saturation and ReLU recorded in the design. Inputs are processed in
graph iterations of `design.batch` samples, as the hardware does.
"""

from __future__ import annotations

import numpy as np

from ..design import Design, MemtileBuffer
from ..errors import DesignError
from ..inputs import check_input
from ..ops import family
from ..report.progress import progress
from ..tiling import read_tiles, write_tiles


def samples(design: Design, x) -> np.ndarray:
    """x, in the model's own layout, as [samples, features] in the compiler's order, checked by
    aieflow.inputs: floats finite, integers in the input type's range."""
    return check_input(x, design.graph.tensors[design.graph.inputs[0]], allow_empty=True)


def check_raw(design: Design, q: np.ndarray) -> np.ndarray:
    """Raw input integers, as samples() returns them (checked in range there), refused when not integers."""
    if q.dtype.kind not in "iu":
        raise DesignError(f"input of dtype {q.dtype}; give floats or integers")
    return q


def run(design: Design, x: np.ndarray, raw: bool = False) -> np.ndarray:
    """Outputs for inputs x (the model's own layout): floats are quantized, integers taken as they are; the
    outputs come back in the model's own layout too."""
    g = design.graph
    tin = g.tensors[g.inputs[0]]
    tout = g.tensors[g.outputs[0]]
    x = samples(design, x)
    q = tin.quantize(x) if x.dtype.kind == "f" else check_raw(design, x).astype(np.int64)
    outs = []
    for start in progress(range(0, q.shape[0], design.batch), description="emulating"):
        chunk = np.zeros((design.batch, tin.features), dtype=np.int64)
        part = q[start:start + design.batch]
        chunk[: len(part)] = part
        outs.append(_iteration(design, chunk)[: len(part)])
    y = np.concatenate(outs) if outs else np.zeros((0, tout.features), dtype=np.int64)
    return tout.to_source(y if raw else tout.dequantize(y))


def _iteration(design: Design, x: np.ndarray) -> np.ndarray:
    """One graph iteration: x [batch, features] integers in, the output integers out."""
    g = design.graph
    # What each kernel output port or PLIO sends this iteration.
    streams: dict[str, np.ndarray] = {}
    for p in design.plios:
        if p.direction == "in":
            wire = np.zeros((design.batch, p.row), dtype=np.int64)  # whole words per sample
            wire[:, : p.hi - p.lo] = x[:, p.lo:p.hi]
            streams[p.name] = wire.ravel()
    filled: dict[str, np.ndarray] = {}

    def buffer(m: MemtileBuffer) -> np.ndarray:
        if m.name not in filled:
            filled[m.name] = _fill(m, streams)
        return filled[m.name]

    for layer in design.layers:
        inputs: dict[str, np.ndarray] = {}
        for tensor in layer.op.inputs:
            for m in design.memtile_buffers:
                if m.tensor == tensor:
                    for a in m.readers:
                        stream = read_tiles(buffer(m), a.tiling)
                        inputs.update({peer: stream for peer in a.peers})
            for link in design.links:
                if link.tensor == tensor:
                    inputs.update({sink: streams[link.source] for sink in link.sinks})
        streams.update(family(layer.op.kind).emulate(layer, g, inputs))

    tout = g.tensors[g.outputs[0]]
    y = np.zeros((design.batch, tout.features), dtype=np.int64)
    for m in design.memtile_buffers:
        for a in m.readers:
            for p in design.plios:
                if p.direction == "out" and p.name in a.peers:
                    wire = read_tiles(buffer(m), a.tiling).reshape(design.batch, p.row)
                    y[:, p.lo:p.hi] = wire[:, : p.hi - p.lo]
    return y


def _fill(m: MemtileBuffer, streams: dict[str, np.ndarray]) -> np.ndarray:
    """The memory-tile buffer after every writer has stored its stream."""
    buf = np.zeros(int(np.prod(m.dims)), dtype=np.int64)
    for a in m.writers:
        (peer,) = a.peers
        write_tiles(buf, a.tiling, streams[peer])
    return buf
