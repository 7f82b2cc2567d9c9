"""Merge layers: several inputs of compatible shapes, one output."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from kerspec.layers.base import LAYERS, Layer, ShapeError, format_shape


@LAYERS.register("Concatenate")
class Concatenate(Layer):
    """Joins its inputs along `axis` (counted with the batch axis, as in Keras; -1 is last).

    Every other dimension must agree.
    """

    type: Literal["Concatenate"] = "Concatenate"
    axis: int = -1
    arity: ClassVar[None] = None

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
