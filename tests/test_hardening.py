"""The edges: user files never lost, every failure one line and exit 2, no silent wrong answers.

Includes a mutation fuzz of ONNX files, TOML configs and input arrays through the command line (a slice here;
the full count behind the `full` marker): no traceback, exit 2 with one line on every failure, nothing
written outside the output path, and an existing project byte-identical after every failed command.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import aieflow
from aieflow.cli import main
from aieflow.examples.onnx_qdq import jet_tagger, qdq_mlp, sample_inputs

RUN = CliRunner()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fails_in_one_line(r, phrase: str = "") -> None:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    assert phrase in r.output, r.output


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "mlp.onnx"
    p.write_bytes(qdq_mlp([12, 20, 6], seed=4).SerializeToString())
    return p


@pytest.fixture()
def project(model_file, tmp_path) -> Path:
    out = tmp_path / "proj"
    r = RUN.invoke(main, ["compile", str(model_file), "-o", str(out), "--no-measure"])
    assert r.exit_code == 0, r.output
    return out


# --- the project folder ------------------------------------------------------------------------------------


def test_a_folder_with_a_foreign_design_json_is_refused_and_kept(model_file, tmp_path):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "design.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    r = RUN.invoke(main, ["compile", str(model_file), "-o", str(out), "--no-measure"])
    _fails_in_one_line(r, "not an aieflow project")
    assert _tree(out) == before


def test_recompiling_keeps_the_users_files(model_file, project):
    (project / "notes.txt").write_text("my notes")
    (project / "host_output").mkdir()
    (project / "host_output" / "x.txt").write_text("1 2 3")
    assert RUN.invoke(main, ["report", str(project)]).exit_code == 0
    other = project.parent / "other.onnx"
    other.write_bytes(qdq_mlp([12, 9, 6], seed=8).SerializeToString())
    r = RUN.invoke(main, ["compile", str(other), "-o", str(project), "--no-measure"])
    assert r.exit_code == 0, r.output
    assert (project / "notes.txt").read_text() == "my notes"
    assert (project / "host_output" / "x.txt").read_text() == "1 2 3"
    assert (project / "report.html").is_file()
    assert aieflow.load(project).graph.tensors[aieflow.load(project).graph.outputs[0]].features == 6
    manifest = json.loads((project / "aieflow-manifest.json").read_text())
    assert "notes.txt" not in manifest["files"] and "design.json" in manifest["files"]
    # Files of the old design that the new one does not write are gone; nothing else of aieflow's is left.
    assert set(manifest["files"]) | {"aieflow-manifest.json"} == \
        {k for k in _tree(project) if not k.startswith(("notes", "host_output", "report"))}
    assert not [p for p in project.parent.iterdir() if p.name.startswith(".")]


def test_an_edited_generated_file_is_not_overwritten(model_file, project):
    with open(project / "src" / "graph.h", "a") as f:
        f.write("// my change\n")
    before = _tree(project)
    r = RUN.invoke(main, ["compile", str(model_file), "-o", str(project), "--no-measure"])
    _fails_in_one_line(r, "was changed since aieflow wrote it")
    assert _tree(project) == before


def test_a_user_file_where_the_project_would_write_is_refused(model_file, tmp_path):
    out = tmp_path / "p"
    RUN.invoke(main, ["compile", str(model_file), "-o", str(out), "--no-measure"])
    (out / "data" / "golden_out_0.txt").unlink()
    (out / "aieflow-manifest.json").write_text(json.dumps({"format": "aieflow-manifest", "version": 1, "files": {}}))
    (out / "data" / "golden_out_0.txt").write_text("mine")
    before = _tree(out)
    r = RUN.invoke(main, ["compile", str(model_file), "-o", str(out), "--no-measure"])
    _fails_in_one_line(r, "not a file aieflow wrote")
    assert _tree(out) == before


def test_the_demo_writes_only_inside_its_folder(tmp_path):
    (tmp_path / "jet_tagger.onnx").write_text("a file of the user's")
    r = RUN.invoke(main, ["demo", "-o", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "jet_tagger.onnx").read_text() == "a file of the user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "jet_tagger.onnx"]
    assert "make check SIM=aiesim" in r.output
    # Running it again, or compiling its model into it, keeps the model and the inputs.
    assert RUN.invoke(main, ["demo", "-o", str(tmp_path / "demo")]).exit_code == 0
    model = tmp_path / "demo" / "jet_tagger.onnx"
    r = RUN.invoke(main, ["compile", str(model), "-o", str(tmp_path / "demo"), "--no-measure"])
    assert r.exit_code == 0, r.output
    assert model.is_file() and (tmp_path / "demo" / "sample_inputs.npy").is_file()


_SLOW_WRITE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import aieflow
    from aieflow.examples.onnx_qdq import qdq_mlp
    design = aieflow.compile(qdq_mlp([12, 9, 6], seed=8), measure=False)
    original = Path.write_bytes
    def slow(self, data):
        original(self, data)
        if self.name == "graph.h":
            Path(sys.argv[2]).write_text("started")
            time.sleep(60)
    Path.write_bytes = slow
    {action}
""")


