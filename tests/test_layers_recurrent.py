"""Recurrent layers: gradient checks for every mode, Keras equivalence, shapes, weights, dropout."""

import numpy as np
import pydantic
import pytest

from kerspec.layers import LAYERS, Context, ShapeError
from kerspec.layers.recurrent import Recurrent
from tests.harness import build, check_layer_grads, compare_with_keras

SHAPE = [(2, 4, 3)]
STATE = {"return_sequences": True, "return_state": True}
DROPOUT = {"dropout": 0.4, "recurrent_dropout": 0.3}

GRAD_CASES = {
    "SimpleRNN": [
        {"units": 3},
        {"units": 3, **STATE},
        {"units": 2, "return_state": True, "go_backwards": True},
        {"units": 3, "activation": "relu", "use_bias": False, "return_sequences": True},
        {"units": 2, "activation": "softplus", "go_backwards": True, **STATE},
        {"units": 3, **DROPOUT, **STATE},
        {"units": 2, "dropout": 0.5},
    ],
    "LSTM": [
        {"units": 2},
        {"units": 2, **STATE},
        {"units": 3, "return_state": True, "go_backwards": True},
        {"units": 2, "use_bias": False, "go_backwards": True, **STATE},
        {"units": 2, "activation": "softplus", "recurrent_activation": "hard_sigmoid", **STATE},
        {"units": 2, "activation": "linear", "unit_forget_bias": False},
        {"units": 2, **DROPOUT, **STATE},
        {"units": 2, "recurrent_dropout": 0.5, "return_state": True},
        # Other gate activations than tanh/sigmoid take the forward's general branches: a σ
        # other than sigmoid, a g that needs its input, and activations that are not
        # elementwise, whose backward runs at each step (masked, with dropout, one beside an
        # elementwise one that needs its input).
        {"units": 2, "recurrent_activation": "tanh", "return_sequences": True},
        {"units": 2, "activation": "hard_silu", "return_state": True},
        {"units": 3, "activation": "softmax", "recurrent_activation": "softmax", **STATE},
        {
            "units": 3,
            "activation": "sparsemax",
            "recurrent_activation": "hard_silu",
            **DROPOUT,
            **STATE,
        },
        {
            "units": 3,
            "activation": "selu",
            "recurrent_activation": "log_softmax",
            "go_backwards": True,
            **STATE,
        },
    ],
    "GRU": [
        {"units": 2},
        {"units": 2, **STATE},
        {"units": 2, "reset_after": False, **STATE},
        {"units": 3, "return_state": True, "go_backwards": True},
        {"units": 2, "reset_after": False, "go_backwards": True, "return_sequences": True},
        {"units": 2, "use_bias": False, **STATE},
        {"units": 2, "use_bias": False, "reset_after": False, "return_state": True},
        {"units": 2, "activation": "softplus", "recurrent_activation": "hard_sigmoid", **STATE},
        {"units": 2, **DROPOUT, **STATE},
        {"units": 2, "reset_after": False, **DROPOUT, **STATE},
        # The forward's general branches (σ other than sigmoid, g that needs its input,
        # activations that are not elementwise, alone or beside one that needs its input).
        {"units": 2, "recurrent_activation": "tanh", "return_sequences": True},
        {"units": 2, "reset_after": False, "activation": "hard_silu", "return_state": True},
        {"units": 3, "activation": "softmax", "recurrent_activation": "softmax", **STATE},
        {"units": 2, "reset_after": False, "recurrent_activation": "softmax", **STATE},
        {
            "units": 3,
            "activation": "sparsemax",
            "recurrent_activation": "hard_silu",
            **DROPOUT,
            **STATE,
        },
        {
            "units": 3,
            "reset_after": False,
            "activation": "log_softmax",
            "recurrent_activation": "silu",
            "go_backwards": True,
            **STATE,
        },
        {
            "units": 3,
            "activation": "softplus",
            "recurrent_activation": "sparsemax",
            "use_bias": False,
            "return_sequences": True,
        },
    ],
}

GRAD_PARAMS = [
    pytest.param({"type": kind, **config}, id=f"{kind}-{i}")
    for kind, configs in GRAD_CASES.items()
    for i, config in enumerate(configs)
]


def test_every_recurrent_layer_has_gradient_cases():
    recurrent = {name for name in LAYERS.names() if issubclass(LAYERS.get(name), Recurrent)}
    assert recurrent == set(GRAD_CASES)


