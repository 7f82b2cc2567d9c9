"""EarlyStopping: stop when the monitored value has stopped improving, optionally putting the
best weights back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, NonNegativeInt

from kerspec.training.callbacks.base import CALLBACKS
from kerspec.training.callbacks.monitor import Best, MonitorCallback, MonitorConfig
from kerspec.training.session import Arrays, CallbackState

if TYPE_CHECKING:
    from kerspec.training.session import Session


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


def copy_weights(session: Session) -> Arrays:
    return {f"{o}/{n}": w.copy() for o, ws in session.trainer.params.items() for n, w in ws.items()}


def put_weights(session: Session, arrays: Arrays) -> None:
    for owner, weights in session.trainer.params.items():
        for name, weight in weights.items():
            weight[...] = arrays[f"{owner}/{name}"]


class EarlyStopping(MonitorCallback):
    class State(CallbackState):
        wait: NonNegativeInt
        stopped_epoch: NonNegativeInt
        best: Best
        best_epoch: NonNegativeInt
        has_best_weights: bool

    def check_arrays(self, state, arrays, weights):
        if not state.has_best_weights:
            return super().check_arrays(state, arrays, weights)
        return (
            None if arrays == set(weights) else "its best weights do not name the model's weights"
        )

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
            self.best_weights = copy_weights(self.session)
            self.best_epoch = epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.config.restore_best_weights:
                self.best_weights = copy_weights(self.session)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.session.stop_training = True
            self.session.notes.append(f"Epoch {epoch + 1}: early stopping")

    def on_train_end(self, logs=None):
        if self.config.restore_best_weights and self.best_weights is not None:
            put_weights(self.session, self.best_weights)
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
