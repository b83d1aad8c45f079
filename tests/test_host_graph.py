"""The host graph model (aieflow.host.graph): the emitted src/graph.h, built against the host ADF headers,
records exactly the design's kernels, tiles, cascades, direct links, memory-tile buffers (dims, location,
every access's tiling and peers) and PLIOs; an emission that strays from the design is reported."""

from __future__ import annotations

import re
import shutil

import pytest

import aieflow
from aieflow.examples.onnx_qdq import jet_tagger, qdq_mlp
from aieflow.examples.graphs import qdq_graph
from aieflow.host.graph import compare, expected_edges, record_graph

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")


def _residual():
    """A residual graph (Adds, direct links) with one dense layer forced into 2 chains of 3."""
    return aieflow.compile(qdq_graph(0), batch=4, layers={"fc1_gemm_Gemm": {"cas_length": 3, "cas_num": 2}})


DESIGNS = {
    "jet_tagger": lambda: aieflow.compile(jet_tagger()),
    "residual_cascade": _residual,
    "int16": lambda: aieflow.compile(qdq_mlp([64, 96, 48, 10], act_bits=16, seed=1), batch=4),
    "mlp_7x512": lambda: aieflow.compile(qdq_mlp([512] * 8, seed=0)),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            design = DESIGNS[name]()
            cache[name] = design, design.write(tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_emitted_graph_is_the_design(written, name):
    design, root = written(name)
    record = record_graph(root)
    assert compare(design, record) == []
    assert len(record["kernels"]) == len(design.tiles)
    assert len(record["connections"]) == len(expected_edges(design))
    assert len(record["shared_buffers"]) == len(design.memtile_buffers)
    assert all(k["source"].startswith("kernels/") and k["runtime"] > 0 for k in record["kernels"])


def test_residual_has_cascades_links_and_broadcasts(written):
    design, root = written("residual_cascade")
    record = record_graph(root)
    names = [k["name"] for k in record["kernels"]]
    cascades = [e for e in record["connections"] if e["from"]["object"] == e["to"]["object"] == "kernel"
                and e["to"]["index"] == 1 and names[e["from"]["id"]].rsplit("_s", 1)[0] == names[e["to"]["id"]].rsplit("_s", 1)[0]]
    by_layer = {}
    for t in design.tiles:
        by_layer.setdefault((t.layer, t.chain), []).append(t)
    assert len(cascades) == sum(len(ts) - 1 for ts in by_layer.values()) == 7  # fc1 2 x (3 - 1), fc2 3 x (2 - 1)
    assert design.links and any(len(a.peers) > 1 for m in design.memtile_buffers for a in m.readers)
    classes = {k["name"]: k["class"] for k in record["kernels"]}
    assert classes["fc1_gemm_Gemm_c0_s0"] == "fc1_gemm_Gemm::first"
    assert classes["fc1_gemm_Gemm_c1_s2"] == "fc1_gemm_Gemm::last"


def _broken(root, tmp_path, edit):
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    graph = broken / "src" / "graph.h"
    text = graph.read_text()
    new = edit(text)
    assert new != text
    graph.write_text(new)
    return record_graph(broken)


def test_changed_tiling_offset_is_caught(written, tmp_path):
    design, root = written("jet_tagger")
    record = _broken(root, tmp_path, lambda t: re.sub(r"(read_access\(mt_0\.out\[0\]\) = adf::tiling\(\{[^;]*?\.offset = \{)0",
                                                      r"\g<1>8", t, count=1))
    diffs = compare(design, record)
    assert len(diffs) == 1 and diffs[0].startswith("mt_0.out[0]: tiling"), diffs


def test_swapped_cascade_connects_are_caught(written, tmp_path):
    design, root = written("residual_cascade")
    cas = re.compile(r"adf::connect\((fc1_gemm_Gemm_c(\d)_s0)\.out\[0\], (\w+)\.in\[1\]\);")

    def swap(text):
        # Swap the sinks of the first hops of chains 0 and 1, made at the end of the constructor (after
        # every kernel exists; connecting a kernel before its create_object is reported as unbound).
        (a, b) = list(cas.finditer(text))[:2]
        text = text.replace(a.group(0), "").replace(b.group(0), "")
        swapped = (f"        adf::connect({a.group(1)}.out[0], {b.group(3)}.in[1]);\n"
                   f"        adf::connect({b.group(1)}.out[0], {a.group(3)}.in[1]);\n")
        at = text.rindex("    }\n};")
        return text[:at] + swapped + text[at:]

    diffs = compare(design, _broken(root, tmp_path, swap))
    assert len(diffs) == 4, diffs
    assert "connection fc1_gemm_Gemm_c0_s0.out[0] -> fc1_gemm_Gemm_c0_s1.in[1] of the design is missing" in diffs
    assert "connection fc1_gemm_Gemm_c0_s0.out[0] -> fc1_gemm_Gemm_c1_s1.in[1] is not in the design" in diffs


def test_moved_kernel_and_buffer_are_caught(written, tmp_path):
    design, root = written("jet_tagger")
    t = design.tiles[0]

    def move(text):
        text = text.replace(f"adf::location<adf::kernel>({t.id}) = adf::tile({t.col}, {t.row});",
                            f"adf::location<adf::kernel>({t.id}) = adf::tile({t.col + 1}, {t.row});")
        return text.replace("= adf::address(7, 1, 0x0);", "= adf::address(7, 1, 0x40);")

    diffs = compare(design, _broken(root, tmp_path, move))
    assert any(d.startswith(f"kernel {t.id}: location") for d in diffs), diffs
    assert any(d.startswith("mt_0: location") for d in diffs), diffs
    assert len(diffs) == 2, diffs


def test_dropped_broadcast_peer_is_caught(written, tmp_path):
    design, root = written("residual_cascade")
    diffs = compare(design, _broken(root, tmp_path, lambda t: t.replace(
        "        adf::connect(mt_1.out[0], fc1_gemm_Gemm_c1_s0.in[0]);\n", "", 1)))
    assert diffs == ["connection mt_1.out[0] -> fc1_gemm_Gemm_c1_s0.in[0] of the design is missing"]


def test_connect_before_create_is_caught(written, tmp_path):
    design, root = written("residual_cascade")
    record = _broken(root, tmp_path, lambda t: t.replace(
        "adf::connect(fc1_gemm_Gemm_c0_s0.out[0], fc1_gemm_Gemm_c0_s1.in[1]);",
        "adf::connect(fc1_gemm_Gemm_c0_s0.out[0], fc1_gemm_Gemm_c1_s1.in[1]);", 1))
    diffs = compare(design, record)
    assert "connection fc1_gemm_Gemm_c0_s0.out[0] -> <unbound port: its object is not created yet> is not in the design" in diffs


def test_check_command_compares_the_emitted_graph(tmp_path):
    from click.testing import CliRunner

    from aieflow.cli import main
    from aieflow.examples.onnx_qdq import jet_tagger

    proj = aieflow.compile(jet_tagger()).write(tmp_path / "jet")
    r = CliRunner().invoke(main, ["check", str(proj), "--host"])
    assert r.exit_code == 0 and r.output.startswith("legal:"), r.output
    graph_h = proj / "src" / "graph.h"
    text = graph_h.read_text()
    graph_h.write_text(text.replace("adf::tile(", "adf::tile(1 + ", 1))
    r = CliRunner().invoke(main, ["check", str(proj), "--host"])
    assert r.exit_code == 2 and "emitted graph:" in r.output
