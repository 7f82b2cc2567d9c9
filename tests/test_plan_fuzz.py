"""Random graphs, differentiated through the whole plan as training runs it (float64 central
differences of the loss against `Trainer.gradients`): several inputs, fan-out, every merge
layer, shared layers, nested wrappers, convolution, pooling and recurrent branches, `Lambda`,
masks, every activation, several outputs with loss weights, sample weights and activity
regularizers. `KERSPEC_FUZZ=long` runs thousands of graphs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import kerspec
from kerspec.activations import ACTIVATIONS
from tests.fuzzing import FUZZ
from tests.wholeplan import check_training_gradients

# Every activation; `threshold` has no defaults for its arguments.
ACTIVATION_NAMES = [
    {"type": "threshold", "threshold": 0.2, "default_value": -0.5} if name == "threshold" else name
    for name in sorted(ACTIVATIONS.names())
]
ELEMENTWISE = [a for a in ACTIVATION_NAMES if ACTIVATIONS.create(a).elementwise]
MERGES = ["Add", "Subtract", "Average", "Multiply", "Maximum", "Minimum"]
# Merges that take masked inputs (the others are refused when the graph compiles, as in Keras).
MASKED_MERGES = ["Add", "Subtract", "Average"]
LAMBDAS_1 = ["tanh(x0) * 2.0", "square(x0) - x0", "x0 * sigmoid(x0)", "exp(-square(x0))"]
LAMBDAS_2 = ["x0 * x1 + x0", "abs(x0 - x1)", "x0 + x1", "tanh(x0) * x1"]


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # without the batch axis
    masked: bool = False

    @property
    def kind(self) -> str:
        return {1: "vector", 2: "sequence", 3: "image"}[len(self.shape)]


@dataclass
class Graph:
    """A spec under construction: the tensors made so far and the layers that make them."""

    draw: object
    layers: list[dict] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    read: set[str] = field(default_factory=set)
    # Shareable layers: name -> (input shape, masked), for `share:`.
    shareable: dict[str, tuple] = field(default_factory=dict)

    def pick(self, strategy):
        return self.draw(strategy)

    def add(self, entry: dict, inputs: list[Tensor], shape, masked=False) -> Tensor:
        name = f"n{len(self.layers)}"
        entry = {"name": name, **entry}
        if inputs:
            entry["from"] = inputs[0].name if len(inputs) == 1 else [t.name for t in inputs]
            self.read.update(t.name for t in inputs)
        self.layers.append(entry)
        tensor = Tensor(name, tuple(shape), masked)
        self.tensors.append(tensor)
        return tensor

    def activation(self, elementwise_only=False):
        return self.pick(st.sampled_from(ELEMENTWISE if elementwise_only else ACTIVATION_NAMES))


def add_input(g: Graph) -> None:
    kind = g.pick(st.sampled_from(["vector", "sequence", "image"]))
    shape = {
        "vector": (g.pick(st.integers(2, 4)),),
        "sequence": (g.pick(st.integers(2, 4)), g.pick(st.integers(1, 3))),
        "image": (g.pick(st.integers(4, 5)), g.pick(st.integers(4, 5)), g.pick(st.integers(1, 2))),
    }[kind]
    t = g.add({"type": "Input", "shape": list(shape)}, [], shape)
    if kind == "sequence" and g.pick(st.booleans()):
        g.add({"type": "Masking", "mask_value": 0.0}, [t], shape, masked=True)


def vector_op(g: Graph, t: Tensor) -> None:
    (f,) = t.shape
    choice = g.pick(st.sampled_from(
        ["dense", "dense", "share", "activation", "batchnorm", "layernorm", "dropout", "noise",
         "repeat", "lambda", "activity"]
    ))
    if choice == "share":
        match = [n for n, (shape, masked) in g.shareable.items() if shape == t.shape and not masked]
        if match:
            source = g.pick(st.sampled_from(match))
            units = next(e["units"] for e in g.layers if e["name"] == source)
            g.add({"share": source}, [t], (units,))
            return
        choice = "dense"
    if choice == "dense":
        units = g.pick(st.integers(2, 4))
        entry = {"type": "Dense", "units": units, "activation": g.activation()}
        if g.pick(st.booleans()):
            entry["activity_regularizer"] = {"type": "l2", "l2": 0.01}
        if g.pick(st.booleans()):
            entry["kernel_regularizer"] = {"type": "l1_l2", "l1": 0.001, "l2": 0.01}
        made = g.add(entry, [t], (units,))
        g.shareable[made.name] = (t.shape, False)
    elif choice == "activation":
        g.add({"type": "Activation", "activation": g.activation()}, [t], t.shape)
    elif choice == "batchnorm":
        g.add({"type": "BatchNormalization", "momentum": 0.9}, [t], t.shape)
    elif choice == "layernorm":
        g.add({"type": "LayerNormalization"}, [t], t.shape)
    elif choice == "dropout":
        g.add({"type": "Dropout", "rate": 0.3}, [t], t.shape)
    elif choice == "noise":
        g.add({"type": "GaussianNoise", "stddev": 0.1}, [t], t.shape)
    elif choice == "repeat":
        n = g.pick(st.integers(2, 3))
        g.add({"type": "RepeatVector", "n": n}, [t], (n, f))
    elif choice == "lambda":
        g.add({"type": "Lambda", "expression": g.pick(st.sampled_from(LAMBDAS_1))}, [t], t.shape)
    else:
        g.add({"type": "ActivityRegularization", "l1": 0.01, "l2": 0.01}, [t], t.shape)


def sequence_op(g: Graph, t: Tensor) -> None:
    time, f = t.shape
    options = ["rnn", "rnn", "bidirectional", "timedistributed", "global", "dense"]
    if not t.masked:
        options += ["conv", "flatten", "timedistributed_conv"] + (["pool"] if time >= 2 else [])
    choice = g.pick(st.sampled_from(options))
    units = g.pick(st.integers(2, 3))
    if choice in ("rnn", "bidirectional"):
        cell = g.pick(st.sampled_from(["SimpleRNN", "LSTM", "GRU"]))
        sequences = g.pick(st.booleans())
        inner = {"type": cell, "units": units, "return_sequences": sequences}
        if g.pick(st.booleans()):
            # Not `exponential`: exp of a state fed back through the steps overflows.
            inner["activation"] = g.pick(st.sampled_from([a for a in ELEMENTWISE if a != "exponential"]))
        if cell == "GRU":
            inner["reset_after"] = g.pick(st.booleans())
        if choice == "rnn":
            inner["go_backwards"] = g.pick(st.booleans())
            out_f, entry = units, inner
        else:
            mode = g.pick(st.sampled_from(["concat", "sum", "mul", "ave"]))
            entry = {"type": "Bidirectional", "layer": inner, "merge_mode": mode}
            out_f = 2 * units if mode == "concat" else units
        shape = (time, out_f) if sequences else (out_f,)
        g.add(entry, [t], shape, masked=t.masked and sequences)
    elif choice == "timedistributed":
        inner = {"type": "Dense", "units": units, "activation": g.activation()}
        g.add({"type": "TimeDistributed", "layer": inner}, [t], (time, units), masked=t.masked)
    elif choice == "timedistributed_conv":
        # TimeDistributed(Bidirectional) is not a Keras pattern; a per-step convolution over
        # the features is: (time, f) -> (time, f, 1) -> Conv1D per step.
        r = g.add({"type": "Reshape", "target_shape": [time, f, 1]}, [t], (time, f, 1))
        inner = {"type": "Conv1D", "filters": units, "kernel_size": 1, "activation": g.activation()}
        g.add({"type": "TimeDistributed", "layer": inner}, [r], (time, f, units))
    elif choice == "global":
        kind = g.pick(st.sampled_from(["GlobalAveragePooling1D", "GlobalMaxPooling1D"]))
        if t.masked:
            kind = "GlobalAveragePooling1D"
        g.add({"type": kind}, [t], (f,))
    elif choice == "dense":
        entry = {"type": "Dense", "units": units, "activation": g.activation(elementwise_only=True)}
        g.add(entry, [t], (time, units), masked=t.masked)
    elif choice == "conv":
        padding = g.pick(st.sampled_from(["same", "causal", "valid"]))
        k = g.pick(st.integers(1, min(2, time)))
        out_t = time - k + 1 if padding == "valid" else time
        entry = {"type": "Conv1D", "filters": units, "kernel_size": k, "padding": padding,
                 "activation": g.activation()}
        g.add(entry, [t], (out_t, units))
    elif choice == "pool":
        kind = g.pick(st.sampled_from(["MaxPooling1D", "AveragePooling1D"]))
        g.add({"type": kind, "pool_size": 2}, [t], (time // 2, f))
    else:
        g.add({"type": "Flatten"}, [t], (time * f,))


def image_op(g: Graph, t: Tensor) -> None:
    h, w, c = t.shape
    options = ["conv", "batchnorm", "pad", "global", "flatten"]
    if min(h, w) >= 2:
        options += ["conv", "pool"]
    if min(h, w) >= 3:
        options.append("crop")
    if max(h, w) <= 5:
        options.append("upsample")
    choice = g.pick(st.sampled_from(options))
    if choice == "conv":
        filters = g.pick(st.integers(1, 3))
        padding = g.pick(st.sampled_from(["same", "valid"] if min(h, w) >= 2 else ["same"]))
        size = (h, w) if padding == "same" else (h - 1, w - 1)
        entry = {"type": "Conv2D", "filters": filters, "kernel_size": 2, "padding": padding,
                 "activation": g.activation(elementwise_only=True)}
        g.add(entry, [t], (*size, filters))
    elif choice == "pool":
        kind = g.pick(st.sampled_from(["MaxPooling2D", "AveragePooling2D"]))
        g.add({"type": kind, "pool_size": 2}, [t], (h // 2, w // 2, c))
    elif choice == "batchnorm":
        g.add({"type": "BatchNormalization"}, [t], t.shape)
    elif choice == "upsample":
        g.add({"type": "UpSampling2D", "size": 2}, [t], (2 * h, 2 * w, c))
    elif choice == "pad":
        g.add({"type": "ZeroPadding2D", "padding": 1}, [t], (h + 2, w + 2, c))
    elif choice == "crop":
        g.add({"type": "Cropping2D", "cropping": 1}, [t], (h - 2, w - 2, c))
    elif choice == "global":
        kind = g.pick(st.sampled_from(["GlobalAveragePooling2D", "GlobalMaxPooling2D"]))
        g.add({"type": kind}, [t], (c,))
    else:
        g.add({"type": "Flatten"}, [t], (h * w * c,))


def merge_op(g: Graph) -> bool:
    """A merge of two or three tensors of one shape (Concatenate: one rank), if any match."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in g.tensors:
        groups.setdefault((t.shape, t.masked), []).append(t)
    candidates = [ts for ts in groups.values() if len(ts) >= 2]
    if not candidates:
        return False
    ts = g.pick(st.sampled_from(candidates))
    masked = ts[0].masked
    kind = g.pick(st.sampled_from(
        (MASKED_MERGES if masked else MERGES) + ["Concatenate", "Dot", "self"]
    ))
    if kind == "self":  # one tensor read twice by one layer
        a = g.pick(st.sampled_from(ts))
        g.add({"type": "Add"}, [a, a], a.shape, masked=masked)
        return True
    n = 2 if kind in ("Subtract", "Dot") else g.pick(st.integers(2, min(3, len(ts))))
    picked = g.pick(st.permutations(ts))[:n]
    shape = picked[0].shape
    if kind == "Concatenate":
        g.add({"type": "Concatenate"}, picked, (*shape[:-1], shape[-1] * n), masked=masked)
    elif kind == "Dot":
        if len(shape) != 1 or masked:
            return False
        g.add({"type": "Dot", "axes": 1, "normalize": g.pick(st.booleans())}, picked, (1,))
    else:
        g.add({"type": kind}, picked, shape, masked=masked)
    return True


