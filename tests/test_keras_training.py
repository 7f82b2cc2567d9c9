"""Whole models train as Keras 3 trains them: every gallery and shipped spec, hand-made graphs
and seeded random graphs, through kerspec's real training path (`Model.fit`, shuffle off) and
Keras's `train_on_batch` on the same batches from the same initial weights; every weight
(BatchNormalization's moving statistics too) is compared after each of three optimizer steps.

Dropout is set to rate 0 (the two libraries draw different masks). The Keras twin of each model
is wired from the kerspec graph, each layer made from the config the Keras exporter writes
(tests/keras_build.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kerspec
from kerspec.spec import parse_spec
from kerspec.training.callbacks import Callback
from kerspec.training.data import Dataset

pytest.importorskip("keras")

from tests.keras_build import (
    Unsupported,
    copy_weights,
    keras_losses,
    keras_optimizer,
    keras_twin,
    keras_weights,
    our_weights,
)

ROOT = Path(__file__).resolve().parent.parent
STEPS, BATCH = 3, 8
N = STEPS * BATCH  # samples: exactly STEPS batches
RTOL, ATOL = 1e-4, 1e-5


def without_dropout(load, *args) -> kerspec.Model:
    """The model `load(*args, overrides)` builds, reloaded with every Dropout at rate 0."""
    model = load(*args, [])
    rates = [f"layers.{n.entry}.rate=0" for n in model.graph.nodes if n.type == "Dropout"]
    return load(*args, rates) if rates else model


def from_file(path: Path, overrides: list[str]) -> kerspec.Model:
    # All the data trains: a validation split would take the last samples out of the batches.
    return kerspec.load(path, ["fit.shuffle=false", "fit.validation_split=0", *overrides])


def from_text(text: str, overrides: list[str]) -> kerspec.Model:
    return kerspec.Model(parse_spec(text, "<test spec>", ["fit.shuffle=false", *overrides]))


def targets(model: kerspec.Model, rng) -> dict[str, np.ndarray]:
    """N random targets of the kind each output's loss wants."""
    ys = {}
    for head, ref in zip(model.trainer.heads, model.graph.outputs):
        shape = tuple(model.graph.output_shape(ref))
        kind = head.loss.type
        if kind == "sparse_categorical_crossentropy":
            ys[head.name] = rng.integers(0, shape[-1], (N, *shape[:-1])).astype(np.float32)
        elif kind == "categorical_crossentropy":
            ys[head.name] = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], (N, *shape[:-1]))]
        elif kind == "binary_crossentropy":
            ys[head.name] = rng.integers(0, 2, (N, *shape)).astype(np.float32)
        else:  # positive and away from 0, as percentage, logarithmic and Poisson losses want
            ys[head.name] = rng.uniform(0.2, 2.0, (N, *shape)).astype(np.float32)
    return ys


def inputs(model: kerspec.Model, rng, *, padded: bool = False) -> dict[str, np.ndarray]:
    """N random inputs; `padded` zeroes a random tail of each sequence (masked by Masking)."""
    xs = {}
    for name, shape in model.graph.input_shapes().items():
        x = rng.random((N, *shape)).astype(np.float32) + 0.1
        if padded:
            for row, length in zip(x, rng.integers(1, shape[0] + 1, N)):
                row[length:] = 0.0
        xs[name] = x
    return xs


class KerasStepAlongside(Callback):
    """After each kerspec training batch: the same batch through Keras's train_on_batch, every
    weight compared, then kerspec's weights set to Keras's (in place), so that each step starts
    both from the same weights. Without that, float32 noise compounds: Adam turns a gradient of
    1e-8 into a full step, a weight 1e-7 apart flips a ReLU or a max-pooling choice, and the
    runs part for reasons that are neither library's fault. The optimizer state is not synced."""

    def __init__(self, ours: kerspec.Model, theirs, batches: list[dict]):
        self.ours, self.theirs, self.batches = ours, theirs, batches
        self.before = keras_weights(theirs)
        self.problems: list[str] = []
        self.steps = 0

    def on_train_batch_end(self, batch, logs):
        self.theirs.train_on_batch(**self.batches[batch])
        expected, got = keras_weights(self.theirs), our_weights(self.ours)
        assert set(got) == set(expected)
        for key in sorted(got):
            error = np.abs(got[key] - expected[key])
            if np.any(error > ATOL + RTOL * np.abs(expected[key])):
                update = np.abs(expected[key] - self.before[key]).max()
                self.problems.append(f"step {batch + 1}: {key}: max error {error.max():.3g}"
                                     f" (Keras moved it by up to {update:.3g})")
        for key, value in expected.items():
            owner, name = key.split("/", 1)
            self.ours.params[owner][name][...] = value
        self.before = expected
        self.steps += 1


