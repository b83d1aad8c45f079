"""Pictures of a placement: `plot_design` (PNG / SVG, deterministic) and the `placement_text` map."""

from __future__ import annotations

import dataclasses
import re

import pytest

import aieflow
from aieflow.design import Access, DirectLink, Design, KernelTile, Plio
from aieflow.errors import AieflowError, DesignError
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.report.plot import placement_text, plot_design, short_names


_ROW = re.compile(r"^row +(\d+) \|(.*)\|$")
_MEM = re.compile(r"^mem +(\d+) \|(.*)\|$")
_SHIM = re.compile(r"^shim +\|(.*)\|$")


@pytest.fixture(scope="module")
def chain() -> Design:
    """Cascade chains (4 x 2) feeding a single kernel, on the VE2802 (two memory-tile rows)."""
    return aieflow.compile(qdq_mlp([512, 256, 32]), device="ve2802")


@pytest.fixture(scope="module")
def v3858() -> Design:
    return aieflow.compile(qdq_mlp([256, 512, 64]), device="ve3858")


@pytest.fixture(scope="module")
def busy(chain) -> Design:
    """What the mapping may produce next: direct links, input ports .in1, crowded memory tiles and shim cells,
    a vertical cascade and a layer that only the tiles name."""
    base = chain.memtile_buffers[0]
    taken = {b.col for b in chain.memtile_buffers}
    col = next(c for c in reversed(range(chain.device.columns)) if c not in taken)
    extra = "extra_layer_with_a_long_name"
    tiles = chain.tiles + tuple(KernelTile(extra, 0, s, 20, 6 - s, ()) for s in range(3))
    side = tuple(dataclasses.replace(base, name=f"side{i}", tensor=f"side_tensor_{i}", col=col, row=0,
                                     writers=(Access(base.writers[0].tiling, (f"in_{i + 1}",)),),
                                     readers=(Access(base.readers[0].tiling, (f"{extra}_c0_s0.in1",)),))
                 for i in range(4))
    plios = chain.plios + tuple(Plio(f"in_{i + 1}", "in", f"side_tensor_{i}", 128, 0, 16, 16, 128) for i in range(4))
    first, second = chain.layers[0].op.name, chain.layers[1].op.name
    links = (DirectLink("t", f"{first}_c0_s1", (f"{second}_c0_s0.in1",)),
             DirectLink("u", f"{extra}_c0_s2", (f"{first}_c3_s0", "no_such_kernel")))
    return dataclasses.replace(chain, tiles=tiles, memtile_buffers=chain.memtile_buffers + side, plios=plios,
                               links=links)


@pytest.mark.parametrize("which, suffix", [("chain", ".png"), ("chain", ".svg"), ("v3858", ".png"),
                                           ("v3858", ".svg"), ("busy", ".svg")])
def test_writes_picture(which, suffix, request, tmp_path):
    design = request.getfixturevalue(which)
    out = plot_design(design, tmp_path / "sub" / f"placement{suffix}")
    assert out == tmp_path / "sub" / f"placement{suffix}" and out.stat().st_size > 10_000
    if suffix == ".png":
        assert out.read_bytes().startswith(b"\x89PNG")
        return
    svg = out.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    for name in {t.layer for t in design.tiles} | {layer.op.name for layer in design.layers}:
        assert name in svg
    assert design.device.name in svg
    assert ("direct link" in svg) == bool(design.links)


def test_title_override(chain, tmp_path):
    assert "My placement" in plot_design(chain, tmp_path / "p.svg", title="My placement").read_text()


@pytest.mark.parametrize("suffix", [".png", ".SVG"])
def test_two_writes_are_identical(chain, suffix, tmp_path):
    a = plot_design(chain, tmp_path / f"a{suffix}").read_bytes()
    b = plot_design(chain, tmp_path / f"b{suffix}").read_bytes()
    assert a == b


def test_leaves_matplotlib_settings_alone(chain, tmp_path):
    import matplotlib

    before = dict(matplotlib.rcParams)
    plot_design(chain, tmp_path / "p.svg")
    assert dict(matplotlib.rcParams) == before


@pytest.mark.parametrize("name", ["placement.pdf", "placement", "placement.png.txt"])
def test_unknown_format_refused(chain, name, tmp_path):
    with pytest.raises(DesignError, match="png or .svg") as err:
        plot_design(chain, tmp_path / name)
    assert isinstance(err.value, AieflowError)
    assert not (tmp_path / name).exists()


def _grid(text: str, pattern: re.Pattern) -> dict[int, str]:
    return {int(m[1]): m[2] for m in map(pattern.match, text.splitlines()) if m}


@pytest.mark.parametrize("which", ["chain", "v3858", "busy"])
def test_placement_text_has_each_tile_where_it_is(which, request):
    design = request.getfixturevalue(which)
    text = placement_text(design)
    rows = _grid(text, _ROW)
    dev = design.device
    assert sorted(rows) == list(range(dev.rows)) and all(len(r) == dev.columns for r in rows.values())
    order = [layer.op.name for layer in design.layers]
    for t in design.tiles:  # a layer only the tiles name comes after design.layers
        if t.layer not in order:
            order.append(t.layer)
    letter = {name: chr(ord("A") + i) for i, name in enumerate(order)}
    for t in design.tiles:
        assert rows[t.row][t.col] == letter[t.layer], t.id
    used = {(t.col, t.row) for t in design.tiles}
    assert sum(ch != "." for r in rows.values() for ch in r) == len(used) == len(design.tiles)
    for name, ch in letter.items():
        assert f"  {ch}  {name}" in text


def test_placement_text_memory_tiles_and_shim(busy):
    text = placement_text(busy)
    mems = _grid(text, _MEM)
    assert sorted(mems) == list(range(busy.device.memtile_rows))
    counts = {}
    for b in busy.memtile_buffers:
        counts[(b.col, b.row)] = counts.get((b.col, b.row), 0) + 1
    for (col, row), n in counts.items():
        assert mems[row][col] == str(n)
    assert sum(ch != "." for r in mems.values() for ch in r) == len(counts)
    shim = next(m[1] for m in map(_SHIM.match, text.splitlines()) if m)
    side = busy.memtile_buffers[-1].col
    assert shim[side] == "^"  # the four side inputs share one column
    assert "v" in shim and sum(ch != "." for ch in shim) >= 2


def test_short_names():
    assert short_names(["fc0_gemm_Gemm", "fc1_gemm_Gemm"]) == {"fc0_gemm_Gemm": "fc0", "fc1_gemm_Gemm": "fc1"}
    assert short_names(["a_x_1", "a_y_1"]) == {"a_x_1": "a_x", "a_y_1": "a_y"}
    assert short_names(["dense"]) == {"dense": "dense"}
