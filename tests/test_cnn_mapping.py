"""CNN graphs through the whole mapping: conv and pool families, feature-map transport (windows with halos and
zero padding, row-sharded memory-tile buffers), the checker, and both emulators against the IR's own
integer semantics (exactness.evaluate), on random graphs built directly in the IR."""

from __future__ import annotations

import dataclasses as dc

import numpy as np
import pytest

import aieflow
from aieflow.exactness import evaluate
from aieflow.ir import Graph, Tensor
from aieflow.mapping.check import violations
from aieflow.numerics import FixedType, Rounding, Saturation, choose_multiplier
from aieflow.ops.add import add_op
from aieflow.ops.conv import conv_op, out_size
from aieflow.ops.dense import dense_op
from aieflow.ops.pool import pool_op

T8 = FixedType(8, True, 0)


def _random_cnn(seed: int):
    """A random 1-D or 2-D CNN of 1 to 4 feature-map layers (conv, depthwise conv, max/avg pool, residual
    add) ending in a global pool and a dense layer; types int8/uint8/int16, all rounding modes, ReLU, clip,
    multipliers and zero points on the outputs."""
    rng = np.random.default_rng(seed)
    dims = int(rng.integers(1, 3))
    h = 1 if dims == 1 else int(rng.integers(4, 13))
    w = int(rng.integers(6, 17))
    c = int(rng.integers(1, 20))
    xt = FixedType(16, True, 0) if rng.random() < 0.2 else T8
    order = (1, 0) if dims == 1 else (1, 2, 0)

    def shape(hh, ww, cc):
        return (ww, cc) if dims == 1 else (hh, ww, cc)

    tensors = {"x": Tensor("x", shape(h, w, c), xt, source_order=order)}
    ops = []
    cur, cur_t = "x", xt
    stats = []
    for i in range(int(rng.integers(1, 5))):
        kind = rng.choice(["conv", "conv", "dw", "pool", "add"])
        name = f"l{i}"
        if kind == "add" and i > 0:
            prev = ops[-1].inputs[0]
            pt = tensors[prev]
            if pt.shape == tensors[cur].shape and not pt.zero_point and not tensors[cur].zero_point:
                out = FixedType(8, True, min(pt.type.frac, cur_t.frac) - 1, Rounding.CONV_EVEN)
                tensors[name] = Tensor(name, tensors[cur].shape, out, source_order=order)
                ops.append(add_op(name, pt, tensors[cur], name, out, relu=bool(rng.random() < 0.5)))
                cur, cur_t = name, out
                continue
            kind = "conv"
        if kind == "pool":
            k = int(rng.integers(2, 4))
            s = int(rng.integers(1, k + 1))
            kh = 1 if dims == 1 else min(k, h)
            if w < k:
                continue
            ho, wo = out_size(h, kh, 1 if dims == 1 else s, 0, 0), out_size(w, k, s, 0, 0)
            mode = rng.choice(["max", "avg"])
            if mode == "max" or tensors[cur].zero_point:
                mode = "max"
                out, zp = cur_t, tensors[cur].zero_point
                op = pool_op(name, cur, name, "max", kernel=(kh, k), strides=(1 if dims == 1 else s, s),
                             pads=(0, 0, 0, 0))
            else:
                out, zp = FixedType(8, True, cur_t.frac, Rounding(rng.choice(list(Rounding)))), 0
                n = kh * k
                m, sh = choose_multiplier(1.0 / n) if n & (n - 1) else (1, n.bit_length() - 1)
                op = pool_op(name, cur, name, "avg", kernel=(kh, k), strides=(1 if dims == 1 else s, s),
                             pads=(0, 0, 0, 0), shift=sh, multiplier=m)
            tensors[name] = Tensor(name, shape(ho, wo, c), out, zero_point=zp, source_order=order)
            ops.append(op)
            h, w, cur, cur_t = ho, wo, name, out
            continue
        dw = kind == "dw"
        k = int(rng.integers(1, 6))
        kh = 1 if dims == 1 else min(k, h + 2)
        st = int(rng.integers(1, 3))
        sh_ = 1 if dims == 1 else st
        pad = [int(rng.integers(0, kh)) if dims == 2 else 0, int(rng.integers(0, k)),
               int(rng.integers(0, kh)) if dims == 2 else 0, int(rng.integers(0, k))]
        if tensors[cur].zero_point:
            pad = [0, 0, 0, 0]
        ho, wo = out_size(h, kh, sh_, pad[0], pad[2]), out_size(w, k, st, pad[1], pad[3])
        if ho < 1 or wo < 2:
            continue
        co = c if dw else int(rng.integers(1, 24))
        wbits = 16 if (cur_t.storage_bits == 8 and rng.random() < 0.15) else 8
        wlim = 1 << (wbits - 2)
        weight = rng.integers(-wlim, wlim, (kh, k, 1 if dw else c, co))
        unsigned = rng.random() < 0.25
        zp = int(rng.integers(0, 40)) if unsigned else 0
        out = FixedType(8, not unsigned, 0, Rounding(rng.choice(list(Rounding))),
                        Saturation.SATURATE if rng.random() < 0.8 else Saturation.SYMMETRIC)
        fan = kh * k * (1 if dw else c)
        bound = fan * cur_t.magnitude * wlim
        shift = max(0, bound.bit_length() - 9)
        mult = 1
        if rng.random() < 0.3:
            mult, shift = choose_multiplier(rng.uniform(0.3, 1.0) / (1 << shift))
        clip = None
        if rng.random() < 0.2:
            clip = (zp, zp + int(rng.integers(20, 100)))
        bias = rng.integers(-(1 << min(max(shift, 1), 12)), 1 << min(max(shift, 1), 12), co)
        ops.append(conv_op(name, cur, name, weight, bias, FixedType(wbits, True, 0), kernel=(kh, k),
                           strides=(sh_, st), pads=pad, shift=shift, multiplier=mult,
                           relu=bool(rng.random() < 0.5), depthwise=dw, clip=clip))
        tensors[name] = Tensor(name, shape(ho, wo, co), out, zero_point=zp, source_order=order)
        h, w, c, cur, cur_t = ho, wo, co, name, out
        stats.append(kind)
    gt = FixedType(8, True, cur_t.frac - 2)
    if tensors[cur].zero_point == 0:
        tensors["g"] = Tensor("g", shape(1, 1, c), gt, source_order=order)
        kh = 1 if dims == 1 else h
        ops.append(pool_op("gap", cur, "g", "avg", kernel=(kh, w), strides=(1, 1), pads=(0, 0, 0, 0),
                           shift=max(0, (kh * w).bit_length() - 1 - 2), multiplier=1))
        cur = "g"
    features = tensors[cur].features
    tensors["y"] = Tensor("y", (10,), FixedType(16, True, 0))
    ops.append(dense_op("fc", cur, "y", rng.integers(-50, 50, (features, 10)), rng.integers(-99, 99, 10), T8, 4))
    return Graph(f"cnn{seed}", tensors, tuple(ops), ("x",), ("y",)).validate()


