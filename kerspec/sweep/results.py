"""What a sweep leaves behind: a record per trial read back from its run folder, trials.csv
ranked by the sweep's metric, sweep.json, the best trial's `kerspec train` command, and the
curves of the top trials.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerspec import io
from kerspec.errors import KerspecError, RunError
from kerspec.folders import OutputFolder
from kerspec.runs import CHECKPOINT, JSON_OBJECT, MAX_RUN_JSON_BYTES, describe_run, read_run_info
from kerspec.sweep.load import set_option
from kerspec.sweep.trial import wait_for_lock

TOP_CURVES = 5


@dataclass
class TrialRecord:
    index: int
    folder: Path
    values: dict[str, Any]  # varied path -> this trial's value
    status: str  # finished, stopped (by a callback or the scheduler), failed, unfinished
    epochs: int = 0
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def sets(self, constants: list[str]) -> list[str]:
        return [*constants, *(set_option(k, v) for k, v in sorted(self.values.items()))]


def record(index: int, folder: Path, values: dict, ray_status: str, error: str | None) -> TrialRecord:
    """A trial as its run folder shows it, with what Tune knows that the folder cannot."""
    run = describe_run(folder) if folder.is_dir() else None
    trial = TrialRecord(index, folder, dict(values), "unfinished")
    if run is not None:
        trial.epochs, trial.seed, trial.metrics = run["epochs_done"], run["seed"], run["metrics"]
        trial.status = run["status"]
    if ray_status == "ERROR":
        trial.status, trial.message = "failed", error or "the trial failed"
    elif ray_status == "TERMINATED" and trial.status == "unfinished" and run is not None:
        # Tune ended a trial that had not ended its run: the scheduler stopped it early.
        message = f"stopped early by the sweep's scheduler after epoch {trial.epochs}"
        try:
            close_stopped(folder, message)
        except KerspecError as err:
            trial.message = f"{message}; its folder was left as it was: {err}"
        else:
            trial.status, trial.message = "stopped", message
    elif trial.status == "stopped":
        trial.message = read_run_info(folder).message or ""
    elif ray_status != "TERMINATED":
        trial.status = "unfinished"
    return trial


def close_stopped(folder: Path, message: str) -> None:
    """End a run folder whose training was stopped from outside after a finished epoch: the
    weights of its last checkpoint, and run.json saying so (as a callback's stop would). Written
    as the trainer writes its folder: under its lock, through its manifest."""
    lock = wait_for_lock(folder)
    try:
        output = OutputFolder(folder, manifest=True)
        output.manifest.remove_temporaries()  # of a worker killed while writing
        arrays = io.read_npz(folder / CHECKPOINT, RunError)
        weights = {k.removeprefix("weights/"): v for k, v in arrays.items() if k.startswith("weights/")}
        output.write("weights.npz", lambda f: np.savez(f, **weights))
        info = _read_info(folder)
        info.update(status="stopped", message=message, ended=_now())
        output.write_text("run.json", json.dumps(info, indent=2) + "\n")
    finally:
        lock.release()


def _read_info(folder: Path) -> dict:
    """A trial's run.json as written (its every field, to update and write back), after the
    checks every run.json read back gets: its size, then its schema (kerspec.runs)."""
    if read_run_info(folder) is None:
        raise RunError("has no run.json", str(folder))
    return io.read_json_as(folder / "run.json", JSON_OBJECT, MAX_RUN_JSON_BYTES, "a kerspec run.json")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ranked(trials: list[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Best first by the final `metric`; trials without a finite value last, in index order."""

    def key(trial: TrialRecord):
        value = trial.metrics.get(metric)
        if value is None or not math.isfinite(value) or trial.status == "failed":
            return (1, 0.0, trial.index)
        return (0, -value if mode == "max" else value, trial.index)

    return sorted(trials, key=key)


def write_trials_csv(path: Path, trials: list[TrialRecord], parameters: list[str]) -> None:
    parameters = [p for p in parameters if p != "seed"]  # the seed has its column, varied or not
    metrics = list(dict.fromkeys(k for t in trials for k in t.metrics))
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "trial", "folder", "status", "epochs", "seed", *parameters, *metrics,
                     "message"])
    for rank, trial in enumerate(trials, 1):
        writer.writerow([
            rank, trial.index, trial.folder.name, trial.status, trial.epochs,
            "" if trial.seed is None else trial.seed,
            *(_cell(trial.values.get(p, "")) for p in parameters),
            *(_cell(trial.metrics.get(m, "")) for m in metrics),
            trial.message,
        ])
    io.write_text(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | dict):
        return set_option("", value)[1:]  # the YAML flow text --set reads
    return str(value)


def reproduce_command(spec: Path, trial: TrialRecord, constants: list[str]) -> str:
    """The `kerspec train` command that trains the trial again, weights bit for bit."""
    shown = os.path.relpath(spec) if not os.path.relpath(spec).startswith("..") else str(spec)
    sets = trial.sets(constants)
    words = ["kerspec", "train", shown]
    for option in sets:
        words += ["--set", option]
    if trial.seed is not None and not any(s.startswith("seed=") for s in sets):
        words += ["--seed", str(trial.seed)]
    return shlex.join(words)


def write_top_curves(path: Path, trials: list[TrialRecord]) -> list[Path]:
    """The curves of the best trials that have a history; the folders drawn."""
    from kerspec.curves import write_curves

    drawn = [t.folder for t in trials if (t.folder / "history.csv").is_file()][:TOP_CURVES]
    if drawn:
        write_curves(drawn, path)
    return drawn


def spread(trials: list[TrialRecord]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (n-1), min and max of every final metric over the trials."""
    out = {}
    names = dict.fromkeys(k for t in trials for k in t.metrics)
    for name in names:
        values = [t.metrics[name] for t in trials if name in t.metrics]
        out[name] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }
    return out


def check_sweep_folder(folder: Path) -> None:
    if not (folder / "sweep.yaml").is_file() or not (folder / "sweep.json").is_file():
        raise KerspecError("not a kerspec sweep folder (no sweep.yaml and sweep.json)", str(folder))