def test_sigterm_mid_write_leaves_the_old_project_and_no_leftovers(project, tmp_path):
    before = _tree(project)
    flag = tmp_path / "started"
    script = _SLOW_WRITE.format(action="design.write(sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", script, str(project), str(flag)])
    for _ in range(600):
        if flag.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert flag.exists(), "the writer never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    assert _tree(project) == before
    assert not [p.name for p in project.parent.iterdir() if p.name.startswith(".")]


def test_a_killed_swap_is_rolled_back_by_the_next_write(project, tmp_path):
    """SIGKILL cannot be caught: the next write to the project finds the journal and restores the old files."""
    before = _tree(project)
    script = textwrap.dedent("""
        import os, sys
        import aieflow
        from aieflow.emit import folder
        from aieflow.examples.onnx_qdq import qdq_mlp
        design = aieflow.compile(qdq_mlp([12, 9, 6], seed=8), measure=False)
        moves = []
        real = folder._move
        def move(src, dst):
            moves.append(src)
            if len(moves) == 12:
                os._exit(9)  # killed in the middle of the swap
            real(src, dst)
        folder._move = move
        design.write(sys.argv[1])
    """)
    assert subprocess.run([sys.executable, "-c", script, str(project)]).returncode == 9
    assert _tree(project) != before  # half swapped
    assert [p for p in project.parent.iterdir() if p.name.startswith(".")]
    # The next write (here: one that fails on purpose, a file of the user's in the way) rolls back first.
    aieflow.compile(qdq_mlp([12, 20, 6], seed=4), measure=False).write(project.parent / "fresh")
    from aieflow.emit.folder import _clean_stale

    _clean_stale(project)
    assert _tree(project) == before
    assert not [p.name for p in project.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC", "EACCES"])
def test_filesystem_failures_are_one_line_and_keep_the_project(model_file, project, monkeypatch, errno_name):
    import errno

    code = getattr(errno, errno_name)
    before = _tree(project)

    def refuse(self, *a, **k):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    monkeypatch.setattr(Path, "write_text", refuse)
    for args in (["compile", str(model_file), "-o", str(project), "--no-measure"],
                 ["report", str(project)],
                 ["plot", str(project), "-o", str(project.parent / "p.png")],
                 ["simulate", str(project), "--engine", "host"]):
        r = RUN.invoke(main, args)
        _fails_in_one_line(r, os.strerror(code))
        assert _tree(project) == before, args
    assert not [p.name for p in project.parent.iterdir() if p.name.startswith(".")]


def test_a_missing_parent_folder_for_outputs_is_one_line(project, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 12), np.float32))
    _fails_in_one_line(RUN.invoke(main, ["simulate", str(project), "-i", str(x), "-o", str(tmp_path / "no" / "y.npy")]),
                       "No such file or directory")
    (tmp_path / "file").write_text("")
    _fails_in_one_line(RUN.invoke(main, ["plot", str(project), "-o", str(tmp_path / "file" / "p.png")]),
                       "File exists")


