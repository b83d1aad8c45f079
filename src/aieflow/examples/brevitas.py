"""Brevitas models for examples and tests: a small quantized MLP, a few seconds of training on synthetic data,
and a generator of random quantized MLPs.

Power-of-two scales come from Brevitas' fixed-point quantizers (Int8ActPerTensorFixedPoint,
Uint8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint with a bit_width override); the bias is quantized on
the accumulator grid (Int32Bias: scale = input scale x weight scale), and the model ends in an output quantizer,
so every tensor the hardware sees is an integer on a known grid. The learned-float-scale variant
(Int8ActPerTensorFloat, Int8WeightPerTensorFloat) exercises the multiplier path, where exactness is measured.

torch and brevitas are imported inside the functions: this module imports without them.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError


def _need_brevitas():
    try:
        import brevitas  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise ModelError("Brevitas models need torch and brevitas", hint="pip install aieflow[torch]") from None


def brevitas_mlp(widths=(16, 32, 32, 4), act_bits: int = 8, weight_bits: int = 8, float_scales: bool = False,
                 hidden_bits=None, input_bits=None, output_bits=None):
    """QuantIdentity input quantizer, then QuantLinear (+ QuantReLU) per layer, the last with an output
    quantizer. `float_scales` swaps the fixed-point quantizers for learned float scales."""
    _need_brevitas()
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerTensorFixedPoint,
                                Int8WeightPerTensorFloat, Int32Bias, Uint8ActPerTensorFixedPoint,
                                Uint8ActPerTensorFloat)

    act = Int8ActPerTensorFloat if float_scales else Int8ActPerTensorFixedPoint
    uact = Uint8ActPerTensorFloat if float_scales else Uint8ActPerTensorFixedPoint
    wq = Int8WeightPerTensorFloat if float_scales else Int8WeightPerTensorFixedPoint
    depth = len(widths) - 1
    hidden_bits = list(hidden_bits) if hidden_bits is not None else [act_bits] * max(0, depth - 1)
    wbits = list(weight_bits) if isinstance(weight_bits, (list, tuple)) else [weight_bits] * depth
    layers = [qnn.QuantIdentity(act_quant=act, bit_width=input_bits or act_bits, return_quant_tensor=True)]
    for i in range(depth):
        last = i == depth - 1
        kw = {}
        if last:
            kw = {"output_quant": act, "output_bit_width": output_bits or act_bits}
        layers.append(qnn.QuantLinear(widths[i], widths[i + 1], bias=True, weight_quant=wq,
                                      weight_bit_width=wbits[i], bias_quant=Int32Bias,
                                      return_quant_tensor=not last, **kw))
        if not last:
            bits = hidden_bits[i]
            # Unsigned activations above 8 bits do not fit the hardware's uint8: a signed ReLU output then.
            layers.append(qnn.QuantReLU(act_quant=uact if bits <= 8 else act, bit_width=bits,
                                        return_quant_tensor=True))
    return torch.nn.Sequential(*layers)


def synthetic_data(features: int, outputs: int, samples: int, seed: int):
    """(x, y) float32 torch tensors: a fixed random teacher network's outputs on Gaussian inputs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=g)
    w1 = torch.randn(features, 16, generator=g) / features ** 0.5
    w2 = torch.randn(16, outputs, generator=g) / 4
    y = torch.tanh(torch.relu(x @ w1) @ w2)
    return x, y


def train(module, steps: int = 200, seed: int = 0, lr: float = 1e-2):
    """Train `module` for `steps` Adam steps on synthetic regression data (a few seconds, no downloads);
    returns it in eval mode."""
    _need_brevitas()
    import torch

    torch.manual_seed(seed)
    features = _in_features(module)
    with torch.no_grad():
        outputs = _out_features(module)
    x, y = synthetic_data(features, outputs, 512, seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (64,))
        out = module(x[idx])
        out = out.value if hasattr(out, "value") else out
        loss = torch.nn.functional.mse_loss(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    return module


def calibrate(module, features: int, rng: np.random.Generator, passes: int = 8):
    """Let the activation quantizers collect their runtime statistics on random inputs of a random spread
    (so their power-of-two scales vary from model to model); returns the module in eval mode."""
    import torch

    spread = float(2.0 ** rng.uniform(-3, 3))
    module.train()
    with torch.no_grad():
        for _ in range(passes):
            x = torch.from_numpy((rng.standard_normal((32, features)) * spread).astype(np.float32))
            module(x)
    module.eval()
    return module


def _in_features(module) -> int:
    return next(m.in_features for m in module.modules() if hasattr(m, "in_features"))


def _out_features(module) -> int:
    return [m.out_features for m in module.modules() if hasattr(m, "out_features")][-1]


def random_brevitas_mlp(rng: np.random.Generator, float_scales: bool = False):
    """(module in eval mode, description) of a random Brevitas MLP: depth 1 to 4, widths 1 to 64, weights and
    activations of 2 to 8 bits, some 16-bit activations; power-of-two scales unless float_scales.

    16-bit activations go with narrow weights and layers (16 + weight bits + log2 width <= 22), so Brevitas'
    float32 forward pass stays exact (every partial sum below 2**24 steps of the accumulator)."""
    _need_brevitas()
    import torch

    depth = int(rng.integers(1, 5))
    widths = [int(rng.integers(1, 65)) for _ in range(depth + 1)]
    act_bits = [int(rng.choice([2, 3, 4, 5, 6, 7, 8, 8, 16])) for _ in range(depth + 1)]  # input, hidden..., output
    wbits = []
    for i in range(depth):
        b = int(rng.integers(2, 9))
        if act_bits[i] > 8:
            widths[i] = min(widths[i], 16)
            b = min(b, 4)
        wbits.append(b)
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = brevitas_mlp(widths, weight_bits=wbits, float_scales=float_scales, input_bits=act_bits[0],
                          hidden_bits=act_bits[1:-1], output_bits=act_bits[-1])
    calibrate(module, widths[0], rng)
    return module, {"widths": widths, "act_bits": act_bits, "weight_bits": wbits, "float_scales": float_scales}


def brevitas_inputs(imported, n: int, rng: np.random.Generator) -> np.ndarray:
    """float32 inputs for an imported Brevitas model: on the input grid, ties on both signs, beyond the range."""
    g = imported.graph
    t = g.tensors[g.inputs[0]]
    lo, hi = t.type.qmin - t.zero_point, t.type.qmax - t.zero_point
    size = n * t.features
    special = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, lo - 3.0, hi + 3.0, lo - 0.5, hi + 0.5, lo, hi, 0.0])
    kinds = rng.integers(0, 4, size)
    base = rng.integers(lo - 2, hi + 3, size).astype(np.float64)
    v = np.where(kinds == 0, base, np.where(kinds == 1, base + 0.5, base + rng.uniform(-1, 1, size)))
    m = min(len(special), size)
    v[:m] = special[:m]
    rng.shuffle(v)
    return (v * t.real_scale).astype(np.float32).reshape(n, t.features)
