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
        xm = _channels_last(x, axis)
        dtype = x.dtype.type
        gamma, beta = w.get("gamma"), w.get("beta")
        training = ctx.training and self.trainable
        if training:
            mean, var = _moments(xm)
            # The moving statistics are state, not trained weights: updated here, as Keras
            # assigns them during its training-mode call.
            momentum = self.momentum
            for name, batch_value in (("moving_mean", mean), ("moving_variance", var)):
                moving = w[name]
                moving *= moving.dtype.type(momentum)
                moving += batch_value * moving.dtype.type(1.0 - momentum)
        else:
            mean, var = w["moving_mean"], w["moving_variance"]
        inv = 1.0 / np.sqrt(var + dtype(self.epsilon))
        # y = x * scale + shift, with scale = gamma / sqrt(v + epsilon) and shift = beta -
        # mean * scale: the normalisation and the affine map in one multiply and one add, into
        # a buffer reused batch after batch (at inference, one its buffer group shares with
        # steps whose values are dead, graph/lifetimes.py). Backprop never reads y, so a
        # rewrite may run an activation in place over it (graph/fusions.py).
        scale = inv if gamma is None else inv * gamma
        shift = -mean * scale if beta is None else beta - mean * scale
        y = ctx.buffer("y", x.shape, x.dtype)
        # y is contiguous, x may be a strided view (a Cropping2D's output): y shaped as x's view.
        ym = _channels_last(y, axis).reshape(xm.shape)
        np.multiply(xm, scale, out=ym)
        ym += shift
        count = dtype(xm.size // xm.shape[-1])
        need_dx = ctx.need_dx
        keep = need_dx and ctx.record
        scratch = ctx.buffer("scratch", x.shape, x.dtype) if training and keep else None
        dx_buffer = ctx.buffer("dx", x.shape, x.dtype) if keep else None

        def backprop(dy):
            # Two reductions over dy: s1 = sum(dy) and sum(dy * x), from which
            # s2 = sum(dy * x_hat) = (sum(dy * x) - mean * s1) / sqrt(v + epsilon).
            dym = _channels_last(dy, axis)
            xd = xm.reshape(dym.shape)  # a view unless x or dy is strided
            s1 = _channel_sum(dym)
            s2 = (_channel_sum(dym, xd) - mean * s1) * inv
            grads = {}
            if gamma is not None:
                grads["gamma"] = s2
            if beta is not None:
                grads["beta"] = s1
            if not need_dx:
                return None, grads
            # dx in a buffer of its own, not over dy: a merge (Add) may hand the same dy to
            # another branch.
            dx = dx_buffer if dx_buffer is not None else np.empty(x.shape, x.dtype)
            dxm = _channels_last(dx, axis).reshape(dym.shape)
            np.multiply(dym, scale, out=dxm)
            if training:
                # dx = scale * (dy - s1 / N - x_hat * s2 / N), with x_hat = (x - mean) * inv:
                # scale * dy - x * (scale * k) + scale * (mean * k - s1 / N), k = inv * s2 / N.
                k = inv * s2 / count
                t = _channels_last(scratch if scratch is not None else np.empty_like(x), axis)
                t = t.reshape(dym.shape)
                np.multiply(xd, scale * k, out=t)
                dxm -= t
                dxm += scale * (mean * k - s1 / count)
            return dx, grads

        return y, backprop


def _channels_last(x: np.ndarray, axis: int) -> np.ndarray:
    """A view of x with `axis` last, 2-D (rows, channels) when that needs no copy; per-channel
    vectors broadcast against it, and what is written into it lands in x."""
    if axis != x.ndim - 1:
        return np.moveaxis(x, axis, -1)
    return x.reshape(-1, x.shape[-1]) if x.flags.c_contiguous else x


def _channel_sum(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """The per-channel sum of a (channels last), or of a * b without forming the product.
    einsum's sums run along the rows several times faster than ndarray.sum(axis=0) when the
    channels are few (32 channels: 3-4x)."""
    rows = "abcdefghijklmnopqrstuvwxy"[: a.ndim - 1]
    if b is None:
        return np.einsum(f"{rows}z->z", a)
    return np.einsum(f"{rows}z,{rows}z->z", a, b)


def _moments(xm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of xm (channels last), as Keras 3 takes them:
    E[x^2] - E[x]^2, from two reductions that read xm and write nothing its size. Rounding can
    leave a tiny negative variance where the spread is far below the mean: clipped at 0."""
    n = xm.dtype.type(xm.size // xm.shape[-1])
    mean = _channel_sum(xm) / n
    var = _channel_sum(xm, xm) / n - mean * mean
    return mean, np.maximum(var, 0, out=var)


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
