"""BatchNormalization and LayerNormalization: gradients in every mode, Keras equivalence
(outputs, gradients, and BatchNormalization's moving statistics after a training call)."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.layers import LAYERS, Context, ShapeError
from tests.gradcheck import check_grads
from tests.harness import build, check_layer_grads, compare_with_keras


def bn_weights(layer, shape, rng, dtype=np.float64):
    """Random weights with a positive moving variance (the harness draws any sign)."""
    specs = layer.weights([tuple(shape[1:])])
    w = {s.name: (rng.standard_normal(s.shape) * 0.5).astype(dtype) for s in specs}
    w["moving_variance"] = (np.abs(w["moving_variance"]) + 0.5).astype(dtype)
    return w


def check_bn_grads(config, shape, *, training):
    """Gradients of the input, gamma and beta; the moving statistics are state, not trained."""
    rng = np.random.default_rng(0)
    layer = build(config)
    x = rng.standard_normal(shape)
    w = bn_weights(layer, shape, rng)

    def forward():
        ctx = Context(training=training, rng=np.random.default_rng(0))
        (y,), backprop = layer.forward(w, [x], ctx)
        assert y.dtype == np.float64

        def grads(dy):
            dxs, dws = backprop([dy])
            assert set(dws) == {"gamma", "beta"} & set(w)
            return {"x": dxs[0], **dws}

        return y, grads

    check_grads(forward, {"x": x, **{k: v for k, v in w.items() if not k.startswith("moving")}})


GRAD_CASES = {
    "BatchNormalization": [
        ({"type": "BatchNormalization"}, (4, 3), True),
        ({"type": "BatchNormalization"}, (4, 3), False),
        ({"type": "BatchNormalization", "axis": 1}, (3, 2, 4), True),
        ({"type": "BatchNormalization", "axis": 1}, (3, 2, 4), False),
        ({"type": "BatchNormalization", "center": False}, (2, 3, 2), True),
        ({"type": "BatchNormalization", "scale": False, "axis": -2}, (3, 2, 2), True),
        # A convolution's output: channels last over a 2-D (rows, channels) view.
        ({"type": "BatchNormalization"}, (2, 3, 2, 3), True),
        ({"type": "BatchNormalization"}, (2, 3, 2, 3), False),
        ({"type": "BatchNormalization", "axis": 1, "center": False, "scale": False}, (3, 2, 4), True),
    ],
    "LayerNormalization": [
        ({"type": "LayerNormalization"}, (3, 4), None),
        ({"type": "LayerNormalization", "axis": [1, 2]}, (2, 3, 4), None),
        ({"type": "LayerNormalization", "axis": [1, 3]}, (2, 2, 3, 2), None),
        ({"type": "LayerNormalization", "axis": 1, "scale": False}, (2, 3, 2), None),
        ({"type": "LayerNormalization", "center": False}, (3, 4), None),
    ],
}


def test_every_normalization_layer_has_a_gradient_case():
    names = {
        n for n in LAYERS.names() if LAYERS.get(n).__module__ == "kerspec.layers.normalization"
    }
    assert set(GRAD_CASES) == names


@pytest.mark.parametrize(
    "config,shape,training",
    [case for cases in GRAD_CASES.values() for case in cases],
    ids=lambda v: v.get("type") if isinstance(v, dict) else None,
)
def test_gradients(config, shape, training):
    if config["type"] == "BatchNormalization":
        check_bn_grads(config, shape, training=training)
    else:
        check_layer_grads(config, [shape])


def test_batch_normalization_updates_moving_statistics_in_training_only():
    rng = np.random.default_rng(1)
    layer = build({"type": "BatchNormalization", "momentum": 0.9})
    x = rng.standard_normal((8, 3)).astype(np.float32)
    w = bn_weights(layer, x.shape, rng, np.float32)
    before = {k: v.copy() for k, v in w.items()}
    layer.forward(w, [x], Context(training=False, rng=rng))
    for k in w:
        np.testing.assert_array_equal(w[k], before[k])
    (y,), _ = layer.forward(w, [x], Context(training=True, rng=rng))
    assert y.dtype == np.float32 and w["moving_mean"].dtype == np.float32
    expected_mean = before["moving_mean"] * 0.9 + x.mean(0) * 0.1
    expected_var = before["moving_variance"] * 0.9 + x.var(0) * 0.1  # biased variance
    np.testing.assert_allclose(w["moving_mean"], expected_mean, rtol=1e-6)
    np.testing.assert_allclose(w["moving_variance"], expected_var, rtol=1e-6)
    # The batch statistics normalise the output in training.
    np.testing.assert_allclose(((y - w["beta"]) / w["gamma"]).mean(0), 0, atol=1e-5)


def test_batch_normalization_of_a_constant_channel_is_finite():
    # E[x^2] - E[x]^2 of a channel far from zero with no spread can round below zero in float32;
    # the variance is clipped at 0, so the output is beta, not NaN (up to the rounding of
    # x * scale + shift: float32 epsilon times mean * scale, 1000 * 31.6 here).
    layer = build({"type": "BatchNormalization"})
    x = np.full((64, 2), 1000.1, np.float32)
    x[:, 1] = np.linspace(-1, 1, 64)
    w = bn_weights(layer, x.shape, np.random.default_rng(5), np.float32)
    (y,), backprop = layer.forward(w, [x], Context(training=True, rng=np.random.default_rng(0)))
    (dx,), grads = backprop([np.ones_like(x)])
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_allclose(y[:, 0], w["beta"][0], atol=0.02)
    assert w["moving_variance"][0] >= 0


@pytest.mark.parametrize("training", [True, False])
def test_batch_normalization_gradient_of_a_strided_dy(training):
    # dy as a strided view (a channels_first layer's, a transpose) gives the same dx.
    rng = np.random.default_rng(6)
    layer = build({"type": "BatchNormalization"})
    x = rng.standard_normal((4, 3, 5))
    w = bn_weights(layer, x.shape, rng)
    dy = rng.standard_normal((4, 5, 3))
    dxs = []
    for given in (dy.transpose(0, 2, 1), np.ascontiguousarray(dy.transpose(0, 2, 1))):
        ctx = Context(training=training, rng=rng)
        _, backprop = layer.forward({k: v.copy() for k, v in w.items()}, [x], ctx)
        dxs.append(backprop([given.copy() if given.flags.c_contiguous else given])[0][0])
    np.testing.assert_allclose(dxs[0], dxs[1], rtol=1e-12)


def test_frozen_batch_normalization_uses_moving_statistics_in_training():
    rng = np.random.default_rng(2)
    frozen = build({"type": "BatchNormalization", "trainable": False})
    x = rng.standard_normal((5, 3))
    w = bn_weights(frozen, x.shape, rng)
    before = w["moving_mean"].copy()
    (y_train,), _ = frozen.forward(w, [x], Context(training=True, rng=rng))
    (y_infer,), _ = frozen.forward(w, [x], Context(training=False, rng=rng))
    np.testing.assert_array_equal(y_train, y_infer)
    np.testing.assert_array_equal(w["moving_mean"], before)


def test_batch_normalization_weights():
    layer = build({"type": "BatchNormalization", "axis": 1, "center": False})
    specs = layer.weights([(4, 5)])
    assert [(s.name, s.shape, s.trainable) for s in specs] == [
        ("gamma", (4,), True),
        ("moving_mean", (4,), False),
        ("moving_variance", (4,), False),
    ]


@pytest.mark.parametrize(
    "config",
    [
        {"type": "BatchNormalization", "synchronized": True},
        {"type": "BatchNormalization", "renorm": True},
        {"type": "BatchNormalization", "renorm_clipping": {"rmax": 3}},
        {"type": "BatchNormalization", "axis": [1, 2]},
        {"type": "BatchNormalization", "momentum": 1.5},
        {"type": "LayerNormalization", "rms_scaling": True},
        {"type": "LayerNormalization", "axis": [1, 1]},
        {"type": "LayerNormalization", "axis": []},
    ],
)
def test_rejected_arguments(config):
    with pytest.raises(ValidationError):
        build(config)


@pytest.mark.parametrize(
    "config,shape,message",
    [
        ({"type": "BatchNormalization", "axis": 0}, (3,), "batch axis"),
        ({"type": "BatchNormalization", "axis": 3}, (3, 2), "out of range"),
        ({"type": "LayerNormalization", "axis": [-1, 2]}, (3, 2), "twice"),
        ({"type": "LayerNormalization", "axis": -4}, (3, 2), "out of range"),
    ],
)
def test_shape_errors(config, shape, message):
    with pytest.raises(ShapeError, match=message):
        build(config).output_shapes([shape])


def keras_batch_normalization(keras, config, w, x, r, training):
    """Keras's outputs, input and weight gradients of sum(y * r), and weights after the call."""
    import torch

    kwargs = {k: v for k, v in config.items() if k != "type"}
    layer = keras.layers.BatchNormalization(**kwargs)
    layer.build(x.shape)
    for variable in layer.weights:
        variable.assign(w[variable.path.split("/")[-1]])
    x_torch = torch.tensor(x, requires_grad=True)
    y = layer(x_torch, training=training)
    (y * torch.tensor(r)).sum().backward()
    grads = {v.path.split("/")[-1]: v.value.grad.numpy() for v in layer.trainable_weights}
    after = {v.path.split("/")[-1]: v.numpy() for v in layer.weights}
    return y.detach().numpy(), x_torch.grad.numpy(), grads, after


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize(
    "config,shape",
    [
        ({"type": "BatchNormalization"}, (6, 3)),
        ({"type": "BatchNormalization", "axis": 1, "momentum": 0.8, "epsilon": 0.01}, (4, 3, 2)),
        ({"type": "BatchNormalization", "center": False}, (5, 2, 3)),
        ({"type": "BatchNormalization"}, (8, 6, 5, 4)),
        ({"type": "BatchNormalization", "axis": 1, "scale": False}, (8, 3, 5, 2)),
    ],
)
def test_batch_normalization_matches_keras(config, shape, training):
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(3)
    layer = build(config)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    w = bn_weights(layer, shape, rng, np.float32)
    r = rng.standard_normal(shape).astype(np.float32)
    k_y, k_dx, k_grads, k_after = keras_batch_normalization(keras, config, w, x, r, training)

    (y,), backprop = layer.forward(w, [x], Context(training=training, rng=rng))
    (dx,), grads = backprop([r.copy()])
    np.testing.assert_allclose(y, k_y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, k_dx, rtol=1e-4, atol=1e-4)
    assert set(grads) == set(k_grads)
    for name in grads:
        np.testing.assert_allclose(grads[name], k_grads[name], rtol=1e-4, atol=1e-4, err_msg=name)
    for name in k_after:  # moving statistics after the call (updated only in training)
        np.testing.assert_allclose(w[name], k_after[name], rtol=1e-5, atol=1e-6, err_msg=name)