def to_vector(g: Graph, t: Tensor) -> Tensor:
    if t.kind == "vector":
        return t
    pooling = "GlobalAveragePooling1D" if t.kind == "sequence" else "GlobalAveragePooling2D"
    return g.add({"type": pooling}, [t], t.shape[-1:])


@st.composite
def random_graphs(draw):
    """(spec text, {output name: (kind, shape)}) for a random graph."""
    g = Graph(draw)
    for _ in range(draw(st.integers(1, 3))):
        add_input(g)
    for _ in range(draw(st.integers(2, 8))):
        if draw(st.integers(0, 3)) == 0 and merge_op(g):
            continue
        t = draw(st.sampled_from(g.tensors))
        {"vector": vector_op, "sequence": sequence_op, "image": image_op}[t.kind](g, t)
    outputs, losses = [], {}
    # A per-step head on a masked sequence: its loss skips the padded steps.
    masked = [t for t in g.tensors if t.masked and t.kind == "sequence"]
    if masked and draw(st.booleans()):
        source = draw(st.sampled_from(masked))
        head = g.add({"type": "Dense", "units": 2}, [source], (source.shape[0], 2), masked=True)
        outputs.append(head)
        losses[head.name] = "mse"
    # Every tensor nobody reads feeds the main head, so every input reaches an output.
    loose = [to_vector(g, t) for t in list(g.tensors) if t.name not in g.read and t not in outputs]
    joined = loose[0] if len(loose) == 1 else g.add(
        {"type": "Concatenate"}, loose, (sum(t.shape[0] for t in loose),)
    )
    loss = draw(st.sampled_from(["mse", "categorical_crossentropy", "binary_crossentropy"]))
    activation = {"mse": "linear", "categorical_crossentropy": "softmax",
                  "binary_crossentropy": "sigmoid"}[loss]
    units = draw(st.integers(2, 3))
    main = g.add({"type": "Dense", "units": units, "activation": activation}, [joined], (units,))
    outputs.insert(0, main)
    losses[main.name] = loss
    spec = {
        "dtype": "float64",
        "seed": draw(st.integers(0, 2**16)),
        "layers": g.layers,
        "outputs": [t.name for t in outputs],
        "compile": {"optimizer": "sgd", "loss": losses},
    }
    if len(outputs) > 1:
        spec["compile"]["loss_weights"] = {t.name: draw(st.sampled_from([0.5, 1.0, 2.0]))
                                           for t in outputs}
    return json.dumps(spec, indent=1), {t.name: (losses[t.name], t.shape) for t in outputs}


