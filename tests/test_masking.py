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
    from tests.gradcheck import check_grads
    from tests.harness import build, random_weights

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


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_masked_global_average_pooling_matches_keras(data_format, keepdims):
    """Only the unmasked steps are averaged, and the output has no mask (Keras)."""
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    from kerspec.layers import Context
    from tests.harness import build

    rng = np.random.default_rng(3)
    x, _ = padded_batch(rng, n=4, steps=5, features=3)
    mask = x.any(axis=-1)
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
    config = {"type": "GlobalAveragePooling1D", "data_format": data_format, "keepdims": keepdims}
    layer = build(config)
    assert layer.output_masked([True], 1) == [False]
    (y,), backprop = layer.forward({}, [x], Context(False, np.random.default_rng(0), masks=[mask]))
    theirs = keras.layers.GlobalAveragePooling1D(data_format=data_format, keepdims=keepdims)
    x_torch = torch.tensor(x, requires_grad=True)
    out = theirs(x_torch, mask=torch.tensor(mask))
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-6, atol=1e-7)
    r = rng.standard_normal(y.shape).astype(np.float32)
    (out * torch.tensor(r)).sum().backward()
    (dx,), _ = backprop([r.copy()])
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_masked_global_average_pooling_gradient_and_empty_rows():
    from kerspec.layers import Context
    from tests.gradcheck import check_grads
    from tests.harness import build

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 2))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    layer = build({"type": "GlobalAveragePooling1D"})

    def forward():
        ctx = Context(False, np.random.default_rng(0), masks=[mask])
        (y,), backprop = layer.forward({}, [x], ctx)
        return y, lambda dy: {"x": backprop([dy])[0][0]}

    check_grads(forward, {"x": x})
    y, _ = forward()
    np.testing.assert_allclose(y[1], x[1, :2].mean(axis=0))
    # Keras divides 0 by 0 for a fully masked row (NaN); kerspec gives 0.
    assert not y[2].any()


def test_global_max_pooling_refuses_a_mask_as_keras_does_not_support_it():
    with pytest.raises(GraphError, match=r"GlobalMaxPooling1D .*cannot take the mask"):
        kerspec.from_yaml(
            "layers:\n  - {type: Input, shape: [5, 3]}\n  - {type: Masking}\n"
            "  - {type: GlobalMaxPooling1D}\n"
        )


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("which", ["both", "first", "second"])
def test_concatenate_masks_match_keras(axis, which):
    """Keras 3: a missing mask is all true; masks stretched over features, joined, any(-1)."""
    keras = pytest.importorskip("keras")
    torch = pytest.importorskip("torch")
    from tests.harness import build

    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((3, 4, 2)).astype(np.float32) for _ in range(2)]
    masks = [rng.random((3, 4)) > 0.4, rng.random((3, 4)) > 0.6]
    masks = [m if which in ("both", name) else None for m, name in zip(masks, ["first", "second"])]
    layer = build({"type": "Concatenate", "axis": axis})
    assert layer.output_masked([m is not None for m in masks], 1) == [True]
    (mask,) = layer.compute_mask(xs, masks, [None])
    theirs = keras.layers.Concatenate(axis=axis).compute_mask(
        [torch.tensor(x) for x in xs], [None if m is None else torch.tensor(m) for m in masks]
    )
    np.testing.assert_array_equal(mask, theirs.numpy())
    assert layer.compute_mask(xs, [None, None], [None]) == [None]


def test_masks_through_concatenate_and_average_pooling_in_a_model(rng):
    model = kerspec.from_yaml(
        """
seed: 0
layers:
  - {name: x, type: Input, shape: [5, 3]}
  - {name: mask, type: Masking}
  - {name: seq, type: Dense, units: 2}
  - {name: both, type: Concatenate, from: [seq, mask]}
  - {name: pool, type: GlobalAveragePooling1D}
  - {name: out, type: Dense, units: 1}
compile: {optimizer: {type: sgd, learning_rate: 0.1}, loss: mse}
"""
    )
    assert model.graph.node("both").output_masked == [True]
    assert model.graph.node("pool").output_masked == [False]
    x, _ = padded_batch(rng)
    y = rng.standard_normal((len(x), 1)).astype(np.float32)
    p = model.params
    steps = x.any(axis=-1)
    joined = np.concatenate([x @ p["seq"]["kernel"] + p["seq"]["bias"], x], axis=-1)
    pooled = (joined * steps[..., None]).sum(axis=1) / steps.sum(axis=1, keepdims=True)
    expected = pooled @ p["out"]["kernel"] + p["out"]["bias"]  # the padded steps left out
    np.testing.assert_allclose(model.predict(x)["out"], expected, rtol=1e-5, atol=1e-6)
    history = model.fit(Dataset({"x": x}, {"out": y}, "t"), epochs=2, batch_size=3)
    assert np.isfinite(history.history["loss"]).all()
