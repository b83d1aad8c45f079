"""Host graph model: build the emitted graph header against aieflow's host ADF headers and compare with the Design.

`record_graph(project_dir)` compiles a tiny program that #includes the project's src/graph.h, instantiates
`aieflow_graph` and calls `adf::host_dump_json` (host-only; see include/adf.h): the graph-building calls of
the host adf.h record every kernel, connection, shared buffer (dims, ports, tiling of each access), PLIO
and location constraint. `compare(design, record)` lists every difference between that record and the
Design: kernels and their tiles, the connection set (memory-tile accesses and their peers, cascades,
direct links, PLIOs), memory-tile buffers (dims, storage, location, offset, tilings) and PLIOs.
An empty list means the emitted graph builds exactly the design.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..design import Design
from ..errors import DesignError
from . import include_dir

_MEMBER = re.compile(r"^\s*adf::(kernel|input_plio|output_plio|shared_buffer<\w+>)\s+(\w+)\s*;", re.M)
_PLIO_BITS = {32: "plio_32_bits", 64: "plio_64_bits", 128: "plio_128_bits"}


def members(graph_h: str) -> list[tuple[str, str]]:
    """(type, member name) of every kernel, PLIO and shared buffer member of aieflow_graph."""
    return [(m.group(1), m.group(2)) for m in _MEMBER.finditer(graph_h)]


def main_cpp(graph_h: str) -> str:
    lines = ['#include "graph.h"', "#include <iostream>", "", "int main()", "{",
             "    static aieflow_graph g;"]
    lines += [f'    adf::host_name(g.{name}, "{name}");' for _, name in members(graph_h)]
    lines += ["    adf::host_dump_json(std::cout);", "    return 0;", "}", ""]
    return "\n".join(lines)


def first_error(stderr: str) -> str:
    """The first 'file:line:col: error: ...' line of g++'s output, and how many errors there were."""
    errors = [line.strip() for line in stderr.splitlines() if " error: " in line or line.startswith("error:")]
    if not errors:
        tail = [line.strip() for line in stderr.splitlines() if line.strip()]
        return tail[-1] if tail else "g++ failed without a message"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return errors[0] + more


