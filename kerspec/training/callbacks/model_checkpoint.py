"""ModelCheckpoint: save the weights after every epoch, or when the monitored value improved."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator

from kerspec import io
from kerspec.errors import RunError
from kerspec.folders import OutputFolder
from kerspec.paths import FilePattern, check_relative_path
from kerspec.training.callbacks.base import CALLBACKS
from kerspec.training.callbacks.monitor import Best, MonitorCallback, MonitorConfig
from kerspec.training.session import CallbackState


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


class ModelCheckpoint(MonitorCallback):
    class State(CallbackState):
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
