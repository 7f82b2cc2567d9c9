import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.training.optimizers import OPTIMIZERS

CLIPS = [{}, {"clipnorm": 0.5}, {"clipvalue": 0.05}, {"global_clipnorm": 0.3}]
OPTIONS = {
    "sgd": [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {"weight_decay": 0.1}],
    "rmsprop": [{}, {"momentum": 0.5}, {"centered": True}, {"centered": True, "momentum": 0.3}],
    "adam": [{}, {"amsgrad": True}, {"weight_decay": 0.1}],
    "adamw": [{}, {"amsgrad": True, "weight_decay": 0.05}],
    "adagrad": [{}, {"initial_accumulator_value": 0.5}],
    "adadelta": [{"learning_rate": 1.0}, {"rho": 0.8, "epsilon": 1e-6}],
    "adamax": [{}, {"weight_decay": 0.1}],
    "nadam": [{}, {"beta_1": 0.8}],
}
KERAS_NAMES = {
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "adadelta": "Adadelta",
    "adamax": "Adamax",
    "nadam": "Nadam",
}
CASES = [
    (name, {**option, **clip})
    for name, options in OPTIONS.items()
    for option in options
    for clip in CLIPS
]


def test_every_optimizer_has_a_case():
    assert set(OPTIONS) == set(OPTIMIZERS.names())


def _problem():
    rng = np.random.default_rng(3)
    weights = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    grads = [
        [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
        for _ in range(3)
    ]
    return weights, grads


def _kerspec_steps(config):
    optimizer = OPTIMIZERS.create(config)
    weights, grads = _problem()
    state = optimizer.init(weights)
    for step in grads:
        optimizer.apply(state, weights, [g.copy() for g in step])
    return weights, state


@pytest.mark.parametrize(("name", "options"), CASES)
def test_matches_keras(name, options):
    keras = pytest.importorskip("keras")
    weights, state = _kerspec_steps({"type": name, **options})
    expected_weights, grads = _problem()
    optimizer = getattr(keras.optimizers, KERAS_NAMES[name])(**options)
    variables = [keras.Variable(w) for w in expected_weights]
    for step in grads:
        optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in step], variables))
    for mine, theirs in zip(weights, variables):
        np.testing.assert_allclose(mine, keras.ops.convert_to_numpy(theirs), rtol=1e-5, atol=1e-7)
    assert int(state["iterations"]) == 3 == int(optimizer.iterations)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_state_is_plain_float32_arrays(name, options):
    weights, state = _kerspec_steps({"type": name, **options})
    assert all(w.dtype == np.float32 for w in weights)
    assert state["iterations"].dtype == np.int64
    for key, value in state.items():
        assert isinstance(value, np.ndarray), key
        if key != "iterations":
            assert value.dtype == np.float32, key


def test_resume_from_saved_state(tmp_path):
    optimizer = OPTIMIZERS.create("nadam")
    weights, grads = _problem()
    state = optimizer.init(weights)
    optimizer.apply(state, weights, [g.copy() for g in grads[0]])
    np.savez(tmp_path / "opt.npz", **state)
    resumed = dict(np.load(tmp_path / "opt.npz"))
    resumed_weights = [w.copy() for w in weights]
    for step in grads[1:]:
        optimizer.apply(state, weights, [g.copy() for g in step])
        optimizer.apply(resumed, resumed_weights, [g.copy() for g in step])
    for a, b in zip(weights, resumed_weights):
        np.testing.assert_array_equal(a, b)


def test_defaults_are_keras_defaults():
    assert OPTIMIZERS.create("sgd").learning_rate == 0.01
    assert OPTIMIZERS.create("adam").learning_rate == 0.001
    assert OPTIMIZERS.create("adamw").weight_decay == 0.004
    assert OPTIMIZERS.create("RMSprop").rho == 0.9


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "sgd", "clipnorm": 1.0, "clipvalue": 1.0},
        {"type": "adam", "global_clipnorm": 1.0, "clipnorm": 1.0},
        {"type": "adam", "use_ema": True},
        {"type": "adam", "gradient_accumulation_steps": 2},
        {"type": "adam", "loss_scale_factor": 2.0},
        {"type": "sgd", "momentum": 1.5},
        {"type": "sgd", "learning_rate": -0.1},
        {"type": "adam", "decay": 0.1},
        {"type": "adamw", "weight_decay": None},
        "adamm",
    ],
)
def test_bad_arguments_are_rejected(bad):
    with pytest.raises(ValidationError):
        OPTIMIZERS.create(bad)


def test_unsupported_argument_message_names_it():
    with pytest.raises(ValidationError, match="`use_ema` is not supported"):
        OPTIMIZERS.create({"type": "adam", "use_ema": True})
