"""Performance reports of a design: files, the terminal table and the notebook view.

    write_reports(design, directory)   report.json, report.md and a self-contained report.html
    print_report(design, console)      the same numbers as a rich table
    design_html(design)                a compact HTML summary for Jupyter (Design._repr_html_)
    report_data(design)                the dict report.json holds, for code that wants the numbers

Every number comes from `perf.predict` (aieflow's cycle model, not a measurement); this module only adds
each layer's share of the interval and its configuration, and says in words why the bottleneck stage takes
as long as it does. The same design always gives byte-identical files: no timestamps, dicts in a fixed
order, the text views' numbers at fixed precision, and the placement picture drawn by `plot_design` (itself
deterministic) inlined as SVG with its ids renamed after its own content, so two pictures on one page never
share an id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2

from ..templating import environment
from markupsafe import Markup
from rich.console import Console
from rich.table import Table

from ..design import Design
from ..files import write_file
from .perf import LayerPerf, Performance, predict
from .plot import placement_text, plot_design, short_names

FILES = ("report.json", "report.md", "report.html")

_ENV = environment("report/templates", jinja2.select_autoescape(["html.j2", "svg.j2"]))  # report.md.j2 is not escaped

# Colours of the cycle terms in the chart, in order of first appearance (Tableau 10, minus the red that
# marks the interval line).
_TERM_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac", "#ff9da7")
_STREAM_FILL = "#dde3ea"
_STREAM_EDGE = "#8795a8"
_INTERVAL = "#c0392b"


# --- the numbers -----------------------------------------------------------------------------------------


def _is_stream(term: str) -> bool:
    """The op families name the input-stream terms "stream ..."; they overlap compute instead of adding."""
    return term.startswith("stream")


def _layer_entry(design: Design, lp: LayerPerf, interval: int) -> dict:
    """One layer of report.json: its cycles and share of the interval, then its configuration."""
    entry = {"name": lp.name, "kind": lp.kind, "tiles": lp.tiles, "cycles": lp.cycles,
             "share": lp.cycles / interval, "latency_cycles": lp.latency_cycles, "bound": lp.bound,
             "terms": dict(lp.terms)}
    extra = {k: v for k, v in asdict(lp).items() if k not in entry}
    layer = next((l for l in design.layers if l.op.name == lp.name), None)
    if layer is not None:
        cfg = layer.config
        for key in ("cas_length", "cas_num", "microtile", "in_features", "out_features"):
            value = getattr(cfg, key, None)
            if value is not None:
                entry[key] = list(value) if isinstance(value, tuple) else value
        kernels = design.kernels_of(lp.name)
        if kernels:
            entry["col"] = min(k.col for k in kernels)
            entry["row"] = min(k.row for k in kernels)
    entry.update(extra)  # fields the cycle model adds later (macs today) come through unchanged
    return entry


def report_data(design: Design, perf: Performance | None = None) -> dict:
    """Everything report.json holds: predict()'s fields, each layer's share and configuration, the reason."""
    perf = perf or predict(design)
    data = {"design": design.graph.name, "board": design.device.board}
    data.update(perf.to_dict())
    data["layers"] = [_layer_entry(design, lp, perf.interval_cycles) for lp in perf.layers]
    data["memtiles_total"] = design.device.memtiles
    data["memtile_bytes"] = sum(b.bytes for b in design.memtile_buffers)
    data["plio_in"] = sum(p.direction == "in" for p in design.plios)
    data["plio_out"] = sum(p.direction == "out" for p in design.plios)
    data["direct_links"] = len(design.links)
    data["bottleneck_reason"] = explain_bottleneck(perf)
    data["search"] = asdict(design.search) if design.search else None
    data["exactness"] = design.exactness.to_dict() if design.exactness else None
    return data


def exactness_rows(data: dict) -> list[dict]:
    """One row per measured layer and one for the whole model, or none when nothing was measured."""
    ex = data.get("exactness")
    if not ex:
        return []
    rows = []
    for c in [*ex["layers"], {**ex["model"], "name": "whole model"}]:
        rate = c["mismatches"] / c["values"] if c["values"] else 0.0
        rows.append({"name": c["name"], "count": f"{c['values']:,}", "exact": c["exact"],
                     "differ": "bit-exact" if c["exact"] else f"{rate:.3%} ({c['mismatches']:,})",
                     "max_lsb": str(c["max_lsb"])})
    rows += [{"name": n, "count": "-", "exact": None, "differ": "not measured", "max_lsb": "-"}
             for n in ex.get("unmeasured", [])]
    return rows


def explain_bottleneck(perf: Performance) -> str:
    """One sentence: which stage sets the interval and which of its terms dominates."""
    layer = next((l for l in perf.layers if l.name == perf.bottleneck), None)
    if layer is None:
        slowest = max(perf.layers, key=lambda l: l.cycles, default=None)
        than = f", longer than the slowest layer ({slowest.name}, {slowest.cycles:,} cycles)" if slowest else ""
        return (f"{perf.bottleneck} sets the interval: moving one iteration of {perf.batch} samples through "
                f"that PL stream port takes {perf.interval_cycles:,} cycles{than}.")
    ties = sum(l.cycles == layer.cycles for l in perf.layers) - 1
    also = f" (as {ties} other layer{'s' if ties > 1 else ''} do)" if ties else ""
    head = f"{layer.name} sets the interval at {layer.cycles:,} cycles per iteration{also}"
    compute = sum(v for t, v in layer.terms.items() if not _is_stream(t))
    streams = {t: v for t, v in layer.terms.items() if _is_stream(t)}
    if _is_stream(layer.bound):
        return (f"{head}: its kernels wait on their input, '{layer.bound}' taking "
                f"{layer.terms.get(layer.bound, layer.cycles):,} cycles against {compute:,} cycles of compute.")
    value = layer.terms.get(layer.bound, layer.cycles)
    overlap = ""
    if streams:
        stream = max(streams, key=streams.get)
        overlap = f"; '{stream}' ({streams[stream]:,} cycles) overlaps with it"
    return (f"{head}: its kernels are compute bound and the largest term is '{layer.bound}' "
            f"({value:,} cycles, {value / max(layer.cycles, 1):.0%} of the stage){overlap}.")


# --- formatting ------------------------------------------------------------------------------------------


def sig3(x: float) -> str:
    """Three significant figures without an exponent: 113, 58.2, 2.26, 0.402."""
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


def _rate(per_s: float) -> str:
    """A rate with a metric prefix: "30.9 M", "471 k", "12"."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= factor:
            return f"{sig3(per_s / factor)} {prefix}"
    return sig3(per_s)


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _grid(entry: dict) -> str:
    """cas_num x cas_length, the parallel chains by the kernels in each."""
    if "cas_num" in entry and "cas_length" in entry:
        return f"{entry['cas_num']} x {entry['cas_length']}"
    return "-"


