"""Learning-rate schedules: Keras's values at many steps, as an optimizer's learning_rate (Keras
evaluates it at the iteration count) and as LearningRateScheduler's schedule (at the epoch)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

import kerspec
from kerspec.training.optimizers import OPTIMIZERS
from kerspec.training.schedules import SCHEDULES

CASES = [
    (
        {
            "type": "exponential_decay",
            "initial_learning_rate": 0.1,
            "decay_steps": 3,
            "decay_rate": 0.5,
        },
        "ExponentialDecay",
    ),
    (
        {
            "type": "exponential_decay",
            "initial_learning_rate": 0.1,
            "decay_steps": 3,
            "decay_rate": 0.5,
            "staircase": True,
        },
        "ExponentialDecay",
    ),
    ({"type": "cosine_decay", "initial_learning_rate": 0.2, "decay_steps": 7}, "CosineDecay"),
    (
        {"type": "cosine_decay", "initial_learning_rate": 0.2, "decay_steps": 7, "alpha": 0.1},
        "CosineDecay",
    ),
    (
        {
            "type": "cosine_decay",
            "initial_learning_rate": 0.0,
            "decay_steps": 7,
            "warmup_target": 0.3,
            "warmup_steps": 4,
        },
        "CosineDecay",
    ),
    (
        {"type": "piecewise_constant", "boundaries": [2, 5], "values": [0.3, 0.2, 0.05]},
        "PiecewiseConstantDecay",
    ),
]
STEPS = [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 30]


def keras_schedule(config, name):
    keras = pytest.importorskip("keras")
    arguments = {k: v for k, v in config.items() if k != "type"}
    return getattr(keras.optimizers.schedules, name)(**arguments), keras


@pytest.mark.parametrize(("config", "name"), CASES)
def test_values_match_keras(config, name):
    theirs, keras = keras_schedule(config, name)
    ours = SCHEDULES.create(config)
    for step in STEPS:
        expected = float(keras.ops.convert_to_numpy(theirs(step)))
        assert float(ours(step)) == pytest.approx(expected, rel=1e-6, abs=1e-9), step


@pytest.mark.parametrize(("config", "name"), CASES)
def test_optimizer_learning_rate_schedule_matches_keras(config, name):
    theirs, keras = keras_schedule(config, name)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 2)).astype(np.float32)
    grads = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(8)]
    optimizer = OPTIMIZERS.create({"type": "adam", "learning_rate": config})
    weights = [weight.copy()]
    state = optimizer.init(weights)
    variable = keras.Variable(weight.copy())
    reference = keras.optimizers.Adam(learning_rate=theirs)
    for grad in grads:
        optimizer.apply(state, weights, [grad.copy()])
        reference.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
    np.testing.assert_allclose(
        weights[0], keras.ops.convert_to_numpy(variable), rtol=1e-5, atol=1e-5
    )
    # The state holds the rate of the last step, evaluated at the iteration count before it.
    assert float(state["learning_rate"]) == pytest.approx(
        float(SCHEDULES.create(config)(7)), rel=1e-6
    )


def test_schedule_errors_are_keras_errors():
    with pytest.raises(ValidationError, match="1 less than the length of values"):
        SCHEDULES.create({"type": "piecewise_constant", "boundaries": [1, 2], "values": [0.1, 0.2]})
    with pytest.raises(ValidationError, match="greater than 0"):
        SCHEDULES.create({"type": "cosine_decay", "initial_learning_rate": 0.1, "decay_steps": 0})
    with pytest.raises(ValidationError, match="did you mean 'exponential_decay'"):
        SCHEDULES.create({"type": "exponential_decy", "initial_learning_rate": 0.1})
    assert SCHEDULES.canonical("PiecewiseConstantDecay") == "piecewise_constant"


SPEC = """\
name: scheduled
seed: 1
layers:
  - {{type: Input, shape: [3], name: x}}
  - {{type: Dense, units: 1, name: out}}
compile: {{optimizer: {optimizer}, loss: mse}}
data: {{train: {{source: random, samples: 40}}}}
fit:
  epochs: 4
  batch_size: 10
  callbacks: {callbacks}
"""


def test_learning_rate_scheduler_sets_the_rate_per_epoch():
    schedule = (
        "{type: exponential_decay, initial_learning_rate: 0.1, decay_steps: 1, decay_rate: 0.5}"
    )
    model = kerspec.from_yaml(
        SPEC.format(
            optimizer="sgd", callbacks=f"[{{type: LearningRateScheduler, schedule: {schedule}}}]"
        )
    )
    history = model.fit()
    assert history.history["learning_rate"] == [float(np.float32(0.1 * 0.5**e)) for e in range(4)]


def test_optimizer_schedule_advances_per_step():
    optimizer = "{type: sgd, learning_rate: {type: piecewise_constant, boundaries: [5], values: [0.1, 0.01]}}"
    model = kerspec.from_yaml(SPEC.format(optimizer=optimizer, callbacks="[]"))
    model.fit()
    state = model.trainer.opt_state
    assert int(state["iterations"]) == 16
    assert float(state["learning_rate"]) == pytest.approx(0.01)


def test_a_callback_setting_the_rate_is_refused_with_a_schedule(tmp_path):
    optimizer = "{type: sgd, learning_rate: {type: cosine_decay, initial_learning_rate: 0.1, decay_steps: 10}}"
    spec = tmp_path / "s.yaml"
    spec.write_text(
        SPEC.format(
            optimizer=optimizer, callbacks="\n    - {type: ReduceLROnPlateau, monitor: loss}"
        )
    )
    with pytest.raises(kerspec.KerspecError) as refused:
        kerspec.load(spec).fit()
    assert str(refused.value) == (
        f"{spec}:12:7: ReduceLROnPlateau sets the learning rate, but compile.optimizer.learning_rate"
        " is a schedule; give the optimizer a number, or drop the callback"
    )
