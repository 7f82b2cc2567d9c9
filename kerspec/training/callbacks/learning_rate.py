"""Callbacks that set the learning rate: ReduceLROnPlateau and LearningRateScheduler."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, NonNegativeInt

from kerspec.training.callbacks.base import CALLBACKS, CallbackConfig
from kerspec.training.callbacks.monitor import Best, MonitorCallback, MonitorConfig
from kerspec.training.schedules import SCHEDULES
from kerspec.training.session import Callback, CallbackState


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


class ReduceLROnPlateau(MonitorCallback):
    class State(CallbackState):
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
