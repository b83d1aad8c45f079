"""At least 500 random graphs (chains, fan-outs, residual adds, random widths, random directives and
objectives): every design passes the independent checker and the emulator equals onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

import aieflow
from aieflow.devices import get_device
from aieflow.errors import MappingError
from aieflow.examples.onnx_qdq import run_onnxruntime, sample_inputs
from aieflow.examples.graphs import qdq_graph
from aieflow.frontends.onnx_qdq import load_onnx
from aieflow.mapping import search
from aieflow.mapping.check import violations
from aieflow.ops import family

GRAPHS = 520
INPUTS = 12
REFUSALS: list[str] = []
TALLY = {"designs": 0, "refused directives": 0, "ops": 0, "adds": 0, "links": 0, "shards": 0, "directed": 0}


def _directives(graph, device, batch, rng) -> dict:
    """Random but legal-looking directives for some layers: a candidate configuration, a transport, a pin."""
    out = {}
    for op in graph.ops:
        roll = rng.random()
        if roll < 0.3:
            cands = family(op.kind).candidates(op, graph, device, search._padded_batch(op, graph, device, batch))
            if cands:
                c = cands[int(rng.integers(len(cands)))]
                out[op.name] = {"cas_length": c.cas_length, "cas_num": c.cas_num}
        elif roll < 0.4:
            out[op.name] = {"transport": "memtile"}
        elif roll < 0.45:
            out[op.name] = {"col": int(rng.integers(device.columns)), "row": int(rng.integers(device.rows))}
    return out


@pytest.mark.parametrize("chunk", range(GRAPHS // 20))
def test_random_graphs_are_legal_and_bit_exact(chunk):
    for i in range(chunk * 20, chunk * 20 + 20):
        rng = np.random.default_rng(7000 + i)
        model = qdq_graph(i, max_layers=int(rng.integers(1, 7)), max_width=int(rng.choice([16, 64, 256, 512])),
                          act_bits=int(rng.choice([8, 8, 16])))
        dev = get_device(["ve2802", "ve2802", "ve3858"][i % 3])
        batch = int(rng.integers(1, 17))
        objective = ["resource", "throughput", "latency"][i % 3]
        graph = load_onnx(model)
        layers = _directives(graph, dev, batch, rng)
        max_tiles = int(rng.integers(20, dev.tiles)) if rng.random() < 0.2 else None
        try:
            design = aieflow.compile(graph, device=dev.key, batch=batch, objective=objective, layers=layers,
                                     max_tiles=max_tiles)
        except MappingError as e:
            # A random directive may be impossible (a pin on taken tiles, a split that cannot be wired); that
            # must be a clear refusal naming the layer or the budget, never an illegal design.
            assert layers or max_tiles, f"graph {i} refused without directives: {e}"
            TALLY["refused directives"] += 1
            REFUSALS.append(f"{i}: {e}")
            continue
        assert violations(design) == [], f"graph {i}"
        x = sample_inputs(model, INPUTS, seed=i)
        y = design.simulate(x, fast=False)
        assert np.array_equal(design.simulate(x, fast=True), y), f"graph {i}: fast path differs"
        ref = run_onnxruntime(model, x)
        assert np.array_equal(y, ref), f"graph {i}: {int(np.sum(y != ref))} outputs differ"
        TALLY["designs"] += 1
        TALLY["ops"] += len(graph.ops)
        TALLY["adds"] += sum(op.kind == "add" for op in graph.ops)
        TALLY["links"] += len(design.links)
        TALLY["shards"] += len(design.memtile_buffers)
        TALLY["directed"] += bool(layers)


def test_zz_sweep_covered_enough():
    if sum(TALLY[k] for k in ("designs", "refused directives")) < GRAPHS:
        pytest.skip("runs only after the whole sweep")
    print(f"\nrandom graph sweep: {TALLY}")
    print("\n".join(REFUSALS))
    assert TALLY["designs"] >= 500 and TALLY["adds"] > 100 and TALLY["links"] > 0 and TALLY["directed"] > 100
