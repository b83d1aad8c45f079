"""Drive the conv and pool kernels alone on the host (tests/test_conv_kernels.py): small IR graphs, a design
stand-in, memory-tile input windows built from random maps, a C++ driver that runs every kernel of every
layer on them, and the family's emulate() as the reference. Not a test module itself."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from aieflow.design import BankBuffer, KernelTile, Layer
from aieflow.devices import get_device
from aieflow.host import include_dir
from aieflow.ir import Graph, Tensor
from aieflow.numerics import FixedType, Rounding, Saturation
from aieflow.ops import family, part
from aieflow.ops.base import Window, bank_assignment, kernel_id, map_dims
from aieflow.ops.conv import conv_op, out_size
from aieflow.ops.pool import pool_op

GXX = shutil.which("g++")
DEVICE = get_device("ve2802")
CXXFLAGS = ["-std=c++20", "-O1", "-Wall", "-Wextra", "-Werror", "-DAIEFLOW_HOST_CHECK_SIZES"]


def conv_graph(name: str, in_shape, co: int, *, kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), x_type=None,
               w_bits=8, y_type=None, depthwise=False, relu=False, shift=None, multiplier=1, zero_point=0,
               clip=None, seed=0, w_range=None) -> Graph:
    """One conv layer x -> y with random weights and bias; the shift puts typical sums near the top of the
    output's range (so some saturate) unless given."""
    rng = np.random.default_rng(seed)
    x_type = x_type or FixedType(8, True, 0)
    y_type = y_type or FixedType(8, True, 0, Rounding.CONV_EVEN, Saturation.SATURATE)
    c = in_shape[-1]
    h, w = (1, in_shape[0]) if len(in_shape) == 2 else in_shape[:2]
    kh, kw = kernel
    ho, wo = out_size(h, kh, strides[0], pads[0], pads[2]), out_size(w, kw, strides[1], pads[1], pads[3])
    out_shape = (wo, co) if len(in_shape) == 2 else (ho, wo, co)
    lim = w_range or (1000 if w_bits == 16 else 127)
    wshape = (kh, kw, 1, co) if depthwise else (kh, kw, c, co)
    weight = rng.integers(-lim, lim, wshape, endpoint=True)
    taps = kh * kw * (1 if depthwise else c)
    typical = max(1.0, x_type.magnitude * lim * np.sqrt(taps) / 2)
    bias = rng.integers(-int(typical), int(typical) + 1, co)
    if shift is None:
        shift = max(0, int(np.round(np.log2(typical * multiplier / 2 ** (y_type.bits - 1)))))
    x = Tensor("x", tuple(in_shape), x_type)
    y = Tensor("y", out_shape, y_type, zero_point=zero_point)
    op = conv_op(name, "x", "y", weight, bias, FixedType(w_bits, True, 0), kernel=kernel, strides=strides,
                 pads=pads, shift=shift, multiplier=multiplier, relu=relu, depthwise=depthwise, clip=clip)
    return Graph(f"g_{name}", {"x": x, "y": y}, (op,), ("x",), ("y",)).validate()


def pool_graph(name: str, in_shape, mode: str, *, kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0), x_type=None,
               y_type=None, zero_point=0, shift=0, multiplier=1, bias=0) -> Graph:
    x_type = x_type or FixedType(8, True, 0)
    y_type = y_type or x_type
    c = in_shape[-1]
    h, w = (1, in_shape[0]) if len(in_shape) == 2 else in_shape[:2]
    ho, wo = out_size(h, kernel[0], strides[0], pads[0], pads[2]), out_size(w, kernel[1], strides[1], pads[1], pads[3])
    out_shape = (wo, c) if len(in_shape) == 2 else (ho, wo, c)
    x = Tensor("x", tuple(in_shape), x_type, zero_point=zero_point if mode == "max" else 0)
    y = Tensor("y", out_shape, y_type, zero_point=zero_point)
    op = pool_op(name, "x", "y", mode, kernel=kernel, strides=strides, pads=pads, shift=shift,
                 multiplier=multiplier, bias=bias)
    return Graph(f"g_{name}", {"x": x, "y": y}, (op,), ("x",), ("y",)).validate()


