"""Callbacks behave as Keras's: the same sequence of monitored values makes EarlyStopping stop at
the same epoch and ReduceLROnPlateau set the same rates; CSVLogger writes Keras's file; in real
training EarlyStopping restores the best epoch's weights and ModelCheckpoint keeps the best;
a callback monitoring a name the model does not log is refused at its line."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

import kerspec
from kerspec.folders import OutputFolder
from kerspec.training.callbacks import CALLBACKS, Callback
from kerspec.training.loop import Session

SEQUENCES = [
    [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.87, 0.88, 0.7],
    [0.5, 0.5, 0.5, 0.49995, 0.4, 0.41, 0.399, 0.42, 0.43, 0.44],
    [3.0, 2.0, 2.5, 2.4, 2.3, 2.2, 2.1, 2.05, 2.04, 2.03],
]


class FakeKerasModel:
    def __init__(self, optimizer=None):
        self.stop_training = False
        self.optimizer = optimizer
        self.epoch = 0

    def get_weights(self):
        return [np.array(self.epoch)]

    def set_weights(self, weights):
        self.restored = int(weights[0])


def fake_session(learning_rate: float = 0.1):
    params = {"layer": {"kernel": np.zeros(1, np.float32)}}
    trainer = SimpleNamespace(
        params=params, opt_state={"learning_rate": np.asarray(learning_rate, np.float32)}
    )
    session = Session(trainer, ctx=None, shuffle_rng=None, epochs=100)
    return session


def run_ours(config: dict, values: list[float], monitor: str = "val_loss"):
    callback = CALLBACKS.create(config).build()
    session = fake_session()
    callback.bind(session)
    callback.on_train_begin()
    stopped, rates = None, []
    for epoch, value in enumerate(values):
        session.trainer.params["layer"]["kernel"][...] = epoch
        callback.on_epoch_begin(epoch, 1)
        logs = {monitor: value}
        callback.on_epoch_end(epoch, logs)
        rates.append(logs.get("learning_rate"))
        if session.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    return callback, session, stopped, rates


def run_keras(callback, values: list[float], monitor: str = "val_loss", optimizer=None):
    model = FakeKerasModel(optimizer)
    callback.set_model(model)
    callback.on_train_begin()
    stopped, rates = None, []
    for epoch, value in enumerate(values):
        model.epoch = epoch
        callback.on_epoch_begin(epoch)
        logs = {monitor: value}
        callback.on_epoch_end(epoch, logs)
        rates.append(logs.get("learning_rate"))
        if model.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    return model, stopped, rates


EARLY = [
    {},
    {"patience": 2},
    {"patience": 2, "min_delta": 0.02},
    {"patience": 1, "restore_best_weights": True},
    {"patience": 3, "restore_best_weights": True, "start_from_epoch": 2},
    {"patience": 2, "baseline": 0.85},
    {"patience": 2, "mode": "max"},
]


@pytest.mark.parametrize("values", SEQUENCES)
@pytest.mark.parametrize("arguments", EARLY)
def test_early_stopping_stops_where_keras_does(arguments, values):
    keras = pytest.importorskip("keras")
    _, session, our_stop, _ = run_ours({"type": "EarlyStopping", **arguments}, values)
    model, their_stop, _ = run_keras(keras.callbacks.EarlyStopping(**arguments), values)
    assert our_stop == their_stop
    if arguments.get("restore_best_weights") and hasattr(model, "restored"):
        assert session.trainer.params["layer"]["kernel"][0] == model.restored


REDUCE = [
    {"patience": 1},
    {"patience": 2, "factor": 0.5, "cooldown": 1},
    {"patience": 1, "factor": 0.5, "min_lr": 0.03, "min_delta": 0.05},
    {"patience": 0, "factor": 0.2},
    {"patience": 1, "mode": "max", "factor": 0.3},
]


@pytest.mark.parametrize("values", SEQUENCES)
@pytest.mark.parametrize("arguments", REDUCE)
def test_reduce_lr_on_plateau_sets_the_rates_keras_does(arguments, values):
    keras = pytest.importorskip("keras")
    _, session, _, ours = run_ours({"type": "ReduceLROnPlateau", **arguments}, values)
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    _, _, theirs = run_keras(
        keras.callbacks.ReduceLROnPlateau(**arguments), values, optimizer=optimizer
    )
    assert ours == theirs
    assert session.learning_rate == float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_csv_logger_writes_keras_s_file(tmp_path):
    keras = pytest.importorskip("keras")
    logs = [{"loss": 0.5, "accuracy": 0.25}, {"loss": 0.25, "accuracy": 0.5}]
    ours = CALLBACKS.create({"type": "CSVLogger", "filename": "ours.csv", "separator": ";"})
    ours = ours.build(OutputFolder(tmp_path))
    theirs = keras.callbacks.CSVLogger(str(tmp_path / "theirs.csv"), separator=";")
    for callback in (ours, theirs):
        callback.on_train_begin()
        for epoch, row in enumerate(logs):
            callback.on_epoch_end(epoch, dict(row))
        callback.on_train_end()
    theirs_text = (tmp_path / "theirs.csv").read_text().replace("\r\n", "\n")
    assert (tmp_path / "ours.csv").read_text() == theirs_text


def test_csv_logger_appends(tmp_path):
    (tmp_path / "log.csv").write_text("epoch,loss\n0,1.0\n")
    callback = CALLBACKS.create({"type": "CSVLogger", "filename": "log.csv", "append": True})
    callback = callback.build(OutputFolder(tmp_path))
    callback.on_train_begin()
    callback.on_epoch_end(1, {"loss": 0.5})
    # As Keras: no second header, and val_ columns added when the logs have none.
    assert (tmp_path / "log.csv").read_text() == "epoch,loss\n0,1.0\n1,0.5,NA\n"


# -- in real training ------------------------------------------------------------------------------

SPEC = """\
name: callbacks
seed: 4
layers:
  - {{type: Input, shape: [5], name: features}}
  - {{type: Dense, units: 16, activation: relu, name: hidden}}
  - {{type: Dense, units: 3, activation: softmax, name: label}}
