"""Merge layers: several inputs of compatible shapes, one output.

Concatenate joins; Add, Subtract, Multiply, Average, Maximum and Minimum combine element-wise
with Keras's broadcasting; Dot takes batched dot products of two inputs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import model_validator

from kerspec.layers.base import LAYERS, Arrays, Context, Layer, Shape, ShapeError, format_shape


@LAYERS.register("Concatenate")
class Concatenate(Layer):
    """Joins its inputs along `axis` (counted with the batch axis, as in Keras; -1 is last).

    Every other dimension must agree. Masks as Keras 3 joins them: an input without a mask counts
    as all true, each mask is stretched over its input's feature axes, the stretched masks are
    concatenated along `axis`, and the output mask is their `any` over the last axis. Joining
    features (axis -1) thus gives the masks or-ed, true everywhere if any input has none; joining
    time steps (axis 1) gives the masks one after the other.
    """

    type: Literal["Concatenate"] = "Concatenate"
    axis: int = -1
    arity: ClassVar[None] = None
    supports_masking: ClassVar[bool] = True

    def compute_mask(self, xs, masks, ys):
        if all(m is None for m in masks):
            return [None]
        axis = self._axis(xs[0].ndim - 1) + 1
        full = [
            np.ones(x.shape, bool)
            if m is None
            else np.broadcast_to(m.reshape(m.shape + (1,) * (x.ndim - m.ndim)), x.shape)
            for x, m in zip(xs, masks)
        ]
        return [np.concatenate(full, axis=axis).any(axis=-1)]

    def _axis(self, ndim: int) -> int:
        """The axis among the non-batch dimensions."""
        axis = self.axis if self.axis < 0 else self.axis - 1
        if not -ndim <= axis < ndim or self.axis == 0:
            raise ShapeError(f"axis {self.axis} is out of range for inputs of rank {ndim + 1}")
        return axis % ndim

    def output_shapes(self, shapes):
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            listed = ", ".join(format_shape(s) for s in shapes)
            raise ShapeError(f"inputs must have the same rank; received {listed}")
        axis = self._axis(len(shapes[0]))
        for i in range(len(shapes[0])):
            if i == axis:
                continue
            dims = {s[i] for s in shapes} - {None}
            if len(dims) > 1:
                listed = ", ".join(format_shape(s) for s in shapes)
                raise ShapeError(
                    f"inputs must match on every axis but {self.axis}; received {listed}"
                )
        joined = [s[axis] for s in shapes]
        size = None if None in joined else sum(joined)
        first = shapes[0]
        merged = tuple(
            size if i == axis else next((s[i] for s in shapes if s[i] is not None), None)
            for i in range(len(first))
        )
        return [merged]

    def forward(self, w, xs, ctx):
        axis = self._axis(xs[0].ndim - 1) + 1
        y = np.concatenate(xs, axis=axis)
        bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]

        def backprop(dys):
            return np.split(dys[0], bounds, axis=axis), {}

        return [y], backprop


def _broadcast_shapes(shapes: list[Shape]) -> Shape:
    """Keras's merge shape rule: shapes (batch excluded) are aligned on their last axes, and a
    dimension of 1 stretches to the other; an unknown (None) dimension makes the result unknown.
    """
    merged: Shape = shapes[0]
    for shape in shapes[1:]:
        longer, shorter = (merged, shape) if len(merged) >= len(shape) else (shape, merged)
        dims = list(longer[: len(longer) - len(shorter)])
        for i, j in zip(longer[len(longer) - len(shorter) :], shorter):
            if i is None or j is None:
                dims.append(None)
            elif i == 1 or j == 1 or i == j:
                dims.append(j if i == 1 else i)
            else:
                listed = ", ".join(format_shape(s) for s in shapes)
                raise ShapeError(f"inputs have incompatible shapes; received {listed}")
        merged = tuple(dims)
    return merged


def _aligned(xs: Arrays) -> Arrays:
    """Views of the inputs at one rank: Keras inserts the missing axes right after the batch
    axis, so that the non-batch axes broadcast aligned on the right."""
    rank = max(x.ndim for x in xs)
    return [x.reshape(x.shape[:1] + (1,) * (rank - x.ndim) + x.shape[1:]) for x in xs]


def _fold(op: np.ufunc, aligned: Arrays, ctx: Context) -> np.ndarray:
    """`op(...op(op(a_0, a_1), a_2)..., a_{n-1})` into the buffer `ctx` keeps for the step, of
    the broadcast shape (no input lies in it, graph/lifetimes.py): a fresh array of a large
    batch would cost its page faults on every call."""
    shape = np.broadcast_shapes(*(a.shape for a in aligned))
    y = op(aligned[0], aligned[1], out=ctx.buffer("y", shape, np.result_type(*aligned)))
    for a in aligned[2:]:
        op(y, a, out=y)
    return y


def _unbroadcast(g: np.ndarray, aligned: np.ndarray, original: np.ndarray) -> np.ndarray:
    """The gradient of a broadcast input: `g` summed over the axes the input was stretched on."""
    axes = tuple(i for i, (a, d) in enumerate(zip(aligned.shape, g.shape)) if a == 1 and d != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(original.shape)


class _Elementwise(Layer):
    """Base of the element-wise merges: two or more inputs broadcast with Keras's rule.

    Input shapes: (batch, ...) each, broadcastable; output shape: the broadcast shape.
    """

    arity: ClassVar[int | None] = None

    def output_shapes(self, shapes):
        return [_broadcast_shapes(shapes)]


class _MaskedSum(_Elementwise):
    """A merge whose values ignore masks (Add, Subtract, Average, as in Keras); the output mask
    is the inputs' masks or-ed, and there is none unless every input has one."""

    supports_masking: ClassVar[bool] = True

    def output_masked(self, masked, n_outputs):
        return [all(masked)]

    def compute_mask(self, xs, masks, ys):
        mask = masks[0]
        for other in masks[1:]:
            mask = mask | other
        return [mask]


