"""Losses, by Keras name and short name: `loss(y_true, y_pred, sample_weight) -> (value, dy_pred)`.

The value is reduced as Keras reduces it (`sum_over_batch_size` by default) and the gradient is
with respect to `y_pred`, in y_pred's shape and dtype, so the training loop never differentiates
a loss itself.

Each loss computes per-sample values (usually a mean or sum over the last axis) and a backprop
from their cotangent to `d y_pred`; `Loss.__call__` aligns ranks, weights, reduces, and
differentiates the reduction, as Keras's `LossFunctionWrapper` and `reduce_weighted_values` do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from kerspec.registry import Item, Registry

LOSSES = Registry("loss")

# Keras's backend.epsilon(): the clip bound of the probability-input losses.
EPSILON = 1e-7

Backprop = Callable[[np.ndarray], np.ndarray]
Reduction = Literal["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight"]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]


def same_rank(x1: np.ndarray, x2: np.ndarray, expand_rank_1: bool = True):
    """Keras's `squeeze_or_expand_to_same_rank`: fix a rank difference of one trailing 1."""
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        if x2.ndim == 1 and expand_rank_1:
            return x1, x2[:, None]
        return x1[..., 0], x2
    if x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        if x1.ndim == 1 and expand_rank_1:
            return x1[:, None], x2
        return x1, x2[..., 0]
    return x1, x2


def _divide_no_nan(a, b):
    out = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)), np.result_type(a, b))
    return np.divide(a, b, out=out, where=b != 0)


def _pad_right(weight: np.ndarray, ndim: int) -> np.ndarray:
    """Weights of shape (batch,) or (batch, time) broadcast over the trailing axes of values."""
    return weight.reshape(weight.shape + (1,) * (ndim - weight.ndim))


def _mean_last(values: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, Backprop]:
    """mean(values, -1), with `grad` = d values / d y_pred elementwise."""
    scale = values.dtype.type(1.0 / values.shape[-1])
    return values.mean(axis=-1), lambda g: g[..., None] * grad * scale


