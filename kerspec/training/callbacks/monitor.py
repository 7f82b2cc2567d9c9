"""Callbacks that watch a logged value (`monitor`) and act when it stops improving, as
Keras's MonitorCallback decides: what improving means in each `mode`."""

from __future__ import annotations

from typing import Literal

from kerspec.errors import RunError
from kerspec.training.callbacks.base import CallbackConfig
from kerspec.training.session import Callback

Mode = Literal["auto", "min", "max"]
Best = float | None


class MonitorConfig(CallbackConfig):
    monitor: str = "val_loss"
    mode: Mode = "auto"


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
