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


__all__ = ["QSpec", "ModelSpec", "random_spec", "build_qonnx", "random_qonnx_mlp", "qonnx_inputs", "run_graph"]