@pytest.mark.parametrize("config", GRAD_PARAMS)
def test_gradients(config):
    # Training mode: dropout cases draw their masks from the harness's fixed context rng.
    check_layer_grads(config, SHAPE, training=True)


def test_gradients_flow_into_states_only():
    """Only the state outputs carry a gradient (the sequence output unused, as after `lstm[1]`)."""
    layer = build({"type": "LSTM", "units": 2, **STATE})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 3))
    w = {s.name: rng.standard_normal(s.shape) * 0.5 for s in layer.weights([(3, 3)])}
    _, backprop = layer.forward(w, [x], Context(training=False, rng=np.random.default_rng(0)))
    dh, dc = rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
    (dx,), grads = backprop([None, dh, dc])

    def loss(x):
        (_, h, c), _ = layer.forward(w, [x], Context(training=False, rng=np.random.default_rng(0)))
        return float(np.sum(h * dh) + np.sum(c * dc))

    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (loss(up) - loss(down)) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-5, atol=1e-8)
    assert set(grads) == {"kernel", "recurrent_kernel", "bias"}


def keras_case(kind, **config):
    """A kerspec config and the matching Keras layer, built from the same arguments."""
    return pytest.param(
        {"type": kind, **config},
        lambda keras: getattr(keras.layers, kind)(**config),
        id=f"{kind}-" + "-".join(f"{k}={v}" for k, v in config.items()),
    )


KERAS_CASES = [
    keras_case(kind, **config)
    for kind in ("SimpleRNN", "LSTM", "GRU")
    for config in (
        {"units": 3},
        {"units": 3, **STATE},
        {"units": 2, "return_state": True},
        {"units": 3, "go_backwards": True, "return_sequences": True},
        {"units": 2, "go_backwards": True, "return_state": True},
        {"units": 3, "use_bias": False, **STATE},
        {"units": 2, "activation": "relu", "return_sequences": True},
        {"units": 3, "unroll": True, **DROPOUT},
    )
] + [
    keras_case("LSTM", units=3, recurrent_activation="hard_sigmoid", **STATE),
    keras_case("LSTM", units=2, implementation=1, use_cudnn=False, unit_forget_bias=False),
    keras_case("GRU", units=3, reset_after=False, **STATE),
    keras_case("GRU", units=3, reset_after=False, use_bias=False, go_backwards=True),
    keras_case("GRU", units=2, recurrent_activation="hard_sigmoid", implementation=1),
    keras_case("GRU", units=2, reset_after=False, activation="softplus", return_state=True),
    # Activations that are not elementwise: Keras applies them to each gate's (batch, units)
    # pre-activation on its own. (Not sparsemax: Keras 3.15's is off the simplex, see
    # test_activations; the gradient checks above cover ours.)
    keras_case("LSTM", units=3, activation="softmax", recurrent_activation="softmax", **STATE),
    keras_case("LSTM", units=3, activation="log_softmax", go_backwards=True, return_state=True),
    keras_case("LSTM", units=2, recurrent_activation="log_softmax", return_sequences=True),
    keras_case("GRU", units=3, activation="softmax", recurrent_activation="softmax", **STATE),
    keras_case(
        "GRU",
        units=3,
        reset_after=False,
        activation="log_softmax",
        recurrent_activation="softmax",
        **STATE,
    ),
    keras_case("GRU", units=2, recurrent_activation="log_softmax", return_sequences=True),
]


