"""Inference plan rewrites (kerspec/graph/fusions.py): each against the unrewritten plan in
float64, through predict as a user calls it."""

from __future__ import annotations

import numpy as np
import pytest

import kerspec
from kerspec.graph.fusions import fold_batch_norm
from kerspec.layers import Context

SPEC = """\
name: folds
seed: 0
dtype: float64
layers:
  - {{type: Input, shape: [6, 5, 3], name: x}}
  - {{type: Conv2D, filters: 4, kernel_size: 3, padding: same, {conv}}}
  - {{type: BatchNormalization, {norm}}}
  - {{type: Activation, activation: relu, name: image}}
  - {{type: Input, shape: [7, 4], name: series}}
  - {{type: Conv1D, filters: 3, kernel_size: 2}}
  - {{type: BatchNormalization, center: false}}
  - {{type: Flatten, name: f1}}
  - {{type: Flatten, from: image, name: f0}}
  - {{type: Concatenate, from: [f0, f1]}}
  - {{type: Dense, units: 5, use_bias: false}}
  - {{type: BatchNormalization, scale: false}}
  - {{type: Dense, units: 2, name: y}}
"""


def build(conv: str = "use_bias: true", norm: str = "epsilon: 0.01") -> kerspec.Model:
    model = kerspec.from_yaml(SPEC.format(conv=conv, norm=norm))
    rng = np.random.default_rng(1)
    for weights in model.params.values():  # moving statistics and weights far from their start
        for name, w in weights.items():
            w[...] = rng.standard_normal(w.shape)
            if name == "moving_variance":
                w[...] = np.abs(w) + 0.1
    return model


def inputs():
    rng = np.random.default_rng(2)
    return {"x": rng.standard_normal((5, 6, 5, 3)), "series": rng.standard_normal((5, 7, 4))}


def unfolded(model: kerspec.Model, x: dict) -> np.ndarray:
    ctx = Context(training=False, rng=np.random.default_rng(0))
    xs = [x[name] for name in model.input_names]
    return model.plan.forward(model.params, xs, ctx, record=False).outputs[0]


def test_batch_normalization_folds_into_conv1d_conv2d_and_dense():
    model = build()
    folded, folds = fold_batch_norm(model.plan)
    assert len(folds) == 3 and len(folded.steps) == len(model.plan.steps) - 3
    x = inputs()
    np.testing.assert_allclose(model.predict(x)["y"], unfolded(model, x), rtol=1e-12, atol=1e-12)


def test_predict_folds_the_current_weights():
    model = build()
    x = inputs()
    model.predict(x)
    for weights in model.params.values():  # as training would between two predicts
        for w in weights.values():
            w *= 1.5
    np.testing.assert_allclose(model.predict(x)["y"], unfolded(model, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "conv,norm",
    [
        ("activation: relu", "epsilon: 0.01"),  # BN(relu(z)) is no affine map of z
        ("data_format: channels_first", "axis: 1"),  # channels on the first axis
        ("use_bias: true", "axis: 1"),  # statistics along a spatial axis, not the channels
    ],
)
def test_no_fold_where_the_identity_does_not_hold(conv, norm):
    model = build(conv, norm)
    _, folds = fold_batch_norm(model.plan)
    assert len(folds) == 2  # the Conv1D's and the Dense's only
    x = inputs()
    np.testing.assert_allclose(model.predict(x)["y"], unfolded(model, x), rtol=1e-12, atol=1e-12)
