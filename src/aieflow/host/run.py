"""Run an emitted project's firmware on the host: the kernels' own C++, wired as the design wires them.

`run_host` writes a C++ harness that #includes the project's kernel sources and parameter headers,
instantiates every kernel of the design with the parameter arrays its graph.h hands it, and runs graph
iterations in dataflow order: memory-tile buffers are arrays, filled and read through index maps generated
here from the design's DMA descriptors (aieflow.tiling: one buffer address per stream position, -1 for a
position outside the boundary, which reads as zero and is dropped on write); direct links copy a producer's
output buffer to its sinks; cascade chains run stage by stage over the host headers' cascade queues.
The binary is built with g++ against aieflow.host's headers and cached by the hash of what it is built from.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..design import Design
from ..errors import DesignError
from ..files import write_file
from ..ops import part
from ..tiling import Tiling, address_map
from . import include_dir

_CREATE = re.compile(r"(\w+) = adf::kernel::create_object<([\w:]+)>\((.*?)\);", re.S)
_ROLES = ("single", "first", "middle", "last")


def _kernels(graph_h: str) -> dict[str, tuple[str, list[str]]]:
    """Kernel C identifier -> (class, parameter array names) as the emitted graph creates them."""
    return {m.group(1): (m.group(2), re.findall(r"std::begin\((\w+)\)", m.group(3))) for m in _CREATE.finditer(graph_h)}


def harness(design: Design, project_dir: Path) -> str:
    """The C++ that runs `design` from the project's emitted sources (see the module docstring)."""
    from ..emit import c_identifier

    project_dir = Path(project_dir)
    created = _kernels((project_dir / "src" / "graph.h").read_text())
    sources = sorted(p.name for p in (project_dir / "src" / "kernels").glob("*.cpp"))
    params = sorted(p.name for p in (project_dir / "src" / "params").glob("*.h"))

    streams: dict[str, int] = {}  # stream name (PLIO or kernel id) -> index into S[]

    def sid(name: str) -> int:
        return streams.setdefault(name, len(streams))

    maps: list[np.ndarray] = []

    def map_id(t: Tiling) -> int:
        maps.append(address_map(t))
        return len(maps) - 1

    bufs = {m.name: i for i, m in enumerate(design.memtile_buffers)}
    setup: list[str] = []
    body: list[str] = []
    filled: set[str] = set()

    def fill(m) -> None:
        if m.name in filled:
            return
        filled.add(m.name)
        b = bufs[m.name]
        body.append(f"    std::fill(BUF[{b}].begin(), BUF[{b}].end(), 0LL);")
        for a in m.writers:
            (peer,) = a.peers
            body.append(f"    scatter(BUF[{b}], S[{sid(peer)}], M{map_id(a.tiling)});")

    ins = [p for p in design.plios if p.direction == "in"]
    outs = [p for p in design.plios if p.direction == "out"]
    for p in ins:
        sid(p.name)

    for layer in design.layers:
        emit = part(layer.op.kind, "emit")  # the layer struct's input types and output size
        ns = c_identifier(layer.op.name)
        # Inputs of this layer's kernels: memory-tile reads and direct links, as the emulator gathers them.
        feeds: dict[str, str] = {}  # kernel port -> C++ expression of its stream
        for tensor in layer.op.inputs:
            for m in design.memtile_buffers:
                if m.tensor == tensor:
                    for a in m.readers:
                        fill(m)
                        r = f"R{len(maps)}"
                        body.append(f"    static std::vector<long long> {r}; gather({r}, BUF[{bufs[m.name]}], M{map_id(a.tiling)});")
                        feeds.update({peer: r for peer in a.peers})
            for link in design.links:
                if link.tensor == tensor:
                    feeds.update({sink: f"S[{sid(link.source)}]" for sink in link.sinks})
        cfg = layer.config
        body.append(f"    {{ // layer {layer.op.name}")
        for c in range(cfg.cas_num):
            body.append("        {")
            if cfg.cas_length > 1:
                body.append(f"        cascade_words link[{cfg.cas_length}];")
            for s in range(cfg.cas_length):
                kid = f"{layer.op.name}_c{c}_s{s}"
                cid = f"{ns}_c{c}_s{s}"
                if cid not in created:
                    raise DesignError(f"kernel {cid} of the design is not created in src/graph.h")
                cls, arrays = created[cid]
                role = cls.rsplit("::", 1)[-1]
                # parameters: writable copies of the header's arrays (the kernel keeps references)
                names = []
                for j, arr in enumerate(arrays):
                    v = f"P_{cid}_{j}"
                    setup += [f"    alignas(64) static std::remove_cv_t<std::remove_extent_t<decltype({arr})>> {v}[std::extent_v<decltype({arr})>];",
                              f"    std::memcpy({v}, {arr}, sizeof {v});"]
                    names.append(v)
                setup.append(f"    static {cls} K_{cid}{{{', '.join(names)}}};")
                args = []
                for pi, tname in enumerate(emit.HOST_INPUTS):
                    peer = kid if pi == 0 else f"{kid}.in{pi}"
                    if peer not in feeds:
                        raise DesignError(f"nothing feeds input {pi} of kernel {kid}")
                    body += [f"        static std::vector<{ns}::layer::{tname}> X{pi}_{cid}; load(X{pi}_{cid}, {feeds[peer]});",
                             f"        adf::input_buffer<{ns}::layer::{tname}> I{pi}_{cid}{{X{pi}_{cid}.data()}};"]
                    args.append(f"I{pi}_{cid}")
                acc = f"{ns}::layer::acc_tag"
                if role in ("middle", "last"):
                    body.append(f"        input_cascade<{acc}> ci_{cid}{{&link[{s - 1}]}};")
                    args.append(f"&ci_{cid}")
                if role in ("first", "middle"):
                    body.append(f"        output_cascade<{acc}> co_{cid}{{&link[{s}]}};")
                    args.append(f"&co_{cid}")
                if role in ("single", "last"):
                    body += [f"        alignas(64) static {ns}::layer::out_t Y_{cid}[{emit.host_output_elements(cfg, c)}];",
                             f"        adf::output_buffer<{ns}::layer::out_t> O_{cid}{{Y_{cid}}};"]
                    args.append(f"O_{cid}")
                body.append(f"        K_{cid}.run({', '.join(args)});")
                if role in ("single", "last"):
                    body.append(f"        store(S[{sid(kid)}], Y_{cid});")
            body.append("        }")
        body.append("    }")

    # Outputs: the memory-tile reads that go to output PLIOs.
    out_reads = []
    for p in outs:
        for m in design.memtile_buffers:
            for a in m.readers:
                if p.name in a.peers:
                    fill(m)
                    out_reads.append(f"    gather(T, BUF[{bufs[m.name]}], M{map_id(a.tiling)}); put(T, {p.elements}, out);")
    body += out_reads

    lines = ["// Generated by aieflow.host.run: the project's kernels wired as its design.json says, for the host.",
             "#include <adf.h>", "#include <algorithm>", "#include <cstdio>", "#include <cstdlib>", "#include <cstring>",
             "#include <type_traits>", "#include <vector>"]
    lines += [f'#include "kernels/{s}"' for s in sources]
    lines += [f'#include "params/{p}"' for p in params]
    for i, a in enumerate(maps):
        lines.append(f"static const std::vector<int> M{i} = {{" + ",".join(map(str, a.tolist())) + "};")
    lines += [
        f"static std::vector<long long> S[{max(len(streams), 1)}];",
        f"static std::vector<long long> BUF[{max(len(bufs), 1)}];",
        "static void gather(std::vector<long long>& out, const std::vector<long long>& buf, const std::vector<int>& map)",
        "{ out.assign(map.size(), 0); for (size_t i = 0; i < map.size(); ++i) if (map[i] >= 0) out[i] = buf[map[i]]; }",
        "static void scatter(std::vector<long long>& buf, const std::vector<long long>& s, const std::vector<int>& map)",
        "{ if (s.size() != map.size()) { std::fprintf(stderr, \"stream of %zu for an access of %zu\\n\", s.size(), map.size()); std::exit(3); }",
        "  for (size_t i = 0; i < map.size(); ++i) if (map[i] >= 0) buf[map[i]] = s[i]; }",
        "template <class T> static void load(std::vector<T>& x, const std::vector<long long>& s)",
        "{ x.resize(s.size()); for (size_t i = 0; i < s.size(); ++i) x[i] = T(s[i]); }",
        "template <class T, size_t N> static void store(std::vector<long long>& s, const T (&y)[N])",
        "{ s.assign(N, 0); for (size_t i = 0; i < N; ++i) s[i] = (long long)y[i]; }",
        "static void put(const std::vector<long long>& s, size_t n, std::FILE* f)",
        "{ if (s.size() != n || std::fwrite(s.data(), sizeof(long long), n, f) != n) std::exit(4); }",
        "int main(int argc, char** argv)", "{",
        "    if (argc != 3) return 2;",
        "    std::FILE* in = std::fopen(argv[1], \"rb\");",
        "    std::FILE* out = std::fopen(argv[2], \"wb\");",
        "    if (!in || !out) return 2;",
    ]
    lines += [f"    BUF[{i}].assign({int(np.prod(m.dims))}, 0);" for i, m in enumerate(design.memtile_buffers)]
    lines += setup
    lines += ["    static std::vector<long long> T;", "    for (;;) {"]
    for k, p in enumerate(ins):
        lines += [f"    S[{streams[p.name]}].assign({p.elements}, 0);",
                  f"    if (std::fread(S[{streams[p.name]}].data(), sizeof(long long), {p.elements}, in) != {p.elements}) "
                  + ("break;" if k == 0 else "return 5;")]
    lines += [l for l in body if l]
    lines += ["    }", "    std::fclose(out);", "    return 0;", "}", ""]
    return "\n".join(lines)


