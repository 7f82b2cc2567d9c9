"""The base of every `fit.callbacks` configuration, and the CALLBACKS registry they are in."""

from __future__ import annotations

from kerspec.folders import OutputFolder
from kerspec.registry import Item, Registry
from kerspec.training.session import Callback

CALLBACKS = Registry("callback")


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
