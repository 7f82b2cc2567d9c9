"""Conv1D and Conv2D: gradient checks for every mode, Keras equivalence, shape and argument errors."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.graph.fusions import ConvIntoWindows
from kerspec.layers import Context, ShapeError
from kerspec.layers.windows import as_tuple
from tests.harness import build, check_layer_grads, compare_with_keras

CONV1D = [
    ({"type": "Conv1D", "filters": 2, "kernel_size": 3}, [(2, 6, 3)]),
    (
        {"type": "Conv1D", "filters": 3, "kernel_size": 3, "padding": "same", "strides": 2},
        [(2, 7, 2)],
    ),
    ({"type": "Conv1D", "filters": 2, "kernel_size": 4, "padding": "same"}, [(2, 6, 2)]),
    (
        {"type": "Conv1D", "filters": 2, "kernel_size": 3, "padding": "causal", "dilation_rate": 2},
        [(2, 7, 3)],
    ),
    (
        {"type": "Conv1D", "filters": 2, "kernel_size": 2, "padding": "causal", "strides": 2},
        [(2, 7, 2)],
    ),
    (
        {
            "type": "Conv1D",
            "filters": 4,
            "kernel_size": 2,
            "groups": 2,
            "data_format": "channels_first",
            "activation": "tanh",
        },
        [(2, 4, 5)],
    ),
    (
        {"type": "Conv1D", "filters": 2, "kernel_size": [3], "strides": [3], "use_bias": False},
        [(2, 8, 2)],
    ),
    # One channel and long output rows: the columns are stored offset-major.
    ({"type": "Conv1D", "filters": 2, "kernel_size": 3, "padding": "same"}, [(2, 9, 1)]),
    # Fewer filters than channels: the input gradient from the output gradient's windows.
    ({"type": "Conv1D", "filters": 2, "kernel_size": 4, "padding": "same"}, [(2, 7, 5)]),
    ({"type": "Conv1D", "filters": 1, "kernel_size": 3, "padding": "causal"}, [(2, 5, 3)]),
    ({"type": "Conv1D", "filters": 2, "kernel_size": 5, "padding": "same"}, [(2, 2, 3)]),
    (
        {"type": "Conv1D", "filters": 2, "kernel_size": 2, "data_format": "channels_first"},
        [(2, 4, 5)],
    ),
]
CONV2D = [
    ({"type": "Conv2D", "filters": 2, "kernel_size": 3}, [(2, 5, 6, 2)]),
    (
        {"type": "Conv2D", "filters": 3, "kernel_size": [2, 3], "strides": 2, "padding": "same"},
        [(2, 5, 6, 2)],
    ),
    (
        {
            "type": "Conv2D",
            "filters": 2,
            "kernel_size": 2,
            "padding": "same",
            "activation": "sigmoid",
        },
        [(2, 5, 6, 2)],
    ),
    (
        {
            "type": "Conv2D",
            "filters": 2,
            "kernel_size": [3, 2],
            "dilation_rate": [2, 1],
            "padding": "same",
        },
        [(2, 5, 6, 2)],
    ),
    (
        {
            "type": "Conv2D",
            "filters": 6,
            "kernel_size": 2,
            "groups": 3,
            "strides": [2, 1],
            "data_format": "channels_first",
        },
        [(2, 3, 5, 6)],
    ),
    (
        {"type": "Conv2D", "filters": 2, "kernel_size": 2, "strides": 3, "use_bias": False},
        [(2, 7, 5, 2)],
    ),
    (
        {
            "type": "Conv2D",
            "filters": 3,
            "kernel_size": 3,
            "padding": "same",
            "data_format": "channels_first",
            "activation": "tanh",
        },
        [(2, 2, 5, 4)],
    ),
    # One channel and long output rows: the columns are stored offset-major.
    ({"type": "Conv2D", "filters": 3, "kernel_size": 3, "activation": "relu"}, [(2, 5, 10, 1)]),
    (
        {"type": "Conv2D", "filters": 2, "kernel_size": 2, "strides": [1, 2], "padding": "same",
         "data_format": "channels_first"},
        [(2, 1, 4, 17)],
    ),
]
GRAD_CASES = {"Conv1D": CONV1D, "Conv2D": CONV2D}


def _ids(value):
    if isinstance(value, dict):
        return "-".join(f"{k}={v}" for k, v in value.items() if k != "type") or value["type"]
    return None


@pytest.mark.parametrize("config,shapes", CONV1D + CONV2D, ids=_ids)
def test_gradients(config, shapes):
    check_layer_grads(config, shapes)


def _keras_conv(keras, config):
    args = {k: v for k, v in config.items() if k != "type"}
    for name in ("kernel_size", "strides", "dilation_rate"):
        if isinstance(args.get(name), list):
            args[name] = tuple(args[name])
    return getattr(keras.layers, config["type"])(**args)


@pytest.mark.parametrize("config,shapes", CONV1D + CONV2D, ids=_ids)
def test_matches_keras(config, shapes):
    keras = pytest.importorskip("keras")
    compare_with_keras(config, _keras_conv(keras, config), shapes)


@pytest.mark.parametrize(
    "config,shape",
    [
        ({"type": "Conv1D", "filters": 2, "kernel_size": 3, "strides": 2}, (9, 3)),
        (
            {"type": "Conv1D", "filters": 2, "kernel_size": 3, "padding": "causal", "strides": 3},
            (10, 3),
        ),
        (
            {
                "type": "Conv2D",
                "filters": 4,
                "kernel_size": [3, 2],
                "padding": "same",
                "strides": [2, 3],
            },
            (7, 8, 3),
        ),
        ({"type": "Conv2D", "filters": 4, "kernel_size": 3, "dilation_rate": 2}, (None, 9, 3)),
        (
            {"type": "Conv2D", "filters": 4, "kernel_size": 2, "data_format": "channels_first"},
            (3, 6, 5),
        ),
    ],
    ids=_ids,
)
def test_output_shape_matches_keras(config, shape):
    keras = pytest.importorskip("keras")
    expected = _keras_conv(keras, config).compute_output_shape((None, *shape))
    assert build(config).output_shapes([shape]) == [tuple(expected[1:])]


def test_same_padding_puts_the_extra_zero_after():
    """An even kernel under `same`: TensorFlow's split pads one zero on the right, not the left."""
    layer = build(
        {"type": "Conv1D", "filters": 1, "kernel_size": 2, "padding": "same", "use_bias": False}
    )
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 4, 1)
    kernel = np.array([[[0.0]], [[1.0]]], np.float32)
    (y,), _ = layer.forward(
        {"kernel": kernel}, [x], Context(training=False, rng=np.random.default_rng(0))
    )
    np.testing.assert_array_equal(y[0, :, 0], [2, 3, 4, 0])