def layer_of(graph: Graph, batch: int, pick) -> Layer:
    """The graph's one op as a Layer, with the first of the family's candidates that `pick` accepts."""
    op = graph.ops[0]
    fam = family(op.kind)
    fam.check_numerics(op, graph, DEVICE)
    cands = fam.candidates(op, graph, DEVICE, batch)
    cfg = next((c for c in cands if pick(c)), None)
    assert cfg is not None, f"no candidate of {op.name} fits"
    return Layer(op, cfg, fam.pack(op, cfg))


def tiles_of(layer: Layer) -> list[KernelTile]:
    """Kernel tiles of a layer with the bank plan of its buffers (placement: any distinct tiles)."""
    cfg = layer.config
    fam = family(layer.op.kind)
    out = []
    for c in range(cfg.cas_num):
        for s in range(cfg.cas_length):
            bufs = fam.tile_buffers(cfg, s, DEVICE)
            banks = bank_assignment(bufs, DEVICE)
            assert banks is not None
            out.append(KernelTile(layer.op.name, c, s, s, c,
                                  tuple(BankBuffer(n, banks[n], b) for n, b in bufs)))
    return out


def stand_in(graphs: list[Graph], layers: list[Layer]):
    """What sources() and graph_fragment() read of a Design: graph, layers, device, kernels_of."""
    tensors, ops = {}, []
    for g, l in zip(graphs, layers):
        for name, t in g.tensors.items():
            tensors[f"{l.op.name}.{name}"] = t
    # Each layer's op reads and writes its own tensors: rename them so the graphs sit side by side.
    renamed = []
    for l in layers:
        op = l.op
        new = type(op)(op.name, op.kind, (f"{op.name}.{op.inputs[0]}",), (f"{op.name}.{op.outputs[0]}",),
                       op.attrs, op.params)
        renamed.append(Layer(new, l.config, l.packed))
    graph = Graph("conv_kernels", tensors, tuple(l.op for l in renamed), (), ())
    tiles = [t for l in renamed for t in tiles_of(l)]
    return SimpleNamespace(graph=graph, layers=tuple(renamed), device=DEVICE,
                           kernels_of=lambda name: [t for t in tiles if t.layer == name]), renamed


def window_stream(x: np.ndarray, win: Window) -> np.ndarray:
    """The stream a memory-tile read of box `win` delivers from maps x [B, H, W, C]: [B][h][w][c], zeros
    outside the map (rows, columns and channels)."""
    b, h, w, c = x.shape
    (c0, w0, h0), (cs, ws, hs) = win.offset, win.size
    out = np.zeros((b, hs, ws, cs), dtype=np.int64)
    r_lo, r_hi = max(h0, 0), min(h0 + hs, h)
    k_lo, k_hi = max(w0, 0), min(w0 + ws, w)
    ch_lo, ch_hi = max(c0, 0), min(c0 + cs, c)
    if r_lo < r_hi and k_lo < k_hi and ch_lo < ch_hi:
        out[:, r_lo - h0:r_hi - h0, k_lo - w0:k_hi - w0, ch_lo - c0:ch_hi - c0] = x[:, r_lo:r_hi, k_lo:k_hi, ch_lo:ch_hi]
    return out.ravel()


def random_map(graph: Graph, op, batch: int, rng) -> np.ndarray:
    """Random integers over the input type's whole range, [B, H, W, C], with both extremes present."""
    t = graph.tensors[op.inputs[0]]
    c, w, h = map_dims(t.shape)
    x = rng.integers(t.type.qmin, t.type.qmax, (batch, h, w, c), endpoint=True)
    x.reshape(-1)[0], x.reshape(-1)[-1] = t.type.qmin, t.type.qmax
    return x


