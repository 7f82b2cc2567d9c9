"""Embedding: integer indices to rows of a trained table."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt

from kerspec.constraints import CONSTRAINTS
from kerspec.errors import DataError
from kerspec.initializers import INITIALIZERS
from kerspec.layers.base import LAYERS, SimpleLayer, WeightSpec
from kerspec.regularizers import REGULARIZERS


@LAYERS.register("Embedding")
class Embedding(SimpleLayer):
    """`y[..., :] = embeddings[x[...], :]` for indices x in [0, input_dim).

    With `mask_zero`, index 0 is padding: the output mask is `x != 0`, shape (batch, ...).
    Indices may arrive as floats (data files usually hold floats); they are truncated to integers
    as Keras casts them. The gradient reaches the table only (`np.add.at`, so a repeated index
    sums its rows' gradients); indices have none.

    Input shape (batch, ...); output shape (batch, ..., output_dim). Weight `embeddings`
    (input_dim, output_dim).
    """

    type: Literal["Embedding"] = "Embedding"
    input_dim: PositiveInt
    output_dim: PositiveInt
    embeddings_initializer: INITIALIZERS.ref() = "uniform"
    embeddings_regularizer: REGULARIZERS.ref() | None = None
    activity_regularizer: REGULARIZERS.ref() | None = None
    embeddings_constraint: CONSTRAINTS.ref() | None = None
    mask_zero: bool = Field(
        False,
        description="Index 0 marks padding: the layer's outputs are unchanged, and a mask "
        "(x != 0) goes to the layers downstream, as in Keras.",
    )

    def output_shape(self, shape):
        return (*shape, self.output_dim)

    def output_masked(self, masked, n_outputs):
        return [self.mask_zero]

    def compute_mask(self, xs, masks, ys):
        return [xs[0] != 0]

    def weight_specs(self, shape):
        return [
            WeightSpec(
                "embeddings",
                (self.input_dim, self.output_dim),
                self.embeddings_initializer,
                self.embeddings_regularizer,
                self.embeddings_constraint,
            )
        ]

    def call(self, w, x, ctx):
        table = w["embeddings"]
        indices = x.astype(np.intp, copy=False)
        if indices.size and (indices.min() < 0 or indices.max() >= self.input_dim):
            bad = indices[(indices < 0) | (indices >= self.input_dim)].flat[0]
            label = f"Embedding {self.name!r}" if self.name else "Embedding"
            raise DataError(
                f"{label}: index {bad} is outside [0, {self.input_dim}) "
                f"(input_dim={self.input_dim})"
            )
        y = np.take(table, indices, axis=0)

        def backprop(dy):
            grad = np.zeros_like(table)
            np.add.at(grad, indices.reshape(-1), dy.reshape(-1, self.output_dim))
            return None, {"embeddings": grad}

        return y, backprop
