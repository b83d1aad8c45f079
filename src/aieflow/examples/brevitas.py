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


# --- convolutional networks ---------------------------------------------------------------------------------------
#
# Brevitas CNNs in the same power-of-two style: QuantConv1d / QuantConv2d (Int8WeightPerTensorFixedPoint with a
# bit-width override, Int32Bias), QuantReLU / QuantIdentity activations, torch's MaxPool1d / MaxPool2d on
# quantized tensors (Brevitas 0.13 has no QuantMaxPool), TruncAvgPool2d (Brevitas' QuantAvgPool2d), and
# BatchNorm1d / BatchNorm2d before a QuantIdentity. The BatchNorms carry statistics that fold exactly into
# integers: per-channel scales gamma / sqrt(var + eps) = sign x {1, 3/4, 5/4} x 2**e with var a power of four
# large enough that eps rounds away (in float32 and in double), offsets on a power-of-two grid. A trained
# BatchNorm's statistics are not of that form; `snap_batchnorm` rounds them to it (scales to powers of two,
# offsets to a grid), the form an integer pipeline folds exactly.


def _bn_modules(module):
    import torch

    return [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]


def set_batchnorm(bn, scale, offset, rng: np.random.Generator):
    """Give a BatchNorm eval-mode statistics whose per-channel y = scale * x + offset (exact float32 values)
    come out exactly in float32 arithmetic: var = 4**k (k in 5..7), gamma = scale * 2**k, mean on the grid
    of the offsets over the scales, beta = offset + mean * scale."""
    import torch

    scale = np.asarray(scale, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.float64)
    c = scale.shape[0]
    kv = rng.integers(5, 8, c)
    # mean: small integers on a grid that keeps mean * scale on a grid of 2**-8 of the offset's range
    step = np.exp2(np.floor(np.log2(np.maximum(np.abs(offset).max(initial=0), 2.0 ** -6))) - 8)
    _, s_exp = np.frexp(np.where(scale == 0, 1.0, scale))
    mean = rng.integers(-16, 17, c) * step * np.exp2(-(s_exp - 1)) * 4
    beta = offset + mean * scale
    for name, v in (("scale", scale), ("offset", offset), ("beta", beta), ("mean", mean)):
        if not np.all(np.asarray(v, dtype=np.float32) == v):
            raise ValueError(f"BatchNorm {name} is not exact in float32")
    with torch.no_grad():
        bn.running_var.copy_(torch.from_numpy(np.exp2(2.0 * kv).astype(np.float32)))
        bn.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        bn.weight.copy_(torch.from_numpy((scale * np.exp2(kv)).astype(np.float32)))
        bn.bias.copy_(torch.from_numpy(beta.astype(np.float32)))
    return bn


def snap_batchnorm(module, offset_bits: int = 8, spread: int = 3, rng: np.random.Generator | None = None):
    """Round every BatchNorm's eval-mode affine y = a * x + b to an exactly foldable one: a to a power of two
    (of either sign; within 2**spread of the channel with the largest |a|, so that the folded weights stay
    narrow), b to the grid 2**-offset_bits. Returns the module."""
    rng = rng if rng is not None else np.random.default_rng(0)
    for bn in _bn_modules(module):
        var = bn.running_var.detach().double().numpy()
        a = bn.weight.detach().double().numpy() / np.sqrt(var + bn.eps)
        b = bn.bias.detach().double().numpy() - bn.running_mean.detach().double().numpy() * a
        e = np.round(np.log2(np.maximum(np.abs(a), 1e-30)))
        e = np.clip(e, e.max() - spread, e.max())
        scale = np.where(a < 0, -1.0, 1.0) * np.exp2(e)
        offset = np.round(b * 2.0 ** offset_bits) / 2.0 ** offset_bits
        set_batchnorm(bn, scale, offset, rng)
    return module


def _conv_layer(dims: int):
    from brevitas import nn as qnn

    return qnn.QuantConv1d if dims == 1 else qnn.QuantConv2d


