"""Numeric bounds at their edges: what Keras 3 accepts and uses is accepted (and trains), what it
refuses, or accepts and then fails on (NaN weights, a clip it silently ignores), is refused at its
FILE:LINE:COL. The table of every bound and why it differs from Keras's is in docs/bounds.md."""

import re

import numpy as np
import pytest

import kerspec
from kerspec.errors import Problems
from kerspec.training.data import Dataset

# One layer, the optimizer and one callback are swapped in; «» marks the value a refusal points at.
TEMPLATE = """\
name: bounds
seed: 0
layers:
  - {type: Input, shape: [6, 4], name: x}
  - LAYER
  - {type: Flatten}
  - {type: Dense, units: 2, name: out}
compile:
  optimizer: OPTIMIZER
  loss: mse
data: {train: {source: random, samples: 8}}
fit:
  epochs: 2
  batch_size: 4
  callbacks: [CALLBACK]
"""
LINES = {"LAYER": 5, "OPTIMIZER": 9, "CALLBACK": 15}
DEFAULTS = {
    "LAYER": "{type: Dropout, rate: 0.5}",
    "OPTIMIZER": "sgd",
    "CALLBACK": "{type: EarlyStopping, monitor: loss}",
}


def spec_text(slot: str, text: str) -> str:
    values = {**DEFAULTS, slot: text.replace("«", "").replace("»", "")}
    return re.sub("LAYER|OPTIMIZER|CALLBACK", lambda m: values[m.group()], TEMPLATE)


ACCEPTED = [
    ("OPTIMIZER", "{type: sgd, learning_rate: 0}"),
    ("OPTIMIZER", "{type: adamw, learning_rate: 0.0}"),
    (
        "OPTIMIZER",
        (
            "{type: adam, learning_rate: {type: exponential_decay,"
            " initial_learning_rate: 0, decay_steps: 10, decay_rate: 0}}"
        ),
    ),
    (
        "OPTIMIZER",
        (
            "{type: adam, learning_rate: {type: cosine_decay,"
            " initial_learning_rate: 0, decay_steps: 10}}"
        ),
    ),
    ("OPTIMIZER", "{type: adam, beta_1: 0.999999, beta_2: 1}"),
    ("OPTIMIZER", "{type: nadam, beta_1: 1, beta_2: 0.9999}"),
    ("OPTIMIZER", "{type: adamax, beta_1: 0, beta_2: 1}"),
    ("CALLBACK", "{type: ReduceLROnPlateau, monitor: loss, factor: 0, patience: 0}"),
    ("LAYER", "{type: Dropout, rate: 1}"),
    ("LAYER", "{type: SpatialDropout1D, rate: 1.0}"),
    ("LAYER", "{type: BatchNormalization, epsilon: 0}"),
    ("LAYER", "{type: LayerNormalization, epsilon: 0}"),
]

REFUSED = [
    ("OPTIMIZER", "{type: sgd, learning_rate: «-0.1»}", "greater than or equal to 0"),
    ("OPTIMIZER", "{type: adam, learning_rate: «-0.001»}", "greater than or equal to 0"),
    (
        "OPTIMIZER",
        (
            "{type: adam, learning_rate: {type: exponential_decay,"
            " initial_learning_rate: «-0.1», decay_steps: 10, decay_rate: 0.9}}"
        ),
        "greater than or equal to 0",
    ),
    (
        "OPTIMIZER",
        (
            "{type: adam, learning_rate: {type: exponential_decay,"
            " initial_learning_rate: 0.1, decay_steps: 10, decay_rate: «-0.5»}}"
        ),
        "greater than or equal to 0",
    ),
    ("OPTIMIZER", "{type: adam, beta_1: «1.0»}", "less than 1"),
    ("OPTIMIZER", "{type: adamw, beta_1: «1»}", "less than 1"),
    ("OPTIMIZER", "{type: adamax, beta_1: «1.0»}", "less than 1"),
    ("OPTIMIZER", "{type: nadam, beta_2: «1»}", "less than 1"),
    ("OPTIMIZER", "{type: sgd, momentum: «1.5»}", "less than or equal to 1"),
    ("OPTIMIZER", "{type: sgd, clipnorm: «0»}", "greater than 0"),
    ("OPTIMIZER", "{type: sgd, weight_decay: «-0.1»}", "greater than or equal to 0"),
    ("CALLBACK", "{type: ReduceLROnPlateau, factor: «1.0»}", "less than 1"),
    ("CALLBACK", "{type: ReduceLROnPlateau, factor: «-0.5»}", "greater than or equal to 0"),
    ("LAYER", "{type: Dropout, rate: «1.5»}", "less than or equal to 1"),
    ("LAYER", "{type: Dropout, rate: «-0.1»}", "greater than or equal to 0"),
    ("LAYER", "{type: GaussianDropout, rate: «1.0»}", "less than 1"),
    ("LAYER", "{type: LSTM, units: 3, recurrent_dropout: «1.0»}", "less than 1"),
    ("LAYER", "{type: SimpleRNN, units: 3, dropout: «1»}", "less than 1"),
    ("LAYER", "{type: BatchNormalization, epsilon: «-0.001»}", "greater than or equal to 0"),
    ("LAYER", "{type: BatchNormalization, momentum: «1.5»}", "less than or equal to 1"),
    ("LAYER", "{type: LayerNormalization, epsilon: «-1»}", "greater than or equal to 0"),
]


