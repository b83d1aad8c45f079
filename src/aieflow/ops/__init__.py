"""Op families: one folder each, found here by looking, never by a list of names.

Every stage asks `family(kind)` for what it needs (ops/base.py lists the contract). A folder that lacks a
piece of the contract is refused when it is first asked for, naming the family and the piece, so a stage
never falls back silently.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from ..errors import DesignError
from .base import CONTRACT, missing_pieces


def kinds() -> tuple[str, ...]:
    """Every op family: the sub-folders of this package that are packages (sorted)."""
    here = Path(__file__).parent
    return tuple(sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.ispkg))


@lru_cache(maxsize=None)
def family(kind: str) -> ModuleType:
    """The op family `kind` (aieflow.ops.<kind>), its contract checked; a clear error for an unknown kind."""
    if kind not in kinds():
        raise DesignError(f"no op family '{kind}'", hint=f"the families are {', '.join(kinds())}")
    module = importlib.import_module(f"{__name__}.{kind}")
    missing = missing_pieces(module)
    if missing:
        raise DesignError(f"op family '{kind}' lacks {', '.join(missing)}",
                          hint=f"see aieflow/ops/base.py for the contract every family provides")
    return module


def part(kind: str, name: str) -> ModuleType:
    """A sub-module of a family's folder (emit, check, fast), imported on demand: the emitter's jinja
    templates and the checker's rules load only when a stage needs them."""
    family(kind)
    return importlib.import_module(f"{__name__}.{kind}.{name}")


__all__ = ["CONTRACT", "family", "kinds", "part"]
