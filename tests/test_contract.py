"""The op-family contract (aieflow/ops/base.py): every folder provides all of it, a missing piece is a clear
error naming the family, and no stage names a family: each asks aieflow.ops.family(kind)."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest

import aieflow
from aieflow.errors import DesignError
from aieflow.ops import CONTRACT, family, kinds, part
from aieflow.ops.base import missing_pieces

SRC = Path(aieflow.__file__).parent
# The stages: they read a Design or a Graph and must ask the family of each op instead of naming it.
STAGES = ["compiler.py", "design.py", "design_schema.py", "exactness.py", "mapping", "simulate", "emit",
          "report", "host", "cli.py"]


def test_the_families_are_the_folders():
    assert set(kinds()) >= {"dense", "add", "requant"}
    for kind in kinds():
        assert family(kind).KIND == kind


@pytest.mark.parametrize("kind", kinds())
def test_every_family_provides_the_whole_contract(kind):
    module = family(kind)
    assert missing_pieces(module) == []
    for sub, names in CONTRACT:
        m = part(kind, sub) if sub else module
        for name in names:
            assert getattr(m, name) is not None, f"{kind}: {sub}.{name}"


def test_a_family_missing_a_piece_is_refused_by_name(tmp_path, monkeypatch):
    """A copy of the add family without its checker rules and without evaluate: the registry names both."""
    fake = tmp_path / "aieflow_fake_ops"
    shutil.copytree(SRC / "ops" / "add", fake / "halfadd")
    (fake / "halfadd" / "check.py").unlink()
    text = (fake / "halfadd" / "__init__.py").read_text().replace("def evaluate(", "def _not_evaluate(")
    (fake / "halfadd" / "__init__.py").write_text(text.replace("from ...", "from aieflow.").replace("from ..", "from aieflow.ops."))
    for p in (fake / "halfadd").glob("*.py"):
        p.write_text(p.read_text().replace("from ...", "from aieflow.").replace("from ..", "from aieflow.ops."))
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("aieflow_fake_ops.halfadd")
    assert set(missing_pieces(module)) == {"evaluate", "check.py"}
    sys.modules.pop("aieflow_fake_ops.halfadd", None)
    sys.modules.pop("aieflow_fake_ops", None)


def test_an_unknown_kind_is_one_clear_error():
    with pytest.raises(DesignError, match="no op family 'conv3d'.*the families are"):
        family("conv3d")


def _stage_files():
    for entry in STAGES:
        path = SRC / entry
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


@pytest.mark.parametrize("path", list(_stage_files()), ids=lambda p: str(p.relative_to(SRC)))
def test_no_stage_names_a_family(path):
    """No string constant in a stage's code is a family's kind: the stage asks the family instead."""
    tree = ast.parse(path.read_text())
    named = sorted({n.value for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in kinds()})
    assert named == [], f"{path.relative_to(SRC)} names op families {named}"
