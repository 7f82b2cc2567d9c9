import math

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.activations import ACTIVATIONS, erfc
from tests.gradcheck import check_grads

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# name -> [(arguments, input range, kinks the input keeps away from, shape)].
# Every argument that changes the math has its own case.
ROW = (4, 5)
CASES = {
    "linear": [({}, (-3, 3), (), ROW)],
    "relu": [
        ({}, (-3, 3), (0,), ROW),
        ({"negative_slope": 0.1}, (-3, 3), (0,), ROW),
        ({"max_value": 1.5}, (-3, 3), (0, 1.5), ROW),
        ({"max_value": 6.0}, (-2, 8), (0, 6), ROW),
        ({"threshold": 0.5}, (-3, 3), (0.5,), ROW),
        ({"negative_slope": 0.3, "max_value": 2.0, "threshold": 0.7}, (-3, 3), (0.7, 2), ROW),
    ],
    "leaky_relu": [({}, (-3, 3), (0,), ROW), ({"negative_slope": 0.5}, (-3, 3), (0,), ROW)],
    "relu6": [({}, (-2, 8), (0, 6), ROW)],
    "sigmoid": [({}, (-6, 6), (), ROW)],
    "hard_sigmoid": [({}, (-5, 5), (-3, 3), ROW)],
    "hard_silu": [({}, (-5, 5), (-3, 3), ROW)],
    "log_sigmoid": [({}, (-6, 6), (), ROW)],
    "sparse_sigmoid": [({}, (-2, 2), (-1, 1), ROW)],
    "softmax": [({}, (-3, 3), (), ROW), ({"axis": 1}, (-3, 3), (), (2, 3, 4))],
    "log_softmax": [({}, (-3, 3), (), ROW), ({"axis": 1}, (-3, 3), (), (2, 3, 4))],
    "sparsemax": [({}, (-1.5, 1.5), (), ROW), ({"axis": 1}, (-1.5, 1.5), (), (2, 3, 4))],
    "tanh": [({}, (-3, 3), (), ROW)],
    "hard_tanh": [({}, (-2, 2), (-1, 1), ROW)],
    "tanh_shrink": [({}, (-3, 3), (), ROW)],
    "elu": [({}, (-3, 3), (0,), ROW), ({"alpha": 0.5}, (-3, 3), (0,), ROW)],
    "selu": [({}, (-3, 3), (0,), ROW)],
    "celu": [({}, (-3, 3), (), ROW), ({"alpha": 2.0}, (-3, 3), (0,), ROW)],
    "softplus": [({}, (-6, 6), (), ROW)],
    "sparse_plus": [({}, (-2, 2), (-1, 1), ROW)],
    "squareplus": [({}, (-3, 3), (), ROW), ({"b": 1.0}, (-3, 3), (), ROW)],
    "softsign": [({}, (-3, 3), (0,), ROW)],
    "soft_shrink": [({}, (-2, 2), (-0.5, 0.5), ROW), ({"threshold": 1.0}, (-2, 2), (-1, 1), ROW)],
    "hard_shrink": [({}, (-2, 2), (-0.5, 0.5), ROW), ({"threshold": 1.0}, (-2, 2), (-1, 1), ROW)],
    "threshold": [({"threshold": 0.3, "default_value": -1.0}, (-2, 2), (0.3,), ROW)],
    "silu": [({}, (-5, 5), (), ROW)],
    "gelu": [({}, (-5, 5), (), ROW), ({"approximate": True}, (-5, 5), (), ROW)],
    "mish": [({}, (-5, 5), (), ROW)],
    "exponential": [({}, (-3, 3), (), ROW)],
}
PARAMS = [
    pytest.param(name, args, bounds, kinks, shape, id=f"{name}-{i}")
    for name, cases in CASES.items()
    for i, (args, bounds, kinks, shape) in enumerate(cases)
]
# Keras names this project deliberately leaves out: glu halves its input, and every layer here
# assumes an activation keeps the shape.
NOT_SUPPORTED = {"glu"}


def make(name, args):
    return ACTIVATIONS.create({"type": name, **args})


def inputs(rng, bounds, kinks, shape, dtype=np.float64):
    x = rng.uniform(*bounds, size=shape)
    for kink in kinks:
        x[np.abs(x - kink) < 0.05] += 0.1
    return x.astype(dtype)


def test_every_activation_has_cases():
    assert set(CASES) == set(ACTIVATIONS.names())


