"""Noise and regularization layers: gradients with a fixed draw, the statistics of the draws,
identity at inference, seeds, and ActivityRegularization's penalty as Keras adds it."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.api import from_yaml
from kerspec.layers import LAYERS, Context, ShapeError
from tests.harness import build, check_layer_grads

GRAD_CASES = {
    "SpatialDropout1D": [({"type": "SpatialDropout1D", "rate": 0.5}, [(3, 4, 5)])],
    "SpatialDropout2D": [
        ({"type": "SpatialDropout2D", "rate": 0.4}, [(2, 3, 3, 4)]),
        (
            {"type": "SpatialDropout2D", "rate": 0.4, "data_format": "channels_first"},
            [(2, 4, 3, 3)],
        ),
    ],
    "SpatialDropout3D": [({"type": "SpatialDropout3D", "rate": 0.3, "seed": 3}, [(2, 2, 2, 2, 3)])],
    "GaussianNoise": [({"type": "GaussianNoise", "stddev": 0.5}, [(3, 4)])],
    "GaussianDropout": [({"type": "GaussianDropout", "rate": 0.3, "seed": 1}, [(3, 4)])],
    "ActivityRegularization": [
        ({"type": "ActivityRegularization", "l1": 0.1, "l2": 0.2}, [(3, 4)])
    ],
}


def test_every_noise_layer_has_a_gradient_case():
    names = {n for n in LAYERS.names() if LAYERS.get(n).__module__ == "kerspec.layers.noise"}
    assert set(GRAD_CASES) == names


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize(
    "config,shapes",
    [case for cases in GRAD_CASES.values() for case in cases],
    ids=lambda v: v.get("type") if isinstance(v, dict) else None,
)
def test_gradients(config, shapes, training):
    check_layer_grads(config, shapes, training=training)


def run(config, x, *, training=True, seed=0):
    (y,), _ = build(config).forward(
        {}, [x], Context(training=training, rng=np.random.default_rng(seed))
    )
    return y


@pytest.mark.parametrize(
    "config",
    [
        {"type": "SpatialDropout1D", "rate": 0.5},
        {"type": "SpatialDropout2D", "rate": 0.5},
        {"type": "GaussianNoise", "stddev": 0.3},
        {"type": "GaussianDropout", "rate": 0.5},
        {"type": "ActivityRegularization", "l1": 0.1},
    ],
)
def test_identity_at_inference(config):
    x = np.ones((2, 3, 4) if config["type"] != "SpatialDropout2D" else (2, 3, 4, 2), np.float32)
    assert run(config, x, training=False) is x


@pytest.mark.parametrize(
    "config,shape,spatial,channel",
    [
        ({"type": "SpatialDropout1D", "rate": 0.3}, (400, 5, 10), (1,), 2),
        ({"type": "SpatialDropout2D", "rate": 0.3}, (400, 3, 2, 10), (1, 2), 3),
        (
            {"type": "SpatialDropout2D", "rate": 0.3, "data_format": "channels_first"},
            (400, 10, 3, 2),
            (2, 3),
            1,
        ),
        ({"type": "SpatialDropout3D", "rate": 0.3}, (400, 2, 2, 2, 10), (1, 2, 3), 4),
    ],
)
def test_spatial_dropout_drops_whole_channels(config, shape, spatial, channel):
    y = run(config, np.ones(shape, np.float32))
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    # One draw per (sample, channel), constant over the spatial axes.
    assert np.all(y.min(axis=spatial) == y.max(axis=spatial))
    kept = y.max(axis=spatial) > 0
    assert kept.shape == (shape[0], shape[channel])
    assert abs(1 - kept.mean() - 0.3) < 0.03


def test_gaussian_noise_statistics():
    x = np.full((200, 100), 2.0, np.float32)
    y = run({"type": "GaussianNoise", "stddev": 0.4}, x)
    assert y.dtype == np.float32
    noise = y - x
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.4) < 0.01


def test_gaussian_dropout_statistics():
    x = np.full((200, 100), 3.0, np.float32)
    y = run({"type": "GaussianDropout", "rate": 0.2}, x)
    assert y.dtype == np.float32
    factor = y / x
    assert abs(factor.mean() - 1) < 0.01 and abs(factor.std() - np.sqrt(0.2 / 0.8)) < 0.01


def test_seeded_layers_draw_from_their_own_generator():
    config = {"type": "GaussianNoise", "stddev": 0.5, "seed": 42}
    x = np.zeros((3, 4), np.float32)
    # The run's generator (seed) does not matter; the layer's own seed does.
    a, b = run(config, x, seed=0), run(config, x, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run({**config, "seed": 43}, x))
    # Across batches, one seeded layer keeps drawing from the same stream.
    layer, ctx = build(config), Context(training=True, rng=np.random.default_rng(0))
    (first,), _ = layer.forward({}, [x], ctx)
    (second,), _ = layer.forward({}, [x], ctx)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    "config",
    [
        {"type": "GaussianNoise", "stddev": 1.5},
        {"type": "GaussianNoise", "stddev": -0.1},
        {"type": "GaussianDropout", "rate": 1.0},
        {"type": "SpatialDropout1D", "rate": 0.5, "data_format": "channels_last"},
        {"type": "SpatialDropout2D", "rate": 0.5, "noise_shape": [1, 1, 1, 1]},
        {"type": "ActivityRegularization", "l1": -0.1},
        {"type": "ActivityRegularization", "activity_regularizer": "l2"},
    ],
)
def test_rejected_arguments(config):
    with pytest.raises(ValidationError):
        build(config)


@pytest.mark.parametrize(
    "config,shape",
    [
        ({"type": "SpatialDropout1D", "rate": 0.5}, (3, 4, 5)),
        ({"type": "SpatialDropout2D", "rate": 0.5}, (3, 4)),
    ],
)
def test_spatial_dropout_rank(config, shape):
    with pytest.raises(ShapeError, match="rank"):
        build(config).output_shapes([shape])


def activity_model(l1, l2):
    return from_yaml(
        f"""
layers:
  - {{name: x, type: Input, shape: [3]}}
  - {{name: hidden, type: Dense, units: 4}}
  - {{name: reg, type: ActivityRegularization, l1: {l1}, l2: {l2}}}
""",
        seed=0,
    )


def test_activity_regularization_penalty_and_gradient():
    l1, l2 = 0.1, 0.2
    model = activity_model(l1, l2)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    ctx = Context(training=True, rng=rng)
    run = model.plan.forward(model.params, [x], ctx, record=True)
    (y,) = run.outputs
    # Keras divides an activity penalty by the batch size.
    expected = (l1 * np.abs(y).sum() + l2 * np.square(y).sum()) / len(y)
    np.testing.assert_allclose(run.penalty, expected, rtol=1e-5)
    grads = model.plan.backward(run.tape, [np.zeros_like(y)])
    dy = (l1 * np.sign(y) + 2 * l2 * y) / len(y)
    np.testing.assert_allclose(grads["hidden"]["kernel"], x.T @ dy, rtol=1e-5, atol=1e-7)


def test_activity_regularization_matches_keras():
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(7).standard_normal((6, 4)).astype(np.float32)
    layer = keras.layers.ActivityRegularization(l1=0.05, l2=0.3)
    layer(x)
    ours = build({"type": "ActivityRegularization", "l1": 0.05, "l2": 0.3}).activity_regularizer
    np.testing.assert_allclose(ours.penalty(x) / len(x), float(layer.losses[0]), rtol=1e-5)