def _microtile(entry: dict) -> str:
    return "x".join(map(str, entry["microtile"])) if "microtile" in entry else "-"


def _terms(entry: dict) -> str:
    return ", ".join(f"{t} {v:,}" for t, v in entry["terms"].items())


@dataclass(frozen=True)
class _Headline:
    """The totals every view shows, already formatted, in parts the views put together their own way."""

    interval: str  # "324"
    latency_us: str  # "2.26"
    latency_cycles: str  # "2,820"
    rate: str  # "30.9 M" (samples/s)
    tops: str  # "113"
    peak: str  # "58.2% of 195"
    tiles: str  # "224 / 304"
    memtiles: str  # "14 / 38"
    memtile_size: str  # "412.0 KB"
    bottleneck: str  # "fc6_gemm_Gemm (mmul)"

    def lines(self, buffers: int) -> list[tuple[str, str]]:
        """(label, value) pairs for the Markdown and terminal totals."""
        return [("interval", f"{self.interval} cycles per iteration"),
                ("latency", f"{self.latency_us} us ({self.latency_cycles} cycles)"),
                ("throughput", f"{self.rate} samples/s"),
                ("compute", f"{self.tops} TOPS, {self.peak} TOPS peak"),
                ("compute tiles", self.tiles),
                ("memory tiles", f"{self.memtiles}, {buffers} buffers ({self.memtile_size})"),
                ("bottleneck", self.bottleneck)]


def _headline(data: dict) -> _Headline:
    return _Headline(
        interval=f"{data['interval_cycles']:,}", latency_us=sig3(data["latency_us"]),
        latency_cycles=f"{data['latency_cycles']:,}", rate=_rate(data["samples_per_s"]), tops=sig3(data["tops"]),
        peak=f"{percent(data['peak_fraction'])} of {sig3(data['peak_tops'])}",
        tiles=f"{data['tiles_used']} / {data['tiles_total']}", memtiles=f"{data['memtiles_used']} / {data['memtiles_total']}",
        memtile_size=_size(data["memtile_bytes"]), bottleneck=f"{data['bottleneck']} ({data['bottleneck_term']})")


def _size(nbytes: int) -> str:
    return f"{nbytes:,} B" if nbytes < 1024 else f"{nbytes / 1024:,.1f} KB"


