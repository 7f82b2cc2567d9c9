"""Normalization layers: BatchNormalization and LayerNormalization.

Both compute `x_hat = (x - mean) / sqrt(var + epsilon)` with the biased variance (divided by the
count, as Keras does) and return `gamma * x_hat + beta`; they differ in the axes the statistics
are taken over. Axes are counted with the batch axis, as in Keras.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from kerspec.constraints import CONSTRAINTS
from kerspec.initializers import INITIALIZERS
from kerspec.layers.base import (
    LAYERS,
    ShapeError,
    SimpleLayer,
    WeightSpec,
    format_shape,
    require_known,
)
from kerspec.regularizers import REGULARIZERS

InitializerRef = INITIALIZERS.ref()
RegularizerRef = REGULARIZERS.ref() | None
ConstraintRef = CONSTRAINTS.ref() | None


def _resolve_axis(axis: int, shape) -> int:
    """`axis` (batch axis counted) as a non-negative axis of the full input; 0, the batch axis,
    is refused because the weights' shape cannot depend on the batch size."""
    ndim = len(shape) + 1
    full = axis + ndim if axis < 0 else axis
    if not 1 <= full < ndim:
        raise ShapeError(
            f"axis {axis} is out of range for input {format_shape(shape)}: expected an axis "
            f"in [1, {ndim - 1}] or [{-ndim + 1}, -1] (the batch axis 0 cannot be normalized)"
        )
    return full


def _broadcastable(v: np.ndarray | None, axes: tuple[int, ...], ndim: int) -> np.ndarray | None:
    """A weight of shape (x.shape[a] for a in axes) reshaped to broadcast against x."""
    if v is None or axes == (ndim - 1,):
        return v
    shape = [1] * ndim
    for a, d in zip(axes, v.shape):
        shape[a] = d
    return v.reshape(shape)


def _affine(x_hat: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None) -> np.ndarray:
    """`gamma * x_hat + beta`, never written into x_hat (backprop reads it)."""
    if gamma is None:
        return x_hat if beta is None else x_hat + beta
    y = x_hat * gamma
    if beta is not None:
        y += beta
    return y


class _Normalization(SimpleLayer):
    """The arguments and weights gamma and beta that both layers share."""

    epsilon: float = Field(1e-3, ge=0.0)
    center: bool = True
    scale: bool = True
    beta_initializer: InitializerRef = "zeros"
    gamma_initializer: InitializerRef = "ones"
    beta_regularizer: RegularizerRef = None
    gamma_regularizer: RegularizerRef = None
    beta_constraint: ConstraintRef = None
    gamma_constraint: ConstraintRef = None

    def _axes(self, shape) -> tuple[int, ...]:
        """The axes the weights run along, as axes of the full input (batch axis counted)."""
        raise NotImplementedError

    def output_shape(self, shape):
        self._axes(shape)
        return shape

    def weight_specs(self, shape):
        axes = self._axes(shape)
        dims = tuple(shape[a - 1] for a in axes)
        require_known(dims, "the normalized axes")
        specs = []
        if self.scale:
            specs.append(
                WeightSpec(
                    "gamma",
                    dims,
                    self.gamma_initializer,
                    self.gamma_regularizer,
                    self.gamma_constraint,
                )
            )
        if self.center:
            specs.append(
                WeightSpec(
                    "beta", dims, self.beta_initializer, self.beta_regularizer, self.beta_constraint
                )
            )
        return specs


