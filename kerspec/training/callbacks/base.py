"""The Callback base class (hooks the training loop calls, with their checkpointed state),
History, and the base of every `fit.callbacks` configuration in the CALLBACKS registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from kerspec.errors import first_error
from kerspec.folders import OutputFolder
from kerspec.registry import Item, Registry

if TYPE_CHECKING:
    from kerspec.training.loop import Session


CALLBACKS = Registry("callback")

Arrays = dict[str, np.ndarray]


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

    def check_state(
        self, values: dict[str, Any], arrays: set[str], weights: list[str]
    ) -> str | None:
        """What is wrong with a checkpoint's state for this callback (`arrays`: the names of its
        arrays; `weights`: the model's `LAYER/WEIGHT` names), or None."""
        try:
            state = self.State.model_validate(values)
        except ValidationError as err:
            return first_error(err)
        return self.check_arrays(state, arrays, weights)

    def check_arrays(self, state: BaseModel, arrays: set[str], weights: list[str]) -> str | None:
        return f"unexpected arrays {', '.join(sorted(arrays)[:3])}" if arrays else None


class CallbackState(BaseModel):
    model_config = ConfigDict(extra="forbid")


Callback.State = CallbackState


class History(Callback):
    """One list per logged name, one value per finished epoch."""

    class State(CallbackState):
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
