"""Each frontend imports its library only when used and, when it is missing, says which extra to install;
the compile itself needs none of them (without onnxruntime it compiles and says exactness was not measured)."""

import sys
import warnings

import numpy as np
import pytest

import aieflow
from aieflow.errors import ModelError
from aieflow.examples.onnx_qdq import qdq_mlp


def _hide(monkeypatch, *names):
    for name in names:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, mod)
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def test_onnx_compiles_without_onnxruntime_and_says_exactness_was_not_measured(monkeypatch):
    _hide(monkeypatch, "onnxruntime")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        design = aieflow.compile(qdq_mlp([8, 6, 4], seed=1))
    assert design.exactness is None
    assert any("aieflow[ort]" in str(w.message) for w in caught)
    assert design.simulate(np.zeros((3, 8), np.float32)).shape == (3, 4)


def test_qonnx_models_name_the_qonnx_extra(monkeypatch):
    from aieflow.frontends.qonnx import import_qonnx

    _hide(monkeypatch, "qonnx")
    with pytest.raises(ModelError, match=r"aieflow\[qonnx\]"):
        import_qonnx(qdq_mlp([8, 4], seed=2))


def test_torch_modules_name_the_torch_extra(monkeypatch):
    import torch

    module = torch.nn.Linear(4, 2)
    _hide(monkeypatch, "brevitas")
    with pytest.raises(ModelError, match=r"aieflow\[torch\]"):
        aieflow.compile(module, example_input=np.zeros((1, 4), np.float32))


def test_a_module_without_example_input_is_refused():
    import torch

    with pytest.raises(ModelError, match="example_input"):
        aieflow.compile(torch.nn.Linear(4, 2))


def test_something_else_is_refused_with_what_would_work():
    with pytest.raises(ModelError, match="ONNX or QONNX file"):
        aieflow.compile(42)
