"""Spatial reshaping: ZeroPadding1D/2D, Cropping1D/2D, UpSampling1D/2D and RepeatVector.

Each forward is a slice, a pad or a repeat; each backward is the matching slice or sum.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import NonNegativeInt, PositiveInt, field_validator

from kerspec.layers.base import LAYERS, ShapeError, SimpleLayer, format_shape
from kerspec.layers.core import DataFormat
from kerspec.layers.windows import (
    from_last,
    interior,
    join_channels,
    padded,
    split_channels,
    to_last,
)

Pair = list[NonNegativeInt]
# An int, one int per side, or (ZeroPadding2D/Cropping2D) one int or pair per spatial dimension.
Amount1D = NonNegativeInt | Pair
Amount2D = NonNegativeInt | list[NonNegativeInt | Pair]


def pairs_1d(value: int | list[int]) -> list[tuple[int, int]]:
    return [(value, value)] if isinstance(value, int) else [tuple(value)]


def pairs_2d(value) -> list[tuple[int, int]]:
    if isinstance(value, int):
        return [(value, value)] * 2
    return [(v, v) if isinstance(v, int) else tuple(v) for v in value]


def check_pair(value):
    if isinstance(value, list) and len(value) != 2:
        raise ValueError(f"expected an integer or a list of 2 integers; received {value}")
    return value


def check_pairs_2d(value):
    if isinstance(value, list):
        if len(value) != 2:
            raise ValueError(
                "expected an integer, 2 integers (height, width) or 2 pairs "
                f"((top, bottom), (left, right)); received {value}"
            )
        for entry in value:
            check_pair(entry)
    return value


class ZeroPadding(SimpleLayer):
    rank: ClassVar[int]
    layout: ClassVar[str]

    data_format: DataFormat | None = None

    def output_shape(self, shape):
        spatial, channels = split_channels(self, shape, self.rank, self.layout)
        grown = (None if n is None else n + lo + hi for n, (lo, hi) in zip(spatial, self._pairs()))
        return join_channels(self, tuple(grown), channels)

    def call(self, w, x, ctx):
        pads = self._pairs()
        xl = to_last(self, x)
        inside = interior(pads, xl.shape[1:-1])

        def backprop(dy):
            return from_last(self, to_last(self, dy)[inside]), {}

        return from_last(self, padded(xl, pads, 0.0, ctx, "padded")), backprop


@LAYERS.register("ZeroPadding1D")
class ZeroPadding1D(ZeroPadding):
    """Adds `padding` zeros before and after the steps axis (an int, or [before, after]).

    Input shape (batch, steps, channels), or (batch, channels, steps) for channels_first;
    output (batch, steps + before + after, channels) in the same layout.
    """

    type: Literal["ZeroPadding1D"] = "ZeroPadding1D"
    padding: Amount1D = 1
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"

    _check = field_validator("padding")(check_pair)

    def _pairs(self):
        return pairs_1d(self.padding)


@LAYERS.register("ZeroPadding2D")
class ZeroPadding2D(ZeroPadding):
    """Adds zero rows and columns: `padding` is an int, [rows, cols] (each on both sides) or
    [[top, bottom], [left, right]].

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, top + height + bottom, left + width + right, channels).
    """

    type: Literal["ZeroPadding2D"] = "ZeroPadding2D"
    padding: Amount2D = 1
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"

    _check = field_validator("padding")(check_pairs_2d)

    def _pairs(self):
        return pairs_2d(self.padding)


class Cropping(SimpleLayer):
    rank: ClassVar[int]
    layout: ClassVar[str]

    def output_shape(self, shape):
        spatial, channels = split_channels(self, shape, self.rank, self.layout)
        kept = []
        for n, (lo, hi) in zip(spatial, self._pairs()):
            if n is not None and lo + hi >= n:
                raise ShapeError(
                    f"cropping {self.cropping} must leave at least one value of "
                    f"input {format_shape(shape)}"
                )
            kept.append(None if n is None else n - lo - hi)
        return join_channels(self, tuple(kept), channels)

    def call(self, w, x, ctx):
        xl = to_last(self, x)
        spatial = xl.shape[1:-1]
        # The runtime size may differ from a None dimension checked at build time.
        self.output_shape(x.shape[1:])
        pairs = self._pairs()
        inside = interior(pairs, [n - lo - hi for n, (lo, hi) in zip(spatial, pairs)])
        y = xl[inside]
        need_dx = ctx.need_dx

        def backprop(dy):
            if not need_dx:
                return None, {}
            dx = np.zeros(xl.shape, x.dtype)
            dx[inside] = to_last(self, dy)
            return from_last(self, dx), {}

        return from_last(self, y), backprop


@LAYERS.register("Cropping1D")
class Cropping1D(Cropping):
    """Drops `cropping` steps from the start and end (an int, or [start, end]).

    Input shape (batch, steps, channels); output (batch, steps - start - end, channels).
    """

    type: Literal["Cropping1D"] = "Cropping1D"
    cropping: Amount1D = 1
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, channels)"
    # Keras's Cropping1D has no data_format: its inputs are always channels_last.
    data_format: ClassVar[None] = None

    _check = field_validator("cropping")(check_pair)

    def _pairs(self):
        return pairs_1d(self.cropping)


@LAYERS.register("Cropping2D")
class Cropping2D(Cropping):
    """Drops rows and columns at the edges: `cropping` is an int, [rows, cols] (each on both
    sides) or [[top, bottom], [left, right]].

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, height - top - bottom, width - left - right, channels).
    """

    type: Literal["Cropping2D"] = "Cropping2D"
    cropping: Amount2D = 0
    data_format: DataFormat | None = None
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"

    _check = field_validator("cropping")(check_pairs_2d)

    def _pairs(self):
        return pairs_2d(self.cropping)


class UpSampling(SimpleLayer):
    rank: ClassVar[int]
    layout: ClassVar[str]

    def _sizes(self) -> tuple[int, ...]:
        return (self.size,) * self.rank if isinstance(self.size, int) else tuple(self.size)

    def output_shape(self, shape):
        spatial, channels = split_channels(self, shape, self.rank, self.layout)
        grown = (None if n is None else n * s for n, s in zip(spatial, self._sizes()))
        return join_channels(self, tuple(grown), channels)

    def call(self, w, x, ctx):
        sizes = self._sizes()
        xl = to_last(self, x)
        batch, spatial, channels = xl.shape[0], xl.shape[1:-1], xl.shape[-1]
        # Nearest neighbour: broadcast each value over a (size_h, size_w) block, then merge axes.
        expanded = xl.reshape(batch, *(a for n in spatial for a in (n, 1)), channels)
        blocks = (batch, *(a for n, s in zip(spatial, sizes) for a in (n, s)), channels)
        y = np.broadcast_to(expanded, blocks).reshape(
            batch, *(n * s for n, s in zip(spatial, sizes)), channels
        )
        need_dx = ctx.need_dx

        def backprop(dy):
            if not need_dx:
                return None, {}
            summed = (
                to_last(self, dy).reshape(blocks).sum(axis=tuple(range(2, 2 * self.rank + 1, 2)))
            )
            return from_last(self, summed), {}

        return from_last(self, y), backprop


@LAYERS.register("UpSampling1D")
class UpSampling1D(UpSampling):
    """Repeats each step `size` times: `y[t * size + i] = x[t]`.

    Input shape (batch, steps, features); output (batch, steps * size, features).
    """

    type: Literal["UpSampling1D"] = "UpSampling1D"
    size: PositiveInt = 2
    rank: ClassVar[int] = 1
    layout: ClassVar[str] = "(batch, steps, features)"
    # Keras's UpSampling1D has no data_format.
    data_format: ClassVar[None] = None


@LAYERS.register("UpSampling2D")
class UpSampling2D(UpSampling):
    """Repeats rows `size[0]` and columns `size[1]` times (nearest neighbour):
    `y[i * sh + a, j * sw + b] = x[i, j]`.

    Input shape (batch, height, width, channels), or (batch, channels, height, width) for
    channels_first; output (batch, height * sh, width * sw, channels) in the same layout.
    """

    type: Literal["UpSampling2D"] = "UpSampling2D"
    size: PositiveInt | list[PositiveInt] = 2
    data_format: DataFormat | None = None
    interpolation: str = "nearest"
    rank: ClassVar[int] = 2
    layout: ClassVar[str] = "(batch, height, width, channels)"

    @field_validator("size")
    @classmethod
    def _two_sizes(cls, value):
        if isinstance(value, list) and len(value) != 2:
            raise ValueError(f"size must be an integer or a list of 2 integers; received {value}")
        return value

    @field_validator("interpolation")
    @classmethod
    def _nearest_only(cls, value: str):
        if value.lower() != "nearest":
            raise ValueError(
                f"interpolation {value!r} is not supported by kerspec; only 'nearest' is"
            )
        return value.lower()


@LAYERS.register("RepeatVector")
class RepeatVector(SimpleLayer):
    """Repeats the input `n` times: `y[:, i, :] = x` for i < n.

    Input shape (batch, features); output (batch, n, features).
    """

    type: Literal["RepeatVector"] = "RepeatVector"
    n: PositiveInt

    def output_shape(self, shape):
        if len(shape) != 1:
            raise ShapeError(
                f"RepeatVector expects inputs of rank 2, (batch, features); received {format_shape(shape)}"
            )
        return (self.n, shape[0])

    def call(self, w, x, ctx):
        y = np.broadcast_to(x[:, None, :], (x.shape[0], self.n, x.shape[1]))
        need_dx = ctx.need_dx

        def backprop(dy):
            return (dy.sum(axis=1) if need_dx else None), {}

        return y, backprop
