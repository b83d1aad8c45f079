"""Op families. Each folder holds one family: configurations, packing, emulation and C++ templates."""

from __future__ import annotations

from . import add, dense, requant

FAMILIES = {"dense": dense, "add": add, "requant": requant}


def family(kind: str):
    return FAMILIES[kind]
