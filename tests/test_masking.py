"""Masks: made by Masking, passed on by layers that keep the time axis, honoured by the loss."""

import numpy as np
import pytest

import kerspec
from kerspec.errors import GraphError
from kerspec.training.data import Dataset
from tests.harness import check_layer_grads

MASKED = """
seed: 0
layers:
  - {type: Input, shape: [5, 3], name: x}
  - {type: Masking, mask_value: 0.0, name: mask}
  - {type: Dense, units: 4, activation: tanh, name: hidden}
  - {type: Dense, units: 2, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.1}, loss: mse}
"""


def padded_batch(rng, n=6, steps=5, features=3):
    x = rng.standard_normal((n, steps, features)).astype(np.float32)
    lengths = rng.integers(1, steps + 1, n)
    x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    y = rng.standard_normal((n, steps, 2)).astype(np.float32)
    return x, y


def test_masking_gradient():
    # A masked step sits on a discontinuity (any nudge unmasks it), so the numerical check runs
    # on unmasked steps and the masked ones are checked directly below.
    check_layer_grads({"type": "Masking"}, [(2, 4, 3)])


def test_masked_steps_are_zero_and_pass_no_gradient():
    from kerspec.layers import Context
    from tests.harness import build

    x = np.ones((2, 4, 3), np.float32)
    x[0, 2:] = 0.0
    (y,), backprop = build({"type": "Masking"}).forward({}, [x], Context(False, np.random.default_rng(0)))
    (dx,), _ = backprop([np.ones_like(y)])
    assert not y[0, 2:].any() and not dx[0, 2:].any()
    assert dx[1].all()


def test_mask_flows_to_the_output():
    model = kerspec.from_yaml(MASKED)
    assert [n.output_masked for n in model.graph.nodes] == [[False], [True], [True], [True]]


def test_masked_steps_do_not_count_in_the_loss(rng):
    model = kerspec.from_yaml(MASKED)
    x, y = padded_batch(rng)
    before = model.evaluate(Dataset({"x": x}, {"out": y}, "t"))["loss"]
    y_changed = y.copy()
    y_changed[x.any(axis=-1) == 0] = 100.0  # targets under padding must not matter
    after = model.evaluate(Dataset({"x": x}, {"out": y_changed}, "t"))["loss"]
    assert before == pytest.approx(after)


def test_layer_that_cannot_take_a_mask_is_a_spec_error():
    with pytest.raises(GraphError, match=r"Flatten 'flat': Flatten cannot take the mask that mask carries"):
        kerspec.from_yaml(
            "layers:\n  - {type: Input, shape: [5, 3]}\n  - {type: Masking, name: mask}\n"
            "  - {type: Flatten, name: flat}\n"
        )


def test_same_loss_and_step_as_keras(rng):
    keras = pytest.importorskip("keras")
    model = kerspec.from_yaml(MASKED)
    inputs = keras.Input((5, 3))
    h = keras.layers.Masking(0.0)(inputs)
    h = keras.layers.Dense(4, activation="tanh", name="hidden")(h)
    theirs = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    for name in ("hidden", "out"):
        layer = theirs.get_layer(name)
        layer.set_weights([model.params[name]["kernel"], model.params[name]["bias"]])
    theirs.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = padded_batch(rng)
    data = Dataset({"x": x}, {"out": y}, "t")
    np.testing.assert_allclose(
        model.evaluate(data, batch_size=6)["loss"], theirs.evaluate(x, y, batch_size=6, verbose=0), rtol=1e-5
    )
    theirs.train_on_batch(x, y)
    model.fit(data, epochs=1, batch_size=6)
    for name in ("hidden", "out"):
        kernel, bias = theirs.get_layer(name).get_weights()
        np.testing.assert_allclose(model.params[name]["kernel"], kernel, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(model.params[name]["bias"], bias, rtol=1e-4, atol=1e-6)
