"""Callbacks: hooks the training loop calls, as Keras's do. Progress display is one of them.

The spec's `fit.callbacks` entries are validated configurations in the CALLBACKS registry, with
Keras's names, arguments and defaults (`{type: EarlyStopping, monitor: val_loss, patience: 3}`);
`config.build(folder)` makes the callback that runs. A callback reaches the training through
`self.session` (the trainer's weights and optimizer state, `stop_training`), and hands its
state to checkpoints through `state()` / `restore()`, so that a resumed run carries on exactly
where the interrupted one was (an EarlyStopping's wait and best value, its best weights).
"""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, field_validator

from kerspec import io
from kerspec.errors import RunError, first_error
from kerspec.folders import OutputFolder
from kerspec.paths import FilePath, FilePattern, check_relative_path
from kerspec.registry import Item, Registry
from kerspec.training.schedules import SCHEDULES

if TYPE_CHECKING:
    from kerspec.training.loop import Session

CALLBACKS = Registry("callback")

Arrays = dict[str, np.ndarray]
# An appended CSVLogger log is read back whole, and kept in every checkpoint.
MAX_LOG_BYTES = 64 * 1024 * 1024


class Callback:
    """Every hook does nothing; override the ones you need. `logs` maps history names to values."""

    session: Session | None = None

    def bind(self, session: Session) -> None:
        self.session = session

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, steps: int) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def on_train_stopped(self, status: str, message: str) -> None:
        """Training ended early: `interrupted` (Ctrl-C, SIGTERM) or `failed` (a non-finite loss).
        The weights are those of the last finished epoch."""

    # -- checkpoints: plain values (JSON) and arrays ----------------------------------------------

    # The schema of state()'s values, which a checkpoint read back is held to.
    State: ClassVar[type[BaseModel]]

    def state(self) -> tuple[dict[str, Any], Arrays]:
        return {}, {}

    def restore(self, values: dict[str, Any], arrays: Arrays) -> None: ...

    def check_state(self, values: dict[str, Any], arrays: set[str], weights: list[str]) -> str | None:
        """What is wrong with a checkpoint's state for this callback (`arrays`: the names of its
        arrays; `weights`: the model's `LAYER/WEIGHT` names), or None."""
        try:
            state = self.State.model_validate(values)
        except ValidationError as err:
            return first_error(err)
        return self.check_arrays(state, arrays, weights)

    def check_arrays(self, state: BaseModel, arrays: set[str], weights: list[str]) -> str | None:
        return f"unexpected arrays {', '.join(sorted(arrays)[:3])}" if arrays else None


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


Callback.State = _State
Best = float | None


class History(Callback):
    """One list per logged name, one value per finished epoch."""

    class State(_State):
        epochs: list[NonNegativeInt]
        history: dict[str, list[float | None]]

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def last(self) -> dict[str, float]:
        return {key: values[-1] for key, values in self.history.items()}

    def state(self):
        return {"epochs": self.epochs, "history": self.history}, {}

    def restore(self, values, arrays):
        self.epochs = list(values["epochs"])
        self.history = {k: list(v) for k, v in values["history"].items()}


# -- configurations ---------------------------------------------------------------------------


Mode = Literal["auto", "min", "max"]


class CallbackConfig(Item):
    """Base of every `fit.callbacks` entry. `verbose` is accepted, as in Keras, and does nothing:
    kerspec's progress display already reports what the callbacks do."""

    verbose: int = 0

    def uses_learning_rate(self) -> bool:
        """Whether it sets the learning rate (then the optimizer's must be a number)."""
        return False

    def build(self, folder: OutputFolder | None = None) -> Callback:
        """The callback; files it writes go to `folder` (the run folder; by default the current
        folder)."""
        raise NotImplementedError

    def files(self) -> list[str]:
        """The files it writes whose names are known before training."""
        return []


class MonitorConfig(CallbackConfig):
    monitor: str = "val_loss"
    mode: Mode = "auto"


