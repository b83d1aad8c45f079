"""C++ for conv layers: the kernels (AIE API) and their part of the ADF graph."""

from __future__ import annotations

from ...errors import DesignError

RESERVED_NAMES = frozenset({"aieflow_conv"})
# The host run (aieflow.host.run): the layer struct's type of each kernel input port.
HOST_INPUTS = ("in_t",)


def host_output_elements(cfg, chain: int) -> int:
    """Elements of chain `chain`'s output buffer: B x rows x WO x its real channels."""
    return cfg.batch * cfg.rows * cfg.out_shape[1] * cfg.n_out(chain % cfg.chains)


def sources(design, layers) -> dict[str, str]:
    raise DesignError("the conv kernels' C++ is not written yet", hint="simulate the design instead of writing it")


def graph_fragment(design, layer, ns: str):
    raise DesignError("the conv kernels' C++ is not written yet", hint="simulate the design instead of writing it")
