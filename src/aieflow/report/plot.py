"""Pictures of a mapped design: the AI Engine array to scale, and a one-character-per-tile text map.

`plot_design` draws every compute tile, memory tile and shim tile of the device; each layer's kernels in
its own colour, cascades as arrows, memory-tile buffers inside their memory tile with thin data edges to the
kernels that write and read them, direct kernel-to-kernel links, and PLIO ports in the shim row.
`placement_text` is the same placement for terminals and tests.

Both read only the Design's public fields (tiles, memtile_buffers, plios, links, layers, device), so they
keep working as the mapping grows new kinds of buffers and links. matplotlib is imported only when a
picture is drawn; it renders through its Agg and SVG canvases without pyplot, so no global backend or
figure registry is touched (safe inside notebooks and servers).
"""

from __future__ import annotations

import io

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..design import Design, MemtileBuffer
from ..errors import DesignError
from ..files import write_file

FORMATS = (".png", ".svg")

# Layer symbols of the text map, in design.layers order; layers past the last share '?'.
_SYMBOLS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PORT = re.compile(r"\.in\d+$")

# Drawing constants (inches and points). A cell is a tile; cells stay square and readable on wide arrays.
_CELL_MAX_IN = 0.5
_CELL_MIN_IN = 0.28
_ARRAY_MAX_IN = 20.0
_GAP = 0.06  # free space around a cell, in cell units
_BAND_GAP = 0.35  # space between the compute rows, the memory-tile rows and the shim row, in cell units
_DPI = 120
_SVG_SALT = "aieflow"
_CHAR_EM = 0.6  # mean width of a label character in DejaVu Sans, in ems, to decide what fits
_NAMED_BUFFERS = 3  # up to this many buffers in one memory tile are labelled one by one

# Colours of everything that is not a layer: quiet greys, so the layers stand out.
_FREE_TILE = "#f4f4f4"
_FREE_EDGE = "#d0d0d0"
_MEMTILE = "#e9eef5"
_MEMTILE_EDGE = "#b8c4d4"
_BUFFER = "#ffffff"
_BUFFER_EDGE = "#5a6b82"
_SHIM = "#ededed"
_SHIM_PL = "#e6dcc6"
_READ = "#1b3a6b"
_WRITE = "#8a2b0e"
_LINK = "#5b2a86"
_CASCADE = "#222222"
_PLIO_IN = "#1e7b34"
_PLIO_OUT = "#b03a2e"


# --- what is drawn, independent of matplotlib ------------------------------------------------------------


def _kernel_name(peer: str) -> str:
    """A peer spelled "<kernel id>.in<p>" names input port p of that kernel; the kernel is the part before."""
    return _PORT.sub("", peer)


def _layer_order(design: Design) -> list[str]:
    """Layer names in design.layers order, then any layer that only the tiles mention, in tile order."""
    names = [layer.op.name for layer in design.layers]
    for tile in design.tiles:
        if tile.layer not in names:
            names.append(tile.layer)
    return names


def short_names(names: list[str]) -> dict[str, str]:
    """The fewest leading '_'-separated words that still tell the names apart: fc0_gemm_Gemm -> fc0."""
    words = {n: n.split("_") for n in names}
    longest = max((len(w) for w in words.values()), default=1)
    for k in range(1, longest + 1):
        short = {n: "_".join(w[:k]) for n, w in words.items()}
        if len(set(short.values())) == len(short):
            return short
    return {n: n for n in names}


