"""Random QONNX models (Quant-based MLPs built with onnx.helper) and inputs that hit their rounding corners.

`random_qonnx_mlp(rng)` draws a model: depth 1 to 4, widths 1 to 64, activations of 2 to 16 bits (signed,
unsigned up to 8 bits, narrow range, zero points where they map, every QONNX rounding mode), weights of 2 to 16
bits given as floats that the weight Quant rounds, biases through a Quant on the accumulator grid or as exact
floats, Gemm (either transB) or MatMul + Add, optional Relu, optional Trunc and requantizing Quant layers.
Every scale is a power of two and every model is kept inside the bound where qonnx's float32 execution is
exact (each accumulator, and each value a Quant rounds, below 2**23 in units of its last bit), so qonnx's
result is the model's exact integer semantics and the emulator must equal it bit for bit.

`qonnx_inputs(spec, n, rng)` gives float inputs on the input Quant's grid, halfway between two steps (ties on
both signs), beyond both ends (saturation), and random values (on a 2**-6 grid of steps, which keeps qonnx's
float32 x / scale + zeropt exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DOMAIN = "qonnx.custom_op.general"
MODES = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")
BOUND = 1 << 23  # float32 holds every integer below 2**24; one bit of margin for the rounding functions


@dataclass
class QSpec:
    bits: int
    signed: bool
    narrow: bool
    frac: int
    zp: int = 0
    mode: str = "ROUND"

    @property
    def qmin(self) -> int:
        return (-(1 << (self.bits - 1)) + int(self.narrow)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1 - int(self.narrow)

    @property
    def magnitude(self) -> int:
        """Largest |q - zp|."""
        return max(abs(self.qmin - self.zp), abs(self.qmax - self.zp))


@dataclass
class ModelSpec:
    features: int
    input: QSpec
    layers: list = field(default_factory=list)  # dicts describing each layer


def _rand_mode(rng) -> str:
    return str(MODES[int(rng.integers(len(MODES)))])


def _act_spec(rng, bits: int | None = None, signed: bool | None = None) -> QSpec:
    if bits is None:
        bits = int(rng.choice([2, 3, 4, 5, 6, 7, 8, 8, 8, 9, 10, 11, 12, 13, 14, 15, 16, 16]))
    if signed is None:
        signed = bits > 8 or bool(rng.integers(2))
    narrow = bool(signed and rng.integers(4) == 0)
    spec = QSpec(bits, signed, narrow, 0, 0, _rand_mode(rng))
    if rng.integers(4) == 0:  # a zero point, where it maps to an exact IR rounding
        zp = int(rng.integers(spec.qmin, spec.qmax + 1))
        symmetric = spec.mode in ("UP", "DOWN", "HALF_UP", "HALF_DOWN")
        if not (symmetric and signed):
            spec.zp = zp
    return spec


def _zp_fits(acc_bound: int, shift: int, zp: int) -> bool:
    """Whether qonnx's float32 x / scale + zeropt is exact for every accumulator up to acc_bound."""
    if shift <= 0:
        return (acc_bound << -shift) + abs(zp) < BOUND
    return acc_bound + (abs(zp) << shift) < BOUND