def train_both(ours: kerspec.Model, rng, *, xs=None, padded=False, sample_weight=None,
               class_weight=None) -> None:
    """STEPS batches of BATCH samples (random unless `xs` is given) through `ours.fit` and,
    alongside, Keras's train_on_batch; every weight compared after each step, all mismatches
    reported together."""
    assert ours.spec.fit.shuffle is False
    xs = inputs(ours, rng, padded=padded) if xs is None else xs
    ys = targets(ours, rng)
    try:
        theirs = keras_twin(ours)
    except Unsupported as err:
        pytest.skip(f"no Keras twin: {err}")
    copy_weights(ours, theirs)
    loss, loss_weights = keras_losses(ours)
    theirs.compile(optimizer=keras_optimizer(ours), loss=loss, loss_weights=loss_weights)
    multi_out = len(ys) > 1
    batches = []
    for step in range(STEPS):
        part = slice(step * BATCH, (step + 1) * BATCH)
        x = [xs[name][part] for name in ours.input_names]
        y = {k: v[part] for k, v in ys.items()}
        weights = None
        if sample_weight is not None:
            weights = {k: v[part] for k, v in sample_weight.items()}
            weights = weights if multi_out else next(iter(weights.values()))
        batches.append({"x": x[0] if len(x) == 1 else x, "y": y if multi_out else next(iter(y.values())),
                        "sample_weight": weights, "class_weight": class_weight})
    alongside = KerasStepAlongside(ours, theirs, batches)
    ours.fit(Dataset(xs, ys, "test data", sample_weight), epochs=1, batch_size=BATCH, callbacks=[alongside])
    assert alongside.steps == STEPS
    assert not alongside.problems, "\n".join(alongside.problems)


# -- every shipped spec ---------------------------------------------------------------------------

SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "gallery").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[str(p.relative_to(ROOT / "specs")) for p in SPECS])
def test_shipped_spec_trains_as_keras(path, rng):
    ours = without_dropout(from_file, path)
    padded = any(node.type == "Masking" for node in ours.graph.nodes)
    train_both(ours, rng, padded=padded)


# -- hand-made graphs -----------------------------------------------------------------------------

def two_branches(merge: str, *, one_input: bool = False, activation: str = "tanh") -> str:
    second = "a" if one_input else "b"
    return f"""
seed: 3
layers:
  - {{type: Input, shape: [4], name: a}}
  {"" if one_input else "- {type: Input, shape: [4], name: b}"}
  - {{type: Dense, units: 5, activation: {activation}, from: a, name: left}}
  - {{type: Dense, units: 5, activation: {activation}, from: {second}, name: right}}
  - {{type: {merge}, from: [left, right], name: join}}
  - {{type: Dense, units: 2, name: out}}
compile: {{optimizer: {{type: sgd, learning_rate: 0.1}}, loss: mse}}
"""


