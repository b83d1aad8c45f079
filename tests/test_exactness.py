"""aieflow.exactness: per-layer and whole-model comparison with a source's reference, and its report."""

import json

import numpy as np
import pytest

import aieflow
from aieflow.exactness import ExactnessReport, calibration_inputs, evaluate_op, measure
from aieflow.frontends import Imported
from aieflow.frontends.onnx_qdq import load_onnx
from aieflow.examples.onnx_qdq import qdq_mlp, run_onnxruntime, sample_inputs


def _imported(model, reference):
    return Imported(load_onnx(model), "test source", reference)


def _ir_reference(graph, tamper=None):
    """The Graph's own semantics as a 'source' (every tensor exposed), optionally tampered with as each
    op's output is produced (so later ops see the tampered values, as in a real source)."""
    def ref(x):
        values = {graph.inputs[0]: graph.tensors[graph.inputs[0]].quantize(x)}
        for op in graph.ops:
            values[op.outputs[0]] = evaluate_op(op, graph, values)
            if tamper:
                tamper(values)
        return values
    return ref


def test_a_faithful_source_is_bit_exact_on_every_layer():
    model = qdq_mlp([12, 10, 8, 6], seed=1)
    graph = load_onnx(model)
    rep = measure(Imported(graph, "ir", _ir_reference(graph)), samples=200)
    assert rep.exact and len(rep.layers) == 3 and not rep.unmeasured
    assert all(c.values == 200 * graph.tensors[c.tensor].features for c in rep.layers)


def test_a_mismatch_is_charged_to_the_layer_that_makes_it():
    model = qdq_mlp([12, 10, 8, 6], seed=2)
    graph = load_onnx(model)
    mid = graph.ops[1].outputs[0]

    def tamper(values):
        if mid in values and len(values) == 3:  # just after layer 2
            values[mid][::7, 0] += 3  # a source that differs in layer 2 only, by 3 LSB on some values

    rep = measure(Imported(graph, "ir", _ir_reference(graph, tamper)), samples=70)
    by_name = {c.name: c for c in rep.layers}
    assert by_name[graph.ops[0].name].exact
    assert not by_name[graph.ops[1].name].exact
    assert by_name[graph.ops[1].name].mismatches == 10 and by_name[graph.ops[1].name].max_lsb == 3
    # Layer 3 is run on the source's (tampered) input, so it agrees with the source again.
    assert by_name[graph.ops[2].name].exact
    assert not rep.exact
    assert "at most 3 LSB" in "\n".join(rep.lines())


def test_onnxruntime_outputs_only_measures_the_model_and_lists_the_rest():
    model = qdq_mlp([16, 12, 5], seed=3)
    graph = load_onnx(model)
    tin = graph.tensors[graph.inputs[0]]
    tout = graph.tensors[graph.outputs[0]]

    def ref(x):
        y = run_onnxruntime(model, x)
        return {tout.name: np.rint(y / tout.real_scale).astype(np.int64), tin.name: tin.quantize(x)}

    x = sample_inputs(model, 300, seed=4)
    design = aieflow.compile(Imported(graph, "onnxruntime", ref), calibration=x)
    rep = design.exactness
    assert rep.model.exact and rep.model.values == 300 * 5
    # Neither hidden layer output is returned by this reference: layer 1 cannot be compared, nor can layer 2
    # be run on the source's own input; the whole-model comparison covers them together.
    assert rep.unmeasured == tuple(op.name for op in graph.ops)
    # The report travels with the design.
    again = ExactnessReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert again == rep


def test_a_graph_is_not_measured():
    graph = load_onnx(qdq_mlp([8, 4], seed=5))
    assert aieflow.compile(graph).exactness is None


def test_calibration_inputs_cover_ties_and_saturation():
    graph = load_onnx(qdq_mlp([64, 4], seed=6))
    t = graph.tensors[graph.inputs[0]]
    x = calibration_inputs(graph, 400)
    steps = x.astype(np.float64) / t.real_scale
    assert np.any(steps == np.floor(steps) + 0.5)  # ties
    assert steps.max() > t.type.qmax and steps.min() < t.type.qmin  # past both ends


def test_a_reference_without_the_output_is_refused():
    graph = load_onnx(qdq_mlp([8, 4], seed=7))
    with pytest.raises(aieflow.AieflowError, match="did not return the model output"):
        measure(Imported(graph, "broken", lambda x: {}))
