"""The Python API: load, fit, evaluate, predict, weights; reproducible, dtype-true, Keras's names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kerspec
from kerspec.errors import DataError, WeightsError
from kerspec.training.data import Dataset
from kerspec.training.targets import OutputInfo

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

SMALL = """\
name: small
seed: 3
{dtype}
layers:
  - {{type: Input, shape: [4], name: features}}
  - {{type: Dense, units: 6, activation: tanh, name: hidden}}
  - {{type: Dropout, rate: 0.2}}
  - {{type: Dense, units: 3, activation: softmax, name: label}}
compile:
  optimizer: {{type: adam, learning_rate: 0.01}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: train.npz
  test: test.npz
fit: {{epochs: 3, batch_size: 8, validation_split: 0.2}}
"""


def write_small(folder: Path, dtype: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    for name, samples in (("train", 50), ("test", 20)):
        x = rng.random((samples, 4), dtype=np.float32)
        np.savez(folder / f"{name}.npz", x=x, y=(x[:, 0] * 3).astype(int))
    spec = folder / "small.yaml"
    spec.write_text(SMALL.format(dtype=f"dtype: {dtype}" if dtype else ""))
    return spec


def flat(model: kerspec.Model) -> dict[str, np.ndarray]:
    return {f"{o}/{n}": w.copy() for o, ws in model.params.items() for n, w in ws.items()}


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture
def small(tmp_path) -> Path:
    return write_small(tmp_path)


def test_load_fit_evaluate_predict(small):
    model = kerspec.load(small)
    assert isinstance(model, kerspec.Model)
    assert (model.name, model.input_names, model.output_names) == ("small", ["features"], ["label"])
    history = model.fit()
    assert history.epochs == [0, 1, 2]
    assert all(len(values) == 3 for values in history.history.values())
    scores = model.evaluate()
    assert set(scores) == {"loss", "accuracy"}
    assert 0 <= scores["accuracy"] <= 1 and np.isfinite(scores["loss"])
    x = np.random.default_rng(1).random((7, 4), dtype=np.float32)
    out = model.predict(x)
    assert list(out) == ["label"] and out["label"].shape == (7, 3)
    assert np.allclose(out["label"].sum(axis=1), 1, atol=1e-6)
    assert np.array_equal(model.predict({"features": x})["label"], out["label"])


def test_history_uses_keras_names(small):
    history = kerspec.load(small).fit()
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.last() == {k: v[-1] for k, v in history.history.items()}


def test_same_spec_and_seed_give_the_same_weights_bit_for_bit(small):
    runs = []
    for seed in (None, None, 4):
        model = kerspec.load(small, seed=seed)
        model.fit()
        runs.append(flat(model))
    assert same(runs[0], runs[1])
    assert not np.array_equal(runs[0]["hidden/kernel"], runs[2]["hidden/kernel"])
    assert kerspec.load(small).seed == 3 and kerspec.load(small, seed=4).seed == 4


def test_without_a_seed_a_fresh_one_is_drawn_and_reproduces(small):
    small.write_text(small.read_text().replace("seed: 3\n", ""))
    first = kerspec.load(small)
    first.fit()
    again = kerspec.load(small, seed=first.seed)
    again.fit()
    assert same(flat(first), flat(again))


def test_predict_in_batches_equals_one_batch(small):
    model = kerspec.load(small)
    model.fit()
    x = np.random.default_rng(2).random((103, 4), dtype=np.float32)
    whole = model.predict(x, batch_size=1024)["label"]
    for batch_size in (1, 10, 64):
        np.testing.assert_allclose(
            model.predict(x, batch_size=batch_size)["label"], whole, rtol=1e-6, atol=1e-7
        )


def test_predict_keeps_float32(small):
    model = kerspec.load(small)
    model.fit()
    assert all(w.dtype == np.float32 for w in flat(model).values())
    for x in (np.zeros((3, 4), np.float32), np.zeros((3, 4)), [[0, 0, 0, 0]]):
        assert model.predict(np.asarray(x))["label"].dtype == np.float32


def test_a_float64_spec_trains_in_float64(tmp_path):
    model = kerspec.load(write_small(tmp_path, "float64"))
    assert all(w.dtype == np.float64 for w in flat(model).values())
    model.fit()
    weights = flat(model)
    assert all(w.dtype == np.float64 for w in weights.values())
    x = np.random.default_rng(3).random((5, 4))
    y = model.predict(x)["label"]
    assert y.dtype == np.float64
    # The forward pass runs in float64: it agrees with NumPy far past float32's precision.
    z = np.tanh(x @ weights["hidden/kernel"] + weights["hidden/bias"])
    z = z @ weights["label/kernel"] + weights["label/bias"]
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-15)
    model.save_weights(tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as archive:
        assert all(archive[k].dtype == np.float64 for k in archive.files)


def test_save_and_load_weights_round_trip(small, tmp_path):
    trained = kerspec.load(small)
    trained.fit()
    trained.save_weights(tmp_path / "w.npz")
    fresh = kerspec.load(small, seed=99)
    assert not same(flat(fresh), flat(trained))
    fresh.load_weights(tmp_path / "w.npz")
    assert same(flat(fresh), flat(trained))
    x = np.random.default_rng(4).random((9, 4), dtype=np.float32)
    assert np.array_equal(fresh.predict(x)["label"], trained.predict(x)["label"])
    assert fresh.evaluate() == trained.evaluate()
    with np.load(tmp_path / "w.npz") as archive:
        assert sorted(archive.files) == [
            "hidden/bias",
            "hidden/kernel",
            "label/bias",
            "label/kernel",
        ]


def test_load_weights_checks_before_changing_anything(small, tmp_path):
    model = kerspec.load(small)
    before = flat(model)
    arrays = {k: np.ones_like(w) for k, w in before.items()}
    arrays["label/bias"] = np.ones(4, np.float32)
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(WeightsError, match=r"label/bias has shape \(4,\), the model needs \(3,\)"):
        model.load_weights(tmp_path / "w.npz")
    assert same(flat(model), before)


def test_predict_errors_are_user_errors(small):
    model = kerspec.load(small)
    with pytest.raises(DataError, match="no array for input"):
        model.predict({"other": np.zeros((2, 4))})


def test_evaluate_with_a_dataset_and_batch_size(small):
    model = kerspec.load(small)
    model.fit()
    test = model.dataset("test")
    assert test.samples == 20
    whole = model.evaluate(test, batch_size=20)
    assert model.evaluate(test, batch_size=3)["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert model.evaluate() == model.evaluate(test)


SMALL_CNN = """
seed: 0
layers:
  - {type: Input, shape: [8, 8, 1], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu}
  - {type: MaxPooling2D}
  - {type: Flatten}
  - {type: Dense, units: 3, activation: softmax, name: y}
compile: {optimizer: adam, loss: categorical_crossentropy}
fit: {epochs: 1, batch_size: 8}
"""


def test_evaluate_and_predict_reuse_buffers_of_their_own():
    """Inference keeps its buffers (a convolution's output, the pooling's) apart from training's
    and reuses them call after call; what a call returned is never one of them."""
    model = kerspec.from_yaml(SMALL_CNN)
    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8, 1), dtype=np.float32)
    data = Dataset({"x": x}, {"y": np.eye(3, dtype=np.float32)[rng.integers(0, 3, 20)]}, "test")
    model.fit(data)
    kept = set(model.ctx.buffers)
    assert kept
    model.evaluate(data, batch_size=7)
    first = model.predict(x, batch_size=7)["y"]
    assert set(model.ctx.buffers) == kept
    inference = {key: id(array) for key, array in model.inference_ctx.buffers.items()}
    assert inference
    again = first.copy()
    model.predict(x[::-1].copy(), batch_size=7)
    model.evaluate(data, batch_size=7)
    assert {key: id(array) for key, array in model.inference_ctx.buffers.items()} == inference
    np.testing.assert_array_equal(first, again)


def test_spec_validation_data_wins_over_validation_split(small, tmp_path):
    # Keras: validation_data overrides validation_split.
    small.write_text(small.read_text().replace("  test: test.npz", "  validation: test.npz"))
    model = kerspec.load(small)
    history = model.fit()
    assert history.history["val_loss"][-1] == model.evaluate(model.dataset("validation"))["loss"]


def test_digits_mlp_reaches_95_percent():
    model = kerspec.load(SPECS / "digits_mlp.yaml")
    history = model.fit()
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert len(history.history["loss"]) == 30
    assert model.evaluate()["accuracy"] >= 0.95


def test_iris_mlp_reaches_90_percent():
    model = kerspec.load(SPECS / "iris_mlp.yaml")
    model.fit()
    assert model.evaluate()["accuracy"] >= 0.9


TWO_HEADS = """\
name: two_heads
seed: 0
layers:
  - {type: Input, shape: [5], name: x}
  - {type: Dense, units: 8, activation: relu, name: trunk}
  - {type: Dense, units: 3, activation: softmax, name: kind, from: trunk}
  - {type: Dense, units: 1, name: size, from: trunk}
outputs: [kind, size]
compile:
  optimizer: adam
  loss: {kind: sparse_categorical_crossentropy, size: mse}
  loss_weights: {kind: 0.5, size: 2.0}
  metrics: {kind: [accuracy], size: [mae]}
data:
  train: {source: random, samples: 64}
  validation: valid.npz
fit: {epochs: 2, batch_size: 16}
"""


def test_two_outputs_report_keras_names(tmp_path):
    rng = np.random.default_rng(5)
    np.savez(
        tmp_path / "valid.npz",
        x=rng.random((20, 5)),
        kind=rng.integers(0, 3, 20),
        size=rng.random(20),
    )
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_HEADS)
    model = kerspec.load(spec)
    history = model.fit()
    names = ["loss", "kind_loss", "size_loss", "kind_accuracy", "size_mae"]
    assert sorted(history.history) == sorted(names + [f"val_{n}" for n in names])
    scores = model.evaluate()
    assert sorted(scores) == sorted(names)
    assert scores["loss"] == pytest.approx(
        0.5 * scores["kind_loss"] + 2.0 * scores["size_loss"], rel=1e-5
    )
    assert scores == {k[4:]: v[-1] for k, v in history.history.items() if k.startswith("val_")}
    out = model.predict(np.zeros((4, 5), np.float32))
    assert {k: v.shape for k, v in out.items()} == {"kind": (4, 3), "size": (4, 1)}


def test_each_outputs_targets_come_from_its_loss_when_the_model_compiles(tmp_path):
    model = kerspec.from_yaml(TWO_HEADS.replace("  validation: valid.npz\n", ""))
    assert model.targets == {"kind": OutputInfo((3,), "sparse"), "size": OutputInfo((1,), "real")}
    data = model.dataset("train")  # checked against model.targets: no trainer built to find out
    assert model._trainer is None
    assert data.y["kind"].dtype == np.int64 and data.y["size"].dtype == np.float32


# -- class_weight and sample_weight, as Keras weighs them ------------------------------------------

WEIGHTED = """\
name: weighted
seed: 2
layers:
  - {{type: Input, shape: [4], name: features}}
  - {{type: Dense, units: 3, activation: softmax, name: label}}
compile: {{optimizer: {{type: sgd, learning_rate: 0.5}}, loss: {loss}, metrics: [accuracy]}}
data: {{train: train.npz}}
fit: {{epochs: 1, batch_size: 64, shuffle: false{extra}}}
"""


def _weighted_case(folder: Path, loss: str, extra: str = "", sample_weight: bool = False):
    rng = np.random.default_rng(1)
    x = rng.random((20, 4), dtype=np.float32)
    labels = rng.integers(0, 3, 20)
    y = labels if loss.startswith("sparse") else np.eye(3, dtype=np.float32)[labels]
    arrays = {"x": x, "y": y}
    if sample_weight:
        arrays["sample_weight"] = rng.random(20).astype(np.float32) * 2
    np.savez(folder / "train.npz", **arrays)
    spec = folder / "weighted.yaml"
    spec.write_text(WEIGHTED.format(loss=loss, extra=extra))
    return kerspec.load(spec), arrays


def _keras_twin(keras, model, loss):
    twin = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    twin.set_weights([model.params["label"]["kernel"], model.params["label"]["bias"]])
    twin.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss, metrics=["accuracy"])
    return twin


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_class_weight_steps_as_keras(tmp_path, loss):
    keras = pytest.importorskip("keras")
    class_weight = {0: 0.5, 2: 3.0}
    model, arrays = _weighted_case(tmp_path, loss, ", class_weight: {0: 0.5, 2: 3.0}")
    twin = _keras_twin(keras, model, loss)
    logs = twin.train_on_batch(arrays["x"], arrays["y"], class_weight=class_weight, return_dict=True)
    history = model.fit()
    kernel, bias = twin.get_weights()
    np.testing.assert_allclose(model.params["label"]["kernel"], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.params["label"]["bias"], bias, rtol=1e-5, atol=1e-6)
    assert history.history["loss"][0] == pytest.approx(float(logs["loss"]), rel=1e-5)
    assert history.history["accuracy"][0] == pytest.approx(float(logs["accuracy"]))


def test_sample_weight_steps_and_scores_as_keras(tmp_path):
    keras = pytest.importorskip("keras")
    loss = "sparse_categorical_crossentropy"
    model, arrays = _weighted_case(tmp_path, loss, sample_weight=True)
    twin = _keras_twin(keras, model, loss)
    data = model.dataset("train")
    assert set(data.sample_weight) == {"label"}
    ours = model.evaluate(data)
    theirs = twin.evaluate(arrays["x"], arrays["y"], sample_weight=arrays["sample_weight"], return_dict=True, verbose=0)
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"])  # metrics are not weighted
    twin.train_on_batch(arrays["x"], arrays["y"], sample_weight=arrays["sample_weight"])
    model.fit(data)
    np.testing.assert_allclose(model.params["label"]["kernel"], twin.get_weights()[0], rtol=1e-5, atol=1e-6)


def test_bad_sample_weights_and_class_weight_conflicts(tmp_path):
    model, arrays = _weighted_case(tmp_path, "sparse_categorical_crossentropy", ", class_weight: {1: 2}", sample_weight=True)
    with pytest.raises(kerspec.KerspecError, match="class_weight and sample weights in the data cannot be used together"):
        model.fit()
    np.savez(tmp_path / "train.npz", **{**arrays, "sample_weight": -arrays["sample_weight"]})
    with pytest.raises(DataError, match="key 'sample_weight' holds .* at index \\[0\\]; sample weights must be finite and non-negative"):
        model.dataset("train")
    np.savez(tmp_path / "train.npz", **{**arrays, "sample_weight": arrays["sample_weight"][:5]})
    with pytest.raises(DataError, match=r"key 'sample_weight' has shape \(5,\)"):
        model.dataset("train")


def test_predict_from_several_threads_at_once():
    """Calls that overlap never share buffers: each thread gets its own inputs' outputs."""
    from concurrent.futures import ThreadPoolExecutor

    model = kerspec.from_yaml(SMALL_CNN)
    rng = np.random.default_rng(0)
    inputs = [rng.random((64, 8, 8, 1), dtype=np.float32) for _ in range(4)]
    expected = [model.predict(x, batch_size=16)["y"] for x in inputs]

    def run(index):
        return all(
            np.array_equal(model.predict(inputs[index], batch_size=16)["y"], expected[index])
            for _ in range(20)
        )

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(4)))
