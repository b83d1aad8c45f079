"""design.json is validated on every load: a malformed one raises one DesignError naming design.json, never
another exception; a loaded design's violations() never raises."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import replace

import pytest

import aieflow
from aieflow import design as design_mod
from aieflow.errors import DesignError
from aieflow.examples.onnx_qdq import qdq_mlp
from aieflow.mapping.check import violations


@pytest.fixture(scope="module")
def text() -> str:
    return aieflow.compile(qdq_mlp([20, 33, 9], seed=5), measure=False).to_json()


def _load(tmp_path, body: str):
    f = tmp_path / "design.json"
    f.write_text(body)
    return design_mod.load(f)


def _refused(tmp_path, body: str) -> str:
    with pytest.raises(DesignError) as e:
        _load(tmp_path, body)
    msg = str(e.value)
    assert "design.json" in msg and "\n" not in msg
    return msg


def _edit(text: str, fn) -> str:
    data = json.loads(text)
    fn(data)
    return json.dumps(data)


def test_real_design_loads_back(tmp_path, text):
    d = _load(tmp_path, text)
    assert d.to_json() == text
    assert violations(d) == []


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _set(data, path, value, delete=False):
    node = data
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


REPLACEMENTS = ["seven", "8", 7.5, 0.0, True, False, None, [], [1, 2], {}, {"a": 1}, 0, -1, 2**40, 1]


def _mutate(rng: random.Random, text: str, base: dict, paths: list) -> str:
    kind = rng.randrange(12)
    if kind == 0:
        return json.dumps(rng.choice([[], [base], None, 3, "x", 1.5, True]))
    if kind == 1:
        return text[: rng.randrange(len(text))]
    if kind == 2:
        n = 100000
        return "[" * n + "]" * n if rng.random() < 0.5 else '{"a":' * n + "1" + "}" * n
    data = copy.deepcopy(base)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        path = rng.choice(paths)
        try:
            if kind == 3 and isinstance(_get(data, path[:-1]), dict):
                _set(data, path, None, delete=True)
            elif kind == 4:
                _set(data, path, rng.choice([0, -1, 2**40, 1, 3, 7, 2**63]))
            elif kind == 5:
                _set(data, path, [[[[0]]]] * 2 if rng.random() < 0.5 else {"deep": {"x": [None]}})
            else:
                _set(data, path, rng.choice(REPLACEMENTS))
        except (KeyError, IndexError, TypeError):
            pass
    return json.dumps(data)


def _get(data, path):
    for k in path:
        data = data[k]
    return data


def test_mutation_fuzz_never_raises_anything_but_design_error(tmp_path, text):
    base = json.loads(text)
    paths = [p for p in _paths(base) if p and not (len(p) > 2 and p[-2] == "base64")]
    rng = random.Random(1234)
    loaded = refused = 0
    for i in range(640):
        body = _mutate(rng, text, base, paths)
        try:
            d = _load(tmp_path, body)
        except DesignError as e:
            msg = str(e)
            assert "design.json" in msg and "\n" not in msg, (i, msg)
            refused += 1
            continue
        except Exception as e:  # pragma: no cover - the failure being tested for
            pytest.fail(f"mutation {i} raised {type(e).__name__}: {e}\n{body[:300]}")
        assert isinstance(violations(d), list)
        loaded += 1
    assert loaded + refused == 640 and refused > 300


def test_root_list_and_null(tmp_path):
    assert "root" in _refused(tmp_path, "[]")
    assert "root" in _refused(tmp_path, "null")


def test_col_seven_and_fraction(tmp_path, text):
    def col(v):
        return _edit(text, lambda d: d["tiles"][0].__setitem__("col", v))
    assert _refused(tmp_path, col("seven")) == 'design.json: tiles[0].col must be an integer >= 0, got "seven"'
    assert _refused(tmp_path, col(7.5)) == "design.json: tiles[0].col must be an integer >= 0, got 7.5"
    assert "tiles[0].col" in _refused(tmp_path, col(True))


def test_batch_string(tmp_path, text):
    body = _edit(text, lambda d: d.__setitem__("batch", "8"))
    assert _refused(tmp_path, body) == 'design.json: batch must be an integer from 1 to 4096, got "8"'


def test_cas_length_zero(tmp_path, text):
    body = _edit(text, lambda d: d["layers"][0]["config"].__setitem__("cas_length", 0))
    assert "layers[0].config.cas_length" in _refused(tmp_path, body)


def test_negative_bytes(tmp_path, text):
    body = _edit(text, lambda d: d["tiles"][0]["buffers"][0].__setitem__("bytes", -1))
    assert "tiles[0].buffers[0].bytes" in _refused(tmp_path, body)


def test_bad_config_names_the_layer(tmp_path, text):
    body = _edit(text, lambda d: d["layers"][1]["config"].__setitem__("no_such_field", 1))
    assert "layers[1].config" in _refused(tmp_path, body)


def test_bad_base64_and_references(tmp_path, text):
    body = _edit(text, lambda d: d["layers"][0]["packed"]["bias"].__setitem__("shape", [1, 41]))
    assert "layers[0].packed.bias" in _refused(tmp_path, body)
    body = _edit(text, lambda d: d["tiles"][0].__setitem__("layer", "nope"))
    assert "tiles[0].layer" in _refused(tmp_path, body)
    body = _edit(text, lambda d: d["plios"][0].__setitem__("tensor", "nope"))
    assert "plios[0].tensor" in _refused(tmp_path, body)


def test_deep_nesting(tmp_path):
    assert "design.json" in _refused(tmp_path, "[" * 100000 + "]" * 100000)
    assert "design.json" in _refused(tmp_path, '{"graph":' * 100000 + "1" + "}" * 100000)


def test_plio_bits_7(tmp_path, text):
    body = _edit(text, lambda d: d["plios"][0].__setitem__("bits", 7))
    try:
        d = _load(tmp_path, body)
    except DesignError as e:
        assert "plios[0].bits" in str(e)
        return
    assert any("PLIO" in v and "width" in v for v in violations(d))


def test_batch_zero_is_the_batch_rule(tmp_path, text):
    body = _edit(text, lambda d: d.__setitem__("batch", 0))
    assert _refused(tmp_path, body).startswith("design.json: batch must be an integer from 1 to 4096")
    d = replace(_load(tmp_path, text), batch=0)
    found = violations(d)
    assert found and found[0].startswith("batch 0")


def test_violations_never_raise(tmp_path, text):
    d = replace(_load(tmp_path, text), plios=None)
    found = violations(d)
    assert any(v.startswith("rule plio cannot check") for v in found)
