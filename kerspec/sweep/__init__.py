"""`kerspec sweep` and `kerspec train --seeds`: many runs of one spec, on Ray Tune.

A sweep folder holds `sweep.yaml` (the sweep as resolved: its spec's absolute path, the mode),
`sweep.json` (the manifest: status, versions, the best trial and its command), `trials.csv`
(ranked), `curves.svg` (the top trials), one ordinary run folder per trial (`trial-0007/`) and
Tune's experiment state (`tune/`, what `--resume` carries on from).
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kerspec import io
from kerspec.version import __version__
from kerspec.errors import KerspecError
from kerspec.runs import JSON_OBJECT, MAX_RUN_JSON_BYTES
from kerspec.spec.source import Source
from kerspec.sweep.load import LoadedSweep, check_sweep, load_sweep
from kerspec.sweep.results import (
    TrialRecord,
    _now,
    check_sweep_folder,
    ranked,
    record,
    reproduce_command,
    spread,
    write_top_curves,
    write_trials_csv,
)
from kerspec.sweep.trial import TrialJob, train_trial, trial_folder

__all__ = ["SweepResult", "load_sweep", "require_ray", "resume_sweep", "run_seeds", "run_sweep"]

def require_ray() -> None:
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise KerspecError("kerspec sweep runs on Ray Tune, which is not installed: pip install"
                           " 'kerspec[sweep]'") from None


def ray_installed() -> bool:
    try:
        require_ray()
    except KerspecError:
        return False
    return True


@dataclass
class SweepResult:
    folder: Path
    loaded: LoadedSweep
    trials: list[TrialRecord]  # best first
    finished: bool  # False: interrupted, resumable
    command: str | None  # reproduces the best trial
    curves: Path | None

    @property
    def best(self) -> TrialRecord | None:
        usable = [t for t in self.trials if t.status != "failed" and self.loaded.sweep.metric in t.metrics]
        return usable[0] if usable else None

    def as_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "finished": self.finished,
            "metric": self.loaded.sweep.metric,
            "mode": self.loaded.mode,
            "best_command": self.command,
            "trials": [
                {"rank": rank, "trial": t.index, "folder": str(t.folder), "status": t.status,
                 "epochs": t.epochs, "seed": t.seed, "parameters": t.values, "metrics": t.metrics,
                 "message": t.message}
                for rank, t in enumerate(self.trials, 1)
            ],
        }


def run_sweep(loaded: LoadedSweep, folder: Path, *, address: str | None = None, events=None) -> SweepResult:
    require_ray()
    _new_folder(folder)
    io.write_text(folder / "sweep.yaml", _resolved(loaded))
    manifest = _manifest(loaded, address)
    io.write_json(folder / "sweep.json", manifest)
    return _on_ray(loaded, folder, manifest, address=address, resume=False, events=events)


def resume_sweep(folder: Path, *, address: str | None = None, events=None) -> SweepResult:
    require_ray()
    check_sweep_folder(folder)
    loaded = load_sweep(folder / "sweep.yaml")
    manifest = _read_manifest(folder)
    if manifest.get("status") == "finished":
        raise KerspecError("the sweep has finished; there is nothing to resume", str(folder))
    return _on_ray(loaded, folder, manifest, address=address, resume=True, events=events)


def _on_ray(loaded, folder, manifest, *, address, resume, events) -> SweepResult:
    import ray

    from kerspec.sweep import runner

    cpu = loaded.sweep.trial_resources.cpu
    job = TrialJob(str(loaded.spec_path.absolute()), str(folder.absolute()),
                   tuple(loaded.constants()), cpu, on_cluster=bool(address))
    started = runner.start_ray(address, cpu)
    manifest["ray"] = ray.__version__
    try:
        outcomes, finished = runner.run_trials(loaded, folder, job, resume=resume, events=events)
    finally:
        if started:
            ray.shutdown()
    trials = [record(o.index, trial_folder(folder, o.index), o.config, o.status, o.error)
              for o in outcomes]
    return _finish(loaded, folder, manifest, trials, finished)


def run_seeds(spec: Path, sets: list[str], seeds: list[int], folder: Path, *, use_ray: bool,
              address: str | None = None, events=None, on_trial=None) -> SweepResult:
    """The spec over `seeds` as a sweep of `seed`; without Ray, one trial after another here."""
    from kerspec import api
    from kerspec.spec.overrides import apply_overrides

    model = api.load(spec, sets, seed=seeds[0])  # the options' own errors, as `train` gives them
    validation = bool(model.spec.data and model.spec.data.validation) or model.spec.fit.validation_split > 0
    constants, _ = apply_overrides({}, [s for s in sets])
    data = {
        "spec": str(Path(spec).absolute()),
        "name": f"{model.name}-seeds",
        "metric": "val_loss" if validation else "loss",
        "parameters": {**_flatten(constants), "seed": {"grid": seeds}},
        "search": "grid",
    }
    loaded = check_sweep(data, Source("--seeds", None), Path(spec).absolute())
    if use_ray:
        return run_sweep(loaded, folder, address=address, events=events)
    _new_folder(folder)
    io.write_text(folder / "sweep.yaml", _resolved(loaded))
    manifest = _manifest(loaded, None)
    trials = []
    for index, seed in enumerate(seeds):
        run_dir = trial_folder(folder, index)
        error = None
        try:
            train_trial(loaded.spec_path, [*loaded.constants(), f"seed={seed}"], run_dir)
        except KerspecError as err:
            if type(err).__name__ == "Interrupted":
                raise KerspecError(f"{err.message}; the finished trials are in {folder}") from None
            error = str(err)
        trials.append(record(index, run_dir, {"seed": seed}, "ERROR" if error else "TERMINATED", error))
        if on_trial is not None:
            on_trial(trials[-1])
    return _finish(loaded, folder, manifest, trials, True)


def _flatten(overrides: dict, prefix: str = "") -> dict[str, Any]:
    """{'fit': {'epochs': 3}} -> {'fit.epochs': 3}: the paths the options named."""
    out = {}
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{path}."))
        else:
            out[path] = {"choice": [value]} if isinstance(value, dict) else value
    return out


def summary(result: SweepResult) -> dict[str, dict[str, float]]:
    return spread([t for t in result.trials if t.status != "failed"])


def _finish(loaded, folder, manifest, trials, finished) -> SweepResult:
    sweep = loaded.sweep
    trials = ranked(trials, sweep.metric, loaded.mode)
    write_trials_csv(folder / "trials.csv", trials, [p.path for p in loaded.parameters if not p.constant])
    result = SweepResult(folder, loaded, trials, finished, None, None)
    best = result.best
    if best is not None:
        result.command = reproduce_command(loaded.spec_path, best, loaded.constants())
    drawn = write_top_curves(folder / "curves.svg", [t for t in trials if t.status != "failed"])
    result.curves = folder / "curves.svg" if drawn else None
    manifest.update(
        status="finished" if finished else "interrupted",
        ended=_now(),
        trials=[{"trial": t.index, "folder": t.folder.name, "status": t.status, "epochs": t.epochs,
                 "message": t.message} for t in trials],
        best=None if best is None else {"trial": best.index, "folder": best.folder.name,
                                        sweep.metric: best.metrics.get(sweep.metric),
                                        "command": result.command},
    )
    io.write_json(folder / "sweep.json", manifest)
    return result


def _new_folder(folder: Path) -> None:
    """A sweep starts in a folder of its own: never among files it could be taken to own."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise KerspecError("the sweep folder exists and is not empty; give a new one (or"
                           " --resume it if it is a sweep)", str(folder))


def _resolved(loaded: LoadedSweep) -> str:
    data = loaded.sweep.model_dump(mode="json")
    data = {k: v for k, v in data.items() if v is not None}
    data.update(spec=str(loaded.spec_path.absolute()), name=loaded.name, mode=loaded.mode)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _manifest(loaded: LoadedSweep, address: str | None) -> dict[str, Any]:
    source = loaded.spec_path.read_bytes()
    return {
        "kerspec": __version__,
        "python": platform.python_version(),
        "sweep": str(loaded.path),
        "spec": str(loaded.spec_path.absolute()),
        "spec_sha256": hashlib.sha256(source).hexdigest(),
        "metric": loaded.sweep.metric,
        "mode": loaded.mode,
        "address": address,
        "started": _now(),
        "ended": None,
        "status": "running",
    }


def _read_manifest(folder: Path) -> dict[str, Any]:
    """sweep.json, read back as every kerspec JSON file is: its size capped, a mapping."""
    return io.read_json_as(folder / "sweep.json", JSON_OBJECT, MAX_RUN_JSON_BYTES, "a kerspec sweep.json")