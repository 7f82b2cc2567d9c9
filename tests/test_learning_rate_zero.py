"""`learning_rate: 0`, which Keras accepts: training leaves every trainable weight exactly as it
was (weight decay too is scaled by the rate) while BatchNormalization's moving statistics move.
Checked through the spec file and the command line as a user runs them, and against Keras 3."""

import numpy as np
import pytest
from typer.testing import CliRunner

import kerspec
from kerspec.cli import app

SPEC = """\
name: frozen
seed: 3
layers:
  - {{type: Input, shape: [5], name: x}}
  - {{type: Dense, units: 6, name: hidden}}
  - {{type: BatchNormalization, name: bn}}
  - {{type: Activation, activation: relu}}
  - {{type: Dense, units: 3, activation: softmax, name: out}}
compile: {{optimizer: {optimizer}, loss: categorical_crossentropy}}
data: {{train: {{source: random, samples: 48}}}}
fit: {{epochs: 2, batch_size: 16, shuffle: false, callbacks: {callbacks}}}
"""

# Every optimizer, each with the options that add to or rescale the step: momentum, weight
# decay, clipping, amsgrad, centering.
OPTIMIZERS = {
    "sgd": "{type: sgd, learning_rate: 0, momentum: 0.9, nesterov: true, weight_decay: 0.1}",
    "rmsprop": "{type: rmsprop, learning_rate: 0, momentum: 0.5, centered: true}",
    "adam": "{type: adam, learning_rate: 0, amsgrad: true, clipnorm: 0.5}",
    "adamw": "{type: adamw, learning_rate: 0.0, weight_decay: 0.5}",
    "adagrad": "{type: adagrad, learning_rate: 0}",
    "adadelta": "{type: adadelta, learning_rate: 0, global_clipnorm: 1.0}",
    "adamax": "{type: adamax, learning_rate: 0, clipvalue: 0.1}",
    "nadam": "{type: nadam, learning_rate: 0}",
}

KERAS_OPTIONS = {
    "sgd": ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    "rmsprop": ("RMSprop", {"momentum": 0.5, "centered": True}),
    "adam": ("Adam", {"amsgrad": True, "clipnorm": 0.5}),
    "adamw": ("AdamW", {"weight_decay": 0.5}),
    "adagrad": ("Adagrad", {}),
    "adadelta": ("Adadelta", {"global_clipnorm": 1.0}),
    "adamax": ("Adamax", {"clipvalue": 0.1}),
    "nadam": ("Nadam", {}),
}

TRAINABLE = {("hidden", "kernel"), ("hidden", "bias"), ("bn", "gamma"), ("bn", "beta")}
TRAINABLE |= {("out", "kernel"), ("out", "bias")}
MOVING = {("bn", "moving_mean"), ("bn", "moving_variance")}


def write_spec(tmp_path, optimizer: str, callbacks: str = "[]"):
    path = tmp_path / "frozen.yaml"
    path.write_text(SPEC.format(optimizer=optimizer, callbacks=callbacks))
    return path


def copied(params):
    return {owner: {name: w.copy() for name, w in ws.items()} for owner, ws in params.items()}


def assert_frozen(before, after):
    assert {(o, n) for o, ws in after.items() for n in ws} == TRAINABLE | MOVING
    for owner, name in TRAINABLE:
        # Bit for bit: no rounding of w - 0 * step and no decay.
        assert after[owner][name].tobytes() == before[owner][name].tobytes(), (owner, name)
    for owner, name in MOVING:
        assert not np.array_equal(after[owner][name], before[owner][name]), (owner, name)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rate_zero_freezes_the_trainable_weights_of_every_optimizer(tmp_path, name):
    model = kerspec.load(write_spec(tmp_path, OPTIMIZERS[name]))
    before = copied(model.params)
    history = model.fit()
    assert history.history["loss"] and np.all(np.isfinite(history.history["loss"]))
    assert_frozen(before, model.params)


@pytest.mark.parametrize(
    "callbacks",
    [
        # Nothing to reduce: the rate stays 0 (Keras reduces only a rate above min_lr).
        "[{type: ReduceLROnPlateau, monitor: loss, patience: 0, min_delta: 100}]",
        (
            "[{type: LearningRateScheduler, schedule: {type: piecewise_constant,"
            " boundaries: [5], values: [0, 0.1]}}]"
        ),
        (
            "[{type: LearningRateScheduler, schedule: {type: exponential_decay,"
            " initial_learning_rate: 0, decay_steps: 1, decay_rate: 0.5}}]"
        ),
    ],
    ids=["reduce_lr_on_plateau", "piecewise_constant", "exponential_decay"],
)
def test_rate_zero_through_the_learning_rate_callbacks(tmp_path, callbacks):
    model = kerspec.load(write_spec(tmp_path, "{type: sgd, learning_rate: 0}", callbacks))
    before = copied(model.params)
    history = model.fit()
    assert history.history["learning_rate"] == [0.0, 0.0]
    assert_frozen(before, model.params)


def test_a_schedule_that_starts_at_zero(tmp_path):
    schedule = "{type: cosine_decay, initial_learning_rate: 0, decay_steps: 100}"
    model = kerspec.load(write_spec(tmp_path, f"{{type: adam, learning_rate: {schedule}}}"))
    before = copied(model.params)
    model.fit()
    assert_frozen(before, model.params)


def test_train_command_with_rate_zero_writes_the_initial_weights(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, "{type: adamw, learning_rate: 0}")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", str(spec), "--out", "run"])
    assert result.exit_code == 0, result.output
    initial = kerspec.load(spec)  # the same seed draws the same initial weights
    before = copied(initial.params)
    initial.load_weights(tmp_path / "run" / "weights.npz")
    assert_frozen(before, initial.params)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rate_zero_matches_keras(tmp_path, name):
    keras = pytest.importorskip("keras")
    layers = keras.layers
    model = kerspec.load(write_spec(tmp_path, OPTIMIZERS[name]))
    x = keras.Input((5,))
    h = layers.BatchNormalization(name="bn")(layers.Dense(6, name="hidden")(x))
    y = layers.Dense(3, activation="softmax", name="out")(layers.Activation("relu")(h))
    theirs = keras.Model(x, y)
    for layer in theirs.layers:
        for variable in layer.weights:
            variable.assign(model.params[layer.name][variable.path.split("/")[-1]])
    keras_name, options = KERAS_OPTIONS[name]
    theirs.compile(
        getattr(keras.optimizers, keras_name)(learning_rate=0.0, **options),
        loss="categorical_crossentropy",
    )
    train = model.dataset("train")
    theirs.fit(train.x["x"], train.y["out"], batch_size=16, epochs=2, shuffle=False, verbose=0)
    model.fit(train)
    for layer in theirs.layers:
        for variable in layer.weights:
            key = variable.path.split("/")[-1]
            expected = keras.ops.convert_to_numpy(variable)
            if (layer.name, key) in MOVING:
                np.testing.assert_allclose(model.params[layer.name][key], expected, rtol=1e-5)
            else:
                assert np.array_equal(model.params[layer.name][key], expected), (layer.name, key)
