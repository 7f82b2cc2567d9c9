"""Pooling layers: gradient checks for every mode, Keras equivalence, TF's `same` averaging,
shape and argument errors."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.layers import Context, ShapeError
from kerspec.layers.conv import pad_amounts, split_channels
from tests.harness import build, check_layer_grads, compare_with_keras

GRAD_CASES = {
    "MaxPooling1D": [
        ({"type": "MaxPooling1D"}, [(2, 5, 3)]),
        ({"type": "MaxPooling1D", "pool_size": 3, "strides": 1}, [(2, 6, 2)]),
        ({"type": "MaxPooling1D", "padding": "same", "data_format": "channels_first"}, [(2, 3, 5)]),
    ],
    "MaxPooling2D": [
        ({"type": "MaxPooling2D"}, [(2, 5, 6, 2)]),
        (
            {"type": "MaxPooling2D", "pool_size": [2, 3], "strides": [1, 2], "padding": "same"},
            [(2, 5, 6, 2)],
        ),
        (
            {"type": "MaxPooling2D", "pool_size": 3, "strides": 2, "data_format": "channels_first"},
            [(2, 2, 5, 6)],
        ),
    ],
    "AveragePooling1D": [
        ({"type": "AveragePooling1D", "pool_size": 2, "strides": 1}, [(2, 5, 3)]),
        (
            {"type": "AveragePooling1D", "pool_size": 3, "strides": 2, "padding": "same"},
            [(2, 6, 2)],
        ),
        (
            {"type": "AveragePooling1D", "pool_size": [2], "data_format": "channels_first"},
            [(2, 3, 5)],
        ),
    ],
    "AveragePooling2D": [
        ({"type": "AveragePooling2D", "pool_size": 2}, [(2, 5, 6, 2)]),
        ({"type": "AveragePooling2D", "pool_size": 2, "padding": "same"}, [(2, 5, 5, 2)]),
        (
            {
                "type": "AveragePooling2D",
                "pool_size": 3,
                "strides": 1,
                "padding": "same",
                "data_format": "channels_first",
            },
            [(2, 2, 5, 4)],
        ),
    ],
    "GlobalMaxPooling1D": [
        ({"type": "GlobalMaxPooling1D"}, [(2, 5, 3)]),
        (
            {"type": "GlobalMaxPooling1D", "data_format": "channels_first", "keepdims": True},
            [(2, 3, 5)],
        ),
    ],
    "GlobalMaxPooling2D": [
        ({"type": "GlobalMaxPooling2D", "keepdims": True}, [(2, 3, 4, 2)]),
        ({"type": "GlobalMaxPooling2D", "data_format": "channels_first"}, [(2, 2, 3, 4)]),
    ],
    "GlobalAveragePooling1D": [
        ({"type": "GlobalAveragePooling1D"}, [(2, 5, 3)]),
        (
            {"type": "GlobalAveragePooling1D", "data_format": "channels_first", "keepdims": True},
            [(2, 3, 5)],
        ),
    ],
    "GlobalAveragePooling2D": [
        ({"type": "GlobalAveragePooling2D"}, [(2, 3, 4, 2)]),
        (
            {"type": "GlobalAveragePooling2D", "data_format": "channels_first", "keepdims": True},
            [(2, 2, 3, 4)],
        ),
    ],
}
CASES = [case for cases in GRAD_CASES.values() for case in cases]


def _ids(value):
    if isinstance(value, dict):
        return "-".join(f"{k}={v}" for k, v in value.items() if k != "type") or value["type"]
    return None


def _asymmetric_same_average(config, shapes) -> bool:
    """Keras's torch backend pads an uneven `same` average pool by replicating edge values, so
    those windows differ from TensorFlow's (and kerspec's) real-values-only mean; they are
    checked by hand in test_same_average_counts_only_real_values instead."""
    layer = build(config)
    if not config["type"].startswith("AveragePooling") or layer.padding != "same":
        return False
    spatial, _ = split_channels(layer, shapes[0][1:], layer.rank, layer.layout)
    return any(lo != hi for lo, hi in pad_amounts("same", spatial, *layer._sizes()))


@pytest.mark.parametrize("config,shapes", CASES, ids=_ids)
def test_gradients(config, shapes):
    check_layer_grads(config, shapes)


@pytest.mark.parametrize("config,shapes", CASES, ids=_ids)
def test_matches_keras(config, shapes):
    keras = pytest.importorskip("keras")
    if _asymmetric_same_average(config, shapes):
        pytest.skip("Keras's torch backend averages replicated padding here (see docstring)")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "type"}
    compare_with_keras(config, getattr(keras.layers, config["type"])(**args), shapes)


def _run(config, x):
    layer = build(config)
    (y,), backprop = layer.forward({}, [x], Context(training=False, rng=np.random.default_rng(0)))
    (dx,), _ = backprop([np.ones_like(y)])
    return y, dx


def test_same_average_counts_only_real_values():
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1)
    y, dx = _run({"type": "AveragePooling1D", "pool_size": 3, "strides": 2, "padding": "same"}, x)
    np.testing.assert_allclose(y[0, :, 0], [1.0, 3.0, 4.5])
    np.testing.assert_allclose(dx[0, :, 0], [1 / 3, 1 / 3, 2 / 3, 1 / 3, 5 / 6, 1 / 2], rtol=1e-6)

    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    y, _ = _run({"type": "AveragePooling2D", "pool_size": 2, "padding": "same"}, x)
    np.testing.assert_allclose(y[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])
    assert y.dtype == np.float32


def test_max_pool_tie_sends_the_gradient_to_one_value():
    x = np.array([[[1.0], [1.0], [0.5], [2.0]]], np.float32)
    y, dx = _run({"type": "MaxPooling1D"}, x)
    np.testing.assert_array_equal(y[0, :, 0], [1.0, 2.0])
    np.testing.assert_array_equal(dx[0, :, 0], [1.0, 0.0, 0.0, 1.0])
    y, dx = _run({"type": "GlobalMaxPooling1D"}, np.ones((1, 3, 2), np.float32))
    np.testing.assert_array_equal(dx[0], [[1, 1], [0, 0], [0, 0]])
    assert dx.dtype == np.float32


def test_max_pool_breaks_a_tie_beside_a_nan_window():
    # The NaN window has no maximum to hit, the tied one two hits: as many hits as windows.
    x = np.array([[[np.nan], [1.0], [2.0], [2.0]]], np.float32)
    y, dx = _run({"type": "MaxPooling1D"}, x)
    assert np.isnan(y[0, 0, 0]) and y[0, 1, 0] == 2.0
    np.testing.assert_array_equal(dx[0, :, 0], [0.0, 0.0, 1.0, 0.0])


def test_max_pool_same_padding_never_picks_the_padding():
    x = -np.arange(1, 6, dtype=np.float32).reshape(1, 5, 1)
    y, _ = _run({"type": "MaxPooling1D", "padding": "same"}, x)
    np.testing.assert_array_equal(y[0, :, 0], [-1.0, -3.0, -5.0])


@pytest.mark.parametrize(
    "config,shape",
    [
        ({"type": "MaxPooling2D", "pool_size": 3, "strides": 2}, (7, None, 3)),
        ({"type": "AveragePooling1D", "pool_size": 3, "padding": "same"}, (10, 2)),
        ({"type": "MaxPooling2D", "pool_size": [2, 3], "data_format": "channels_first"}, (3, 7, 8)),
        ({"type": "GlobalAveragePooling2D", "keepdims": True}, (4, 5, 3)),
        ({"type": "GlobalMaxPooling1D", "data_format": "channels_first", "keepdims": True}, (3, 4)),
    ],
    ids=_ids,
)
def test_output_shape_matches_keras(config, shape):
    keras = pytest.importorskip("keras")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "type"}
    expected = getattr(keras.layers, config["type"])(**args).compute_output_shape((None, *shape))
    assert build(config).output_shapes([shape]) == [tuple(expected[1:])]


@pytest.mark.parametrize(
    "config,shape,message",
    [
        ({"type": "MaxPooling2D"}, (4,), "rank 4"),
        ({"type": "MaxPooling1D"}, (4, 4, 2), "rank 3"),
        ({"type": "AveragePooling2D", "pool_size": 3}, (2, 5, 1), "larger than the padded input"),
        (
            {"type": "MaxPooling1D", "pool_size": 4, "data_format": "channels_first"},
            (5, 3),
            "larger than",
        ),
        ({"type": "GlobalAveragePooling2D"}, (4, 3), "rank 4"),
        ({"type": "GlobalMaxPooling1D"}, (4,), "rank 3"),
    ],
)
def test_shape_errors(config, shape, message):
    with pytest.raises(ShapeError, match=message):
        build(config).output_shapes([shape])


@pytest.mark.parametrize(
    "config",
    [
        {"type": "MaxPooling2D", "pool_size": 0},
        {"type": "MaxPooling2D", "pool_size": [2, 0]},
        {"type": "MaxPooling1D", "strides": 0},
        {"type": "MaxPooling2D", "pool_size": [2]},
        {"type": "AveragePooling1D", "pool_size": [2, 2]},
        {"type": "AveragePooling2D"},
        {"type": "MaxPooling1D", "padding": "causal"},
        {"type": "GlobalMaxPooling2D", "data_format": "nchw"},
        {"type": "GlobalAveragePooling1D", "pool_size": 2},
    ],
    ids=_ids,
)
def test_invalid_arguments(config):
    with pytest.raises(ValidationError):
        build(config)


def _reference_max_pool(x, pool):
    """Loops over every window (channels_last, pool == strides, valid): y and, for dy = 1 + index,
    dx with each window's gradient at its first maximum in row-major order (TensorFlow's rule)."""
    out = tuple(n // p for n, p in zip(x.shape[1:-1], pool))
    y = np.empty((x.shape[0], *out, x.shape[-1]), x.dtype)
    dy = (1 + np.arange(y.size, dtype=x.dtype)).reshape(y.shape)
    dx = np.zeros_like(x)
    for b in range(x.shape[0]):
        for pos in np.ndindex(*out):
            for c in range(x.shape[-1]):
                window = x[(b, *(slice(i * p, (i + 1) * p) for i, p in zip(pos, pool)), c)]
                first = np.unravel_index(np.argmax(window), window.shape)
                y[(b, *pos, c)] = window[first]
                dx[(b, *(i * p + k for i, p, k in zip(pos, pool, first)), c)] = dy[(b, *pos, c)]
    return y, dy, dx


@pytest.mark.parametrize(
    "config,shape",
    [
        ({"type": "MaxPooling2D"}, (3, 6, 8, 4)),
        ({"type": "MaxPooling2D"}, (2, 7, 5, 3)),  # odd edges: cropped, no gradient
        ({"type": "MaxPooling2D", "pool_size": [2, 3]}, (2, 5, 9, 2)),
        ({"type": "MaxPooling2D", "pool_size": 3, "padding": "same"}, (2, 6, 9, 2)),
        ({"type": "MaxPooling2D", "data_format": "channels_first"}, (2, 3, 6, 5)),
        ({"type": "MaxPooling1D", "pool_size": 3}, (2, 10, 3)),
    ],
    ids=_ids,
)
@pytest.mark.parametrize("samples_per_block", [None, 1, 2])
def test_non_overlapping_max_pool_matches_loops_with_ties(
    config, shape, samples_per_block, monkeypatch
):
    # The batch goes in blocks of POOL_CHUNK_BYTES: all of it, one sample, or two (a last,
    # shorter block when the batch is odd).
    from kerspec.layers import pooling

    if samples_per_block is not None:
        monkeypatch.setattr(
            pooling, "POOL_CHUNK_BYTES", samples_per_block * 4 * int(np.prod(shape[1:]))
        )
    # Rounded relu outputs: many windows hold the same maximum (often all zeros).
    rng = np.random.default_rng(5)
    x = np.maximum(np.round(rng.standard_normal(shape)), 0).astype(np.float32)
    first = config.get("data_format") == "channels_first"
    xl = np.moveaxis(x, 1, -1) if first else x
    pool = config.get("pool_size", 2)
    rank = xl.ndim - 2
    pool = (pool,) * rank if isinstance(pool, int) else tuple(pool)
    want_y, dy, want_dx = _reference_max_pool(xl, pool)
    layer = build(config)
    # Training keeps and reuses the output and gradient buffers: a second batch must not see
    # the first one's values (stale gradient on the cropped edges, for one).
    ctx = Context(training=True, rng=np.random.default_rng(0))
    to_last = (lambda a: np.moveaxis(a, 1, -1)) if first else (lambda a: a)
    # First a batch with no ties (the pass that breaks them is skipped), then one with many.
    untied = rng.standard_normal(shape).astype(np.float32) * 10
    untied_y, _, untied_dx = _reference_max_pool(to_last(untied), pool)
    for batch, expect_y, expect_dx in ((untied, untied_y, untied_dx), (x, want_y, want_dx)):
        (y,), backprop = layer.forward({}, [batch], ctx)
        (dx,), _ = backprop([np.moveaxis(dy, -1, 1) if first else dy])
        np.testing.assert_array_equal(to_last(y), expect_y)
        np.testing.assert_array_equal(to_last(dx), expect_dx)
    assert y.dtype == dx.dtype == np.float32
    # Inference keeps no buffers; a backward after it still gets the same gradient.
    (y,), backprop = layer.forward({}, [x], Context(training=False, rng=rng, record=False))
    (dx,), _ = backprop([np.moveaxis(dy, -1, 1) if first else dy])
    np.testing.assert_array_equal(to_last(y), want_y)
    np.testing.assert_array_equal(to_last(dx), want_dx)
