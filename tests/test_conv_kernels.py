"""The conv and pool kernels (ops/conv/emit.py, ops/pool/emit.py) on the host, bit for bit against the emulator.

Small IR graphs, one layer each, take a configuration from the family's candidates(); every kernel of every
layer is driven alone from a C++ driver (tests/conv_kernel_driver.py, like test_requant_kernel's): its input
stream is built from a random map exactly as the memory tile's window read delivers it (zeros outside the
map: borders, halos past the map, channels past the last), the stages of a chain pass their partial sums on
host cascade queues, and each chain's output buffer is compared with the family's emulate(). All layers go
into one g++ build, compiled with AIEFLOW_HOST_CHECK_SIZES so that every vector and accumulator the kernels
use is one AIE-ML has, and with AddressSanitizer where g++ has it (a kernel reading or writing past its
buffers, which on the device corrupts silently, aborts the run; guard values past each output buffer check
the same without it). The layers cover: cascades of 1, 2 and 3 stages, several output-channel chains (and a
last chain of fewer channels), row splits with halos, strides 1 and 2 (and mixed), explicit padding on every
side, depthwise, 1-D maps, int8 / uint8 / int16 inputs, int8 and int16 weights (acc32 and acc64), every way
the kernel gathers A blocks (SPAN, WINDOW with and without a tail window, LANE) and stores column groups (1, 2,
4 blocks, whole and partial), requantization with a multiplier and zero points, ReLU, clip, left shifts,
several rounding and saturation modes, max pools with and without padding (and with row splits that see the
padding differently), average pools with and without padding, a multiplier, and a shift past 31 bits.
Wrong input (a window shifted by a row or a column) and a wrong constant in the emitted code make the
comparison fail, so these tests can fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import conv_kernel_driver as drv  # noqa: E402
from aieflow.numerics import FixedType, Rounding, Saturation, choose_multiplier  # noqa: E402
from aieflow.ops import family, part  # noqa: E402
from aieflow.ops.base import Window, kernel_id  # noqa: E402
from aieflow.ops.conv.emit import column_group, gather_mode  # noqa: E402

pytestmark = pytest.mark.skipif(drv.GXX is None, reason="needs g++")

I8, U8, I16 = FixedType(8, True, 0), FixedType(8, False, 0), FixedType(16, True, 0)


def _t(bits, signed, rounding=Rounding.CONV_EVEN, saturation=Saturation.SATURATE):
    return FixedType(bits, signed, 0, rounding, saturation)


def _is(**want):
    """A candidate predicate: every named field (or property) equal."""
    return lambda c: all(getattr(c, k) == v for k, v in want.items())


# (graph, candidate predicate, batch): one layer each.
def _cases():
    g, p = drv.conv_graph, drv.pool_graph
    m8 = choose_multiplier(0.37)[0]
    return [
        # int8, one stage, one chain: one channel block (SPAN, stride 1), a column group of 2 with one
        # channel fewer than a whole vector (stored lane by lane)
        (g("c_basic", (6, 9, 8), 15), _is(microtile=(4, 8, 8), cas_length=1, chains=1, row_splits=1), 2),
        # three stages (first, middle, last), WINDOW (K = 8: 128-bit windows of 2 blocks), column groups of 4
        # blocks of 4, a tail group of 3; ReLU
        (g("c_cas3", (5, 7, 40), 12, relu=True, seed=1),
         _is(microtile=(4, 8, 4), cas_length=3, chains=1, row_splits=1), 1),
        # whole column groups of 4 with M = 8; stride 2 in rows only; pads on the bottom and right only
        (g("c_g4", (9, 16, 16), 16, strides=(2, 1), pads=(0, 0, 2, 2), seed=2,
           y_type=_t(8, True, Rounding.FLOOR, Saturation.SYMMETRIC)),
         _is(microtile=(8, 8, 4), cas_length=2, chains=1, row_splits=1), 1),
        # stride 2 (2M pixels loaded, every other kept), asymmetric pads, two chains
        (g("c_s2", (9, 10, 8), 16, strides=(2, 2), pads=(0, 1, 2, 1), seed=3),
         _is(microtile=(4, 8, 8), cas_length=1, chains=2, row_splits=1), 2),
        # row splits with halos, cascades of 2, two chains of 16 and 4 channels (two kernel classes)
        (g("c_split", (8, 12, 24), 20, seed=4),
         _is(microtile=(4, 8, 8), cas_length=2, chains=2, row_splits=2), 1),
        # one stage of 24 channels: a WINDOW with a tail window ending at the pixel's last channel
        (g("c_tail", (4, 9, 24), 8, kernel=(2, 3), pads=(1, 2, 0, 0), seed=5),
         _is(microtile=(4, 8, 8), cas_length=1, chains=1, row_splits=1), 2),
        # a 1-D map, kernel 1x5, stride 2 along it, 16-channel blocks (SPAN of 2M pixels), 10 real channels
        (g("c_1d", (20, 12), 10, kernel=(1, 5), strides=(1, 2), pads=(0, 2, 0, 2), seed=6),
         _is(microtile=(2, 16, 8), cas_length=1, chains=1), 2),
        # uint8 in, uint8 out with zero point 128, a multiplier: requantize(); pads on top, left and right
        (g("c_req", (6, 6, 16), 16, pads=(2, 1, 0, 2), x_type=U8, y_type=_t(8, False), multiplier=m8,
           zero_point=128, seed=7), _is(microtile=(4, 16, 8), cas_length=1, chains=1, row_splits=2), 1),
        # int16 in, int8 weights (16x8): 12 channels in windows of 8 (a tail window), int16 out (groups of
        # 1), a left shift; floor rounding, saturation none
        (g("c_i16", (5, 8, 12), 8, strides=(2, 1), x_type=I16, y_type=_t(16, True, Rounding.FLOOR, Saturation.NONE),
           shift=-2, seed=8, w_range=3), _is(microtile=(4, 4, 8), cas_length=1, chains=1), 1),
        # int8 in, int16 weights (8x16): K = 4, windows of 4 blocks with a tail; clip [-20, 90] and ReLU
        (g("c_w16", (5, 6, 20), 16, w_bits=16, relu=True, clip=(-20, 90), seed=9),
         _is(microtile=(4, 4, 8), cas_length=1, chains=1, row_splits=1), 1),
        # 8x16, 12 channels: pixels of 96 bits, three blocks: lane by lane (LANE)
        (g("c_lane", (4, 6, 12), 8, w_bits=16, y_type=_t(16, True), seed=10),
         _is(microtile=(4, 4, 8), cas_length=1), 1),
        # 8x16, 8 channels, stride 2: a SPAN of 2 blocks per pixel over 2M pixels (four K-lane groups)
        (g("c_span", (7, 9, 8), 8, w_bits=16, strides=(2, 2), seed=11),
         _is(microtile=(4, 4, 8), cas_length=1), 1),
        # int16 x int16 (acc64, 64-bit bias): cascade of 2, column groups of 4 (int8 out), zero point -3
        (g("c_acc64", (4, 6, 16), 16, x_type=I16, w_bits=16, y_type=_t(8, True, Rounding.SYMMETRIC_INF),
           zero_point=-3, seed=12, w_range=200), _is(microtile=(4, 4, 4), cas_length=2, chains=1), 1),
        # depthwise int8, two chains (16 and 4 channels)
        (g("d_basic", (5, 8, 20), 20, depthwise=True, seed=13), _is(chains=2, row_splits=1), 2),
        # depthwise int16 x int16 (acc64), stride 2, asymmetric pads, row splits
        (g("d_i16", (10, 9, 16), 16, depthwise=True, x_type=I16, w_bits=16, y_type=_t(16, True),
           strides=(2, 2), pads=(1, 0, 2, 2), seed=14, w_range=300), _is(chains=1, row_splits=2), 1),
        # depthwise uint8 in, ReLU6-style clip, 1-D map
        (g("d_1d", (12, 16), 16, depthwise=True, x_type=U8, kernel=(1, 3), pads=(0, 1, 0, 1), relu=True,
           clip=(0, 60), seed=15), _is(chains=1), 2),
        # max pool with padding: three row splits (first, middle, last see the padding differently), two
        # channel groups of 16 and 4
        (p("p_max", (6, 8, 20), "max", kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
         _is(chains=2, row_splits=3), 1),
        # max pool without padding, uint8 with a zero point (kept)
        (p("p_max_u8", (6, 8, 16), "max", x_type=U8, zero_point=128), _is(chains=1), 2),
        # max pool, int16, a 1-D map padded on the right only
        (p("p_max_1d", (9, 16), "max", x_type=I16, kernel=(1, 2), strides=(1, 2), pads=(0, 0, 0, 1)),
         _is(chains=1), 1),
        # average pool 2x2, no padding: shift 2
        (p("p_avg", (6, 8, 16), "avg", shift=2, y_type=_t(8, True, Rounding.CONV_EVEN)), _is(chains=1), 2),
        # average pool 3x3 with padding: a multiplier for 1/9, uint8 out at zero point 128, row splits
        (p("p_avg_pad", (6, 6, 16), "avg", kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1),
           multiplier=choose_multiplier(1 / 9)[0], shift=choose_multiplier(1 / 9)[1], y_type=_t(8, False),
           zero_point=128), _is(chains=1, row_splits=2), 1),
        # global average pool of int16: one output pixel, a shift past 31 bits (acc64 finish)
        (p("p_avg_global", (4, 4, 16), "avg", x_type=I16, kernel=(4, 4), strides=(1, 1), shift=33,
           y_type=_t(16, True, Rounding.POSITIVE_INF)), _is(chains=1), 2),
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    graphs, layers = [], []
    for graph, pick, batch in _cases():
        graphs.append(graph)
        layers.append(drv.layer_of(graph, batch, pick))
    design, layers = drv.stand_in(graphs, layers)
    files, names, frags = drv.render(design, layers)
    root = tmp_path_factory.mktemp("conv_kernels")
    exe = drv.build(root, files, layers, names, frags, drv.sanitizer_flags())
    feeds, expected, maps = drv.feeds_and_expected(design, layers, seed=21)
    return {"design": design, "layers": layers, "files": files, "names": names, "frags": frags, "exe": exe,
            "feeds": feeds, "expected": expected, "maps": maps, "root": root}


def _split(got: np.ndarray, layers, expected) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(layer, chain) -> (host, emulator) output streams."""
    out, at, i = {}, 0, 0
    assert got.size == sum(e.size for e in expected)
    for l in layers:
        for c in range(l.config.cas_num):
            w = expected[i]
            out[(l.op.name, c)] = (got[at:at + w.size], w)
            at, i = at + w.size, i + 1
    return out


