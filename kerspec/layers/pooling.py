"""Pooling: Max/AveragePooling1D/2D over windows, and Global*Pooling1D/2D over all positions.

A window pooling sees its input through one strided view per window offset, never a loop over
positions, and reduces the views with maximum or add (`reduce_offsets`); backward sends each
offset's share of the gradient back through the same view. No copy of the windows is made. The
views come in two kinds:

- `BasePooling._windows`, any pool size, strides and padding: every offset is a strided view of
  the padded input covering every output position (the helpers in layers/windows.py); backward
  adds each share into zeros (`_scatter`).
- `Tiles`, windows that tile the input (pool_size == strides, no padding, the usual case): the
  input, cropped to whole windows, is split into a (batch, out_h, pool_h, out_w, pool_w,
  channels) view, where every offset is an index. Max pooling then works a few samples at a
  time into buffers reused batch after batch, and its backward writes the gradient through that
  view in one pass (a mask of the window maxima, first maximum wins): no scatter into zeros.
  When a convolution writes its output already split into the windows (graph/fusions.py),
  (batch, *pool, *out, channels), the same tiles are whole contiguous blocks (`split_tiles`).
"""

from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import model_validator

from kerspec.layers.base import LAYERS, SimpleLayer
from kerspec.layers.core import DataFormat
from kerspec.layers.windows import (
    Padding,
    Sizes,
    as_tuple,
    check_lengths,
    from_last,
    interior,
    join_channels,
    offset_region,
    out_sizes,
    pad_amounts,
    padded,
    split_channels,
    to_last,
)

# Max pooling over tiles works through the batch in blocks of about this many input bytes.
POOL_CHUNK_BYTES = 1 << 20


def window_counts(spatial, pads, pool, strides, out, dtype) -> np.ndarray:
    """How many real (unpadded) values each window covers, shaped (*out, 1) for the channels."""
    counts = np.ones((), dtype)
    for n, (lo, _), p, s, o in zip(spatial, pads, pool, strides, out):
        starts = np.arange(o) * s - lo
        per_dim = (np.minimum(starts + p, n) - np.maximum(starts, 0)).astype(dtype)
        counts = np.multiply.outer(counts, per_dim)
    return counts[..., None]


def reduce_offsets(source: np.ndarray, indexes: list, combine, out=None) -> np.ndarray:
    """`combine` (np.maximum, np.add) over source[index] for every window offset's index, in
    order: into `out`, or a fresh array."""
    if out is None:
        out = source[indexes[0]].copy()
    else:
        np.copyto(out, source[indexes[0]])
    for index in indexes[1:]:
        combine(out, source[index], out=out)
    return out


class Tiles(NamedTuple):
    """Windows that tile the input, as one view of it where each window offset is an index."""

    # The channels_last input, and its crop to whole windows (an odd edge is in no window; None
    # when the input comes split into the windows).
    xl: np.ndarray
    crop: tuple | None
    # The (cropped) input with the window axes split off, the index of each window offset into
    # it (np.ndindex order), and the view's window axes.
    view: np.ndarray
    offsets: list[tuple]
    window_axes: tuple[int, ...]


def split_tiles(x: np.ndarray, rank: int) -> Tiles:
    """The tiles of an input that comes split into its windows, (batch, *pool, *out, channels)."""
    offsets = [(slice(None), *offset) for offset in np.ndindex(*x.shape[1 : 1 + rank])]
    return Tiles(x, None, x, offsets, tuple(range(1, rank + 1)))


