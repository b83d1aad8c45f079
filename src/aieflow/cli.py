"""The command line: compile, simulate, check, plot, report, devices, demo.

Every failure is one line on stderr and exit status 2, never a traceback: aieflow's own errors, the
filesystem's (read-only, full, missing), memory, click's usage errors, and, for anything unforeseen, one line
that says where the full traceback was kept (or `aieflow --debug ...` to see it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import click
import numpy as np

from .errors import AieflowError, DesignError


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_message(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    what = e.strerror or str(e) or type(e).__name__
    return f"{where}: {what}" if where else what


def _keep_traceback() -> str | None:
    """Write the current traceback to a log file; its path, or None when it cannot be written."""
    try:
        fd, name = tempfile.mkstemp(prefix="aieflow-traceback-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(traceback.format_exc())
        return name
    except OSError:
        return None


class _Group(click.Group):
    """Runs a command and turns whatever it raises into one line and exit status 2."""

    def main(self, args=None, prog_name=None, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv[: next((i for i, a in enumerate(argv) if a in self.commands), len(argv))]
        try:
            code = super().main(args=argv, prog_name=prog_name or "aieflow", standalone_mode=False, **extra)
        except SystemExit:
            raise
        except click.exceptions.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx is not None else "aieflow"
            click.echo(f"error: {_one_line(e.format_message())} (see '{cmd} --help')", err=True)
            sys.exit(2)
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(2)
        except AieflowError as e:
            if debug:
                raise
            click.echo(f"error: {_one_line(e.one_line())}", err=True)
            sys.exit(2)
        except OSError as e:
            if debug:
                raise
            click.echo(f"error: {_one_line(_os_message(e))}", err=True)
            sys.exit(2)
        except MemoryError:
            if debug:
                raise
            click.echo("error: out of memory (a shape or sample count too large for this machine)", err=True)
            sys.exit(2)
        except RecursionError:
            if debug:
                raise
            click.echo("error: an input is nested too deeply to read", err=True)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 - the last boundary: one line, the traceback kept for a report
            if debug:
                raise
            log = _keep_traceback()
            where = f"; the traceback is in {log}" if log else ""
            click.echo(f"error: internal error, {type(e).__name__}: {_one_line(e)} (a bug in aieflow{where}; "
                       f"`aieflow --debug ...` shows it)", err=True)
            sys.exit(2)
        sys.exit(code if isinstance(code, int) else 0)


def _load_legal(project: Path, force: bool):
    """The design of PROJECT, checked by the independent checker first: an illegal one is refused (or, with
    --force, used after a warning)."""
    from .design import load
    from .mapping.check import violations

    design = load(project)
    bad = violations(design)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        if not force:
            raise DesignError(f"{project} is not a legal design: {bad[0]}{more}",
                              hint=f"`aieflow check {project}` lists every broken rule; --force uses it anyway")
        click.echo(f"warning: {project} is not a legal design: {bad[0]}{more}; going on (--force)", err=True)
    return design


@click.group(cls=_Group)
@click.version_option(package_name="aieflow")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
def main(debug: bool) -> None:
    """Compile quantized neural networks for AMD AI Engine arrays, and run them bit-exactly without AMD tools."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Project folder to write (replaced only when the compile succeeds).")
@click.option("--device", default="ve2802", show_default=True, help="Target part; see `aieflow devices`.")
@click.option("--batch", type=int, default=None, help="Samples per graph iteration [default: 8].")
@click.option("--objective", type=click.Choice(["resource", "throughput", "latency"]), default=None,
              help="What the mapping optimises [default: resource, or the config file's].")
@click.option("--max-tiles", type=int, default=None, help="Use at most this many compute tiles.")
@click.option("--target-interval", type=int, default=None,
              help="With --objective resource: cycles per graph iteration to meet with the fewest tiles.")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file of compile options and per-layer directives ([compile], [layers.NAME]).")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .npy float array [samples, features] of inputs on which to measure bit-exactness with the "
                   "source model [default: generated over the input's range].")
@click.option("--no-measure", is_flag=True, help="Skip running the source model to measure bit-exactness.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the human summary.")
def compile(model: Path, output: Path, device: str, batch: int | None, objective: str | None,  # noqa: A001
            max_tiles: int | None, target_interval: int | None, config: Path | None, calibration: Path | None,
            no_measure: bool, as_json: bool) -> None:
    """Compile a quantized MODEL (QDQ ONNX or QONNX, e.g. a Brevitas export) into a Vitis AI Engine project."""
    from . import compile as compile_model
    from .report import human_summary

    from .inputs import load_array

    calib = None if calibration is None else load_array(calibration, "--calibration")
    design = compile_model(model, device=device, batch=batch, objective=objective, max_tiles=max_tiles,
                           target_interval=target_interval, config=config, calibration=calib,
                           measure=not no_measure)
    design.write(output)
    if as_json:
        click.echo(json.dumps({**design.summary(), "output": str(output)}, sort_keys=True))
    else:
        human_summary(design, output)


