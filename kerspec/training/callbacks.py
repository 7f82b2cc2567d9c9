"""Callbacks: hooks the training loop calls, as Keras's do. Progress display is one of them."""

from __future__ import annotations


class Callback:
    """Every hook does nothing; override the ones you need. `logs` maps history names to values."""

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, steps: int) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...


class History(Callback):
    """One list per logged name, one value per finished epoch."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def last(self) -> dict[str, float]:
        return {key: values[-1] for key, values in self.history.items()}
