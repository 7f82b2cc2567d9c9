"""Merge layers: gradient checks (broadcasting included), Keras equivalence, shape errors."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.layers import LAYERS, Context, ShapeError
from tests.harness import build, check_layer_grads, compare_with_keras

GRAD_CASES = {
    "Add": [
        ({"type": "Add"}, [(2, 3), (2, 3), (2, 3)]),
        ({"type": "Add"}, [(2, 4, 3), (2, 3)]),
        ({"type": "Add"}, [(2, 1, 3), (2, 4, 1)]),
    ],
    "Subtract": [
        ({"type": "Subtract"}, [(2, 3), (2, 3)]),
        ({"type": "Subtract"}, [(2, 2, 4), (2, 1, 4)]),
    ],
    "Multiply": [
        ({"type": "Multiply"}, [(2, 3), (2, 3)]),
        ({"type": "Multiply"}, [(2, 2, 3), (2, 3), (2, 2, 1)]),
    ],
    "Average": [
        ({"type": "Average"}, [(2, 3), (2, 3), (2, 3)]),
        ({"type": "Average"}, [(2, 4, 3), (2, 1, 3)]),
    ],
    "Maximum": [
        ({"type": "Maximum"}, [(2, 3), (2, 3), (2, 3)]),
        ({"type": "Maximum"}, [(2, 2, 3), (2, 3)]),
    ],
    "Minimum": [
        ({"type": "Minimum"}, [(2, 3), (2, 3)]),
        ({"type": "Minimum"}, [(2, 2, 1), (2, 2, 3), (2, 3)]),
    ],
    "Dot": [
        ({"type": "Dot", "axes": -1}, [(3, 4), (3, 4)]),
        ({"type": "Dot", "axes": [1, 2]}, [(2, 3, 5), (2, 4, 3)]),
        ({"type": "Dot", "axes": 1, "normalize": True}, [(2, 3, 4), (2, 3)]),
        ({"type": "Dot", "axes": [3, 1], "normalize": True}, [(2, 2, 3, 4), (2, 4, 2)]),
        ({"type": "Dot", "axes": [-1, -2]}, [(2, 3), (2, 3, 2)]),
    ],
}


def test_every_merge_layer_has_a_gradient_case():
    # Concatenate is checked with the core layers (tests/test_layers_core.py).
    names = {n for n in LAYERS.names() if LAYERS.get(n).__module__ == "kerspec.layers.merge"}
    assert set(GRAD_CASES) == names - {"Concatenate"}


@pytest.mark.parametrize(
    "config,shapes",
    [case for cases in GRAD_CASES.values() for case in cases],
    ids=lambda v: v.get("type") if isinstance(v, dict) else None,
)
def test_gradients(config, shapes):
    check_layer_grads(config, shapes)


def test_maximum_tie_goes_to_the_first_input():
    x = np.array([[1.0, 2.0]], np.float32)
    layer = build({"type": "Maximum"})
    (y,), backprop = layer.forward({}, [x, x.copy()], Context(training=True, rng=None))
    dxs, _ = backprop([np.ones_like(y)])
    np.testing.assert_array_equal(dxs[0], [[1, 1]])
    np.testing.assert_array_equal(dxs[1], [[0, 0]])


def test_outputs_keep_float32_and_are_fresh_arrays():
    x = np.ones((2, 3), np.float32)
    for name in ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]:
        (y,), _ = build({"type": name}).forward({}, [x, x], Context(training=False, rng=None))
        assert y.dtype == np.float32
        assert not np.shares_memory(y, x)


def test_dot_with_a_zero_vector_is_finite():
    x = np.zeros((2, 3), np.float32)
    z = np.ones((2, 3), np.float32)
    (y,), backprop = build({"type": "Dot", "axes": 1, "normalize": True}).forward(
        {}, [x, z], Context(training=True, rng=None)
    )
    dxs, _ = backprop([np.ones_like(y)])
    assert np.all(y == 0) and all(np.isfinite(d).all() for d in dxs)


@pytest.mark.parametrize(
    "config,shapes,message",
    [
        ({"type": "Add"}, [(3,), (4,)], r"incompatible shapes; received \(None, 3\), \(None, 4\)"),
        (
            {"type": "Maximum"},
            [(2, 3), (3,), (2, 4)],
            r"\(None, 2, 3\), \(None, 3\), \(None, 2, 4\)",
        ),
        ({"type": "Dot", "axes": 1}, [(3,), (4,)], r"pair sizes 3 and 4"),
        ({"type": "Dot", "axes": 3}, [(3, 2), (3, 2)], "out of range"),
        ({"type": "Dot", "axes": -1}, [(), (3,)], "rank 2 or more"),
    ],
)
def test_shape_errors(config, shapes, message):
    with pytest.raises(ShapeError, match=message):
        build(config).output_shapes(shapes)


@pytest.mark.parametrize(
    "config,shapes,expected",
    [
        ({"type": "Add"}, [(4, 3), (3,)], (4, 3)),
        ({"type": "Multiply"}, [(1, 3), (4, 1)], (4, 3)),
        ({"type": "Average"}, [(None, 3), (1, 3)], (None, 3)),
        ({"type": "Dot", "axes": [1, 2]}, [(3, 5), (4, 3)], (5, 4)),
        ({"type": "Dot", "axes": 1}, [(3,), (3,)], (1,)),
    ],
)
def test_output_shapes(config, shapes, expected):
    assert build(config).output_shapes(shapes) == [expected]


@pytest.mark.parametrize("axes", [0, [0, 1], [1, 2, 3]])
def test_dot_rejects_bad_axes(axes):
    with pytest.raises(ValidationError):
        build({"type": "Dot", "axes": axes})


KERAS_CASES = [
    ({"type": "Add"}, lambda k: k.layers.Add(), [(2, 3), (2, 3), (2, 3)]),
    ({"type": "Add"}, lambda k: k.layers.Add(), [(2, 4, 3), (2, 3)]),
    ({"type": "Subtract"}, lambda k: k.layers.Subtract(), [(2, 2, 4), (2, 1, 4)]),
    ({"type": "Multiply"}, lambda k: k.layers.Multiply(), [(2, 2, 3), (2, 3), (2, 2, 1)]),
    ({"type": "Average"}, lambda k: k.layers.Average(), [(2, 4, 3), (2, 1, 3)]),
    ({"type": "Maximum"}, lambda k: k.layers.Maximum(), [(2, 3), (2, 3), (2, 3)]),
    ({"type": "Minimum"}, lambda k: k.layers.Minimum(), [(2, 2, 3), (2, 3)]),
    ({"type": "Dot", "axes": 1}, lambda k: k.layers.Dot(axes=1), [(3, 4), (3, 4)]),
    ({"type": "Dot", "axes": [1, 2]}, lambda k: k.layers.Dot(axes=(1, 2)), [(2, 3, 5), (2, 4, 3)]),
    (
        {"type": "Dot", "axes": -1, "normalize": True},
        lambda k: k.layers.Dot(axes=-1, normalize=True),
        [(2, 3, 4), (2, 5, 4)],
    ),
    (
        {"type": "Dot", "axes": [3, 1], "normalize": True},
        lambda k: k.layers.Dot(axes=(3, 1), normalize=True),
        [(2, 2, 3, 4), (2, 4, 2)],
    ),
    ({"type": "Dot", "axes": [1, 2]}, lambda k: k.layers.Dot(axes=(1, 2)), [(2, 3), (2, 4, 3)]),
]


@pytest.mark.parametrize(
    "config,make,shapes", KERAS_CASES, ids=lambda v: v.get("type") if isinstance(v, dict) else None
)
def test_matches_keras(config, make, shapes):
    keras = pytest.importorskip("keras")
    compare_with_keras(config, make(keras), shapes)


def test_masks_as_keras_merges_them():
    a = np.array([[True, False, False]])
    b = np.array([[False, False, True]])
    for name in ["Add", "Subtract", "Average"]:
        layer = build({"type": name})
        assert layer.output_masked([True, True], 1) == [True]
        assert layer.output_masked([True, False], 1) == [False]  # Keras: None if any is None
        np.testing.assert_array_equal(layer.compute_mask([], [a, b], [None])[0], a | b)
    assert build({"type": "Dot", "axes": 1}).output_masked([True, True], 1) == [False]
    for name in ["Multiply", "Maximum", "Minimum"]:
        assert not build({"type": name}).supports_masking
