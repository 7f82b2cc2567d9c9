"""An 8-trial sweep of specs/digits_mlp.yaml on Ray Tune against the same 8 trainings run one
after another with `kerspec train`, and Ray's start-up cost (ray.init and shutdown, nothing run).

    python bench/sweep.py                   # full size: 8 trials of the spec's 30 epochs
    python bench/sweep.py --trials 2 --epochs 1   # a quick check that it works

Report the numbers in bench/RESULTS.md. Targets: the sweep no slower than the sequential runs on 2
cores, >= 1.6x faster where 4 or more cores are free.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_mlp.yaml"


def kerspec(*args: str, cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)  # a Ray started on this machine, not a cluster the shell names
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kerspec", *args], check=False, cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"kerspec {' '.join(args)} failed:\n{done.stderr}")
    return time.perf_counter() - started


def ray_startup() -> float:
    import ray

    started = time.perf_counter()
    # As kerspec starts it (kerspec.sweep.runner.start_ray).
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.shutdown()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None, help="default: the spec's")
    args = parser.parse_args()
    seeds = list(range(args.trials))
    epochs = [f"fit.epochs: {args.epochs}"] if args.epochs else []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sweep = work / "sweep.yaml"
        sweep.write_text("\n".join([
            f"spec: {SPEC}", "metric: val_accuracy", "parameters:",
            f"  seed: {{grid: {seeds}}}", *(f"  {line}" for line in epochs), "search: grid", ""]))
        sets = ["--set", f"fit.epochs={args.epochs}"] if args.epochs else []
        sequential = sum(kerspec("train", str(SPEC), "--seed", str(s), "--out", f"seq-{s}", *sets,
                                 cwd=work) for s in seeds)
        swept = kerspec("sweep", str(sweep), "--out", "sweep", cwd=work)
        startup = ray_startup()
    print(f"cores {os.cpu_count()}, load average {load:.1f} before and {os.getloadavg()[0]:.1f} after;"
          f" {args.trials} trials of {SPEC.name} ({args.epochs or 'the spec’s'} epochs)")
    print(f"sequential kerspec train: {sequential:.1f} s")
    print(f"kerspec sweep:            {swept:.1f} s ({sequential / swept:.2f}x)")
    print(f"Ray start-up (init + shutdown): {startup:.1f} s; the sweep less that: {swept - startup:.1f} s")


if __name__ == "__main__":
    main()