def test_float32_end_to_end_and_no_input_gradient_when_not_needed(rng):
    layer = build(
        {
            "type": "Conv2D",
            "filters": 4,
            "kernel_size": 3,
            "groups": 2,
            "padding": "same",
            "activation": "relu",
        }
    )
    x = rng.standard_normal((2, 5, 6, 2)).astype(np.float32)
    w = {
        "kernel": rng.standard_normal((3, 3, 1, 4)).astype(np.float32),
        "bias": np.zeros(4, np.float32),
    }
    ctx = Context(training=True, rng=rng)
    (y,), backprop = layer.forward(w, [x], ctx)
    (dx,), grads = backprop([np.ones_like(y)])
    assert y.dtype == dx.dtype == grads["kernel"].dtype == grads["bias"].dtype == np.float32
    ctx.need_dx = False
    (y,), backprop = layer.forward(w, [x], ctx)
    (dx,), grads = backprop([np.ones_like(y)])
    assert dx is None and set(grads) == {"kernel", "bias"}


@pytest.mark.parametrize(
    "config,shape,message",
    [
        ({"type": "Conv2D", "filters": 2, "kernel_size": 3}, (10,), "rank 4"),
        ({"type": "Conv1D", "filters": 2, "kernel_size": 3}, (5, 6, 3), "rank 3"),
        (
            {"type": "Conv2D", "filters": 2, "kernel_size": 4},
            (3, 5, 1),
            "larger than the padded input",
        ),
        (
            {"type": "Conv1D", "filters": 2, "kernel_size": 3, "dilation_rate": 3},
            (6, 1),
            "larger than",
        ),
        ({"type": "Conv2D", "filters": 5, "kernel_size": 1, "groups": 2}, (4, 4, 2), "filters"),
        (
            {"type": "Conv2D", "filters": 4, "kernel_size": 1, "groups": 2},
            (4, 4, 3),
            "input channels",
        ),
        ({"type": "Conv2D", "filters": 4, "kernel_size": 1}, (4, 4, None), "channel"),
        (
            {"type": "Conv2D", "filters": 4, "kernel_size": 2, "data_format": "channels_first"},
            (3, 1, 5),
            "larger than",
        ),
    ],
)
def test_shape_errors(config, shape, message):
    with pytest.raises(ShapeError, match=message):
        layer = build(config)
        layer.output_shapes([shape])
        layer.weights([shape])


