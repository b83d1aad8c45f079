"""Human-readable reports of designs and of the device catalog."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..design import Design


def _default() -> Console:
    """Rich's console, 120 columns wide when the output is not a terminal so tables stay readable in logs."""
    c = Console()
    return c if c.is_terminal else Console(width=120)


def human_summary(design: Design, output: Path | None = None, console: Console | None = None) -> None:
    """A short summary after `aieflow compile`: where it went, what it uses, each layer's mapping."""
    c = console or _default()
    s = design.summary()
    where = f" -> {output}" if output else ""
    c.print(f"[bold]{design.graph.name}[/] on {s['device']} ({s['board'] or s['generation']}){where}")
    c.print(f"tiles {s['tiles_used']}/{s['tiles_total']}, memory-tile buffers {s['memtile_buffers']} "
            f"({s['memtile_bytes'] / 1024:.1f} KB), PLIO {s['plio_in']} in / {s['plio_out']} out, batch {s['batch']}")
    t = Table(show_edge=False, pad_edge=False)
    for col in ("layer", "op", "in x out", "microtile", "cas_length", "cas_num", "tiles", "col", "row"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for l in s["layers"]:
        t.add_row(l["name"], l["op"], f"{l['in_features']} x {l['out_features']}", "x".join(map(str, l["microtile"])),
                  str(l["cas_length"]), str(l["cas_num"]), str(l["tiles"]), str(l["col"]), str(l["row"]))
    c.print(t)
    if design.exactness is not None:
        for line in design.exactness.lines():
            c.print(line, markup=False, highlight=False)
    else:
        c.print("exactness: not measured (no source model to compare with)")
    from .perf import predict
    from .render import percent, sig3

    p = predict(design)  # the numbers in the words `aieflow report` uses for them
    c.print(f"predicted: {p.interval_cycles:,} cycles per iteration, latency {sig3(p.latency_us)} us, "
            f"{p.samples_per_s:,.0f} samples/s, {sig3(p.tops)} TOPS ({percent(p.peak_fraction)} of peak); "
            f"bottleneck {p.bottleneck} ({p.bottleneck_term}) - `aieflow report` explains each number")


def devices_table(console: Console | None = None) -> None:
    from ..devices import catalog

    c = console or _default()
    t = Table(title="aieflow device catalog", show_edge=False)
    for col in ("device", "board", "generation", "array", "tiles", "memory tiles", "clock", "int8 peak", "aliases"):
        t.add_column(col)
    for d in catalog().values():
        t.add_row(d.name, d.board or "-", d.generation.name, f"{d.columns} x {d.rows}", str(d.tiles), str(d.memtiles),
                  f"{d.clock_hz / 1e9:.2f} GHz", f"{d.peak_ops_per_second() / 1e12:.1f} TOPS", ", ".join(d.aliases))
    c.print(t)