@LAYERS.register("Add")
class Add(_MaskedSum):
    """`y = x_0 + x_1 + ... + x_{n-1}`; `dx_k = dy` (summed over broadcast axes)."""

    type: Literal["Add"] = "Add"

    def forward(self, w, xs, ctx):
        aligned = _aligned(xs)
        y = _fold(np.add, aligned, ctx)

        def backprop(dys):
            return [_unbroadcast(dys[0], a, x) for a, x in zip(aligned, xs)], {}

        return [y], backprop


@LAYERS.register("Subtract")
class Subtract(_MaskedSum):
    """`y = x_0 - x_1`, for exactly two inputs; `dx_0 = dy`, `dx_1 = -dy`."""

    type: Literal["Subtract"] = "Subtract"
    arity: ClassVar[int] = 2

    def forward(self, w, xs, ctx):
        aligned = _aligned(xs)
        y = _fold(np.subtract, aligned, ctx)

        def backprop(dys):
            dy = dys[0]
            return [_unbroadcast(dy, aligned[0], xs[0]), -_unbroadcast(dy, aligned[1], xs[1])], {}

        return [y], backprop


@LAYERS.register("Multiply")
class Multiply(_Elementwise):
    """`y = x_0 * x_1 * ... * x_{n-1}`; `dx_k = dy * prod_{j != k} x_j`.

    The products of the others are multiplied out rather than divided from `y`, so zeros in the
    inputs are fine. A masked input is refused when the graph compiles: under a mask Keras
    replaces masked entries (by 1 here), which kerspec does not do.
    """

    type: Literal["Multiply"] = "Multiply"

    def forward(self, w, xs, ctx):
        aligned = _aligned(xs)
        y = _fold(np.multiply, aligned, ctx)

        def backprop(dys):
            dxs = []
            for k, (a, x) in enumerate(zip(aligned, xs)):
                g = dys[0]
                for j, other in enumerate(aligned):
                    if j != k:
                        g = g * other
                dxs.append(_unbroadcast(g, a, x))
            return dxs, {}

        return [y], backprop


@LAYERS.register("Average")
class Average(_MaskedSum):
    """`y = (x_0 + ... + x_{n-1}) / n`; `dx_k = dy / n`."""

    type: Literal["Average"] = "Average"

    def forward(self, w, xs, ctx):
        aligned = _aligned(xs)
        y = _fold(np.add, aligned, ctx)
        n = len(xs)
        y /= y.dtype.type(n)

        def backprop(dys):
            dy = dys[0] / dys[0].dtype.type(n)
            return [_unbroadcast(dy, a, x) for a, x in zip(aligned, xs)], {}

        return [y], backprop


class _Extremum(_Elementwise):
    """Element-wise maximum or minimum. Each element's gradient goes to the first input that
    attains it, as TensorFlow's gradient does (torch would split a tie evenly). A masked input is
    refused when the graph compiles: under a mask Keras skips masked entries, which kerspec does
    not do."""

    op: ClassVar[np.ufunc]

    def forward(self, w, xs, ctx):
        aligned = _aligned(xs)
        y = _fold(self.op, aligned, ctx)

        def backprop(dys):
            dy = dys[0]
            taken = np.zeros(y.shape, dtype=bool)
            zero = dy.dtype.type(0)
            dxs = []
            for a, x in zip(aligned, xs):
                first = (a == y) & ~taken
                taken |= first
                dxs.append(_unbroadcast(np.where(first, dy, zero), a, x))
            return dxs, {}

        return [y], backprop


@LAYERS.register("Maximum")
class Maximum(_Extremum):
    """`y = max(x_0, ..., x_{n-1})` element-wise."""

    type: Literal["Maximum"] = "Maximum"
    op: ClassVar[np.ufunc] = np.maximum


@LAYERS.register("Minimum")
class Minimum(_Extremum):
    """`y = min(x_0, ..., x_{n-1})` element-wise."""

    type: Literal["Minimum"] = "Minimum"
    op: ClassVar[np.ufunc] = np.minimum