def random_spec(rng: np.random.Generator) -> ModelSpec:
    depth = int(rng.integers(1, 5))
    features = int(rng.integers(1, 65))
    x = _act_spec(rng)
    x.frac = int(rng.integers(-2, x.bits + 2))
    spec = ModelSpec(features, x)
    k, cur = features, x
    for i in range(depth):
        kind = "dense" if i == 0 or rng.integers(6) else str(rng.choice(["trunc", "requant"]))
        if kind == "trunc" and (cur.zp != 0):
            kind = "dense"
        if kind == "trunc":
            drop = int(rng.integers(0, min(cur.bits - 1, 6) + 1))
            out = QSpec(cur.bits - drop if drop < cur.bits else 2, cur.signed, bool(cur.signed and rng.integers(3) == 0),
                        cur.frac - drop, 0, _rand_mode(rng))
            out.bits = max(out.bits, 2)
            if out.narrow and not out.signed:
                out.narrow = False
            spec.layers.append({"kind": "trunc", "out": out, "shift": drop})
            cur = out
            continue
        n = k if kind == "requant" else int(rng.integers(1, 65))
        out = _act_spec(rng)
        relu = bool(rng.integers(2))
        if kind == "requant":
            shift = int(rng.integers(-2, 4))
            out.frac = cur.frac - shift
            if not _zp_fits(cur.magnitude, shift, out.zp):
                out.zp = 0
            spec.layers.append({"kind": "requant", "out": out, "relu": relu, "shift": shift})
            cur = out
            continue
        w_bits = int(rng.choice([2, 3, 4, 5, 6, 7, 8, 8, 8, 10, 12, 14, 16]))
        w = QSpec(w_bits, True, bool(rng.integers(2)), int(rng.integers(0, w_bits + 2)), 0, _rand_mode(rng))
        xmag = cur.magnitude
        wlim = min(w.qmax, max(1, (BOUND // 4) // max(1, k * xmag)) - 1)
        wlim = max(1, wlim)
        bias_lim = max(1, min(BOUND // 8, k * xmag * wlim // 4))
        acc_bound = k * xmag * (wlim + 1) + bias_lim
        typical = max(1.0, np.sqrt(k) * max(1, xmag) * max(1, wlim) / 4)
        target = max(1, out.magnitude)
        shift = int(np.round(np.log2(typical / target))) + int(rng.integers(-1, 2))
        if not _zp_fits(acc_bound, shift, out.zp):
            out.zp = 0
        if shift < 0 and (acc_bound << -shift) >= BOUND:
            shift = 0
        out.frac = cur.frac + w.frac - shift
        spec.layers.append({"kind": "dense", "n": n, "w": w, "wlim": wlim, "bias_lim": bias_lim, "relu": relu,
                            "bias": str(rng.choice(["quant", "float", "none"])), "gemm": bool(rng.integers(2)),
                            "trans_b": bool(rng.integers(2)), "out": out, "shift": shift,
                            "seed": int(rng.integers(1 << 30))})
        k, cur = n, out
    return spec


def build_qonnx(spec: ModelSpec, batch: int = 1, name: str = "qonnx_mlp"):
    """The onnx.ModelProto of a ModelSpec (qonnx domain, opset 2 for Trunc's second version)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    count = [0]

    def const(value, tag: str) -> str:
        count[0] += 1
        nm = f"{tag}_{count[0]}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), nm))
        return nm

    def quant(x: str, q: QSpec, out: str) -> str:
        nodes.append(helper.make_node(
            "Quant", [x, const(2.0 ** -q.frac, "scale"), const(float(q.zp), "zeropt"), const(float(q.bits), "bitwidth")],
            [out], domain=DOMAIN, signed=int(q.signed), narrow=int(q.narrow), rounding_mode=q.mode, name=out))
        return out

    cur = quant("x", spec.input, "q_in")
    cur_spec = spec.input
    k = spec.features
    for i, layer in enumerate(spec.layers):
        out = layer["out"]
        if layer["kind"] == "trunc":
            s_in = 2.0 ** -cur_spec.frac
            nodes.append(helper.make_node(
                "Trunc", [cur, const(s_in, "scale"), const(0.0, "zeropt"), const(float(cur_spec.bits), "in_bits"),
                          const(2.0 ** -out.frac, "out_scale"), const(float(out.bits), "out_bits")],
                [f"trunc{i}"], domain=DOMAIN, rounding_mode=out.mode, signed=int(out.signed), narrow=int(out.narrow),
                name=f"trunc{i}"))
            cur, cur_spec = f"trunc{i}", out
            continue
        if layer["kind"] == "requant":
            src = cur
            if layer["relu"]:
                nodes.append(helper.make_node("Relu", [cur], [f"relu{i}"], name=f"relu{i}"))
                src = f"relu{i}"
            cur, cur_spec = quant(src, out, f"act{i}"), out
            continue
        lrng = np.random.default_rng(layer["seed"])
        w = layer["w"]
        n = layer["n"]
        wq = lrng.integers(-layer["wlim"], layer["wlim"] + 1, size=(k, n))
        # Off-grid floats the weight Quant rounds: some ties, some arbitrary offsets.
        off = lrng.choice([0.0, 0.0, 0.5, -0.5, 0.25, -0.3], size=wq.shape)
        wf = ((wq + off) * 2.0 ** -w.frac).astype(np.float32)
        wname = const(wf.T if layer["trans_b"] and layer["gemm"] else wf, "w")
        wout = quant(wname, w, f"wq{i}")
        acc_frac = cur_spec.frac + w.frac
        bq = lrng.integers(-layer["bias_lim"], layer["bias_lim"] + 1, size=n)
        bias = None
        if layer["bias"] == "quant":
            bias = quant(const(bq * 2.0 ** -acc_frac, "b"), QSpec(32, True, False, acc_frac), f"bq{i}")
        elif layer["bias"] == "float":
            bias = const(bq * 2.0 ** -acc_frac, "b")
        if layer["gemm"]:
            ins = [cur, wout] + ([bias] if bias else [])
            nodes.append(helper.make_node("Gemm", ins, [f"mm{i}"], transB=int(layer["trans_b"]), name=f"gemm{i}"))
            y = f"mm{i}"
        else:
            nodes.append(helper.make_node("MatMul", [cur, wout], [f"mm{i}"], name=f"matmul{i}"))
            y = f"mm{i}"
            if bias:
                nodes.append(helper.make_node("Add", [y, bias], [f"add{i}"], name=f"bias{i}"))
                y = f"add{i}"
        if layer["relu"]:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}"], name=f"relu{i}"))
            y = f"relu{i}"
        cur, cur_spec, k = quant(y, out, f"act{i}"), out, n
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, spec.features])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [batch, k])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 2)])
    model.ir_version = 8
    return model


def random_qonnx_mlp(rng: np.random.Generator):
    """(ModelProto, ModelSpec) of a random power-of-two QONNX MLP."""
    spec = random_spec(rng)
    return build_qonnx(spec), spec


def qonnx_inputs(spec: ModelSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, features]: grid values, ties (both signs), values beyond both ends, random ones."""
    q = spec.input
    lo, hi = q.qmin - q.zp, q.qmax - q.zp  # the real range in steps
    size = n * spec.features
    special = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, lo - 3.0, hi + 3.0, lo - 0.5, hi + 0.5, lo, hi, 0.0,
                        lo + 0.5, hi - 0.5, 0.25, -0.75])
    kinds = rng.integers(0, 4, size)
    base = rng.integers(lo - 2, hi + 3, size).astype(np.float64)
    v = np.where(kinds == 0, base, np.where(kinds == 1, base + 0.5, base + rng.uniform(-1, 1, size)))
    v[kinds == 3] = rng.uniform(lo - 4, hi + 4, int(np.sum(kinds == 3)))
    # On a 2**-6 grid of steps: still near-ties on both sides, and x / scale + zeropt stays exact in qonnx's
    # float32 arithmetic (below 2**17 steps), so a zero point does not make the reference round differently.
    v = np.round(v * 64) / 64
    m = min(len(special), size)
    v[:m] = special[:m]
    rng.shuffle(v)
    return (v * 2.0 ** -q.frac).astype(np.float32).reshape(n, spec.features)


def run_graph(graph, q: np.ndarray, stats: dict | None = None) -> dict[str, np.ndarray]:
    """The IR's integer semantics op by op (each family's evaluate), counting ties and saturations in `stats`."""
    from ..exactness import evaluate

    return evaluate(graph, q, stats)


__all__ = ["QSpec", "ModelSpec", "random_spec", "build_qonnx", "random_qonnx_mlp", "qonnx_inputs", "run_graph",
           "CnnSpec", "random_cnn_spec", "build_qonnx_cnn", "random_qonnx_cnn", "qonnx_cnn_inputs"]


# --- random QONNX CNNs -----------------------------------------------------------------------------------------
#
# `random_qonnx_cnn(rng)` draws a 1-D ([N, C, L]) or 2-D ([N, C, H, W]) CNN of 1 to 5 feature-map layers and a
# head: Conv (kernels 1 to 5, strides 1 and 2, explicit pads or auto_pad, group 1 or depthwise; the bias
# through a Quant, as floats, as a separate Add, or none; optional BatchNormalization and Relu), MaxPool,
# AveragePool (then a Quant, or a Trunc as Brevitas' TruncAvgPool2d exports it), requantizing Quant layers
# (some after a Relu or a BatchNormalization of the activation), Trunc, residual Adds around a 'same' Conv;
# then Flatten / Reshape into a Gemm or MatMul, GlobalAveragePool -> Flatten -> Gemm, or no head (the output
# is a map). Activations of 2 to 8 bits (signed, unsigned, narrow, zero points where they map, every QONNX
# rounding mode), weights of 2 to 8 bits, every scale a power of two. Average pools have windows of a
# power-of-two count (their division is then an exact shift), and BatchNormalizations are drawn exactly
# foldable: per-channel scales gamma / sqrt(var + eps) = sign x {1, 3/4, 5/4} x 2**e (var a power of four
# large enough that eps rounds away), offsets on a grid. Every value qonnx computes in float32 stays below
# 2**23 units of its grid, so qonnx's output is the model's exact integer semantics.


@dataclass
class CnnSpec:
    dims: int  # 1 ([N, C, L]) or 2 ([N, C, H, W])
    channels: int
    size: tuple  # (H, W); (1, L) for 1-D
    input: QSpec
    layers: list = field(default_factory=list)
    head: dict | None = None
    out_shape: tuple = ()  # the output's per-sample shape in the source layout


def _cnn_act(rng) -> QSpec:
    """A random 2- to 8-bit activation spec (frac chosen by the caller)."""
    return _act_spec(rng, int(rng.integers(2, 9)))


def _pick_frac(typical_real: float, out: QSpec) -> int:
    """The frac that puts a typical real value at about the output's magnitude."""
    return int(np.round(np.log2(max(1, out.magnitude) / max(typical_real, 1e-30))))


def _bn_params(rng, co: int, acc_frac: int, acc_bound: int, typical: float, fine: bool = False):
    """Exactly foldable BatchNormalization values for a layer whose real output is acc * 2**-acc_frac with
    |acc| <= acc_bound (at most 2**13): (params, Y, bound) with every a * v + b on the grid 2**-Y and below
    `bound` < 2**22 units of it, so that qonnx's float32 arithmetic is exact. `fine`: offsets on a grid as
    much finer than the folded sums as that allows (beyond what 8-bit weights scaled into 16 bits reach)."""
    mant = float(rng.choice([1.0, 1.0, 0.75, 1.25]))  # a common scale of 1, 3/4 or 5/4
    e0 = int(rng.integers(-2, 2))
    e = e0 + rng.integers(-1, 2, co)  # times 2**e_c, per channel
    sign = np.where(rng.random(co) < 0.15, -1.0, 1.0)
    sign[rng.random(co) < 0.04] = 0.0
    a = sign * mant * np.exp2(e)
    gain = mant * 2.0 ** e0
    # a * v lies on the grid 2**-g_base (mant is a multiple of 1/4); the offsets on 2**-g, sometimes finer
    g_base = acc_frac - int(e.min()) + 2
    g = int(np.round(-np.log2(max(typical * gain, 1e-30)))) + int(rng.integers(2, 9))
    if rng.random() < 0.3:
        g = g_base + int(rng.integers(1, 4))
    g = min(g, g_base + 3)
    if fine:  # as fine as float32 keeps exact: acc_bound * 5 * 2**(e spread + extra) < 2**21
        room = (1 << 21) // (acc_bound * 5 * 2 ** (int(e.max()) - int(e.min())))
        g = g_base + max(0, min(9, room.bit_length() - 1))
    y_exp = max(g_base, g)
    acc_term = acc_bound * 5 * 2 ** (int(e.max()) - 2 + y_exp - acc_frac)
    assert acc_term < 1 << 21, "keep a batch-normalized layer's sums below 2**13"
    room = (((1 << 22) - acc_term) >> (y_exp - g)) - 1  # what the offsets may add, in their units
    b_lim = max(0, int(min(max(1.0, typical * gain * 2.0 ** g), float(1 << 18), float(room))))
    b = rng.integers(-b_lim, b_lim + 1, co) * 2.0 ** -g
    bound = acc_term + (b_lim << (y_exp - g))
    kv = rng.integers(5, 8, co)  # var = 4**kv: eps = 1e-5 rounds away in float32 and in double
    var = np.exp2(2.0 * kv)
    gamma = a * np.exp2(kv)
    mean = rng.integers(-40, 41, co) * np.exp2(-g - e + 2)  # mean * a on the offset grid
    beta = b + mean * a
    params = {"gamma": gamma, "beta": beta, "mean": mean, "var": var, "eps": 1e-5, "gain": gain}
    for key in ("gamma", "beta", "mean", "var"):
        v = params[key]
        assert np.all(np.asarray(v, dtype=np.float32) == np.asarray(v)), "BN parameter not exact in float32"
    return params, y_exp, bound


def random_cnn_spec(rng: np.random.Generator) -> CnnSpec:
    dims = int(rng.integers(1, 3))
    c = int(rng.integers(1, 9))
    h = 1 if dims == 1 else int(rng.integers(4, 13))
    w = int(rng.integers(8, 33)) if dims == 1 else int(rng.integers(4, 13))
    x = _cnn_act(rng)
    x.frac = int(rng.integers(-2, x.bits + 2))
    spec = CnnSpec(dims, c, (h, w), x)
    cur = x
    depth = int(rng.integers(1, 6))
    for i in range(depth):
        kind = str(rng.choice(["conv", "conv", "conv", "maxpool", "avgpool", "requant", "trunc", "residual"]))
        if kind == "trunc" and cur.zp != 0:
            kind = "requant"
        if kind == "residual" and not (cur.bits == 8 and cur.zp == 0 and not cur.narrow):
            # the add takes full 8-bit inputs: requantize into one first
            out = QSpec(8, bool(rng.integers(2)), False, 0, 0, _rand_mode(rng))
            out.frac = _pick_frac(max(1, cur.magnitude // 2) * 2.0 ** -cur.frac, out)
            if not _zp_fits(cur.magnitude, cur.frac - out.frac, 0) or out.frac - cur.frac > 8:
                out.frac = cur.frac
            spec.layers.append({"kind": "requant", "out": out, "relu": False, "bn": None})
            cur = out
        if kind == "maxpool":
            kw = int(rng.integers(2, 4))
            kh = 1 if dims == 1 else int(rng.integers(1, 4))
            if kw > w or kh > h:
                continue
            sw = int(rng.choice([1, 2, kw]))
            sh = 1 if dims == 1 else int(rng.choice([1, 2, kh]))
            pads = [int(rng.integers(0, k)) if rng.random() < 0.3 else 0 for k in (kh, kw, kh, kw)]
            if dims == 1:
                pads[0] = pads[2] = 0
            ho, wo = (h + pads[0] + pads[2] - kh) // sh + 1, (w + pads[1] + pads[3] - kw) // sw + 1
            spec.layers.append({"kind": "maxpool", "kernel": (kh, kw), "strides": (sh, sw), "pads": pads,
                                "global": False})
            h, w = ho, wo
            continue
        if kind == "avgpool":
            glob = h * w in (1, 2, 4, 8, 16, 32, 64) and rng.random() < 0.3
            if glob:
                kh, kw, sh, sw, pads = h, w, 1, 1, [0, 0, 0, 0]
            else:
                kh, kw = (1, int(rng.choice([2, 4]))) if dims == 1 else \
                    tuple(int(v) for v in [(2, 2), (1, 2), (2, 1), (2, 4), (4, 4), (1, 4)][int(rng.integers(6))])
                if kh > h or kw > w:
                    continue
                sh = 1 if dims == 1 else int(rng.choice([1, 2, kh]))
                sw = int(rng.choice([1, 2, kw]))
                pads = [0, 0, 0, 0]
                if rng.random() < 0.3:  # padded (counted); an input zero point is moved off first
                    pads = [0 if dims == 1 else int(rng.integers(0, kh)), int(rng.integers(0, kw)),
                            0 if dims == 1 else int(rng.integers(0, kh)), int(rng.integers(0, kw))]
            count = kh * kw
            ho, wo = (h + pads[0] + pads[2] - kh) // sh + 1, (w + pads[1] + pads[3] - kw) // sw + 1
            layer = {"kind": "avgpool", "kernel": (kh, kw), "strides": (sh, sw), "pads": pads, "global": glob}
            log_k = count.bit_length() - 1
            if cur.zp == 0 and not any(pads) and rng.random() < 0.5:  # Brevitas' TruncAvgPool2d: AveragePool -> Trunc
                shift = log_k + int(rng.integers(-1, 2))
                out = QSpec(int(np.clip(cur.bits + int(rng.integers(-1, 2)), 2, 8)), cur.signed, False,
                            cur.frac + log_k - shift, 0, str(rng.choice(MODES)))
                layer.update({"trunc": True, "out": out, "in_bits": cur.bits + log_k, "shift": shift})
            else:
                out = _cnn_act(rng)
                typical = max(1, cur.magnitude // 2) * 2.0 ** -cur.frac
                out.frac = _pick_frac(typical, out) + int(rng.integers(-1, 2))
                # qonnx: avg / scale + zeropt exact (the sums' grid is 2**-(frac + log2 count))
                if not _zp_fits(count * cur.magnitude, cur.frac + log_k - out.frac, out.zp):
                    out.zp = 0
                layer.update({"trunc": False, "out": out})
            spec.layers.append(layer)
            h, w, cur = ho, wo, out
            continue
        if kind == "trunc":
            drop = int(rng.integers(0, min(cur.bits - 1, 4) + 1))
            out = QSpec(max(2, cur.bits - drop), cur.signed, bool(cur.signed and rng.integers(3) == 0), cur.frac - drop,
                        0, _rand_mode(rng))
            spec.layers.append({"kind": "trunc", "out": out, "shift": drop})
            cur = out
            continue
        if kind == "requant":
            out = _cnn_act(rng)
            relu = bool(rng.integers(2))
            bn = None
            shift = int(rng.integers(-2, 4))
            out.frac = cur.frac - shift
            if rng.random() < 0.3:  # a BatchNormalization of the activation
                params, y_exp, bound = _bn_params(rng, c, cur.frac, cur.magnitude,
                                                  max(1, cur.magnitude // 2) * 2.0 ** -cur.frac)
                bn = params
                out.frac = _pick_frac(max(1, cur.magnitude // 2) * 2.0 ** -cur.frac * params["gain"], out) \
                    + int(rng.integers(-1, 2))
                if not _zp_fits(bound, y_exp - out.frac, out.zp) or (y_exp - out.frac < 0 and
                                                                      (bound << (out.frac - y_exp)) >= BOUND):
                    out.zp = 0
                    out.frac = min(out.frac, y_exp)
            elif not _zp_fits(cur.magnitude, shift, out.zp):
                out.zp = 0
            spec.layers.append({"kind": "requant", "out": out, "relu": relu, "bn": bn})
            cur = out
            continue
        # conv (or the conv of a residual block)
        residual = kind == "residual"
        depthwise = not residual and c > 1 and rng.random() < 0.25
        use_bn = not residual and rng.random() < 0.35
        # a BatchNorm whose offsets are finer than 8-bit weights scaled into 16 bits can reach: a 1x1 conv of
        # one input channel (or depthwise) on a narrow activation, its sums small enough for float32 and an
        # int16 intermediate (the conv + requant form)
        fine = use_bn and cur.magnitude <= 8 and rng.random() < 0.5
        if fine:
            kh = kw = sh = sw = 1
            pads, auto = [0, 0, 0, 0], "NOTSET"
            depthwise = c > 1
            co = c if depthwise else int(rng.integers(1, 17))
        elif residual:
            k = int(rng.choice([1, 3]))
            kh, kw = (1, k) if dims == 1 else (k, k)
            sh = sw = 1
            pads = [(kh - 1) // 2, (kw - 1) // 2, (kh - 1) // 2, (kw - 1) // 2]
            co = c
            auto = "NOTSET"
        else:
            kw = int(rng.integers(1, 6))
            kh = 1 if dims == 1 else int(rng.integers(1, 6))
            sh = 1 if dims == 1 else int(rng.integers(1, 3))
            sw = int(rng.integers(1, 3))
            pads = [0 if dims == 1 else int(rng.integers(0, kh)), int(rng.integers(0, kw)),
                    0 if dims == 1 else int(rng.integers(0, kh)), int(rng.integers(0, kw))]
            auto = "NOTSET"
            r = rng.random()
            if r < 0.1:
                auto, pads = "VALID", [0, 0, 0, 0]
            elif r < 0.2 and kh % 2 and kw % 2:
                auto = str(rng.choice(["SAME_UPPER", "SAME_LOWER"]))
                th = max(0, (-(-h // sh) - 1) * sh + kh - h)
                tw = max(0, (-(-w // sw) - 1) * sw + kw - w)
                up = auto == "SAME_UPPER"
                pads = [th // 2 if up else th - th // 2, tw // 2 if up else tw - tw // 2,
                        th - th // 2 if up else th // 2, tw - tw // 2 if up else tw // 2]
                if dims == 1:
                    pads[0] = pads[2] = 0
                if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
                    auto, pads = "NOTSET", [0, 0, 0, 0]
            co = c if depthwise else int(rng.integers(1, 17))
        ho, wo = (h + pads[0] + pads[2] - kh) // sh + 1, (w + pads[1] + pads[3] - kw) // sw + 1
        if ho < 1 or wo < 1:
            continue
        fan = kh * kw * (1 if depthwise else c)
        w_bits = 8 if fine else int(rng.integers(2, 9))
        wq = QSpec(w_bits, True, bool(rng.integers(2)), int(rng.integers(0, w_bits + 2)), 0, _rand_mode(rng))
        xmag = cur.magnitude
        # a batch-normalized layer keeps its sums below 2**13 (float32 exact after the scaling)
        cap = (1 << int(rng.choice([11, 12]))) if use_bn else BOUND // 8
        wlim = max(1, min(wq.qmax, max(1, cap // max(1, fan * xmag)) - 1))
        bias_lim = max(1, min(BOUND // 16, fan * xmag * wlim // 4))
        if use_bn:
            bias_lim = max(1, min(bias_lim, cap // 4, 16 if fine else cap))
        acc_bound = fan * xmag * (wlim + 1) + bias_lim
        if acc_bound > 1 << 13:  # too wide a layer for an exact float32 BatchNormalization
            use_bn = False
        acc_frac = cur.frac + wq.frac
        typical = max(1.0, np.sqrt(fan) * max(1, xmag) * max(1, wlim) / 4) * 2.0 ** -acc_frac
        if residual:
            out = QSpec(8, True, False, 0, 0, _rand_mode(rng))
        else:
            out = _cnn_act(rng)
        relu = bool(rng.integers(2))
        bn = None
        y_exp, y_bound = acc_frac, acc_bound
        if use_bn:
            bn, y_exp, y_bound = _bn_params(rng, co, acc_frac, acc_bound, typical, fine)
            typical *= bn["gain"]
        out.frac = _pick_frac(typical, out) + int(rng.integers(-1, 2))
        out.frac = min(out.frac, y_exp + 2)
        if (y_exp - out.frac < 0 and (y_bound << (out.frac - y_exp)) >= BOUND) \
                or not _zp_fits(y_bound, y_exp - out.frac, out.zp):
            out.zp = 0
            out.frac = min(out.frac, y_exp)
        layer = {"kind": "conv", "co": co, "kernel": (kh, kw), "strides": (sh, sw), "pads": pads, "auto_pad": auto,
                 "depthwise": depthwise, "w": wq, "wlim": wlim, "bias_lim": bias_lim, "relu": relu and not residual,
                 "bias": str(rng.choice(["quant", "float", "add", "none"])), "bn": bn, "out": out,
                 "seed": int(rng.integers(1 << 30))}
        if residual:
            add_out = QSpec(8, True, False, min(cur.frac, out.frac) - 1, 0, _rand_mode(rng))
            layer.update({"residual": True, "add_out": add_out, "add_relu": bool(rng.integers(2))})
            spec.layers.append(layer)
            cur = add_out
        else:
            spec.layers.append(layer)
            cur = out
        h, w, c = ho, wo, co
    # the head
    r = rng.random()
    if r < 0.5 or (r < 0.75 and h * w not in (1, 2, 4, 8, 16, 32, 64)):
        head = {"kind": "flatten", "reshape": bool(rng.integers(2))}
        k = h * w * c
    elif r < 0.75:
        gout = _cnn_act(rng)
        gout.frac = _pick_frac(max(1, cur.magnitude // 2) * 2.0 ** -cur.frac, gout)
        log_k = (h * w).bit_length() - 1
        if not _zp_fits(h * w * cur.magnitude, cur.frac + log_k - gout.frac, gout.zp):
            gout.zp = 0
        head = {"kind": "gap", "out": gout, "reshape": bool(rng.integers(2))}
        k, cur = c, gout
    else:
        head = None
    if head is not None:
        n = int(rng.integers(1, 17))
        w_bits = int(rng.integers(2, 9))
        wq = QSpec(w_bits, True, bool(rng.integers(2)), int(rng.integers(0, w_bits + 2)), 0, _rand_mode(rng))
        xmag = cur.magnitude
        wlim = max(1, min(wq.qmax, max(1, (BOUND // 8) // max(1, k * xmag)) - 1))
        bias_lim = max(1, min(BOUND // 16, k * xmag * wlim // 4))
        out = _cnn_act(rng)
        typical = max(1.0, np.sqrt(k) * max(1, xmag) * max(1, wlim) / 4) * 2.0 ** -(cur.frac + wq.frac)
        out.frac = _pick_frac(typical, out) + int(rng.integers(-1, 2))
        acc_bound = k * xmag * (wlim + 1) + bias_lim
        acc_frac = cur.frac + wq.frac
        out.frac = min(out.frac, acc_frac + 2)
        if (acc_frac - out.frac < 0 and (acc_bound << (out.frac - acc_frac)) >= BOUND) or \
                not _zp_fits(acc_bound, acc_frac - out.frac, out.zp):
            out.zp = 0
            out.frac = min(out.frac, acc_frac)
        head.update({"n": n, "w": wq, "wlim": wlim, "bias_lim": bias_lim, "out": out, "relu": bool(rng.integers(2)),
                     "gemm": bool(rng.integers(2)), "trans_b": bool(rng.integers(2)),
                     "bias": str(rng.choice(["quant", "float", "none"])), "seed": int(rng.integers(1 << 30))})
        spec.out_shape = (n,)
    else:
        spec.out_shape = (c, h, w) if dims == 2 else (c, w)
    spec.head = head
    return spec


def build_qonnx_cnn(spec: CnnSpec, batch: int = 1, name: str = "qonnx_cnn"):
    """The onnx.ModelProto of a CnnSpec (qonnx domain, opset 2 for Trunc's second version)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    count = [0]

    def const(value, tag: str, dtype=np.float32) -> str:
        count[0] += 1
        nm = f"{tag}_{count[0]}"
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), nm))
        return nm

    def quant(x: str, q: QSpec, out: str) -> str:
        nodes.append(helper.make_node(
            "Quant", [x, const(2.0 ** -q.frac, "scale"), const(float(q.zp), "zeropt"), const(float(q.bits), "bitwidth")],
            [out], domain=DOMAIN, signed=int(q.signed), narrow=int(q.narrow), rounding_mode=q.mode, name=out))
        return out

    def node(op, ins, out, **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def onnx_pads(p):  # (top, left, bottom, right) -> ONNX begins then ends
        return [p[1], p[3]] if spec.dims == 1 else [p[0], p[1], p[2], p[3]]

    def onnx_k(kh, kw):
        return [kw] if spec.dims == 1 else [kh, kw]

    def trunc(x, scale, in_bits, out: QSpec, out_name):
        nodes.append(helper.make_node(
            "Trunc", [x, const(scale, "scale"), const(0.0, "zeropt"), const(float(in_bits), "in_bits"),
                      const(2.0 ** -out.frac, "out_scale"), const(float(out.bits), "out_bits")],
            [out_name], domain=DOMAIN, rounding_mode=out.mode, signed=int(out.signed), narrow=int(out.narrow),
            name=out_name))
        return out_name

    def batchnorm(x, bn, out):
        ins = [x] + [const(bn[key], f"bn_{key}") for key in ("gamma", "beta", "mean", "var")]
        nodes.append(helper.make_node("BatchNormalization", ins, [out], name=out, epsilon=float(bn["eps"])))
        return out

    h, w = spec.size
    c = spec.channels
    in_shape = [batch, c, h, w] if spec.dims == 2 else [batch, c, w]
    cur = quant("x", spec.input, "q_in")
    cur_spec = spec.input
    for i, layer in enumerate(spec.layers):
        kind = layer["kind"]
        if kind == "maxpool":
            kh, kw = layer["kernel"]
            cur = node("MaxPool", [cur], f"maxpool{i}", kernel_shape=onnx_k(kh, kw),
                       strides=onnx_k(*layer["strides"]), pads=onnx_pads(layer["pads"]))
            p = layer["pads"]
            h = (h + p[0] + p[2] - kh) // layer["strides"][0] + 1
            w = (w + p[1] + p[3] - kw) // layer["strides"][1] + 1
            continue
        if kind == "avgpool":
            kh, kw = layer["kernel"]
            if layer["global"]:
                y = node("GlobalAveragePool", [cur], f"avgpool{i}")
                h = w = 1
            else:
                y = node("AveragePool", [cur], f"avgpool{i}", kernel_shape=onnx_k(kh, kw),
                         strides=onnx_k(*layer["strides"]), pads=onnx_pads(layer["pads"]), count_include_pad=1)
                p = layer["pads"]
                h = (h + p[0] + p[2] - kh) // layer["strides"][0] + 1
                w = (w + p[1] + p[3] - kw) // layer["strides"][1] + 1
            out = layer["out"]
            if layer["trunc"]:
                cur = trunc(y, 2.0 ** -cur_spec.frac / (kh * kw), layer["in_bits"], out, f"trunc{i}")
            else:
                cur = quant(y, out, f"act{i}")
            cur_spec = out
            continue
        if kind == "trunc":
            out = layer["out"]
            cur, cur_spec = trunc(cur, 2.0 ** -cur_spec.frac, cur_spec.bits, out, f"trunc{i}"), out
            continue
        if kind == "requant":
            src = cur
            if layer["bn"] is not None:
                src = batchnorm(src, layer["bn"], f"bn{i}")
            if layer["relu"]:
                src = node("Relu", [src], f"relu{i}")
            cur, cur_spec = quant(src, layer["out"], f"act{i}"), layer["out"]
            continue
        # conv
        lrng = np.random.default_rng(layer["seed"])
        wspec, co = layer["w"], layer["co"]
        kh, kw = layer["kernel"]
        cin = 1 if layer["depthwise"] else c
        wq = lrng.integers(-layer["wlim"], layer["wlim"] + 1, size=(co, cin, kh, kw))
        off = lrng.choice([0.0, 0.0, 0.5, -0.5, 0.25, -0.3], size=wq.shape)
        wf = ((wq + off) * 2.0 ** -wspec.frac).astype(np.float32)
        if spec.dims == 1:
            wf = wf[:, :, 0, :]
        wout = quant(const(wf, "w"), wspec, f"wq{i}")
        acc_frac = cur_spec.frac + wspec.frac
        bq = lrng.integers(-layer["bias_lim"], layer["bias_lim"] + 1, size=co)
        ins = [cur, wout]
        if layer["bias"] == "quant":
            ins.append(quant(const(bq * 2.0 ** -acc_frac, "b"), QSpec(32, True, False, acc_frac), f"bq{i}"))
        elif layer["bias"] == "float":
            ins.append(const(bq * 2.0 ** -acc_frac, "b"))
        attrs = {"kernel_shape": onnx_k(kh, kw), "strides": onnx_k(*layer["strides"]),
                 "group": c if layer["depthwise"] else 1}
        if layer["auto_pad"] == "NOTSET":
            attrs["pads"] = onnx_pads(layer["pads"])
        else:
            attrs["auto_pad"] = layer["auto_pad"]
        y = node("Conv", ins, f"conv{i}", **attrs)
        if layer["bias"] == "add":
            shape = (1, co, 1, 1) if spec.dims == 2 else (1, co, 1)
            y = node("Add", [y, const((bq * 2.0 ** -acc_frac).reshape(shape), "b")], f"bias{i}")
        if layer["bn"] is not None:
            y = batchnorm(y, layer["bn"], f"bn{i}")
        if layer["relu"]:
            y = node("Relu", [y], f"relu{i}")
        out = quant(y, layer["out"], f"act{i}")
        p = layer["pads"]
        h = (h + p[0] + p[2] - kh) // layer["strides"][0] + 1
        w = (w + p[1] + p[3] - kw) // layer["strides"][1] + 1
        c = co
        if layer.get("residual"):
            y = node("Add", [cur, out], f"residual{i}")
            if layer["add_relu"]:
                y = node("Relu", [y], f"add_relu{i}")
            cur, cur_spec = quant(y, layer["add_out"], f"sum{i}"), layer["add_out"]
        else:
            cur, cur_spec = out, layer["out"]
    head = spec.head
    if head is None:
        out_shape = [batch, c, h, w] if spec.dims == 2 else [batch, c, w]
    else:
        if head["kind"] == "gap":
            cur = quant(node("GlobalAveragePool", [cur], "gap"), head["out"], "gap_q")
            cur_spec = head["out"]
            h = w = 1
        k = c * h * w
        if head["reshape"]:
            cur = node("Reshape", [cur, const([-1, k], "shape", np.int64)], "flat")
        else:
            cur = node("Flatten", [cur], "flat", axis=1)
        lrng = np.random.default_rng(head["seed"])
        wspec, n = head["w"], head["n"]
        wq = lrng.integers(-head["wlim"], head["wlim"] + 1, size=(k, n))
        off = lrng.choice([0.0, 0.0, 0.5, -0.5, 0.25, -0.3], size=wq.shape)
        wf = ((wq + off) * 2.0 ** -wspec.frac).astype(np.float32)
        gemm, trans_b = head["gemm"], head["trans_b"]
        wout = quant(const(wf.T if gemm and trans_b else wf, "w"), wspec, "wq_fc")
        acc_frac = cur_spec.frac + wspec.frac
        bq = lrng.integers(-head["bias_lim"], head["bias_lim"] + 1, size=n)
        bias = None
        if head["bias"] == "quant":
            bias = quant(const(bq * 2.0 ** -acc_frac, "b"), QSpec(32, True, False, acc_frac), "bq_fc")
        elif head["bias"] == "float":
            bias = const(bq * 2.0 ** -acc_frac, "b")
        if gemm:
            y = node("Gemm", [cur, wout] + ([bias] if bias else []), "fc", transB=int(trans_b))
        else:
            y = node("MatMul", [cur, wout], "fc")
            if bias:
                y = node("Add", [y, bias], "fc_bias")
        if head["relu"]:
            y = node("Relu", [y], "fc_relu")
        cur = quant(y, head["out"], "y")
        out_shape = [batch, n]
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 2)])
    model.ir_version = 8
    return model


def random_qonnx_cnn(rng: np.random.Generator):
    """(ModelProto, CnnSpec) of a random power-of-two QONNX CNN (see random_cnn_spec)."""
    spec = random_cnn_spec(rng)
    return build_qonnx_cnn(spec), spec


def qonnx_cnn_inputs(spec: CnnSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, C, H, W] ([n, C, L]): grid values, ties (both signs), values beyond both ends, random ones,
    as qonnx_inputs draws them for an MLP."""
    h, w = spec.size
    features = spec.channels * h * w
    flat = qonnx_inputs(ModelSpec(features, spec.input), n, rng)
    return flat.reshape((n, spec.channels, h, w) if spec.dims == 2 else (n, spec.channels, w))
