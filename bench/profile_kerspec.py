"""Where kerspec's training time goes on one benchmark workload (wall clock).

    pip install pyinstrument py-spy
    python bench/profile_kerspec.py W2                 # warm-up epoch, then one profiled epoch
    python bench/profile_kerspec.py W3 --html w3.html  # also pyinstrument's interactive tree
    python bench/profile_kerspec.py W3 --lines         # py-spy: time per kerspec source line

Prints, as % of the profiled epoch, pyinstrument's self time per function (numpy's C calls are
counted as the Python function that makes them) and inclusive time per kerspec function. With
--lines, py-spy samples two epochs after the warm-up and charges each sample to the innermost
kerspec line on its stack (--idle: also while the main thread waits for BLAS threads), which
says which numpy call of a function is the expensive one. py-spy is a third process on a 2-core
machine: it slows the 2-thread BLAS calls most, so read --lines for where inside a function the
time goes and pyinstrument for the shares.

It runs in this process with 2 BLAS threads, like bench/run.py's children; set
OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 in the command line for the same numpy threads
(bench/README.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import WORKLOADS, KerspecRunner


def _walk(frame, ancestors, self_times, inclusive):
    key = (frame.function, frame.file_path_short or "", frame.line_no)
    # pyinstrument puts a function's own time in a synthetic "[self]" child: give it to the function
    children = [c for c in frame.children if not c.is_synthetic_leaf]
    self_times[key] += frame.time - sum(child.time for child in children)
    if key not in ancestors:  # count recursion once
        inclusive[key] += frame.time
    for child in children:
        _walk(child, ancestors | {key}, self_times, inclusive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--html", type=Path, help="write pyinstrument's HTML report here")
    parser.add_argument("--lines", action="store_true", help="per-line profile with py-spy")
    parser.add_argument("--spy-target", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    w = WORKLOADS[args.workload]
    if args.lines:
        return lines_profile(w.name, args.top)
    runner = KerspecRunner(w, w.samples)
    runner.train_round()  # warm-up
    if args.spy_target:  # the process py-spy samples
        return _spy_epochs(runner)

    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    runner.train_round()
    session = profiler.stop()
    root = session.root_frame()
    self_times, inclusive = defaultdict(float), defaultdict(float)
    _walk(root, frozenset(), self_times, inclusive)
    total = root.time
    print(
        f"{w.name} {w.title}: one training round ({w.epochs} epoch(s) of {w.samples} samples),"
        f" {total:.2f} s profiled\n"
    )
    print("self time (function, file:line, % of the epoch)")
    for (func, path, line), t in sorted(self_times.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {100 * t / total:5.1f}%  {func}  {path}:{line}")
    print("\ninclusive time of kerspec functions (% of the epoch)")
    ours = [(k, t) for k, t in inclusive.items() if "kerspec" in k[1] and "api.py" not in k[1]]
    for (func, path, line), t in sorted(ours, key=lambda kv: -kv[1])[: args.top]:
        print(f"  {100 * t / total:5.1f}%  {func}  {path}:{line}")
    if args.html:
        args.html.write_text(profiler.output_html())


def _spy_epochs(runner: KerspecRunner) -> None:
    """The two epochs that --lines counts (the warm-up before them is left out by this name)."""
    runner.train_round()
    runner.train_round()


def lines_profile(workload: str, top: int) -> None:
    """Run this script under py-spy and charge each sample to its innermost kerspec line."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        subprocess.run(
            ["py-spy", "record", "-r", "100", "--idle", "--format", "raw", "-o", str(raw), "--",
             sys.executable, __file__, workload, "--spy-target"],
            check=True,
        )  # fmt: skip
        stacks = raw.read_text().splitlines()
    per_line, total = defaultdict(int), 0
    for entry in stacks:
        stack, _, count = entry.rpartition(" ")
        frames = stack.split(";")
        if not any(f.startswith("_spy_epochs ") for f in frames):
            continue
        ours = [f for f in frames if "kerspec/" in f and "api.py" not in f]
        key = ours[-1] if ours else frames[-1]
        per_line[key] += int(count)
        total += int(count)
    if not total:
        raise SystemExit("py-spy recorded no samples of the training epochs")
    print(f"{workload}: {total} samples over the profiled epochs; innermost kerspec line")
    for key, count in sorted(per_line.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * count / total:5.1f}%  {key}")


if __name__ == "__main__":
    main()
