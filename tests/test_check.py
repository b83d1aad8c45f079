"""Each rule of the independent legality checker, shown a design that breaks it, refuses it."""

from __future__ import annotations

import dataclasses as dc

import numpy as np
import pytest

import aieflow
from aieflow.design import BankBuffer, DirectLink
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.mapping.check import violations


@pytest.fixture(scope="module")
def base():
    model = qdq_mlp([256, 256, 256, 40], seed=4)
    gemms = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    d = aieflow.compile(model, layers={gemms[0]: {"cas_length": 2, "cas_num": 4, "microtile": [4, 8, 8]},
                                       gemms[1]: {"cas_length": 4, "cas_num": 2, "microtile": [4, 8, 8]}})
    assert violations(d) == [] and d.links
    return d


def _tiles(d, i, **kw):
    tiles = list(d.tiles)
    tiles[i] = dc.replace(tiles[i], **kw)
    return dc.replace(d, tiles=tuple(tiles))


def _gen(d, **kw):
    return dc.replace(d, device=dc.replace(d.device, generation=dc.replace(d.device.generation, **kw)))


def _buffer(d, i, **kw):
    bufs = list(d.memtile_buffers)
    bufs[i] = dc.replace(bufs[i], **kw)
    return dc.replace(d, memtile_buffers=tuple(bufs))


def _first(d, layer_index=0, stage=None):
    name = d.layers[layer_index].op.name
    return next(i for i, t in enumerate(d.tiles) if t.layer == name and (stage is None or t.stage == stage))


def _cases(d):
    t0 = d.tiles[0]
    other = next(i for i, t in enumerate(d.tiles) if t.layer != t0.layer)
    layer0 = d.layers[0]
    reader_buf = next(i for i, b in enumerate(d.memtile_buffers) if b.readers and "_c" in b.readers[0].peers[0])
    rb = d.memtile_buffers[reader_buf]
    r0 = rb.readers[0].tiling
    yield "outside the array", _tiles(d, 0, col=d.device.columns + 1), "outside the"
    yield "overlap", _tiles(d, 1, col=t0.col, row=t0.row), "both sit at"
    yield "kernel grid incomplete", dc.replace(d, tiles=d.tiles[1:]), "kernels for a"
    bad_cfg = dc.replace(layer0.config, k_tile=layer0.config.k_tile + 1)
    yield "not whole microtiles", dc.replace(d, layers=(dc.replace(layer0, config=bad_cfg),) + d.layers[1:]), "not whole"
    small = dc.replace(layer0.config, n_tile=8)
    yield "grid does not cover", dc.replace(d, layers=(dc.replace(layer0, config=small),) + d.layers[1:]), "does not cover"
    i1 = next(i for i, t in enumerate(d.tiles) if t.stage == 1)
    yield "cascade not eastwards", _tiles(d, i1, row=d.tiles[i1].row + 6), "east neighbour"
    yield "west column taken", _tiles(d, other, col=t0.col - 1, row=t0.row) if t0.col > 0 else \
        _tiles(d, other, col=t0.col + 40), "west"
    yield "missing buffer", _tiles(d, 0, buffers=t0.buffers[1:]), "but the layer needs"
    bufs = list(t0.buffers)
    bufs[0] = BankBuffer(bufs[0].name, bufs[0].bank, bufs[0].bytes + 4)
    yield "wrong size", _tiles(d, 0, buffers=tuple(bufs)), "recorded as"
    yield "bank index", _tiles(d, 0, buffers=tuple(dc.replace(b, bank=7) if k == 0 else b
                                                    for k, b in enumerate(t0.buffers))), "in bank 7"
    yield "bank overflow", _gen(d, bank_bytes=2048), "bank"
    yield "program memory", _gen(d, program_memory_bytes=2048), "program memory"
    yield "memtile out of rows", _buffer(d, 0, row=9), "outside the memory-tile rows"
    yield "memtile capacity", _buffer(d, 0, offset=d.device.generation.memtile_bytes - 8), "spans bytes"
    yield "memtile alignment", _buffer(d, 0, offset=2), "not on a"
    b0 = d.memtile_buffers[0]
    yield "memtile overlap", _buffer(d, 1, col=b0.col, row=b0.row, offset=b0.offset), "overlap"
    yield "memtile channels", _gen(d, memtile_mm2s=1), "MM2S channels"
    yield "memtile descriptors", _gen(d, memtile_bds=2), "buffer descriptors"
    wrong = dc.replace(r0, buffer_dimension=(r0.buffer_dimension[0] + 1, r0.buffer_dimension[1]))
    yield "tiling buffer mismatch", _buffer(d, reader_buf, readers=(dc.replace(rb.readers[0], tiling=wrong),) + rb.readers[1:]), "views a"
    far = dc.replace(r0, offset=(r0.buffer_dimension[0], 0))
    yield "tiling outside", _buffer(d, reader_buf, readers=(dc.replace(rb.readers[0], tiling=far),) + rb.readers[1:]), "outside the buffer"
    yield "too many dimensions", _gen(d, memtile_dims=1), "addressing"
    yield "unwritten read", _buffer(d, reader_buf, writers=rb.writers[1:]), "no writer stores"
    yield "input fed twice", dc.replace(d, links=d.links + d.links[:1]), "fed 2 times"
    yield "input not fed", dc.replace(d, links=d.links[1:]), "fed 0 times"
    yield "writer not an output", _buffer(d, reader_buf, writers=(dc.replace(rb.writers[0], peers=(t0.layer + "_c0_s0",)),) + rb.writers[1:]) \
        if d.layers[0].config.cas_length > 1 else None, "is not a kernel output"
    yield "link from no output", dc.replace(d, links=(DirectLink(d.links[0].tensor, "nobody", d.links[0].sinks),) + d.links[1:]), "writes no output"
    yield "tile DMA channels", _gen(d, tile_dma_s2mm=0), "S2MM"
    yield "tile descriptors", _gen(d, tile_dma_bds=1), "buffer descriptors"
    pout = next(i for i, p in enumerate(d.plios) if p.direction == "out")
    plios = list(d.plios)
    plios[pout] = dc.replace(plios[pout], row=plios[pout].row + 1)
    yield "partial PLIO words", dc.replace(d, plios=tuple(plios)), "whole 4-byte words"
    plios = list(d.plios)
    plios[pout] = dc.replace(plios[pout], hi=plios[pout].hi - 8)
    yield "PLIO cover", dc.replace(d, plios=tuple(plios)), "exactly once"
    yield "no output PLIO", dc.replace(d, plios=tuple(p for p in d.plios if p.direction == "in")), "has no PLIO"
    yield "PLIO count", dc.replace(d, device=dc.replace(d.device, plio_outputs=0)), "output PLIOs"




