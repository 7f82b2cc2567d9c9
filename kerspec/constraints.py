"""Weight constraints, by Keras name: a projection applied to a weight after each update.

Norms are taken along `axis` (an int or a list of ints; for a Dense kernel (in, units), axis 0
gives one norm per unit). As in Keras, rescaling divides by `1e-7 + norm`, so a zero column stays
zero and a column already inside the bounds shrinks by a factor of about 1 - 1e-7 / norm.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from kerspec.registry import Item, Registry

CONSTRAINTS = Registry("constraint")

# Keras's backend.epsilon().
EPSILON = 1e-7

Axis = int | list[int]


class Constraint(Item):
    def __call__(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _norms(w: np.ndarray, axis: Axis) -> np.ndarray:
    axis = tuple(axis) if isinstance(axis, list) else axis
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


@CONSTRAINTS.register("max_norm")
class MaxNorm(Constraint):
    """w * clip(norm, 0, max_value) / (epsilon + norm)"""

    type: Literal["max_norm"] = "max_norm"
    # A norm cannot be negative: a negative bound would flip the sign of every weight.
    max_value: float = Field(2.0, ge=0.0)
    axis: Axis = 0

    def __call__(self, w):
        norms = _norms(w, self.axis)
        return w * (np.minimum(norms, self.max_value) / (EPSILON + norms))


@CONSTRAINTS.register("min_max_norm")
class MinMaxNorm(Constraint):
    """w * desired / (epsilon + norm), desired = rate * clip(norm, min, max) + (1 - rate) * norm.

    rate = 1 enforces the bounds at once; a smaller rate moves the norm part of the way.
    """

    type: Literal["min_max_norm"] = "min_max_norm"
    min_value: float = Field(0.0, ge=0.0)
    max_value: float = Field(1.0, ge=0.0)
    rate: float = 1.0
    axis: Axis = 0

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_value > self.max_value:
            raise ValueError(
                "expected min_value <= max_value. "
                f"Received: min_value={self.min_value}, max_value={self.max_value}"
            )
        return self

    def __call__(self, w):
        norms = _norms(w, self.axis)
        clipped = np.clip(norms, self.min_value, self.max_value)
        desired = self.rate * clipped + (1.0 - self.rate) * norms
        return w * (desired / (EPSILON + norms))


@CONSTRAINTS.register("non_neg")
class NonNeg(Constraint):
    """max(w, 0)"""

    type: Literal["non_neg"] = "non_neg"

    def __call__(self, w):
        return np.maximum(w, 0.0)


@CONSTRAINTS.register("unit_norm")
class UnitNorm(Constraint):
    """w / (epsilon + norm)"""

    type: Literal["unit_norm"] = "unit_norm"
    axis: Axis = 0

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))
