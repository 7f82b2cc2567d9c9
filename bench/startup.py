"""Start-up time of the static commands (issue 15): `kerspec --help`, `validate` and `summary` of a
shipped spec, each run as a fresh process several times; the minimum and the median of wall-clock and CPU seconds.

    python bench/startup.py [--repeat 7] [--tree PATH [--tree PATH]]

`--tree` times another checkout (its kerspec first on PYTHONPATH). Given twice, the two trees run
alternately, one run of each in turn, so that load from other processes falls on both alike; the
second tree's medians are then also given as a ratio of the first's.
Run it on an idle machine: a loaded one measures the load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Compiled modules go here, not into the checkout; the first (untimed) run of each command fills it.
PYCACHE = Path(tempfile.gettempdir()) / "kerspec-startup-pycache"
COMMANDS = {
    "--help": ["--help"],
    "validate": ["validate", "specs/digits_mlp.yaml"],
    "summary": ["summary", "specs/digits_mlp.yaml"],
}


def timed(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run; CPU time suffers less from load."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # time what an installed kerspec does: from .pyc files
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kerspec", *args],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tree", type=Path, action="append")
    options = parser.parse_args()
    trees = [tree.resolve() for tree in options.tree or [ROOT]]
    print(f"{', '.join(map(str, trees))}  ({options.repeat} runs each)")
    for name, args in COMMANDS.items():
        for tree in trees:
            timed(tree, args)  # warm the file cache and the .pyc files
        runs = {tree: [] for tree in trees}
        for _ in range(options.repeat):
            for tree in trees:
                runs[tree].append(timed(tree, args))
        medians = []
        for tree in trees:
            walls, cpus = zip(*runs[tree])
            medians.append((statistics.median(walls), statistics.median(cpus)))
            label = f" [{tree.name}]" if len(trees) > 1 else ""
            print(
                f"  {name:<9}{label} wall min {min(walls):.3f} s, median {medians[-1][0]:.3f} s;"
                f"  cpu min {min(cpus):.3f} s, median {medians[-1][1]:.3f} s"
            )
        if len(trees) == 2:
            (wall0, cpu0), (wall1, cpu1) = medians
            print(f"  {name:<9} ratio {trees[1].name}/{trees[0].name}: wall {wall1 / wall0:.2f}, cpu {cpu1 / cpu0:.2f}")


if __name__ == "__main__":
    main()
