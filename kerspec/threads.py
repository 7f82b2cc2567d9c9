"""BLAS threads chosen from the cores other processes leave free, set and restored around
kerspec's work (fit, evaluate, predict).

A multi-threaded GEMM waits for its slowest thread: with another process busy on one of two
cores, OpenBLAS's two threads take turns with it and the product runs several times slower than
on one thread. So kerspec reads how busy the allowed cores are (/proc/stat, less this process's
own CPU time) while its own work runs: when the work begins and again after each batch once
INTERVAL has passed, and runs BLAS on the cores the others left free over that stretch. Only
stretches of kerspec's own work count: what ran before the call (another program, or the PyTorch
round of a benchmark) says nothing about the machine now. Never more threads than BLAS had when
the work began (the user's OPENBLAS_NUM_THREADS and the like still cap it); the count goes back
to what it was when the work ends.

Evaluate and predict may change the count after any batch. A training run keeps one count from
its first step to its last, because the weights depend on it (OpenBLAS sums a GEMM's products in
another order on another count): it starts on a reading of the machine over FIRST_INTERVAL
before its first step, never on an earlier choice (a load that began since would be missed for
the whole run), and the count goes into its checkpoints so that a resumed run carries on with
it, bit for bit.

Setting threads needs threadpoolctl (the `threads` extra: pip install 'kerspec[threads]').
Without it, or off Linux, BLAS keeps its own count and kerspec runs as before.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

# With other processes using `busy` cores of `cores`, run on floor(cores - busy + SLACK)
# threads: a core is taken as free when at most this much of it is busy.
SLACK = 0.25
# The shortest stretch of work a choice is made from (/proc/stat counts in 10 ms ticks: 40 ticks
# on two cores).
INTERVAL = 0.2
# A run reads the machine over this long before its first step.
FIRST_INTERVAL = 0.05


@dataclass(frozen=True)
class Reading:
    """The machine at one moment: the wall clock, the CPU time (seconds) spent on the cores this
    process may use by everyone, and this process's own CPU time."""

    wall: float
    busy: float
    own: float


def parse_stat(text: str, cpus: set[int], ticks_per_second: float) -> float:
    """Seconds the CPUs `cpus` have been busy, from /proc/stat's per-CPU lines: everything but
    idle and iowait (steal counts as busy: the hypervisor gave that time to someone else)."""
    busy = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle, iowait
        busy += sum(values) - idle
    return busy / ticks_per_second


def threads_for(before: Reading, after: Reading, cores: int, most: int) -> int:
    """BLAS threads for the cores other processes left free between two readings (at least 1,
    at most `most`)."""
    wall = after.wall - before.wall
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall
    free = cores - others
    return max(1, min(most, int(free + SLACK)))


def read_machine() -> Reading | None:
    """A Reading of this machine, or None where /proc/stat cannot be read."""
    try:
        with open("/proc/stat") as f:
            text = f.read()
        busy = parse_stat(text, _cpus(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    times = os.times()
    return Reading(time.monotonic(), busy, times.user + times.system)


def _cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:
        return set(range(os.cpu_count() or 1))


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded (numpy's), or [] without it."""
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.select(user_api="blas").lib_controllers


_controller = None
_lock = threading.Lock()
# How many fit / evaluate / predict calls are inside a BlasThreads now (threads, nested calls):
# the first one in sets the count, the last one out restores it.
_active = 0
_original: list[tuple[object, int]] = []  # (library, its thread count before)
_applied = 0  # the count set now (0: the original ones)
_fixed = False  # the outermost use is a run, which keeps one count throughout
# The reading the next choice is made from (taken during the work now running) and when the next
# reading is due; the last choice, which outlives a BlasThreads: the next evaluate or predict
# starts on it.
_last: Reading | None = None
_due = 0.0
_choice = 0


def _apply(threads: int) -> None:
    global _applied
    if threads != _applied:
        for lib, _ in _original:
            lib.set_num_threads(threads)
        _applied = threads


def _read() -> None:
    global _last, _due
    _last = read_machine()
    _due = time.monotonic() + INTERVAL


def _choose(before: Reading, after: Reading, most: int) -> int:
    global _choice
    _choice = threads_for(before, after, len(_cpus()), most)
    return _choice


def after_batch() -> None:
    """After a batch: once INTERVAL of work has passed since the last reading, choose the thread
    count again from how busy the others kept the machine over it (a run keeps its count; the
    choice waits for the next work)."""
    if time.monotonic() < _due:
        return
    with _lock:
        if not _original or _last is None:
            return
        before = _last
        _read()
        if _last is None:
            return
        threads = _choose(before, _last, max(n for _, n in _original))
        if not _fixed:
            _apply(threads)


def _count_for_a_run(most: int) -> int:
    """A choice from the machine over FIRST_INTERVAL from now; BLAS's own count where the
    machine cannot be read."""
    before = read_machine()
    time.sleep(FIRST_INTERVAL)
    after = read_machine()
    if before is None or after is None:
        return most
    return _choose(before, after, most)


class BlasThreads:
    """`with BlasThreads():` around evaluate and predict, which choose again after any batch
    (`after_batch()`); `with BlasThreads(run=True, count=n):` around fit, which keeps one count
    for the whole run: `n` when resuming a run that recorded it, else chosen as the run starts.
    Results depend on the count (a GEMM splits its sums by threads), so a run on one count
    resumes bit for bit. `count` is then the count set (0: BLAS's own, without threadpoolctl).
    Only the outermost of nested or concurrent uses sets and restores the count."""

    def __init__(self, *, run: bool = False, count: int = 0) -> None:
        self.run, self.count = run, count

    def __enter__(self) -> BlasThreads:
        global _active, _original, _fixed
        with _lock:
            _active += 1
            if _active == 1:
                _original = [(lib, lib.num_threads) for lib in _blas_libraries()]
                if _original:
                    most = max(n for _, n in _original)
                    _fixed = self.run
                    if self.run:
                        _apply(min(self.count, most) if self.count else _count_for_a_run(most))
                    else:
                        _apply(min(_choice, most) if _choice else most)
                    _read()
            self.count = _applied
        return self

    def __exit__(self, *exc) -> None:
        global _active, _applied, _last, _fixed
        with _lock:
            _active -= 1
            if _active == 0:
                for lib, threads in _original:
                    lib.set_num_threads(threads)
                _original.clear()
                _applied = 0
                _last = None
                _fixed = False