def input_streams(layer: Layer, x: np.ndarray) -> dict[str, np.ndarray]:
    fam = family(layer.op.kind)
    streams = {}
    for win in fam.input_slices(layer.op, layer.config, 0):
        s = window_stream(x, win)
        for peer in win.peers:
            streams[peer] = s
    return streams


# Elements past the end of each output buffer, filled with a mark the kernels must leave alone.
GUARD = 64


def sanitizer_flags() -> list[str]:
    """AddressSanitizer and UBSan flags when this g++ can link them (reads or writes past a buffer, the
    device's silent corruption, then abort the driver), else none."""
    global _SANITIZE
    if _SANITIZE is None:
        import tempfile

        flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "t.cpp").write_text("int main() { return 0; }\n")
            done = subprocess.run([GXX, *flags, "t.cpp", "-o", "t"], cwd=tmp, capture_output=True)
        _SANITIZE = flags if done.returncode == 0 else []
    return _SANITIZE


_SANITIZE = None


def _driver(layer: Layer, ns: str, cls_of) -> str:
    """C++ running every chain of `layer` stage by stage (cascade queues between stages), inputs from stdin,
    each chain's output buffer printed (and the guard past its end checked)."""
    cfg = layer.config
    emit = part(layer.op.kind, "emit")
    conv = layer.op.kind == "conv"
    lines = [f"void run_{ns}() {{", f"    using L = {ns}::layer;"]
    for c in range(cfg.cas_num):
        n_out = emit.host_output_elements(cfg, c)
        lines += ["    {", f"        cascade_words link[{cfg.cas_length}];",
                  f"        alignas(64) static L::out_t y[{n_out + GUARD}];",
                  f"        for (auto& v : y) v = L::out_t(0x5A);"]
        for s in range(cfg.cas_length):
            cls = cls_of(c, s)
            r = cls.rsplit("::", 1)[-1]
            elems = cfg.batch * cfg.rows_in * cfg.cols_in * (cfg.k_tile if conv else cfg.n_tile)
            lines += [f"        alignas(64) static L::in_t x{s}[{elems}];",
                      f"        for (auto& v : x{s}) {{ long long t; if (std::scanf(\"%lld\", &t) != 1) std::abort(); v = L::in_t(t); }}",
                      f"        adf::input_buffer<L::in_t> in{s}{{x{s}}};"]
            args = []
            if conv:
                lines += [f"        alignas(64) static L::w_t w{s}[L::WEIGHTS];",
                          f"        std::memcpy(w{s}, {ns}_c{c}_s{s}_weights, sizeof w{s});"]
                args.append(f"w{s}")
                if r in ("single", "last"):
                    lines += [f"        alignas(64) static L::bias_t b{s}[L::NT];",
                              f"        std::memcpy(b{s}, {ns}_c{c}_bias, sizeof b{s});"]
                    args.append(f"b{s}")
            lines.append(f"        {cls} k{s}{{{', '.join(args)}}};")
            if r in ("single", "last"):
                lines.append("        adf::output_buffer<L::out_t> ob{y};")
            if s > 0:
                lines.append(f"        input_cascade<L::acc_tag> ci{s}{{&link[{s - 1}]}};")
            if r in ("first", "middle"):
                lines.append(f"        output_cascade<L::acc_tag> co{s}{{&link[{s}]}};")
            call = {"single": f"in{s}, ob", "first": f"in{s}, &co{s}", "middle": f"in{s}, &ci{s}, &co{s}",
                    "last": f"in{s}, &ci{s}, ob"}[r]
            lines.append(f"        k{s}.run({call});")
        # every word a stage sent was read by the next
        lines += ["        for (auto& q : link) if (!q.empty()) std::abort();",
                  f"        for (unsigned i = {n_out}; i < {n_out + GUARD}; ++i) if (y[i] != L::out_t(0x5A)) std::abort();",
                  f"        for (unsigned i = 0; i < {n_out}; ++i) std::printf(\"%lld\\n\", (long long)y[i]);", "    }"]
    lines.append("}")
    return "\n".join(lines)