def _cache_root(project_dir: Path) -> Path:
    return Path(project_dir) / ".host_build"


def build(design: Design, project_dir: Path, cxx: str | None = None) -> Path:
    """The host binary for this project (built once per content: harness, kernel sources, headers)."""
    project_dir = Path(project_dir)
    cxx = cxx or shutil.which("g++")
    if cxx is None:
        raise DesignError("the host engine needs g++", hint="install g++ (C++20)")
    code = harness(design, project_dir)
    inc = include_dir()
    flags = ["-std=c++20", "-O1", "-w", f"-I{project_dir / 'src'}", f"-I{project_dir / 'src' / 'kernels'}", f"-I{inc}"]
    h = hashlib.sha256("\0".join([cxx, *flags, code]).encode())
    for root in (project_dir / "src", Path(inc)):
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in (".h", ".hpp", ".cpp"):
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    key = h.hexdigest()[:20]
    cache = _cache_root(project_dir)
    exe = cache / f"run_{key}"
    if exe.exists():
        return exe
    cache.mkdir(parents=True, exist_ok=True)
    src = cache / f"harness_{key}.cpp"
    src.write_text(code)
    tmp = cache / f".run_{key}.{os.getpid()}"
    cmd = [cxx, *flags, str(src), "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DesignError(f"the host harness did not compile:\n{done.stderr[-4000:]}")
    os.replace(tmp, exe)
    return exe


def run_host(design: Design, project_dir: Path, x_raw: np.ndarray) -> np.ndarray:
    """Output integers of the project's kernels run on the host on raw input integers x_raw, both in the
    model's own layout ([samples, features] for an MLP)."""
    from ..simulate.emulator import check_raw, samples

    g = design.graph
    tout = g.tensors[g.outputs[0]]
    x = check_raw(design, samples(design, x_raw)).astype(np.int64)
    return tout.to_source(_run_binary(design, project_dir, x))


def _run_binary(design: Design, project_dir: Path, x: np.ndarray) -> np.ndarray:
    """[samples, features] output integers for [samples, features] input integers, compiler order."""
    tout = design.graph.tensors[design.graph.outputs[0]]
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, tout.features), dtype=np.int64)
    exe = build(design, project_dir)
    iters = -(-n // design.batch)
    padded = np.zeros((iters * design.batch, x.shape[1]), dtype=np.int64)
    padded[:n] = x
    ins = [p for p in design.plios if p.direction == "in"]
    outs = [p for p in design.plios if p.direction == "out"]
    words = []
    for i in range(iters):
        chunk = padded[i * design.batch:(i + 1) * design.batch]
        for p in ins:
            wire = np.zeros((design.batch, p.row), dtype=np.int64)
            wire[:, : p.hi - p.lo] = chunk[:, p.lo:p.hi]
            words.append(wire.ravel())
    with tempfile.TemporaryDirectory(prefix="aieflow_host_") as tmp:
        fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        np.concatenate(words).astype("<i8").tofile(fin)
        done = subprocess.run([str(exe), str(fin), str(fout)], capture_output=True, text=True)
        if done.returncode != 0:
            raise DesignError(f"the host run failed (exit {done.returncode}): {done.stderr[-2000:]}")
        raw = np.fromfile(fout, dtype="<i8")
    per = sum(p.elements for p in outs)
    if raw.size != per * iters:
        raise DesignError(f"the host run wrote {raw.size} output values, expected {per * iters}")
    raw = raw.reshape(iters, per)
    y = np.zeros((iters, design.batch, tout.features), dtype=np.int64)
    at = 0
    for p in outs:
        wire = raw[:, at:at + p.elements].reshape(iters, design.batch, p.row)
        y[:, :, p.lo:p.hi] = wire[:, :, : p.hi - p.lo]
        at += p.elements
    return y.reshape(-1, tout.features)[:n]


def run(design: Design, project_dir: Path, x: np.ndarray, raw: bool = False) -> np.ndarray:
    """As Design.simulate, on the host engine: floats are quantized, integers taken as raw; raw=False dequantizes."""
    from ..simulate.emulator import samples

    g = design.graph
    tout = g.tensors[g.outputs[0]]
    x = samples(design, x)
    q = g.tensors[g.inputs[0]].quantize(x) if x.dtype.kind == "f" else x.astype(np.int64)
    y = _run_binary(design, project_dir, q)
    return tout.to_source(y if raw else tout.dequantize(y))


def run_project_files(design: Design, project_dir: Path) -> list[Path]:
    """Run the host build on the project's own simulator inputs (data/in_*.txt, the files x86sim reads) and
    write host_output/data/out_*.txt in the simulators' text format, beside where x86sim would write; the
    project's `make check SIM=host` compares them with the emulator's golden files."""
    from ..emit import on_wire, parse_text, text_lines, values_per_line

    project_dir = Path(project_dir)
    tin = design.graph.tensors[design.graph.inputs[0]]
    x = None
    for p in design.plios:
        if p.direction != "in":
            continue
        values = np.array(parse_text((project_dir / "data" / f"{p.name}.txt").read_text()), dtype=np.int64)
        wire = values.reshape(-1, p.row)
        if x is None:
            x = np.zeros((wire.shape[0], tin.features), dtype=np.int64)
        x[:, p.lo:p.hi] = wire[:, : p.hi - p.lo]
    y = _run_binary(design, project_dir, x)
    out_dir = project_dir / "host_output" / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p in design.plios:
        if p.direction == "out":
            storage = design.graph.tensors[p.tensor].type.storage
            path = out_dir / f"{p.name}.txt"
            write_file(path, text_lines(on_wire(y[:, p.lo:p.hi], p.row), values_per_line(storage, p.bits)))
            written.append(path)
    return written
