"""Start-up time of the static commands (issue 15): `kerspec --help`, `validate` and `summary` of a
shipped spec, each run as a fresh process several times; the minimum and the median of wall-clock and CPU seconds.

    python bench/startup.py [--repeat 7] [--tree PATH]

`--tree` times another checkout (its kerspec first on PYTHONPATH), to compare before and after.
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
    parser.add_argument("--tree", type=Path, default=ROOT)
    options = parser.parse_args()
    tree = options.tree.resolve()
    print(f"{tree}  ({options.repeat} runs each)")
    for name, args in COMMANDS.items():
        timed(tree, args)  # warm the file cache and the .pyc files
        walls, cpus = zip(*(timed(tree, args) for _ in range(options.repeat)))
        print(
            f"  {name:<9} wall min {min(walls):.3f} s, median {statistics.median(walls):.3f} s;"
            f"  cpu min {min(cpus):.3f} s, median {statistics.median(cpus):.3f} s"
        )


if __name__ == "__main__":
    main()
