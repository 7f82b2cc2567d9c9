import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.training.metrics import METRICS, resolve_metric

RNG = np.random.default_rng(2)
N, C = 8, 4


def _probs():
    x = RNG.uniform(0.05, 1.0, (N, C)).astype(np.float32)
    return x / x.sum(-1, keepdims=True)


def _batches(kind):
    """Two (y_true, y_pred) batches of the kind a metric expects."""
    out = []
    for _ in range(2):
        if kind == "binary":
            out.append(
                (RNG.integers(0, 2, (N, 1)).astype(np.float32), RNG.random((N, 1), np.float32))
            )
        elif kind == "one_hot":
            out.append((np.eye(C, dtype=np.float32)[RNG.integers(0, C, N)], _probs()))
        elif kind == "sparse":
            out.append((RNG.integers(0, C, N), _probs()))
        elif kind == "multi":
            out.append(
                (RNG.integers(0, 2, (N, C)).astype(np.float32), RNG.random((N, C), np.float32))
            )
        else:
            out.append((RNG.random((N, C), np.float32) + 0.1, RNG.random((N, C), np.float32) + 0.1))
    return out


# (config, Keras class name, Keras arguments, data kind)
CASES = {
    "binary_accuracy": [
        ("binary_accuracy", "BinaryAccuracy", {}, "binary"),
        (
            {"type": "binary_accuracy", "threshold": 0.3},
            "BinaryAccuracy",
            {"threshold": 0.3},
            "binary",
        ),
    ],
    "categorical_accuracy": [("categorical_accuracy", "CategoricalAccuracy", {}, "one_hot")],
    "sparse_categorical_accuracy": [
        ("sparse_categorical_accuracy", "SparseCategoricalAccuracy", {}, "sparse")
    ],
    "top_k_categorical_accuracy": [
        (
            {"type": "top_k_categorical_accuracy", "k": 2},
            "TopKCategoricalAccuracy",
            {"k": 2},
            "one_hot",
        )
    ],
    "sparse_top_k_categorical_accuracy": [
        (
            {"type": "sparse_top_k_categorical_accuracy", "k": 2},
            "SparseTopKCategoricalAccuracy",
            {"k": 2},
            "sparse",
        )
    ],
    "accuracy": [
        ("accuracy", "BinaryAccuracy", {}, "binary"),
        ("acc", "CategoricalAccuracy", {}, "one_hot"),
        ("accuracy", "SparseCategoricalAccuracy", {}, "sparse"),
    ],
    "mean_squared_error": [("mse", "MeanSquaredError", {}, "real")],
    "mean_absolute_error": [("mae", "MeanAbsoluteError", {}, "real")],
    "mean_absolute_percentage_error": [("mape", "MeanAbsolutePercentageError", {}, "real")],
    "mean_squared_logarithmic_error": [("msle", "MeanSquaredLogarithmicError", {}, "real")],
    "binary_crossentropy": [
        (
            {"type": "bce", "label_smoothing": 0.1},
            "BinaryCrossentropy",
            {"label_smoothing": 0.1},
            "binary",
        )
    ],
    "categorical_crossentropy": [
        ("categorical_crossentropy", "CategoricalCrossentropy", {}, "one_hot")
    ],
    "sparse_categorical_crossentropy": [
        ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", {}, "sparse")
    ],
    "precision": [
        ("precision", "Precision", {}, "binary"),
        ({"type": "precision", "thresholds": 0.3}, "Precision", {"thresholds": 0.3}, "binary"),
        ({"type": "precision", "top_k": 2}, "Precision", {"top_k": 2}, "multi"),
        ({"type": "precision", "class_id": 1}, "Precision", {"class_id": 1}, "multi"),
    ],
    "recall": [
        ("recall", "Recall", {}, "binary"),
        (
            {"type": "recall", "top_k": 2, "class_id": 2},
            "Recall",
            {"top_k": 2, "class_id": 2},
            "multi",
        ),
    ],
    "auc": [
        ("auc", "AUC", {}, "binary"),
        ({"type": "auc", "curve": "PR"}, "AUC", {"curve": "PR"}, "binary"),
        (
            {"type": "auc", "num_thresholds": 7, "summation_method": "minoring"},
            "AUC",
            {"num_thresholds": 7, "summation_method": "minoring"},
            "binary",
        ),
        (
            {"type": "auc", "curve": "PR", "summation_method": "majoring"},
            "AUC",
            {"curve": "PR", "summation_method": "majoring"},
            "multi",
        ),
        (
            {"type": "auc", "thresholds": [0.2, 0.3, 0.7]},
            "AUC",
            {"thresholds": [0.2, 0.3, 0.7]},
            "binary",
        ),
        ({"type": "auc", "multi_label": True}, "AUC", {"multi_label": True}, "multi"),
        ({"type": "auc", "from_logits": True}, "AUC", {"from_logits": True}, "real"),
    ],
}
FLAT = [(name, *case) for name, cases in CASES.items() for case in cases]