@pytest.mark.parametrize("config,make", KERAS_CASES)
def test_matches_keras(config, make):
    keras = pytest.importorskip("keras")
    compare_with_keras(config, make(keras), SHAPE)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_variable_time_and_float32(kind):
    layer = build({"type": kind, "units": 3, **STATE})
    assert layer.output_shapes([(None, 5)])[0] == (None, 3)
    rng = np.random.default_rng(0)
    w = {s.name: s.initializer(s.shape, rng, np.float32) for s in layer.weights([(None, 5)])}
    for time in (1, 6):
        x = rng.standard_normal((2, time, 5)).astype(np.float32)
        ys, backprop = layer.forward(w, [x], Context(training=True, rng=rng))
        assert ys[0].shape == (2, time, 3)
        assert all(y.dtype == np.float32 for y in ys)
        (dx,), grads = backprop([np.ones_like(y) for y in ys])
        assert dx.dtype == np.float32 and dx.shape == x.shape
        assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize(
    "config", [{}, {"return_sequences": True}, STATE, {"return_state": True, "go_backwards": True}]
)
@pytest.mark.parametrize("masked", [False, True])
def test_inference_without_record_gives_the_same_outputs(kind, config, masked):
    """With ctx.record False (no backward will come) a layer may keep less; its outputs must
    not change, masks included, and repeated calls must not see the previous batch's states."""
    check_inference_without_record({"type": kind, "units": 3, **config}, masked)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize(
    "activations",
    [
        {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
        {"activation": "hard_silu", "recurrent_activation": "sigmoid"},
        {"activation": "softmax", "recurrent_activation": "softmax"},
    ],
)
def test_inference_without_record_other_activations(kind, activations):
    check_inference_without_record({"type": kind, "units": 3, **activations, **STATE}, True)


def check_inference_without_record(config, masked):
    layer = build(config)
    rng = np.random.default_rng(0)
    w = {s.name: s.initializer(s.shape, rng, np.float32) for s in layer.weights([(None, 4)])}
    for time in (5, 6):
        x = rng.standard_normal((3, time, 4)).astype(np.float32)
        mask = np.ones((3, time), bool)
        mask[1, -2:] = False
        mask[2, 1] = False
        recorded = Context(training=False, rng=rng)
        plain = Context(training=False, rng=rng)
        plain.record = False
        if masked:
            recorded.masks = plain.masks = [mask]
        expected = [y.copy() for y in layer.forward(w, [x], recorded)[0]]
        for _ in range(2):
            ys, _ = layer.forward(w, [x], plain)
            for y, e in zip(ys, expected):
                np.testing.assert_allclose(y, e, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize("shape", [(8,), (4, None), (2, 3, 4)])
def test_needs_3d_input_with_known_features(kind, shape):
    with pytest.raises(ShapeError, match=rf"{kind} expects a 3-D input \(batch, time, features\)"):
        build({"type": kind, "units": 2}).output_shapes([shape])


def test_shape_error_names_the_received_shape():
    with pytest.raises(ShapeError, match=r"received \(None, 8\)"):
        build({"type": "LSTM", "units": 2}).output_shapes([(8,)])


def test_unroll_needs_known_time():
    with pytest.raises(ShapeError, match="unroll"):
        build({"type": "GRU", "units": 2, "unroll": True}).output_shapes([(None, 3)])


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_stateful_is_rejected(kind):
    with pytest.raises(pydantic.ValidationError, match="stateful=True is not supported"):
        build({"type": kind, "units": 2, "stateful": True})
    assert build({"type": kind, "units": 2, "stateful": False}).stateful is False


@pytest.mark.parametrize(
    "config,message",
    [
        ({"type": "LSTM", "units": 2, "use_cudnn": True}, "use_cudnn=True is not supported"),
        ({"type": "GRU", "units": 2, "implementation": 3}, "implementation"),
        ({"type": "SimpleRNN", "units": 2, "implementation": 2}, "Extra inputs"),
        ({"type": "SimpleRNN", "units": 2, "recurrent_activation": "sigmoid"}, "Extra inputs"),
        ({"type": "GRU", "units": 2, "unit_forget_bias": True}, "Extra inputs"),
        ({"type": "LSTM", "units": 2, "reset_after": True}, "Extra inputs"),
        ({"type": "LSTM", "units": 2, "dropout": 1.0}, "dropout"),
        ({"type": "LSTM", "units": 0}, "units"),
        ({"type": "LSTM", "units": 2, "zero_output_for_mask": True}, "Extra inputs"),
    ],
)
def test_invalid_arguments(config, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        build(config)


def test_default_weights_follow_keras_layouts():
    rng = np.random.default_rng(0)
    expected = {
        ("SimpleRNN", True): {"kernel": (5, 3), "recurrent_kernel": (3, 3), "bias": (3,)},
        ("LSTM", True): {"kernel": (5, 12), "recurrent_kernel": (3, 12), "bias": (12,)},
        ("GRU", True): {"kernel": (5, 9), "recurrent_kernel": (3, 9), "bias": (2, 9)},
        ("GRU", False): {"kernel": (5, 9), "recurrent_kernel": (3, 9), "bias": (9,)},
    }
    for (kind, reset_after), shapes in expected.items():
        config = {"type": kind, "units": 3}
        if kind == "GRU":
            config["reset_after"] = reset_after
        specs = build(config).weights([(7, 5)])
        assert {s.name: s.shape for s in specs} == shapes
        values = {s.name: s.initializer(s.shape, rng, np.float32) for s in specs}
        # recurrent_kernel defaults to orthogonal; bias to zeros (but the LSTM forget gate).
        recurrent = values["recurrent_kernel"]
        np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(3), atol=1e-5)
        if kind != "LSTM":
            assert not values["bias"].any()
    lstm = build({"type": "LSTM", "units": 3}).weights([(7, 5)])
    bias = next(s for s in lstm if s.name == "bias")
    b = bias.initializer(bias.shape, rng, np.float32)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    no_forget = build({"type": "LSTM", "units": 3, "unit_forget_bias": False}).weights([(7, 5)])
    bias = next(s for s in no_forget if s.name == "bias")
    assert not bias.initializer(bias.shape, rng, np.float32).any()


def test_unit_forget_bias_keeps_the_base_initializer():
    config = {"type": "LSTM", "units": 2, "bias_initializer": {"type": "constant", "value": 0.5}}
    bias = next(s for s in build(config).weights([(4, 3)]) if s.name == "bias")
    b = bias.initializer(bias.shape, np.random.default_rng(0), np.float64)
    np.testing.assert_array_equal(b, [0.5, 0.5, 1, 1, 0.5, 0.5, 0.5, 0.5])


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_input_dropout_mask_is_one_per_sequence(kind):
    """Keras reuses one input mask at every step: a dropped feature is dropped for the whole
    sequence, so its input gradient is zero at every time step and nowhere else."""
    layer = build({"type": kind, "units": 3, "dropout": 0.5, "return_sequences": True})
    rng = np.random.default_rng(0)
    w = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in layer.weights([(5, 16)])}
    x = rng.standard_normal((8, 5, 16)).astype(np.float32)
    ys, backprop = layer.forward(w, [x], Context(training=True, rng=np.random.default_rng(3)))
    (dx,), _ = backprop([np.ones_like(ys[0])])
    dropped = dx == 0
    assert (dropped.all(axis=1) == dropped.any(axis=1)).all()
    assert 0.3 < dropped.all(axis=1).mean() < 0.7


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_dropout_only_in_training_and_seeded(kind):
    layer = build({"type": kind, "units": 3, **DROPOUT})
    plain = build({"type": kind, "units": 3})
    rng = np.random.default_rng(0)
    w = {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in layer.weights([(4, 3)])}
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)

    def run(model, training, seed=0):
        ys, _ = model.forward(w, [x], Context(training=training, rng=np.random.default_rng(seed)))
        return ys[0].copy()

    np.testing.assert_array_equal(run(layer, False), run(plain, False))
    assert not np.allclose(run(layer, True), run(plain, True))
    seeded = build({"type": kind, "units": 3, "seed": 5, **DROPOUT})
    np.testing.assert_array_equal(run(seeded, True, seed=0), run(seeded, True, seed=1))


