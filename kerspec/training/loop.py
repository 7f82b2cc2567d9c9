"""The loops: fit over epochs and batches, evaluate, predict. Batches are index ranges into the
whole arrays, gathered once per batch; nothing loops over samples."""

from __future__ import annotations

import math

import numpy as np

from kerspec.errors import RunError
from kerspec.layers import Context
from kerspec.training.callbacks import Callback, History
from kerspec.training.data import Dataset
from kerspec.training.trainer import Trainer


def split_validation(data: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """Keras's `validation_split`: the last `fraction` of the samples, taken before shuffling."""
    split_at = int(math.floor(data.samples * (1.0 - fraction)))
    if split_at == 0 or split_at == data.samples:
        raise RunError(
            f"validation_split={fraction} leaves no samples for "
            f"{'training' if split_at == 0 else 'validation'} out of {data.samples}"
        )

    def part(sl: slice) -> Dataset:
        y = None if data.y is None else {k: v[sl] for k, v in data.y.items()}
        return Dataset({k: v[sl] for k, v in data.x.items()}, y, data.source)

    return part(slice(0, split_at)), part(slice(split_at, None))


def _batches(n: int, batch_size: int, order: np.ndarray | None):
    for start in range(0, n, batch_size):
        if order is None:
            yield slice(start, min(start + batch_size, n))
        else:
            yield order[start : start + batch_size]


def _take(arrays: dict[str, np.ndarray], names: list[str], index) -> list[np.ndarray]:
    return [arrays[name][index] for name in names]


def fit(
    trainer: Trainer,
    train: Dataset,
    *,
    inputs: list[str],
    outputs: list[str],
    epochs: int,
    batch_size: int,
    shuffle: bool,
    shuffle_rng: np.random.Generator,
    ctx: Context,
    validation: Dataset | None = None,
    callbacks: list[Callback] = (),
    initial_epoch: int = 0,
) -> History:
    history = History()
    every = [*callbacks, history]
    steps = math.ceil(train.samples / batch_size)
    for callback in every:
        callback.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for callback in every:
            callback.on_epoch_begin(epoch, steps)
        trainer.reset()
        order = shuffle_rng.permutation(train.samples) if shuffle else None
        for batch, index in enumerate(_batches(train.samples, batch_size, order)):
            try:
                trainer.train_step(_take(train.x, inputs, index), _take(train.y, outputs, index), ctx)
            except RunError as err:
                raise RunError(f"epoch {epoch + 1}, batch {batch + 1}: {err.message}") from None
            logs = trainer.results()
            for callback in every:
                callback.on_train_batch_end(batch, logs)
        logs = trainer.results()
        if validation is not None:
            scores = evaluate(trainer, validation, inputs=inputs, outputs=outputs, batch_size=batch_size, ctx=ctx)
            logs.update({f"val_{k}": v for k, v in scores.items()})
        for callback in every:
            callback.on_epoch_end(epoch, logs)
    for callback in every:
        callback.on_train_end(history.last())
    return history


def evaluate(
    trainer: Trainer,
    data: Dataset,
    *,
    inputs: list[str],
    outputs: list[str],
    batch_size: int,
    ctx: Context,
) -> dict[str, float]:
    training, ctx.training = ctx.training, False
    trainer.reset()
    try:
        for index in _batches(data.samples, batch_size, None):
            trainer.test_step(_take(data.x, inputs, index), _take(data.y, outputs, index), ctx)
        return trainer.results()
    finally:
        ctx.training = training