def brevitas_cnn(in_channels: int = 1, image: tuple = (16, 16), classes: int = 4, channels=(4, 8),
                 act_bits: int = 8, weight_bits: int = 8, batchnorm: bool = True):
    """A small Brevitas CNN for 2-D images [N, in_channels, H, W]: QuantIdentity; QuantConv2d 3x3 (pad 1) ->
    BatchNorm2d -> QuantIdentity -> QuantReLU -> MaxPool2d(2); QuantConv2d 3x3 (pad 1) -> QuantReLU ->
    TruncAvgPool2d(2); Flatten -> QuantLinear with an output quantizer (class scores)."""
    _need_brevitas()
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias, RoundTo8bit,
                                Uint8ActPerTensorFixedPoint)

    c1, c2 = channels
    conv = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=weight_bits, bias=True,
                bias_quant=Int32Bias, return_quant_tensor=True)
    layers = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=act_bits, return_quant_tensor=True),
              qnn.QuantConv2d(in_channels, c1, 3, padding=1, **conv)]
    if batchnorm:
        layers += [torch.nn.BatchNorm2d(c1),
                   qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=act_bits,
                                     return_quant_tensor=True)]
    layers += [qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits, return_quant_tensor=True),
               torch.nn.MaxPool2d(2),
               qnn.QuantConv2d(c1, c2, 3, padding=1, **conv),
               qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=act_bits, return_quant_tensor=True),
               qnn.TruncAvgPool2d(2, trunc_quant=RoundTo8bit, bit_width=act_bits, return_quant_tensor=True),
               torch.nn.Flatten(),
               qnn.QuantLinear(c2 * (image[0] // 4) * (image[1] // 4), classes, bias=True,
                               weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=weight_bits,
                               bias_quant=Int32Bias, output_quant=Int8ActPerTensorFixedPoint,
                               output_bit_width=act_bits)]
    return torch.nn.Sequential(*layers)