def _l2_normalize(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`u = x / max(||x||, 1e-7)` along `axis` (Keras's `normalize`: `x * min(rsqrt(sum x^2),
    1e7)`). Returns u, the inverse norm and where the floor applies (the norm is then constant)."""
    with np.errstate(divide="ignore"):  # an all-zero vector: inf, then floored below
        inv = 1.0 / np.sqrt(np.sum(np.square(x), axis=axis, keepdims=True))
    floored = inv > 1e7
    np.minimum(inv, x.dtype.type(1e7), out=inv)
    return x * inv, inv, floored


def _l2_normalize_backward(
    du: np.ndarray, u: np.ndarray, inv: np.ndarray, floored: np.ndarray, axis: int
):
    """`dx = (du - u * sum(du * u)) / ||x||`, or `du / 1e-7` where the norm was floored."""
    along = np.sum(du * u, axis=axis, keepdims=True)
    along[floored] = 0
    return (du - u * along) * inv


@LAYERS.register("Dot")
class Dot(Layer):
    """Batched dot products of two inputs along `axes`, counted with the batch axis as in Keras.

    For `x` of shape (batch, *a, k, *b) contracted on its axis of size k and `y` of shape
    (batch, *c, k, *d) on its axis of size k: `out[n, a, b, c, d] = sum_k x[n, ..., k, ...] *
    y[n, ..., k, ...]`, shape (batch, *a, *b, *c, *d), or (batch, 1) when nothing else is left.
    `axes` is one axis for both inputs or a pair; a negative axis counts from each input's end.
    With `normalize`, each input is first L2-normalised along its axis (the cosine proximity).
    """

    type: Literal["Dot"] = "Dot"
    # Keras accepts masked inputs and drops the mask: the output has none.
    supports_masking: ClassVar[bool] = True
    axes: int | tuple[int, int]
    normalize: bool = False
    arity: ClassVar[int] = 2

    @model_validator(mode="after")
    def _not_batch(self):
        axes = (self.axes,) if isinstance(self.axes, int) else self.axes
        if 0 in axes:
            raise ValueError(f"Dot cannot contract the batch axis 0. Received: axes={self.axes}")
        return self

    def _axes(self, ranks: tuple[int, int]) -> tuple[int, int]:
        """The contracted axis of each input, in [1, rank] (rank counted with the batch axis)."""
        pair = (self.axes, self.axes) if isinstance(self.axes, int) else self.axes
        resolved = []
        for axis, rank in zip(pair, ranks):
            full = axis if axis >= 0 else axis + rank + 1
            if not 1 <= full <= rank:
                raise ShapeError(
                    f"axes {self.axes} are out of range for an input of rank {rank + 1}"
                )
            resolved.append(full)
        return resolved[0], resolved[1]

    def output_shapes(self, shapes):
        first, second = shapes
        if not first or not second:
            listed = ", ".join(format_shape(s) for s in shapes)
            raise ShapeError(f"Dot needs inputs of rank 2 or more; received {listed}")
        a0, a1 = self._axes((len(first), len(second)))
        k0, k1 = first[a0 - 1], second[a1 - 1]
        if k0 is not None and k1 is not None and k0 != k1:
            raise ShapeError(
                f"Dot axes {self.axes} pair sizes {k0} and {k1}: incompatible input shapes "
                f"{format_shape(first)} and {format_shape(second)}"
            )
        rest = [d for i, d in enumerate(first) if i != a0 - 1]
        rest += [d for i, d in enumerate(second) if i != a1 - 1]
        return [tuple(rest) if rest else (1,)]

    def output_masked(self, masked, n_outputs):
        return [False]

    def forward(self, w, xs, ctx):
        x, y = xs
        a0, a1 = self._axes((x.ndim - 1, y.ndim - 1))
        if self.normalize:
            x, x_inv, x_floored = _l2_normalize(x, a0)
            y, y_inv, y_floored = _l2_normalize(y, a1)
        # (batch, m, k) @ (batch, k, n), the contracted axes moved next to each other.
        x_moved = np.moveaxis(x, a0, -1)
        y_moved = np.moveaxis(y, a1, 1)
        batch, k = x.shape[0], x.shape[a0]
        x3 = x_moved.reshape(batch, -1, k)
        y3 = y_moved.reshape(batch, k, -1)
        out = np.matmul(x3, y3)
        out_shape = (batch, *x_moved.shape[1:-1], *y_moved.shape[2:])
        out = out.reshape(out_shape if len(out_shape) > 1 else (batch, 1))
        need_dx = ctx.need_dx

        def backprop(dys):
            if not need_dx:
                return [None, None], {}
            g3 = dys[0].reshape(batch, x3.shape[1], y3.shape[2])
            dx = np.moveaxis(np.matmul(g3, y3.transpose(0, 2, 1)).reshape(x_moved.shape), -1, a0)
            dy = np.moveaxis(np.matmul(x3.transpose(0, 2, 1), g3).reshape(y_moved.shape), 1, a1)
            if self.normalize:
                dx = _l2_normalize_backward(dx, x, x_inv, x_floored, a0)
                dy = _l2_normalize_backward(dy, y, y_inv, y_floored, a1)
            return [dx, dy], {}

        return [out], backprop