def batch_for(model: kerspec.Model, heads: dict, rng, n: int = 3):
    xs = []
    for name, shape in model.graph.input_shapes().items():
        x = rng.standard_normal((n, *shape))
        if len(shape) == 2:  # padded steps, for a Masking layer to find (never a whole row)
            x[1:, -1] = 0.0
        xs.append(x)
    ys = []
    for name in model.output_names:
        loss, shape = heads[name]
        if loss == "categorical_crossentropy":
            ys.append(np.eye(shape[-1])[rng.integers(0, shape[-1], (n, *shape[:-1]))])
        elif loss == "binary_crossentropy":
            ys.append(rng.integers(0, 2, (n, *shape)).astype(np.float64))
        else:
            ys.append(rng.standard_normal((n, *shape)))
    weights = None
    if rng.random() < 0.5:
        weights = [rng.uniform(0.5, 2.0, n) for _ in model.output_names]
    return xs, ys, weights


# The same graphs in every CI run (a fuzz failure there is a finding, not a flake);
# KERSPEC_FUZZ=long draws new ones each time.
@settings(parent=FUZZ, derandomize=os.environ.get("KERSPEC_FUZZ") != "long")
@given(random_graphs(), st.integers(0, 2**16))
def test_random_graph_gradients(graph, seed):
    text, heads = graph
    model = kerspec.from_yaml(text)
    rng = np.random.default_rng(seed)
    xs, ys, weights = batch_for(model, heads, rng)
    check_training_gradients(model, xs, ys, weights, rng=rng)


SATURATED_UNDER_A_MASK = """
dtype: float64
seed: 183
layers:
  - {type: Input, shape: [3, 2], name: x}
  - {type: Masking, mask_value: 0.0}
  - {type: Bidirectional, layer: {type: SimpleRNN, units: 3, activation: hard_tanh}, name: bi}
  - {type: Dense, units: 2, name: head}
compile: {optimizer: sgd, loss: mse}
"""


def test_a_saturated_state_under_a_mask():
    """Found by this fuzz: a masked step's state was put back by a blend that rounded the real
    steps' states too (hard_tanh's 1.0 came out 0.9999999999999999), and hard_tanh, which tells
    its flat parts from its output, then passed gradient through saturated units (forward
    direction off by up to 30%)."""
    model = kerspec.from_yaml(SATURATED_UNDER_A_MASK)
    rng = np.random.default_rng(5)
    xs, ys, weights = batch_for(model, {"head": ("mse", (2,))}, rng)
    check_training_gradients(model, xs, ys, weights, rng=rng)
