import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.training.losses import LOSSES
from tests.gradcheck import check_grads

RNG = np.random.default_rng(1)
N, C = 4, 3


def _probs(shape):
    x = RNG.uniform(0.1, 1.0, shape)
    return x / x.sum(-1, keepdims=True)


ONE_HOT = np.eye(C)[RNG.integers(0, C, N)]
LABELS = RNG.integers(0, C, N)
BINARY = RNG.integers(0, 2, (N, 1)).astype(np.float64)
REAL = RNG.normal(size=(N, C))
WEIGHT = RNG.uniform(0.5, 2.0, N)

# (config, y_true, y_pred in float64, sample_weight): y_pred keeps away from kinks and clips.
CASES = {
    "mean_squared_error": [("mse", REAL, RNG.normal(size=(N, C)), None)],
    "mean_absolute_error": [("mae", REAL, REAL + 0.5, WEIGHT)],
    "mean_absolute_percentage_error": [("mape", REAL, REAL * 1.5 + 0.1, None)],
    "mean_squared_logarithmic_error": [("msle", np.abs(REAL), RNG.uniform(0.1, 2, (N, C)), None)],
    "cosine_similarity": [({"type": "cosine_similarity", "axis": -1}, REAL, REAL + 1, WEIGHT)],
    "huber": [({"type": "huber", "delta": 0.7}, REAL, REAL + np.array([0.2, -1.5, 3.0]), None)],
    "log_cosh": [("log_cosh", REAL, RNG.normal(size=(N, C)), WEIGHT)],
    "hinge": [("hinge", BINARY, RNG.uniform(-0.8, 0.8, (N, 1)), None)],
    "squared_hinge": [("squared_hinge", 2 * BINARY - 1, RNG.uniform(-0.8, 0.8, (N, 1)), None)],
    "categorical_hinge": [("categorical_hinge", ONE_HOT, RNG.normal(size=(N, C)), WEIGHT)],
    "kl_divergence": [("kld", _probs((N, C)), _probs((N, C)), None)],
    "poisson": [("poisson", np.abs(REAL), RNG.uniform(0.1, 2, (N, C)), WEIGHT)],
    "binary_crossentropy": [
        ("bce", BINARY, RNG.uniform(0.1, 0.9, (N, 1)), None),
        ({"type": "bce", "from_logits": True}, BINARY, RNG.normal(size=(N, 1)), WEIGHT),
        (
            {"type": "bce", "label_smoothing": 0.2},
            BINARY[:, 0],
            RNG.uniform(0.1, 0.9, (N, 1)),
            None,
        ),
    ],
    "categorical_crossentropy": [
        ("categorical_crossentropy", ONE_HOT, _probs((N, C)) * 2, None),
        ({"type": "categorical_crossentropy", "from_logits": True}, ONE_HOT, REAL, WEIGHT),
        (
            {"type": "categorical_crossentropy", "label_smoothing": 0.1, "axis": -1},
            ONE_HOT,
            _probs((N, C)),
            None,
        ),
    ],
    "sparse_categorical_crossentropy": [
        ("sparse_categorical_crossentropy", LABELS, _probs((N, C)), WEIGHT),
        (
            {"type": "sparse_categorical_crossentropy", "from_logits": True},
            LABELS[:, None].astype(float),
            REAL,
            None,
        ),
    ],
    "crossentropy": [
        ("ce", BINARY, RNG.uniform(0.1, 0.9, (N, 1)), None),
        ("crossentropy", LABELS, _probs((N, C)), None),
        ("crossentropy", ONE_HOT, _probs((N, C)), WEIGHT),
    ],
}
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight"]
FLAT = [(name, *case) for name, cases in CASES.items() for case in cases]


def test_every_loss_has_a_case():
    assert set(CASES) == set(LOSSES.names())


def _build(config, reduction="sum_over_batch_size"):
    if isinstance(config, str):
        config = {"type": config}
    return LOSSES.create({**config, "reduction": reduction})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "config", "y_true", "y_pred", "weight"), FLAT)
def test_gradient(name, config, y_true, y_pred, weight, reduction):
    loss = _build(config, reduction)
    y_pred = y_pred.copy()

    def forward():
        value, dy = loss(y_true, y_pred, weight)
        return np.array(value), lambda r: {"y_pred": r * dy}

    check_grads(forward, {"y_pred": y_pred}, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("name", "config", "y_true", "y_pred", "weight"), FLAT)
def test_float32_stays_float32(name, config, y_true, y_pred, weight):
    w = None if weight is None else weight.astype(np.float32)
    value, dy = _build(config)(y_true, y_pred.astype(np.float32), w)
    assert dy.dtype == np.float32 and dy.shape == y_pred.shape
    assert isinstance(value, float)


def test_sequence_weights_reduce_per_element():
    y_true, y_pred = np.zeros((2, 3, 1), np.float32), np.ones((2, 3, 1), np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    value, dy = LOSSES.create("mse")(y_true, y_pred, mask)
    assert value == pytest.approx(3 / 6)
    np.testing.assert_allclose(dy[..., 0], 2 * mask / 6)


def test_bad_arguments_are_rejected():
    for bad in (
        {"type": "mse", "reduction": "none"},
        {"type": "bce", "label_smoothing": 1.5},
        {"type": "huber", "delta": "x"},
        {"type": "mse", "from_logits": True},
        {"type": "categorical_crossentropy", "ignore_class": 0},
        "mean_sqared_eror",
    ):
        with pytest.raises(ValidationError):
            LOSSES.create(bad)


def test_sparse_labels_out_of_range():
    with pytest.raises(ValueError, match="class indices"):
        LOSSES.create("sparse_categorical_crossentropy")(np.array([3]), np.ones((1, 3)) / 3)


KERAS_NAMES = {
    "mean_squared_error": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "mean_absolute_percentage_error": "MeanAbsolutePercentageError",
    "mean_squared_logarithmic_error": "MeanSquaredLogarithmicError",
    "cosine_similarity": "CosineSimilarity",
    "huber": "Huber",
    "log_cosh": "LogCosh",
    "hinge": "Hinge",
    "squared_hinge": "SquaredHinge",
    "categorical_hinge": "CategoricalHinge",
    "kl_divergence": "KLDivergence",
    "poisson": "Poisson",
    "binary_crossentropy": "BinaryCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
}


def _keras_loss(keras, loss, y_true, y_pred):
    if loss.type == "crossentropy":
        loss = loss.concrete(y_true, y_pred)
    arguments = loss.model_dump(exclude={"type"})
    return getattr(keras.losses, KERAS_NAMES[loss.type])(**arguments)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "config", "y_true", "y_pred", "weight"), FLAT)
def test_matches_keras(name, config, y_true, y_pred, weight, reduction):
    keras = pytest.importorskip("keras")
    import torch

    loss = _build(config, reduction)
    y_pred32 = y_pred.astype(np.float32)
    w = None if weight is None else weight.astype(np.float32)
    value, dy = loss(y_true, y_pred32, w)
    pred = torch.tensor(y_pred32, requires_grad=True)
    target = torch.tensor(np.asarray(y_true, np.float32))
    expected = _keras_loss(keras, loss, y_true, y_pred)(
        target, pred, None if w is None else torch.tensor(w)
    )
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=1e-5)
    np.testing.assert_allclose(dy, pred.grad.numpy(), rtol=1e-5, atol=1e-7)