def _truncate(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "\u2026"


def _size(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    kb = nbytes / 1024
    return f"{kb:.0f} KB" if kb >= 10 or kb == int(kb) else f"{kb:.1f} KB"


def _describe(design: Design, name: str, long: bool) -> str:
    """A layer's op kind and cascade grid (cas_num x cas_length), when the design and its config say them."""
    layer = next((l for l in design.layers if l.op.name == name), None)
    if layer is None:
        return ""
    num, length = getattr(layer.config, "cas_num", None), getattr(layer.config, "cas_length", None)
    if num is None or length is None:
        return layer.op.kind
    return f"{layer.op.kind}, cas_num {num} x cas_length {length}" if long else f"{layer.op.kind}, {num} x {length}"


def _plio_columns(design: Design) -> dict[str, int]:
    """Each PLIO's column: that of the memory-tile buffer whose writers or readers name it."""
    columns: dict[str, int] = {}
    for buf in design.memtile_buffers:
        for access in (*buf.writers, *buf.readers):
            for peer in access.peers:
                columns.setdefault(peer, buf.col)
    return {p.name: columns[p.name] for p in design.plios if p.name in columns}


# --- the text map ----------------------------------------------------------------------------------------


def placement_text(design: Design) -> str:
    """An ASCII map of the array, top compute row first: one character per tile.

    Compute rows ("row  r |...|"): the layer's letter (A, B, ... in design.layers order; see the key below
    the map), '.' for a free tile, '!' where two kernels claim one tile. Memory-tile rows ("mem  m |...|"):
    how many buffers the tile holds (1-9, '+' for more), '.' for none. Shim row ("shim   |...|"): '^' an input
    PLIO, 'v' an output PLIO, '*' both, '.' none. Column numbers run along the top.
    """
    dev = design.device
    order = _layer_order(design)
    symbol = {name: (_SYMBOLS[i] if i < len(_SYMBOLS) else "?") for i, name in enumerate(order)}
    width = dev.columns
    prefix = "        "  # as wide as "row  7 |"

    compute = [["."] * width for _ in range(dev.rows)]
    for tile in design.tiles:
        if 0 <= tile.row < dev.rows and 0 <= tile.col < width:
            cell = compute[tile.row][tile.col]
            compute[tile.row][tile.col] = symbol[tile.layer] if cell == "." else "!"
    memcount = [[0] * width for _ in range(dev.memtile_rows)]
    for buf in design.memtile_buffers:
        if 0 <= buf.row < dev.memtile_rows and 0 <= buf.col < width:
            memcount[buf.row][buf.col] += 1
    shim = ["."] * width
    directions = {p.name: p.direction for p in design.plios}
    for name, col in _plio_columns(design).items():
        mark = "^" if directions[name] == "in" else "v"
        if 0 <= col < width:
            shim[col] = mark if shim[col] in (".", mark) else "*"

    lines = [f"{design.graph.name} on {dev.name}: {len(design.tiles)}/{dev.tiles} compute tiles, "
             f"{len(design.memtile_buffers)} memory-tile buffers, {len(design.plios)} PLIO"]
    lines.append(prefix + "".join(str(c // 10) if c % 10 == 0 else " " for c in range(width)))
    lines.append(prefix + "".join(str(c % 10) for c in range(width)))
    for r in reversed(range(dev.rows)):
        lines.append(f"row {r:>2} |{''.join(compute[r])}|")
    for m in reversed(range(dev.memtile_rows)):
        marks = "".join("." if n == 0 else (str(n) if n < 10 else "+") for n in memcount[m])
        lines.append(f"mem {m:>2} |{marks}|")
    lines.append(f"shim   |{''.join(shim)}|")
    for name in order:
        how = _describe(design, name, long=True)
        tiles = sum(t.layer == name for t in design.tiles)
        lines.append(f"  {symbol[name]}  {name}  {how + ', ' if how else ''}{tiles} tile{'s' if tiles != 1 else ''}")
    return "\n".join(lines) + "\n"


# --- the picture -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Where each row of the array sits on the picture: x is the column, y grows upward from the shim."""

    columns: int
    rows: int
    memtile_rows: int
    cell_in: float

    def compute_y(self, row: int) -> float:
        return 1 + _BAND_GAP + self.memtile_rows + _BAND_GAP + row

    def memtile_y(self, row: int) -> float:
        return 1 + _BAND_GAP + row

    @property
    def height(self) -> float:
        return self.compute_y(self.rows)

    @property
    def cell_pt(self) -> float:
        return self.cell_in * 72


def _geometry(design: Design) -> _Geometry:
    dev = design.device
    cell = min(_CELL_MAX_IN, max(_CELL_MIN_IN, _ARRAY_MAX_IN / max(dev.columns, 1)))
    return _Geometry(dev.columns, dev.rows, dev.memtile_rows, cell)


def _colours(names: list[str]) -> dict[str, tuple]:
    """A qualitative colour per layer in order: tab10 while it lasts, then tab20, then tab20b/c cycled."""
    from matplotlib import colormaps

    if len(names) <= 10:
        palette = list(colormaps["tab10"].colors)
    else:
        palette = list(colormaps["tab20"].colors) + list(colormaps["tab20b"].colors) + list(colormaps["tab20c"].colors)
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def _text_colour(rgb: tuple) -> str:
    """Black on light fills, white on dark ones (relative luminance)."""
    r, g, b = rgb[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _cells(ax, cells: list[tuple[float, float]], faces: list, edge: str, width: float, zorder: float) -> None:
    """Square cells with lower-left corners `cells`, as one collection (hundreds of patches draw slowly)."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    side = 1 - 2 * _GAP
    squares = [Rectangle((x + _GAP, y + _GAP), side, side) for x, y in cells]
    ax.add_collection(PatchCollection(squares, facecolors=faces, edgecolors=edge, linewidths=width, zorder=zorder))


def _draw_grid(ax, design: Design, g: _Geometry) -> None:
    """Every tile of the device as an empty cell; the PL-facing shim columns in a warmer tint."""
    columns = range(g.columns)
    compute = [(c, g.compute_y(r)) for r in range(g.rows) for c in columns]
    _cells(ax, compute, [_FREE_TILE] * len(compute), _FREE_EDGE, 0.5, 1)
    memtiles = [(c, g.memtile_y(m)) for m in range(g.memtile_rows) for c in columns]
    _cells(ax, memtiles, [_MEMTILE] * len(memtiles), _MEMTILE_EDGE, 0.5, 1)
    first = design.device.plio_first_column
    _cells(ax, [(c, 0.0) for c in columns], [_SHIM_PL if c >= first else _SHIM for c in columns], _FREE_EDGE, 0.5, 1)


def _draw_kernels(ax, design: Design, g: _Geometry, colours: dict[str, tuple], short: dict[str, str],
                  font: float) -> dict[str, tuple[float, float]]:
    """Fill each kernel's tile in its layer's colour and label it; return each kernel id's cell centre."""
    from matplotlib.patheffects import withStroke

    chars = max(3, int((1 - 2 * _GAP) * g.cell_pt / (_CHAR_EM * font)))
    two_lines = g.cell_pt >= 26
    _cells(ax, [(t.col, g.compute_y(t.row)) for t in design.tiles], [colours[t.layer] for t in design.tiles],
           "#333333", 0.6, 2)
    centres = {}
    for tile in design.tiles:
        y = g.compute_y(tile.row)
        colour = colours[tile.layer]
        centres[tile.id] = (tile.col + 0.5, y + 0.5)
        label = _truncate(short[tile.layer], chars)
        if two_lines:
            label += f"\nc{tile.chain} s{tile.stage}"
        # A halo of the fill's own colour keeps the label readable where data edges cross the tile.
        ax.text(tile.col + 0.5, y + 0.5, label, ha="center", va="center", fontsize=font, color=_text_colour(colour),
                linespacing=1.05, zorder=6, path_effects=[withStroke(linewidth=1.6, foreground=colour)])
    return centres


def _between(a: tuple[float, float], b: tuple[float, float], reach: float) -> tuple[tuple, tuple]:
    """The segment from centre a to centre b, cut back by `reach` cells at both ends (off the labels)."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length * reach, dy / length * reach
    return (x0 + ux, y0 + uy), (x1 - ux, y1 - uy)


def _draw_cascades(ax, design: Design, centres: dict[str, tuple[float, float]], font: float) -> None:
    """An arrow from each stage of a chain to the next, across the gap between their tiles."""
    from matplotlib.patches import FancyArrowPatch

    at = {(t.layer, t.chain, t.stage): t for t in design.tiles}
    for t in design.tiles:
        nxt = at.get((t.layer, t.chain, t.stage + 1))
        if nxt is None:
            continue
        a, b = centres[t.id], centres[nxt.id]
        # Neighbours: start and end near the facing edges of the two tiles; farther apart: at the edges.
        start, end = _between(a, b, 0.36 if math.dist(a, b) <= 1.5 else 0.5)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=font * 1.1, color=_CASCADE,
                                     linewidth=0.9, shrinkA=0, shrinkB=0, zorder=5))


def _buffer_slots(design: Design, g: _Geometry) -> dict[str, tuple[float, float, float, float]]:
    """Each memory-tile buffer's rectangle (x, y, w, h): the buffers of one tile share it in horizontal bands."""
    per_tile: dict[tuple[int, int], list[MemtileBuffer]] = {}
    for buf in design.memtile_buffers:
        per_tile.setdefault((buf.col, buf.row), []).append(buf)
    slots = {}
    inner = 1 - 2 * (_GAP + 0.05)
    for (col, row), bufs in per_tile.items():
        h = inner / len(bufs)
        top = g.memtile_y(row) + 1 - _GAP - 0.05
        for i, buf in enumerate(bufs):
            slots[buf.name] = (col + _GAP + 0.05, top - (i + 1) * h, inner, h)
    return slots


def _draw_buffers(ax, design: Design, slots: dict, g: _Geometry, font: float) -> None:
    """Each buffer as a white box: tensor and size when alone, tensor when a few share the tile, and only the
    count when many do (their edges still show who writes and reads each one)."""
    from matplotlib.patheffects import withStroke
    from matplotlib.patches import FancyBboxPatch

    per_tile: dict[tuple[int, int], int] = {}
    for buf in design.memtile_buffers:
        per_tile[(buf.col, buf.row)] = per_tile.get((buf.col, buf.row), 0) + 1
    for buf in design.memtile_buffers:
        x, y, w, h = slots[buf.name]
        ax.add_patch(FancyBboxPatch((x + 0.02, y + 0.02), w - 0.04, h - 0.04, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor=_BUFFER, edgecolor=_BUFFER_EDGE, linewidth=0.6, zorder=2))
        shared = per_tile[(buf.col, buf.row)]
        if shared > _NAMED_BUFFERS:
            continue
        # Shrink a long tensor name a little to fit the box, then cut it.
        size = font * (1 if shared <= 2 else 0.8)
        room = (w - 0.08) * g.cell_pt / _CHAR_EM
        size = max(size * 0.75, min(size, room / max(len(buf.tensor), 1)))
        label = _truncate(buf.tensor, max(3, int(room / size)))
        if shared == 1:
            label += "\n" + _size(buf.bytes)
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=size, color="#1d2633",
                linespacing=1.05, zorder=6, path_effects=[withStroke(linewidth=1.5, foreground=_BUFFER)])
    for (col, row), shared in per_tile.items():
        if shared > _NAMED_BUFFERS:
            ax.text(col + 0.5, g.memtile_y(row) + 0.5, f"{shared} bufs", ha="center", va="center", fontsize=font,
                    color="#1d2633", zorder=6, path_effects=[withStroke(linewidth=2.5, foreground="white")])


def _segments(design: Design, slots: dict, centres: dict, plio_at: dict) -> tuple[list, list]:
    """Data edges as line segments: (writer -> buffer) and (buffer -> reader), one per peer."""
    writes, reads = [], []
    for buf in design.memtile_buffers:
        x, y, w, h = slots[buf.name]
        top, bottom = (x + w / 2, y + h), (x + w / 2, y)
        for access in buf.writers:
            for peer in access.peers:
                kernel = centres.get(_kernel_name(peer))
                if kernel is not None:
                    writes.append((kernel, top))
                elif peer in plio_at:
                    writes.append((plio_at[peer][:2], bottom))
        for access in buf.readers:
            for peer in access.peers:
                kernel = centres.get(_kernel_name(peer))
                if kernel is not None:
                    reads.append((top, kernel))
                elif peer in plio_at:
                    reads.append((bottom, plio_at[peer][:2]))
    return writes, reads


def _draw_links(ax, design: Design, centres: dict, font: float) -> None:
    """Dashed, slightly bent arrows from a producer kernel to each consumer it hands its buffer to."""
    from matplotlib.patches import FancyArrowPatch

    for link in design.links:
        source = centres.get(link.source)
        for sink in link.sinks:
            target = centres.get(_kernel_name(sink))
            if source is None or target is None:
                continue
            start, end = _between(source, target, 0.3)
            ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=font, color=_LINK,
                                         linewidth=0.8, linestyle=(0, (2.5, 1.5)), connectionstyle="arc3,rad=0.1",
                                         shrinkA=0, shrinkB=0, alpha=0.6, zorder=5))


def _plio_positions(design: Design) -> dict[str, tuple[float, float, int]]:
    """Each placed PLIO's marker (x, y) in its shim cell and how many share that cell; they spread across it."""
    columns = _plio_columns(design)
    per_column: dict[int, list[str]] = {}
    for plio in design.plios:
        if plio.name in columns:
            per_column.setdefault(columns[plio.name], []).append(plio.name)
    at = {}
    for col, names in per_column.items():
        for i, name in enumerate(names):
            at[name] = (col + (i + 1) / (len(names) + 1), 0.62, len(names))
    return at


def _draw_plios(ax, design: Design, at: dict, g: _Geometry, font: float) -> None:
    """Up for an input, down for an output; under them their names, left to right, or how many when too long."""
    names: dict[int, list[str]] = {}
    for plio in design.plios:
        if plio.name not in at:
            continue
        x, y, crowd = at[plio.name]
        inward = plio.direction == "in"
        size = max(3.0, g.cell_pt * (0.22 if crowd <= 2 else 0.5 / crowd))
        ax.plot([x], [y], marker="^" if inward else "v", markersize=size, color=_PLIO_IN if inward else _PLIO_OUT,
                markeredgecolor="white", markeredgewidth=0.5, zorder=6)
        names.setdefault(int(x), []).append(plio.name)
    room = (1 - 2 * _GAP) * g.cell_pt / _CHAR_EM
    for col, group in names.items():
        label = " ".join(group)
        size = min(font * 0.85, room / len(label))
        if size < font * 0.6:  # too long to read: say how many, or cut a lone name
            smallest = font * 0.6
            label = f"{len(group)} PLIO" if len(group) > 1 else _truncate(label, int(room / smallest))
            size = font * 0.85 if len(group) > 1 else smallest
        ax.text(col + 0.5, 0.22, label, ha="center", va="center", fontsize=size, color="#333333", zorder=6)


def _style_axes(ax, g: _Geometry, font: float) -> None:
    ax.set_xlim(-0.1, g.columns + 0.1)
    ax.set_ylim(-0.1, g.height + 0.1)
    ax.set_aspect("equal")
    step = 1 if g.cell_pt >= 20 else 2
    ax.set_xticks([c + 0.5 for c in range(0, g.columns, step)], [str(c) for c in range(0, g.columns, step)])
    rows = [(0.0, "shim")] + [(g.memtile_y(m), f"mem {m}") for m in range(g.memtile_rows)]
    rows += [(g.compute_y(r), str(r)) for r in range(g.rows)]
    ax.set_yticks([y + 0.5 for y, _ in rows], [label for _, label in rows])
    ax.tick_params(length=0, labelsize=font * 1.15, pad=2)
    ax.set_xlabel("column", fontsize=font * 1.4)
    ax.set_ylabel("row", fontsize=font * 1.4)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _legend(fig, design: Design, colours: dict, order: list[str], width_in: float, font: float) -> None:
    """Below the array: layers first (name, op kind, cas_num x cas_length), then what the marks mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, labels = [], []
    for name in order:
        how = _describe(design, name, long=False)
        handles.append(Patch(facecolor=colours[name], edgecolor="#333333", linewidth=0.6))
        labels.append(f"{name} ({how})" if how else name)
    handles += [Line2D([], [], color=_CASCADE, linewidth=0.9, marker=">", markersize=4),
                Line2D([], [], color=_WRITE, linewidth=0.8, alpha=0.6),
                Line2D([], [], color=_READ, linewidth=0.8, alpha=0.6)]
    labels += ["cascade (stage to stage)", "kernel / PLIO writes memory tile", "memory tile feeds kernel / PLIO"]
    if design.links:
        handles.append(Line2D([], [], color=_LINK, linewidth=1.0, linestyle=(0, (3, 2))))
        labels.append("direct link (no memory tile)")
    handles += [Line2D([], [], linestyle="", marker="^", color=_PLIO_IN, markersize=6),
                Line2D([], [], linestyle="", marker="v", color=_PLIO_OUT, markersize=6),
                Patch(facecolor=_SHIM_PL, edgecolor=_FREE_EDGE)]
    labels += ["PLIO in", "PLIO out", f"PL-facing shim columns (from {design.device.plio_first_column})"]
    longest = max(len(s) for s in labels)
    ncols = max(1, min(len(labels), int(width_in / (0.4 + longest * font * 1.2 * _CHAR_EM / 72))))
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=ncols, fontsize=font * 1.2,
               frameon=False, title="layer (op, cas_num x cas_length) and marks", title_fontsize=font * 1.3,
               handlelength=1.6, columnspacing=1.6)


def _draw_edges(ax, writes: list, reads: list) -> None:
    """Thin, translucent lines, under the labels: many of them meet on one memory tile."""
    from matplotlib.collections import LineCollection

    if writes:
        ax.add_collection(LineCollection(writes, colors=_WRITE, linewidths=0.7, alpha=0.45, zorder=4))
    if reads:
        ax.add_collection(LineCollection(reads, colors=_READ, linewidths=0.7, alpha=0.35, zorder=4))


def check_picture_name(path: str | Path) -> str:
    """The picture format of `path` by its suffix, or a DesignError naming what would work."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DesignError(f"cannot plot to '{path.name}': unknown picture format '{path.suffix or '(none)'}'",
                          hint="name the file with .png or .svg")
    return suffix


def plot_design(design: Design, path: str | Path, *, title: str | None = None) -> Path:
    """Draw the design's placement on its device to `path` (.png or .svg, by the suffix) and return the path.

    To scale: one square per tile, compute rows above (row 0 lowest), then the memory-tile rows, then the
    shim row. Writing the same design twice gives the same bytes.
    """
    path = Path(path)
    suffix = check_picture_name(path)
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    g = _geometry(design)
    font = min(8.0, max(4.0, g.cell_pt * 0.17))
    order = _layer_order(design)
    colours = _colours(order)
    short = short_names(order)

    # Margins for tick labels and title; the legend hangs below and bbox_inches="tight" takes it in.
    margin_l, margin_r, margin_t, margin_b = 1.1, 0.3, 0.7, 0.6
    width_in = g.columns * g.cell_in + margin_l + margin_r
    height_in = g.height * g.cell_in + margin_t + margin_b
    rc = {"svg.hashsalt": _SVG_SALT, "svg.fonttype": "none", "font.family": "DejaVu Sans", "path.simplify": False}
    with rc_context(rc):
        fig = Figure(figsize=(width_in, height_in), dpi=_DPI)
        ax = fig.add_axes((margin_l / width_in, margin_b / height_in, g.columns * g.cell_in / width_in,
                           g.height * g.cell_in / height_in))
        _draw_grid(ax, design, g)
        centres = _draw_kernels(ax, design, g, colours, short, font)
        _draw_cascades(ax, design, centres, font)
        slots = _buffer_slots(design, g)
        _draw_buffers(ax, design, slots, g, font * 0.9)
        plio_at = _plio_positions(design)
        _draw_plios(ax, design, plio_at, g, font)
        writes, reads = _segments(design, slots, centres, plio_at)
        _draw_edges(ax, writes, reads)
        _draw_links(ax, design, centres, font)
        _style_axes(ax, g, font)
        _legend(fig, design, colours, order, width_in, font)
        dev = design.device
        heading = title if title is not None else (
            f"{design.graph.name} on {dev.name}: {len(design.tiles)}/{dev.tiles} compute tiles, "
            f"{len(design.memtile_buffers)} memory-tile buffers, {len(design.plios)} PLIO, batch {design.batch}")
        ax.set_title(heading, fontsize=font * 1.8, loc="left", pad=8)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"Software": None} if suffix == ".png" else {"Date": None, "Creator": None}
        buf = io.BytesIO()
        fig.savefig(buf, format=suffix[1:], metadata=metadata, bbox_inches="tight", pad_inches=0.15)
    return write_file(path, buf.getvalue())  # whole or not at all

