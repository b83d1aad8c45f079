"""The project writer: a Design becomes a Vitis 2025.2 AIE-ML ADF project folder.

    write_project(design, path)   what Design.write calls
    render_project(design)        the same files as {relative path: text}, nothing written

The project holds design.json (so aieflow.load reads it back), the ADF graph (src/graph.h, src/graph.cpp),
the kernels and packed parameters of every op family the design uses (rendered by that family's `emit`
module, aieflow.ops.<kind>.emit), a Makefile and aie.cfg for v++ -c --mode aie, the simulators' input and
the emulator's golden output (data/), and a README. Nothing here runs an AMD tool.

Writing the same design twice gives byte-identical trees: no timestamps, every iteration in design order or
sorted, the sample input drawn from a fixed seed. emit/folder.py writes them: only into a new or empty folder
or an earlier aieflow project, replacing only the files aieflow wrote there, all or none.
"""

from __future__ import annotations

import functools
import keyword
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..design import Design, MemtileBuffer
from ..errors import DesignError
from ..templating import environment

# The simulators' sample input: drawn from this seed, so every write of a design gives the same files.
SAMPLE_SEED = 0
# At least this many graph iterations in the sample, so the simulators run the graph's steady state
# (ping-pong buffers swapping) and not only its first iteration.
MIN_ITERATIONS = 4

GRAPH_CLASS = "aieflow_graph"
GRAPH_INSTANCE = "aieflow_top"

_ENV = environment("emit/templates")

_CPP_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public
register reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch
template this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
wchar_t while xor xor_eq main std adf aie int8 uint8 int16 uint16 int32 uint32 int64 uint64 acc32 acc64
""".split()) | {GRAPH_CLASS, GRAPH_INSTANCE}


@functools.lru_cache(maxsize=None)
def _reserved() -> frozenset[str]:
    """C++ keywords, the AIE API's names, and every op family's own (its shared headers and namespaces)."""
    from ..ops import kinds, part

    return _CPP_KEYWORDS.union(*(part(k, "emit").RESERVED_NAMES for k in kinds()))


def c_identifier(name: str) -> str:
    """A C++ identifier for a design name: other characters become '_', keywords and digits get a prefix."""
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not ident or ident[0].isdigit() or ident.startswith("_"):
        ident = "n" + ident  # identifiers starting with '_' + capital or '__' are reserved in C++
    if ident in _reserved() or keyword.iskeyword(ident):
        ident += "_"
    return ident


def _unique_identifiers(names: list[str]) -> dict[str, str]:
    """One distinct C++ identifier per name, in the order given (so the mapping is deterministic)."""
    taken: set[str] = set()
    out = {}
    for name in names:
        base = c_identifier(name)
        ident, n = base, 2
        while ident in taken:
            ident, n = f"{base}_{n}", n + 1
        taken.add(ident)
        out[name] = ident
    return out


# --- the sample data ---------------------------------------------------------------------------------------


def values_per_line(storage: str, plio_bits: int) -> int:
    """Values on one line of a simulator text file: one PLIO word's worth (UG1076, TXT file format)."""
    return plio_bits // (np.dtype(storage).itemsize * 8)