def _rows(data: dict) -> list[dict]:
    """Each layer's table cells, formatted once for the Markdown, HTML and notebook views."""
    return [{"name": e["name"], "kind": e["kind"], "grid": _grid(e), "microtile": _microtile(e),
             "tiles": f"{e['tiles']:,}", "cycles": f"{e['cycles']:,}", "share": percent(e["share"]),
             "share_width": f"{min(100.0, 100 * e['share']):.1f}", "latency": f"{e['latency_cycles']:,}",
             "bound": e["bound"], "terms": _terms(e), "bottleneck": e["name"] == data["bottleneck"],
             "macs": f"{e.get('macs', 0):,}", "mac_load": percent(e.get("mac_load", 0.0)) if e.get("macs") else "-"}
            for e in data["layers"]]


# --- the placement picture, inline -----------------------------------------------------------------------

_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'(url\(#|href="#)([^)"]+)')


def _inline_svg(svg: str, css_class: str) -> str:
    """matplotlib's SVG file made fit to sit inside an HTML page.

    Drops the XML prolog, DOCTYPE and RDF metadata (their namespace URLs would look like network references),
    the xmlns attributes (HTML parses inline SVG without them), the fixed width and height (it takes its
    container's width) and the style sheet, and renames the ids that are referenced after a hash of the
    picture (dropping the rest), so several pictures can share a page.
    """
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'(<svg[^>]*?)\s+width="[^"]*"\s+height="[^"]*"', r"\1", svg, count=1)
    # matplotlib's one style rule, *{stroke-linejoin: round; stroke-linecap: butt}, would style the whole
    # page (and notebooks drop <style>); set on the root, the two properties reach the picture by inheritance.
    svg = re.sub(r"\s*<style[^>]*>.*?</style>", "", svg, count=1, flags=re.S)
    svg = re.sub(r"\s*<defs>\s*</defs>", "", svg)
    svg = svg.replace("<svg", f'<svg class="{css_class}" role="img" stroke-linejoin="round" stroke-linecap="butt" '
                              'style="display: block; width: 100%; height: auto;"', 1)
    prefix = "af" + hashlib.sha1(svg.encode()).hexdigest()[:10] + "-"
    referenced = {m.group(2) for m in _REF.finditer(svg)}
    svg = _ID.sub(lambda m: f' id="{prefix}{m.group(1)}"' if m.group(1) in referenced else "", svg)
    svg = _REF.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", svg)
    return svg.strip() + "\n"


def placement_svg(design: Design, css_class: str = "aieflow-placement") -> str:
    """The placement picture (plot_design) as an <svg> element to paste into HTML."""
    with tempfile.TemporaryDirectory(prefix="aieflow-report-") as tmp:
        path = plot_design(design, Path(tmp) / "placement.svg")
        return _inline_svg(path.read_text(encoding="utf-8"), css_class)


# --- the per-layer chart ---------------------------------------------------------------------------------


