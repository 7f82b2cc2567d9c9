"""docs/architecture.md, "How to add a layer", proved: a new rank of convolution is a subclass of
BaseConv and nothing else. The Conv3D here is the doc's example, made in the test (kerspec ships
no Conv3D); it is registered in a catalog of its own, so the shipped LAYERS stays as it is."""

from typing import ClassVar, Literal

import numpy as np
import pytest

from kerspec.layers import Context
from kerspec.layers.conv import BaseConv, Padding
from kerspec.registry import Registry
from tests.gradcheck import check_grads
from tests.harness import random_inputs, random_weights

LAYERS = Registry("layer")


@LAYERS.register("Conv3D", "Convolution3D")
class Conv3D(BaseConv):
    """3D convolution (cross-correlation, as Keras). Input (batch, depth, height, width,
    channels) or channels_first; kernel (kd, kh, kw, channels / groups, filters)."""

    type: Literal["Conv3D"] = "Conv3D"
    padding: Padding = "valid"
    rank: ClassVar[int] = 3
    layout: ClassVar[str] = "(batch, depth, height, width, channels)"


CASES = [
    {"filters": 3, "kernel_size": 2},
    {"filters": 4, "kernel_size": [2, 1, 3], "strides": [1, 2, 1], "padding": "same", "groups": 2},
    {"filters": 2, "kernel_size": 2, "dilation_rate": 2, "activation": "tanh"},
    {"filters": 2, "kernel_size": 2, "data_format": "channels_first", "use_bias": False},
]
SHAPE = {"channels_last": (2, 5, 4, 5, 4), "channels_first": (2, 4, 5, 4, 5)}


def _layer(config: dict) -> Conv3D:
    return LAYERS.create({"type": "Conv3D", **config})


@pytest.mark.parametrize("config", CASES, ids=str)
def test_conv3d_as_a_subclass_passes_the_gradient_check(config):
    layer = _layer(config)
    shape = SHAPE[config.get("data_format", "channels_last")]
    rng = np.random.default_rng(0)
    (x,) = random_inputs([shape], rng)
    w = random_weights(layer, [shape], rng)
    assert layer.output_shapes([shape[1:]])[0] == layer.output_shape(shape[1:])

    def forward():
        (y,), backprop = layer.forward(w, [x], Context(training=True, rng=np.random.default_rng(0)))

        def grads(dy):
            (dx,), dw = backprop([dy])
            return {"x": dx, **dw}

        return y, grads

    check_grads(forward, {"x": x, **w})


@pytest.mark.parametrize("config", CASES, ids=str)
def test_conv3d_as_a_subclass_computes_what_keras_conv3d_does(config):
    keras = pytest.importorskip("keras")
    layer = _layer(config)
    shape = SHAPE[config.get("data_format", "channels_last")]
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    w = {k: v.astype(np.float32) for k, v in random_weights(layer, [shape], rng).items()}
    (ours,), _ = layer.forward(w, [x], Context(training=False, rng=np.random.default_rng(0)))
    theirs = keras.layers.Conv3D(**config)
    theirs.build(shape)
    theirs.set_weights([w["kernel"], *([w["bias"]] if "bias" in w else [])])
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(theirs(x)), rtol=1e-4, atol=1e-5)