KERAS_CASES = [
    ({"type": "LayerNormalization"}, lambda k: k.layers.LayerNormalization(), [(3, 5)]),
    (
        {"type": "LayerNormalization", "axis": [1, 2], "epsilon": 0.01},
        lambda k: k.layers.LayerNormalization(axis=[1, 2], epsilon=0.01),
        [(2, 3, 4)],
    ),
    (
        {"type": "LayerNormalization", "axis": [1, 3]},
        lambda k: k.layers.LayerNormalization(axis=[1, 3]),
        [(2, 2, 3, 2)],
    ),
    (
        {"type": "LayerNormalization", "axis": [1, 2], "center": False},
        lambda k: k.layers.LayerNormalization(axis=[1, 2], center=False),
        [(2, 3, 2)],
    ),
]


@pytest.mark.parametrize("config,make,shapes", KERAS_CASES)
def test_layer_normalization_matches_keras(config, make, shapes):
    keras = pytest.importorskip("keras")
    compare_with_keras(config, make(keras), shapes)


def test_layer_normalization_over_a_middle_axis():
    # Keras's torch backend hands contiguous axes to F.layer_norm, which normalizes the trailing
    # axes instead (axis=1 of a rank-3 input fails there); TF and JAX follow the formula.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    gamma, beta = (
        rng.standard_normal(3).astype(np.float32),
        rng.standard_normal(3).astype(np.float32),
    )
    layer = build({"type": "LayerNormalization", "axis": 1})
    (y,), _ = layer.forward({"gamma": gamma, "beta": beta}, [x], Context(training=False, rng=rng))
    mean, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma[:, None] + beta[:, None]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert y.dtype == np.float32