class BasePooling(SimpleLayer):
    rank: ClassVar[int]
    layout: ClassVar[str]

    pool_size: Sizes
    strides: Sizes | None = None
    padding: Padding = "valid"
    data_format: DataFormat | None = None

    @model_validator(mode="after")
    def _check_sizes(self):
        check_lengths(self, self.rank, "pool_size", "strides")
        return self

    def _sizes(self):
        pool = as_tuple(self.pool_size, self.rank)
        strides = pool if self.strides is None else as_tuple(self.strides, self.rank)
        return pool, strides, (1,) * self.rank

    def output_shape(self, shape):
        spatial, channels = split_channels(self, shape, self.rank, self.layout)
        pool, strides, ones = self._sizes()
        pads = pad_amounts(self.padding, spatial, pool, strides, ones)
        return join_channels(self, out_sizes(self, spatial, pads, pool, strides, ones), channels)

    def _windows(self, x, fill, ctx):
        """The channels_last input, its padding and padded version, and for every window offset
        the strided view of the padded input it reads at all output positions."""
        pool, strides, ones = self._sizes()
        xl = to_last(self, x)
        spatial = xl.shape[1:-1]
        pads = pad_amounts(self.padding, spatial, pool, strides, ones)
        out = out_sizes(self, spatial, pads, pool, strides, ones)
        xp = padded(xl, pads, fill, ctx, "padded")
        regions = [offset_region(offset, strides, ones, out) for offset in np.ndindex(*pool)]
        return xl, pads, xp, regions

    def _tiles(self, x) -> Tiles | None:
        """The tiles of x when the windows tile it (pool_size == strides, no padding: `same`
        only when the sizes divide), None otherwise."""
        pool, strides, ones = self._sizes()
        if pool != strides:
            return None
        xl = to_last(self, x)
        spatial = xl.shape[1:-1]
        pads = pad_amounts(self.padding, spatial, pool, strides, ones)
        if any(lo or hi for lo, hi in pads):
            return None
        out = out_sizes(self, spatial, pads, pool, strides, ones)
        crop = (slice(None), *(slice(0, o * p) for o, p in zip(out, pool)), slice(None))
        split = (xl.shape[0], *(d for o, p in zip(out, pool) for d in (o, p)), xl.shape[-1])
        # Splitting axes never needs a copy, so this is a view of x.
        view = xl[crop].reshape(split)
        offsets = [
            (slice(None), *(i for k in offset for i in (slice(None), k)), slice(None))
            for offset in np.ndindex(*pool)
        ]
        return Tiles(xl, crop, view, offsets, tuple(range(2, 2 * self.rank + 1, 2)))

    @staticmethod
    def _scatter(xl, pads, xp, regions, share) -> np.ndarray:
        """The input gradient: `share(index)` (batch, *out, channels) added at every offset."""
        dxp = np.zeros(xp.shape, xl.dtype)
        for index, region in enumerate(regions):
            dxp[region] += share(index)
        return dxp[interior(pads, xl.shape[1:-1])]


class MaxPooling(BasePooling):
    def call(self, w, x, ctx):
        tiles = self._tiles(x)
        if tiles is not None:
            return max_pool_tiles(self, tiles, ctx)
        # -inf padding never wins a window, as in TensorFlow's max pool.
        xl, pads, xp, regions = self._windows(x, -np.inf, ctx)
        y = reduce_offsets(xp, regions, np.maximum)
        need_dx = ctx.need_dx

        def backprop(dy):
            if not need_dx:
                return None, {}
            dyl = to_last(self, dy)
            # The first offset holding the maximum takes the whole gradient, so a tie sends it
            # to one value, as TensorFlow's max pool gradient does.
            taken = np.zeros(y.shape, bool)

            def share(index):
                hit = xp[regions[index]] == y
                np.logical_and(hit, ~taken, out=hit)
                np.logical_or(taken, hit, out=taken)
                return dyl * hit

            return from_last(self, self._scatter(xl, pads, xp, regions, share)), {}

        return from_last(self, y), backprop