def _inputs(graph: Graph, n: int, seed: int) -> np.ndarray:
    t = graph.tensors["x"]
    rng = np.random.default_rng(seed)
    q = rng.integers(t.type.qmin, t.type.qmax, (n, *t.source_shape), endpoint=True)
    q.reshape(-1)[:2] = (t.type.qmin, t.type.qmax)
    return q


@pytest.mark.parametrize("seed", range(24))
def test_random_cnn_emulators_equal_the_ir(seed):
    g = _random_cnn(seed)
    q = _inputs(g, 7, seed)
    want = evaluate(g, g.tensors["x"].from_source(q))["y"]
    for objective in ("resource", "throughput"):
        design = aieflow.compile(g, batch=int(np.random.default_rng(seed).choice([4, 8])), objective=objective)
        assert violations(design) == []
        assert np.array_equal(design.simulate(q, raw=True, fast=False), want)
        assert np.array_equal(design.simulate(q, raw=True, fast=True), want)


def test_a_map_read_by_more_kernels_than_a_memory_tile_serves_is_sharded_by_rows_with_halos():
    """The 3x3 convolution's row splits (more than a memory tile's 6 MM2S channels) read a 64x64x16 map
    from several memory tiles, each holding the rows its readers need, halo rows included."""
    rng = np.random.default_rng(5)
    tensors = {"x": Tensor("x", (64, 64, 8), T8, source_order=(1, 2, 0)),
               "a": Tensor("a", (64, 64, 16), T8, source_order=(1, 2, 0)),
               "b": Tensor("b", (64, 64, 8), T8, source_order=(1, 2, 0))}
    ops = (conv_op("c1", "x", "a", rng.integers(-9, 9, (1, 1, 8, 16)), np.zeros(16), T8, kernel=(1, 1),
                   strides=(1, 1), pads=(0, 0, 0, 0), shift=4),
           conv_op("c2", "a", "b", rng.integers(-9, 9, (3, 3, 16, 8)), np.zeros(8), T8, kernel=(3, 3),
                   strides=(1, 1), pads=(1, 1, 1, 1), shift=7))
    g = Graph("big", tensors, ops, ("x",), ("b",)).validate()
    design = aieflow.compile(g, batch=1, objective="throughput")
    assert violations(design) == []
    assert design.layer("c2").config.row_splits > design.device.generation.memtile_mm2s
    shards = [b for b in design.memtile_buffers if b.tensor == "a"]
    assert len(shards) > 1 and all(b.dims[2] < 64 for b in shards)
    assert sum(b.dims[2] for b in shards) > 64  # the halo rows are held twice
    q = _inputs(g, 2, 1)
    assert np.array_equal(design.simulate(q, raw=True, fast=False),
                          g.tensors["b"].to_source(evaluate(g, g.tensors["x"].from_source(q))["b"]))


