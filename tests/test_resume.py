"""Checkpoints and --resume: a run stopped after any batch and resumed ends with the weights of
an uninterrupted run, bit for bit; Ctrl-C (a real SIGINT) stops after the batch and says how to
resume; a changed spec is refused with the difference named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import kerspec
from kerspec.cli import app
from kerspec.errors import KerspecError, RunError
from kerspec.training.callbacks import Callback
from kerspec.training.loop import Interrupted

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
name: resumable
seed: 11
layers:
  - {{type: Input, shape: [6], name: features}}
  - {{type: Dense, units: 12, activation: relu, name: hidden}}
  - {{type: Dropout, rate: 0.3}}
  - {{type: Dense, units: 3, activation: softmax, name: label}}
compile:
  optimizer: {{type: nadam, learning_rate: 0.01}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: train.npz
fit:
  epochs: {epochs}
  batch_size: 16
  validation_split: 0.25
  callbacks:
    - {{type: EarlyStopping, monitor: val_loss, patience: 50, restore_best_weights: true}}
    - {{type: ReduceLROnPlateau, monitor: loss, patience: 1, factor: 0.5, min_delta: 0.01}}
    - {{type: CSVLogger, filename: log.csv}}
"""


def write_spec(folder: Path, epochs: int = 6, samples: int = 96) -> Path:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(samples, 6)).astype(np.float32)
    np.savez(folder / "train.npz", x=x, y=(x[:, 0] > 0).astype(int) + (x[:, 1] > 1))
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(epochs=epochs))
    return spec


def weights(model) -> dict[str, np.ndarray]:
    return {f"{o}/{n}": w.copy() for o, ws in model.params.items() for n, w in ws.items()}


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        np.testing.assert_array_equal(value, b[key], err_msg=key)


class InterruptAt(Callback):
    """Raises KeyboardInterrupt after the given batch of the given epoch (0-based), as Ctrl-C."""

    def __init__(self, epoch: int, batch: int):
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, steps):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


@pytest.fixture
def spec(tmp_path) -> Path:
    return write_spec(tmp_path)


@pytest.fixture
def uninterrupted(spec, tmp_path):
    model = kerspec.load(spec)
    history = model.fit(run_dir=tmp_path / "whole")
    return model, history


@pytest.mark.parametrize("at", [(0, 1), (2, 0), (3, 3), (5, 2)])
def test_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(spec, tmp_path, uninterrupted, at):
    whole, history = uninterrupted
    run = tmp_path / "run"
    with pytest.raises(Interrupted) as stopped:
        kerspec.load(spec).fit(run_dir=run, callbacks=[InterruptAt(*at)])
    assert stopped.value.epochs_done == at[0]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_done"] == at[0]

    resumed = kerspec.load(spec)
    resumed_history = resumed.fit(run_dir=run, resume=True)
    assert_identical(weights(resumed), weights(whole))
    assert resumed_history.history == history.history
    assert resumed_history.epochs == list(range(6))
    for name in ("history.csv", "log.csv"):
        assert (run / name).read_text() == (tmp_path / "whole" / name).read_text()
    # The checkpoint holds the optimizer state, with the learning rate ReduceLROnPlateau set.
    saved = np.load(run / "checkpoint.npz")
    assert saved["optimizer/learning_rate"] == whole.trainer.opt_state["learning_rate"] < 0.01
    assert int(saved["optimizer/iterations"]) == 6 * 5  # 72 training samples in batches of 16


def test_checkpoint_holds_everything_resume_needs(spec, tmp_path, uninterrupted):
    saved = np.load(tmp_path / "whole" / "checkpoint.npz")
    meta = json.loads(str(saved["meta"]))
    assert meta["epoch"] == 6 and meta["stop_training"] is False
    assert {"shuffle_rng", "noise_rng"} <= set(meta)
    assert set(meta["callbacks"]) == {
        "history",
        "0-EarlyStopping",
        "1-ReduceLROnPlateau",
        "2-CSVLogger",
    }
    assert {"weights/hidden/kernel", "optimizer/iterations", "optimizer/momentum/0"} <= set(saved)
    assert "callbacks/0-EarlyStopping/hidden/kernel" in saved  # restore_best_weights


