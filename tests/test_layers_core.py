"""Core layers: gradient checks for every mode, and Keras equivalence."""

import numpy as np
import pytest

from kerspec.layers import LAYERS, ShapeError
from tests.harness import build, check_layer_grads, compare_with_keras

GRAD_CASES = {
    "Dense": [
        ({"type": "Dense", "units": 3}, [(4, 5)]),
        ({"type": "Dense", "units": 2, "activation": "tanh", "use_bias": False}, [(3, 2, 4)]),
        ({"type": "Dense", "units": 3, "activation": "softmax"}, [(4, 5)]),
    ],
    "Activation": [({"type": "Activation", "activation": "sigmoid"}, [(3, 4)])],
    "Dropout": [
        ({"type": "Dropout", "rate": 0.3}, [(4, 6)]),
        ({"type": "Dropout", "rate": 0.5, "noise_shape": [None, 1, 3]}, [(2, 4, 3)]),
    ],
    "Flatten": [
        ({"type": "Flatten"}, [(2, 3, 4)]),
        ({"type": "Flatten", "data_format": "channels_first"}, [(2, 3, 4, 2)]),
    ],
    "Reshape": [({"type": "Reshape", "target_shape": [3, -1]}, [(2, 6)])],
    "Permute": [({"type": "Permute", "dims": [2, 3, 1]}, [(2, 3, 4, 5)])],
    "Masking": [({"type": "Masking", "mask_value": 7.0}, [(2, 3, 4)])],
    "Concatenate": [
        ({"type": "Concatenate"}, [(2, 3), (2, 4)]),
        ({"type": "Concatenate", "axis": 1}, [(2, 3, 4), (2, 1, 4), (2, 2, 4)]),
    ],
}


def test_every_core_layer_has_a_gradient_case():
    core = {n for n in LAYERS.names() if LAYERS.get(n).__module__ == "kerspec.layers.core"}
    assert core - {"Input"} <= set(GRAD_CASES)


def test_every_layer_family_has_a_coverage_test():
    """Each module that registers layers has a test asserting each of its layers is checked."""
    covered = {
        "kerspec.layers.core": "test_layers_core",
        "kerspec.layers.merge": "test_layers_merge",
        "kerspec.layers.conv": "test_layers_reshaping",
        "kerspec.layers.pooling": "test_layers_reshaping",
        "kerspec.layers.reshaping": "test_layers_reshaping",
        "kerspec.layers.recurrent.simple_rnn": "test_layers_recurrent",
        "kerspec.layers.recurrent.lstm": "test_layers_recurrent",
        "kerspec.layers.recurrent.gru": "test_layers_recurrent",
        "kerspec.layers.normalization": "test_layers_normalization",
        "kerspec.layers.embedding": "test_layers_embedding",
        "kerspec.layers.noise": "test_layers_noise",
        "kerspec.layers.lambda_": "test_layers_lambda",
        "kerspec.layers.wrappers": "test_layers_wrappers",
    }
    modules = {LAYERS.get(n).__module__ for n in LAYERS.names()}
    assert modules <= set(covered)


@pytest.mark.parametrize(
    "config,shapes", [case for cases in GRAD_CASES.values() for case in cases],
    ids=lambda v: v.get("type") if isinstance(v, dict) else None,
)
def test_gradients(config, shapes):
    check_layer_grads(config, shapes, training=True)


def test_dropout_is_identity_at_inference():
    layer = build({"type": "Dropout", "rate": 0.5})
    from kerspec.layers import Context

    x = np.ones((3, 4), np.float32)
    (y,), _ = layer.forward({}, [x], Context(training=False, rng=np.random.default_rng(0)))
    assert y is x


def test_dropout_scales_kept_values():
    from kerspec.layers import Context

    layer = build({"type": "Dropout", "rate": 0.25})
    x = np.ones((200, 50), np.float32)
    (y,), _ = layer.forward({}, [x], Context(training=True, rng=np.random.default_rng(0)))
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    assert y.dtype == np.float32


@pytest.mark.parametrize(
    "config,shape,message",
    [
        ({"type": "Reshape", "target_shape": [4]}, (6,), "cannot reshape"),
        ({"type": "Permute", "dims": [2, 1]}, (2, 3, 4), "dims"),
        ({"type": "Dropout", "rate": 0.5, "noise_shape": [1]}, (3,), "noise_shape"),
    ],
)
def test_shape_errors(config, shape, message):
    with pytest.raises(ShapeError, match=message):
        build(config).output_shapes([shape])


KERAS_CASES = [
    ({"type": "Dense", "units": 3}, lambda k: k.layers.Dense(3), [(4, 5)]),
    ({"type": "Dense", "units": 3, "activation": "relu"}, lambda k: k.layers.Dense(3, activation="relu"), [(4, 2, 5)]),
    ({"type": "Dense", "units": 4, "activation": "softmax", "use_bias": False},
     lambda k: k.layers.Dense(4, activation="softmax", use_bias=False), [(3, 5)]),
    ({"type": "Activation", "activation": "tanh"}, lambda k: k.layers.Activation("tanh"), [(3, 4)]),
    ({"type": "Flatten"}, lambda k: k.layers.Flatten(), [(2, 3, 4)]),
    ({"type": "Flatten", "data_format": "channels_first"},
     lambda k: k.layers.Flatten(data_format="channels_first"), [(2, 3, 4, 2)]),
    ({"type": "Reshape", "target_shape": [2, -1]}, lambda k: k.layers.Reshape((2, -1)), [(2, 6)]),
    ({"type": "Permute", "dims": [2, 1]}, lambda k: k.layers.Permute((2, 1)), [(2, 3, 4)]),
    ({"type": "Concatenate", "axis": 1}, lambda k: k.layers.Concatenate(axis=1), [(2, 3, 4), (2, 2, 4)]),
    ({"type": "Dropout", "rate": 0.5}, lambda k: k.layers.Dropout(0.5), [(3, 4)]),
]


@pytest.mark.parametrize("config,make,shapes", KERAS_CASES, ids=lambda v: v.get("type") if isinstance(v, dict) else None)
def test_matches_keras(config, make, shapes):
    keras = pytest.importorskip("keras")
    compare_with_keras(config, make(keras), shapes)
