"""BLAS threads from the machine's free cores: the decision from fake readings of the machine,
and through fit and predict, that kerspec sets the count during its work and restores it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kerspec
from kerspec import threads
from kerspec.threads import Reading, parse_stat, threads_for
from kerspec.training.callbacks import Callback
from kerspec.training.data import Dataset
from kerspec.training.loop import Interrupted

STAT = """\
cpu  900 0 300 5000 20 0 10 30 0 0
cpu0 400 0 100 2000 10 0 5 15 0 0
cpu1 500 0 200 3000 10 0 5 15 0 0
cpu2 7000 0 0 0 0 0 0 0 0 0
intr 123456 0 0
ctxt 999
"""


def test_parse_stat_counts_the_allowed_cpus_busy_time_with_steal():
    # cpu0: user 400 + system 100 + softirq 5 + steal 15; idle and iowait left out.
    assert parse_stat(STAT, {0}, 100) == pytest.approx(5.20)
    assert parse_stat(STAT, {0, 1}, 100) == pytest.approx(5.20 + 7.20)
    assert parse_stat(STAT, {5}, 100) == 0


def reading(wall: float, busy: float, own: float = 0.0) -> Reading:
    return Reading(wall, busy, own)


@pytest.mark.parametrize(
    "busy,own,cores,most,expected",
    [
        (0.02, 0.0, 2, 2, 2),  # idle
        (1.0, 0.0, 2, 2, 1),  # another process busy on one core
        (2.0, 2.0, 2, 2, 2),  # only our own two threads busy
        (1.9, 0.9, 2, 2, 1),  # our thread, and another process on the other core
        (2.0, 0.0, 2, 2, 1),  # both cores taken by others: never below one thread
        (0.0, 0.0, 8, 2, 2),  # never above what BLAS had (the user's cap)
        (2.5, 0.0, 8, 8, 5),
        (0.3, 0.0, 2, 2, 1),  # a third of a core busy: not free enough for two threads
    ],
)
def test_threads_for_free_cores(busy, own, cores, most, expected):
    assert threads_for(reading(10.0, 100.0), reading(11.0, 100.0 + busy, own), cores, most) == expected


def test_threads_for_scales_with_the_interval():
    before = reading(0.0, 0.0)
    assert threads_for(before, reading(4.0, 4.0), 2, 2) == 1  # one core busy for 4 s
    assert threads_for(before, reading(4.0, 0.4), 2, 2) == 2


threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads_now() -> int:
    infos = threadpoolctl.threadpool_info()
    return max(i["num_threads"] for i in infos if i["user_api"] == "blas")


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: each reading 1 s after the last, with `busy` cores kept busy by others."""
    state = {"wall": 0.0, "busy": 0.0, "others": 1.0}

    def read():
        state["wall"] += 1.0
        state["busy"] += state["others"]
        return Reading(state["wall"], state["busy"], 0.0)

    monkeypatch.setattr(threads, "read_machine", read)
    monkeypatch.setattr(threads, "_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "_last", None)
    monkeypatch.setattr(threads, "_choice", 0)
    monkeypatch.setattr(threads, "INTERVAL", 0.0)  # every batch long enough to learn from
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if blas_threads_now() != 2:
            pytest.skip("this BLAS does not take a thread count")
        yield state


def test_work_starts_on_blas_own_count_then_nested_uses_set_once_and_restore_at_the_outermost(machine):
    with threads.BlasThreads():
        assert blas_threads_now() == 2  # nothing read of the machine yet
        threads.after_batch()
        assert blas_threads_now() == 1
        with threads.BlasThreads():
            assert blas_threads_now() == 1
            threads.after_batch()
            assert blas_threads_now() == 1
        assert blas_threads_now() == 1
    assert blas_threads_now() == 2


SPEC = """\
name: tiny
seed: 0
layers:
  - {type: Input, shape: [4], name: x}
  - {type: Dense, units: 3, activation: softmax, name: y}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy}
fit: {epochs: 3, batch_size: 8}
"""


class SeenThreads(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, logs):
        self.seen.append(blas_threads_now())


def test_a_run_keeps_the_count_it_started_on_and_predict_follows_the_machine(machine, monkeypatch):
    model = kerspec.from_yaml(SPEC)
    rng = np.random.default_rng(0)
    x = rng.random((16, 4), dtype=np.float32)
    seen = SeenThreads()

    class FreeAfterFirstEpoch(Callback):
        def on_epoch_end(self, epoch, logs):
            machine["others"] = 0.0  # the other process ends: a later run may take both cores

    model.fit(Dataset({"x": x}, {"y": np.arange(16) % 3}, "test"), callbacks=[seen, FreeAfterFirstEpoch()])
    assert seen.seen == [1, 1, 1]  # the weights depend on the count: one count per run
    assert blas_threads_now() == 2

    machine["others"] = 1.0
    during = []
    forward = model.plan.forward

    def looking_forward(*args, **kwargs):
        during.append(blas_threads_now())
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.plan, "forward", looking_forward)
    model.predict(x, batch_size=4)
    assert during == [2, 1, 1, 1]  # the last choice, until a batch shows the machine busy
    assert blas_threads_now() == 2


