"""The emitted conv and pool kernels, wired as the design wires them (aieflow.host.run: memory-tile buffers
through the design's own access patterns, halos and zero padding included), equal the emulator on whole
CNN designs: random 1-D and 2-D graphs (tests/test_cnn_mapping.py's generator: convolutions with padding,
strides and row splits, depthwise layers, pools, residual adds, requantization) and the QDQ demo CNN.
A g++ build per design: a slice runs in `make test`, the full set under the `full` marker."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import aieflow
from aieflow.host import run as host_run

from test_cnn_mapping import _inputs, _random_cnn

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

FAST = (0, 3, 10)
FULL = tuple(s for s in range(24) if s not in FAST)


def _host_equals_emulator(design, x, tmp_path) -> None:
    project = design.write(tmp_path / "project")
    want = design.simulate(x, raw=True, fast=False)
    got = host_run.run_host(design, project, x)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", FAST)
def test_random_cnn_host_run_equals_the_emulator(seed, tmp_path):
    g = _random_cnn(seed)
    design = aieflow.compile(g, batch=4, objective="throughput" if seed % 2 else "resource")
    _host_equals_emulator(design, _inputs(g, 9, seed), tmp_path)


@pytest.mark.full
@pytest.mark.parametrize("seed", FULL)
def test_random_cnn_host_run_equals_the_emulator_full(seed, tmp_path):
    g = _random_cnn(seed)
    design = aieflow.compile(g, batch=4, objective="throughput" if seed % 2 else "resource")
    _host_equals_emulator(design, _inputs(g, 9, seed), tmp_path)


def test_the_demo_cnn_project_runs_on_the_host_as_emulated(tmp_path):
    from aieflow.demo import calo_cnn
    from aieflow.examples.cnn import sample_cnn_inputs

    model = calo_cnn()
    design = aieflow.compile(model, batch=8)
    assert design.exactness.exact
    x = sample_cnn_inputs(model, 40, seed=3)
    tin = design.graph.tensors[design.graph.inputs[0]]
    _host_equals_emulator(design, tin.quantize(x), tmp_path)


def test_the_emitted_cnn_graph_builds_the_design(tmp_path):
    """src/graph.h of a CNN project, built against the host ADF headers, records exactly the design's kernels,
    connections, 4-D memory-tile buffers with their windows (negative offsets, boundaries) and PLIOs."""
    from aieflow.host.graph import compare, record_graph

    g = _random_cnn(10)
    design = aieflow.compile(g, batch=4, objective="throughput")
    project = design.write(tmp_path / "project")
    assert compare(design, record_graph(project)) == []
