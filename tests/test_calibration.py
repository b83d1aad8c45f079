"""The cycle model against published AIE-ML figures (docs/calibration.md): each row within its band."""

from __future__ import annotations

import numpy as np
import pytest

import aieflow
from aieflow.devices import get_device
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.ir import Graph, Op, Tensor
from aieflow.numerics import FixedType
from aieflow.ops import dense
from aieflow.report.perf import predict

T8 = FixedType(8, True, 0)
DEV = get_device("ve2802")


def _layer(k: int, n: int, batch: int, cas_length: int, cas_num: int):
    rng = np.random.default_rng(0)
    g = Graph("g", {"x": Tensor("x", (k,), T8), "y": Tensor("y", (n,), T8)},
              (Op("fc", "dense", ("x",), ("y",), {"relu": True, "shift": 8, "weight_type": T8},
                  {"weight": rng.integers(-3, 4, (k, n)), "bias": rng.integers(-100, 100, n)}),), ("x",), ("y",))
    return aieflow.compile(g, batch=batch, layers={"fc": {"cas_length": cas_length, "cas_num": cas_num,
                                                          "microtile": [4, 8, 8]}})


def test_amd_tutorial_64_cubed_kernel():
    d = _layer(64, 64, 64, 1, 1)
    cycles = dense.cycles(d.layers[0].config, DEV)
    assert cycles == 1380
    assert 0.5 <= cycles / 2092 <= 1.0  # our pipelined loop against the tutorial's first, unoptimised kernel


@pytest.mark.parametrize("batch, lowest", [(8, 0.70), (32, 0.80), (64, 0.80)])
def test_single_kernel_fraction_of_peak(batch, lowest):
    d = _layer(128, 128, batch, 1, 1)
    fraction = 128 * 128 * batch / (dense.cycles(d.layers[0].config, DEV) * 256)
    assert lowest <= fraction < 1.0


def test_layer_scaling_fills_the_device_at_paper_efficiency():
    one = predict(_layer(128, 128, 8, 1, 1))
    full = predict(_layer(38 * 128, 8 * 128, 8, 38, 8))
    efficiency = (full.tops / full.tiles_used) / (one.tops / one.tiles_used)
    assert full.tiles_used >= 300 and efficiency >= 0.986


def test_seven_layer_mlp_against_the_paper():
    p = predict(aieflow.compile(qdq_mlp([512] * 8, seed=0), objective="throughput", batch=8))
    assert abs(p.tops - 113.4) / 113.4 <= 0.25
    assert p.tops / p.tiles_used >= 113.4 / 296  # per tile, at least the paper's


def test_gama_whole_array_gemm():
    p = predict(_layer(38 * 128, 8 * 128, 32, 38, 8))
    assert p.tiles_used == 304
    assert abs(p.tops - 165) / 165 <= 0.10 and abs(p.peak_fraction - 0.85) <= 0.05