@CALLBACKS.register("EarlyStopping", "early_stopping")
class EarlyStoppingConfig(MonitorConfig):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    type: Literal["EarlyStopping"] = "EarlyStopping"
    min_delta: float = 0.0
    patience: Annotated[int, Field(ge=0)] = 0
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: Annotated[int, Field(ge=0)] = 0

    def build(self, folder=None):
        return EarlyStopping(self)


@CALLBACKS.register("ModelCheckpoint", "model_checkpoint")
class ModelCheckpointConfig(MonitorConfig):
    """Save the weights after every epoch (or only when `monitor` improved, with
    `save_best_only`) to `filepath`, relative to the run folder; `{epoch}` and logged names may
    be formatted in: `weights-{epoch:02d}.npz`."""

    type: Literal["ModelCheckpoint"] = "ModelCheckpoint"
    filepath: FilePattern = "best.npz"
    save_best_only: bool = False
    save_weights_only: Literal[True] = True
    save_freq: Literal["epoch"] = "epoch"
    initial_value_threshold: float | None = None

    @field_validator("filepath")
    @classmethod
    def _npz(cls, value: str) -> str:
        if not value.endswith(".npz"):
            raise ValueError(f"kerspec saves weights as .npz. Received: filepath={value!r}")
        return value

    def build(self, folder=None):
        return ModelCheckpoint(self, folder)


@CALLBACKS.register("ReduceLROnPlateau", "reduce_lr_on_plateau")
class ReduceLROnPlateauConfig(MonitorConfig):
    """Multiply the learning rate by `factor` when `monitor` has not improved for `patience`
    epochs, then wait `cooldown` epochs; never below `min_lr` (factor 0 drops it to `min_lr`)."""

    type: Literal["ReduceLROnPlateau"] = "ReduceLROnPlateau"
    factor: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    patience: Annotated[int, Field(ge=0)] = 10
    min_delta: float = 1e-4
    cooldown: Annotated[int, Field(ge=0)] = 0
    min_lr: Annotated[float, Field(ge=0.0)] = 0.0

    def uses_learning_rate(self):
        return True

    def build(self, folder=None):
        return ReduceLROnPlateau(self)


@CALLBACKS.register("LearningRateScheduler", "learning_rate_scheduler")
class LearningRateSchedulerConfig(CallbackConfig):
    """Set the learning rate at the start of every epoch to `schedule(epoch)` (0-based), a named
    schedule: `{type: exponential_decay, initial_learning_rate: 0.1, decay_steps: 1, ...}`."""

    type: Literal["LearningRateScheduler"] = "LearningRateScheduler"
    schedule: SCHEDULES.ref()

    def uses_learning_rate(self):
        return True

    def build(self, folder=None):
        return LearningRateScheduler(self)


@CALLBACKS.register("CSVLogger", "csv_logger")
class CSVLoggerConfig(CallbackConfig):
    """Keras's epoch log as CSV in `filename` (relative to the run folder): a 0-based `epoch`
    column and the logged names in sorted order."""

    type: Literal["CSVLogger"] = "CSVLogger"
    filename: FilePath = "training.log"
    # Part of the file's content: only the usual separators, never a quote or a line break.
    separator: Annotated[Literal[",", ";", "\t", "|", " "], Field(json_schema_extra={"x-kerspec-path": "content"})] = ","
    append: bool = False

    def build(self, folder=None):
        return CSVLogger(self, folder)

    def files(self):
        return [self.filename]


@CALLBACKS.register("TerminateOnNaN", "terminate_on_nan")
class TerminateOnNaNConfig(CallbackConfig):
    """End training without an error at the first non-finite loss (else kerspec stops with an
    error); the weights of the last finished epoch are kept. `raise_error: true` makes it an
    error again."""

    type: Literal["TerminateOnNaN"] = "TerminateOnNaN"
    raise_error: bool = False

    def build(self, folder=None):
        return TerminateOnNaN(self)


