"""ZeroPadding, Cropping, UpSampling and RepeatVector: gradient checks, Keras equivalence,
shape and argument errors; and the coverage check over every layer of conv/pooling/reshaping."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.layers import LAYERS, Context, ShapeError, conv, pooling, reshaping
from tests import test_layers_conv, test_layers_pooling
from tests.harness import build, check_layer_grads, compare_with_keras

GRAD_CASES = {
    "ZeroPadding1D": [
        ({"type": "ZeroPadding1D"}, [(2, 4, 3)]),
        (
            {"type": "ZeroPadding1D", "padding": [0, 2], "data_format": "channels_first"},
            [(2, 3, 4)],
        ),
    ],
    "ZeroPadding2D": [
        ({"type": "ZeroPadding2D", "padding": [[1, 0], [2, 1]]}, [(2, 3, 4, 2)]),
        (
            {"type": "ZeroPadding2D", "padding": [1, 2], "data_format": "channels_first"},
            [(2, 2, 3, 4)],
        ),
        ({"type": "ZeroPadding2D", "padding": [[0, 1], 2]}, [(2, 3, 3, 1)]),
    ],
    "Cropping1D": [
        ({"type": "Cropping1D"}, [(2, 5, 3)]),
        ({"type": "Cropping1D", "cropping": [0, 2]}, [(2, 5, 3)]),
    ],
    "Cropping2D": [
        ({"type": "Cropping2D", "cropping": [[1, 0], [2, 1]]}, [(2, 4, 5, 2)]),
        ({"type": "Cropping2D", "cropping": 1, "data_format": "channels_first"}, [(2, 2, 4, 5)]),
        ({"type": "Cropping2D", "cropping": [1, 0]}, [(2, 4, 3, 2)]),
    ],
    "UpSampling1D": [
        ({"type": "UpSampling1D"}, [(2, 3, 2)]),
        ({"type": "UpSampling1D", "size": 3}, [(2, 3, 2)]),
    ],
    "UpSampling2D": [
        ({"type": "UpSampling2D", "size": [2, 3]}, [(2, 3, 2, 2)]),
        ({"type": "UpSampling2D", "data_format": "channels_first"}, [(2, 2, 3, 2)]),
    ],
    "RepeatVector": [({"type": "RepeatVector", "n": 3}, [(2, 4)])],
}
CASES = [case for cases in GRAD_CASES.values() for case in cases]


def _ids(value):
    if isinstance(value, dict):
        return "-".join(f"{k}={v}" for k, v in value.items() if k != "type") or value["type"]
    return None


def _keras_args(config):
    def tupled(v):
        return tuple(tupled(e) for e in v) if isinstance(v, list) else v

    return {k: tupled(v) for k, v in config.items() if k != "type"}


@pytest.mark.parametrize("config,shapes", CASES, ids=_ids)
def test_gradients(config, shapes):
    check_layer_grads(config, shapes)


@pytest.mark.parametrize("config,shapes", CASES, ids=_ids)
def test_matches_keras(config, shapes):
    keras = pytest.importorskip("keras")
    compare_with_keras(config, getattr(keras.layers, config["type"])(**_keras_args(config)), shapes)


@pytest.mark.parametrize(
    "config,shape",
    [
        ({"type": "ZeroPadding2D", "padding": [[1, 0], [2, 3]]}, (None, 4, 3)),
        (
            {"type": "Cropping2D", "cropping": [[1, 0], [2, 1]], "data_format": "channels_first"},
            (3, 5, 6),
        ),
        ({"type": "UpSampling2D", "size": [2, 3]}, (4, None, 2)),
        ({"type": "UpSampling1D", "size": 4}, (3, 2)),
        ({"type": "RepeatVector", "n": 5}, (3,)),
    ],
    ids=_ids,
)
def test_output_shape_matches_keras(config, shape):
    keras = pytest.importorskip("keras")
    layer = getattr(keras.layers, config["type"])(**_keras_args(config))
    expected = layer.compute_output_shape((None, *shape))
    assert build(config).output_shapes([shape]) == [tuple(expected[1:])]


def test_float32_outputs_and_gradients(rng):
    x = rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    for config in (
        {"type": "UpSampling2D"},
        {"type": "ZeroPadding2D"},
        {"type": "Cropping2D", "cropping": 1},
    ):
        (y,), backprop = build(config).forward({}, [x], Context(training=True, rng=rng))
        (dx,), _ = backprop([np.ones_like(y)])
        assert y.dtype == dx.dtype == np.float32 and dx.shape == x.shape


@pytest.mark.parametrize(
    "config,shape,message",
    [
        ({"type": "Cropping1D", "cropping": [2, 3]}, (5, 2), "at least one"),
        ({"type": "Cropping2D", "cropping": [[0, 0], [2, 2]]}, (5, 4, 1), "at least one"),
        ({"type": "Cropping2D", "cropping": 1}, (5, 4), "rank 4"),
        ({"type": "ZeroPadding2D"}, (5, 4), "rank 4"),
        ({"type": "ZeroPadding1D"}, (5,), "rank 3"),
        ({"type": "UpSampling1D"}, (5, 4, 2), "rank 3"),
        ({"type": "UpSampling2D"}, (5, 4), "rank 4"),
        ({"type": "RepeatVector", "n": 2}, (5, 4), "rank 2"),
    ],
)
def test_shape_errors(config, shape, message):
    with pytest.raises(ShapeError, match=message):
        build(config).output_shapes([shape])


@pytest.mark.parametrize(
    "config,message",
    [
        ({"type": "UpSampling2D", "interpolation": "bilinear"}, "only 'nearest'"),
        ({"type": "UpSampling2D", "size": 0}, "greater than 0"),
        ({"type": "UpSampling2D", "size": [2, 2, 2]}, "list of 2"),
        ({"type": "UpSampling1D", "size": 0}, "greater than 0"),
        ({"type": "UpSampling1D", "data_format": "channels_first"}, "Extra inputs"),
        ({"type": "RepeatVector", "n": 0}, "greater than 0"),
        ({"type": "RepeatVector"}, "Field required"),
        ({"type": "ZeroPadding1D", "padding": -1}, "greater than or equal to 0"),
        ({"type": "ZeroPadding1D", "padding": [1, 2, 3]}, "list of 2"),
        ({"type": "ZeroPadding2D", "padding": [1, 2, 3]}, "2 pairs"),
        ({"type": "Cropping2D", "cropping": [[1, 2, 3], [0, 0]]}, "list of 2"),
        ({"type": "Cropping1D", "data_format": "channels_first"}, "Extra inputs"),
    ],
    ids=_ids,
)
def test_invalid_arguments(config, message):
    with pytest.raises(ValidationError, match=message):
        build(config)


def test_every_layer_of_these_families_has_gradient_and_keras_cases():
    """A layer registered in conv/pooling/reshaping without a gradient case fails here (the Keras
    comparisons run over the same cases)."""
    families = {conv.__name__, pooling.__name__, reshaping.__name__}
    registered = {name for name in LAYERS.names() if LAYERS.get(name).__module__ in families}
    covered = {**test_layers_conv.GRAD_CASES, **test_layers_pooling.GRAD_CASES, **GRAD_CASES}
    assert registered == set(covered)
    assert all(covered.values())