@main.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("-i", "--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A .npy array [samples, features]: floats are quantized, integers taken as raw values. "
                   "Without it, --engine host runs the project's own data/in_*.txt.")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the outputs (.npy).")
@click.option("--raw", is_flag=True, help="Save the output integers instead of dequantized floats.")
@click.option("--engine", type=click.Choice(["emulator", "fast", "host"]), default=None,
              help="emulator: the structural emulator; fast: the whole-batch one; host: the project's emitted "
                   "kernel C++ built with g++ and run on this machine. Default: fast or emulator by input size.")
@click.option("--force", is_flag=True, help="Use a design the checker finds illegal (with a warning).")
def simulate(project: Path, input_path: Path, output_path: Path, raw: bool, engine: str | None,
             force: bool) -> None:
    """Run the bit-exact emulator of a compiled PROJECT on an input array."""
    design = _load_legal(project, force)
    if input_path is None and engine == "host":
        from .host.run import run_project_files

        for path in run_project_files(design, project):
            click.echo(f"wrote {path}")
        return
    if input_path is None or output_path is None:
        raise DesignError("--input and --output are needed", hint="or use --engine host alone to run the project's data files")
    from .files import save_array
    from .inputs import check_source, load_array

    x = check_source(load_array(input_path, "--input"), design.graph.tensors[design.graph.inputs[0]], "--input")
    if engine == "host":
        from .host.run import run as run_host

        y = run_host(design, project, x, raw=raw)
    else:
        y = design.simulate(x, raw=raw, fast=None if engine is None else engine == "fast")
    if raw:
        y = y.astype(design.graph.tensors[design.graph.outputs[0]].type.storage)
    save_array(output_path, y)
    click.echo(f"{len(y)} samples -> {output_path} ({'integers' if raw else 'dequantized floats'})")


@main.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("--host", "host_graph", is_flag=True,
              help="Also build the project's src/graph.h against aieflow's host ADF model (g++) and compare the "
                   "graph it records with design.json.")
def check(project: Path, host_graph: bool) -> None:
    """Check a compiled PROJECT (or design.json) against its device with the independent checker."""
    from .design import load
    from .mapping.check import violations

    design = load(project)
    bad = violations(design)
    if host_graph:
        from .host.graph import compare, record_graph

        bad += [f"emitted graph: {d}" for d in compare(design, record_graph(project))]
    if bad:
        for line in bad:
            click.echo(f"violation: {line}", err=True)
        click.echo(f"error: {len(bad)} constraint(s) broken in {project}", err=True)
        sys.exit(2)
    click.echo(f"legal: {len(design.tiles)} kernels, {len(design.memtile_buffers)} memory-tile buffers, "
               f"{len(design.links)} direct links, {len(design.plios)} PLIOs on {design.device.name}")


@main.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("placement.png"),
              show_default=True, help="Picture to write: .png or .svg.")
@click.option("--title", default=None, help="Heading instead of the default summary line.")
@click.option("--force", is_flag=True, help="Use a design the checker finds illegal (with a warning).")
def plot(project: Path, output: Path, title: str | None, force: bool) -> None:
    """Draw the placement of a compiled PROJECT (or design.json) on its device."""
    from .report.plot import check_picture_name, placement_text, plot_design

    design = _load_legal(project, force)
    check_picture_name(output)
    written = plot_design(design, output, title=title)  # written before anything is printed: a failure is one line
    click.echo(placement_text(design), nl=False)
    click.echo(f"wrote {written}")


@main.command()
@click.argument("project", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.json, report.md and report.html [default: PROJECT].")
@click.option("--force", is_flag=True, help="Use a design the checker finds illegal (with a warning).")
def report(project: Path, output: Path | None, force: bool) -> None:
    """Predict a compiled PROJECT's performance: a table here, report.json / .md / .html on disk."""
    from .report.render import print_report, write_reports

    design = _load_legal(project, force)
    if output is None:
        output = project if project.is_dir() else project.parent
    paths = write_reports(design, output)  # before the table: a failure to write is one line
    print_report(design)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def devices(as_json: bool) -> None:
    """List the devices in the catalog."""
    from .devices import catalog
    from .report import devices_table

    if as_json:
        rows = [{"key": d.key, "name": d.name, "board": d.board, "generation": d.generation.name,
                 "columns": d.columns, "rows": d.rows, "tiles": d.tiles, "memtiles": d.memtiles,
                 "clock_hz": d.clock_hz, "peak_int8_tops": d.peak_ops_per_second() / 1e12,
                 "aliases": list(d.aliases)} for d in catalog().values()]
        click.echo(json.dumps(rows, indent=1))
    else:
        devices_table()


@main.command()
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("build/demo"),
              show_default=True, help="Project folder for the demo design.")
@click.option("--model", "model_kind", type=click.Choice(["mlp", "cnn"]), default="mlp", show_default=True,
              help="mlp: the jet-tagging MLP; cnn: a small calorimeter-image CNN.")
def demo(output: Path, model_kind: str) -> None:
    """Build a bundled model (no download), compile it, write the project and check it against onnxruntime."""
    from .demo import run_demo

    if not run_demo(output, model_kind=model_kind):
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
