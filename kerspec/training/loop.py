"""The loops: fit over epochs and batches, evaluate, predict. Batches are index ranges into the
whole arrays, gathered once per batch; nothing loops over samples.

`fit` runs a `Session`: the trainer, the random generators and the callbacks, which together are
everything a checkpoint holds. Ctrl-C and SIGTERM stop training after the current batch; the
session then goes back to the end of the last finished epoch (the state its checkpoint holds) and
`Interrupted` is raised. A non-finite loss does the same and raises a RunError (or, with
TerminateOnNaN, ends training quietly).
"""

from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager

import numpy as np

from kerspec import threads
from kerspec.errors import RunError
from kerspec.layers import Context
from kerspec.training.checkpoint import check_checkpoint
from kerspec.training.data import Dataset
from kerspec.training.session import Arrays, Callback, History, Session
from kerspec.training.trainer import NonFiniteLoss, NonFiniteWeights, Trainer


class Interrupted(RunError):
    """Training was stopped by Ctrl-C or SIGTERM; the weights are the last finished epoch's.

    `signum` is the signal that stopped it (SIGINT for a KeyboardInterrupt)."""

    def __init__(self, epochs_done: int, epochs: int, signum: int = signal.SIGINT):
        if epochs_done:
            message = f"interrupted after {epochs_done} of {epochs} epochs"
        else:
            message = f"interrupted during the first of {epochs} epochs, before any epoch finished"
        super().__init__(message)
        self.epochs_done, self.epochs, self.signum = epochs_done, epochs, signum


