"""Host headers: the subset of ADF and the AIE API that aieflow's emitted kernels use, for a normal C++20 compiler.

They are a scalar model, written for aieflow (no AMD code): `adf.h` declares just enough of ADF (UG1603) for a
generated graph to parse and for kernels to run on the host; `aie_api/aie.hpp` models the AIE API operations
(UG1529) with the arithmetic of `aieflow.numerics`; `aie_api/aie_adf.hpp` models the cascade stream access.
Compile with ``-std=c++20 -I <include_dir()>``. Define ``AIEFLOW_HOST_COUNT_LOADS`` to count vector loads
(`aie::load_count()`), an instrumentation the tests use; the AIE API has no such function.
"""

from __future__ import annotations

import pathlib
from importlib import resources

__all__ = ["include_dir"]


def include_dir() -> pathlib.Path:
    """The folder to pass to the compiler with -I: it holds adf.h and aie_api/."""
    path = resources.files(__name__) / "include"
    return pathlib.Path(str(path))