def max_pool_tiles(layer: MaxPooling, tiles: Tiles, ctx):
    """Max pooling over tiles: pool_h * pool_w - 1 maxima forward, and a backward that writes
    each offset's share straight into its view of dx."""
    xl, view = tiles.xl, tiles.view
    # The output (and, when a backward pass will follow, the gradient) live in buffers reused
    # batch after batch: a fresh large array costs its page faults on every call. Taken now
    # because backprop runs when ctx.node names another layer.
    y = ctx.buffer("y", view[tiles.offsets[0]].shape, xl.dtype)
    # Both passes go a few samples at a time, so that the output block each offset's maximum
    # reads and writes stays in cache rather than streaming the whole batch's output once per
    # offset.
    batch = view.shape[0]
    step = max(1, min(batch, POOL_CHUNK_BYTES // max(view[:1].nbytes, 1)))
    for start in range(0, batch, step):
        part, into = view[start : start + step], y[start : start + step]
        reduce_offsets(part, tiles.offsets, np.maximum, out=into)
    need_dx = ctx.need_dx
    keep = need_dx and ctx.record
    dx_buffer = ctx.buffer("dx", xl.shape, xl.dtype) if keep else None
    hit_shape = (step, *view.shape[1:])
    hit_buffer = ctx.buffer("hit", hit_shape, bool) if keep else None

    def backprop(dy):
        if not need_dx:
            return None, {}
        dxl = dx_buffer if dx_buffer is not None else np.empty(xl.shape, xl.dtype)
        hits = hit_buffer if hit_buffer is not None else np.empty(hit_shape, bool)
        dxv = _tiles_of_dx(dxl, tiles)
        dyl = to_last(layer, dy)
        expand = tiles.window_axes
        # A NaN window has no hit, which would let a tie elsewhere pass the count below.
        has_nan = bool(np.isnan(y).any())
        for start in range(0, batch, step):
            stop = min(start + step, batch)
            hit = hits[: stop - start]
            # Every value equal to its window's maximum, in one pass over the input.
            np.equal(view[start:stop], np.expand_dims(y[start:stop], expand), out=hit)
            # Bool passes over the output, skipped when no window has two hits (the usual case
            # for pre-activations, see graph/fusions.py).
            if has_nan or np.count_nonzero(hit) != y[start:stop].size:
                _first_hits(hit, tiles.offsets)
            # The mask made float first: a float-by-bool multiply casts in small buffers and
            # runs slower than the copy and the float multiply together.
            part = dxv[start:stop]
            np.copyto(part, hit)
            np.multiply(part, np.expand_dims(dyl[start:stop], expand), out=part)
        return from_last(layer, dxl), {}

    return from_last(layer, y), backprop


def _tiles_of_dx(dxl: np.ndarray, tiles: Tiles) -> np.ndarray:
    """dx's view as the tiles' view; what the crop cut off (an odd edge, in no window) zeroed."""
    crop = tiles.crop
    if crop is None:
        return dxl
    for axis, kept in enumerate(crop[1:-1], start=1):
        if kept.stop < dxl.shape[axis]:
            dxl[(slice(None),) * axis + (slice(kept.stop, None),)] = 0
    return dxl[crop].reshape(tiles.view.shape)


def _first_hits(hit: np.ndarray, offsets: list[tuple]) -> None:
    """The first offset holding the maximum takes the whole gradient (TensorFlow's tie rule; ties
    are common after a relu, windows of zeros): an offset keeps its hits only where no earlier
    offset hit."""
    if len(offsets) < 2:
        return
    earlier = hit[offsets[0]].copy()
    for index, offset in enumerate(offsets[1:], start=2):
        np.greater(hit[offset], earlier, out=hit[offset])
        if index < len(offsets):
            np.logical_or(earlier, hit[offset], out=earlier)


class AveragePooling(BasePooling):
    def call(self, w, x, ctx):
        pool, strides, _ = self._sizes()
        xl, pads, xp, regions = self._windows(x, 0.0, ctx)
        y = reduce_offsets(xp, regions, np.add)
        # Padding adds zeros to the sum but is left out of the count, as Keras (TensorFlow) does.
        counts = window_counts(xl.shape[1:-1], pads, pool, strides, y.shape[1:-1], x.dtype)
        y /= counts
        need_dx = ctx.need_dx

        def backprop(dy):
            if not need_dx:
                return None, {}
            share = to_last(self, dy) / counts
            return from_last(self, self._scatter(xl, pads, xp, regions, lambda i: share)), {}

        return from_last(self, y), backprop


def average_pool_tiles(tiles: Tiles, ctx):
    """Average pooling over an input that comes split into its windows (`split_tiles`): the
    offsets added in the same order as `AveragePooling.call`, then divided by the window's size."""
    x = tiles.view
    y = reduce_offsets(x, tiles.offsets, np.add)
    size = x.dtype.type(len(tiles.offsets))
    y /= size
    need_dx = ctx.need_dx

    def backprop(dy):
        if not need_dx:
            return None, {}
        share = dy / size
        return np.broadcast_to(np.expand_dims(share, tiles.window_axes), x.shape).copy(), {}

    return y, backprop


@LAYERS.register("MaxPooling1D", "MaxPool1D")
class MaxPooling1D(MaxPooling):
    """`y[t, c] = max_{k < pool_size} x[t * strides + k - pad, c]`; padding counts as -inf.

    Input shape (batch, steps, channels), or (batch, channels, steps) for channels_first;
    output (batch, new_steps, channels) in the same layout.
    """

    type: Literal["MaxPooling1D"] = "MaxPooling1D"
    pool_size: Sizes = 2
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"


@LAYERS.register("MaxPooling2D", "MaxPool2D")
class MaxPooling2D(MaxPooling):
    """`y[i, j, c] = max over the pool_size window at (i * sh - pad_top, j * sw - pad_left)`.

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, new_height, new_width, channels) in the same layout.
    """

    type: Literal["MaxPooling2D"] = "MaxPooling2D"
    pool_size: Sizes = 2
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"


@LAYERS.register("AveragePooling1D", "AvgPool1D")
class AveragePooling1D(AveragePooling):
    """`y[t, c] = mean of the real values in x[t * strides - pad : ... + pool_size, c]`.

    Input shape (batch, steps, channels), or (batch, channels, steps) for channels_first;
    output (batch, new_steps, channels) in the same layout.
    """

    type: Literal["AveragePooling1D"] = "AveragePooling1D"
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"


@LAYERS.register("AveragePooling2D", "AvgPool2D")
class AveragePooling2D(AveragePooling):
    """`y[i, j, c] = mean of the real values in the pool_size window at (i * sh, j * sw)`.

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, new_height, new_width, channels) in the same layout.
    """

    type: Literal["AveragePooling2D"] = "AveragePooling2D"
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"


class GlobalPooling(SimpleLayer):
    rank: ClassVar[int]
    layout: ClassVar[str]

    data_format: DataFormat | None = None
    keepdims: bool = False

    def output_shape(self, shape):
        _, channels = split_channels(self, shape, self.rank, self.layout)
        if self.keepdims:
            return join_channels(self, (1,) * self.rank, channels)
        return (channels,)

    def _flat(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """x as (batch, positions, channels) or (batch, channels, positions), and the positions axis."""
        if self.data_format == "channels_first":
            return x.reshape(*x.shape[:2], -1), 2
        return x.reshape(x.shape[0], -1, x.shape[-1]), 1

    def _shaped(self, pooled: np.ndarray, x: np.ndarray) -> np.ndarray:
        """pooled, with a kept positions axis of 1, in the output shape."""
        if self.keepdims:
            return pooled.reshape(x.shape[0], *self.output_shape(x.shape[1:]))
        return pooled.reshape(x.shape[0], -1)


class GlobalMaxPooling(GlobalPooling):
    def call(self, w, x, ctx):
        flat, axis = self._flat(x)
        # The first maximum of each channel gets the whole gradient, as with MaxPooling.
        winner = np.expand_dims(flat.argmax(axis=axis), axis)
        y = self._shaped(np.take_along_axis(flat, winner, axis=axis), x)
        need_dx = ctx.need_dx

        def backprop(dy):
            if not need_dx:
                return None, {}
            dflat = np.zeros(flat.shape, x.dtype)
            np.put_along_axis(dflat, winner, dy.reshape(winner.shape), axis=axis)
            return dflat.reshape(x.shape), {}

        return y, backprop


class GlobalAveragePooling(GlobalPooling):
    def call(self, w, x, ctx):
        flat, axis = self._flat(x)
        positions = flat.shape[axis]
        y = self._shaped(flat.mean(axis=axis, keepdims=True), x)
        need_dx = ctx.need_dx
        # An array, not a broadcast view: the layer below may write into its dy. One kept for
        # the node, taken now because backprop runs when ctx.node names another layer.
        dx_buffer = ctx.buffer("dx", flat.shape, x.dtype) if need_dx and ctx.record else None

        def backprop(dy):
            if not need_dx:
                return None, {}
            dflat = dx_buffer if dx_buffer is not None else np.empty(flat.shape, x.dtype)
            np.divide(np.expand_dims(dy.reshape(x.shape[0], -1), axis), positions, out=dflat)
            return dflat.reshape(x.shape), {}

        return y, backprop


@LAYERS.register("GlobalMaxPooling1D", "GlobalMaxPool1D")
class GlobalMaxPooling1D(GlobalMaxPooling):
    """`y[c] = max_t x[t, c]`. Input (batch, steps, channels) or (batch, channels, steps);
    output (batch, channels), or (batch, 1, channels) / (batch, channels, 1) with keepdims."""

    type: Literal["GlobalMaxPooling1D"] = "GlobalMaxPooling1D"
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"


@LAYERS.register("GlobalMaxPooling2D", "GlobalMaxPool2D")
class GlobalMaxPooling2D(GlobalMaxPooling):
    """`y[c] = max_{i, j} x[i, j, c]`. Input (batch, height, width, channels) or channels_first;
    output (batch, channels), or (batch, 1, 1, channels) / (batch, channels, 1, 1) with keepdims."""

    type: Literal["GlobalMaxPooling2D"] = "GlobalMaxPooling2D"
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"


@LAYERS.register("GlobalAveragePooling1D", "GlobalAvgPool1D")
class GlobalAveragePooling1D(GlobalAveragePooling):
    """`y[c] = mean_t x[t, c]`. Input (batch, steps, channels) or (batch, channels, steps);
    output (batch, channels), or (batch, 1, channels) / (batch, channels, 1) with keepdims.

    With a mask (batch, steps), as in Keras, only the unmasked steps are averaged:
    `y[c] = sum_t m[t] x[t, c] / sum_t m[t]`, and the output has no mask. Where a whole row is
    masked Keras divides 0 by 0 (NaN); here that row's output is 0, with no gradient.
    (GlobalMaxPooling1D, as in Keras 3, does not support masking: a masked input is refused.)
    """

    type: Literal["GlobalAveragePooling1D"] = "GlobalAveragePooling1D"
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"
    supports_masking: ClassVar[bool] = True

    def output_masked(self, masked, n_outputs):
        return [False]

    def compute_mask(self, xs, masks, ys):
        return [None]

    def call(self, w, x, ctx):
        mask = ctx.masks[0] if ctx.masks else None
        if mask is None:
            return super().call(w, x, ctx)
        axis = 2 if self.data_format == "channels_first" else 1
        keep = np.expand_dims(mask, 3 - axis).astype(x.dtype)
        # Each sample's weights 1 / count on its unmasked steps; a fully masked row gets 0s.
        keep /= np.maximum(keep.sum(axis=axis, keepdims=True), 1)
        y = self._shaped(np.sum(x * keep, axis=axis, keepdims=True), x)
        need_dx = ctx.need_dx

        def backprop(dy):
            if not need_dx:
                return None, {}
            return np.expand_dims(dy.reshape(x.shape[0], -1), axis) * keep, {}

        return y, backprop


@LAYERS.register("GlobalAveragePooling2D", "GlobalAvgPool2D")
class GlobalAveragePooling2D(GlobalAveragePooling):
    """`y[c] = mean_{i, j} x[i, j, c]`. Input (batch, height, width, channels) or channels_first;
    output (batch, channels), or (batch, 1, 1, channels) / (batch, channels, 1, 1) with keepdims."""

    type: Literal["GlobalAveragePooling2D"] = "GlobalAveragePooling2D"
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"
