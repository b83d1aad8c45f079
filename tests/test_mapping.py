"""Every compiled design is legal: buffers fit their banks, kernels do not overlap, cascades run left to
right, the west column of each chain is free. Checked twice: by the independent checker, and here by
recounting from the design itself; and the checker is shown to catch each kind of fault."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

import aieflow
from aieflow.design import BankBuffer
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.mapping.check import check, violations
from aieflow.errors import MappingError

CASES = [
    ([16, 64, 32, 32, 5], 8, 8, "ve2802", 8),
    ([512] * 8, 8, 8, "ve2802", 8),
    ([300, 200, 100, 7], 16, 8, "ve2802", 16),
    ([64, 64, 64], 16, 16, "ve2802", 4),
    ([1, 1], 8, 8, "ve2802", 1),
    ([511, 129, 3], 8, 16, "ve3858", 13),
    ([256, 256, 256, 10], 8, 8, "ve3858", 2),
    ([100, 50], 8, 8, "ve2302", 8),
]


def _design(widths, act, weight, device, batch):
    return aieflow.compile(qdq_mlp(widths, act_bits=act, weight_bits=weight, seed=len(widths)),
                           device=device, batch=batch)


@pytest.fixture(scope="module", params=range(len(CASES)), ids=[f"{c[0][0]}x{len(c[0]) - 1}-{c[3]}" for c in CASES])
def design(request):
    return _design(*CASES[request.param])


def test_checker_finds_nothing(design):
    assert violations(design) == []


def test_banks_hold_their_buffers(design):
    gen = design.device.generation
    for t in design.tiles:
        load = Counter()
        for b in t.buffers:
            assert 0 <= b.bank < gen.banks
            assert b.bytes <= gen.bank_bytes
            load[b.bank] += b.bytes
        assert max(load.values()) <= gen.bank_bytes, t.id
        assert sum(load.values()) <= gen.data_memory_bytes


def test_no_two_kernels_overlap_and_all_in_range(design):
    spots = [(t.col, t.row) for t in design.tiles]
    assert len(spots) == len(set(spots))
    assert all(0 <= c < design.device.columns and 0 <= r < design.device.rows for c, r in spots)


def test_cascades_run_left_to_right(design):
    for layer in design.layers:
        tiles = {(t.chain, t.stage): t for t in design.kernels_of(layer.op.name)}
        assert len(tiles) == layer.config.cas_length * layer.config.cas_num
        for (chain, stage), t in tiles.items():
            if stage:
                west = tiles[(chain, stage - 1)]
                assert (west.col + 1, west.row) == (t.col, t.row)


def test_memtile_buffers_fit(design):
    gen = design.device.generation
    per_tile = Counter()
    for b in design.memtile_buffers:
        per_tile[(b.col, b.row)] += b.bytes
    assert max(per_tile.values()) <= gen.memtile_bytes
    assert len(design.memtile_buffers) >= len(design.layers) + 1 - len({l.tensor for l in design.links})


def test_json_summary_has_the_promised_keys(design):
    s = design.summary()
    for key in ("device", "tiles_used", "tiles_total", "memtile_buffers", "layers"):
        assert key in s
    for layer in s["layers"]:
        for key in ("name", "op", "cas_length", "cas_num", "tiles", "col", "row"):
            assert key in layer
    assert s["tiles_used"] == sum(l["tiles"] for l in s["layers"])


# --- the checker catches faults -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide():
    return _design([512, 512, 512, 10], 8, 8, "ve2802", 8)


def _with_tiles(design, tiles):
    return dataclasses.replace(design, tiles=tuple(tiles))


def test_checker_catches_overlap(wide):
    tiles = list(wide.tiles)
    tiles[1] = dataclasses.replace(tiles[1], col=tiles[0].col, row=tiles[0].row)
    assert any("both sit at" in v for v in violations(_with_tiles(wide, tiles)))
    with pytest.raises(MappingError, match="illegal design"):
        check(_with_tiles(wide, tiles))


def test_checker_catches_bank_overflow(wide):
    tiles = list(wide.tiles)
    moved = tuple(dataclasses.replace(b, bank=0) for b in tiles[0].buffers)
    tiles[0] = dataclasses.replace(tiles[0], buffers=moved)
    assert any("bank 0 holds" in v for v in violations(_with_tiles(wide, tiles)))


def test_checker_catches_wrong_buffer_size(wide):
    tiles = list(wide.tiles)
    bufs = list(tiles[0].buffers)
    bufs[0] = BankBuffer(bufs[0].name, bufs[0].bank, bufs[0].bytes // 2)
    tiles[0] = dataclasses.replace(tiles[0], buffers=tuple(bufs))
    assert any("recorded as" in v for v in violations(_with_tiles(wide, tiles)))


def test_checker_catches_broken_cascade_and_west_rule(wide):
    tiles = list(wide.tiles)
    i = next(k for k, t in enumerate(tiles) if t.stage == 1)
    tiles[i] = dataclasses.replace(tiles[i], row=tiles[i].row + 7)
    assert any("east neighbour" in v for v in violations(_with_tiles(wide, tiles)))
    # Move the second layer's first chain start right next to the first layer's last column.
    first = [t for t in wide.tiles if t.layer == wide.layers[0].op.name]
    edge = max(t.col for t in first)
    shifted = [dataclasses.replace(t, col=t.col - 1) if t.layer == wide.layers[1].op.name else t
               for t in wide.tiles]
    assert min(t.col for t in shifted if t.layer == wide.layers[1].op.name) == edge + 1
    assert any("west column free" in v for v in violations(_with_tiles(wide, shifted)))


def test_checker_catches_out_of_range_and_memtile_overflow(wide):
    tiles = list(wide.tiles)
    tiles[-1] = dataclasses.replace(tiles[-1], col=wide.device.columns)
    assert any("outside" in v for v in violations(_with_tiles(wide, tiles)))
    big = dataclasses.replace(wide.memtile_buffers[0], dims=(4096, 256))
    bad = dataclasses.replace(wide, memtile_buffers=(big,) + wide.memtile_buffers[1:])
    assert any("spans bytes" in v for v in violations(bad))


def test_layers_wrap_into_new_rows_when_columns_run_out():
    # Eight 4 x 4 layers with a free column each need 8 x 5 columns > 38: some go to the rows above.
    model = qdq_mlp([512] * 9, seed=2)
    names = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    d = aieflow.compile(model, layers={n: {"cas_length": 4, "cas_num": 4} for n in names})
    rows = {l["row"] for l in d.summary()["layers"]}
    assert len(rows) == 2 and violations(d) == [] and d.summary()["tiles_used"] == 128


def test_out_of_tiles_is_a_clear_error():
    with pytest.raises(MappingError, match="do not fit"):
        _design([512] * 20, 8, 8, "ve2802", 8)


def test_checker_catches_memtile_overlap_and_partial_plio_words(wide):
    a, b = wide.memtile_buffers[0], wide.memtile_buffers[1]
    clash = dataclasses.replace(b, col=a.col, row=a.row, offset=a.offset + 32)
    bad = dataclasses.replace(wide, memtile_buffers=(a, clash) + wide.memtile_buffers[2:])
    assert any("overlap" in v for v in violations(bad))
    pout = wide.plios[1]
    odd = dataclasses.replace(pout, row=pout.row + 1, elements=wide.batch * (pout.row + 1))
    assert any("whole 4-byte words" in v for v in violations(dataclasses.replace(wide, plios=(wide.plios[0], odd))))


def test_plio_samples_are_whole_words():
    d = _design([3, 5, 1], 8, 8, "ve2802", 1)
    pin, pout = d.plios
    assert (pin.row, pout.row) == (4, 4) and pin.elements == 4