@pytest.mark.parametrize(
    "config",
    [
        {"type": "Conv2D", "filters": 0, "kernel_size": 3},
        {"type": "Conv2D", "filters": 2, "kernel_size": 0},
        {"type": "Conv2D", "filters": 2, "kernel_size": [3, 0]},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "strides": 0},
        {"type": "Conv1D", "filters": 2, "kernel_size": 3, "dilation_rate": -1},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "groups": 0},
        {"type": "Conv2D", "filters": 2, "kernel_size": [3]},
        {"type": "Conv1D", "filters": 2, "kernel_size": [3, 3]},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "padding": "causal"},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "padding": "full"},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "data_format": "channels_middle"},
        {"type": "Conv2D", "filters": 2, "kernel_size": 3, "lora_rank": 4},
        {"type": "Conv1D", "kernel_size": 3},
    ],
    ids=_ids,
)
def test_invalid_arguments(config):
    with pytest.raises(ValidationError):
        build(config)


def test_padding_is_case_insensitive_as_in_keras():
    assert (
        build({"type": "Conv1D", "filters": 1, "kernel_size": 2, "padding": "SAME"}).padding
        == "same"
    )


@pytest.mark.parametrize(
    "config,shape,pool_blocks",
    [
        ({"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"}, (5, 7, 6, 3), None),
        (
            {"type": "Conv2D", "filters": 4, "kernel_size": 2, "strides": 2, "padding": "same",
             "groups": 2, "data_format": "channels_first"},
            (5, 4, 7, 6),
            None,
        ),
        ({"type": "Conv1D", "filters": 3, "kernel_size": 3, "dilation_rate": 2}, (5, 9, 2), None),
        ({"type": "Conv1D", "filters": 3, "kernel_size": 4, "padding": "same"}, (5, 9, 6), None),
        ({"type": "Conv2D", "filters": 3, "kernel_size": 3}, (5, 6, 10, 1), None),  # offset-major
        # Output split into 2x2 pooling windows (an odd edge left out), as the plan makes it.
        ({"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"}, (5, 9, 8, 3), (2, 2)),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else str(v),
)
def test_inference_in_parts_and_reused_training_buffers_give_the_same_numbers(
    config, shape, pool_blocks, monkeypatch
):
    """Inference unfolds the columns a few samples at a time; training reuses its buffers batch
    after batch. Neither may change a number, nor may one batch leak into the next."""
    from kerspec.layers import im2col

    rng = np.random.default_rng(3)
    conv_layer = build(config)
    layer = conv_layer
    if pool_blocks is not None:
        layer = ConvIntoWindows.model_construct(conv=conv_layer, window=pool_blocks)
    w = {
        s.name: rng.standard_normal(s.shape).astype(np.float32)
        for s in conv_layer.weights([shape[1:]])
    }
    batches = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    dys = []

    def run(ctx, x):
        (y,), backprop = layer.forward(w, [x], ctx)
        if not dys:
            dys.append(rng.standard_normal(y.shape).astype(np.float32))
        (dx,), grads = backprop([dys[0].copy()])
        return [y.copy(), dx.copy(), *(g.copy() for g in grads.values())]

    fresh = [run(Context(training=True, rng=rng), x) for x in batches]
    reused_ctx = Context(training=True, rng=rng)
    reused = [run(reused_ctx, x) for x in batches]
    # Training's forward and backward blocks two samples at a time (a shorter last
    # block), in reused buffers.
    first = config.get("data_format") == "channels_first"
    out_shape = conv_layer.output_shape(shape[1:])
    positions = int(np.prod(out_shape[1:] if first else out_shape[:-1]))
    window = int(np.prod(as_tuple(config["kernel_size"], len(shape) - 2)))
    sample_bytes = positions * window * (shape[1] if first else shape[-1]) * 4
    monkeypatch.setattr(im2col, "BACKWARD_CHUNK_BYTES", 2 * sample_bytes)
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 2 * sample_bytes)
    blocks_ctx = Context(training=True, rng=rng)
    blocks = [run(blocks_ctx, x) for x in batches]
    # One sample's columns at a time (inference, a backward after it unfolds them again).
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    monkeypatch.setattr(im2col, "BACKWARD_CHUNK_BYTES", 1)
    parts_ctx = Context(training=False, rng=rng, record=False)
    parts = [run(parts_ctx, x) for x in batches]
    for want, *gots in zip(fresh, reused, blocks, parts):
        for got in gots:
            for a, b in zip(want, got):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
                assert b.dtype == np.float32