@pytest.mark.parametrize("merge", ["Add", "Average"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("one_input", [False, True], ids=["two_inputs", "one_input"])
def test_two_branch_model_of_issue_13_trains_as_keras(merge, activation, one_input, rng):
    ours = from_text(two_branches(merge, one_input=one_input, activation=activation), [])
    train_both(ours, rng)


GRAPH = """
seed: 1
layers:
  - {type: Input, shape: [6], name: a}
  - {type: Input, shape: [6], name: b}
  - {type: Dense, units: 5, activation: elu, from: a, name: enc,
     kernel_regularizer: {type: l2, l2: 0.01}}
  - {name: enc_b, share: enc, from: b}
  - {type: Add, from: [enc, enc_b], name: sum}
  - {type: Multiply, from: [enc, enc_b], name: product}
  - {type: Concatenate, from: [sum, product, enc], name: cat}
  - {type: Dense, units: 5, activation: sigmoid, name: mix}
  - {type: Maximum, from: [mix, enc_b], name: top}
  - {type: Dense, units: 3, activation: softmax, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.1}, loss: categorical_crossentropy}
"""

OPTIMIZERS = {
    "sgd": "{type: sgd, learning_rate: 0.1}",
    "sgd_momentum": "{type: sgd, learning_rate: 0.1, momentum: 0.9}",
    "sgd_nesterov": "{type: sgd, learning_rate: 0.1, momentum: 0.9, nesterov: true}",
    "rmsprop": "{type: rmsprop, learning_rate: 0.01}",
    "rmsprop_centered_momentum": "{type: rmsprop, learning_rate: 0.01, centered: true, momentum: 0.5}",
    "adam": "{type: adam, learning_rate: 0.01}",
    "adam_amsgrad": "{type: adam, learning_rate: 0.01, amsgrad: true}",
    "adamw": "{type: adamw, learning_rate: 0.01, weight_decay: 0.1}",
    "adagrad": "{type: adagrad, learning_rate: 0.1}",
    "adadelta": "{type: adadelta, learning_rate: 1.0}",
    "adamax": "{type: adamax, learning_rate: 0.01}",
    "nadam": "{type: nadam, learning_rate: 0.01}",
    "sgd_clipnorm": "{type: sgd, learning_rate: 0.5, clipnorm: 0.1}",
    "sgd_clipvalue": "{type: sgd, learning_rate: 0.5, clipvalue: 0.01}",
    "adam_global_clipnorm": "{type: adam, learning_rate: 0.01, global_clipnorm: 0.1}",
    "sgd_schedule": "{type: sgd, learning_rate: {type: exponential_decay, initial_learning_rate: 0.2,"
                    " decay_steps: 1, decay_rate: 0.5}}",
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_trains_a_graph_as_keras(name, rng):
    ours = from_text(GRAPH, [f"compile.optimizer={OPTIMIZERS[name]}"])
    train_both(ours, rng)


# SGD: the biases before a normalization have a gradient of exactly zero, float noise of 1e-9
# in both libraries, which Adam would turn into full steps of opposite signs.
BATCH_NORM = """
seed: 2
layers:
  - {type: Input, shape: [6, 6, 2], name: image}
  - {type: Conv2D, filters: 3, kernel_size: 3, name: conv}
  - {type: BatchNormalization, momentum: 0.8, name: bn_conv}
  - {type: Activation, activation: relu}
  - {type: Flatten}
  - {type: Dense, units: 5, name: hidden}
  - {type: BatchNormalization, center: false, epsilon: 0.01, name: bn_dense}
  - {type: Dense, units: 3, activation: softmax, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.1, momentum: 0.5}, loss: categorical_crossentropy}
"""


def test_batch_normalization_in_training_mode_trains_as_keras(rng):
    ours = from_text(BATCH_NORM, [])
    train_both(ours, rng)


TWO_HEADS = """
seed: 4
layers:
  - {type: Input, shape: [5], name: x}
  - {type: Dense, units: 6, activation: relu, name: trunk}
  - {type: BatchNormalization, name: norm}
  - {type: Dense, units: 3, activation: softmax, from: norm, name: kind}
  - {type: Dense, units: 2, from: trunk, name: size}
outputs: [kind, size]
compile:
  optimizer: {type: rmsprop, learning_rate: 0.01}
  loss: {kind: categorical_crossentropy, size: huber}
  loss_weights: {kind: 0.7, size: 2.0}
"""


def test_loss_weights_on_two_outputs_train_as_keras(rng):
    ours = from_text(TWO_HEADS, [])
    train_both(ours, rng)


def test_loss_weights_as_a_list_train_as_keras(rng):
    ours = from_text(TWO_HEADS, ["compile.loss_weights=[0.2, 3.0]"])
    train_both(ours, rng)


def test_sample_weights_per_output_train_as_keras(rng):
    ours = from_text(TWO_HEADS, [])
    weights = {"kind": rng.random(N).astype(np.float32) * 2, "size": rng.random(N).astype(np.float32)}
    train_both(ours, rng, sample_weight=weights)


CLASSIFIER = """
seed: 5
layers:
  - {type: Input, shape: [4], name: x}
  - {type: Dense, units: 6, activation: tanh, kernel_constraint: {type: max_norm, max_value: 0.6},
     bias_regularizer: {type: l1, l1: 0.01}, activity_regularizer: {type: l2, l2: 0.05}}
  - {type: Dense, units: 3, activation: softmax, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.2}, loss: sparse_categorical_crossentropy}
"""


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_class_weight_trains_as_keras(loss, rng):
    ours = from_text(CLASSIFIER, [f"compile.loss={loss}", "fit.class_weight={0: 0.5, 2: 4.0}"])
    train_both(ours, rng, class_weight={0: 0.5, 1: 1.0, 2: 4.0})


def test_sample_weight_on_one_output_trains_as_keras(rng):
    ours = from_text(CLASSIFIER, [])
    weights = {"out": rng.random(N).astype(np.float32) * 3}
    train_both(ours, rng, sample_weight=weights)


MASKED = """
seed: 6
layers:
  - {type: Input, shape: [7, 3], name: frames}
  - {type: Masking, mask_value: 0.0}
  - {type: TimeDistributed, layer: {type: Dense, units: 4, activation: tanh}, name: per_frame}
  - {type: Bidirectional, layer: {type: GRU, units: 3, return_sequences: true}, name: both_ways}
  - {type: SimpleRNN, units: 4, name: summary}
  - {type: Dense, units: 2, activation: softmax, name: out}
compile: {optimizer: {type: adam, learning_rate: 0.01}, loss: categorical_crossentropy}
"""

EMBEDDED = """
seed: 7
layers:
  - {type: Input, shape: [6], name: tokens}
  - {type: Embedding, input_dim: 9, output_dim: 4, mask_zero: true, name: embed}
  - {type: LSTM, units: 3, return_sequences: true, name: lstm}
  - {type: GlobalAveragePooling1D, name: pool}
  - {type: Dense, units: 1, activation: sigmoid, name: out}
compile: {optimizer: {type: adam, learning_rate: 0.01}, loss: binary_crossentropy}
"""


def test_masked_sequences_train_as_keras(rng):
    ours = from_text(MASKED, [])
    train_both(ours, rng, padded=True)


def test_embedding_mask_trains_as_keras(rng):
    ours = from_text(EMBEDDED, [])
    tokens = rng.integers(1, 9, (N, 6)).astype(np.float32)
    for row, length in zip(tokens, rng.integers(1, 7, N)):
        row[length:] = 0
    train_both(ours, rng, xs={"tokens": tokens})


CONV_SEQUENCE = """
seed: 8
layers:
  - {type: Input, shape: [10, 3], name: signal}
  - {type: Conv1D, filters: 4, kernel_size: 3, padding: same, activation: relu, name: conv}
  - {type: LayerNormalization, name: norm}
  - {type: MaxPooling1D, pool_size: 2, name: pool}
  - {type: Conv1D, filters: 3, kernel_size: 2, strides: 2, activation: tanh, name: conv2}
  - {type: GlobalMaxPooling1D, name: gmax, from: conv2}
  - {type: GlobalAveragePooling1D, name: gavg, from: conv2}
  - {type: Subtract, from: [gmax, gavg], name: spread}
  - {type: Lambda, expression: "tanh(x) * 2", name: squash}
  - {type: Dense, units: 2, name: out}
compile: {optimizer: {type: nadam, learning_rate: 0.01}, loss: mse}
"""


def test_convolutions_over_sequences_train_as_keras(rng):
    ours = from_text(CONV_SEQUENCE, [])
    train_both(ours, rng)


# -- seeded random graphs -------------------------------------------------------------------------

MERGES = ["Add", "Subtract", "Average", "Multiply", "Maximum", "Minimum", "Concatenate", "Dot"]
ACTIVATIONS = ["relu", "tanh", "sigmoid", "elu", "selu", "softplus", "gelu", "swish", "linear"]


def random_graph(seed: int) -> str:
    """Vectors only: inputs, Dense layers (some shared), every merge, BatchNormalization,
    activations; every unused tensor is concatenated into the two heads."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    width: dict[str, int] = {}
    denses: dict[str, int] = {}  # Dense name -> its input width, for sharing
    used: set[str] = set()

    def add(name: str, text: str, size: int) -> None:
        lines.append(f"  - {{{text}, name: {name}}}")
        width[name] = size

    for i in range(int(rng.integers(1, 3))):
        add(f"in{i}", "type: Input, shape: [4]", 4)
    for i in range(int(rng.integers(5, 10))):
        name, pick = f"n{i}", list(width)
        inner = [n for n in pick if not n.startswith("in")]
        choice = rng.choice(["dense", "dense", "merge", "merge", "share", "norm", "activation"])
        source = str(rng.choice(inner if inner and rng.random() < 0.7 else pick))
        if choice == "share" and any(w == width[source] for w in denses.values()):
            owner = next(o for o, w in denses.items() if w == width[source])
            add(name, f"share: {owner}, from: {source}", width[owner])
        elif choice == "merge" and sum(w == width[source] for w in width.values()) > 1:
            other = str(rng.choice([n for n in pick if width[n] == width[source] and n != source]))
            merge = str(rng.choice(MERGES))
            size = {"Concatenate": 2 * width[source], "Dot": 1}.get(merge, width[source])
            extra = ", axes: 1" if merge == "Dot" else ""
            add(name, f"type: {merge}, from: [{source}, {other}]{extra}", size)
            used.add(other)
        elif choice == "norm":
            add(name, f"type: BatchNormalization, momentum: 0.5, from: {source}", width[source])
        elif choice == "activation":
            add(name, f"type: Activation, activation: {rng.choice(ACTIVATIONS)}, from: {source}", width[source])
        else:
            units = int(rng.choice([3, 4]))
            activation = str(rng.choice(ACTIVATIONS))
            add(name, f"type: Dense, units: {units}, activation: {activation}, from: {source}", units)
            denses[name] = width[source]
        used.add(source)
    inputs_ = [n for n in width if n.startswith("in")]
    leaves = [n for n in width if n not in used]  # never empty: nothing reads the last node
    head_from = leaves[0]
    if len(leaves) > 1:
        add("leaves", f"type: Concatenate, from: [{', '.join(leaves)}]", 0)
        head_from = "leaves"
    add("out_a", f"type: Dense, units: 3, activation: softmax, from: {head_from}", 3)
    add("out_b", f"type: Dense, units: 2, from: {head_from}", 2)
    optimizer = str(rng.choice(list(OPTIMIZERS.values())))
    return "\n".join([
        f"seed: {seed}",
        "layers:",
        *lines,
        f"inputs: [{', '.join(inputs_)}]",
        "outputs: [out_a, out_b]",
        "compile:",
        f"  optimizer: {optimizer}",
        "  loss: {out_a: categorical_crossentropy, out_b: mse}",
        f"  loss_weights: {{out_a: 1.0, out_b: {float(rng.choice([0.3, 1.0, 2.5]))}}}",
    ])


@pytest.mark.parametrize("seed", range(16))
def test_random_graph_trains_as_keras(seed, rng):
    text = random_graph(seed)
    ours = from_text(text, [])
    try:
        train_both(ours, rng)
    except AssertionError as err:
        raise AssertionError(f"{err}\nthe graph:\n{text}") from None


# -- every loss -----------------------------------------------------------------------------------

LOSSES = {  # loss -> the output activation whose values it expects
    "mean_squared_error": "linear",
    "mean_absolute_error": "linear",
    "mean_absolute_percentage_error": "linear",
    "mean_squared_logarithmic_error": "softplus",
    "cosine_similarity": "linear",
    "huber": "linear",
    "log_cosh": "linear",
    "hinge": "tanh",
    "squared_hinge": "tanh",
    "categorical_hinge": "linear",
    "kl_divergence": "softmax",
    "poisson": "softplus",
    "{type: binary_crossentropy, label_smoothing: 0.1}": "sigmoid",
    "{type: binary_crossentropy, from_logits: true}": "linear",
    "{type: categorical_crossentropy, label_smoothing: 0.2}": "softmax",
    "{type: categorical_crossentropy, from_logits: true}": "linear",
    "{type: sparse_categorical_crossentropy, from_logits: true}": "linear",
}


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_trains_as_keras(loss, rng):
    sets = [f"compile.loss={loss}", f"layers.out.activation={LOSSES[loss]}"]
    if loss == "mean_absolute_percentage_error":  # a loss of ~100: steps of 0.3 at this rate
        sets.append("compile.optimizer.learning_rate=0.002")
    train_both(from_text(CLASSIFIER, sets), rng)