compile:
  optimizer: {{type: adam, learning_rate: 0.05}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: train.npz
  validation: valid.npz
fit:
  epochs: {epochs}
  batch_size: 8
  callbacks:
{callbacks}
"""


def write(folder: Path, callbacks: str, epochs: int = 30) -> Path:
    rng = np.random.default_rng(2)
    for name, samples in (("train", 48), ("valid", 40)):
        x = rng.normal(size=(samples, 5)).astype(np.float32)
        # Noisy labels: the model overfits, so val_loss turns up after a few epochs.
        y = np.where(
            rng.random(samples) < 0.35, rng.integers(0, 3, samples), (x[:, 0] > 0) + (x[:, 1] > 0)
        )
        np.savez(folder / f"{name}.npz", x=x, y=y)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(epochs=epochs, callbacks=callbacks))
    return spec


class Snapshots(Callback):
    def __init__(self, model):
        self.model, self.weights = model, []

    def on_epoch_end(self, epoch, logs):
        self.weights.append({k: v.copy() for k, v in self.model.params["hidden"].items()})


def test_early_stopping_in_training_restores_the_best_epoch(tmp_path):
    keras = pytest.importorskip("keras")
    arguments = {"monitor": "val_loss", "patience": 3, "restore_best_weights": True}
    spec = write(
        tmp_path,
        "    - {type: EarlyStopping, monitor: val_loss, patience: 3, restore_best_weights: true}",
    )
    model = kerspec.load(spec)
    snapshots = Snapshots(model)
    history = model.fit(callbacks=[snapshots])
    values = history.history["val_loss"]
    assert len(values) < 30  # it stopped
    _, their_stop, _ = run_keras(keras.callbacks.EarlyStopping(**arguments), values)
    assert their_stop == len(values) - 1
    best = int(np.argmin(values))
    for name, weight in model.params["hidden"].items():
        np.testing.assert_array_equal(weight, snapshots.weights[best][name])


def test_model_checkpoint_keeps_the_best_epoch(tmp_path):
    spec = write(
        tmp_path,
        "    - {type: ModelCheckpoint, monitor: val_accuracy, save_best_only: true}\n"
        "    - {type: ModelCheckpoint, filepath: 'every/e{epoch:02d}-{val_loss:.2f}.npz'}",
        epochs=6,
    )
    model = kerspec.load(spec)
    snapshots = Snapshots(model)
    run = tmp_path / "run"
    history = model.fit(callbacks=[snapshots], run_dir=run)
    accuracy = history.history["val_accuracy"]
    best = int(np.argmax(accuracy))  # the first of equals: later ones are no improvement
    saved = np.load(run / "best.npz")
    np.testing.assert_array_equal(saved["hidden/kernel"], snapshots.weights[best]["kernel"])
    names = sorted(p.name for p in (run / "every").iterdir())
    losses = history.history["val_loss"]
    assert names == [f"e{e + 1:02d}-{losses[e]:.2f}.npz" for e in range(6)]


def test_reduce_lr_on_plateau_in_training_logs_the_rate(tmp_path):
    spec = write(
        tmp_path,
        "    - {type: ReduceLROnPlateau, monitor: val_loss, patience: 1, factor: 0.5}",
        epochs=8,
    )
    history = kerspec.load(spec).fit()
    rates = history.history["learning_rate"]
    assert rates[0] == pytest.approx(0.05)
    assert min(rates) < 0.05
    assert all(b in (a, float(np.float32(a * 0.5))) for a, b in pairwise(rates))


def test_initial_epoch_starts_later(tmp_path):
    spec = write(tmp_path, "    []", epochs=5)
    model = kerspec.load(spec, ["fit.initial_epoch=3"])
    history = model.fit(run_dir=tmp_path / "run")
    assert history.epochs == [3, 4]
    lines = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["4", "5"]
    assert int(model.trainer.opt_state["iterations"]) == 2 * 6


# -- refused before training -----------------------------------------------------------------------


def test_monitoring_a_name_the_model_does_not_log_is_refused_at_its_line(tmp_path):
    spec = write(tmp_path, "    - {type: CSVLogger}\n    - {type: EarlyStopping, monitor: val_acc}")
    with pytest.raises(kerspec.KerspecError) as refused:
        kerspec.load(spec).fit()
    assert str(refused.value) == (
        f"{spec}:19:38: EarlyStopping monitors 'val_acc', which this model does not log"
        " (it logs: loss, accuracy, val_loss, val_accuracy); did you mean 'val_accuracy'?"
    )


def test_val_names_need_validation_data(tmp_path):
    spec = write(tmp_path, "    - {type: ReduceLROnPlateau}")  # monitors val_loss by default
    spec.write_text(spec.read_text().replace("  validation: valid.npz\n", ""))
    with pytest.raises(kerspec.KerspecError, match=r":17:7: ReduceLROnPlateau monitors 'val_loss'"):
        kerspec.load(spec).fit()


def test_bad_callback_arguments_are_spec_errors(tmp_path):
    spec = write(
        tmp_path,
        "    - {type: EarlyStoping}\n    - {type: ModelCheckpoint, save_weights_only: false}",
    )
    with pytest.raises(kerspec.KerspecError) as refused:
        kerspec.load(spec)
    problems = [str(p) for p in refused.value.problems]
    assert any(":18:" in p and "did you mean 'EarlyStopping'" in p for p in problems), problems
    assert any(":19:" in p and "save_weights_only" in p for p in problems), problems


def test_callback_configs_keep_keras_defaults():
    early = CALLBACKS.create("EarlyStopping")
    assert (early.monitor, early.patience, early.min_delta, early.mode) == (
        "val_loss",
        0,
        0.0,
        "auto",
    )
    reduce = CALLBACKS.create("ReduceLROnPlateau")
    assert (reduce.factor, reduce.patience, reduce.min_delta, reduce.cooldown) == (0.1, 10, 1e-4, 0)
    assert CALLBACKS.create("ModelCheckpoint").filepath == "best.npz"
    with pytest.raises(ValidationError, match="factor"):
        CALLBACKS.create({"type": "ReduceLROnPlateau", "factor": 1.5})
