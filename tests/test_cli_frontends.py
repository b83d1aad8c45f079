"""The command line on models from each tool: the exactness report it prints matches a measurement made
here, independently, with the source's own runtime; bad models exit 2 with one line and no output."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import torch
from click.testing import CliRunner

import aieflow
from aieflow.cli import main
from aieflow.examples.brevitas import brevitas_mlp, train
from aieflow.examples.onnx_tools import ort_quantized_mlp, sample_inputs


def _compile(args):
    return CliRunner().invoke(main, ["compile", *args], catch_exceptions=False)


def _ort_integers(path, x):
    """onnxruntime's output integers, measured here: the output QuantizeLinear's values read back."""
    model = onnx.load(str(path))
    out_q = next(n for n in reversed(model.graph.node) if n.op_type == "QuantizeLinear")
    zp = next(i for i in model.graph.initializer if i.name == out_q.input[2])
    model.graph.output.append(onnx.helper.make_tensor_value_info(out_q.output[0], zp.data_type, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([out_q.output[0]], {sess.get_inputs()[0].name: x.astype(np.float32)})[0].astype(np.int64)


def test_ort_quantized_mlp_report_matches_an_independent_measurement(tmp_path):
    path = tmp_path / "ortq.onnx"
    ort_quantized_mlp(path, (24, 48, 32, 10), seed=3)
    x = sample_inputs(onnx.load(str(path)), 300, seed=1).astype(np.float32)
    np.save(tmp_path / "calib.npy", x)
    res = _compile([str(path), "-o", str(tmp_path / "p"), "--calibration", str(tmp_path / "calib.npy"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)["exactness"]
    assert report["source"].startswith("onnxruntime (graph optimizations off") and report["samples"] == 300
    # Independently: the written project's design from onnxruntime's own input integers, against onnxruntime.
    design = aieflow.load(tmp_path / "p")
    g = design.graph
    q_in = g.tensors[g.inputs[0]].quantize(x)
    diff = np.abs(design.simulate(q_in, raw=True) - _ort_integers(path, x))
    assert report["model"]["values"] == diff.size
    assert report["model"]["mismatches"] == int(np.count_nonzero(diff))
    assert report["model"]["max_lsb"] == int(diff.max())
    assert report["exact"] == (not diff.any() and all(l["exact"] for l in report["layers"]))
    # The human summary shows the same report, one line per layer.
    res = _compile([str(path), "-o", str(tmp_path / "p2"), "--calibration", str(tmp_path / "calib.npy")])
    assert "exactness vs onnxruntime (graph optimizations off: the ONNX definition) on 300 calibration inputs" in res.output
    for layer in report["layers"]:
        assert f"  {layer['name']}: " in res.output


def test_brevitas_qonnx_export_compiles_bit_exact_from_the_command_line(tmp_path):
    from brevitas.export import export_qonnx

    module = brevitas_mlp((12, 16, 6))
    train(module, steps=30, seed=2)
    module.eval()
    path = tmp_path / "brevitas.onnx"
    export_qonnx(module, torch.zeros(1, 12), export_path=str(path), dynamo=False)
    res = _compile([str(path), "-o", str(tmp_path / "p"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)["exactness"]
    assert report["source"] == "qonnx" and report["exact"], report
    assert len(report["layers"]) >= 2


def test_a_qonnx_model_with_an_unsupported_node_exits_2_without_output(tmp_path):
    from onnx import TensorProto, helper

    q = helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain="qonnx.custom_op.general",
                         signed=1, narrow=0, rounding_mode="ROUND")
    bad = helper.make_node("Sigmoid", ["xq"], ["y"], name="the_sigmoid")
    graph = helper.make_graph(
        [q, bad], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.125]), helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("b", TensorProto.FLOAT, [], [8.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("qonnx.custom_op.general", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    res = CliRunner().invoke(main, ["compile", str(path), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1 and "the_sigmoid" in lines[0] and "Sigmoid" in lines[0], res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