def test_hold_leaves_the_real_steps_states_exact():
    """Masked rows get the previous state back; real rows keep theirs bit for bit (a blend
    old + step * (new - old) would round 1.0 to 0.9999999999999999)."""
    from kerspec.layers.recurrent import hold

    new = np.array([[1.0, -1.0], [0.5, 0.25]])
    old = np.array([[0.3, 0.9], [0.1, 0.9]])  # (-1.0 - 0.9) + 0.9 is not -1.0
    hold(new, old, np.array([[1.0], [0.0]]))
    assert new.tolist() == [[1.0, -1.0], [0.1, 0.9]]


GATES_NOT_ELEMENTWISE = """
dtype: float64
seed: 3
layers:
  - {type: Input, shape: [4, 3], name: x}
  - {type: Masking, mask_value: 0.0}
  - type: Bidirectional
    layer: {type: LSTM, units: 3, activation: softmax, recurrent_activation: log_softmax,
            return_sequences: true}
  - {type: GRU, units: 2, activation: log_softmax, recurrent_activation: softmax, name: gru}
  - {type: Dense, units: 2, name: head}
compile: {optimizer: sgd, loss: mse}
"""


def test_gates_not_elementwise_train_through_the_plan():
    """Softmax and log_softmax gates as a spec runs them: masked, in both directions, every
    weight's gradient of the training loss against central differences."""
    import kerspec
    from tests.wholeplan import check_training_gradients

    model = kerspec.from_yaml(GATES_NOT_ELEMENTWISE)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 3))
    x[1:, -1] = 0.0  # padded steps for the Masking layer
    check_training_gradients(model, [x], [rng.standard_normal((3, 2))], rng=rng)
