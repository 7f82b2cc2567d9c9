"""One harness for every layer test: gradient checks and comparisons with Keras.

    check_layer_grads({"type": "Dense", "units": 3}, [(2, 4)])
    compare_with_keras({"type": "Dense", "units": 3}, keras.layers.Dense(3), [(2, 4)])
"""

from __future__ import annotations

import numpy as np
import pytest

from kerspec.layers import LAYERS, Context, Layer
from tests.gradcheck import check_grads


def build(config: dict) -> Layer:
    return LAYERS.create(config)


def random_weights(layer: Layer, input_shapes, rng, dtype=np.float64) -> dict[str, np.ndarray]:
    """Weights drawn at random (not from the initializers: zeros would hide a bias gradient)."""
    shapes = [tuple(s[1:]) for s in input_shapes]
    return {
        spec.name: (rng.standard_normal(spec.shape) * 0.5).astype(dtype)
        for spec in layer.weights(shapes)
    }


def random_inputs(input_shapes, rng, dtype=np.float64) -> list[np.ndarray]:
    return [rng.standard_normal(shape).astype(dtype) for shape in input_shapes]


def check_layer_grads(
    config: dict,
    input_shapes: list[tuple[int, ...]],
    *,
    rng=None,
    inputs: list[np.ndarray] | None = None,
    weights: dict[str, np.ndarray] | None = None,
    training: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-7,
) -> None:
    """Central differences (float64) of the inputs and every weight against the layer's backprop.

    A fixed context seed makes random layers (Dropout) draw the same mask at every evaluation.
    """
    rng = rng or np.random.default_rng(0)
    layer = build(config)
    xs = inputs if inputs is not None else random_inputs(input_shapes, rng)
    w = weights if weights is not None else random_weights(layer, input_shapes, rng)
    shapes = [tuple(s[1:]) for s in input_shapes]
    expected = layer.output_shapes(shapes)

    def forward():
        ctx = Context(training=training, rng=np.random.default_rng(123))
        ys, backprop = layer.forward(w, xs, ctx)
        for y, shape in zip(ys, expected):
            assert y.shape[1:] == tuple(d if d is not None else y.shape[i + 1] for i, d in enumerate(shape))
            assert y.dtype == np.float64
        sizes = [y.size for y in ys]

        def split_backprop(r):
            parts = np.split(r, np.cumsum(sizes)[:-1])
            dys = [p.reshape(y.shape) for p, y in zip(parts, ys)]
            dxs, dws = backprop(dys)
            return {**{f"x{i}": dx for i, dx in enumerate(dxs)}, **dws}

        return np.concatenate([y.ravel() for y in ys]), split_backprop

    wrt = {**{f"x{i}": x for i, x in enumerate(xs)}, **w}
    check_grads(forward, wrt, rtol=rtol, atol=atol)


def keras_weight_name(variable) -> str:
    return variable.path.split("/")[-1]


def compare_with_keras(
    config: dict,
    keras_layer,
    input_shapes: list[tuple[int, ...]],
    *,
    rng=None,
    inputs: list[np.ndarray] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    """Same weights and inputs in kerspec and Keras (float32): same outputs, and the same
    gradients of sum(y * r) for the inputs and every weight, i.e. the same weights after one
    SGD step."""
    torch = pytest.importorskip("torch")
    rng = rng or np.random.default_rng(0)
    layer = build(config)
    xs = inputs if inputs is not None else random_inputs(input_shapes, rng, np.float32)
    xs = [x.astype(np.float32) for x in xs]
    w = random_weights(layer, input_shapes, rng, np.float32)

    keras_inputs = [torch.tensor(x, requires_grad=True) for x in xs]
    keras_layer.build(*[tuple(s) for s in input_shapes]) if len(input_shapes) == 1 else keras_layer.build(
        [tuple(s) for s in input_shapes]
    )
    names = [keras_weight_name(v) for v in keras_layer.weights]
    assert sorted(names) == sorted(w), f"Keras weights {names}, kerspec weights {list(w)}"
    for variable in keras_layer.weights:
        variable.assign(w[keras_weight_name(variable)])
    call_inputs = keras_inputs[0] if len(keras_inputs) == 1 else keras_inputs
    keras_out = keras_layer(call_inputs)
    keras_outs = list(keras_out) if isinstance(keras_out, list | tuple) else [keras_out]

    ctx = Context(training=False, rng=np.random.default_rng(0))
    ys, backprop = layer.forward(w, xs, ctx)
    assert len(ys) == len(keras_outs)
    for y, k in zip(ys, keras_outs):
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, k.detach().numpy(), rtol=rtol, atol=atol)

    rs = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    total = sum((k * torch.tensor(r)).sum() for k, r in zip(keras_outs, rs))
    total.backward()
    dxs, dws = backprop([r.copy() for r in rs])
    for x_torch, dx in zip(keras_inputs, dxs):
        np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=rtol, atol=atol, err_msg="input gradient")
    for variable in keras_layer.trainable_weights:
        name = keras_weight_name(variable)
        np.testing.assert_allclose(
            dws[name], variable.value.grad.numpy(), rtol=rtol, atol=atol, err_msg=f"gradient of {name}"
        )
