"""Regularization layers that act only while training: spatial dropout, Gaussian noise and
dropout, and ActivityRegularization (an identity whose output adds a penalty to the loss).

Random layers draw from the run's generator, or from their own when they carry a `seed`, and
only in training; at inference they return their input unchanged. Every layer here passes a mask
on unchanged, as in Keras.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from kerspec.layers.base import LAYERS, Context, ShapeError, SimpleLayer, format_shape
from kerspec.regularizers import L1L2

DataFormat = Literal["channels_last", "channels_first"]


def _identity(dy):
    return dy, {}


def keep_mask(
    rng: np.random.Generator, rate: float, shape: tuple[int, ...], dtype
) -> np.ndarray | None:
    """A dropout mask: 0 with probability `rate`, else 1 / (1 - rate); None when `rate` is 0.

    Rate 1, which Keras accepts, drops everything: the mask is all 0.
    """
    if rate == 0.0:
        return None
    keep = 1.0 - rate
    mask = (rng.random(shape, dtype=np.float32) < keep).astype(dtype)
    if keep > 0.0:
        mask *= 1.0 / keep
    return mask


class _Random(SimpleLayer):
    # As in Keras, a mask passes through unchanged.
    supports_masking: ClassVar[bool] = True
    seed: int | None = None

    def output_shape(self, shape):
        return shape

    def _rng(self, ctx: Context) -> np.random.Generator:
        return ctx.rng if self.seed is None else ctx.seeded_rng(self, self.seed)


class _SpatialDropout(_Random):
    """Dropout of whole feature maps: one keep/drop draw per (sample, channel), shared over the
    spatial axes; kept maps are scaled by 1 / (1 - rate).

    Input and output shape: (batch, *spatial, channels) for channels_last, (batch, channels,
    *spatial) for channels_first.
    """

    rate: float = Field(ge=0.0, le=1.0)
    spatial: ClassVar[int]

    def _channels_first(self) -> bool:
        return getattr(self, "data_format", None) == "channels_first"

    def output_shape(self, shape):
        if len(shape) != self.spatial + 1:
            raise ShapeError(
                f"{self.type} needs inputs of rank {self.spatial + 2}; received {format_shape(shape)}"
            )
        return shape

    def call(self, w, x, ctx):
        if not ctx.training or self.rate == 0:
            return x, _identity
        if self._channels_first():
            noise_shape = (x.shape[0], x.shape[1], *(1,) * self.spatial)
        else:
            noise_shape = (x.shape[0], *(1,) * self.spatial, x.shape[-1])
        mask = keep_mask(self._rng(ctx), self.rate, noise_shape, x.dtype)
        y = x * mask

        def backprop(dy):
            return dy * mask, {}

        return y, backprop


@LAYERS.register("SpatialDropout1D")
class SpatialDropout1D(_SpatialDropout):
    """Drops whole channels of (batch, steps, channels) inputs; see `_SpatialDropout`."""

    type: Literal["SpatialDropout1D"] = "SpatialDropout1D"
    spatial: ClassVar[int] = 1


@LAYERS.register("SpatialDropout2D")
class SpatialDropout2D(_SpatialDropout):
    """Drops whole feature maps of 4-D inputs (channels last by default); see
    `_SpatialDropout`."""

    type: Literal["SpatialDropout2D"] = "SpatialDropout2D"
    data_format: DataFormat | None = None
    spatial: ClassVar[int] = 2


@LAYERS.register("SpatialDropout3D")
class SpatialDropout3D(_SpatialDropout):
    """Drops whole feature volumes of 5-D inputs (channels last by default); see
    `_SpatialDropout`."""

    type: Literal["SpatialDropout3D"] = "SpatialDropout3D"
    data_format: DataFormat | None = None
    spatial: ClassVar[int] = 3


@LAYERS.register("GaussianNoise")
class GaussianNoise(_Random):
    """While training, `y = x + n` with n ~ Normal(0, stddev^2) drawn per element; `dx = dy`.

    Keras accepts stddev in [0, 1] only. Input and output shape: any, the same.
    """

    type: Literal["GaussianNoise"] = "GaussianNoise"
    stddev: float = Field(ge=0.0, le=1.0)

    def call(self, w, x, ctx):
        if not ctx.training or self.stddev == 0:
            return x, _identity
        noise = self._rng(ctx).standard_normal(x.shape, dtype=x.dtype)
        noise *= x.dtype.type(self.stddev)
        noise += x
        return noise, _identity


@LAYERS.register("GaussianDropout")
class GaussianDropout(_Random):
    """While training, `y = x * n` with n ~ Normal(1, rate / (1 - rate)) per element;
    `dx = dy * n`. Input and output shape: any, the same.
    """

    type: Literal["GaussianDropout"] = "GaussianDropout"
    rate: float = Field(ge=0.0, lt=1.0)

    def call(self, w, x, ctx):
        if not ctx.training or self.rate == 0:
            return x, _identity
        noise = self._rng(ctx).standard_normal(x.shape, dtype=x.dtype)
        noise *= x.dtype.type(math.sqrt(self.rate / (1.0 - self.rate)))
        noise += x.dtype.type(1.0)
        y = x * noise

        def backprop(dy):
            return dy * noise, {}

        return y, backprop


@LAYERS.register("ActivityRegularization")
class ActivityRegularization(SimpleLayer):
    """The identity, whose output adds `(l1 * sum(|y|) + l2 * sum(y^2)) / batch_size` to the loss.

    As in Keras, the layer is a plain layer with an `l1_l2` activity regularizer: the plan adds
    the penalty, divided by the batch size as Keras 3 does, and its gradient.
    Input and output shape: any, the same.
    """

    type: Literal["ActivityRegularization"] = "ActivityRegularization"
    supports_masking: ClassVar[bool] = True
    l1: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    l2: float = Field(0.0, ge=0.0, allow_inf_nan=False)

    @property
    def activity_regularizer(self) -> L1L2 | None:
        if self.l1 == 0 and self.l2 == 0:
            return None
        return L1L2(l1=self.l1, l2=self.l2)

    def output_shape(self, shape):
        return shape

    def call(self, w, x, ctx):
        return x, _identity
