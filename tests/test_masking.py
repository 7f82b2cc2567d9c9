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
    with pytest.raises(GraphError, match=r"Flatten 'flat': cannot take the mask that mask carries"):
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


RNNS = {
    "SimpleRNN": lambda k, **kw: k.layers.SimpleRNN(3, **kw),
    "LSTM": lambda k, **kw: k.layers.LSTM(3, **kw),
    "GRU": lambda k, **kw: k.layers.GRU(3, **kw),
    "GRU_reset_before": lambda k, **kw: k.layers.GRU(3, reset_after=False, **kw),
}


def rnn_config(name, **kw):
    if name == "GRU_reset_before":
        return {"type": "GRU", "units": 3, "reset_after": False, **kw}
    return {"type": name, "units": 3, **kw}


@pytest.mark.parametrize("name", list(RNNS))
@pytest.mark.parametrize("mode", ["last", "sequences", "backwards", "state"])
def test_masked_rnn_matches_keras(name, mode):
    """Variable-length batches: same outputs and gradients as Keras with a Masking layer."""
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    from kerspec.layers import Context
    from tests.harness import build, keras_weight_name, random_weights

    kw = {"last": {}, "sequences": {"return_sequences": True},
          "backwards": {"go_backwards": True, "return_sequences": True}, "state": {"return_state": True}}[mode]
    rng = np.random.default_rng(1)
    x, _ = padded_batch(rng, n=4, steps=5, features=2)
    mask = x.any(axis=-1)
    layer = build(rnn_config(name, **kw))
    w = random_weights(layer, [(4, 5, 2)], rng, np.float32)
    ctx = Context(training=False, rng=np.random.default_rng(0), masks=[mask])
    ys, backprop = layer.forward(w, [x], ctx)

    theirs = RNNS[name](keras, **kw)
    theirs.build((4, 5, 2))
    for variable in theirs.weights:
        variable.assign(w[keras_weight_name(variable)])
    x_torch = torch.tensor(x, requires_grad=True)
    out = theirs(x_torch, mask=torch.tensor(mask))
    outs = list(out) if isinstance(out, list | tuple) else [out]
    rs = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    for y, k in zip(ys, outs):
        np.testing.assert_allclose(y, k.detach().numpy(), rtol=1e-4, atol=1e-5)
    sum((k * torch.tensor(r)).sum() for k, r in zip(outs, rs)).backward()
    (dx,), dws = backprop([r.copy() for r in rs])
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-4, atol=1e-5)
    for variable in theirs.trainable_weights:
        np.testing.assert_allclose(dws[keras_weight_name(variable)], variable.value.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM", "GRU"])
def test_masked_rnn_gradients(name):
    from kerspec.layers import Context
    from tests.harness import build, random_weights
    from tests.gradcheck import check_grads

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 2))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    layer = build({"type": name, "units": 2, "return_sequences": True})
    w = random_weights(layer, [(3, 4, 2)], rng)

    def forward():
        (y,), backprop = layer.forward(w, [x], Context(False, np.random.default_rng(0), masks=[mask]))
        return y, lambda dy: {"x": backprop([dy])[0][0], **backprop([dy])[1]}

    check_grads(forward, {"x": x, **w})


def test_lstm_on_padded_sequences_trains():
    model = kerspec.from_yaml(
        """
seed: 0
layers:
  - {type: Input, shape: [6, 2]}
  - {type: Masking}
  - {type: LSTM, units: 4, return_sequences: true}
  - {type: Dense, units: 1}
compile: {optimizer: adam, loss: mse}
"""
    )
    assert model.graph.nodes[-1].output_masked == [True]
    rng = np.random.default_rng(0)
    x, _ = padded_batch(rng, n=8, steps=6, features=2)
    y = rng.standard_normal((8, 6, 1)).astype(np.float32)
    history = model.fit(Dataset({"input_layer": x}, {"dense": y}, "t"), epochs=3, batch_size=4)
    assert np.isfinite(history.history["loss"]).all()