def record_graph(project_dir: str | Path, cxx: str | None = None) -> dict:
    """Compile and run src/graph.h of a written project against the host ADF headers; return its record."""
    project = Path(project_dir).resolve()
    graph_h = project / "src" / "graph.h"
    if not graph_h.is_file():
        raise DesignError(f"no src/graph.h in {project}", hint="give the folder written by `aieflow compile`")
    cxx = cxx or shutil.which("g++")
    if cxx is None:
        raise DesignError("the host graph model needs g++", hint="install g++ (C++20)")
    source = main_cpp(graph_h.read_text())
    with tempfile.TemporaryDirectory(prefix="aieflow_graph_") as tmp:
        main = Path(tmp) / "main.cpp"
        exe = Path(tmp) / "graph_record"
        main.write_text(source)
        flags = ["-std=c++20", "-O0", "-w", f"-I{project / 'src'}", f"-I{project / 'src' / 'kernels'}",
                 f"-I{include_dir()}"]
        done = subprocess.run([cxx, *flags, str(main), "-o", str(exe)], capture_output=True, text=True)
        if done.returncode != 0:
            raise DesignError(f"src/graph.h does not build against the host ADF headers: {first_error(done.stderr)}",
                              hint="the line named is where g++ stopped; recompile the model to restore the file")
        run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            raise DesignError(f"the graph recorder failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout)


# --- comparison --------------------------------------------------------------------------------------------


def _endpoint(record: dict, p: dict) -> str:
    """A port of the record, spelled '<member>.<in|out|param>[i]', or the PLIO name for a PLIO port."""
    obj = p["object"]
    if p["id"] < 0:
        return "<unbound port: its object is not created yet>"
    if obj == "kernel":
        name = record["kernels"][p["id"]]["name"]
    elif obj == "shared_buffer":
        name = record["shared_buffers"][p["id"]]["name"]
    elif obj in ("input_plio", "output_plio"):
        return f"plio:{record['plios'][p['id']]['name']}"
    else:
        return "<unbound port: its object is not created yet>"
    return f"{name}.{p['port']}[{p['index']}]"


def _kernel_in(peer: str) -> str:
    """Access.peers / DirectLink.sinks spelling ('<id>' or '<id>.in<p>') as a record endpoint."""
    m = re.fullmatch(r"(.+)\.in(\d+)", peer)
    return f"{m.group(1)}.in[{m.group(2)}]" if m else f"{peer}.in[0]"


def _peer_end(design_plios: set[str], peer: str, into: bool) -> str:
    """A memory-tile access peer as an endpoint: a PLIO, a kernel input (reads) or a kernel output (writes)."""
    if peer in design_plios:
        return f"plio:{peer}"
    if into:
        return _kernel_in(peer)
    m = re.fullmatch(r"(.+)\.out(\d+)", peer)
    return f"{m.group(1)}.out[{m.group(2)}]" if m else f"{peer}.out[0]"


def expected_edges(design: Design) -> set[tuple[str, str]]:
    """Every connect(a, b) the design asks for, as (from, to) endpoints."""
    plios = {p.name for p in design.plios}
    edges: set[tuple[str, str]] = set()
    for m in design.memtile_buffers:
        for i, a in enumerate(m.writers):
            for peer in a.peers:
                edges.add((_peer_end(plios, peer, into=False), f"{m.name}.in[{i}]"))
        for i, a in enumerate(m.readers):
            for peer in a.peers:
                edges.add((f"{m.name}.out[{i}]", _peer_end(plios, peer, into=True)))
    for link in design.links:
        for sink in link.sinks:
            edges.add((f"{link.source}.out[0]", _kernel_in(sink)))
    by_pos = {(t.layer, t.chain, t.stage): t for t in design.tiles}
    for t in design.tiles:
        nxt = by_pos.get((t.layer, t.chain, t.stage + 1))
        if nxt is not None:
            edges.add((f"{t.id}.out[0]", f"{nxt.id}.in[1]"))
    return edges


def _tiling_dict(t: dict) -> dict:
    d = {k: t[k] for k in ("buffer_dimension", "tiling_dimension", "offset", "tile_traversal")}
    if t["boundary_dimension"]:
        d["boundary_dimension"] = t["boundary_dimension"]
    return d


def _differences(want, got, missing: str, extra: str) -> list[str]:
    """One line per name the design has and the record lacks (`missing`), and per name the other way
    round (`extra`); each format string takes the name as {0}."""
    return ([missing.format(n) for n in sorted(set(want) - set(got))]
            + [extra.format(n) for n in sorted(set(got) - set(want))])


def compare(design: Design, record: dict) -> list[str]:
    """Every difference between the recorded graph and the design; [] when they agree."""
    out: list[str] = []
    kernels = record["kernels"]
    names = [k["name"] for k in kernels]
    if "" in names:
        out.append(f"{names.count('')} kernel object(s) created but not held by any member")
    dup = sorted({n for n in names if n and names.count(n) > 1})
    if dup:
        out.append(f"kernel member(s) created more than once: {dup}")
    want = {t.id: t for t in design.tiles}
    got = {k["name"]: k for k in kernels if k["name"]}
    out += _differences(want, got, "kernel {0} of the design is not created", "kernel {0} is created but not in the design")

    # Location constraints, per kernel.
    tiles: dict[int, list] = {}
    stacks: dict[int, list] = {}
    for c in record["constraints"]:
        on = c["on"]
        if on["object"] == "kernel" and "port" not in on:
            if c["kind"] == "kernel":
                tiles.setdefault(on["id"], []).extend(c["where"])
            elif c["kind"] == "stack":
                stacks.setdefault(on["id"], []).extend(c["where"])
    for k in kernels:
        t = want.get(k["name"])
        if t is None:
            continue
        where = [(w["type"], w["col"], w["row"]) for w in tiles.get(k["id"], [])]
        if where != [("tile", t.col, t.row)]:
            out.append(f"kernel {t.id}: location {where}, design has tile ({t.col}, {t.row})")
        if not k["source"]:
            out.append(f"kernel {t.id} has no source")
        stack = {b.name: b.bank for b in t.buffers}.get("stack")
        if stack is not None:
            s = [(w["type"], w["col"], w["row"], w["value"]) for w in stacks.get(k["id"], [])]
            if s != [("bank", t.col, t.row, stack)]:
                out.append(f"kernel {t.id}: stack location {s}, design has bank ({t.col}, {t.row}, {stack})")

    # Connections.
    got_edges: list[tuple[str, str]] = [(_endpoint(record, e["from"]), _endpoint(record, e["to"]))
                                        for e in record["connections"]]
    exp = expected_edges(design)
    seen = set(got_edges)
    for e in sorted({e for e in got_edges if got_edges.count(e) > 1}):
        out.append(f"connection {e[0]} -> {e[1]} made more than once")
    out += _differences(exp, seen, "connection {0[0]} -> {0[1]} of the design is missing",
                        "connection {0[0]} -> {0[1]} is not in the design")

    # Memory-tile buffers.
    bufs = {b["name"]: b for b in record["shared_buffers"] if b["name"]}
    if len(bufs) != len(record["shared_buffers"]):
        out.append("a shared buffer is created but not held by any member")
    mems = {m.name: m for m in design.memtile_buffers}
    out += _differences(mems, bufs, "memory-tile buffer {0} of the design is not created",
                        "shared buffer {0} is created but not in the design")
    locs: dict[int, list] = {}
    for c in record["constraints"]:
        if c["on"]["object"] == "shared_buffer" and "port" not in c["on"]:
            locs.setdefault(c["on"]["id"], []).append((c["kind"], c["where"]))
    accesses: dict[tuple[int, bool, int], list[dict]] = {}
    for a in record["accesses"]:
        p = a["port"]
        if p["object"] != "shared_buffer":
            out.append(f"access on {_endpoint(record, p)}, not a shared buffer port")
            continue
        if a["write"] != (p["port"] == "in"):
            out.append(f"{'write' if a['write'] else 'read'} access on {_endpoint(record, p)}")
        accesses.setdefault((p["id"], p["port"] == "in", p["index"]), []).append(a["tiling"])
    for n in sorted(set(mems) & set(bufs)):
        m, b = mems[n], bufs[n]
        if tuple(b["dims"]) != tuple(m.dims):
            out.append(f"{n}: dims {b['dims']}, design has {list(m.dims)}")
        if b["type"] != m.storage:
            out.append(f"{n}: element type {b['type']}, design has {m.storage}")
        if (b["inputs"], b["outputs"]) != (len(m.writers), len(m.readers)):
            out.append(f"{n}: {b['inputs']} in / {b['outputs']} out ports, design has "
                       f"{len(m.writers)} / {len(m.readers)}")
        where = [(kind, [(w["type"], w["col"], w["row"], w["value"]) for w in ws]) for kind, ws in locs.get(b["id"], [])]
        if where != [("buffer", [("address", m.col, m.row, m.offset)])]:
            out.append(f"{n}: location {where}, design has address ({m.col}, {m.row}, {m.offset:#x})")
        for write, side in ((True, m.writers), (False, m.readers)):
            for i, a in enumerate(side):
                got_t = [_tiling_dict(t) for t in accesses.pop((b["id"], write, i), [])]
                port = f"{n}.{'in' if write else 'out'}[{i}]"
                if got_t != [a.tiling.to_dict()]:
                    out.append(f"{port}: tiling {got_t}, design has {a.tiling.to_dict()}")
    for (bid, write, i), ts in sorted(accesses.items()):
        name = record["shared_buffers"][bid]["name"]
        if name in mems:
            out.append(f"{name}.{'in' if write else 'out'}[{i}]: access not in the design")

    # PLIOs.
    plios = {p["name"]: p for p in record["plios"]}
    if len(plios) != len(record["plios"]):
        out.append("PLIO names are not unique")
    dp = {p.name: p for p in design.plios}
    out += _differences(dp, plios, "PLIO {0} of the design is not created", "PLIO {0} is created but not in the design")
    for n in sorted(set(dp) & set(plios)):
        p, r = dp[n], plios[n]
        if r["direction"] != p.direction or r["bits"] != p.bits:
            out.append(f"PLIO {n}: {r['direction']} {r['bits']} bits, design has {p.direction} {p.bits} bits")
    return out


def check(design: Design, project_dir: str | Path) -> list[str]:
    """record_graph + compare."""
    return compare(design, record_graph(project_dir))