BRANCH = """
dtype: float64
seed: 1
layers:
  - {type: Input, shape: [3], name: a}
  - {type: Dense, units: 5, name: d0}
  - {type: Dense, units: 5, name: d1}
  - {type: BatchNormalization, name: bn}
  - {type: Add, from: [bn, d0], name: merge}
  - {type: Dense, units: 2, name: head}
"""


def test_whole_plan_gradients_with_batch_normalization_before_add():
    """Add hands one dy to both of its inputs: BatchNormalization's backward must not write its
    dx over it (R4's residual blocks), or the other branch's gradient is wrong."""
    import kerspec

    model = kerspec.from_yaml(BRANCH)
    xs = [np.random.default_rng(0).standard_normal((6, 3))]
    wrt = {
        f"{o}/{n}": w
        for o, ws in model.params.items()
        for n, w in ws.items()
        if not n.startswith("moving")
    }

    def forward():
        ctx = Context(training=True, rng=np.random.default_rng(0))
        run = model.plan.forward(model.params, xs, ctx, record=True)

        def backprop(dy):
            grads = model.plan.backward(run.tape, [dy])
            return {f"{o}/{n}": g for o, gs in grads.items() for n, g in gs.items()}

        return run.outputs[0], backprop

    check_grads(forward, wrt)


CROPPED = """
dtype: float64
layers:
  - {type: Input, shape: [4, 4, 1], name: x}
  - {type: Cropping2D, cropping: 1, name: crop}
  - {type: BatchNormalization, name: bn}
  - {type: Flatten, name: flat}
  - {type: Dense, units: 2, name: head}
compile: {optimizer: sgd, loss: mse}
"""


def test_batch_normalization_of_a_strided_view_trains():
    """A Cropping2D's output is a strided view of its input; BatchNormalization's contiguous
    output buffer must take it in training (found by tests/test_plan_fuzz.py)."""
    import kerspec
    from tests.wholeplan import check_training_gradients

    model = kerspec.from_yaml(CROPPED)
    rng = np.random.default_rng(0)
    check_training_gradients(model, [rng.standard_normal((3, 4, 4, 1))], [rng.standard_normal((3, 2))])