# --- silent wrong answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["", "  ", "\t"])
def test_a_blank_device_is_refused(model_file, tmp_path, device):
    _fails_in_one_line(RUN.invoke(main, ["compile", str(model_file), "-o", str(tmp_path / "p"), "--device", device]),
                       "no device given")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("array, phrase", [
    (np.zeros((0, 12), np.float32), "no samples"),
    (np.full((4, 12), np.nan, np.float32), "NaN or infinite"),
    (np.full((4, 12), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((4, 3, 12), np.float32), "shape"),
    (np.zeros((4, 11), np.float32), "shape"),
    (np.zeros((4, 12), bool), "dtype bool"),
    (np.zeros((4, 12), np.complex64), "dtype complex64"),
    (np.zeros((4, 12), np.int8), "dtype int8"),
])
def test_calibration_arrays_are_checked(model_file, tmp_path, array, phrase):
    np.save(tmp_path / "c.npy", array)
    r = RUN.invoke(main, ["compile", str(model_file), "-o", str(tmp_path / "p"), "--calibration", str(tmp_path / "c.npy")])
    _fails_in_one_line(r, phrase)
    assert not (tmp_path / "p").exists()


def test_simulate_refuses_what_the_emulator_cannot_run(project, tmp_path):
    for array, phrase in [(np.full((2, 12), np.nan), "NaN"), (np.zeros((2, 5)), "shape"),
                          (np.full((2, 12), 1000, np.int16), "outside the input type"),
                          (np.zeros((2, 12), "U1"), "dtype")]:
        np.save(tmp_path / "x.npy", array)
        _fails_in_one_line(RUN.invoke(main, ["simulate", str(project), "-i", str(tmp_path / "x.npy"), "-o",
                                             str(tmp_path / "y.npy")]), phrase)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    _fails_in_one_line(RUN.invoke(main, ["simulate", str(project), "-i", str(tmp_path / "bad.npy"), "-o",
                                         str(tmp_path / "y.npy")]), "not a readable .npy")
    assert not (tmp_path / "y.npy").exists()


def test_illegal_designs_are_refused_by_simulate_report_and_plot(project, tmp_path):
    data = json.loads((project / "design.json").read_text())
    data["tiles"][0]["col"] = 99
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    np.save(tmp_path / "x.npy", np.zeros((2, 12), np.float32))
    for args in (["simulate", str(bad), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
                 ["report", str(bad), "-o", str(tmp_path / "r")], ["plot", str(bad), "-o", str(tmp_path / "p.png")]):
        _fails_in_one_line(RUN.invoke(main, args), "not a legal design")
    assert not any(p.name in ("y.npy", "r", "p.png") for p in tmp_path.iterdir())
    r = RUN.invoke(main, ["simulate", str(bad), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--force"])
    assert r.exit_code == 0 and "warning:" in r.output


def test_a_declared_huge_batch_is_refused_before_allocating(model_file, tmp_path):
    m = onnx.load(str(model_file))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2 ** 40
    onnx.save(m, str(tmp_path / "big.onnx"))
    _fails_in_one_line(RUN.invoke(main, ["compile", str(tmp_path / "big.onnx"), "-o", str(tmp_path / "p")]),
                       "declares shape")


@pytest.mark.parametrize("toml, phrase", [
    ('[compile]\nmax_tiles = "lots"\n', "max_tiles"),
    ('[compile]\nbatch = "8"\n', "batch"),
    ('[compile]\nobjective = 3\n', "objective"),
    ('[layers]\nname = 4\n', "not a table"),
    ('compile = 4\n', "compile must be a table"),
    ('[layers.fc0_gemm_Gemm]\ntransport = ["x"]\n', "transport"),
])
def test_toml_values_of_the_wrong_type(model_file, tmp_path, toml, phrase):
    (tmp_path / "c.toml").write_text(toml)
    r = RUN.invoke(main, ["compile", str(model_file), "-o", str(tmp_path / "p"), "--config", str(tmp_path / "c.toml")])
    _fails_in_one_line(r, phrase)


def test_usage_errors_are_one_line(project):
    _fails_in_one_line(RUN.invoke(main, ["compile"]), "Missing argument")
    _fails_in_one_line(RUN.invoke(main, ["frobnicate"]), "No such command")
    _fails_in_one_line(RUN.invoke(main, ["report", str(project), "--bogus"]), "No such option")


def test_an_unforeseen_error_is_one_line_with_its_traceback_kept(project, monkeypatch):
    from aieflow.report import render

    def boom(*a, **k):
        raise ZeroDivisionError("deep inside")

    monkeypatch.setattr(render, "print_report", boom)
    r = RUN.invoke(main, ["report", str(project)])
    _fails_in_one_line(r, "internal error, ZeroDivisionError: deep inside")
    log = r.output.split("the traceback is in ")[1].split(";")[0]
    assert "ZeroDivisionError" in Path(log).read_text()
    os.unlink(log)
    r = RUN.invoke(main, ["--debug", "report", str(project)])
    assert isinstance(r.exception, ZeroDivisionError)


def test_plot_with_a_bad_suffix_prints_nothing_but_the_error(project, tmp_path):
    _fails_in_one_line(RUN.invoke(main, ["plot", str(project), "-o", str(tmp_path / "x.jpg")]), ".jpg")


def test_check_host_names_the_broken_line(project):
    graph = project / "src" / "graph.h"
    graph.write_text(graph.read_text().replace("adf::kernel ", "adf::kernal ", 1))
    r = RUN.invoke(main, ["check", str(project), "--host"])
    _fails_in_one_line(r, "graph.h:")
    assert "kernal" in r.output


def test_summary_and_report_agree_on_tops(project):
    r = RUN.invoke(main, ["compile", str(project.parent.parent / "model" / "mlp.onnx"), "-o", str(project),
                          "--no-measure"]) if False else None  # noqa: F841 - the project fixture is enough
    design = aieflow.load(project)
    from aieflow.report.perf import predict
    from aieflow.report.render import percent, report_data, sig3

    p = predict(design)
    data = report_data(design)
    assert sig3(p.tops) == sig3(data["tops"]) and percent(p.peak_fraction) == percent(data["peak_fraction"])


def test_repr_is_short(project):
    assert len(repr(aieflow.load(project))) < 200


# --- the fuzz ----------------------------------------------------------------------------------------------


def _mutations(base: onnx.ModelProto, rng: np.random.Generator, count: int):
    """(kind, bytes) of mutated ONNX files: fields, shapes, attributes and initializers changed."""
    raw = base.SerializeToString()
    for i in range(count):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        kind = ["init-values", "init-dtype", "init-shape", "input-shape", "attribute", "node-input", "op-type",
                "drop-node", "bytes", "truncate"][i % 10]
        g = m.graph
        if kind == "init-values":
            t = g.initializer[rng.integers(len(g.initializer))]
            a = onnx.numpy_helper.to_array(t).copy()
            if a.size:
                a.flat[rng.integers(a.size)] = rng.choice([0, -1, 127, -128, 1e30, np.nan]) if a.dtype.kind == "f" \
                    else rng.choice([0, -1, 127, -128])
            t.CopyFrom(onnx.numpy_helper.from_array(a.astype(a.dtype), t.name))
        elif kind == "init-dtype":
            t = g.initializer[rng.integers(len(g.initializer))]
            a = onnx.numpy_helper.to_array(t)
            t.CopyFrom(onnx.numpy_helper.from_array(a.astype(rng.choice([np.float64, np.int32, np.uint8, np.int16])), t.name))
        elif kind == "init-shape":
            t = g.initializer[rng.integers(len(g.initializer))]
            a = onnx.numpy_helper.to_array(t)
            t.CopyFrom(onnx.numpy_helper.from_array(np.resize(a, (int(rng.integers(0, 3)),) * int(rng.integers(1, 3))), t.name))
        elif kind == "input-shape":
            dims = g.input[0].type.tensor_type.shape.dim
            d = dims[int(rng.integers(len(dims)))]
            d.dim_value = int(rng.choice([0, 1, 3, 2 ** 31, 2 ** 40]))
        elif kind == "attribute":
            n = g.node[rng.integers(len(g.node))]
            n.attribute.append(onnx.helper.make_attribute(str(rng.choice(["axis", "alpha", "transB", "beta"])),
                                                          int(rng.integers(-2, 3))))
        elif kind == "node-input":
            n = g.node[rng.integers(len(g.node))]
            if n.input:
                n.input[int(rng.integers(len(n.input)))] = str(rng.choice(["", "missing", g.node[0].output[0]]))
        elif kind == "op-type":
            g.node[rng.integers(len(g.node))].op_type = str(rng.choice(["Sigmoid", "Conv", "Mul", "Gemm", "Relu"]))
        elif kind == "drop-node":
            del g.node[int(rng.integers(len(g.node)))]
        if kind == "bytes":
            b = bytearray(raw)
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            yield kind, bytes(b)
        elif kind == "truncate":
            yield kind, raw[: int(rng.integers(len(raw)))]
        else:
            yield kind, m.SerializeToString()


def _toml_mutations(rng, count):
    values = ['"lots"', "-1", "0", "1.5", "true", "[1, 2]", "{a = 1}", '"memtile"', "4", "2147483648"]
    keys = ["objective", "max_tiles", "target_interval", "batch", "bogus"]
    lkeys = ["cas_length", "cas_num", "microtile", "col", "row", "transport", "bogus"]
    for i in range(count):
        if i % 3 == 0:
            yield f"[compile]\n{rng.choice(keys)} = {rng.choice(values)}\n"
        elif i % 3 == 1:
            yield f"[layers.fc0_gemm_Gemm]\n{rng.choice(lkeys)} = {rng.choice(values)}\n"
        else:
            yield str(rng.choice(["[layers]\nx = 1\n", "[compile\n", "layers = 3\n", "[other]\n", "\x00", "a = [[[\n"]))


def _array_mutations(rng, count):
    for i in range(count):
        kind = i % 8
        if kind == 0:
            yield np.zeros((int(rng.integers(0, 3)), int(rng.integers(0, 20))), np.float32)
        elif kind == 1:
            a = rng.normal(size=(3, 12)).astype(np.float32)
            a.flat[int(rng.integers(a.size))] = rng.choice([np.nan, np.inf, -np.inf])
            yield a
        elif kind == 2:
            yield rng.integers(-300, 300, (3, 12)).astype(rng.choice([np.int16, np.int32, np.int64]))
        elif kind == 3:
            yield np.zeros((2, 3, 12), np.float32)
        elif kind == 4:
            yield np.zeros((3, 12), rng.choice([bool, np.complex64, "U2"]))
        elif kind == 5:
            yield rng.normal(size=12).astype(np.float32)
        elif kind == 6:
            yield np.zeros((), np.float32)
        else:
            yield rng.uniform(-1e30, 1e30, (3, 12))


def _fuzz(model_file: Path, project: Path, tmp_path: Path, n_onnx: int, n_toml: int, n_arrays: int) -> dict:
    rng = np.random.default_rng(2026)
    watched = project.parent
    before_project = _tree(project)
    counts: dict[str, int] = {}

    def run(args, kind):
        r = RUN.invoke(main, args)
        assert r.exception is None or isinstance(r.exception, SystemExit), (kind, args, repr(r.exception))
        assert "Traceback" not in r.output, (kind, r.output)
        if r.exit_code != 0:
            lines = [l for l in r.output.splitlines() if l.strip()]
            assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (kind, r.output)
            assert _tree(project) == before_project, kind
            counts[f"{kind} refused"] = counts.get(f"{kind} refused", 0) + 1
        else:
            counts[f"{kind} accepted"] = counts.get(f"{kind} accepted", 0) + 1
        return r

    work = tmp_path / "fuzz"
    work.mkdir()
    outside = {p.name for p in watched.iterdir()}
    for i, (kind, data) in enumerate(_mutations(onnx.load(str(model_file)), rng, n_onnx)):
        f = work / "m.onnx"
        f.write_bytes(data)
        out = work / f"out{i}"
        run(["compile", str(f), "-o", str(out), "--no-measure"], f"onnx:{kind}")
        # Into the existing project as well: refused or replaced whole, never half.
        if i % 10 == (i // 10) % 10:  # every kind in turn
            r = run(["compile", str(f), "-o", str(project), "--no-measure"], f"onnx-into-project:{kind}")
            if r.exit_code == 0:
                before_project = _tree(project)
    for i, text in enumerate(_toml_mutations(rng, n_toml)):
        (work / "c.toml").write_text(text)
        run(["compile", str(model_file), "-o", str(work / f"t{i}"), "--no-measure", "--config", str(work / "c.toml")],
            "toml")
    for i, a in enumerate(_array_mutations(rng, n_arrays)):
        np.save(work / "a.npy", a)
        run(["simulate", str(project), "-i", str(work / "a.npy"), "-o", str(work / f"y{i}.npy")], "array:simulate")
        run(["compile", str(model_file), "-o", str(work / f"c{i}"), "--calibration", str(work / "a.npy")],
            "array:calibration")
    assert {p.name for p in watched.iterdir()} == outside  # nothing written beside the output paths
    return counts


def test_fuzz_slice(model_file, project, tmp_path):
    counts = _fuzz(model_file, project, tmp_path, n_onnx=60, n_toml=30, n_arrays=16)
    assert sum(counts.values()) == 60 + 6 + 30 + 2 * 16
    assert any(k.endswith("refused") for k in counts)


@pytest.mark.full
def test_fuzz_full(model_file, project, tmp_path):
    counts = _fuzz(model_file, project, tmp_path, n_onnx=1200, n_toml=400, n_arrays=200)
    total = sum(counts.values())
    print(f"\nfuzz: {total} command runs over mutated inputs; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert total >= 2000
