"""aieflow: quantized neural networks to AMD AI Engine (AIE-ML) firmware, with a bit-exact emulator.

    import aieflow
    design = aieflow.compile("model.onnx", device="ve2802")
    y = design.simulate(x)
    design.write("build/mlp")
    same = aieflow.load("build/mlp")
"""

from .compiler import compile
from .design import Design, load
from .errors import AieflowError

__all__ = ["compile", "load", "Design", "AieflowError"]
__version__ = "0.1.0"
