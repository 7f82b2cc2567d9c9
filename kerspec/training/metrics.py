"""Metrics, by Keras name. A metric is immutable; its running state is a value the loop keeps:
`state = m.update(m.initial(), y_true, y_pred)`, then `m.result(state)`.

States are tuples of float32 numpy arrays. `name` is the key Keras 3 gives the metric in the
history: a metric given as a string is named by that exact spelling (`"acc"`, `"mse"`, `"AUC"`);
one given as a mapping by its `name`, else by its canonical name (`binary_accuracy`, `auc`).
Keras's "accuracy"/"acc" becomes binary, sparse categorical or categorical accuracy from the
shapes of y_true and y_pred: see `resolve_metric`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator

from kerspec.paths import NameOrEmpty
from kerspec.registry import Item, Registry
from kerspec.training import losses
from kerspec.training.losses import EPSILON, same_rank

UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class MetricRegistry(Registry):
    """A registry whose string entries keep their spelling as the metric's name, as Keras does."""

    def normalize(self, value: Any) -> Any:
        if isinstance(value, str):
            return {"type": self._checked(value), "name": value}
        return super().normalize(value)


METRICS = MetricRegistry("metric")


def _divide_no_nan(a, b):
    out = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)), np.float32)
    return np.divide(a, b, out=out, where=b != 0)


class Metric(Item):
    # A column of history.csv and of CSVLogger's file.
    name: NameOrEmpty = Field("", description="history key; defaults to the metric's canonical name")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            return {**data, "name": cls.model_fields["type"].default}
        return data

    def initial(self) -> Any:
        raise NotImplementedError

    def update(self, state: Any, y_true: np.ndarray, y_pred: np.ndarray, sample_weight=None) -> Any:
        raise NotImplementedError

    def result(self, state: Any) -> float:
        raise NotImplementedError


class MeanMetric(Metric):
    """The weighted mean of per-sample values, Keras's `MeanMetricWrapper`.

    Values with more axes than the weights are averaged down to the weights' rank; the state is
    `(sum(w * v), sum(w))` (or the sample count without weights), the result their ratio.
    """

    def values(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def initial(self):
        return np.zeros((), np.float32), np.zeros((), np.float32)

    def update(self, state, y_true, y_pred, sample_weight=None):
        values = np.asarray(self.values(y_true, y_pred), np.float32)
        if sample_weight is not None:
            values, weight = same_rank(values, np.asarray(sample_weight, np.float32))
            if values.ndim > weight.ndim:
                values = values.mean(axis=tuple(range(weight.ndim, values.ndim)))
            weight = np.broadcast_to(weight, values.shape)
            values = values * weight
            if weight.ndim > 1:
                weight = weight.mean(axis=tuple(range(1, weight.ndim)))
        if values.ndim > 1:
            values = values.mean(axis=tuple(range(1, values.ndim)))
        if sample_weight is not None:
            count = weight.sum(dtype=np.float32)
        else:
            count = np.float32(values.shape[0] if values.ndim else 1)
        total, seen = state
        return total + values.sum(dtype=np.float32), seen + count

    def result(self, state):
        return float(_divide_no_nan(*state))


@METRICS.register("binary_accuracy")
class BinaryAccuracy(MeanMetric):
    """`y_true == (y_pred > threshold)`, per element."""

    type: Literal["binary_accuracy"] = "binary_accuracy"
    threshold: float = 0.5

    def values(self, y_true, y_pred):
        y_true, y_pred = same_rank(np.asarray(y_true), np.asarray(y_pred))
        return y_true == (y_pred > np.asarray(self.threshold, y_pred.dtype)).astype(y_true.dtype)


@METRICS.register("categorical_accuracy")
class CategoricalAccuracy(MeanMetric):
    """`argmax(y_true) == argmax(y_pred)` over the last axis."""

    type: Literal["categorical_accuracy"] = "categorical_accuracy"

    def values(self, y_true, y_pred):
        return np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)


@METRICS.register("sparse_categorical_accuracy")
class SparseCategoricalAccuracy(MeanMetric):
    """`y_true == argmax(y_pred)`, labels as class indices (a trailing axis of 1 is dropped)."""

    type: Literal["sparse_categorical_accuracy"] = "sparse_categorical_accuracy"

    def values(self, y_true, y_pred):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
        return y_true == np.argmax(y_pred, axis=-1)