def test_the_layers_cover_the_kernels_cases(built):
    layers = built["layers"]
    conv = [l.config for l in layers if l.op.kind == "conv" and not l.config.depthwise]
    dw = [l.config for l in layers if l.op.kind == "conv" and l.config.depthwise]
    pools = [l.config for l in layers if l.op.kind == "pool"]
    every = conv + dw + pools
    assert {c.cas_length for c in conv} >= {1, 2, 3}
    assert any(c.chains > 1 and c.n_out(c.chains - 1) < c.n_tile for c in every)
    assert any(c.row_splits > 1 and c.cas_length > 1 for c in conv) and any(c.row_splits > 1 for c in dw + pools)
    assert {c.strides for c in every} >= {(1, 1), (2, 2), (2, 1), (1, 2)}
    assert all(any(c.pads[side] > 0 for c in conv) for side in range(4))
    assert any(c.in_shape[0] == 1 for c in conv) and any(c.in_shape[0] == 1 for c in dw + pools)
    assert {c.act_bits for c in conv} == {8, 16} and {c.weight_bits for c in conv} == {8, 16}
    assert {c.acc_bits for c in conv} == {32, 64} and {c.acc_bits for c in dw} == {32, 64}
    assert {gather_mode(c)[0] for c in conv} == {"SPAN", "WINDOW", "LANE"}
    assert any(gather_mode(c)[0] == "WINDOW" and c.k_tile % gather_mode(c)[1] for c in conv)  # a tail window
    assert any(gather_mode(c)[0] == "SPAN" and c.k_tile > c.microtile[1] for c in conv)  # several blocks
    assert {column_group(c) for c in conv} == {1, 2, 4}
    assert any((c.n_tile // c.microtile[2]) % column_group(c) for c in conv)  # a tail group
    assert any(c.n_tile // c.microtile[2] >= column_group(c) > 1 for c in conv)  # a whole group of several
    g = built["design"].graph
    types = {g.tensors[l.op.inputs[0]].type.storage for l in layers}
    assert types == {"int8", "uint8", "int16"}
    ops = [l.op for l in layers]
    assert any(o.attrs.get("multiplier", 1) != 1 and g.tensors[o.outputs[0]].zero_point for o in ops if o.kind == "conv")
    assert any(o.attrs.get("clip") for o in ops) and any(o.attrs.get("relu") for o in ops)
    assert any(o.kind == "conv" and o.attrs["shift"] < 0 for o in ops)
    assert {(c.mode, any(c.pads)) for c in pools} == {("max", True), ("max", False), ("avg", True), ("avg", False)}


def test_kernels_on_the_host_equal_the_emulator(built):
    got = drv.run(built["exe"], built["feeds"])
    pairs = _split(got, built["layers"], built["expected"])
    for (name, chain), (host, want) in pairs.items():
        assert host.shape == want.shape, (name, chain)
        bad = np.flatnonzero(host != want)
        assert bad.size == 0, f"{name} chain {chain}: {bad.size} of {want.size} differ, first at {bad[:5]}: " \
                              f"host {host[bad[:5]]}, emulator {want[bad[:5]]}"
    # The values are not all saturated: the comparison sees the arithmetic, not just the clamps.
    g = built["design"].graph
    for l in built["layers"]:
        if l.op.name == "p_avg_global":
            continue  # a shift past 31 bits: every value rounds to 0 or 1
        y = g.tensors[l.op.outputs[0]].type
        values = np.concatenate([pairs[(l.op.name, c)][1] for c in range(l.config.cas_num)])
        inside = np.mean((values > y.qmin) & (values < y.qmax))
        assert inside > 0.3 and np.unique(values).size > 8, (l.op.name, inside)


def test_the_streams_are_the_memory_tiles_windows(built):
    """The driver's input streams put together by the family's own windows give the layer's output:
    emulate() on them, assembled through output_slices, equals evaluate() on the maps."""
    g = built["design"].graph
    for l in built["layers"]:
        fam = family(l.op.kind)
        x = built["maps"][l.op.name]
        out = fam.emulate(l, g, drv.input_streams(l, x))
        y_t = g.tensors[l.op.outputs[0]]
        from aieflow.ops.base import map_dims

        c, w, h = map_dims(y_t.shape)
        y = np.zeros((x.shape[0], h, w, c), dtype=np.int64)
        for win in fam.output_slices(l.op, l.config):
            (c0, w0, h0), (cs, ws, hs) = win.offset, win.size
            y[:, h0:h0 + hs, w0:w0 + ws, c0:c0 + cs] = np.asarray(out[win.peers[0]]).reshape(-1, hs, ws, cs)
        want = fam.evaluate(l.op, g, {l.op.inputs[0]: x.reshape(x.shape[0], -1)})
        np.testing.assert_array_equal(y.reshape(x.shape[0], -1), want)


def _shifted_feeds(built, name: str, shift: tuple[int, int]) -> list[np.ndarray]:
    """The driver's input with layer `name`'s windows moved by (rows, columns)."""
    feeds = []
    for l in built["layers"]:
        x = built["maps"][l.op.name]
        streams = drv.input_streams(l, x)
        if l.op.name == name:
            for win in family(l.op.kind).input_slices(l.op, l.config, 0):
                (c0, w0, h0) = win.offset
                moved = Window((c0, w0 + shift[1], h0 + shift[0]), win.size, win.peers)
                for peer in win.peers:
                    streams[peer] = drv.window_stream(x, moved)
        for c in range(l.config.cas_num):
            for s in range(l.config.cas_length):
                feeds.append(streams[kernel_id(l.op.name, c, s)])
    return feeds


@pytest.mark.parametrize("name, shift", [("c_split", (1, 0)), ("c_s2", (0, 1)), ("p_max", (1, 0)),
                                         ("d_i16", (0, -1))])
def test_a_wrong_halo_or_padding_fails(built, name, shift):
    """A window read one row or column off (a wrong halo, a wrong border) changes the kernels' output."""
    got = drv.run(built["exe"], _shifted_feeds(built, name, shift))
    pairs = _split(got, built["layers"], built["expected"])
    assert any(not np.array_equal(h, w) for (n, _), (h, w) in pairs.items() if n == name)
    assert all(np.array_equal(h, w) for (n, _), (h, w) in pairs.items() if n != name)


def test_a_wrong_constant_in_the_emitted_code_fails(built, tmp_path):
    """Rebuilt with one number changed in a layer header (a conv's SHIFT, a max pool's first column on
    the map), the kernels no longer match the emulator."""
    keep = ["c_basic", "p_max"]
    layers = [l for l in built["layers"] if l.op.name in keep]
    names = {n: built["names"][n] for n in keep}
    files = {rel: text for rel, text in built["files"].items()
             if not rel.endswith((".h", ".cpp")) or "aieflow" in rel or "dense" in rel
             or any(f"/{names[n]}." in rel for n in keep)}
    conv_h = files["src/kernels/c_basic.h"]
    shift = int(re.search(r"int SHIFT = (-?\d+);", conv_h).group(1))
    files["src/kernels/c_basic.h"] = conv_h.replace(f"int SHIFT = {shift};", f"int SHIFT = {shift + 1};")
    pool_h = files["src/kernels/p_max.h"]
    assert "int VC_LO = 1;" in pool_h
    files["src/kernels/p_max.h"] = pool_h.replace("int VC_LO = 1;", "int VC_LO = 0;")
    exe = drv.build(tmp_path, files, layers, names, {n: built["frags"][n] for n in keep})
    order = [i for i, l in enumerate(built["layers"]) if l.op.name in keep]
    feeds, expected, at, k = [], [], 0, 0
    for i, l in enumerate(built["layers"]):
        n = l.config.cas_num * l.config.cas_length
        if i in order:
            feeds += built["feeds"][at:at + n]
            expected += built["expected"][k:k + l.config.cas_num]
        at, k = at + n, k + l.config.cas_num
    pairs = _split(drv.run(exe, feeds), layers, expected)
    for n in keep:
        assert any(not np.array_equal(h, w) for (m, _), (h, w) in pairs.items() if m == n), n


def test_graph_code_is_what_the_host_run_reads(built):
    """Every kernel is created with the class its role and channel count need and the parameter arrays of
    its tile; buffer sizes are the windows' and the outputs'; the data ports are the fragment's."""
    for l in built["layers"]:
        cfg, ns = l.config, built["names"][l.op.name]
        frag = built["frags"][l.op.name]
        created = drv.created_classes(frag.body)
        emit = part(l.op.kind, "emit")
        header = built["files"][f"src/kernels/{ns}.h"]
        assert set(created) == {f"{ns}_c{c}_s{s}" for c in range(cfg.cas_num) for s in range(cfg.cas_length)}
        for c in range(cfg.cas_num):
            for s in range(cfg.cas_length):
                member = f"{ns}_c{c}_s{s}"
                cls, arrays = created[member]
                role = cls.rsplit("::", 1)[-1]
                assert role in ("single", "first", "middle", "last")
                if "::" in cls[len(ns) + 2:]:
                    assert f"namespace {cls.split('::')[1]} {{" in header
                if l.op.kind == "conv":
                    want = [f"{member}_weights"] + ([f"{ns}_c{c}_bias"] if role in ("single", "last") else [])
                    assert arrays == want
                    params = built["files"][f"src/params/{ns}.h"]
                    assert all(f" {a}[" in params for a in arrays)
                    in_elems = cfg.batch * cfg.rows_in * cfg.cols_in * cfg.k_tile
                else:
                    assert arrays == []
                    in_elems = cfg.batch * cfg.rows_in * cfg.cols_in * cfg.n_tile
                assert f"adf::dimensions({member}.in[0]) = {{{in_elems}}};" in frag.body
                if role in ("single", "last"):
                    out = emit.host_output_elements(cfg, c)
                    assert f"adf::dimensions({member}.out[0]) = {{{out}}};" in frag.body
                    assert frag.data_out[kernel_id(l.op.name, c, s)] == f"{member}.out[0]"
                if s > 0:
                    assert f"adf::connect({ns}_c{c}_s{s - 1}.out[0], {member}.in[1]);" in frag.body
                assert frag.data_in[kernel_id(l.op.name, c, s)] == f"{member}.in[0]"
        # a class per distinct channel count (and, for max pools, rows on the map)
        nouts = {cfg.n_out(j) for j in range(cfg.chains)}
        assert len({created[m][0] for m in created}) >= len(nouts)


# Every AIE API name the kernels use, each checked in AMD's aie_api headers (github.com/Xilinx/aie_api,
# include/aie_api/aie.hpp, vector.hpp, accum.hpp, mmul in detail/mmul.hpp): the free functions and types
# in namespace aie, and the member functions called on vectors, accumulators and mmuls.
AIE_API = {"vector", "accum", "mmul", "load_v", "load_unaligned_v", "store_v", "store_unaligned_v", "zeros",
           "concat", "filter_even", "filter_odd", "interleave_zip", "add", "mul", "mac", "max", "min",
           "upshift", "downshift", "set_rounding", "set_saturation", "rounding_mode", "saturation_mode"}
MEMBERS = {"insert", "extract", "get", "set", "mac", "to_accum", "to_vector", "from_vector_sign", "first",
           "second", "data"}


def test_the_kernels_use_only_the_aie_api(built):
    files = {rel: t for rel, t in built["files"].items() if rel.startswith("src/kernels/")}
    used = set()
    for text in files.values():
        used |= set(re.findall(r"\baie::(\w+)", text))
    assert used <= AIE_API, used - AIE_API
    shared = built["files"]["src/kernels/aieflow_conv.h"] + built["files"]["src/kernels/aieflow_pool.h"]
    members = set(re.findall(r"[\w\])]\.(?:template )?(\w+)[<(]", shared))
    assert members <= MEMBERS, members - MEMBERS
    assert {"readincr_v", "writeincr"} <= set(re.findall(r"\b(readincr_v|writeincr)\b", shared))


def test_dense_h_is_one_file_for_every_family(built):
    """Conv and pool layers finish with dense.h: every family writes the same text, with requantize() when
    any layer that finishes with it requantizes (here a conv and a pool do; no dense layer is there)."""
    from aieflow.ops.dense.emit import shared_header, shared_requant

    design = built["design"]
    assert shared_requant(design)
    text = shared_header(design)
    assert "requantize(" in text
    assert built["files"]["src/kernels/dense.h"] == text
    plain = SimpleNamespace(graph=design.graph,
                            layers=tuple(l for l in built["layers"] if l.op.name in ("c_basic", "p_max")))
    assert not shared_requant(plain) and "requantize(" not in shared_header(plain)


def test_host_harness_compiles_with_a_cascade_of_every_role(built):
    """The header's classes take the arguments aieflow.host.run passes (parameter copies, then inputs,
    cascade ports, output buffer): checked by compiling calls in the harness's own spelling."""
    l = next(l for l in built["layers"] if l.op.name == "c_cas3")
    ns = built["names"][l.op.name]
    root = built["root"]
    lines = ["#include <adf.h>", "#include <cstring>", "#include <type_traits>", "#include <vector>",
             f'#include "kernels/{ns}.h"', f'#include "params/{ns}.h"', "int main() {",
             "    cascade_words link[3];"]
    created = drv.created_classes(built["frags"][l.op.name].body)
    for s in range(3):
        cls, arrays = created[f"{ns}_c0_s{s}"]
        names = []
        for j, arr in enumerate(arrays):
            v = f"P{s}_{j}"
            lines += [f"    alignas(64) static std::remove_cv_t<std::remove_extent_t<decltype({arr})>> {v}[std::extent_v<decltype({arr})>];",
                      f"    std::memcpy({v}, {arr}, sizeof {v});"]
            names.append(v)
        lines.append(f"    static {cls} K{s}{{{', '.join(names)}}};")
    lines += ["    (void)K0; (void)K1; (void)K2; return 0;", "}", ""]
    (root / "harness_check.cpp").write_text("\n".join(lines))
    done = subprocess.run([drv.GXX, "-std=c++20", "-fsyntax-only", "-I", str(drv.include_dir()), "-I", "src",
                           "-I", "src/kernels", "harness_check.cpp"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


_MODEL_CHECK = r"""
#include <aie_api/aie.hpp>
#include <cstdio>
int main()
{
    aie::vector<int8, 16> a, b;
    aie::vector<int16, 16> h;
    for (unsigned i = 0; i < 16; ++i) {
        a.set(int8(int(i) * 9 - 70), i);
        b.set(int8(int(i) * 13 - 100), i);
        h.set(int16(int(i) * 2100 - 16000), i);
    }
    for (unsigned c : {1u, 2u, 4u, 8u, 16u}) {
        const auto z = aie::interleave_zip(a, b, c);
        for (unsigned i = 0; i < 16; ++i) std::printf("%d ", int(z.first.get(i)));
        for (unsigned i = 0; i < 16; ++i) std::printf("%d ", int(z.second.get(i)));
    }
    aie::accum<acc32, 16> acc = aie::mac(aie::zeros<acc32, 16>(), h, a);
    acc = aie::add(aie::add(acc, b), int32(-12345));
    const aie::accum<acc64, 16> wide = aie::mac(aie::zeros<acc64, 16>(), h, h);
    for (unsigned i = 0; i < 16; ++i) std::printf("%lld %lld ", (long long)acc.lane[i], (long long)wide.lane[i]);
    alignas(32) int16 mem[48];
    for (unsigned i = 0; i < 48; ++i) mem[i] = int16(i * 7 - 100);
    const aie::vector<int16, 8> u = aie::load_unaligned_v<8>(mem + 4, 4);
    aie::store_unaligned_v(mem + 22, u, 2);
    for (unsigned i = 0; i < 48; ++i) std::printf("%d ", int(mem[i]));
    const aie::vector<uint8, 32> z = aie::zeros<uint8, 32>();
    for (unsigned i = 0; i < 32; ++i) std::printf("%d ", int(z.get(i)));
    std::printf("\n");
    return 0;
}
"""


def test_host_model_additions_match_their_definitions(tmp_path):
    """The AIE API model's functions the conv and pool kernels added (interleave_zip, elementwise mac, add
    of a vector or a value to an accumulator, zeros, unaligned loads and stores) against numpy."""
    (tmp_path / "check.cpp").write_text(_MODEL_CHECK)
    done = subprocess.run([drv.GXX, *drv.CXXFLAGS, "-I", str(drv.include_dir()), "check.cpp", "-o", "check"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = subprocess.run([str(tmp_path / "check")], capture_output=True, text=True, check=True)
    got = np.array([int(v) for v in out.stdout.split()], dtype=np.int64)
    i = np.arange(16)
    a, b, h = i * 9 - 70, i * 13 - 100, i * 2100 - 16000
    want = []
    for c in (1, 2, 4, 8, 16):
        zipped = np.stack([a.reshape(-1, c), b.reshape(-1, c)], axis=1).ravel()
        want.append(zipped)
    acc = h * a + b - 12345
    want.append(np.stack([acc, h * h], axis=1).ravel())
    mem = np.arange(48) * 7 - 100
    mem[22:30] = mem[4:12].copy()
    want += [mem, np.zeros(32, dtype=np.int64)]
    np.testing.assert_array_equal(got, np.concatenate(want))