class Loss(Item):
    """Base of every loss.

    `reduction` is one of Keras's reductions, with `L = sum(w * l)` over per-sample losses `l`:
    `sum_over_batch_size` and `mean` give `L / size(l)`, `sum` gives `L`, and
    `mean_with_sample_weight` gives `L / sum(w)`; a zero divisor gives 0, like `divide_no_nan`.
    Keras's `"none"` is refused: a training loss must be one number.
    """

    reduction: Reduction = "sum_over_batch_size"
    # What its targets hold, as the data loaders check them (kerspec.training.targets): class
    # indices (`sparse`), one-hot rows (`categorical`), 0/1 values (`binary`) or real values.
    targets: ClassVar[str] = "real"

    @field_validator("reduction", mode="before")
    @classmethod
    def _scalar_reduction(cls, value):
        if value is None or value == "none":
            raise ValueError(
                "reduction 'none' leaves one loss per sample, and training needs one number; "
                "expected one of sum_over_batch_size, sum, mean, mean_with_sample_weight. "
                f"Received: reduction={value!r}"
            )
        return value

    def per_sample(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, Backprop]:
        """Unreduced losses and their backprop `d losses -> d y_pred`, on rank-aligned inputs."""
        raise NotImplementedError

    def values(self, y_true, y_pred) -> np.ndarray:
        """Per-sample losses, as Keras's loss functions return them (used by metrics)."""
        y_true, y_pred = self._aligned(y_true, np.asarray(y_pred))
        return self.per_sample(y_true, y_pred)[0]

    def _aligned(self, y_true, y_pred: np.ndarray):
        y_true = np.asarray(y_true)
        if y_true.dtype != y_pred.dtype:
            y_true = y_true.astype(y_pred.dtype)
        return same_rank(y_true, y_pred)

    def __call__(
        self, y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        y_pred = np.asarray(y_pred)
        aligned_true, aligned_pred = self._aligned(y_true, y_pred)
        values, backprop = self.per_sample(aligned_true, aligned_pred)
        shape, dtype = values.shape, values.dtype.type
        if sample_weight is None:
            weight = np.ones((), values.dtype)
        else:
            values, weight = same_rank(values, np.asarray(sample_weight, values.dtype))
            weight = _pad_right(weight, values.ndim)
        total = (values * weight).sum(dtype=values.dtype)
        if self.reduction == "sum":
            divisor = dtype(1)
        elif self.reduction == "mean_with_sample_weight" and sample_weight is not None:
            divisor = np.broadcast_to(weight, values.shape).sum(dtype=values.dtype)
        else:
            divisor = dtype(values.size)
        value = _divide_no_nan(total, divisor)
        dvalues = np.broadcast_to(_divide_no_nan(weight, divisor), values.shape)
        dy = backprop(dvalues.reshape(shape))
        return float(value), dy.reshape(y_pred.shape).astype(y_pred.dtype, copy=False)


@LOSSES.register("mean_squared_error", "mse")
class MeanSquaredError(Loss):
    """`mean((y_pred - y_true)**2, axis=-1)`."""

    type: Literal["mean_squared_error"] = "mean_squared_error"

    def per_sample(self, y_true, y_pred):
        diff = y_pred - y_true
        return _mean_last(np.square(diff), 2 * diff)


@LOSSES.register("mean_absolute_error", "mae")
class MeanAbsoluteError(Loss):
    """`mean(|y_pred - y_true|, axis=-1)`."""

    type: Literal["mean_absolute_error"] = "mean_absolute_error"

    def per_sample(self, y_true, y_pred):
        diff = y_pred - y_true
        return _mean_last(np.abs(diff), np.sign(diff))


@LOSSES.register("mean_absolute_percentage_error", "mape")
class MeanAbsolutePercentageError(Loss):
    """`100 * mean(|y_true - y_pred| / max(|y_true|, 1e-7), axis=-1)`."""

    type: Literal["mean_absolute_percentage_error"] = "mean_absolute_percentage_error"

    def per_sample(self, y_true, y_pred):
        scale = 100 / np.maximum(np.abs(y_true), y_pred.dtype.type(EPSILON))
        diff = y_pred - y_true
        return _mean_last(np.abs(diff) * scale, np.sign(diff) * scale)


@LOSSES.register("mean_squared_logarithmic_error", "msle")
class MeanSquaredLogarithmicError(Loss):
    """`mean((log(max(y_pred, 1e-7) + 1) - log(max(y_true, 1e-7) + 1))**2, axis=-1)`."""

    type: Literal["mean_squared_logarithmic_error"] = "mean_squared_logarithmic_error"

    def per_sample(self, y_true, y_pred):
        eps = y_pred.dtype.type(EPSILON)
        shifted = np.maximum(y_pred, eps) + 1
        diff = np.log(shifted) - np.log(np.maximum(y_true, eps) + 1)
        # max(y_pred, eps) passes no gradient where the floor is active.
        return _mean_last(np.square(diff), 2 * diff / shifted * (y_pred > eps))


@LOSSES.register("cosine_similarity")
class CosineSimilarity(Loss):
    """`-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)`.

    `l2_normalize(x) = x * min(1 / ||x||, 1 / 1e-7)`, as Keras's `ops.normalize`.
    """

    type: Literal["cosine_similarity"] = "cosine_similarity"
    axis: int = -1

    def per_sample(self, y_true, y_pred):
        axis = self.axis
        unit_true, _, _ = _l2_normalize(y_true, axis)
        unit_pred, inv, free = _l2_normalize(y_pred, axis)

        def backprop(g):
            g = np.expand_dims(g, axis)
            # d/dx of x * inv(x) applied to -g * unit_true; inv is constant where clamped.
            dunit = -g * unit_true
            along = np.sum(dunit * y_pred, axis=axis, keepdims=True)
            return dunit * inv - free * y_pred * inv**3 * along

        return -np.sum(unit_true * unit_pred, axis=axis), backprop


def _l2_normalize(x, axis):
    square_sum = np.sum(np.square(x), axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = 1 / np.sqrt(square_sum)
    cap = x.dtype.type(1 / EPSILON)
    return x * np.minimum(inv, cap), np.minimum(inv, cap), inv < cap


@LOSSES.register("huber")
class Huber(Loss):
    """`mean(0.5 * e**2 if |e| <= delta else delta * |e| - 0.5 * delta**2, axis=-1)`,
    `e = y_pred - y_true`."""

    type: Literal["huber"] = "huber"
    delta: float = 1.0

    def per_sample(self, y_true, y_pred):
        delta = y_pred.dtype.type(self.delta)
        error = y_pred - y_true
        small = np.abs(error) <= delta
        half = y_pred.dtype.type(0.5)
        values = np.where(small, half * np.square(error), delta * np.abs(error) - half * delta**2)
        return _mean_last(values, np.where(small, error, delta * np.sign(error)))


@LOSSES.register("log_cosh", "logcosh")
class LogCosh(Loss):
    """`mean(log(cosh(e)), axis=-1)` computed as `e + softplus(-2e) - log(2)`; its derivative
    is `tanh(e)`."""

    type: Literal["log_cosh"] = "log_cosh"

    def per_sample(self, y_true, y_pred):
        error = y_pred - y_true
        log2 = y_pred.dtype.type(np.log(2.0))
        return _mean_last(error + np.logaddexp(0, -2 * error) - log2, np.tanh(error))


def _hinge_labels(y_true):
    """Keras maps labels that are all 0/1 to -1/1; other labels are used as given."""
    if np.all((y_true == 0) | (y_true == 1)):
        return 2 * y_true - 1
    return y_true


@LOSSES.register("hinge")
class Hinge(Loss):
    """`mean(max(1 - y_true * y_pred, 0), axis=-1)`, 0/1 labels mapped to -1/1."""

    type: Literal["hinge"] = "hinge"

    def per_sample(self, y_true, y_pred):
        y_true = _hinge_labels(y_true)
        margin = 1 - y_true * y_pred
        return _mean_last(np.maximum(margin, 0), -y_true * (margin > 0))


@LOSSES.register("squared_hinge")
class SquaredHinge(Loss):
    """`mean(max(1 - y_true * y_pred, 0)**2, axis=-1)`, 0/1 labels mapped to -1/1."""

    type: Literal["squared_hinge"] = "squared_hinge"

    def per_sample(self, y_true, y_pred):
        y_true = _hinge_labels(y_true)
        margin = np.maximum(1 - y_true * y_pred, 0)
        return _mean_last(np.square(margin), -2 * margin * y_true)


@LOSSES.register("categorical_hinge")
class CategoricalHinge(Loss):
    """`max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)` over the last axis."""

    type: Literal["categorical_hinge"] = "categorical_hinge"
    targets: ClassVar[str] = "categorical"

    def per_sample(self, y_true, y_pred):
        others = (1 - y_true) * y_pred
        top = np.argmax(others, axis=-1)[..., None]
        values = np.max(others, axis=-1) - np.sum(y_true * y_pred, axis=-1) + 1
        active = values > 0

        def backprop(g):
            g = (g * active)[..., None]
            dy = -g * y_true
            np.put_along_axis(
                dy, top, np.take_along_axis(dy + g * (1 - y_true), top, axis=-1), axis=-1
            )
            return dy

        return np.maximum(values, 0), backprop


@LOSSES.register("kl_divergence", "kld", "kullback_leibler_divergence")
class KLDivergence(Loss):
    """`sum(t * log(t / p), axis=-1)`, `t = clip(y_true, 1e-7, 1)`, `p = clip(y_pred, 1e-7, 1)`."""

    type: Literal["kl_divergence"] = "kl_divergence"
    targets: ClassVar[str] = "categorical"

    def per_sample(self, y_true, y_pred):
        one = y_pred.dtype.type(1)
        target = np.clip(y_true, EPSILON, one)
        pred = np.clip(y_pred, EPSILON, one)
        inside = (y_pred >= EPSILON) & (y_pred <= one)
        values = np.sum(target * np.log(target / pred), axis=-1)
        return values, lambda g: -g[..., None] * target / pred * inside


@LOSSES.register("poisson")
class Poisson(Loss):
    """`mean(y_pred - y_true * log(y_pred + 1e-7), axis=-1)`."""

    type: Literal["poisson"] = "poisson"

    def per_sample(self, y_true, y_pred):
        shifted = y_pred + y_pred.dtype.type(EPSILON)
        return _mean_last(y_pred - y_true * np.log(shifted), 1 - y_true / shifted)


def _log_softmax(x, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _crossentropy(target, y_pred, from_logits, axis):
    """`-sum(target * log(q), axis)` with `q = softmax(y_pred)` for logits, else
    `q = clip(y_pred / sum(y_pred), 1e-7, 1 - 1e-7)`, as Keras's backends compute it."""
    if from_logits:
        log_prob = _log_softmax(y_pred, axis)

        def backprop(g):
            g = np.expand_dims(g, axis)
            return g * (np.exp(log_prob) * np.sum(target, axis=axis, keepdims=True) - target)

        return -np.sum(target * log_prob, axis=axis), backprop
    total = np.sum(y_pred, axis=axis, keepdims=True)
    prob = y_pred / total
    clipped = np.clip(prob, EPSILON, 1 - y_pred.dtype.type(EPSILON))
    inside = (prob >= EPSILON) & (prob <= 1 - y_pred.dtype.type(EPSILON))

    def backprop(g):
        dprob = -np.expand_dims(g, axis) * target / clipped * inside
        # Through prob = y / sum(y): dy_j = (dprob_j - sum_i dprob_i * prob_i) / sum(y).
        return (dprob - np.sum(dprob * prob, axis=axis, keepdims=True)) / total

    return -np.sum(target * np.log(clipped), axis=axis), backprop


@LOSSES.register("binary_crossentropy", "bce")
class BinaryCrossentropy(Loss):
    """`mean(-(t * log(p) + (1 - t) * log(1 - p)), axis)` with `t = y_true * (1 - s) + s / 2`
    for label smoothing `s`; `p = clip(y_pred, 1e-7, 1 - 1e-7)`, or `sigmoid(y_pred)` computed
    stably from logits."""

    type: Literal["binary_crossentropy"] = "binary_crossentropy"
    targets: ClassVar[str] = "binary"
    from_logits: bool = False
    label_smoothing: UnitFloat = 0.0
    axis: int = -1

    def per_sample(self, y_true, y_pred):
        dtype = y_pred.dtype.type
        if self.label_smoothing:
            smoothing = dtype(self.label_smoothing)
            y_true = y_true * (1 - smoothing) + dtype(0.5) * smoothing
        if self.from_logits:
            values = np.maximum(y_pred, 0) - y_pred * y_true + np.logaddexp(0, -np.abs(y_pred))
            grad = 1 / (1 + np.exp(-y_pred)) - y_true
        else:
            high = 1 - dtype(EPSILON)
            prob = np.clip(y_pred, EPSILON, high)
            values = -(y_true * np.log(prob) + (1 - y_true) * np.log(1 - prob))
            grad = (prob - y_true) / (prob * (1 - prob)) * ((y_pred >= EPSILON) & (y_pred <= high))
        scale = dtype(1.0 / y_pred.shape[self.axis])
        return values.mean(axis=self.axis), lambda g: np.expand_dims(g, self.axis) * grad * scale


@LOSSES.register("categorical_crossentropy")
class CategoricalCrossentropy(Loss):
    """`-sum(t * log(q), axis)` with `t = y_true * (1 - s) + s / num_classes` for label
    smoothing `s`; `q` is `softmax(y_pred)` from logits, else `y_pred` renormalised and clipped
    to [1e-7, 1 - 1e-7]."""

    type: Literal["categorical_crossentropy"] = "categorical_crossentropy"
    targets: ClassVar[str] = "categorical"
    from_logits: bool = False
    label_smoothing: UnitFloat = 0.0
    axis: int = -1

    def per_sample(self, y_true, y_pred):
        if self.label_smoothing:
            smoothing = y_pred.dtype.type(self.label_smoothing)
            y_true = y_true * (1 - smoothing) + smoothing / y_pred.dtype.type(y_true.shape[-1])
        return _crossentropy(y_true, y_pred, self.from_logits, self.axis)


@LOSSES.register("sparse_categorical_crossentropy")
class SparseCategoricalCrossentropy(Loss):
    """Categorical crossentropy against integer class labels: `-log(q[y_true])`.

    Labels have y_pred's shape without the class axis, or with a class axis of size 1, and may
    be integers or floats holding integers.
    """

    type: Literal["sparse_categorical_crossentropy"] = "sparse_categorical_crossentropy"
    targets: ClassVar[str] = "sparse"
    from_logits: bool = False
    axis: int = -1

    def _aligned(self, y_true, y_pred):
        # Labels stay class indices: no float cast and no rank alignment against the classes.
        labels = np.asarray(y_true)
        if labels.ndim == y_pred.ndim and labels.shape[self.axis] == 1:
            labels = np.squeeze(labels, axis=self.axis)
        return labels.astype(np.intp), y_pred

    def per_sample(self, y_true, y_pred):
        axis = self.axis % y_pred.ndim
        classes = y_pred.shape[axis]
        if np.any((y_true < 0) | (y_true >= classes)):
            raise ValueError(
                f"sparse labels must be class indices in [0, {classes}). "
                f"Received labels from {y_true.min()} to {y_true.max()}"
            )
        one_hot = np.moveaxis(np.eye(classes, dtype=y_pred.dtype)[y_true], -1, axis)
        return _crossentropy(one_hot, y_pred, self.from_logits, axis)


@LOSSES.register("crossentropy", "ce")
class Crossentropy(Loss):
    """Keras's automatic crossentropy: binary when y_pred has one unit, sparse categorical when
    y_true has a lower rank than y_pred or one column against several, else categorical, each
    with its defaults (Keras 3 `compile_utils.get_loss`)."""

    type: Literal["crossentropy"] = "crossentropy"

    def concrete(self, y_true, y_pred) -> Loss:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if y_pred.shape[-1] == 1:
            return BinaryCrossentropy(reduction=self.reduction)
        if y_true.ndim < y_pred.ndim or y_true.shape[-1] == 1:
            return SparseCategoricalCrossentropy(reduction=self.reduction)
        return CategoricalCrossentropy(reduction=self.reduction)

    def values(self, y_true, y_pred):
        return self.concrete(y_true, y_pred).values(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        return self.concrete(y_true, y_pred)(y_true, y_pred, sample_weight)
