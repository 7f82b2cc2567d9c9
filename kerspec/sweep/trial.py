"""One trial: an ordinary `kerspec train` run of the spec with the trial's `--set` options.

The trial goes through the same API as the `train` command (load with overrides, RunFolder,
fit, final metrics), so its folder is a run folder like any other: `kerspec runs`, `curves`,
`evaluate` and `train --resume` work on it. It runs in a Ray worker, or in this process when a
seeds run goes without Ray.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kerspec.errors import DataError, KerspecError, RunError
from kerspec.folders import Lock
from kerspec.runs import CHECKPOINT, RunFolder

# The variables BLAS libraries read when they start; for a process where numpy is not loaded yet.
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def blas_env(cpu: float) -> dict[str, str]:
    threads = str(max(1, int(cpu)))
    return {name: threads for name in BLAS_THREADS}


class TrialFailed(Exception):
    """A user error inside a trial (bad data, a non-finite loss): the sweep records its message."""


@dataclass(frozen=True)
class TrialJob:
    """What every trial of a sweep shares."""

    spec: str  # the spec file as the worker reaches it
    folder: str  # the sweep folder; trial folders go inside it
    constants: tuple[str, ...]  # --set options every trial gets
    cpu: float
    on_cluster: bool


# Seconds to wait for the worker of a stopped or interrupted trial to exit: Ray ends it after
# Tune has moved on, and until then it holds its run folder's lock.
LOCK_WAIT = 30.0


def trial_name(index: int) -> str:
    return f"trial-{index:04d}"


def trial_number(name: str) -> int:
    """The index in a trial's name (`trial-0007`), which Tune also gives the trial's own folder."""
    number = name.removeprefix("trial-")
    if not (name.startswith("trial-") and number.isdigit()):
        raise KerspecError(f"Tune's folder for a trial is {name!r}, not trial-NNNN: was the sweep"
                           " started by an earlier kerspec? Start it afresh")
    return int(number)


def trial_folder(sweep_dir: Path, index: int) -> Path:
    return Path(sweep_dir) / trial_name(index)


def wait_for_lock(run_dir: Path, wait: float = LOCK_WAIT) -> Lock:
    """The run folder's lock, once an earlier worker of the same trial has let go of it."""
    deadline = time.monotonic() + wait
    while True:
        lock = Lock(run_dir)
        try:
            lock.acquire()
            return lock
        except RunError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def train_trial(
    spec: str | Path,
    sets: list[str],
    run_dir: Path,
    *,
    seed: int | None = None,
    report: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """Train into `run_dir` (carrying on a run already there) and return the final metrics."""
    from kerspec import api

    model = api.load(spec, sets, seed=seed)
    train_data = model.dataset("train")
    if run_dir.is_dir():
        # An earlier worker of this trial may still be in its folder, and may write its first
        # checkpoint before it lets go: look for one only once the folder is free.
        wait_for_lock(run_dir).release()
    resume = (run_dir / CHECKPOINT).is_file()
    # Without a checkpoint, an earlier worker was stopped while the run started (after run.json,
    # before the first checkpoint): the folder holds nothing to resume, only files kerspec wrote
    # then, which a fresh start replaces (`overwrite` refuses any other file there).
    # The lock is let go however the trial ends: a Ray worker may go on to run another trial.
    with _Reporting(run_dir, model, resume=resume, overwrite=not resume, final_metrics=True,
                    report=report) as folder:
        history = model.fit(train_data, run=folder)
        final = history.last()
        try:
            if model.spec.data is not None and model.spec.data.test is not None:
                final.update({f"test_{k}": v for k, v in model.evaluate().items()})
        except KerspecError:
            folder.end()  # as `kerspec train`: training ended, the test data is what failed
            raise
        folder.write_metrics(final)
    return final


class _Reporting(RunFolder):
    """A run folder that hands every finished epoch to Tune once the epoch is on disk, so that a
    trial Tune stops after this report has its folder up to this epoch."""

    def __init__(self, *args, report: Callable[[dict], None] | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.report = report

    def on_epoch_end(self, epoch, logs):
        super().on_epoch_end(epoch, logs)
        if self.report is not None:
            self.report({**logs, "epoch": epoch + 1})


def ray_trial(config: dict, job: TrialJob) -> None:
    """The Tune trainable: `config` maps each varied path to this trial's value."""
    from ray import tune

    from kerspec.sweep.load import set_option

    _limit_threads(job.cpu)
    index = trial_number(Path(tune.get_context().get_trial_dir()).name)
    sets = [*job.constants, *(set_option(k, v) for k, v in sorted(config.items()))]
    run_dir = trial_folder(Path(job.folder), index)
    try:
        _check_readable(job)
        train_trial(job.spec, sets, run_dir, report=tune.report)
    except DataError as err:
        raise TrialFailed(f"{err}{_elsewhere(job)}") from None
    except KerspecError as err:
        raise TrialFailed(str(err)) from None


def _limit_threads(cpu: float) -> None:
    """BLAS threads to the trial's CPU share, so parallel trials do not oversubscribe the cores.
    The sweep's runtime_env sets the variables for workers Ray starts; threadpoolctl also limits
    a BLAS already loaded."""
    os.environ.update(blas_env(cpu))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=max(1, int(cpu)), user_api="blas")


def _check_readable(job: TrialJob) -> None:
    """On another machine the paths of the driver may not exist: say so before any work."""
    if not Path(job.spec).is_file():
        raise KerspecError(f"cannot read the spec file{_elsewhere(job)}", job.spec)


def _elsewhere(job: TrialJob) -> str:
    if not job.on_cluster:
        return ""
    import socket

    return (f" (on the worker node {socket.gethostname()}: put the spec, its data and the sweep"
            " folder on a filesystem every node mounts at the same path, or ship small data with"
            " Ray's runtime_env working directory)")