def test_a_finished_run_can_be_extended_with_more_epochs(tmp_path):
    spec = write_spec(tmp_path, epochs=6)
    whole = kerspec.load(spec)
    whole.fit(run_dir=tmp_path / "whole")
    write_spec(tmp_path, epochs=3)
    kerspec.load(spec).fit(run_dir=tmp_path / "short")
    with pytest.raises(RunError, match="has finished its 3 epochs"):
        kerspec.load(spec).fit(run_dir=tmp_path / "short", resume=True)
    write_spec(tmp_path, epochs=6)
    extended = kerspec.load(spec)
    extended.fit(run_dir=tmp_path / "short", resume=True)
    assert_identical(weights(extended), weights(whole))


def test_resume_refuses_a_changed_spec_naming_the_difference(spec, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        kerspec.load(spec).fit(run_dir=run, callbacks=[InterruptAt(1, 0)])
    changed = kerspec.load(spec, ["fit.batch_size=8", "layers.hidden.units=10"])
    with pytest.raises(RunError) as refused:
        changed.fit(run_dir=run, resume=True)
    message = str(refused.value)
    assert "fit.batch_size: 16 in the run, 8 now" in message
    assert "layers.hidden.units: 12 in the run, 10 now" in message
    assert "Only fit.epochs, name and description may change" in message
    # More epochs and another description are fine.
    kerspec.load(spec, ["fit.epochs=7", "description=longer"]).fit(run_dir=run, resume=True)


def test_cli_resume_refusal_is_located_and_exits_1(spec, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        kerspec.load(spec).fit(run_dir=run, callbacks=[InterruptAt(1, 0)])
    text = spec.read_text().replace("units: 12", "units: 14")
    spec.write_text(text)
    result = CliRunner().invoke(app, ["train", str(spec), "--resume", str(run)])
    assert result.exit_code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "units: 14" in t)
    assert result.stderr.startswith(f"{spec}:{line}:")
    assert "layers.hidden.units: 12 in the run, 14 now" in result.stderr
    assert "Traceback" not in result.output


def test_resume_needs_a_run_folder(spec, tmp_path):
    with pytest.raises(KerspecError, match="not a kerspec run folder"):
        kerspec.load(spec).fit(run_dir=tmp_path / "nothing", resume=True)


def test_a_non_finite_loss_keeps_the_last_good_epoch_without_numpy_warnings(tmp_path):
    spec = write_spec(tmp_path)
    model = kerspec.load(spec)

    class Explode(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:  # weights that overflow in the next forward pass
                model.params["hidden"]["kernel"][...] = np.float32(3e38)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RunError) as failed:
            model.fit(run_dir=tmp_path / "run", callbacks=[Explode()])
    message = str(failed.value)
    assert "epoch 3, batch 1: the loss became nan" in message
    assert "kept the weights of epoch 2, the last good one" in message
    saved = dict(np.load(tmp_path / "run" / "weights.npz"))
    assert_identical(saved, weights(model))  # the state after epoch 2, not the failed step's
    assert (saved["hidden/kernel"] == np.float32(3e38)).all()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and info["epochs_done"] == 2


def test_terminate_on_nan_ends_training_quietly(tmp_path):
    spec = write_spec(tmp_path)
    model = kerspec.load(spec, ["fit.callbacks=[{type: TerminateOnNaN}]"])

    class Explode(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 0:
                model.params["hidden"]["kernel"][...] = np.float32(3e38)

    history = model.fit(callbacks=[Explode()])
    assert history.epochs == [0]


# -- a real Ctrl-C ----------------------------------------------------------------------------------


def test_sigint_stops_after_the_batch_and_the_run_resumes_identically(tmp_path):
    spec = write_spec(tmp_path, epochs=400, samples=1200)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kerspec", "train", str(spec), "--out", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    history = run / "history.csv"
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"Resume with: kerspec train {spec} --resume {run}" in stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    done = info["epochs_done"]
    assert 2 <= done < 400
    assert len(history.read_text().splitlines()) == done + 1

    # Resume for a few epochs only (fit.epochs may grow or shrink, never below what was done).
    result = CliRunner().invoke(
        app, ["train", str(spec), "--resume", str(run), "--epochs", str(done + 2)]
    )
    assert result.exit_code == 0, result.output
    whole = kerspec.load(spec, [f"fit.epochs={done + 2}"])
    whole.fit(run_dir=tmp_path / "whole")
    saved = dict(np.load(run / "weights.npz"))
    assert_identical(saved, weights(whole))