def test_every_metric_has_a_case():
    assert set(CASES) == set(METRICS.names())


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("name", "config", "keras_name", "arguments", "kind"), FLAT)
def test_matches_keras(name, config, keras_name, arguments, kind, weighted):
    keras = pytest.importorskip("keras")
    batches = _batches(kind)
    metric = METRICS.create(config)
    expected = getattr(keras.metrics, keras_name)(**arguments)
    state = metric.initial()
    for y_true, y_pred in batches:
        weight = RNG.uniform(0, 2, N).astype(np.float32) if weighted else None
        concrete = resolve_metric(metric, y_true, y_pred)
        state = concrete.update(state, y_true, y_pred, weight)
        expected.update_state(y_true, y_pred, sample_weight=weight)
    result = resolve_metric(metric, *batches[0]).result(state)
    assert isinstance(result, float)
    np.testing.assert_allclose(result, float(expected.result()), rtol=1e-5, atol=1e-7)


def test_sequence_weights():
    keras = pytest.importorskip("keras")
    y_true = RNG.integers(0, C, (N, 5))
    y_pred = RNG.random((N, 5, C), np.float32)
    mask = (RNG.random((N, 5)) > 0.3).astype(np.float32)
    metric = METRICS.create("sparse_categorical_accuracy")
    state = metric.update(metric.initial(), y_true, y_pred, mask)
    expected = keras.metrics.SparseCategoricalAccuracy()
    expected.update_state(y_true, y_pred, sample_weight=mask)
    np.testing.assert_allclose(metric.result(state), float(expected.result()), rtol=1e-6)


def test_unresolved_accuracy_resolves_per_batch():
    y_true, y_pred = _batches("sparse")[0]
    metric = METRICS.create("acc")
    state = metric.update(metric.initial(), y_true, y_pred)
    resolved = resolve_metric(metric, y_true, y_pred)
    assert metric.result(state) == resolved.result(
        resolved.update(resolved.initial(), y_true, y_pred)
    )


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("accuracy", "accuracy"),
        ("acc", "acc"),
        ("ACC", "ACC"),
        ("mse", "mse"),
        ("MSE", "MSE"),
        ("AUC", "AUC"),
        ("precision", "precision"),
        ("BinaryAccuracy", "BinaryAccuracy"),
        ({"type": "auc", "num_thresholds": 50}, "auc"),
        ({"type": "mse"}, "mean_squared_error"),
        ({"type": "recall", "name": "r"}, "r"),
    ],
)
def test_names_are_keras_history_keys(spelling, name):
    assert METRICS.create(spelling).name == name


@pytest.mark.parametrize(
    ("true_shape", "pred_shape", "resolved"),
    [
        ((8, 1), (8, 1), "binary_accuracy"),
        ((8,), (8, 1), "binary_accuracy"),
        ((8,), (8, 4), "sparse_categorical_accuracy"),
        ((8, 1), (8, 4), "sparse_categorical_accuracy"),
        ((8, 5), (8, 5, 3), "sparse_categorical_accuracy"),
        ((8, 4), (8, 4), "categorical_accuracy"),
    ],
)
def test_accuracy_resolution(true_shape, pred_shape, resolved):
    metric = resolve_metric(METRICS.create("acc"), np.zeros(true_shape), np.zeros(pred_shape))
    assert (metric.type, metric.name) == (resolved, "acc")
    assert (
        resolve_metric(METRICS.create("mae"), np.zeros(true_shape), np.zeros(pred_shape)).type
        == "mean_absolute_error"
    )


def test_states_are_float32():
    metric = METRICS.create("mse")
    total, count = metric.update(
        metric.initial(), np.arange(6).reshape(3, 2), np.ones((3, 2), np.float32)
    )
    assert total.dtype == count.dtype == np.float32


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "precision", "thresholds": 1.5},
        {"type": "auc", "num_thresholds": 1},
        {"type": "auc", "curve": "XYZ"},
        {"type": "top_k_categorical_accuracy", "k": 0},
        {"type": "auc", "label_weights": [1, 2]},
        "accuracyy",
    ],
)
def test_bad_arguments_are_rejected(bad):
    with pytest.raises(ValidationError):
        METRICS.create(bad)