_CREATE = re.compile(r"(\w+) = adf::kernel::create_object<([\w:]+)>\((.*?)\);", re.S)


def created_classes(body: str) -> dict[str, tuple[str, list[str]]]:
    """Kernel member -> (class, parameter arrays), read from graph code as aieflow.host.run reads it."""
    return {m.group(1): (m.group(2), re.findall(r"std::begin\((\w+)\)", m.group(3))) for m in _CREATE.finditer(body)}


def render(design, layers: list[Layer]) -> tuple[dict[str, str], dict[str, str], dict]:
    """(files, C identifier of each layer, graph fragments) of the layers, each family's sources() merged."""
    from aieflow.emit import c_identifier

    files, names, frags = {}, {}, {}
    for kind in sorted({l.op.kind for l in layers}):
        pairs = [(l, c_identifier(l.op.name)) for l in layers if l.op.kind == kind]
        files.update(part(kind, "emit").sources(design, pairs))
        for l, ns in pairs:
            names[l.op.name] = ns
            frags[l.op.name] = part(kind, "emit").graph_fragment(design, l, ns)
    return files, names, frags


def build(root: Path, files: dict[str, str], layers: list[Layer], names: dict[str, str], frags: dict,
          extra_flags=()) -> Path:
    """Write the sources and a driver running every layer's kernels; compile it; the binary's path."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    includes, bodies, calls = [], [], []
    for l in layers:
        ns = names[l.op.name]
        created = created_classes(frags[l.op.name].body)
        includes += [f'#include "{inc}"' for inc in frags[l.op.name].includes]
        bodies.append(_driver(l, ns, lambda c, s: created[f"{ns}_c{c}_s{s}"][0]))
        calls.append(f"    run_{ns}();")
    main = "\n".join(["#include <cstdio>", "#include <cstdlib>", "#include <cstring>", *includes, *bodies,
                      "int main() {", *calls, "    return 0;", "}", ""])
    (root / "driver.cpp").write_text(main)
    kernels = sorted(str(p.relative_to(root)) for p in root.glob("src/kernels/*.cpp"))
    done = subprocess.run([GXX, *CXXFLAGS, *extra_flags, "-I", str(include_dir()), "-I", "src", "-I", "src/kernels",
                           "driver.cpp", *kernels, "-o", "driver"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-6000:]
    return root / "driver"


def run(exe: Path, feeds: list[np.ndarray]) -> np.ndarray:
    feed = "\n".join(str(int(v)) for v in np.concatenate(feeds)) + "\n" if feeds else ""
    done = subprocess.run([str(exe)], input=feed, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.array([int(v) for v in done.stdout.split()], dtype=np.int64)


def feeds_and_expected(design, layers: list[Layer], seed: int):
    """The driver's stdin (every kernel's input stream in the driver's order) and the emulator's outputs
    (each chain's last kernel, in order), from random input maps; also the maps and streams."""
    rng = np.random.default_rng(seed)
    feeds, expected, maps = [], [], {}
    for l in layers:
        cfg = l.config
        x = random_map(design.graph, l.op, cfg.batch, rng)
        maps[l.op.name] = x
        streams = input_streams(l, x)
        out = family(l.op.kind).emulate(l, design.graph, streams)
        for c in range(cfg.cas_num):
            for s in range(cfg.cas_length):
                feeds.append(streams[kernel_id(l.op.name, c, s)])
            expected.append(np.asarray(out[kernel_id(l.op.name, c, cfg.cas_length - 1)], dtype=np.int64))
    return feeds, expected, maps