def _in_top_k(labels: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Whether each label's score is at least the k-th largest score (ties count as in)."""
    scores = y_pred.reshape(-1, y_pred.shape[-1])
    kth = np.partition(scores, -k, axis=-1)[:, -k]
    flat = labels.reshape(-1).astype(np.intp)
    return (scores[np.arange(len(flat)), flat] >= kth).reshape(labels.shape)


@METRICS.register("top_k_categorical_accuracy")
class TopKCategoricalAccuracy(MeanMetric):
    """Whether `argmax(y_true)` is among the k highest scores of y_pred."""

    type: Literal["top_k_categorical_accuracy"] = "top_k_categorical_accuracy"
    k: PositiveInt = 5

    def values(self, y_true, y_pred):
        return _in_top_k(np.argmax(y_true, axis=-1), np.asarray(y_pred), self.k)


@METRICS.register("sparse_top_k_categorical_accuracy")
class SparseTopKCategoricalAccuracy(MeanMetric):
    """Whether the class index y_true is among the k highest scores of y_pred."""

    type: Literal["sparse_top_k_categorical_accuracy"] = "sparse_top_k_categorical_accuracy"
    k: PositiveInt = 5

    def values(self, y_true, y_pred):
        return _in_top_k(np.asarray(y_true), np.asarray(y_pred), self.k)


@METRICS.register("accuracy", "acc")
class Accuracy(MeanMetric):
    """Keras's "accuracy"/"acc": resolved per output by `resolve_metric`; used unresolved, it
    resolves from each batch's shapes, which is the same choice."""

    type: Literal["accuracy"] = "accuracy"

    def values(self, y_true, y_pred):
        return resolve_metric(self, np.asarray(y_true), np.asarray(y_pred)).values(y_true, y_pred)


def resolve_metric(metric: Metric, y_true, y_pred) -> Metric:
    """The concrete metric for Keras's automatic "accuracy", keeping its name; others unchanged.

    As Keras 3's `compile_utils.get_metric`: binary accuracy when y_pred's last axis is 1,
    sparse categorical accuracy when y_true has a lower rank than y_pred or a last axis of 1
    against several classes, else categorical accuracy. `y_true` and `y_pred` need only `.shape`.
    """
    if not isinstance(metric, Accuracy):
        return metric
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if pred_shape[-1] == 1:
        return BinaryAccuracy(name=metric.name)
    if len(true_shape) < len(pred_shape) or (true_shape[-1] == 1 and pred_shape[-1] > 1):
        return SparseCategoricalAccuracy(name=metric.name)
    return CategoricalAccuracy(name=metric.name)


class LossMetric(MeanMetric):
    """The mean of a loss's per-sample values, as Keras's metric of the same name."""

    def loss(self) -> losses.Loss:
        arguments = self.model_dump(exclude={"type", "name"})
        return losses.LOSSES.get(self.type)(**arguments)

    def values(self, y_true, y_pred):
        return self.loss().values(y_true, y_pred)


@METRICS.register("mean_squared_error", "mse")
class MeanSquaredError(LossMetric):
    """`mean((y_pred - y_true)**2, axis=-1)`, averaged over samples."""

    type: Literal["mean_squared_error"] = "mean_squared_error"


@METRICS.register("mean_absolute_error", "mae")
class MeanAbsoluteError(LossMetric):
    """`mean(|y_pred - y_true|, axis=-1)`, averaged over samples."""

    type: Literal["mean_absolute_error"] = "mean_absolute_error"


@METRICS.register("mean_absolute_percentage_error", "mape")
class MeanAbsolutePercentageError(LossMetric):
    """`100 * mean(|y_true - y_pred| / max(|y_true|, 1e-7), axis=-1)`, averaged over samples."""

    type: Literal["mean_absolute_percentage_error"] = "mean_absolute_percentage_error"


@METRICS.register("mean_squared_logarithmic_error", "msle")
class MeanSquaredLogarithmicError(LossMetric):
    """`mean((log1p(y_pred) - log1p(y_true))**2, axis=-1)` (floored at 1e-7), averaged."""

    type: Literal["mean_squared_logarithmic_error"] = "mean_squared_logarithmic_error"


@METRICS.register("binary_crossentropy", "bce")
class BinaryCrossentropy(LossMetric):
    """The binary crossentropy loss per sample, averaged."""

    type: Literal["binary_crossentropy"] = "binary_crossentropy"
    from_logits: bool = False
    label_smoothing: UnitFloat = 0.0


@METRICS.register("categorical_crossentropy")
class CategoricalCrossentropy(LossMetric):
    """The categorical crossentropy loss per sample, averaged."""

    type: Literal["categorical_crossentropy"] = "categorical_crossentropy"
    from_logits: bool = False
    label_smoothing: UnitFloat = 0.0
    axis: int = -1


@METRICS.register("sparse_categorical_crossentropy")
class SparseCategoricalCrossentropy(LossMetric):
    """The sparse categorical crossentropy loss per sample, averaged."""

    type: Literal["sparse_categorical_crossentropy"] = "sparse_categorical_crossentropy"
    from_logits: bool = False
    axis: int = -1


def _confusion_inputs(y_true, y_pred, sample_weight, top_k=None, class_id=None):
    """Keras's `update_confusion_matrix_variables` preparation: aligned float32 arrays and
    weights broadcast to y_pred's shape."""
    y_pred, y_true = same_rank(np.asarray(y_pred, np.float32), np.asarray(y_true, np.float32))
    if sample_weight is None:
        weight = np.ones_like(y_pred)
    else:
        weight = np.asarray(sample_weight, np.float32)
        weight = weight.reshape(weight.shape + (1,) * (y_true.ndim - weight.ndim))
        weight = np.broadcast_to(weight, y_pred.shape)
    if top_k is not None:
        # Keras keeps the top k scores and sends the rest to -1e10.
        top = np.argpartition(-y_pred, top_k - 1, axis=-1)[..., :top_k]
        kept = np.zeros(y_pred.shape, bool)
        np.put_along_axis(kept, top, True, axis=-1)
        y_pred = np.where(kept, y_pred, np.float32(-1e10))
    if class_id is not None:
        y_true, y_pred, weight = (a[..., class_id, None] for a in (y_true, y_pred, weight))
    return y_true != 0, y_pred, weight


def _counts(labels, y_pred, weight, thresholds):
    """Weighted (tp, fp, tn, fn) at each threshold, predicting positive when `y_pred > t`."""
    positive = y_pred.reshape(1, -1) > thresholds.reshape(-1, 1)
    labels, weight = labels.reshape(1, -1), weight.reshape(1, -1)
    zero = np.float32(0)
    return tuple(
        np.where(label & pred, weight, zero).sum(axis=1, dtype=np.float32)
        for label, pred in (
            (labels, positive),
            (~labels, positive),
            (~labels, ~positive),
            (labels, ~positive),
        )
    )


def _thresholds(value):
    if value is None:
        return value
    values = value if isinstance(value, list) else [value]
    bad = [t for t in values if not 0 <= t <= 1]
    if bad:
        raise ValueError(f"threshold values must be in [0, 1]. Received: {bad}")
    return value


class ConfusionMetric(Metric):
    """Precision and recall: confusion counts at one or several thresholds."""

    thresholds: Annotated[float | list[float] | None, BeforeValidator(_thresholds)] = None
    top_k: PositiveInt | None = None
    class_id: Annotated[int, Field(ge=0)] | None = None

    def _threshold_array(self) -> np.ndarray:
        if self.thresholds is None:
            # With top_k, Keras counts every kept prediction as positive.
            return np.array([0.5 if self.top_k is None else -1e10], np.float32)
        return np.atleast_1d(np.asarray(self.thresholds, np.float32))

    def initial(self):
        size = len(self._threshold_array())
        return np.zeros(size, np.float32), np.zeros(size, np.float32)

    def _pair(self, tp, fp, tn, fn):
        raise NotImplementedError

    def update(self, state, y_true, y_pred, sample_weight=None):
        labels, y_pred, weight = _confusion_inputs(
            y_true, y_pred, sample_weight, self.top_k, self.class_id
        )
        counts = _counts(labels, y_pred, weight, self._threshold_array())
        return tuple(old + new for old, new in zip(state, self._pair(*counts), strict=True))

    def result(self, state):
        """A float for one threshold; an array with one value per threshold otherwise."""
        ratio = _divide_no_nan(state[0], state[0] + state[1])
        return float(ratio[0]) if ratio.size == 1 else ratio


@METRICS.register("precision")
class Precision(ConfusionMetric):
    """`tp / (tp + fp)`, predicting positive when `y_pred > threshold` (0.5 by default)."""

    type: Literal["precision"] = "precision"

    def _pair(self, tp, fp, tn, fn):
        return tp, fp


@METRICS.register("recall")
class Recall(ConfusionMetric):
    """`tp / (tp + fn)`, predicting positive when `y_pred > threshold` (0.5 by default)."""

    type: Literal["recall"] = "recall"

    def _pair(self, tp, fp, tn, fn):
        return tp, fn


@METRICS.register("auc")
class AUC(Metric):
    """Area under the ROC or PR curve from confusion counts at `num_thresholds` thresholds.

    Thresholds are `[-1e-7, 1/(n-1), ..., (n-2)/(n-1), 1 + 1e-7]`, or the given `thresholds`
    between the two end points. `interpolation` is the trapezoid rule for ROC, and for PR Davis
    and Goadrich's interpolation of positives (Keras's `interpolate_pr_auc`); `minoring` and
    `majoring` are lower and upper Riemann sums. With `multi_label`, counts are kept per label and
    the areas averaged.
    """

    type: Literal["auc"] = "auc"
    num_thresholds: Annotated[int, Field(gt=1)] = 200
    curve: Literal["ROC", "PR"] = "ROC"
    summation_method: Literal["interpolation", "minoring", "majoring"] = "interpolation"
    thresholds: list[UnitFloat] | None = None
    multi_label: bool = False
    from_logits: bool = False

    @field_validator("curve", mode="before")
    @classmethod
    def _upper(cls, value):
        return value.upper() if isinstance(value, str) else value

    def _threshold_array(self) -> np.ndarray:
        if self.thresholds is None:
            n = self.num_thresholds
            inner = [(i + 1) / (n - 1) for i in range(n - 2)]
        else:
            inner = sorted(self.thresholds)
        return np.array([-EPSILON, *inner, 1 + EPSILON], np.float32)

    def _evenly_spaced(self, thresholds: np.ndarray) -> bool:
        if self.thresholds is None:
            return True
        ends = np.array([0.0, *sorted(self.thresholds), 1.0], np.float32)
        even = np.arange(len(ends), dtype=np.float32) / np.float32(len(ends) - 1)
        return len(ends) >= 3 and bool(np.allclose(ends, even, atol=EPSILON))

    def initial(self):
        return ()

    def update(self, state, y_true, y_pred, sample_weight=None):
        y_pred = np.asarray(y_pred, np.float32)
        if self.from_logits:
            y_pred = 1 / (1 + np.exp(-y_pred))
        labels, y_pred, weight = _confusion_inputs(y_true, y_pred, sample_weight)
        thresholds = self._threshold_array()
        if not self.multi_label:
            labels, y_pred, weight = (
                labels.reshape(-1, 1),
                y_pred.reshape(-1, 1),
                weight.reshape(-1, 1),
            )
        if self._evenly_spaced(thresholds):
            counts = self._bucket_counts(labels, y_pred, weight, len(thresholds))
        else:
            counts = np.stack(
                [
                    np.stack(_counts(labels[:, j], y_pred[:, j], weight[:, j], thresholds), -1)
                    for j in range(labels.shape[1])
                ],
                -1,
            )
            counts = tuple(counts[:, i] for i in range(4))
        if not state:
            return counts
        return tuple(old + new for old, new in zip(state, counts, strict=True))

    @staticmethod
    def _bucket_counts(labels, y_pred, weight, size):
        """Keras's evenly-spaced shortcut: bucket each prediction by the highest threshold it
        exceeds, then count from the top with a reversed cumulative sum."""
        y_pred = np.clip(y_pred, 0, 1)
        bucket = np.maximum(np.ceil(y_pred * np.float32(size - 1)) - 1, 0).astype(np.intp)
        columns = np.broadcast_to(np.arange(labels.shape[1]), labels.shape)
        true_weight = np.where(labels, weight, np.float32(0))
        false_weight = np.where(labels, np.float32(0), weight)
        tp = np.zeros((size, labels.shape[1]), np.float32)
        fp = np.zeros_like(tp)
        np.add.at(tp, (bucket, columns), true_weight)
        np.add.at(fp, (bucket, columns), false_weight)
        tp = np.cumsum(tp[::-1], axis=0)[::-1]
        fp = np.cumsum(fp[::-1], axis=0)[::-1]
        tn = false_weight.sum(axis=0, dtype=np.float32) - fp
        fn = true_weight.sum(axis=0, dtype=np.float32) - tp
        return tp, fp, tn, fn

    def result(self, state):
        if not state:
            return 0.0
        tp, fp, tn, fn = state
        if self.curve == "PR" and self.summation_method == "interpolation":
            area = self._interpolated_pr(tp, fp, fn)
        else:
            recall = _divide_no_nan(tp, tp + fn)
            if self.curve == "ROC":
                x, y = _divide_no_nan(fp, fp + tn), recall
            else:
                x, y = recall, _divide_no_nan(tp, tp + fp)
            if self.summation_method == "interpolation":
                heights = (y[:-1] + y[1:]) / np.float32(2)
            elif self.summation_method == "minoring":
                heights = np.minimum(y[:-1], y[1:])
            else:
                heights = np.maximum(y[:-1], y[1:])
            area = np.sum((x[:-1] - x[1:]) * heights, axis=0)
        return float(np.mean(area))

    @staticmethod
    def _interpolated_pr(tp, fp, fn):
        """Davis & Goadrich: precision interpolated between thresholds through the positives."""
        dtp = tp[:-1] - tp[1:]
        predicted = tp + fp
        dp = predicted[:-1] - predicted[1:]
        slope = _divide_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * predicted[1:]
        both = (predicted[:-1] > 0) & (predicted[1:] > 0)
        ratio = np.where(both, _divide_no_nan(predicted[:-1], np.maximum(predicted[1:], 0)), 1)
        increments = _divide_no_nan(
            slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0)
        )
        return np.sum(increments, axis=0)