@pytest.mark.parametrize("name, args, bounds, kinks, shape", PARAMS)
def test_gradient(name, args, bounds, kinks, shape, rng):
    act = make(name, args)
    x = inputs(rng, bounds, kinks, shape)

    def forward():
        y = act.forward(x)
        # An activation that says it does not use x must cope without it.
        seen = x if act.uses_input else None
        return y, lambda dy: {"x": act.backward(seen, y, dy)}

    check_grads(forward, {"x": x})


@pytest.mark.parametrize("name, args, bounds, kinks, shape", PARAMS)
def test_float32_stays_float32(name, args, bounds, kinks, shape, rng):
    act = make(name, args)
    x = inputs(rng, bounds, kinks, shape, np.float32)
    y = act.forward(x)
    dx = act.backward(x, y, np.ones_like(y))
    assert y.dtype == np.float32 and dx.dtype == np.float32


@pytest.mark.parametrize("name, args, bounds, kinks, shape", PARAMS)
def test_out_receives_the_same_result(name, args, bounds, kinks, shape, rng):
    """`out=` (a separate buffer, or the input itself) gives what the plain call gives."""
    act = make(name, args)
    x = inputs(rng, bounds, kinks, shape, np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y = act.forward(x.copy())
    dx = act.backward(x.copy(), y.copy(), dy.copy())
    out = np.full_like(x, np.nan)
    assert act.forward(x.copy(), out=out) is out
    np.testing.assert_array_equal(out, y)
    same = x.copy()
    np.testing.assert_array_equal(act.forward(same, out=same), y)
    out = np.full_like(x, np.nan)
    assert act.backward(x.copy(), y.copy(), dy.copy(), out=out) is out
    np.testing.assert_array_equal(out, dx)
    d = dy.copy()
    np.testing.assert_array_equal(act.backward(x.copy(), y.copy(), d, out=d), dx)


@pytest.mark.parametrize("name, args, bounds, kinks, shape", PARAMS)
def test_elementwise_derivative_is_backward_of_ones(name, args, bounds, kinks, shape, rng):
    """What the recurrent layers rely on: for an elementwise activation, backward(x, y, 1) is
    dy/dx, so backward(x, y, dy) = dy * backward(x, y, 1)."""
    act = make(name, args)
    x = inputs(rng, bounds, kinks, shape)
    y = act.forward(x)
    dy = rng.standard_normal(shape)
    direct = act.backward(x, y, dy.copy())
    if act.elementwise:
        np.testing.assert_allclose(direct, dy * act.backward(x, y, np.ones_like(y)), rtol=1e-12)
    else:
        assert not np.allclose(direct, dy * act.backward(x, y, np.ones_like(y)))


def test_relu_backward_in_place_keeps_negative_inputs_at_zero():
    act = make("relu", {})
    y = act.forward(np.array([-1.0, 0.0, 2.0], np.float32))
    dy = np.array([5.0, 6.0, 7.0], np.float32)
    dx = act.backward(None, y, dy)
    np.testing.assert_array_equal(dx, [0.0, 0.0, 7.0])
    assert dx.dtype == np.float32


@pytest.mark.parametrize(
    "name",
    ["sigmoid", "log_sigmoid", "softplus", "softmax", "log_softmax", "sparsemax", "silu", "mish"]
    + ["gelu", "elu", "selu", "celu", "tanh", "softsign", "squareplus", "sparse_plus"],
)
def test_large_inputs_do_not_overflow(name):
    act = make(name, {})
    x = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = act.forward(x)
        dx = act.backward(x, y, np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


def test_stable_values_at_extremes():
    x = np.array([-1000.0, 1000.0], dtype=np.float32)
    np.testing.assert_array_equal(make("sigmoid", {}).forward(x), [0.0, 1.0])
    np.testing.assert_array_equal(make("softplus", {}).forward(x), [0.0, 1000.0])
    np.testing.assert_allclose(make("log_softmax", {}).forward(x), [-2000.0, 0.0])
    np.testing.assert_allclose(make("softmax", {}).forward(x), [0.0, 1.0])


def test_erfc_matches_math():
    x = np.concatenate([np.linspace(-6, 6, 241), [-30.0, -8.5, 8.5, 26.0, 30.0, 1e4]])
    expected = np.array([math.erfc(v) for v in x])
    np.testing.assert_allclose(erfc(x), expected, rtol=1e-13, atol=1e-300)


def test_relu_variants_by_hand():
    x = np.array([-2.0, 0.2, 0.6, 1.0, 3.0], dtype=np.float32)
    relu = make("relu", {"negative_slope": 0.5, "max_value": 2.0, "threshold": 0.5})
    np.testing.assert_allclose(relu.forward(x), [-1.25, -0.15, 0.6, 1.0, 2.0], rtol=1e-6)


def test_sparsemax_is_the_projection_onto_the_simplex(rng):
    # Optimality conditions: y on the simplex, x - y equal to one tau on the support and at
    # least tau off it.
    x = rng.normal(size=(3, 6, 2)) * 3
    y = make("sparsemax", {"axis": 1}).forward(x)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    assert (y >= 0).all() and (y == 0).any() and ((y > 0).sum(axis=1) > 1).any()
    gap = x - y
    tau = np.max(np.where(y > 0, gap, -np.inf), axis=1, keepdims=True)
    np.testing.assert_allclose(np.where(y > 0, gap, tau), np.broadcast_to(tau, x.shape))
    assert (np.where(y > 0, tau, x) <= tau + 1e-12).all()


@pytest.mark.parametrize("name, args, bounds, kinks, shape", PARAMS)
def test_matches_keras(name, args, bounds, kinks, shape, rng):
    keras = pytest.importorskip("keras")
    if name == "sparsemax":
        pytest.skip(
            "Keras 3.15's sparsemax takes tau = (sum of the support's cumsums - 1) / k instead of "
            "(cumsum at k - 1) / k, so its rows do not sum to 1 once the support has 2 or more "
            "entries; test_sparsemax_is_the_projection_onto_the_simplex checks ours"
        )
    x = inputs(rng, bounds, kinks, shape, np.float32)
    expected = keras.ops.convert_to_numpy(getattr(keras.activations, name)(x, **args))
    y = make(name, args).forward(x)
    assert y.dtype == np.float32
    # atol covers float32 cancellation in Keras's own formulas (1 + erf(x) in gelu's left tail).
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_every_keras_name_is_accepted():
    pytest.importorskip("keras")
    from keras.src.activations import ALL_OBJECTS_DICT

    required = {"threshold": {"threshold": 0.0, "default_value": 0.0}}
    for name in set(ALL_OBJECTS_DICT) - NOT_SUPPORTED:
        assert ACTIVATIONS.create({"type": name, **required.get(name, {})})
        if name not in required:
            assert ACTIVATIONS.create(name) == ACTIVATIONS.create({"type": name})
    assert ACTIVATIONS.create("swish") == ACTIVATIONS.create("silu")
    assert ACTIVATIONS.create("HardSwish") == ACTIVATIONS.create("hard_silu")


def test_keras_defaults():
    assert make("leaky_relu", {}).negative_slope == 0.2
    assert make("gelu", {}).approximate is False
    assert make("elu", {}).alpha == 1.0
    assert make("softmax", {}).axis == -1


@pytest.mark.parametrize(
    "config",
    [
        {"type": "relu", "negative_slope": -0.1},
        {"type": "relu", "max_value": -1.0},
        {"type": "relu", "threshold": -0.5},
        {"type": "leaky_relu", "negative_slope": -0.2},
        {"type": "relu", "alpha": 0.1},
        {"type": "softmax", "axis": 1.5},
        {"type": "celu", "alpha": 0.0},
        {"type": "squareplus", "b": -1.0},
        {"type": "threshold", "threshold": 0.5},
        "relu6x",
    ],
)
def test_invalid_arguments_are_rejected(config):
    with pytest.raises(ValidationError):
        ACTIVATIONS.create(config)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValidationError, match="did you mean 'relu6'"):
        ACTIVATIONS.create("relu6x")


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "elu", "hard_sigmoid", "softplus"])
def test_derivative_is_the_backward_of_ones(name):
    # The recurrent layers' σ' and g' factors: the shortcuts for sigmoid and tanh give what
    # backward of ones gives, into a strided block as the scans pass it.
    activation = ACTIVATIONS.create(name)
    z = np.random.default_rng(0).normal(size=(3, 4, 5))
    a = activation.forward(z.copy())
    out = np.full((3, 4, 8), np.nan)[..., 1:6]
    assert activation.derivative(z, a, out) is out
    np.testing.assert_array_equal(out, activation.backward(z, a, np.ones_like(z)))