# -- the callbacks ----------------------------------------------------------------------------


def _weights(session: Session) -> Arrays:
    return {f"{o}/{n}": w.copy() for o, ws in session.trainer.params.items() for n, w in ws.items()}


def _set_weights(session: Session, arrays: Arrays) -> None:
    for owner, weights in session.trainer.params.items():
        for name, weight in weights.items():
            weight[...] = arrays[f"{owner}/{name}"]


class MonitorCallback(Callback):
    """Keras's MonitorCallback: an improvement is `value + min_delta < best` when minimising
    (`value - min_delta > best` when maximising); mode `auto` minimises losses and maximises
    metrics that go up (accuracy, precision, recall, auc)."""

    def __init__(self, config: MonitorConfig, min_delta: float = 0.0):
        self.config = config
        self.monitor = config.monitor
        self.min_delta = abs(min_delta)
        self.best: float | None = None
        self._minimise: bool | None = None

    def _direction(self) -> bool:
        if self._minimise is None:
            mode = self.config.mode
            if mode == "auto":
                directions = self.session.directions if self.session else {}
                mode = directions.get(self.monitor) or monitor_direction(self.monitor)
            if mode is None:
                raise RunError(
                    f"{type(self).__name__} cannot tell whether {self.monitor!r} should go up or "
                    "down; give mode: min or mode: max"
                )
            self._minimise = mode == "min"
        return self._minimise

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self._direction():
            return value + self.min_delta < reference
        return value - self.min_delta > reference


def monitor_direction(name: str) -> str | None:
    """'min' or 'max' for a logged name when its meaning is known from the name alone."""
    base = name.removeprefix("val_")
    if base == "loss" or base.endswith("_loss") or base == "learning_rate":
        return "min"
    return None


class EarlyStopping(MonitorCallback):
    class State(_State):
        wait: NonNegativeInt
        stopped_epoch: NonNegativeInt
        best: Best
        best_epoch: NonNegativeInt
        has_best_weights: bool

    def check_arrays(self, state, arrays, weights):
        if not state.has_best_weights:
            return super().check_arrays(state, arrays, weights)
        return None if arrays == set(weights) else "its best weights do not name the model's weights"

    def __init__(self, config: EarlyStoppingConfig):
        super().__init__(config, config.min_delta)
        self.patience = config.patience
        self.baseline = config.baseline
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights: Arrays | None = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs):
        current = logs.get(self.monitor)
        if current is None or epoch < self.config.start_from_epoch:
            return
        if self.config.restore_best_weights and self.best_weights is None:
            self.best_weights = _weights(self.session)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.config.restore_best_weights:
                self.best_weights = _weights(self.session)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.session.stop_training = True
            self.session.notes.append(f"Epoch {epoch + 1}: early stopping")

    def on_train_end(self, logs=None):
        if self.config.restore_best_weights and self.best_weights is not None:
            _set_weights(self.session, self.best_weights)
            self.session.notes.append(
                f"Restored the weights of the best epoch, {self.best_epoch + 1}"
            )

    def state(self):
        values = {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "has_best_weights": self.best_weights is not None,
        }
        return values, dict(self.best_weights or {})

    def restore(self, values, arrays):
        self.wait, self.stopped_epoch = values["wait"], values["stopped_epoch"]
        self.best, self.best_epoch = values["best"], values["best_epoch"]
        self.best_weights = (
            {k: v.copy() for k, v in arrays.items()} if values["has_best_weights"] else None
        )


