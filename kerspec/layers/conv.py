"""Convolutions: Conv1D and Conv2D, their arguments and shapes as Keras has them.

`convolve` is the math, as a few calls into layers/im2col.py: the windows as an im2col view,
the forward GEMM, and in backprop the kernel gradient and the input gradient (col2im). Arrays
are handled channels_last inside; a channels_first input is moved there as a view. A new rank
of convolution is a subclass of `BaseConv` with its `rank`, `layout` and `padding` choices.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import PositiveInt, model_validator

from kerspec.layers.base import LAYERS, ShapeError, format_shape, require_known
from kerspec.layers.core import DataFormat, KernelBiasLayer
from kerspec.layers.im2col import (
    backward,
    backward_buffers,
    forward_gemm,
    gemm_kernel,
    geometry,
    window_view,
)
from kerspec.layers.windows import (
    CausalPadding,
    Padding,
    Sizes,
    as_tuple,
    check_lengths,
    from_last,
    join_channels,
    out_sizes,
    pad_amounts,
    padded,
    split_channels,
    to_last,
)


class BaseConv(KernelBiasLayer):
    """Shared arguments and math of Conv1D and Conv2D."""

    rank: ClassVar[int]
    layout: ClassVar[str]

    filters: PositiveInt
    kernel_size: Sizes
    strides: Sizes = 1
    data_format: DataFormat | None = None
    dilation_rate: Sizes = 1
    groups: PositiveInt = 1

    @model_validator(mode="after")
    def _check_sizes(self):
        check_lengths(self, self.rank, "kernel_size", "strides", "dilation_rate")
        strides, dilation = self._sizes()[1:]
        if max(strides) > 1 and max(dilation) > 1:
            raise ValueError(
                "strides > 1 cannot be combined with dilation_rate > 1 (as in Keras); "
                f"received strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        return self

    def _sizes(self):
        return (
            as_tuple(self.kernel_size, self.rank),
            as_tuple(self.strides, self.rank),
            as_tuple(self.dilation_rate, self.rank),
        )

    def _channels(self, shape) -> tuple[tuple, int]:
        spatial, channels = split_channels(self, shape, self.rank, self.layout)
        require_known((channels,), "the channel dimension")
        if self.filters % self.groups:
            raise ShapeError(
                f"filters ({self.filters}) must be divisible by groups ({self.groups})"
            )
        if channels % self.groups:
            raise ShapeError(
                f"the input channels ({channels}) must be divisible by groups "
                f"({self.groups}); received {format_shape(shape)}"
            )
        return spatial, channels

    def output_shape(self, shape):
        spatial, _ = self._channels(shape)
        kernel, strides, dilation = self._sizes()
        pads = pad_amounts(self.padding, spatial, kernel, strides, dilation)
        return join_channels(
            self, out_sizes(self, spatial, pads, kernel, strides, dilation), self.filters
        )

    def weight_specs(self, shape):
        _, channels = self._channels(shape)
        kernel = self._sizes()[0]
        return self.kernel_and_bias((*kernel, channels // self.groups, self.filters), self.filters)

    def call(self, w, x, ctx):
        return convolve(self, w, x, ctx)

    def _geometry(self, xl, blocks):
        sizes = kernel, strides, dilation = self._sizes()
        spatial = xl.shape[1:-1]
        pads = pad_amounts(self.padding, spatial, kernel, strides, dilation)
        out = out_sizes(self, spatial, pads, kernel, strides, dilation)
        return geometry(xl, sizes, pads, out, self.groups, self.filters, self.use_bias, blocks)


def convolve(layer: BaseConv, w, x: np.ndarray, ctx, blocks: tuple[int, ...] | None = None):
    """`layer` applied to x: (y, backprop), as `SimpleLayer.call` returns them.

    `blocks`: the output is for a pooling over non-overlapping windows of that size
    (graph/fusions.py): only the positions inside whole windows are computed, written as
    (batch, *blocks, *(out // blocks), filters) so that each window offset is one contiguous
    block for the pooling's passes."""
    xl = to_last(layer, x)
    g = layer._geometry(xl, blocks)
    # Inference reads the padded input only inside this call (no backward follows): one buffer
    # serves every convolution of the plan.
    xp = padded(xl, g.pads, 0.0, ctx, "padded", shared=not ctx.record)
    grouped = xp.reshape(*xp.shape[:-1], g.groups, g.in_group)
    views = window_view(grouped, g)
    kernel = gemm_kernel(w, g, x.dtype)
    activation = layer.activation
    bias = w["bias"] if layer.use_bias else None
    z, y, kept_cols = forward_gemm(views, kernel, bias, activation, g, ctx)
    kept_z = z if activation.uses_input else None
    need_dx = ctx.need_dx
    buffers = backward_buffers(ctx, g, x.dtype, kept_cols)

    def backprop(dy):
        dz = activation.backward(kept_z, y, to_last(layer, dy).reshape(g.rows, g.filters))
        dx, grads = backward(views, kept_cols, dz, kernel, g, buffers, need_dx, layer.use_bias)
        return (None if dx is None else from_last(layer, dx)), grads

    return from_last(layer, y.reshape(g.batch, *g.placed, g.filters)), backprop


@LAYERS.register("Conv1D", "Convolution1D")
class Conv1D(BaseConv):
    """1D convolution (cross-correlation, as Keras):
    `y[t, f] = activation(sum_{k, c} x[t * stride + k * dilation - pad, c] * kernel[k, c, f] + bias[f])`,
    with input channels and filters split into `groups` independent groups.

    Input shape (batch, steps, channels) or (batch, channels, steps) for channels_first; output
    shape (batch, new_steps, filters). Kernel (kernel_size, channels / groups, filters).
    """

    type: Literal["Conv1D"] = "Conv1D"
    padding: CausalPadding = "valid"
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"


@LAYERS.register("Conv2D", "Convolution2D")
class Conv2D(BaseConv):
    """2D convolution (cross-correlation, as Keras):
    `y[i, j, f] = activation(sum_{a, b, c} x[i*sh + a*dh - pad_top, j*sw + b*dw - pad_left, c]
    * kernel[a, b, c, f] + bias[f])`, with channels and filters split into `groups`.

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, new_height, new_width, filters) in the same layout.
    Kernel (kh, kw, channels / groups, filters).
    """

    type: Literal["Conv2D"] = "Conv2D"
    padding: Padding = "valid"
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"