@pytest.mark.parametrize(
    "config,shapes",
    [
        ({"type": "Conv2D", "filters": 2, "kernel_size": 3, "activation": "relu"}, [(2, 5, 6, 2)]),
        (
            {"type": "Conv2D", "filters": 6, "kernel_size": 2, "groups": 3, "strides": [2, 1],
             "data_format": "channels_first"},
            [(2, 3, 5, 6)],
        ),
        ({"type": "Conv1D", "filters": 4, "kernel_size": 2, "groups": 2}, [(2, 5, 4)]),
    ],
    ids=_ids,
)
@pytest.mark.parametrize("max_depth", [0, 1 << 30])
def test_gradients_with_the_bias_added_after_or_inside_the_gemm(
    config, shapes, max_depth, monkeypatch
):
    """Short windows take the bias into the GEMM as a column of ones, long ones add it after:
    both ways give the same gradients, grouped or not."""
    from kerspec.layers import im2col

    monkeypatch.setattr(im2col, "FUSED_BIAS_MAX_DEPTH", max_depth)
    check_layer_grads(config, shapes)


def test_bias_inside_and_after_the_gemm_agree(monkeypatch):
    from kerspec.layers import im2col

    rng = np.random.default_rng(5)
    layer = build({"type": "Conv2D", "filters": 6, "kernel_size": 3, "groups": 2,
                   "activation": "relu"})
    shape = (3, 6, 7, 4)
    w = {s.name: rng.standard_normal(s.shape).astype(np.float32)
         for s in layer.weights([shape[1:]])}
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    results = []
    for max_depth in (0, 1 << 30):
        monkeypatch.setattr(im2col, "FUSED_BIAS_MAX_DEPTH", max_depth)
        (y,), backprop = layer.forward(w, [x], Context(training=True, rng=rng))
        (dx,), grads = backprop([dy.copy()])
        results.append([y.copy(), dx, grads["kernel"], grads["bias"]])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        assert b.dtype == np.float32


def test_convolutions_sharing_the_inference_padding_buffer_predict_as_in_training_mode():
    """Inference pads every convolution's input into one shared buffer: each convolution must be
    done with it before the next writes it (three same-shaped `same` convolutions, one after the
    other and one beside them, read by Add)."""
    import kerspec
    from kerspec.layers import Context

    model = kerspec.from_yaml(
        """
name: shared_padding
seed: 0
layers:
  - {type: Input, shape: [6, 5, 4], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: a}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: b}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, from: x, name: c}
  - {type: Add, from: [b, c], name: y}
"""
    )
    x = np.random.default_rng(0).standard_normal((3, 6, 5, 4)).astype(np.float32)
    predicted = model.predict(x)["y"]
    ctx = Context(training=False, rng=np.random.default_rng(0))
    (recorded,) = model.plan.forward(model.params, [x], ctx, record=True).outputs
    np.testing.assert_allclose(predicted, recorded, rtol=1e-6, atol=1e-6)


