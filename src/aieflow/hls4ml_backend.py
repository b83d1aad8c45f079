"""The hls4ml backend plugin 'AIEFlow': hls4ml converts, aieflow compiles.

hls4ml discovers it through the entry point group `hls4ml.backends` (pyproject.toml) and calls `register`.
The backend is the Vivado backend's model flow (its layer attributes, precision inference and optimizers,
which decide every type aieflow honours) with three ends replaced:

    model.write()     writes the aieflow project (aieflow.compile(import_hls4ml(model)).write(output_dir))
    model.compile()   builds the aieflow design (write, then nothing to link)
    model.predict(x)  runs the design on aieflow's emulator

    hls_model = hls4ml.converters.convert_from_keras_model(model, hls_config=cfg, backend='AIEFlow',
                                                          output_dir='prj', device='ve2802')

Only what is backend-independent is reused; nothing here writes HLS C++. `device` (default ve2802) and
`batch` are the backend's own options, given to the converter like `part` is for Vivado.
"""

from __future__ import annotations

import ctypes.util

import numpy as np

NAME = "AIEFlow"
DEFAULT_DEVICE = "ve2802"


def register(register_backend=None, register_writer=None) -> None:
    """The entry point hls4ml's plugin loader calls: the writer first (the backend's constructor reads it)."""
    from hls4ml.backends.backend import backend_map
    from hls4ml.writer.writers import writer_map

    if register_writer is None:
        from hls4ml.writer.writers import register_writer
    if register_backend is None:
        from hls4ml.backends.backend import register_backend
    if NAME not in writer_map:
        register_writer(NAME, _writer_class())
    if NAME.lower() not in backend_map:
        register_backend(NAME, _backend_class())


def _writer_class():
    from hls4ml.writer.writers import Writer

    class AIEFlowWriter(Writer):
        def write_hls(self, model):
            design = build_design(model)
            design.write(model.config.get_output_dir())

    return AIEFlowWriter


def _backend_class():
    from hls4ml.backends.vivado.vivado_backend import VivadoBackend
    from hls4ml.model.flow import register_flow

    class AIEFlowBackend(VivadoBackend):
        def __init__(self):
            super(VivadoBackend, self).__init__(name=NAME)  # FPGABackend: layer classes, this name's writer
            self._register_layer_attributes()
            self._register_flows()

        def _register_flows(self):
            # The Vivado model flow as it is (types, precision inference, optimizers); only the writer differs.
            self._default_flow = register_flow("ip", None, requires=["vivado:ip"], backend=self.name)
            self._writer_flow = register_flow("write", ["aieflow:write_hls"], requires=[self._default_flow],
                                              backend=self.name)

        def create_initial_config(self, device=DEFAULT_DEVICE, batch=None, io_type="io_parallel", **kwargs):
            config = super().create_initial_config(io_type=io_type, **kwargs)
            config["AIEFlow"] = {"Device": device or DEFAULT_DEVICE, "Batch": batch}
            return config

        def compile(self, model):
            """ModelGraph.compile() has written the project (and built the design): nothing to link. hls4ml
            loads the returned library with ctypes, so this returns the C library already loaded."""
            if getattr(model, "_aieflow_design", None) is None:
                build_design(model)
            return ctypes.util.find_library("c") or "libc.so.6"

        def predict(self, model, x, *args, **kwargs):
            """The design run on aieflow's emulator: dequantized outputs, shaped as hls4ml's predict shapes them."""
            design = getattr(model, "_aieflow_design", None) or build_design(model)
            a = np.asarray(x)
            tin = design.graph.tensors[design.graph.inputs[0]]
            single = a.size == tin.features and a.ndim in (1, len(tin.shape))  # one sample, flat or shaped
            rows = a.reshape(1 if single else a.shape[0], *tin.source_shape)  # hls4ml takes flat rows too
            y = design.simulate(rows.astype(np.float64)).reshape(len(rows), -1)  # hls4ml returns flat rows
            y = y.astype(a.dtype if a.dtype in (np.float32, np.float64) else np.float64)
            return y[0] if single else y

        def build(self, model, **kwargs):
            from .errors import ModelError

            raise ModelError("the AIEFlow backend has no HLS build",
                             hint=f"build the AI Engine project in {model.config.get_output_dir()} with its Makefile")

    return AIEFlowBackend


def build_design(model):
    """aieflow.compile of the ModelGraph on the configured device; kept on the model for predict()."""
    from .compiler import compile as aieflow_compile
    from .frontends.hls4ml import import_hls4ml

    opts = model.config.get_config_value("AIEFlow") or {}
    design = aieflow_compile(import_hls4ml(model), device=opts.get("Device", DEFAULT_DEVICE),
                             batch=opts.get("Batch"), measure=False)
    model._aieflow_design = design
    return design
