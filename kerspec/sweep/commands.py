"""What `kerspec sweep` and `kerspec train --seeds` show: progress while the trials run, then the
ranked trials (or each metric's spread over the seeds) and the best trial's command."""

from __future__ import annotations

from pathlib import Path

import typer

from kerspec import console
from kerspec.errors import KerspecError
from kerspec.runs import new_run_dir
from kerspec.sweep import (
    SweepResult,
    load_sweep,
    ray_installed,
    require_ray,
    resume_sweep,
    run_seeds,
    run_sweep,
    summary,
)
from kerspec.sweep.progress import SweepProgress
from kerspec.sweep.results import check_sweep_folder

SWEEPS = Path("runs") / "sweeps"
SHOWN = 10  # trials listed; trials.csv has them all


def sweep(sweep_file: Path | None, *, out: Path | None, address: str | None, resume: Path | None,
          json_out: bool) -> None:
    if resume is not None:
        check_sweep_folder(resume)
        loaded = load_sweep(resume / "sweep.yaml")
    else:
        loaded = load_sweep(sweep_file)
    require_ray()
    progress = SweepProgress(console.err, loaded.sweep.metric, loaded.mode)
    try:
        if resume is not None:
            result = resume_sweep(resume, address=address, events=progress)
        else:
            folder = out or new_run_dir(SWEEPS, loaded.name)
            result = run_sweep(loaded, folder, address=address, events=progress)
    finally:
        progress.close()
    if json_out:
        console.emit_json(result.as_json())
    else:
        _show(result)
    if not result.finished:
        raise KerspecError(f"the sweep was interrupted; the finished trials are in {result.folder}."
                           f" Carry on with: kerspec sweep --resume {result.folder}")


def _show(result: SweepResult) -> None:
    loaded, trials = result.loaded, result.trials
    metric = loaded.sweep.metric
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in counts.items())
    out = console.out
    out.print(f"Sweep {loaded.name}: {len(trials)} trials ({states}) in {result.folder};"
              f" ranked by {metric} ({loaded.mode})", markup=False)
    varied = [p.path for p in loaded.parameters if not p.constant]
    for rank, trial in enumerate(trials[:SHOWN], 1):
        value = trial.metrics.get(metric)
        score = f"{metric} {value:.4f}" if value is not None else f"no {metric}"
        values = " ".join(f"{p}={_short(trial.values.get(p))}" for p in varied)
        out.print(f"  {rank:>2}. {trial.folder.name}  {trial.status}, {trial.epochs} epochs  {score}"
                  f"  {values}", markup=False)
    if len(trials) > SHOWN:
        out.print(f"  ... all {len(trials)} in {result.folder / 'trials.csv'}", markup=False)
    for trial in trials:
        if trial.status == "failed":
            console.err.print(f"{trial.folder.name} failed: {trial.message}", markup=False)
    if result.command:
        out.print(f"Best: {result.best.folder.name}. Train it again with:\n  {result.command}",
                  markup=False)
    if result.curves:
        out.print(f"Curves of the top trials: {result.curves}", markup=False)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def train_seeds(spec: Path, count: int, *, seed: int | None, sets: list[str], epochs: int | None,
                batch_size: int | None, out: Path | None, json_out: bool, others: dict) -> None:
    given = [name for name, value in others.items() if value is not None]
    if given:
        console.err.print(f"--seeds trains the spec's own data from scratch; it cannot be combined"
                          f" with {', '.join(given)}", markup=False)
        raise typer.Exit(2)
    if any(s.partition("=")[0].strip() == "seed" for s in sets):
        console.err.print("--seeds sets the seed of each run; give the first with --seed, not"
                          " --set seed=...", markup=False)
        raise typer.Exit(2)
    from kerspec import api

    sets = [*sets, *(f"fit.{k}={v}" for k, v in (("epochs", epochs), ("batch_size", batch_size))
                     if v is not None)]
    if seed is None:
        seed = api.load(spec, sets, seed=0).spec.seed or 0
    seeds = list(range(seed, seed + count))
    use_ray = ray_installed()
    if not use_ray:
        console.err.print("Ray is not installed: training the seeds one after another here"
                          " (pip install 'kerspec[sweep]' runs them in parallel)", markup=False)
    name = f"{Path(spec).stem}-seeds"
    folder = out or new_run_dir(SWEEPS, name)
    progress = SweepProgress(console.err, "loss", "min") if use_ray else None

    def one_line(trial):
        shown = "  ".join(f"{k} {v:.4f}" for k, v in trial.metrics.items())
        text = f"seed {trial.values['seed']}: {trial.status}" + (f": {trial.message}" if trial.message else f"  {shown}")
        console.err.print(text, markup=False)

    try:
        result = run_seeds(spec, sets, seeds, folder, use_ray=use_ray, events=progress,
                           on_trial=one_line)
    finally:
        if progress is not None:
            progress.close()
    spread = summary(result)
    if json_out:
        console.emit_json({"folder": str(result.folder), "seeds": seeds, "metrics": spread,
                           "trials": result.as_json()["trials"]})
        return
    ok = sum(1 for t in result.trials if t.status != "failed")
    console.out.print(f"Trained {result.loaded.name.removesuffix('-seeds')} over {len(seeds)} seeds"
                      f" ({seeds[0]}-{seeds[-1]}; {ok} finished); runs in {result.folder}",
                      markup=False)
    width = max((len(k) for k in spread), default=0)
    for key, s in spread.items():
        console.out.print(f"  {key:<{width}}  {s['mean']:.4f} ± {s['std']:.4f}"
                          f"  (min {s['min']:.4f}, max {s['max']:.4f})", markup=False)
    if not result.finished:
        raise KerspecError(f"interrupted; carry on with: kerspec sweep --resume {result.folder}")