# Convolutions of every kind the backward pass handles in its own way: a first layer (no input
# gradient) with offset-major columns, groups, an output split into pooling windows, strides,
# and a 1-D input gradient from the output gradient's windows.
BLOCKWISE_SPECS = {
    "2d": """
layers:
  - {type: Input, shape: [6, 14, 1]}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, activation: tanh}
  - {type: Conv2D, filters: 6, kernel_size: 3, groups: 2, activation: relu}
  - {type: MaxPooling2D, pool_size: 2}
  - {type: Conv2D, filters: 4, kernel_size: 2, strides: 2, padding: same}
  - {type: Flatten}
  - {type: Dense, units: 3, name: y}
""",
    "1d": """
layers:
  - {type: Input, shape: [9, 2]}
  - {type: Conv1D, filters: 6, kernel_size: 3, padding: same, activation: tanh}
  - {type: Conv1D, filters: 3, kernel_size: 3, padding: same}
  - {type: Flatten}
  - {type: Dense, units: 3, name: y}
""",
}


@pytest.mark.parametrize("keep_bytes", [0, 1 << 30], ids=["unfolded_again", "kept"])
@pytest.mark.parametrize("max_depth", [0, 1 << 30], ids=["bias_after", "bias_inside"])
@pytest.mark.parametrize("name", sorted(BLOCKWISE_SPECS))
def test_training_gradients_summed_over_many_blocks(name, max_depth, keep_bytes, monkeypatch):
    """Backward goes one sample at a time, its columns unfolded again or kept by the forward
    pass: the kernel and bias gradients (in the GEMM's last row or added after it) are sums over
    the blocks, and each block's input gradient lands in its samples, through the training step
    as fit runs it."""
    import kerspec
    from kerspec.layers import im2col
    from tests.wholeplan import check_training_gradients

    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    monkeypatch.setattr(im2col, "BACKWARD_CHUNK_BYTES", 1)
    monkeypatch.setattr(im2col, "FUSED_BIAS_MAX_DEPTH", max_depth)
    monkeypatch.setattr(im2col, "KEEP_COLUMNS_BYTES", keep_bytes)
    model = kerspec.from_yaml(
        "name: blocks\ndtype: float64\ncompile: {loss: mse}\n" + BLOCKWISE_SPECS[name], seed=2
    )
    rng = np.random.default_rng(4)
    (shape,) = model.graph.input_shapes().values()
    x = rng.standard_normal((5, *shape))
    y = rng.standard_normal((5, 3))
    check_training_gradients(model, [x], [y], rng=rng)


def test_a_training_step_holds_no_batch_of_columns_beyond_the_bound(monkeypatch):
    """Training keeps a convolution's padded input, output and input gradient between its
    passes, and its columns (25 times the input for a 5x5 kernel) only up to
    KEEP_COLUMNS_BYTES: past it, after fit, the whole context holds less than half of one
    convolution's columns."""
    import kerspec
    from kerspec.layers import im2col

    batch = 32
    columns = batch * 16 * 16 * 5 * 5 * 8 * 4
    monkeypatch.setattr(im2col, "CHUNK_BYTES", 1)
    monkeypatch.setattr(im2col, "BACKWARD_CHUNK_BYTES", 1)
    monkeypatch.setattr(im2col, "KEEP_COLUMNS_BYTES", columns - 1)
    model = kerspec.from_yaml(
        """
name: columns
compile: {loss: sparse_categorical_crossentropy}
layers:
  - {type: Input, shape: [16, 16, 8]}
  - {type: Conv2D, filters: 8, kernel_size: 5, padding: same, activation: relu}
  - {type: Conv2D, filters: 8, kernel_size: 5, padding: same, activation: relu}
  - {type: GlobalAveragePooling2D}
  - {type: Dense, units: 4, activation: softmax, name: y}
""",
        seed=0,
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 16, 16, 8)).astype(np.float32)
    model.fit(x, rng.integers(0, 4, batch), epochs=1, batch_size=batch)
    held = sum(a.nbytes for a in model.ctx.buffers.values())
    assert held < columns / 2
