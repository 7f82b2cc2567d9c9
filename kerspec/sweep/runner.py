"""Running a sweep's trials on Ray Tune: locally (`ray.init()`), or on a cluster by address.

Imported only once Ray is known to be installed (see kerspec.sweep.require_ray).

Tune owns the scheduling (parallel trials, ASHA, the search algorithm, resuming its experiment
state from the sweep folder); kerspec only gives it the trainable and reads back, from the run
folders, what each trial did.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback

from kerspec.errors import KerspecError
from kerspec.runs import read_run_info
from kerspec.sweep.load import LoadedSweep
from kerspec.sweep.schema import Choice, Grid, LogUniform, RandInt, Uniform
from kerspec.sweep.trial import (
    TrialJob,
    blas_env,
    ray_trial,
    trial_folder,
    trial_name,
    trial_number,
)

EXPERIMENT = "tune"  # Tune's experiment state inside the sweep folder (what --resume reads)


@dataclass
class Outcome:
    """What Tune says of a trial: its index, values, whether it ended and how."""

    index: int
    config: dict[str, Any]
    status: str  # Tune's: TERMINATED, ERROR, PENDING, RUNNING, PAUSED
    error: str | None = None
    stopped: bool = False  # ended by the scheduler before its run did


def start_ray(address: str | None, cpu: float) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), else start Ray on this machine. Returns
    whether this call started the connection (and so should end it)."""
    if ray.is_initialized():
        return False
    # Tune's own console output would interleave with kerspec's progress; its result files
    # (result.json, progress.csv, TensorBoard events per trial) repeat what the run folders hold.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers start with BLAS limited to a trial's share, before they import numpy. A local Ray
    # passes this process's environment to the workers it starts, the ones it starts ahead of
    # need included; a runtime_env would make it start workers of their own for every trial.
    blas = blas_env(cpu)
    if address:
        options["runtime_env"] = {"env_vars": blas}
    saved = {name: os.environ.get(name) for name in blas}
    try:
        if not address:
            os.environ.update(blas)
        # "local": a fresh Ray on this machine; plain ray.init() would join whatever cluster this
        # machine last started (/tmp/ray), even one that is gone.
        ray.init(address=address or "local", **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise KerspecError(f"cannot start or join {where}: {err}") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return True


def param_space(loaded: LoadedSweep) -> dict[str, Any]:
    grid_choices = loaded.sweep.search == "grid"
    space = {}
    for parameter in loaded.parameters:
        value = parameter.value
        if isinstance(value, Grid) or (grid_choices and isinstance(value, Choice)):
            values = value.grid if isinstance(value, Grid) else value.choice
            space[parameter.path] = tune.grid_search(values)
        elif isinstance(value, Choice):
            space[parameter.path] = tune.choice(value.choice)
        elif isinstance(value, Uniform):
            space[parameter.path] = tune.uniform(*value.uniform)
        elif isinstance(value, LogUniform):
            space[parameter.path] = tune.loguniform(*value.loguniform)
        elif isinstance(value, RandInt):
            low, high = value.randint
            space[parameter.path] = tune.randint(low, high + 1)  # Tune's upper bound is excluded
    return space


def run_trials(loaded: LoadedSweep, sweep_dir: Path, job: TrialJob, *, resume: bool,
               events=None) -> tuple[list[Outcome], bool]:
    """Run (or carry on) the sweep's trials; the outcomes and whether every trial ended."""
    sweep = loaded.sweep
    watcher = Watcher(events, sweep_dir)
    trainable = tune.with_resources(tune.with_parameters(ray_trial, job=job), {"cpu": job.cpu})
    storage = sweep_dir.absolute()
    if resume:
        tuner = tune.Tuner.restore(str(storage / EXPERIMENT), trainable, resume_unfinished=True,
                                   resume_errored=False)
        # The restored run config holds the saved (empty) watcher; this session shows its own.
        tuner._local_tuner.get_run_config().callbacks = [watcher]
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(loaded),
            tune_config=tune.TuneConfig(
                metric=sweep.metric,
                mode=loaded.mode,
                search_alg=_search(loaded),
                scheduler=_scheduler(loaded),
                num_samples=sweep.samples,
                max_concurrent_trials=sweep.max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=_TrialNamer(first=1 if sweep.search == "optuna" else 0),
            ),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(storage), verbose=0,
                                      callbacks=[watcher]),
        )
    # Tune logs a failed trial's traceback at ERROR; kerspec records the trial's own message.
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    tuner.fit()
    outcomes = [watcher.outcome(trial) for trial in watcher.trials]
    finished = all(o.status in ("TERMINATED", "ERROR") for o in outcomes)
    return sorted(outcomes, key=lambda o: o.index), finished