def split_validation(data: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """Keras's `validation_split`: the last `fraction` of the samples, taken before shuffling."""
    split_at = math.floor(data.samples * (1.0 - fraction))
    if split_at == 0 or split_at == data.samples:
        raise RunError(
            f"validation_split={fraction} leaves no samples for "
            f"{'training' if split_at == 0 else 'validation'} out of {data.samples}"
        )
    return data.subset(slice(0, split_at)), data.subset(slice(split_at, None))


def _batches(n: int, batch_size: int, order: np.ndarray | None):
    for start in range(0, n, batch_size):
        if order is None:
            yield slice(start, min(start + batch_size, n))
        else:
            yield order[start : start + batch_size]


def _take(arrays: dict[str, np.ndarray], names: list[str], index) -> list[np.ndarray]:
    return [arrays[name][index] for name in names]


def _take_weights(data: Dataset, names: list[str], index) -> list[np.ndarray | None] | None:
    if not data.sample_weight:
        return None
    return [None if name not in data.sample_weight else data.sample_weight[name][index] for name in names]


@contextmanager
def _interruptible(session: Session):
    """Ctrl-C and SIGTERM ask the loop to stop after the current batch; a second Ctrl-C stops
    at once. Only the main thread can take signals, elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(signum, frame):
        if session.interrupt:
            raise KeyboardInterrupt
        session.interrupt = True
        session.signum = signum

    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    spec_callbacks: list[Callback] = (),
    initial_epoch: int = 0,
    directions: dict[str, str] | None = None,
    resume: Arrays | None = None,
    resume_file: str = "checkpoint",
) -> History:
    """Train from `initial_epoch` (or the checkpoint `resume`) up to `epochs`.

    Callbacks run in this order: the spec's, then `callbacks` (progress, the run folder), then
    the history; every callback's `on_epoch_end` sees the logs the ones before it added to.
    A checkpoint (`resume`, read from `resume_file`) is checked before any callback begins.
    """
    session = Session(
        trainer, ctx, shuffle_rng, epochs, spec_callbacks=list(spec_callbacks),
        directions=dict(directions or {}), epoch=initial_epoch,
    )
    history = session.history
    every = [*spec_callbacks, history, *callbacks]
    for callback in every:
        callback.bind(session)
    if resume is not None:
        session.blas_threads = check_checkpoint(resume, session, resume_file).blas_threads
    # The count is chosen before the first callback begins: a checkpoint written at the start
    # already holds it.
    with threads.BlasThreads(run=True, count=session.blas_threads) as blas:
        session.blas_threads = blas.count
        for callback in every:
            callback.on_train_begin()
        if resume is not None:
            session.restore(resume)
        with _interruptible(session):
            _epochs(session, train, inputs, outputs, batch_size, shuffle, validation, every)
    session.status = "stopped" if session.epoch < epochs else "finished"
    for callback in every:
        callback.on_train_end(history.last())
    return history


def _epochs(session, train, inputs, outputs, batch_size, shuffle, validation, every):
    trainer, epochs = session.trainer, session.epochs
    steps = math.ceil(train.samples / batch_size)
    terminate_on_nan = any(getattr(c, "terminates", False) for c in every)
    while session.epoch < epochs and not session.stop_training:
        epoch = session.epoch
        good = session.checkpoint()
        try:
            logs = _epoch(session, train, inputs, outputs, batch_size, shuffle, validation, every, steps)
            _check_finite(trainer)
        except NonFiniteLoss as err:
            session.restore(good)
            message = (
                f"epoch {epoch + 1}, {err.what.format(batch=err.batch + 1)}; "
                + (f"kept the weights of epoch {epoch}, the last good one" if epoch else
                   "kept the initial weights")
            )
            if terminate_on_nan:
                session.notes.append(f"TerminateOnNaN: {message}")
                break
            session.status = "failed"
            for callback in every:
                callback.on_train_stopped("failed", message)
            raise RunError(message) from None
        except KeyboardInterrupt:
            session.restore(good)
            session.status = "interrupted"
            message = f"interrupted during epoch {epoch + 1}"
            for callback in every:
                callback.on_train_stopped("interrupted", message)
            raise Interrupted(session.epoch, epochs, session.signum) from None
        session.epoch = epoch + 1
        for callback in every:
            callback.on_epoch_end(epoch, logs)
        if session.interrupt:  # asked during validation or the callbacks: the epoch is done
            session.status = "interrupted"
            for callback in every:
                callback.on_train_stopped("interrupted", f"interrupted after epoch {epoch + 1}")
            raise Interrupted(session.epoch, epochs, session.signum)


def _check_finite(trainer: Trainer) -> None:
    for owner, weights in trainer.params.items():
        for name, weight in weights.items():
            if not np.isfinite(weight).all():
                raise NonFiniteWeights(f"{owner}/{name}")


def _epoch(session, train, inputs, outputs, batch_size, shuffle, validation, every, steps):
    trainer, ctx, epoch = session.trainer, session.ctx, session.epoch
    for callback in every:
        callback.on_epoch_begin(epoch, steps)
    trainer.reset()
    order = session.shuffle_rng.permutation(train.samples) if shuffle else None
    for batch, index in enumerate(_batches(train.samples, batch_size, order)):
        xs, ys = _take(train.x, inputs, index), _take(train.y, outputs, index)
        weights = _take_weights(train, outputs, index)
        try:
            trainer.train_step(xs, ys, ctx, weights)
        except NonFiniteLoss as err:
            err.batch = batch
            raise
        except RunError as err:
            raise RunError(f"epoch {epoch + 1}, batch {batch + 1}: {err.message}") from None
        threads.after_batch()
        logs = trainer.results()
        for callback in every:
            callback.on_train_batch_end(batch, logs)
        if session.interrupt:
            raise KeyboardInterrupt
    logs = trainer.results()
    if validation is not None:
        scores = evaluate(trainer, validation, inputs=inputs, outputs=outputs, batch_size=batch_size, ctx=ctx)
        logs.update({f"val_{k}": v for k, v in scores.items()})
    return logs


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
            xs, ys = _take(data.x, inputs, index), _take(data.y, outputs, index)
            trainer.test_step(xs, ys, ctx, _take_weights(data, outputs, index))
            threads.after_batch()
        return trainer.results()
    finally:
        ctx.training = training