def _nice_step(span: float, ticks: int = 6) -> int:
    """A round step (1, 2, 2.5 or 5 times a power of ten, at least 1) giving about `ticks` gridlines."""
    raw = max(span / ticks, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= raw:
            return max(1, int(factor * power))
    return int(10 * power)  # pragma: no cover


def _chart(data: dict) -> str:
    """An SVG bar chart: per stage, its compute terms stacked, its input stream beneath (overlapping, not
    added), a tick at its cycles, and a dashed line at the interval every stage must meet."""
    layers = data["layers"]
    names = short_names([e["name"] for e in layers])
    stages = [dict(e, label=names[e["name"]]) for e in layers]
    if data["bottleneck"] not in names:  # a PLIO sets the interval: a stage of its own, all "plio"
        stages.append({"name": data["bottleneck"], "label": data["bottleneck"], "cycles": data["interval_cycles"],
                       "share": 1.0, "bound": data["bottleneck_term"],
                       "terms": {data["bottleneck_term"]: data["interval_cycles"]}})
    colours: dict[str, str] = {}
    for e in stages:
        for term in e["terms"]:
            if not _is_stream(term) and term not in colours:
                colours[term] = _TERM_COLOURS[len(colours) % len(_TERM_COLOURS)]

    def compute(e):
        return sum(v for t, v in e["terms"].items() if not _is_stream(t))

    def stream(e):
        return max((v for t, v in e["terms"].items() if _is_stream(t)), default=0)

    interval = data["interval_cycles"]
    top = max([interval] + [max(compute(e), stream(e), e["cycles"]) for e in stages])
    step = _nice_step(top)
    top = math.ceil(top / step) * step
    width, left, right, row_h, head = 960, 150, 230, 30, 34
    span = width - left - right

    def x(cycles: float) -> str:
        return f"{left + span * cycles / top:.1f}"

    rows = []
    for i, e in enumerate(stages):
        y = head + i * row_h
        start = 0
        segments = []
        for term, v in e["terms"].items():
            if _is_stream(term) or v <= 0:
                continue
            segments.append({"x": x(start), "w": f"{span * v / top:.1f}", "colour": colours[term],
                             "title": f"{term}: {v:,} cycles"})
            start += v
        streams = {t: v for t, v in e["terms"].items() if _is_stream(t)}
        lead = max(streams, key=streams.get) if streams else None
        rows.append({
            "y": y, "bar_y": y + 5, "stream_y": y + 19, "text_y": y + 15, "label": e["label"], "name": e["name"],
            "bold": e["name"] == data["bottleneck"], "segments": segments,
            "stream": {"w": f"{span * streams[lead] / top:.1f}", "title": f"{lead}: {streams[lead]:,} cycles"}
            if lead else None,
            "tick": x(e["cycles"]),
            "value": f"{e['cycles']:,} cycles \u00b7 {percent(e['share'])} \u00b7 {e['bound']}",
        })
    height = head + len(stages) * row_h + 46
    ticks = [{"x": x(t), "label": f"{t:,}"} for t in range(0, top + 1, step)]
    legend = [{"colour": c, "label": t} for t, c in colours.items()]
    return _ENV.get_template("chart.svg.j2").render(
        width=width, height=height, left=left, right=width - right, head=head, bottom=head + len(stages) * row_h,
        rows=rows, ticks=ticks, legend=legend, interval_x=x(interval), interval=f"{interval:,}",
        stream_fill=_STREAM_FILL, stream_edge=_STREAM_EDGE, interval_colour=_INTERVAL, row_h=row_h,
        any_stream=any(r["stream"] for r in rows))


# --- the files -------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_reports(design: Design) -> dict[str, str]:
    """The three report files as {file name: text}; nothing written."""
    data = report_data(design)
    head = _headline(data)
    rows = _rows(data)
    md = _ENV.get_template("report.md.j2").render(
        data=data, exactness=exactness_rows(data), totals=[(k, _md_cell(v)) for k, v in head.lines(data["memtile_buffers"])], rows=[{k: _md_cell(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows],
        placement=placement_text(design).rstrip("\n"))
    html = _ENV.get_template("report.html.j2").render(
        data=data, exactness=exactness_rows(data), head=head, rows=rows, chart=Markup(_chart(data)), placement=Markup(placement_svg(design)),
        batch=data["batch"], clock=f"{data['clock_hz'] / 1e9:.2f} GHz")
    text = json.dumps(data, indent=1) + "\n"
    return {"report.json": text, "report.md": md, "report.html": html}


def write_reports(design: Design, directory: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into `directory` (made if missing); return their paths,
    keyed "json", "md" and "html"."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, text in render_reports(design).items():
        out[name.rsplit(".", 1)[1]] = write_file(directory / name, text)  # each whole or not at all
    return out


# --- the terminal and the notebook -----------------------------------------------------------------------


def print_report(design: Design, console: Console | None = None) -> None:
    """The per-layer table and the totals, for the terminal."""
    c = console or Console()
    if console is None and not c.is_terminal:
        c = Console(width=120)  # logs and pipes: wide enough for the table
    data = report_data(design)
    head = _headline(data)
    t = Table(title=f"{data['design']} on {data['device']}, batch {data['batch']}: predicted by the cycle model",
              title_justify="left", show_edge=False, pad_edge=False)
    for col in ("layer", "kind", "cas_num x len", "microtile", "tiles", "cycles", "share", "latency", "bound"):
        t.add_column(col, justify="left" if col in ("layer", "kind", "bound") else "right")
    for r in _rows(data):
        t.add_row(r["name"], r["kind"], r["grid"], r["microtile"], r["tiles"], r["cycles"], r["share"],
                  r["latency"], r["bound"], style="bold" if r["bottleneck"] else None)
    c.print(t)
    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="dim")
    totals.add_column()
    for label, value in head.lines(data["memtile_buffers"]):
        totals.add_row(label, value)
    c.print(totals)
    c.print(data["bottleneck_reason"], highlight=False)


def design_html(design: Design) -> str:
    """A compact HTML summary for notebooks: the totals, one row per layer and the placement picture.

    Styled inline (notebook front ends drop or scope <style> blocks) and without scripts.
    """
    data = report_data(design)
    return _ENV.get_template("design.html.j2").render(
        data=data, head=_headline(data), rows=_rows(data), placement=Markup(placement_svg(design, "aieflow-nb")))
