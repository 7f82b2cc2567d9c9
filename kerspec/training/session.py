"""One fit as the loop runs it and its callbacks see it: the `Session` (trainer, random
generators, callbacks, and the checkpoint that holds them all), the `Callback` hooks the loop
calls, and `History`. Kept apart from the loop and from the callback catalog so that both import
it and it imports neither."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from kerspec.errors import first_error


class TrainerState(Protocol):
    """What a session saves and restores of the trainer (a training.trainer.Trainer). Named by
    what it holds, not imported: the trainer imports the graph, and the spec imports the callback
    catalog that imports this module."""

    params: dict[str, dict[str, np.ndarray]]
    opt_state: dict[str, np.ndarray]


class NoiseSource(Protocol):
    """The context's generator of dropout and noise draws (a layers.Context)."""

    rng: np.random.Generator

CHECKPOINT_FORMAT = 1
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


@dataclass
class Session:
    """One fit: what the callbacks see, and what a checkpoint saves and restores.

    `epoch` counts finished epochs. `spec_callbacks` (the spec's `fit.callbacks`, in order) and
    `history` are checkpointed with their state; other callbacks (progress) are not.
    """

    trainer: TrainerState
    ctx: NoiseSource
    shuffle_rng: np.random.Generator
    epochs: int
    history: History = field(default_factory=History)
    spec_callbacks: list[Callback] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)
    epoch: int = 0
    stop_training: bool = False
    interrupt: bool = False
    signum: int = signal.SIGINT
    status: str = "running"
    notes: list[str] = field(default_factory=list)
    blas_threads: int = 0  # the run's BLAS thread count (0: BLAS's own), kept by checkpoints

    @property
    def learning_rate(self) -> float:
        return float(self.trainer.opt_state["learning_rate"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        state = self.trainer.opt_state
        state["learning_rate"] = np.asarray(value, state["learning_rate"].dtype)

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self) -> Arrays:
        """Everything needed to carry on from here, as arrays for one .npz file."""
        arrays: Arrays = {}
        for owner, weights in self.trainer.params.items():
            for name, weight in weights.items():
                arrays[f"weights/{owner}/{name}"] = weight.copy()
        for key, value in self.trainer.opt_state.items():
            arrays[f"optimizer/{key}"] = np.array(value, copy=True)
        states = {}
        for key, callback in self.stateful():
            values, callback_arrays = callback.state()
            states[key] = values
            for name, array in callback_arrays.items():
                arrays[f"callbacks/{key}/{name}"] = array
        meta = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "stop_training": self.stop_training,
            "shuffle_rng": self.shuffle_rng.bit_generator.state,
            "noise_rng": self.ctx.rng.bit_generator.state,
            "callbacks": states,
            "blas_threads": self.blas_threads,
        }
        arrays["meta"] = np.array(json.dumps(meta))
        return arrays

    def restore(self, arrays: Arrays) -> None:
        meta = json.loads(str(arrays["meta"]))
        for owner, weights in self.trainer.params.items():
            for name, weight in weights.items():
                weight[...] = arrays[f"weights/{owner}/{name}"]
        state = self.trainer.opt_state
        for key in list(state):
            state[key] = np.array(arrays[f"optimizer/{key}"], copy=True)
        for key, callback in self.stateful():
            prefix = f"callbacks/{key}/"
            own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            if key in meta["callbacks"]:
                callback.restore(meta["callbacks"][key], own)
        self.shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        self.ctx.rng.bit_generator.state = meta["noise_rng"]
        self.epoch = meta["epoch"]
        self.stop_training = meta["stop_training"]
        self.blas_threads = meta.get("blas_threads", 0)

    def stateful(self) -> Iterator[tuple[str, Callback]]:
        yield "history", self.history
        for index, callback in enumerate(self.spec_callbacks):
            yield f"{index}-{type(callback).__name__}", callback
