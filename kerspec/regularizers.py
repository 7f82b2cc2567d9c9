"""Weight and activity regularizers, by Keras name: a penalty added to the loss, and its gradient.

Penalties follow Keras exactly: `l2 * sum(w^2)` has no factor 1/2, so its gradient is `2 l2 w`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from kerspec.registry import Item, Registry

REGULARIZERS = Registry("regularizer")

# Keras's backend.epsilon(), the floor of the norm in its l2 normalisation.
EPSILON = 1e-7


class Regularizer(Item):
    def penalty(self, w: np.ndarray) -> float:
        raise NotImplementedError

    def gradient(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _factor(default: float):
    # Keras rejects negative, infinite and NaN factors.
    return Field(default, ge=0.0, allow_inf_nan=False)


class NormPenalty(Regularizer):
    """Base of l1, l2 and l1_l2, whose factors Keras reads as their defaults when None."""

    @field_validator("l1", "l2", mode="before", check_fields=False)
    @classmethod
    def _none_is_default(cls, value, info):
        return cls.model_fields[info.field_name].default if value is None else value


@REGULARIZERS.register("l1")
class L1(NormPenalty):
    """penalty = l1 * sum(|w|); gradient = l1 * sign(w)"""

    type: Literal["l1"] = "l1"
    l1: float = _factor(0.01)

    def penalty(self, w):
        return float(self.l1 * np.sum(np.abs(w)))

    def gradient(self, w):
        return self.l1 * np.sign(w)


@REGULARIZERS.register("l2")
class L2(NormPenalty):
    """penalty = l2 * sum(w^2); gradient = 2 l2 w"""

    type: Literal["l2"] = "l2"
    l2: float = _factor(0.01)

    def penalty(self, w):
        return float(self.l2 * np.sum(np.square(w)))

    def gradient(self, w):
        return (2.0 * self.l2) * w


@REGULARIZERS.register("l1_l2")
class L1L2(NormPenalty):
    """penalty = l1 * sum(|w|) + l2 * sum(w^2).

    Both factors default to 0 here (Keras keeps these defaults for backward compatibility, even
    though its docstring says 0.01 for the string `"l1_l2"`: the string gives zeros too).
    """

    type: Literal["l1_l2"] = "l1_l2"
    l1: float = _factor(0.0)
    l2: float = _factor(0.0)

    def penalty(self, w):
        return float(self.l1 * np.sum(np.abs(w)) + self.l2 * np.sum(np.square(w)))

    def gradient(self, w):
        return self.l1 * np.sign(w) + (2.0 * self.l2) * w


@REGULARIZERS.register("orthogonal_regularizer")
class OrthogonalRegularizer(Regularizer):
    """penalty = factor / 2 * mean over pairs i < j of |n_i . n_j|, for a 2-D weight.

    n_i are the rows (mode="rows") or columns (mode="columns") of w scaled to unit l2 norm
    (Keras's normalize: the norm is floored at 1e-7). A weight with a single row or column has
    no pair and no penalty (Keras divides by zero pairs there).
    """

    type: Literal["orthogonal_regularizer"] = "orthogonal_regularizer"
    factor: float = _factor(0.01)
    mode: Literal["rows", "columns"] = "rows"

    def _vectors(self, w: np.ndarray) -> np.ndarray:
        if w.ndim != 2:
            raise ValueError(
                f"The orthogonal regularizer needs a 2-D weight. Received: shape={w.shape}"
            )
        return w if self.mode == "rows" else w.T

    @staticmethod
    def _normalize(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        norms = np.sqrt(np.sum(np.square(m), axis=1, keepdims=True))
        floored = norms <= EPSILON
        inv = 1.0 / np.maximum(norms, EPSILON)
        return m * inv, inv, floored

    def _scale(self, size: int) -> float:
        return self.factor * 0.5 / (size * (size - 1) / 2.0)

    def penalty(self, w):
        m = self._vectors(w)
        if len(m) < 2:
            return 0.0
        n, _, _ = self._normalize(m)
        off_diagonal = np.abs(n @ n.T)
        np.fill_diagonal(off_diagonal, 0.0)
        return float(self._scale(len(m)) * np.sum(off_diagonal))

    def gradient(self, w):
        m = self._vectors(w)
        if len(m) < 2:
            return np.zeros_like(w)
        n, inv, floored = self._normalize(m)
        dp = np.sign(n @ n.T)
        np.fill_diagonal(dp, 0.0)
        dn = (2.0 * self._scale(len(m))) * (dp @ n)  # dp is symmetric: d(n n^T) gives 2 dp n
        # Through n = m / |m|: remove the radial part, except where the norm sits at its floor.
        radial = np.where(floored, 0.0, np.sum(dn * n, axis=1, keepdims=True))
        dm = inv * (dn - n * radial)
        return dm if self.mode == "rows" else dm.T