def synthetic_images(samples: int, seed: int, size: tuple = (16, 16), classes: int = 4):
    """(x [samples, 1, H, W], labels [samples]) float32 / int64 torch tensors: stripes of four orientations
    (horizontal, vertical and the two diagonals) at random frequencies and phases, with noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    labels = torch.randint(0, classes, (samples,), generator=g)
    freq = 0.5 + torch.rand(samples, generator=g) * 1.0
    phase = torch.rand(samples, generator=g) * 6.2832
    dirs = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.7071, 0.7071], [0.7071, -0.7071]])[labels % 4]
    t = dirs[:, 0, None, None] * xx + dirs[:, 1, None, None] * yy
    x = torch.sin(freq[:, None, None] * t + phase[:, None, None])
    x = x + 0.3 * torch.randn(samples, h, w, generator=g)
    return x[:, None].contiguous(), labels


def train_cnn(module, steps: int = 60, seed: int = 0, lr: float = 1e-2, snap: bool = True, batch: int = 32):
    """Train `module` (brevitas_cnn) for `steps` Adam steps on synthetic 16x16 stripe images (a few seconds, no
    downloads), then (snap=True) round its BatchNorms to the exactly foldable form (snap_batchnorm) and
    fine-tune the other layers for a few steps with the BatchNorms frozen. Returns it in eval mode with its
    accuracy on held-out images as `module.accuracy`."""
    _need_brevitas()
    import torch

    torch.manual_seed(seed)
    x, y = synthetic_images(1024, seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)

    def fit(n):
        for _ in range(n):
            idx = torch.randint(0, x.shape[0], (batch,))
            out = module(x[idx])
            out = out.value if hasattr(out, "value") else out
            loss = torch.nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()

    module.train()
    fit(steps)
    if snap:
        module.eval()
        snap_batchnorm(module)
        module.train()
        for bn in _bn_modules(module):
            bn.eval()
            for p in bn.parameters():
                p.requires_grad_(False)
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr / 4)
        fit(max(1, steps // 5))
    module.eval()
    xt, yt = synthetic_images(256, seed + 1)
    with torch.no_grad():
        out = module(xt)
        out = out.value if hasattr(out, "value") else out
    module.accuracy = float((out.argmax(dim=1) == yt).float().mean())
    return module


def calibrate_cnn(module, shape: tuple, rng: np.random.Generator, passes: int = 8):
    """calibrate() for image inputs [*, *shape], the BatchNorms kept in eval mode (their statistics fixed)."""
    import torch

    spread = float(2.0 ** rng.uniform(-2, 2))
    module.train()
    for bn in _bn_modules(module):
        bn.eval()
    with torch.no_grad():
        for _ in range(passes):
            module(torch.from_numpy((rng.standard_normal((16, *shape)) * spread).astype(np.float32)))
    module.eval()
    return module


def random_brevitas_cnn(rng: np.random.Generator):
    """(module in eval mode, description) of a random power-of-two Brevitas CNN: 1-D ([N, C, L]) or 2-D
    ([N, C, H, W]); 1 to 3 blocks of QuantConv1d / QuantConv2d (kernels 1 to 3, strides 1 and 2, padding,
    depthwise or not, with or without bias) followed by QuantReLU, by QuantIdentity (-> QuantReLU), by
    BatchNorm -> QuantIdentity (-> QuantReLU), or by the conv's own output quantizer, each block optionally
    pooled (MaxPool1d / MaxPool2d, or TruncAvgPool2d with round or floor); Flatten -> QuantLinear with an output
    quantizer. Activations of 2 to 8 bits, weights of 2 to 8. Every float32 sum in the forward pass stays below
    2**23 units of its grid, so the module computes the exact integer semantics the emulator must equal."""
    _need_brevitas()
    import torch
    from brevitas import nn as qnn
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias, RoundTo8bit,
                                TruncTo8bit, Uint8ActPerTensorFixedPoint)

    dims = int(rng.integers(1, 3))
    c = int(rng.integers(1, 5))
    size = [int(rng.integers(6, 13)), int(rng.integers(6, 13))] if dims == 2 else [int(rng.integers(8, 25))]
    in_shape = (c, *size)
    bits = int(rng.integers(2, 9))
    layers = [qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=bits, return_quant_tensor=True)]
    desc = {"dims": dims, "input": list(in_shape), "bits": [bits], "blocks": []}
    mag = 1 << (bits - 1)  # the largest |integer| of the current activation
    bns = []
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(1, 4))
        if k > min(size):
            k = 1
        stride = int(rng.choice([1, 1, 2]))
        pad = int(rng.integers(0, k))
        depthwise = c > 1 and rng.random() < 0.25
        co = c if depthwise else int(rng.integers(1, 9))
        after = str(rng.choice(["relu", "identity", "bn", "bn", "output"]))
        fan = k ** dims * (1 if depthwise else c)
        # weight bits: the float32 sums (and a BatchNorm's scaling of them) stay exact
        limit = (1 << 13) if after == "bn" else (1 << 21)
        wb = int(rng.integers(2, 9))
        while wb > 2 and fan * mag * (1 << (wb - 1)) > limit:
            wb -= 1
        out_bits = int(rng.integers(2, 9))
        conv = _conv_layer(dims)(c, co, k, stride=stride, padding=pad, groups=c if depthwise else 1,
                                 bias=bool(rng.integers(2)), weight_quant=Int8WeightPerTensorFixedPoint,
                                 weight_bit_width=wb, bias_quant=Int32Bias, return_quant_tensor=True,
                                 **({"output_quant": Int8ActPerTensorFixedPoint, "output_bit_width": out_bits}
                                    if after == "output" else {}))
        layers.append(conv)
        relu = after == "relu" or rng.random() < 0.5
        if after == "bn":
            bn = (torch.nn.BatchNorm1d if dims == 1 else torch.nn.BatchNorm2d)(co)
            layers.append(bn)
            bns.append(bn)
        if after in ("bn", "identity"):
            layers.append(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=out_bits,
                                            return_quant_tensor=True))
        if after == "relu" or (after != "output" and relu):
            layers.append(qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=out_bits,
                                        return_quant_tensor=True))
            mag = (1 << out_bits) - 1
        else:
            mag = 1 << (out_bits - 1)
        size = [(s + 2 * pad - k) // stride + 1 for s in size]
        c = co
        block = {"kernel": k, "stride": stride, "pad": pad, "depthwise": depthwise, "channels": co, "after": after,
                 "weight_bits": wb, "bits": out_bits, "relu": after == "relu" or (after != "output" and relu)}
        r = rng.random()
        if r < 0.3 and min(size) >= 2:
            pk = 2
            ps = int(rng.choice([1, 2]))
            layers.append((torch.nn.MaxPool1d if dims == 1 else torch.nn.MaxPool2d)(pk, stride=ps))
            size = [(s - pk) // ps + 1 for s in size]
            block["pool"] = f"max{pk}/{ps}"
        elif r < 0.55 and dims == 2 and min(size) >= 2:
            pool_bits = int(np.clip(out_bits + int(rng.integers(-1, 3)), 2, 8))
            trunc = RoundTo8bit if rng.random() < 0.6 else TruncTo8bit
            layers.append(qnn.TruncAvgPool2d(2, stride=2, trunc_quant=trunc, bit_width=pool_bits,
                                             return_quant_tensor=True))
            size = [(s - 2) // 2 + 1 for s in size]
            mag = max(mag, 1 << pool_bits)
            block["pool"] = f"truncavg2 ({'round' if trunc is RoundTo8bit else 'floor'}, {pool_bits} bits)"
        desc["blocks"].append(block)
        desc["bits"].append(out_bits)
    features = c * int(np.prod(size))
    wb = int(rng.integers(2, 9))
    while wb > 2 and features * mag * (1 << (wb - 1)) > (1 << 22):
        wb -= 1
    n = int(rng.integers(1, 17))
    out_bits = int(rng.integers(2, 9))
    layers += [torch.nn.Flatten(),
               qnn.QuantLinear(features, n, bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=wb,
                               bias_quant=Int32Bias, output_quant=Int8ActPerTensorFixedPoint,
                               output_bit_width=out_bits)]
    desc["head"] = {"features": features, "outputs": n, "weight_bits": wb, "bits": out_bits}
    desc["bits"].append(out_bits)
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = torch.nn.Sequential(*layers)
    scales = {}
    for bn in bns:
        co = bn.num_features
        mant = float(rng.choice([1.0, 1.0, 0.75, 1.25]))
        e = int(rng.integers(-2, 2)) + rng.integers(-1, 2, co)
        sign = np.where(rng.random(co) < 0.15, -1.0, 1.0)
        scales[bn] = sign * mant * np.exp2(e)
        set_batchnorm(bn, scales[bn], np.zeros(co), rng)
    calibrate_cnn(module, in_shape, rng)
    if bns:
        # Offsets on a grid of the conv's own accumulator (known once the quantizers are calibrated): 2**j
        # times the grid of a * sums, at most 2**12 of it, so that float32's a * v + b is exact.
        acc = _conv_acc_scales(module, in_shape)
        for conv, bn in zip([m for m in layers if isinstance(m, (qnn.QuantConv1d, qnn.QuantConv2d))
                             and layers[layers.index(m) + 1] in bns], bns):
            a = scales[bn]
            nz = np.abs(a[a != 0]) if np.any(a != 0) else np.ones(1)
            grid = acc[conv] * float(nz.min()) / 4 * 2.0 ** int(rng.integers(0, 7))
            offset = rng.integers(-(1 << 12), (1 << 12) + 1, bn.num_features) * grid
            set_batchnorm(bn, a, offset, rng)
        calibrate_cnn(module, in_shape, rng, passes=4)
    return module, desc


def _conv_acc_scales(module, shape: tuple) -> dict:
    """Each quantized conv's accumulator scale (input scale x weight scale) after calibration."""
    import torch
    from brevitas import nn as qnn

    found, hooks = {}, []
    for m in module.modules():
        if isinstance(m, (qnn.QuantConv1d, qnn.QuantConv2d)):
            def hook(mod, inp, out):
                found[mod] = float(inp[0].scale) * float(mod.quant_weight().scale)
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(torch.zeros(1, *shape))
    finally:
        for h in hooks:
            h.remove()
    return found


def brevitas_cnn_inputs(imported, n: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, *source shape] inputs for an imported Brevitas CNN: on the input grid, ties on both signs,
    beyond the range (as brevitas_inputs draws them for an MLP)."""
    g = imported.graph
    t = g.tensors[g.inputs[0]]
    return brevitas_inputs(imported, n, rng).reshape(n, *t.source_shape)
