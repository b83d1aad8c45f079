"""The parallelism search, directives and the placement search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import aieflow
from aieflow.cli import main
from aieflow.devices import get_device
from aieflow.errors import MappingError
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.mapping import search
from aieflow.mapping.check import violations


@pytest.fixture(scope="module")
def mlp():
    return qdq_mlp([512] * 8, seed=0, name="mlp7x512")


def _gemms(model):
    return [n.name for n in model.graph.node if n.op_type == "Gemm"]


def test_objectives_trade_tiles_for_speed(mlp):
    small = aieflow.compile(mlp, objective="resource")
    fast = aieflow.compile(mlp, objective="throughput")
    quick = aieflow.compile(mlp, objective="latency")
    assert small.search.tiles < fast.search.tiles <= 304
    assert fast.search.interval < small.search.interval
    assert quick.search.latency <= fast.search.latency and quick.search.latency < small.search.latency
    for d in (small, fast, quick):
        assert violations(d) == [] and d.search.tiles == len(d.tiles)
        # The design never beats the bound the search proved.
        assert d.search.interval >= d.search.bound_interval and d.search.latency >= d.search.bound_latency


def test_throughput_search_is_exact_over_its_options(mlp):
    """Brute force over every per-op option combination of a small graph agrees with the scan."""
    model = qdq_mlp([40, 24, 16], seed=1)
    from aieflow.frontends.onnx_qdq import load_onnx

    g = load_onnx(model)
    dev = get_device("ve2302")
    opts = search.options(g, dev, 8, {})
    budget = 9
    best = None
    a, b = opts.values()
    for x in a:
        for y in b:
            if x.tiles + y.tiles <= budget:
                key = max(x.interval, y.interval)
                best = key if best is None else min(best, key)
    assert search.choose(opts, budget, "throughput", None).interval == best
    lat = min(x.latency + y.latency for x in a for y in b if x.tiles + y.tiles <= budget)
    assert search.choose(opts, budget, "latency", None).latency == lat


def test_max_tiles_and_target_interval(mlp):
    d = aieflow.compile(mlp, objective="throughput", max_tiles=150)
    assert len(d.tiles) <= 150 and violations(d) == []
    loose = aieflow.compile(mlp, objective="resource")
    target = loose.search.interval * 3 // 4
    tight = aieflow.compile(mlp, objective="resource", target_interval=target)
    assert tight.search.interval <= target and len(tight.tiles) > len(loose.tiles)
    with pytest.raises(MappingError, match=r"needs \d+ tiles; the budget is 304"):
        aieflow.compile(mlp, objective="resource", target_interval=loose.search.interval // 2)
    with pytest.raises(MappingError, match="at least"):
        aieflow.compile(mlp, max_tiles=20)
    with pytest.raises(MappingError, match="no configuration reaches"):
        aieflow.compile(mlp, objective="resource", target_interval=5)


def test_directives_are_honoured_or_refused(mlp):
    names = _gemms(mlp)
    d = aieflow.compile(mlp, layers={names[2]: {"cas_length": 4, "cas_num": 4, "col": 30, "row": 4},
                                     names[3]: {"microtile": [4, 8, 8]}})
    cfg = d.layer(names[2]).config
    assert (cfg.cas_length, cfg.cas_num) == (4, 4)
    assert min((t.col, t.row) for t in d.kernels_of(names[2])) == (30, 4)
    assert d.layer(names[3]).config.microtile == (4, 8, 8)
    with pytest.raises(MappingError, match="no legal configuration with cas_length=39") as err:
        aieflow.compile(mlp, layers={names[0]: {"cas_length": 39}})
    assert err.value.node == names[0]
    with pytest.raises(MappingError, match="cannot pin"):
        aieflow.compile(mlp, layers={names[0]: {"cas_length": 4, "cas_num": 4, "col": 36, "row": 0}})
    with pytest.raises(MappingError, match="unknown layer"):
        aieflow.compile(mlp, layers={"nope": {"cas_length": 2}})
    with pytest.raises(MappingError, match="unknown directive"):
        aieflow.compile(mlp, layers={names[0]: {"cas_lenght": 2}})
    with pytest.raises(MappingError, match="both col and row"):
        aieflow.compile(mlp, layers={names[0]: {"col": 2}})


def test_direct_hand_off_when_slices_line_up():
    model = qdq_mlp([256, 256, 256], seed=3)
    a, b = _gemms(model)
    # a's 4 chains of 64 outputs in 4x8 blocks are exactly b's 4 stages of 64 inputs in 4x8 blocks.
    d = aieflow.compile(model, layers={a: {"cas_length": 2, "cas_num": 4, "microtile": [4, 8, 8]},
                                       b: {"cas_length": 4, "cas_num": 2, "microtile": [4, 8, 8], "transport": "direct"}})
    assert len(d.links) == 4 and violations(d) == []
    x = np.random.default_rng(0).normal(0, 2, (20, 256)).astype(np.float32)
    from aieflow.examples.onnx_qdq import run_onnxruntime
    assert np.array_equal(d.simulate(x), run_onnxruntime(model, x))
    forced = aieflow.compile(model, layers={a: {"cas_length": 2, "cas_num": 4, "microtile": [4, 8, 8]},
                                            b: {"cas_length": 4, "cas_num": 2, "microtile": [4, 8, 8], "transport": "memtile"}})
    assert not forced.links and np.array_equal(forced.simulate(x), d.simulate(x))
    with pytest.raises(MappingError, match="cannot take input"):
        aieflow.compile(model, layers={a: {"cas_length": 2, "cas_num": 4}, b: {"cas_length": 2, "transport": "direct"}})


def test_config_file_and_cli_options(mlp, tmp_path):
    names = _gemms(mlp)
    (tmp_path / "m.onnx").write_bytes(mlp.SerializeToString())
    (tmp_path / "c.toml").write_text(f'[compile]\nobjective = "throughput"\nmax_tiles = 200\n\n'
                                     f'[layers.{names[0]}]\ncas_length = 4\ncas_num = 4\n')
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "p"),
                                  "--config", str(tmp_path / "c.toml"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["tiles_used"] <= 200 and s["search"]["objective"] == "throughput"
    assert (s["layers"][0]["cas_length"], s["layers"][0]["cas_num"]) == (4, 4)
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q"),
                                  "--config", str(tmp_path / "c.toml"), "--objective", "latency", "--json"])
    assert json.loads(r.output)["search"]["objective"] == "latency"
    (tmp_path / "bad.toml").write_text("[layers.x\n")
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "r"),
                                  "--config", str(tmp_path / "bad.toml")])
    assert r.exit_code == 2 and "not valid TOML" in r.output and not (tmp_path / "r").exists()


def test_check_and_plot_commands(mlp, tmp_path):
    (tmp_path / "m.onnx").write_bytes(mlp.SerializeToString())
    assert CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "p")]).exit_code == 0
    r = CliRunner().invoke(main, ["check", str(tmp_path / "p")])
    assert r.exit_code == 0 and r.output.startswith("legal:")
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "p"), "-o", str(tmp_path / "p.svg")])
    assert r.exit_code == 0 and (tmp_path / "p.svg").stat().st_size > 1000
    # Tamper with the saved design: the checker refuses it with the broken rule.
    data = json.loads((tmp_path / "p" / "design.json").read_text())
    data["tiles"][1]["col"], data["tiles"][1]["row"] = data["tiles"][0]["col"], data["tiles"][0]["row"]
    (tmp_path / "p" / "design.json").write_text(json.dumps(data))
    r = CliRunner().invoke(main, ["check", str(tmp_path / "p")])
    assert r.exit_code == 2 and "both sit at" in r.output and "Traceback" not in r.output


def test_same_input_same_design(mlp):
    a = aieflow.compile(mlp, objective="throughput").to_json()
    b = aieflow.compile(mlp, objective="throughput").to_json()
    assert a == b
