"""Windows over the spatial axes, as convolutions and pooling see them: argument types, sizes
and padding as Keras computes them, and strided views of a padded input (no copies).

Arrays are handled channels_last; a channels_first array is moved there as a view (`to_last`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BeforeValidator, PositiveInt

from kerspec.layers.base import ShapeError, format_shape

Pads = list[tuple[int, int]]


def _lower(value):
    # Keras reads padding names case-insensitively ("SAME" works there too).
    return value.lower() if isinstance(value, str) else value


Padding = Annotated[Literal["valid", "same"], BeforeValidator(_lower)]
CausalPadding = Annotated[Literal["valid", "same", "causal"], BeforeValidator(_lower)]
Sizes = PositiveInt | list[PositiveInt]


def as_tuple(value: int | list[int], rank: int) -> tuple[int, ...]:
    return (value,) * rank if isinstance(value, int) else tuple(value)


def check_lengths(layer, rank: int, *fields: str) -> None:
    """Keras accepts an int or one entry per spatial dimension for each size argument."""
    for field in fields:
        value = getattr(layer, field)
        if isinstance(value, list) and len(value) != rank:
            raise ValueError(
                f"{field} must be an integer or a list of {rank} integers; received {value}"
            )


def split_channels(layer, shape, rank: int, layout: str):
    """(spatial dims, channels) of a shape without batch; ShapeError on the wrong rank."""
    if len(shape) != rank + 1:
        raise ShapeError(
            f"{layer.type} expects inputs of rank {rank + 2}, {layout}; "
            f"received {format_shape(shape)}"
        )
    if layer.data_format == "channels_first":
        return tuple(shape[1:]), shape[0]
    return tuple(shape[:-1]), shape[-1]


def join_channels(layer, spatial, channels):
    if layer.data_format == "channels_first":
        return (channels, *spatial)
    return (*spatial, channels)


def to_last(layer, x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1) if layer.data_format == "channels_first" else x


def from_last(layer, y: np.ndarray) -> np.ndarray:
    return np.moveaxis(y, -1, 1) if layer.data_format == "channels_first" else y


def pad_amounts(padding: str, spatial, kernel, strides, dilation) -> Pads:
    """(before, after) per spatial dimension. `same` splits as TensorFlow does: the odd extra
    value goes after; `causal` pads only before, so no output sees a later step."""
    pads = []
    for n, k, s, d in zip(spatial, kernel, strides, dilation):
        extent = (k - 1) * d + 1
        if padding == "valid":
            pads.append((0, 0))
        elif padding == "causal":
            pads.append((extent - 1, 0))
        else:
            total = max((-(-n // s) - 1) * s + extent - n, 0)
            pads.append((total // 2, total - total // 2))
    return pads


def out_sizes(layer, spatial, pads: Pads, kernel, strides, dilation) -> tuple[int | None, ...]:
    """Output length per dimension, floor((n + pads - dilated kernel) / stride) + 1 as Keras;
    None stays None. A window larger than the padded input is a ShapeError."""
    sizes = []
    for n, (lo, hi), k, s, d in zip(spatial, pads, kernel, strides, dilation):
        if n is None:
            sizes.append(None)
            continue
        extent = (k - 1) * d + 1
        if n + lo + hi < extent:
            raise ShapeError(
                f"the window ({extent}, from size {k} and dilation {d}) is larger "
                f"than the padded input length {n + lo + hi} (input {n}, padding {layer.padding})"
            )
        sizes.append((n + lo + hi - extent) // s + 1)
    return tuple(sizes)


def padded(x: np.ndarray, pads: Pads, fill: float, ctx, name: str, shared: bool = False) -> np.ndarray:
    """x (batch, *spatial, ...) with its spatial axes padded by `fill`; x itself without padding.
    `shared`: in the context's buffer that every layer shares (see Context.buffer)."""
    if not any(lo or hi for lo, hi in pads):
        return x
    shape = (
        x.shape[0],
        *(n + lo + hi for n, (lo, hi) in zip(x.shape[1:], pads)),
        *x.shape[1 + len(pads) :],
    )
    xp = ctx.buffer(name, shape, x.dtype, shared=shared)
    xp.fill(fill)
    xp[interior(pads, x.shape[1:])] = x
    return xp


def interior(pads: Pads, spatial) -> tuple:
    return (slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial)), Ellipsis)


def windows(xp: np.ndarray, kernel, strides, dilation) -> np.ndarray:
    """A view (batch, *out, ..., *kernel) of every window of xp (batch, *spatial, ...)."""
    rank = len(kernel)
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    view = sliding_window_view(xp, extents, axis=tuple(range(1, rank + 1)))
    steps = (slice(None), *(slice(None, None, s) for s in strides))
    middle = (slice(None),) * (xp.ndim - rank - 1)
    return view[(*steps, *middle, *(slice(None, None, d) for d in dilation))]


def offset_region(offset, strides, dilation, out) -> tuple:
    """The slice of the padded input that kernel offset `offset` reads at every output position."""
    return (
        slice(None),
        *(
            slice(k * d, k * d + s * (o - 1) + 1, s)
            for k, s, d, o in zip(offset, strides, dilation, out)
        ),
        Ellipsis,
    )


def to_blocks(a: np.ndarray, axis: int, pool) -> np.ndarray:
    """A view of a, whose spatial axes start at `axis`, split into non-overlapping windows of
    `pool` (an odd edge left out) with the window offsets first: (..., *n) -> (..., *pool,
    *(n // pool), ...). Position (i * p + k) of an axis is [k, i] of the view."""
    rank = len(pool)
    sizes, strides = a.shape[axis : axis + rank], a.strides[axis : axis + rank]
    return np.lib.stride_tricks.as_strided(
        a,
        (*a.shape[:axis], *pool, *(n // p for n, p in zip(sizes, pool)), *a.shape[axis + rank :]),
        (*a.strides[:axis], *strides, *(s * p for s, p in zip(strides, pool)),
         *a.strides[axis + rank :]),
    )
