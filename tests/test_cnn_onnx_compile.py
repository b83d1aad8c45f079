"""Random QDQ CNNs (aieflow.examples.cnn.random_qdq_cnn: 1-D and 2-D, kernels, strides, padding, depthwise,
pools, residual adds, int8/uint8/int16, power-of-two and arbitrary scales) compiled all the way: the design's
exactness against onnxruntime is measured at compile time on every layer and the output, and the compiled
design's output equals the Graph's own integer semantics. The counts are printed; a slice runs in
`make test`, 200 models of each kind under the `full` marker."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import aieflow
from aieflow.errors import AieflowError
from aieflow.examples.cnn import random_qdq_cnn, sample_cnn_inputs
from aieflow.exactness import evaluate


def _sweep(seeds, pow2: bool) -> Counter:
    counts = Counter()
    for seed in seeds:
        model, _ = random_qdq_cnn(seed, dims=1 + seed % 2, pow2=pow2)
        x = sample_cnn_inputs(model, 20, seed=seed)
        try:
            design = aieflow.compile(model, batch=4, calibration=x)
        except AieflowError as e:
            counts[f"refused: {str(e).split(':')[1].strip()[:60] if ':' in str(e) else e}"] += 1
            continue
        counts["compiled"] += 1
        report = design.exactness
        g = design.graph
        tin, tout = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
        q = tin.quantize(tin.from_source(x))
        want = evaluate(g, q)[g.outputs[0]]
        assert np.array_equal(tout.from_source(design.simulate(tin.to_source(q), raw=True)), want)
        layers_lsb = max([c.max_lsb for c in report.layers] + [0])
        counts["values"] += sum(c.values for c in report.layers)
        counts["mismatches"] += sum(c.mismatches for c in report.layers)
        if report.exact:
            counts["bit-exact"] += 1
        else:
            assert layers_lsb <= 1, report.lines()
            counts["within 1 LSB per layer"] += 1
    print(dict(counts))
    return counts


def test_random_pow2_cnns_compile_bit_exact():
    counts = _sweep(range(10), pow2=True)
    assert counts["compiled"] >= 8 and counts["bit-exact"] >= counts["compiled"] - 1


def test_random_arbitrary_scale_cnns_compile_within_one_lsb():
    counts = _sweep(range(10, 16), pow2=False)
    assert counts["compiled"] >= 3


@pytest.mark.full
def test_random_pow2_cnns_compile_full():
    counts = _sweep(range(200), pow2=True)
    assert counts["compiled"] >= 150


@pytest.mark.full
def test_random_arbitrary_scale_cnns_compile_full():
    counts = _sweep(range(200, 400), pow2=False)
    assert counts["compiled"] >= 100
