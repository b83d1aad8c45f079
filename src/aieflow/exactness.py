"""Is the compiled model bit-exact with its source? Measured on calibration inputs, layer by layer.

A frontend hands over the source's own execution (frontends.Imported.reference: onnxruntime, qonnx's
executor, the PyTorch module, hls4ml's C simulation). Here every op of the Graph is run on the source's own
values of its inputs and compared with the source's value of its output, so a mismatch is charged to the
layer that makes it, not to the layers after it; then the compiled design runs the whole model from the
source's quantized input and is compared at the outputs. Nothing is called exact that was not compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import ModelError
from .ir import Graph, Op

DEFAULT_SAMPLES = 256


@dataclass(frozen=True)
class Comparison:
    """One tensor compared with the source: counts over samples x features values."""

    name: str  # the layer (op) name, or "model" for the whole-model comparison
    tensor: str
    values: int
    mismatches: int
    max_lsb: int  # largest |aieflow - source| in units of the tensor's last bit

    @property
    def exact(self) -> bool:
        return self.values > 0 and self.mismatches == 0

    @property
    def rate(self) -> float:
        return self.mismatches / self.values if self.values else 0.0

    def describe(self) -> str:
        if self.values == 0:
            return "not measured"
        if self.exact:
            return f"bit-exact ({self.values:,} values)"
        return (f"{self.rate:.3%} of {self.values:,} values differ, at most {self.max_lsb} LSB")


@dataclass(frozen=True)
class ExactnessReport:
    source: str
    samples: int
    layers: tuple[Comparison, ...]
    model: Comparison
    unmeasured: tuple[str, ...] = ()  # layers whose values the source does not expose

    @property
    def exact(self) -> bool:
        return self.model.exact and all(c.exact for c in self.layers)

    def to_dict(self) -> dict:
        return {"source": self.source, "samples": self.samples, "exact": self.exact,
                "model": {**asdict(self.model), "exact": self.model.exact},
                "layers": [{**asdict(c), "exact": c.exact} for c in self.layers],
                "unmeasured": list(self.unmeasured)}

    @classmethod
    def from_dict(cls, d: dict) -> "ExactnessReport":
        def comp(c: dict) -> Comparison:
            return Comparison(c["name"], c["tensor"], c["values"], c["mismatches"], c["max_lsb"])

        return cls(d["source"], d["samples"], tuple(comp(c) for c in d["layers"]), comp(d["model"]),
                   tuple(d.get("unmeasured", ())))

    def lines(self) -> list[str]:
        head = (f"exactness vs {self.source} on {self.samples} calibration inputs: "
                f"{'bit-exact' if self.exact else 'NOT bit-exact'}")
        out = [head] + [f"  {c.name}: {c.describe()}" for c in self.layers]
        out += [f"  {name}: not measured (the source does not expose its output)" for name in self.unmeasured]
        out.append(f"  whole model: {self.model.describe()}")
        return out


# --- the Graph's own integer semantics, op by op ---------------------------------------------------------


def evaluate_op(op: Op, graph: Graph, values: dict[str, np.ndarray], stats: dict | None = None) -> np.ndarray:
    """The integers an op produces from its input integers, by the IR's definition: its family's evaluate."""
    from .ops import family

    return family(op.kind).evaluate(op, graph, values, stats)


def evaluate(graph: Graph, q: np.ndarray, stats: dict | None = None) -> dict[str, np.ndarray]:
    """Every tensor's integers for input integers q [samples, features]; `stats` counts the ties and
    saturations every op's rounding met (numerics.count_rounding)."""
    values = {graph.inputs[0]: np.asarray(q, dtype=np.int64)}
    for op in graph.ops:
        values[op.outputs[0]] = evaluate_op(op, graph, values, stats)
    return values


# --- calibration inputs and the measurement -----------------------------------------------------------


def calibration_inputs(graph: Graph, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> np.ndarray:
    """Real inputs over the input's whole range, in the model's own layout: random grid points, half-way
    points (ties for the source's input quantizer), and values past both ends (saturation)."""
    t = graph.tensors[graph.inputs[0]]
    rng = np.random.default_rng(seed)
    lo, hi = t.type.qmin, t.type.qmax
    q = rng.integers(lo, hi, (samples, *t.source_shape), endpoint=True).astype(np.float64)
    kind = rng.integers(0, 8, q.shape)
    q = np.where(kind == 0, q + 0.5, q)  # ties
    q = np.where(kind == 1, rng.uniform(lo - 4, hi + 4, q.shape), q)  # anywhere, saturating
    return ((q - t.zero_point) * t.real_scale).astype(np.float32)


def measure(imported, design=None, inputs: np.ndarray | None = None, samples: int = DEFAULT_SAMPLES,
            seed: int = 0) -> ExactnessReport:
    """Compare the Graph (per layer) and the compiled design (whole model) with the source's reference."""
    graph = imported.graph
    x = inputs if inputs is not None else imported.calibration
    if x is None:
        x = calibration_inputs(graph, samples, seed)
    # The source's values in its own layout; every comparison is made in the compiler's order.
    ref = {t: graph.tensors[t].from_source(np.asarray(v)) if t in graph.tensors else v
           for t, v in imported.reference(np.asarray(x)).items()}
    tin = graph.tensors[graph.inputs[0]]
    q_in = ref.get(graph.inputs[0])
    if q_in is None:
        q_in = tin.quantize(tin.from_source(np.asarray(x)))
    q_in = np.asarray(q_in, dtype=np.int64)
    layers, unmeasured = [], []
    known = {graph.inputs[0]: q_in, **ref}  # the source's values every op is fed
    for op in graph.ops:
        y = op.outputs[0]
        if y not in ref or any(t not in known for t in op.inputs):
            unmeasured.append(op.name)
            continue
        mine = evaluate_op(op, graph, known)
        layers.append(_compare(op.name, y, mine, ref[y]))
    out = graph.outputs[0]
    if out not in ref:
        raise ModelError(f"the {imported.source} reference did not return the model output '{out}'")
    if design is not None:
        mine = graph.tensors[out].from_source(design.simulate(tin.to_source(q_in), raw=True))
    else:
        mine = evaluate(graph, q_in)[out]
    return ExactnessReport(imported.source, int(q_in.shape[0]), tuple(layers), _compare("model", out, mine, ref[out]),
                           tuple(unmeasured))


def _compare(name: str, tensor: str, mine: np.ndarray, theirs: np.ndarray) -> Comparison:
    a = np.asarray(mine, dtype=np.int64)
    b = np.asarray(theirs, dtype=np.int64).reshape(a.shape)
    diff = np.abs(a - b)
    return Comparison(name, tensor, int(a.size), int(np.count_nonzero(diff)), int(diff.max(initial=0)))