def iterations(design: Design) -> int:
    """Graph iterations in the sample: at least MIN_ITERATIONS, and enough that every PLIO file is made of
    whole lines (a line is one PLIO word, so a partial last line would be a partial word)."""
    n = 1
    for p in design.plios:
        per_line = values_per_line(design.graph.tensors[p.tensor].type.storage, p.bits)
        n = math.lcm(n, per_line // math.gcd(p.elements, per_line))
    return n * math.ceil(MIN_ITERATIONS / n)


def sample_input(design: Design) -> np.ndarray:
    """Raw input integers [iterations * batch, features] from a fixed seed, covering the type's full range."""
    t = design.graph.tensors[design.graph.inputs[0]]
    rng = np.random.default_rng(SAMPLE_SEED)
    x = rng.integers(t.type.qmin, t.type.qmax, size=(iterations(design) * design.batch, t.features),
                     endpoint=True, dtype=np.int64)
    # Both ends of the range, whatever the draw: they are where saturation and sign handling show.
    flat = x.reshape(-1)
    flat[0], flat[-1] = t.type.qmin, t.type.qmax
    if flat.size > 2:
        flat[1] = 0
    return x


def text_lines(values: np.ndarray, per_line: int) -> str:
    """Integers in the simulators' text format: `per_line` values a line, separated by spaces."""
    flat = [str(int(v)) for v in np.asarray(values).ravel()]
    return "".join(" ".join(flat[i:i + per_line]) + "\n" for i in range(0, len(flat), per_line))


def parse_text(text: str) -> list[int]:
    """Integers of a simulator text file; timestamp ('T ...') and TLAST lines are skipped."""
    return [int(v) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("T")
            for v in line.split()]


def _data_files(design: Design) -> dict[str, str]:
    # The PLIO streams carry [batch, features] row-major per iteration: the emulator's order for the
    # graph input and output (aieflow.simulate.emulator), and the order of the PLIO accesses' tilings.
    # Each PLIO carries features [lo, hi) of its tensor.
    x = sample_input(design)
    g = design.graph
    tin, tout = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    y = tout.from_source(design.simulate(tin.to_source(x), raw=True))  # both in the compiler's order
    files = {}
    for p in design.plios:
        storage = design.graph.tensors[p.tensor].type.storage
        values = x if p.direction == "in" else y
        name = f"data/{p.name}.txt" if p.direction == "in" else f"data/golden_{p.name}.txt"
        files[name] = text_lines(on_wire(values[:, p.lo:p.hi], p.row), values_per_line(storage, p.bits))
    return files


def on_wire(values: np.ndarray, row: int) -> np.ndarray:
    """Samples as the PLIO carries them: each zero-padded to `row` elements (whole DMA words)."""
    wire = np.zeros((values.shape[0], row), dtype=np.int64)
    wire[:, : values.shape[1]] = values
    return wire


# --- the graph ---------------------------------------------------------------------------------------------


def _family(kind: str):
    """The emit module of an op family: aieflow/ops/<kind>/emit.py."""
    from ..ops import part

    return part(kind, "emit")


def _tiling(t) -> str:
    """An adf::tiling_parameters initializer (UG1603 / XD100 tiling parameter structure)."""
    def ints(v):
        return "{" + ", ".join(str(int(e)) for e in v) + "}"

    trav = ", ".join(f"{{.dimension = {s.dimension}, .stride = {s.stride}, .wrap = {s.wrap}}}" for s in t.traversal)
    fields = [f".buffer_dimension = {ints(t.buffer_dimension)}", f".tiling_dimension = {ints(t.tiling_dimension)}",
              f".offset = {ints(t.offset)}", f".tile_traversal = {{{trav}}}"]
    if t.boundary_dimension is not None:
        fields.append(f".boundary_dimension = {ints(t.boundary_dimension)}")
    return "adf::tiling({" + ", ".join(fields) + "})"


@dataclass(frozen=True)
class _Memtile:
    member: str
    buffer: MemtileBuffer
    ctype: str
    offset: int
    writers: list[tuple[str, list[str]]]  # (tiling initializer, ports writing through it)
    readers: list[tuple[str, list[str]]]  # (tiling initializer, ports it broadcasts to)


def _graph_context(design: Design, layer_ns: dict[str, str]) -> dict:
    fragments = []
    data_in, data_out = {}, {}
    for layer in design.layers:
        frag = _family(layer.op.kind).graph_fragment(design, layer, layer_ns[layer.op.name])
        fragments.append(frag)
        data_in.update(frag.data_in)
        data_out.update(frag.data_out)
    plio_member = {p.name: c_identifier(p.name) for p in design.plios}
    memtile_member = {m.name: c_identifier(m.name) for m in design.memtile_buffers}
    members = list(plio_member.values()) + list(memtile_member.values())
    members += [k for f in fragments for k in f.kernels]
    if len(set(members)) != len(members):
        raise DesignError("two graph members would have the same C++ name",
                          hint="give the model's layers names that differ in more than punctuation")

    def source(peer):  # the port a writer's data leaves on
        return f"{plio_member[peer]}.out[0]" if peer in plio_member else data_out[peer]

    def sink(peer):  # the port a reader's data arrives on
        return f"{plio_member[peer]}.in[0]" if peer in plio_member else data_in[peer]

    memtiles = []
    for m in design.memtile_buffers:
        memtiles.append(_Memtile(
            memtile_member[m.name], m, m.storage, m.offset,
            [(_tiling(a.tiling), [source(p) for p in a.peers]) for a in m.writers],
            [(_tiling(a.tiling), [sink(p) for p in a.peers]) for a in m.readers],
        ))
    plios = []
    for p in design.plios:
        if p.bits not in (32, 64, 128):
            raise DesignError(f"PLIO '{p.name}' is {p.bits} bits wide; ADF has 32-, 64- and 128-bit PLIOs")
        plios.append({"member": plio_member[p.name], "plio": p, "file": f"data/{p.name}.txt"})
    includes = sorted({inc for f in fragments for inc in f.includes})
    links = [(l.tensor, source(l.source), [sink(s) for s in l.sinks]) for l in design.links]
    return {"fragments": fragments, "memtiles": memtiles, "plios": plios, "includes": includes, "links": links}


# --- the project -------------------------------------------------------------------------------------------


def _context(design: Design) -> dict:
    gen = design.device.generation
    summary = design.summary()
    return {
        "design": design,
        "device": design.device,
        "gen": gen,
        "summary": summary,
        "graph_class": GRAPH_CLASS,
        "graph_instance": GRAPH_INSTANCE,
        "iterations": iterations(design),
        "samples": iterations(design) * design.batch,
        "outputs": [p.name for p in design.plios if p.direction == "out"],
        "pl_freq_mhz": f"{design.device.plio_hz / 1e6:g}",
        "families": sorted({l.op.kind for l in design.layers}),
    }


def render_project(design: Design) -> dict[str, str]:
    """Every file of the project as {path relative to the project root: text}, sorted by path."""
    files = {"design.json": design.to_json()}
    layer_ns = _unique_identifiers([l.op.name for l in design.layers])
    ctx = _context(design)
    ctx.update(_graph_context(design, layer_ns))
    files["src/graph.h"] = _ENV.get_template("graph.h.j2").render(**ctx)
    files["src/graph.cpp"] = _ENV.get_template("graph.cpp.j2").render(**ctx)
    for kind in ctx["families"]:
        layers = [(l, layer_ns[l.op.name]) for l in design.layers if l.op.kind == kind]
        files.update(_family(kind).sources(design, layers))
    files.update(_data_files(design))
    files["Makefile"] = _ENV.get_template("Makefile.j2").render(**ctx)
    files["aie.cfg"] = _ENV.get_template("aie.cfg.j2").render(**ctx)
    files["README.md"] = _ENV.get_template("README.md.j2").render(files=sorted(files), **ctx)
    return dict(sorted(files.items()))


def write_project(design: Design, path: str | Path, extra: dict[str, bytes] | None = None) -> Path:
    """Write the project for `design` to `path` (emit/folder.py: only aieflow's own files are replaced, all or
    none); `extra` are files of the caller's put beside it, e.g. the demo's model, which a recompile keeps."""
    from .folder import write_tree

    files = {rel: text.encode("utf-8") for rel, text in render_project(design).items()}
    write_tree(Path(path), files, extra)
    return Path(path)