class CtrlCInSecondEpoch(Callback):
    def on_epoch_begin(self, epoch, steps):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs):
        if self.epoch == 1:
            raise KeyboardInterrupt


def test_a_resumed_run_carries_on_with_the_count_its_checkpoint_recorded(machine, tmp_path):
    data = Dataset({"x": np.ones((16, 4), np.float32)}, {"y": np.arange(16) % 3}, "test")
    with pytest.raises(Interrupted):
        kerspec.from_yaml(SPEC).fit(data, run_dir=tmp_path / "run", callbacks=[CtrlCInSecondEpoch()])
    assert json.loads(str(np.load(tmp_path / "run" / "checkpoint.npz")["meta"]))["blas_threads"] == 1

    machine["others"] = 0.0  # idle now: a fresh run would take two threads
    seen = SeenThreads()
    kerspec.from_yaml(SPEC).fit(data, run_dir=tmp_path / "run", resume=True, callbacks=[seen])
    assert seen.seen == [1, 1]
    fresh = SeenThreads()
    kerspec.from_yaml(SPEC).fit(data, callbacks=[fresh])
    assert fresh.seen == [2, 2, 2]


def test_a_run_reads_the_machine_afresh_rather_than_start_on_the_last_choice(machine):
    model = kerspec.from_yaml(SPEC)
    x = np.ones((16, 4), np.float32)
    machine["others"] = 0.0
    model.predict(x, batch_size=4)
    assert threads._choice == 2  # the machine was idle a moment ago
    machine["others"] = 1.0  # another process starts between that call and the run
    seen = SeenThreads()
    model.fit(Dataset({"x": x}, {"y": np.arange(16) % 3}, "test"), callbacks=[seen])
    assert seen.seen == [1, 1, 1]


def test_what_ran_between_two_calls_does_not_choose_the_count(machine):
    machine["others"] = 0.0
    with threads.BlasThreads():
        threads.after_batch()
        assert blas_threads_now() == 2
    machine["busy"] += 50.0  # another program had both cores while kerspec was not working
    with threads.BlasThreads():
        threads.after_batch()
        assert blas_threads_now() == 2


def test_the_machine_is_read_again_only_once_an_interval_of_work_has_passed(machine, monkeypatch):
    reads = []
    read = threads.read_machine

    def counted():
        reads.append(1)
        return read()

    monkeypatch.setattr(threads, "read_machine", counted)
    monkeypatch.setattr(threads, "INTERVAL", 0.25)
    clock = {"now": 100.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    with threads.BlasThreads():
        assert len(reads) == 1
        clock["now"] += 0.125  # batches of a few ms: nothing to learn yet
        threads.after_batch()
        assert len(reads) == 1 and blas_threads_now() == 2
        clock["now"] += 0.125
        threads.after_batch()
        assert len(reads) == 2 and blas_threads_now() == 1