def _small_design():
    rng = np.random.default_rng(2)
    tensors = {"x": Tensor("x", (6, 8, 4), T8, source_order=(1, 2, 0)),
               "y": Tensor("y", (6, 8, 8), T8, source_order=(1, 2, 0))}
    g = Graph("g", tensors, (conv_op("cv", "x", "y", rng.integers(-9, 9, (3, 3, 4, 8)), np.zeros(8), T8,
                                     kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), shift=4),), ("x",), ("y",))
    return aieflow.compile(g, batch=2)


def test_the_checker_catches_a_halo_without_padding_and_a_writer_past_the_buffer():
    design = _small_design()
    assert violations(design) == []
    i, buf = next((i, b) for i, b in enumerate(design.memtile_buffers) if b.tensor == "x")
    r = buf.readers[0]
    no_pad = dc.replace(r, tiling=dc.replace(r.tiling, boundary_dimension=None))
    bad = dc.replace(design, memtile_buffers=tuple(dc.replace(b, readers=(no_pad,)) if k == i else b
                                                   for k, b in enumerate(design.memtile_buffers)))
    assert any("without zero padding" in v for v in violations(bad))
    j, out = next((j, b) for j, b in enumerate(design.memtile_buffers) if b.tensor == "y")
    wr = out.writers[0]
    shifted = dc.replace(wr, tiling=dc.replace(wr.tiling, offset=(0, 0, 1, 0)))
    bad = dc.replace(design, memtile_buffers=tuple(dc.replace(b, writers=(shifted,)) if k == j else b
                                                   for k, b in enumerate(design.memtile_buffers)))
    assert any("outside the buffer" in v for v in violations(bad))


def test_the_checker_catches_conv_rows_and_channels_that_do_not_cover_the_map():
    design = _small_design()
    layer = design.layers[0]
    for change, words in (({"rows": layer.config.rows - 1}, "row splits"),
                          ({"n_tile": 0}, "cover"),
                          ({"strides": (2, 1)}, "window")):
        bad = dc.replace(design, layers=(dc.replace(layer, config=dc.replace(layer.config, **change)),))
        assert any(words in v for v in violations(bad)), change


def test_a_wrong_input_layout_is_one_clear_error():
    design = _small_design()
    with pytest.raises(aieflow.AieflowError, match=r"expects \[samples, 4, 6, 8\] \(NCHW"):
        design.simulate(np.zeros((2, 6, 8, 4)))


def test_the_performance_model_counts_conv_macs_and_their_share_of_the_peak():
    from aieflow.report.perf import predict

    design = _small_design()
    lp = predict(design).layers[0]
    assert lp.macs == 2 * 6 * 8 * 3 * 3 * 4 * 8  # batch x output pixels x window x in x out channels
    assert 0 < lp.mac_load <= 1