def _search(loaded: LoadedSweep):
    sweep = loaded.sweep
    if sweep.search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise KerspecError("search: optuna needs Optuna: pip install 'kerspec[sweep]'",
                               loaded.source.where(("search",))) from None
        return OptunaSearch(seed=sweep.seed)
    from ray.tune.search import BasicVariantGenerator

    # Tune applies max_concurrent_trials only to a searcher (through a ConcurrencyLimiter) or to
    # the generator it makes itself; a generator given to it gets the limit here.
    return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent or 0)


def _scheduler(loaded: LoadedSweep):
    config = loaded.sweep.scheduler
    if config is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # A trial's last report comes from inside its last epoch, before the run writes its final
    # files, and Tune's report waits for the scheduler's answer: ASHA's default stop at max_t
    # would cut every surviving trial off there. A trial ends its own run after its epochs.
    return ASHAScheduler(time_attr="epoch", max_t=loaded.epochs, grace_period=config.grace_period,
                         reduction_factor=config.reduction_factor, stop_last_trials=False)


@dataclass(frozen=True)
class _TrialNamer:
    """Names a trial's Tune folder as its run folder (`trial-0007`), which is how its worker
    knows its index. Tune numbers the trials in their tags (`7_learning_rate=0.01`): from 0
    under grid and random search, from 1 under a searcher (Optuna)."""

    first: int

    def __call__(self, trial) -> str:
        return trial_name(int(trial.experiment_tag.split("_", 1)[0]) - self.first)


def trial_index(trial) -> int:
    return trial_number(trial.custom_dirname)


class Watcher(Callback):
    """The driver's view of the trials as Tune runs them: for progress, and at the end."""

    def __init__(self, events=None, folder: Path | None = None):
        self.events = events
        self.folder = folder  # the sweep's, to tell a trial the scheduler stopped from one that ended
        self.trials = []
        # How each trial ended, as this session saw it or as a resumed experiment holds it. Tune
        # marks the trials it stops on Ctrl-C TERMINATED too, so its status alone cannot tell.
        self.ended: dict[str, str] | None = None

    def on_step_begin(self, iteration, trials, **info):
        if self.ended is None:
            self.ended = {t.trial_id: t.status for t in trials if t.status in ("TERMINATED", "ERROR")}

    def __reduce__(self):
        # Tune saves its run config, callbacks included, with the experiment; the progress
        # display is this session's only.
        return (Watcher, ())

    def on_step_end(self, iteration, trials, **info):
        self.trials = trials

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials = trials
        if self.events:
            self.events.started(trial_index(trial), dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.events:
            self.events.epoch(trial_index(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "TERMINATED")
        if self.events:
            outcome = self.outcome(trial, "TERMINATED")
            outcome.stopped = self.folder is not None and _still_running(trial_folder(self.folder, outcome.index))
            self.events.ended(outcome)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "ERROR")
        if self.events:
            self.events.ended(self.outcome(trial, "ERROR"))

    def _end(self, trial, status: str) -> None:
        if self.ended is None:
            self.ended = {}
        self.ended[trial.trial_id] = status

    def outcome(self, trial, status: str | None = None) -> Outcome:
        status = status or (self.ended or {}).get(trial.trial_id, "UNFINISHED")
        return Outcome(trial_index(trial), dict(trial.config), status,
                       _error(trial) if status == "ERROR" else None)


def _still_running(run_dir: Path) -> bool:
    """A trial Tune ended whose run folder still says it is training: the scheduler stopped it
    (a trial that ran its epochs wrote its end before its trainable returned)."""
    try:
        info = read_run_info(run_dir)
    except KerspecError:
        return False
    return info is not None and info.status == "running"


def _error(trial) -> str:
    """The trial's message: kerspec's own for a TrialFailed, else the exception's last line."""
    text = ""
    try:
        path = trial.error_file or ""
        text = Path(path).read_text(encoding="utf-8") if path and Path(path).is_file() else ""
    except OSError:
        pass
    text = text or str(getattr(trial, "error_msg", "") or "")
    found = [line.split("TrialFailed: ", 1)[1].strip() for line in text.splitlines()
             if "TrialFailed: " in line and line.split("TrialFailed: ", 1)[1].strip()]
    if found:
        return found[-1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "the trial failed"
