"""TerminateOnNaN: a non-finite loss ends training quietly instead of with an error."""

from __future__ import annotations

from typing import Literal

from kerspec.training.callbacks.base import CALLBACKS, CallbackConfig
from kerspec.training.session import Callback


@CALLBACKS.register("TerminateOnNaN", "terminate_on_nan")
class TerminateOnNaNConfig(CallbackConfig):
    """End training without an error at the first non-finite loss (else kerspec stops with an
    error); the weights of the last finished epoch are kept. `raise_error: true` makes it an
    error again."""

    type: Literal["TerminateOnNaN"] = "TerminateOnNaN"
    raise_error: bool = False

    def build(self, folder=None):
        return TerminateOnNaN(self)


class TerminateOnNaN(Callback):
    """The training loop checks every batch's loss; this makes a non-finite one end training
    quietly instead of with an error (unless `raise_error`)."""

    def __init__(self, config: TerminateOnNaNConfig):
        self.config = config

    @property
    def terminates(self) -> bool:
        return not self.config.raise_error