@LAYERS.register("BatchNormalization")
class BatchNormalization(_Normalization):
    """Normalizes each feature along `axis` with statistics over every other axis.

    Training (and `trainable`): `y = gamma * (x - m) / sqrt(v + epsilon) + beta` with the batch
    mean m and biased variance v, and the moving statistics are updated in place:
    `moving = moving * momentum + batch_statistic * (1 - momentum)`.
    Inference (or a frozen layer, as in Keras 3): the same with `moving_mean`, `moving_variance`.

    Input shape: any; output shape: the input shape. Weights (size of `axis`): `gamma`, `beta`
    (trainable, when `scale` / `center`), `moving_mean`, `moving_variance` (not trainable).
    A masked input is refused when the graph compiles: Keras takes the batch statistics over the
    unmasked steps only, which kerspec does not do.
    """

    type: Literal["BatchNormalization"] = "BatchNormalization"
    axis: int = -1
    momentum: float = Field(0.99, ge=0.0, le=1.0)
    moving_mean_initializer: InitializerRef = "zeros"
    moving_variance_initializer: InitializerRef = "ones"
    synchronized: Literal[False] = Field(
        False, description="Cross-replica statistics; kerspec runs on one device."
    )
    renorm: Literal[False] = Field(False, description="Batch renormalization is not supported.")
    renorm_clipping: None = Field(None, description="Only used by renorm, which is not supported.")
    renorm_momentum: float = Field(0.99, description="Only used by renorm; accepted and unused.")

    def _axes(self, shape):
        return (_resolve_axis(self.axis, shape),)

    def weight_specs(self, shape):
        dims = (shape[self._axes(shape)[0] - 1],)
        return [
            *super().weight_specs(shape),
            WeightSpec("moving_mean", dims, self.moving_mean_initializer, trainable=False),
            WeightSpec("moving_variance", dims, self.moving_variance_initializer, trainable=False),
        ]

    def call(self, w, x, ctx):
        (axis,) = self._axes(x.shape[1:])
        reduce = tuple(i for i in range(x.ndim) if i != axis)
        gamma = _broadcastable(w.get("gamma"), (axis,), x.ndim)
        beta = _broadcastable(w.get("beta"), (axis,), x.ndim)
        if ctx.training and self.trainable:
            return self._train(w, x, ctx, axis, reduce, gamma, beta)
        mean = _broadcastable(w["moving_mean"], (axis,), x.ndim)
        inv = 1.0 / np.sqrt(_broadcastable(w["moving_variance"], (axis,), x.ndim) + self.epsilon)
        centered = x - mean
        factor = inv if gamma is None else inv * gamma
        y = centered * factor
        if beta is not None:
            y += beta
        need_dx = ctx.need_dx

        def backprop(dy):
            grads = {}
            if gamma is not None:
                grads["gamma"] = np.sum(dy * centered * inv, axis=reduce).reshape(w["gamma"].shape)
            if beta is not None:
                grads["beta"] = np.sum(dy, axis=reduce).reshape(w["beta"].shape)
            return (dy * factor if need_dx else None), grads

        return y, backprop

    def _train(self, w, x, ctx, axis, reduce, gamma, beta):
        mean = np.mean(x, axis=reduce, keepdims=True)
        centered = x - mean
        var = np.mean(np.square(centered), axis=reduce, keepdims=True)
        # The moving statistics are state, not trained weights: updated here, as Keras assigns
        # them during its training-mode call.
        momentum = self.momentum
        for name, batch_value in (("moving_mean", mean), ("moving_variance", var)):
            moving = w[name]
            moving *= moving.dtype.type(momentum)
            moving += batch_value.reshape(moving.shape) * moving.dtype.type(1.0 - momentum)
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.epsilon))
        x_hat = centered * inv
        y = _affine(x_hat, gamma, beta)
        count = x.size // x.shape[axis]
        need_dx = ctx.need_dx

        def backprop(dy):
            # With s1 = sum(dy) and s2 = sum(dy * x_hat) over the reduced axes:
            # dx = gamma / sqrt(v + epsilon) * (dy - s1 / N - x_hat * s2 / N).
            s1 = np.sum(dy, axis=reduce, keepdims=True)
            s2 = np.sum(dy * x_hat, axis=reduce, keepdims=True)
            grads = {}
            if gamma is not None:
                grads["gamma"] = s2.reshape(w["gamma"].shape)
            if beta is not None:
                grads["beta"] = s1.reshape(w["beta"].shape)
            if not need_dx:
                return None, grads
            scale = inv if gamma is None else inv * gamma
            n = x.dtype.type(count)
            dx = dy - s1 / n
            dx -= x_hat * (s2 / n)
            dx *= scale
            return dx, grads

        return y, backprop


@LAYERS.register("LayerNormalization")
class LayerNormalization(_Normalization):
    """Normalizes each sample over `axis` (an axis or a list of axes):

    `y = gamma * (x - m) / sqrt(v + epsilon) + beta`, with m and the biased variance v taken over
    the `axis` axes of each sample; gamma and beta have the shape of those axes (in increasing
    axis order). The same in training and inference.

    Input shape: any; output shape: the input shape.
    """

    type: Literal["LayerNormalization"] = "LayerNormalization"
    # Keras passes a mask through and normalizes every position, masked or not.
    supports_masking: ClassVar[bool] = True
    axis: int | list[int] = -1
    rms_scaling: Literal[False] = Field(
        False,
        description="Deprecated in Keras 3 (it scales by the variance, not the RMS); "
        "use a later RMSNormalization instead.",
    )

    @field_validator("axis")
    @classmethod
    def _distinct(cls, axis):
        if isinstance(axis, list) and (not axis or len(set(axis)) != len(axis)):
            raise ValueError(f"axis must list distinct axes. Received: axis={axis}")
        return axis

    def _axes(self, shape):
        axes = [self.axis] if isinstance(self.axis, int) else self.axis
        resolved = sorted(_resolve_axis(a, shape) for a in axes)
        if len(set(resolved)) != len(resolved):
            raise ShapeError(
                f"axis {self.axis} names one axis twice for input {format_shape(shape)}"
            )
        return tuple(resolved)

    def call(self, w, x, ctx):
        axes = self._axes(x.shape[1:])
        rest = tuple(i for i in range(x.ndim) if i not in axes)
        gamma = _broadcastable(w.get("gamma"), axes, x.ndim)
        beta = _broadcastable(w.get("beta"), axes, x.ndim)
        mean = np.mean(x, axis=axes, keepdims=True)
        centered = x - mean
        var = np.mean(np.square(centered), axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(var + x.dtype.type(self.epsilon))
        x_hat = centered * inv
        y = _affine(x_hat, gamma, beta)
        need_dx = ctx.need_dx

        def backprop(dy):
            grads = {}
            if gamma is not None:
                grads["gamma"] = np.sum(dy * x_hat, axis=rest).reshape(w["gamma"].shape)
            if beta is not None:
                grads["beta"] = np.sum(dy, axis=rest).reshape(w["beta"].shape)
            if not need_dx:
                return None, grads
            # dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(v + epsilon), g = dy * gamma,
            # with the means over the normalized axes.
            g = dy if gamma is None else dy * gamma
            dx = g - np.mean(g, axis=axes, keepdims=True)
            dx -= x_hat * np.mean(g * x_hat, axis=axes, keepdims=True)
            dx *= inv
            return dx, grads

        return y, backprop