@pytest.mark.parametrize("slot,text", ACCEPTED, ids=[t for _, t in ACCEPTED])
def test_accepted_values_train_to_finite_weights(tmp_path, slot, text):
    path = tmp_path / "bounds.yaml"
    path.write_text(spec_text(slot, text))
    model = kerspec.load(path)
    history = model.fit()
    assert np.all(np.isfinite(history.history["loss"]))
    for owner, weights in model.params.items():
        for name, w in weights.items():
            assert np.all(np.isfinite(w)), (owner, name)


@pytest.mark.parametrize("slot,text,message", REFUSED, ids=[t for _, t, _ in REFUSED])
def test_refused_values_are_reported_at_their_place(tmp_path, slot, text, message):
    path = tmp_path / "bounds.yaml"
    path.write_text(spec_text(slot, text))
    column = TEMPLATE.splitlines()[LINES[slot] - 1].index(slot) + text.index("«") + 1
    value = text[text.index("«") + 1 : text.index("»")]
    with pytest.raises(Problems) as caught:
        kerspec.load(path)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(f"{path}:{LINES[slot]}:{column}: "), problem
    assert f"should be {message} (received {value})" in problem, problem


KERAS_MODELS = {
    "Dropout": "{type: Dropout, rate: 1}",
    "SpatialDropout1D": "{type: SpatialDropout1D, rate: 1}",
    "BatchNormalization": "{type: BatchNormalization, epsilon: 0}",
    "LayerNormalization": "{type: LayerNormalization, epsilon: 0}",
}


@pytest.mark.parametrize("name", list(KERAS_MODELS))
def test_newly_accepted_layer_values_train_as_keras(name, rng):
    keras = pytest.importorskip("keras")
    layers = keras.layers
    ours = kerspec.from_yaml(spec_text("LAYER", KERAS_MODELS[name]))
    options = {
        "Dropout": lambda: layers.Dropout(1.0),
        "SpatialDropout1D": lambda: layers.SpatialDropout1D(1.0),
        "BatchNormalization": lambda: layers.BatchNormalization(epsilon=0.0),
        "LayerNormalization": lambda: layers.LayerNormalization(epsilon=0.0),
    }
    x = keras.Input((6, 4))
    middle = options[name]()
    y = layers.Dense(2, name="out")(layers.Flatten()(middle(x)))
    theirs = keras.Model(x, y)
    (owner,) = [o for o in ours.params if o != "out"] or [None]
    for layer, source in ((middle, owner), (theirs.layers[-1], "out")):
        for variable in layer.weights:
            variable.assign(ours.params[source][variable.path.split("/")[-1]])
    theirs.compile(keras.optimizers.SGD(0.01), loss="mse")  # the spec's sgd
    xs = rng.standard_normal((8, 6, 4)).astype(np.float32)
    ys = rng.standard_normal((8, 2)).astype(np.float32)
    for _ in range(2):
        theirs.train_on_batch(xs, ys)
        ours.fit(Dataset({"x": xs}, {"out": ys}, "test"), epochs=1, batch_size=8)
    for layer, source in ((middle, owner), (theirs.layers[-1], "out")):
        for variable in layer.weights:
            expected = keras.ops.convert_to_numpy(variable)
            got = ours.params[source][variable.path.split("/")[-1]]
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=variable.path)
