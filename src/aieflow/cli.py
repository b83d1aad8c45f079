"""The command line: compile, simulate, devices, demo.

Every error aieflow raises on purpose becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from .errors import AieflowError, DesignError


def _fail(err: AieflowError) -> None:
    click.echo(f"error: {err.one_line()}", err=True)
    sys.exit(2)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AieflowError as err:
            _fail(err)


@click.group(cls=_Group)
@click.version_option(package_name="aieflow")
def main() -> None:
    """Compile quantized neural networks for AMD AI Engine arrays, and run them bit-exactly without AMD tools."""


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Project folder to write (replaced only when the compile succeeds).")
@click.option("--device", default="ve2802", show_default=True, help="Target part; see `aieflow devices`.")
@click.option("--batch", type=int, default=None, help="Samples per graph iteration [default: 8].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the human summary.")
def compile(model: Path, output: Path, device: str, batch: int | None, as_json: bool) -> None:  # noqa: A001
    """Compile a quantized ONNX MODEL into a Vitis AI Engine project."""
    from . import compile as compile_model
    from .report import human_summary

    design = compile_model(model, device=device, batch=batch)
    design.write(output)
    if as_json:
        click.echo(json.dumps({**design.summary(), "output": str(output)}, sort_keys=True))
    else:
        human_summary(design, output)


@main.command()
@click.argument("project", type=click.Path(file_okay=False, path_type=Path))
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A .npy array [samples, features]: floats are quantized, integers taken as raw values.")
@click.option("--output", "output_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to save the outputs (.npy).")
@click.option("--raw", is_flag=True, help="Save the output integers instead of dequantized floats.")
def simulate(project: Path, input_path: Path, output_path: Path, raw: bool) -> None:
    """Run the bit-exact emulator of a compiled PROJECT on an input array."""
    from .design import load

    design = load(project)
    try:
        x = np.load(input_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DesignError(f"cannot read {input_path} as a .npy array: {e}") from None
    y = design.simulate(x, raw=raw)
    if raw:
        y = y.astype(design.graph.tensors[design.graph.outputs[0]].type.storage)
    np.save(output_path, y)
    click.echo(f"{len(y)} samples -> {output_path} ({'integers' if raw else 'dequantized floats'})")


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
def demo(output: Path) -> None:
    """Build the bundled jet-tagging MLP, compile it, write the project and check it against onnxruntime."""
    from .demo import run_demo

    if not run_demo(output):
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