def test_every_rule_refuses_its_violation(base):
    seen = 0
    for name, broken, phrase in _cases(base):
        if broken is None:
            continue
        found = violations(broken)
        assert any(phrase in v for v in found), f"{name}: expected '{phrase}' in {found}"
        seen += 1
    assert seen >= 30


def test_every_rule_function_is_exercised(base):
    """A new rule must come with a case above: each rule function fires on at least one case."""
    import aieflow.mapping.check as chk

    fired = set()
    for _, broken, _ in _cases(base):
        if broken is None:
            continue
        for rule in (chk._tiles_in_range_and_apart, chk._layers, chk._banks, chk._program_memory, chk._memory_tiles,
                     chk._tilings, chk._every_input_fed, chk._tile_dma, chk._plio):
            if rule(broken):
                fired.add(rule.__name__)
    assert fired == {"_tiles_in_range_and_apart", "_layers", "_banks", "_program_memory", "_memory_tiles",
                     "_tilings", "_every_input_fed", "_tile_dma", "_plio"}


@pytest.mark.parametrize("kind", ["requant", "add"])
def test_elementwise_kernels_must_cover_their_features(kind):
    """The add and requant families split features over kernels in whole vectors; a grid that falls short
    or cuts a vector is refused."""
    import aieflow
    from aieflow.ir import Graph, Op, Tensor
    from aieflow.ops.requant import requant_op
    from aieflow.numerics import FixedType

    t = FixedType(8, True, 4)
    tensors = {n: Tensor(n, (40,), t) for n in ("x", "y")}
    if kind == "requant":
        op = requant_op("elem", "x", "y", np.zeros(40, np.int64), 1)
        graph = Graph("g", tensors, (op,), ("x",), ("y",))
    else:
        op = Op("elem", "add", ("x", "x"), ("y",), {"relu": False, "shift_a": 0, "shift_b": 0, "shift": 1})
        graph = Graph("g", tensors, (op,), ("x",), ("y",))
    d = aieflow.compile(graph.validate())
    assert not violations(d)
    layer = d.layers[0]
    for bad in (dc.replace(layer.config, n_tile=layer.config.lanes),  # too few features
                dc.replace(layer.config, n_tile=layer.config.n_tile + 1)):  # not whole vectors
        found = violations(dc.replace(d, layers=(dc.replace(layer, config=bad),)))
        assert any("do not cover" in v for v in found), found