class ModelCheckpoint(MonitorCallback):
    class State(_State):
        best: Best

    def __init__(self, config: ModelCheckpointConfig, folder: OutputFolder | None):
        super().__init__(config)
        self.best = config.initial_value_threshold
        self.folder = folder or OutputFolder(Path.cwd())

    def name(self, epoch: int, logs: dict) -> str:
        try:
            name = self.config.filepath.format(epoch=epoch + 1, **logs)
            return check_relative_path(name)
        except (KeyError, IndexError, ValueError) as err:
            raise RunError(
                f"ModelCheckpoint cannot format filepath {self.config.filepath!r}: {err}"
            ) from None

    def on_epoch_end(self, epoch, logs):
        if self.config.save_best_only:
            current = logs.get(self.monitor)
            if current is not None and not self._is_improvement(current, self.best):
                return
            if current is not None:
                self.best = current
        params = self.session.trainer.params
        self.folder.write(self.name(epoch, logs), lambda f: io.save_weights_to(f, params))

    def state(self):
        return {"best": self.best}, {}

    def restore(self, values, arrays):
        self.best = values["best"]


class ReduceLROnPlateau(MonitorCallback):
    class State(_State):
        best: Best
        wait: NonNegativeInt
        cooldown_counter: NonNegativeInt

    def __init__(self, config: ReduceLROnPlateauConfig):
        super().__init__(config, config.min_delta)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def on_epoch_end(self, epoch, logs):
        logs["learning_rate"] = self.session.learning_rate
        current = logs.get(self.monitor)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.config.patience:
                old = self.session.learning_rate
                if old > np.float32(self.config.min_lr):
                    new = max(old * self.config.factor, self.config.min_lr)
                    self.session.learning_rate = new
                    self.session.notes.append(
                        f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                        f"{self.session.learning_rate:.4g}"
                    )
                    self.cooldown_counter = self.config.cooldown
                    self.wait = 0

    def state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}, {}

    def restore(self, values, arrays):
        self.best, self.wait = values["best"], values["wait"]
        self.cooldown_counter = values["cooldown_counter"]


class LearningRateScheduler(Callback):
    def __init__(self, config: LearningRateSchedulerConfig):
        self.config = config

    def on_epoch_begin(self, epoch, steps):
        self.session.learning_rate = float(self.config.schedule(epoch))

    def on_epoch_end(self, epoch, logs):
        logs["learning_rate"] = self.session.learning_rate


class CSVLogger(Callback):
    """Rewritten whole (atomically) after every epoch, so the file is never half a line."""

    class State(_State):
        keys: list[str] | None
        text: str = Field(max_length=MAX_LOG_BYTES)

    def __init__(self, config: CSVLoggerConfig, folder: OutputFolder | None):
        self.config = config
        self.folder = folder or OutputFolder(Path.cwd())
        self.text = ""
        self.keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        self.keys = None
        self.text = ""
        path = self.folder.file(self.config.filename)
        if self.config.append and path.is_file():
            self.text = read_log(path)

    def on_epoch_end(self, epoch, logs):
        buffer = _io.StringIO()
        writer = csv.writer(buffer, delimiter=self.config.separator, lineterminator="\n")
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
            if not self.text:
                writer.writerow(["epoch", *self.keys])
        writer.writerow([epoch, *(_csv_value(logs.get(k, "NA")) for k in self.keys)])
        self.text += buffer.getvalue()
        self.folder.write_text(self.config.filename, self.text)

    def state(self):
        return {"keys": self.keys, "text": self.text}, {}

    def restore(self, values, arrays):
        self.keys, self.text = values["keys"], values["text"]


def read_log(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_LOG_BYTES:
            raise RunError(f"CSVLogger appends to files of at most {MAX_LOG_BYTES:,} bytes", str(path))
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"CSVLogger cannot append to it: {err}", str(path)) from None


def _csv_value(value) -> str:
    return value if isinstance(value, str) else repr(float(value))


class TerminateOnNaN(Callback):
    """The training loop checks every batch's loss; this makes a non-finite one end training
    quietly instead of with an error (unless `raise_error`)."""

    def __init__(self, config: TerminateOnNaNConfig):
        self.config = config

    @property
    def terminates(self) -> bool:
        return not self.config.raise_error
