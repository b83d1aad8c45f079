"""Performance reports: report.json / .md / .html, the terminal table, the notebook view, progress bars."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import aieflow
from aieflow.examples.onnx_qdq import jet_tagger, qdq_mlp
from aieflow.report import progress as progress_module
from aieflow.report.perf import predict
from aieflow.report.progress import progress
from aieflow.report.render import FILES, design_html, explain_bottleneck, print_report, report_data, write_reports

CHROMIUM = Path("/usr/bin/chromium")
BAR_BLUE = (0x4E, 0x79, 0xA7)  # the chart's first term colour: proves the inline SVG was drawn


@pytest.fixture(scope="module")
def mlp():
    """Eight 512-wide layers, mapped for throughput: 224 tiles, every layer at the interval."""
    return aieflow.compile(qdq_mlp([512] * 8, seed=0), objective="throughput")


@pytest.fixture(scope="module")
def jet():
    """Four one-tile layers of unequal cycles: one clear bottleneck."""
    return aieflow.compile(jet_tagger())


@pytest.fixture(scope="module")
def written(mlp, jet, tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    return {name: write_reports(design, root / name) for name, design in (("mlp", mlp), ("jet", jet))}


@pytest.mark.parametrize("which", ["mlp", "jet"])
def test_json_agrees_with_predict(which, request, written):
    design = request.getfixturevalue(which)
    paths = written[which]
    assert set(paths) == {"json", "md", "html"} and [p.name for p in paths.values()] == list(FILES)
    data = json.loads(paths["json"].read_text())
    perf = predict(design)
    for key in ("interval_cycles", "latency_us", "samples_per_s", "tops", "peak_fraction", "bottleneck",
                "bottleneck_term", "tiles_used", "tiles_total", "memtiles_used", "memtile_buffers"):
        assert data[key] == getattr(perf, key), key
    assert [l["name"] for l in data["layers"]] == [l.name for l in perf.layers]
    for entry, lp, layer in zip(data["layers"], perf.layers, design.layers):
        assert (entry["kind"], entry["tiles"], entry["cycles"], entry["latency_cycles"], entry["bound"]) == \
            (lp.kind, lp.tiles, lp.cycles, lp.latency_cycles, lp.bound)
        assert entry["terms"] == lp.terms and list(entry["terms"]) == list(lp.terms)
        assert entry["share"] == pytest.approx(lp.cycles / perf.interval_cycles) and 0 < entry["share"] <= 1
        assert entry["cas_length"] == layer.config.cas_length and entry["cas_num"] == layer.config.cas_num
        assert entry["microtile"] == list(layer.config.microtile)
        assert entry["tiles"] == len(design.kernels_of(lp.name))
    if any(l.name == perf.bottleneck for l in perf.layers):
        assert max(l["share"] for l in data["layers"]) == 1.0
    assert data["bottleneck"] in data["bottleneck_reason"] and data["bottleneck_term"] in data["bottleneck_reason"]


@pytest.mark.parametrize("which", ["mlp", "jet"])
def test_markdown_has_a_row_per_layer(which, request, written):
    design = request.getfixturevalue(which)
    md = written[which]["md"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and " dense " in line]
    assert len(rows) == len(design.layers)
    for row, lp in zip(rows, predict(design).layers):
        cells = [c.strip().strip("*") for c in row.strip("|").split(" | ")]
        assert cells[0] == lp.name and cells[5] == f"{lp.cycles:,}" and cells[10] == lp.bound
    assert "```text" in md and "row  0 |" in md  # the placement map


@pytest.mark.parametrize("which", ["mlp", "jet"])
def test_html_is_self_contained(which, request, written):
    design = request.getfixturevalue(which)
    html = written[which]["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|iframe|img)\b", html)
    assert re.search(r"\ssrc\s*=", html) is None and "@import" not in html
    assert html.count("<svg") == 2  # the chart and the placement
    assert 'class="aieflow-placement"' in html and 'class="aieflow-chart"' in html
    ex = design.exactness
    in_exactness = {c.name for c in ex.layers} | set(ex.unmeasured) if ex else set()
    for layer in design.layers:  # once in the layer table, and once more in the exactness table if measured
        assert html.count(f"<td class=\"l\">{layer.op.name}</td>") == 1 + (layer.op.name in in_exactness)
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html and "<metadata" not in html
    # Every reference inside the inline SVG resolves to an id in the page.
    ids = set(re.findall(r'\sid="([^"]+)"', html))
    assert set(re.findall(r'url\(#([^)]+)\)', html)) <= ids and len(ids) == len(re.findall(r'\sid="', html))


def test_reports_are_deterministic(jet, mlp, written, tmp_path):
    for name, design in (("jet", jet), ("mlp", mlp)):
        again = write_reports(design, tmp_path / name)
        for kind, path in again.items():
            assert path.read_bytes() == written[name][kind].read_bytes(), (name, kind)


def test_reports_of_a_loaded_design_match(jet, written, tmp_path):
    (tmp_path / "design.json").write_text(jet.to_json())
    again = write_reports(aieflow.load(tmp_path / "design.json"), tmp_path / "out")
    for kind, path in again.items():
        assert path.read_bytes() == written["jet"][kind].read_bytes(), kind


def test_print_report(jet):
    console = Console(record=True, width=140, file=io.StringIO())
    print_report(jet, console)
    text = console.export_text()
    perf = predict(jet)
    for lp in perf.layers:
        line = next(l for l in text.splitlines() if l.startswith(lp.name))
        assert f"{lp.cycles:,}" in line and lp.bound in line and f"{100 * lp.cycles / perf.interval_cycles:.1f}%" in line
    for words in (f"{len(jet.tiles)} / {jet.device.tiles}", "memory tiles", "samples/s", "TOPS", "% of",
                  f"us ({perf.latency_cycles:,} cycles)", f"bottleneck     {perf.bottleneck}"):
        assert words in text, words


def test_design_html_for_notebooks(jet, mlp):
    a, b = design_html(jet), design_html(mlp)
    for html, design in ((a, jet), (b, mlp)):
        assert html.startswith("<div") and "<svg" in html and "http" not in html and "<style" not in html
        assert all(layer.op.name in html for layer in design.layers)
    # Two designs on one notebook page share no ids.
    ids_a = set(re.findall(r'\sid="([^"]+)"', a))
    ids_b = set(re.findall(r'\sid="([^"]+)"', b))
    assert ids_a and ids_b and not ids_a & ids_b


def test_bottleneck_sentences(jet):
    perf = predict(jet)
    layer = perf.layers[0]
    stream_bound = dataclasses.replace(layer, cycles=500, bound="stream in",
                                       terms={"stream in": 500, "mmul": 16, "per call": 100})
    stalled = dataclasses.replace(perf, layers=(stream_bound, *perf.layers[1:]), interval_cycles=500,
                                  bottleneck=layer.name, bottleneck_term="stream in")
    assert "wait on their input, 'stream in' taking 500 cycles against 116 cycles of compute" in explain_bottleneck(stalled)
    plio = dataclasses.replace(perf, interval_cycles=900, bottleneck="PLIO in_0", bottleneck_term="plio")
    sentence = explain_bottleneck(plio)
    assert sentence.startswith("PLIO in_0 sets the interval") and "900 cycles" in sentence
    data = report_data(jet, plio)  # the chart draws the PLIO as a stage of its own
    from aieflow.report.render import _chart

    assert "PLIO in_0" in _chart(data)


def test_progress_is_silent_without_a_terminal(capsys):
    assert list(progress(range(5), 5, "counting")) == [0, 1, 2, 3, 4]
    assert list(progress(x for x in "ab")) == ["a", "b"]
    assert capsys.readouterr().err == ""


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_in_ci(monkeypatch):
    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.setenv("CI", "true")
    assert list(progress(range(3), 3, "ci")) == [0, 1, 2]
    assert fake.getvalue() == ""


def test_progress_draws_on_a_terminal_and_nests(monkeypatch):
    fake = _Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.delenv("CI", raising=False)
    seen = []
    for i in progress(range(3), 3, "outer"):
        seen += [(i, j) for j in progress(range(2), description="inner")]
    assert seen == [(i, j) for i in range(3) for j in range(2)]
    assert progress_module._active is None and fake.getvalue()
    for _ in progress(range(10), None, "stopped early"):
        break
    assert progress_module._active is None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)")
def test_chromium_renders_the_report(written, tmp_path):
    image = pytest.importorskip("PIL.Image")
    html = written["jet"]["html"]
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--enable-logging=stderr", "--log-level=0",  # page console messages, CSP violations among them
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,1000",
           html.resolve().as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(tmp_path)})
    log = run.stdout + run.stderr
    assert run.returncode == 0 and shot.is_file(), log
    # Chromium logs its own environment (no D-Bus, no GPU); anything from the page's console (a resource the
    # page's Content-Security-Policy blocked, a script error) or a failed load is a failure.
    page = [line for line in log.splitlines()
            if re.search(r":CONSOLE[:(]|Uncaught|net::ERR_|Failed to load|Not allowed to load", line)]
    assert not page, page
    with image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1400, 1000)
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, cards, bars: not a blank page
    assert dict((c, n) for n, c in colours).get(BAR_BLUE, 0) > 500  # the chart's bars were drawn


def test_reports_show_the_exactness_measured_at_compile_time(tmp_path):
    from aieflow.examples.onnx_tools import torch_fakequant_mlp
    from aieflow.frontends.onnx_qdq import load_onnx
    from aieflow.report.render import render_reports

    torch_fakequant_mlp(tmp_path / "m.onnx", (16, 64, 32, 8), seed=3)
    design = aieflow.compile(str(tmp_path / "m.onnx"))
    files = render_reports(design)
    data = json.loads(files["report.json"])
    assert data["exactness"] == design.exactness.to_dict()
    for c in design.exactness.layers:
        assert f"| {c.name} | {c.values:,} |" in files["report.md"]
        assert f'<td class="l">{c.name}</td><td>{c.values:,}</td>' in files["report.html"]
    assert "## Exactness" in files["report.md"] and "whole model" in files["report.html"]
    if not design.exactness.exact:  # a layer that differs is marked
        assert '<tr class="hot"><td class="l">whole model</td>' in files["report.html"] or any(
            f'<tr class="hot"><td class="l">{c.name}</td>' in files["report.html"] for c in design.exactness.layers)
    plain = render_reports(aieflow.compile(load_onnx(str(tmp_path / "m.onnx"))))
    assert json.loads(plain["report.json"])["exactness"] is None
    assert "Not measured" in plain["report.md"] and "Not measured" in plain["report.html"]
