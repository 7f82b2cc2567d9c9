"""kerspec beside PyTorch on the CPU: train and predict throughput, peak memory, and the slowdown
with another process busy on one core (issues 6 and 17).

    python bench/run.py                          # W1-W4 and R1-R5, idle then loaded, 5 rounds each
    python bench/run.py --only R1,R3 --epochs 3  # a subset (--workloads is the same option)
    python bench/run.py --quick                  # 1/8 of the samples, 1 round: a smoke run
    python bench/run.py --no-load                # idle rounds only
    python bench/run.py --json results.json      # also write every measurement
    python bench/run.py --baseline ../old-tree   # also this kerspec against another checkout's

For each workload the parent starts two child processes, one for kerspec and one for PyTorch,
each with 2 threads, and drives them in turn over a pipe: only one of them computes at any
moment, the other waits on its pipe. Each child builds its model and its data (same seed, same
numbers in both: synthetic, or the shipped .npz that R2's and R3's specs train on), runs a
warm-up round and a warm-up predict, then the rounds: one training round (one epoch, or several
short ones: R1-R3) and one predict pass each, kerspec first in even rounds and PyTorch first in
odd ones, so that drift in the machine's speed hits both. Then the same rounds again with a
competing `python -c "while True: pass"` running (the loaded column). A child times its own
calls; data generation is never timed. kerspec trains through its public API as a user runs it:
`kerspec.load(spec).fit(Dataset(...), epochs=N)`; predict is `model.predict(x,
batch_size=1024)` over the training inputs repeated to `predict_samples`.

Reported per workload: median train and predict samples/s, the median over rounds of the
per-round ratio kerspec/PyTorch (min-max in brackets), and each process's peak RSS
(`getrusage(RUSAGE_SELF).ru_maxrss` of the child, after everything it ran), with the RSS after
setup (imports, model, data) beside it. It also measures numpy's float32 GEMM rate in its own
child with the same settings and the fraction of it that W1 training reaches, beside the fraction
a third child reaches in the same rounds: W1 written out by hand in plain NumPy (numpy_w1.py),
the most a NumPy program does on this machine.

Benchmark children run with OMP/OPENBLAS/MKL_NUM_THREADS=2 and without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE, which some machines set to work around old OpenBLAS builds and which slow a
current numpy (`--keep-openblas-env` keeps them). Nothing here changes the environment of tests.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
SEED = 20240601
THREADS = 2
PREDICT_BATCH = 1024
PREDICTING = ("kerspec", "torch", "baseline")
OPENBLAS_WORKAROUNDS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    spec: str  # from the repository root
    input_shape: tuple[int, ...]
    classes: int  # 1: a binary target
    samples: int  # a training epoch's samples
    batch_size: int
    # (train ratio, predict ratio) targets: kerspec/PyTorch at least this much
    targets: tuple[float, float]
    epochs: int = 1  # training epochs a round (short epochs are timed several at a time)
    predict_samples: int = 0  # samples predicted a round (the training inputs repeated); 0: samples
    sparse: bool = False  # class-index targets (sparse_categorical_crossentropy) instead of one-hot
    tokens: int = 0  # token ids below this (0 is padding), random lengths 20-100, instead of floats
    data: str = ""  # the shipped .npz the spec trains on (from the repository root), else synthetic
    torch_axes: tuple[int, ...] | None = None  # the input's axes in PyTorch's layout


def _w(name, title, spec, *args, **kwargs) -> Workload:
    return Workload(name, title, f"bench/specs/{spec}", *args, **kwargs)


WORKLOADS = {
    w.name: w
    for w in (
        _w("W1", "MLP 784-512-256-10", "w1_mlp.yaml", (784,), 10, 16_384, 128, (1.0, 1.0)),
        _w("W2", "CNN 28x28x1", "w2_cnn.yaml", (28, 28, 1), 10, 8_192, 128, (0.7, 1.0),
           torch_axes=(0, 3, 1, 2)),
        _w("W3", "LSTM 100x1 -> 32", "w3_lstm.yaml", (100, 1), 1, 4_096, 64, (0.6, 0.8)),
        _w("W4", "LSTM 50x32 -> 128", "w4_lstm_wide.yaml", (50, 32), 10, 4_096, 64, (0.8, 0.8)),
        # Issue 17's real models.
        _w("R1", "FCN 150x1, 3 x Conv1D+BN", "r1_fcn.yaml", (150, 1), 2, 50, 50, (1.0, 1.0),
           epochs=100, predict_samples=4_096, sparse=True, torch_axes=(0, 2, 1)),
        Workload("R2", "digits_cnn 8x8x1 (shipped)", "specs/digits_cnn.yaml", (64,), 10, 1_437,
                 32, (0.8, 1.0), epochs=3, predict_samples=4_096, sparse=True,
                 data="datasets/digits/train.npz"),
        Workload("R3", "vowels_lstm, masked (shipped)", "specs/vowels_lstm.yaml", (29, 12), 9,
                 270, 16, (0.8, 1.0), epochs=10, predict_samples=4_096, sparse=True,
                 data="datasets/japanese_vowels/train.npz"),
        _w("R4", "residual CNN 32x32x3, BN", "r4_resnet.yaml", (32, 32, 3), 10, 512, 64,
           (0.8, 1.0), predict_samples=1_024, sparse=True, torch_axes=(0, 3, 1, 2)),
        _w("R5", "Embedding -> BiGRU 64, masked", "r5_text.yaml", (100,), 1, 1_024, 32,
           (0.8, 1.0), predict_samples=2_048, tokens=10_000),
    )
}  # fmt: skip
# The competing process of the loaded rounds: one core kept busy.
SPINNER = "while True: pass"
# Under load, kerspec's slowdown (loaded / idle time) must not exceed PyTorch's, nor this.
MAX_SLOWDOWN = 2.5

# W1's Dense layers (inputs, units), for counting its training FLOPs.
W1_DENSE = ((784, 512), (512, 256), (256, 10))
# The GEMM that stands for W1: its largest, a batch of 128 through the first Dense layer.
GEMM_SHAPE = (128, 784, 512)


def w1_train_flops_per_sample() -> int:
    """Forward 2*n*k per Dense; backward the same again for the kernel gradient and for the input
    gradient, except the first layer's input gradient, which nobody needs (kerspec skips it)."""
    forward = sum(2 * n * k for n, k in W1_DENSE)
    input_grads = sum(2 * n * k for n, k in W1_DENSE[1:])
    return 2 * forward + input_grads


def make_data(w: Workload, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Inputs, labels (class index, or 0/1) and sequence lengths (None unless the inputs are
    padded sequences), the same every run: the shipped data's first `samples`, else synthetic
    from a fixed seed (standard normal floats, or token ids after which come zeros)."""
    if w.data:
        with np.load(BENCH.parent / w.data) as f:
            lengths = f["lengths"][:samples] if "lengths" in f else None
            return f["x"][:samples].astype(np.float32), f["y"][:samples], lengths
    # W1-W4 keep the numbers of earlier runs; R1-R5 draw from seeds of their own.
    rng = np.random.default_rng([SEED, int(w.name[1:]) + (100 if w.name[0] == "R" else 0)])
    labels = rng.integers(0, max(w.classes, 2), samples)
    if w.tokens:
        steps = w.input_shape[0]
        lengths = rng.integers(20, steps + 1, samples)
        x = rng.integers(1, w.tokens, (samples, steps))
        x[np.arange(steps) >= lengths[:, None]] = 0
        return x.astype(np.float32), labels, lengths
    x = rng.standard_normal((samples, *w.input_shape), dtype=np.float32)
    return x, labels, None


def len_predict(w: Workload, samples: int) -> int:
    """How many samples a predict round runs over (the training inputs, repeated)."""
    if not w.predict_samples:
        return samples
    return max(PREDICT_BATCH, w.predict_samples * samples // w.samples)


def repeated(a: np.ndarray, n: int) -> np.ndarray:
    """The first n rows of a repeated (the predicted samples: the training inputs, over again)."""
    return a[np.arange(n) % len(a)]


# -- children ------------------------------------------------------------------------------------


def _rss_now_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "threadpoolctl not installed (pip install threadpoolctl)"}]
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "prefix")
    return [{k: info.get(k) for k in keys if info.get(k) is not None} for info in threadpool_info()]


class KerspecRunner:
    def __init__(self, w: Workload, samples: int):
        import kerspec
        from kerspec.training.data import Dataset

        x, labels, _ = make_data(w, samples)
        if w.classes == 1:
            y = labels.astype(np.float32)[:, None]
        elif w.sparse:
            y = labels
        else:
            y = np.eye(w.classes, dtype=np.float32)[labels]
        self.model = kerspec.load(BENCH.parent / w.spec, seed=0)
        self.x = repeated(x, len_predict(w, samples))
        self.data = Dataset(
            {self.model.input_names[0]: x},
            {self.model.output_names[0]: y},
            source="bench data",
        )
        self.epochs = w.epochs
        self.version = kerspec.__version__

    def train_round(self) -> float:
        start = time.perf_counter()
        history = self.model.fit(self.data, epochs=self.epochs)
        elapsed = time.perf_counter() - start
        self.loss = history.last()["loss"]
        return elapsed

    def predict(self) -> float:
        start = time.perf_counter()
        self.model.predict(self.x, batch_size=PREDICT_BATCH)
        return time.perf_counter() - start

    def info(self) -> dict:
        return {"kerspec": self.version, "numpy": np.__version__, "blas": _blas_info()}


class NumpyRunner:
    """W1 in plain NumPy, written out by hand (numpy_w1.py): the yardstick of the GEMM-rate target,
    trained on the same data, in the same rounds. It only trains."""

    def __init__(self, w: Workload, samples: int):
        sys.path.insert(0, str(BENCH))
        from numpy_w1 import NumpyW1

        x, labels, _ = make_data(w, samples)
        self.model = NumpyW1(x, labels, W1_DENSE, w.batch_size)

    def train_round(self) -> float:
        seconds, self.loss = self.model.train_epoch()
        return seconds


class TorchRunner:
    def __init__(self, w: Workload, samples: int):
        import torch

        sys.path.insert(0, str(BENCH))
        from torch_models import build

        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        self.torch = torch
        x, labels, lengths = make_data(w, samples)
        if w.tokens:
            x = x.astype(np.int64)
        if w.torch_axes:  # e.g. NHWC -> NCHW, PyTorch's image layout
            x = np.ascontiguousarray(x.transpose(w.torch_axes))
        self.x = torch.from_numpy(x)
        self.x_predict = torch.from_numpy(repeated(x, len_predict(w, samples)))
        # Padded sequences go in packed (pack_padded_sequence needs the lengths on the CPU).
        self.lengths = self.lengths_predict = None
        if lengths is not None:
            self.lengths = torch.from_numpy(lengths.astype(np.int64))
            self.lengths_predict = torch.from_numpy(
                repeated(lengths, len_predict(w, samples)).astype(np.int64)
            )
        if w.classes == 1:
            self.y = torch.from_numpy(labels.astype(np.float32)[:, None])
        else:
            self.y = torch.from_numpy(labels.astype(np.int64))
        self.samples, self.batch_size, self.epochs = samples, w.batch_size, w.epochs
        self.model, self.loss_fn, activation, learning_rate = build(w.name)
        self.activation = (
            torch.sigmoid if activation == "sigmoid" else lambda z: torch.softmax(z, -1)
        )
        self.outputs = w.classes
        # Keras's Adam epsilon is 1e-7 (PyTorch's default is 1e-8).
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate, eps=1e-7)
        self.generator = torch.Generator().manual_seed(0)

    def _forward(self, x, lengths, index):
        if lengths is None:
            return self.model(x[index])
        return self.model(x[index], lengths[index])

    def train_round(self) -> float:
        torch = self.torch
        start = time.perf_counter()
        self.model.train()
        for _ in range(self.epochs):
            order = torch.randperm(self.samples, generator=self.generator)
            total = 0.0
            for begin in range(0, self.samples, self.batch_size):
                index = order[begin : begin + self.batch_size]
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.loss_fn(self._forward(self.x, self.lengths, index), self.y[index])
                loss.backward()
                self.optimizer.step()
                total += loss.item() * len(index)
        elapsed = time.perf_counter() - start
        self.loss = total / self.samples
        return elapsed

    def predict(self) -> float:
        torch = self.torch
        start = time.perf_counter()
        self.model.eval()
        n = len(self.x_predict)
        with torch.inference_mode():
            out = torch.empty(n, self.outputs)
            for begin in range(0, n, PREDICT_BATCH):
                rows = slice(begin, begin + PREDICT_BATCH)
                out[rows] = self.activation(self._forward(self.x_predict, self.lengths_predict, rows))
            out.numpy()
        return time.perf_counter() - start

    def info(self) -> dict:
        torch = self.torch
        return {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "numpy": np.__version__,
        }


def group_seconds(call: Callable[[], object], seconds: float, per_group: int = 1) -> list[float]:
    """After five warm-up calls, the durations of groups of `per_group` calls, for `seconds` and
    at least five groups."""
    for _ in range(5):
        call()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        for _ in range(per_group):
            call()
        times.append(time.perf_counter() - t)
    return times


def gemm_rate(shape: tuple[int, int, int], seconds: float = 1.0) -> float:
    """numpy's float32 GEMM rate in GFLOP/s: the median of repeated timed groups of calls."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)

    def product():
        np.matmul(a, b, out=out)

    # Groups of as many calls as take about 0.1 s.
    calls = len(group_seconds(product, 0.1))
    times = group_seconds(product, seconds, per_group=calls)
    return statistics.median(2 * m * n * k * calls / t / 1e9 for t in times)


def w1_gemm_seconds(batch: int, seconds: float = 0.2) -> float:
    """The time numpy takes, a batch, for exactly W1's GEMMs at their own shapes: each Dense's
    forward `x @ W` and kernel gradient `x^T @ dy`, and the input gradient `dy @ W^T` of all but
    the first. No trainer can do W1 faster than this with these GEMMs: it is the ceiling of the
    GEMM-rate fraction printed below."""
    rng = np.random.default_rng(0)
    products = []
    for index, (n, k) in enumerate(W1_DENSE):
        x = rng.standard_normal((batch, n), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        dy = rng.standard_normal((batch, k), dtype=np.float32)
        products += [(x, w), (x.T, dy)] + ([(dy, w.T)] if index else [])
    total = 0.0
    for a, b in products:
        out = np.empty((a.shape[0], b.shape[1]), np.float32)
        product = functools.partial(np.matmul, a, b, out=out)
        total += statistics.median(group_seconds(product, seconds))
    return total


def child_main(framework: str, workload: str, samples: int, epochs: int) -> None:
    """Serve commands from the parent, one JSON line back per command."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr

    def reply(**fields):
        proto.write(json.dumps(fields) + "\n")

    if framework == "gemm":
        reply(
            gemm=gemm_rate(GEMM_SHAPE),
            gemm_large=gemm_rate((1024, 1024, 1024)),
            w1_gemm_seconds=w1_gemm_seconds(WORKLOADS["W1"].batch_size),
            blas=_blas_info(),
            numpy=np.__version__,
        )
        return
    w = WORKLOADS[workload]
    # The baseline is kerspec from another checkout (its child's PYTHONPATH names it).
    runners = {"kerspec": KerspecRunner, "baseline": KerspecRunner, "torch": TorchRunner, "numpy": NumpyRunner}
    runner = runners[framework](w, samples)
    runner.epochs = epochs
    reply(ready=True, rss_setup_kib=_rss_now_kib())
    for line in sys.stdin:
        command = line.strip()
        if command == "train":
            reply(seconds=runner.train_round(), loss=float(runner.loss))
        elif command == "predict":
            reply(seconds=runner.predict())
        elif command == "gemm":  # numpy's GEMM rate, in this process, between W1's epochs
            reply(gflops=gemm_rate(GEMM_SHAPE, seconds=0.5))
        elif command == "stats":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            reply(peak_rss_kib=peak, info=runner.info())
        elif command == "quit":
            return


# -- parent --------------------------------------------------------------------------------------


def child_env(keep_openblas_env: bool) -> dict[str, str]:
    env = dict(os.environ)
    # The children measure the kerspec of this checkout, whatever an editable install points at.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH.parent), env.get("PYTHONPATH")) if p)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(THREADS)
    if not keep_openblas_env:
        for var in OPENBLAS_WORKAROUNDS:
            env.pop(var, None)
    return env


class Child:
    def __init__(
        self, framework: str, workload: str, samples: int, env: dict[str, str], epochs: int = 1
    ):
        self.framework = framework
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", framework, workload,
             "--samples", str(samples), "--round-epochs", str(epochs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
        )  # fmt: skip

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise SystemExit(
                f"the {self.framework} child exited (code {code}); see its stderr above"
            )
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_gemm(env: dict[str, str]) -> dict:
    child = Child("gemm", "-", 0, env)
    result = child.read()
    child.proc.wait()
    return result


class Spinner:
    """The competing process of the loaded rounds: `python -c "while True: pass"`, one core busy."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", SPINNER])
        time.sleep(0.5)  # let it reach the scheduler's steady state
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def settle() -> None:
    """A pause before each timed call: the BLAS and OpenMP threads of the child that ran last spin
    on after their work for a while, and would take the cores from the next child: without it, the
    same kerspec in two slots ran slower in the slot after another kerspec (bench/RESULTS.md)."""
    time.sleep(SETTLE_SECONDS)


def run_rounds(w: Workload, children: dict[str, Child], rounds: int, label: str) -> dict:
    """Timed rounds, one training round then one predict per framework, the order rotating."""
    frameworks = list(children)
    train = {f: [] for f in children}
    predict = {f: [] for f in PREDICTING if f in children}
    losses = {f: [] for f in children}
    gemm = []
    for r in range(rounds):
        # Each framework goes first in turn, so that drift in the machine's speed hits all.
        shift = r % len(frameworks)
        order = frameworks[shift:] + frameworks[:shift]
        for framework in order:
            settle()
            answer = children[framework].ask("train")
            train[framework].append(answer["seconds"])
            losses[framework].append(answer["loss"])
        for framework in order:
            if framework in PREDICTING:
                settle()
                predict[framework].append(children[framework].ask("predict")["seconds"])
        if w.name == "W1" and label == "idle":
            gemm.append(children["kerspec"].ask("gemm")["gflops"])
        log(
            f"{w.name} {label} round {r + 1}/{rounds}: train s kerspec {train['kerspec'][-1]:.3f}"
            f" torch {train['torch'][-1]:.3f}"
            + (f" numpy {train['numpy'][-1]:.3f}" if "numpy" in train else "")
            + (f" baseline {train['baseline'][-1]:.3f}" if "baseline" in train else "")
            + f"; predict s kerspec {predict['kerspec'][-1]:.3f}"
            f" torch {predict['torch'][-1]:.3f}"
            + (f" baseline {predict['baseline'][-1]:.3f}" if "baseline" in predict else "")
        )
    return {"train": train, "predict": predict, "loss": losses, "gemm": gemm}


def run_workload(
    w: Workload, samples: int, epochs: int, rounds: int, env: dict[str, str], loaded: bool,
    baseline_env: dict[str, str] | None = None,
) -> dict:
    # W1 also trains its plain-NumPy yardstick (numpy_w1.py) in the same rounds; it only trains.
    frameworks = ["kerspec", "torch"] + (["numpy"] if w.name == "W1" else [])
    frameworks += ["baseline"] if baseline_env is not None else []
    children = {}
    setup = {}
    for framework in frameworks:  # one at a time, so that no setup is disturbed
        child_env_ = baseline_env if framework == "baseline" else env
        children[framework] = Child(framework, w.name, samples, child_env_, epochs)
        setup[framework] = children[framework].read()["rss_setup_kib"]
    try:
        for framework, child in children.items():
            log(f"{w.name} {framework}: warm-up")
            child.ask("train")
            if framework in PREDICTING:
                child.ask("predict")
        idle = run_rounds(w, children, rounds, "idle")
        under_load = None
        if loaded:
            with Spinner():
                under_load = run_rounds(w, children, rounds, "loaded")
        stats = {f: children[f].ask("stats") for f in PREDICTING if f in children}
    finally:
        for child in children.values():
            child.close()
    return {
        "workload": w.name,
        "samples": samples,
        "epochs": epochs,
        "predict_samples": len_predict(w, samples),
        "rounds": rounds,
        "train_seconds": idle["train"],
        "predict_seconds": idle["predict"],
        "loss": idle["loss"],
        "gemm_gflops": idle["gemm"],
        "loaded": None if under_load is None else {
            "train_seconds": under_load["train"], "predict_seconds": under_load["predict"]
        },
        "rss_setup_kib": {f: setup[f] for f in PREDICTING if f in setup},
        "peak_rss_kib": {f: s["peak_rss_kib"] for f, s in stats.items()},
        "info": {f: s["info"] for f, s in stats.items()},
    }


def summarize(result: dict) -> dict:
    counts = {
        "train": result["samples"] * result["epochs"],
        "predict": result["predict_samples"],
    }
    out = {}
    for kind in ("train", "predict"):
        seconds = result[f"{kind}_seconds"]
        rates = {f: [counts[kind] / s for s in seconds[f]] for f in seconds}
        ratios = [k / t for k, t in zip(rates["kerspec"], rates["torch"])]
        out[kind] = {
            "kerspec": statistics.median(rates["kerspec"]),
            "torch": statistics.median(rates["torch"]),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "best_ratio": max(rates["kerspec"]) / max(rates["torch"]),
        }
    peak, setup = result["peak_rss_kib"], result["rss_setup_kib"]
    out["memory"] = {
        "kerspec": peak["kerspec"] / 1024,
        "torch": peak["torch"] / 1024,
        "ratio": peak["kerspec"] / peak["torch"],
        "kerspec_setup": setup["kerspec"] / 1024,
        "torch_setup": setup["torch"] / 1024,
    }
    if result["loaded"] is not None:
        # The slowdown under load: the median loaded round's time over the median idle one's.
        out["loaded"] = {
            kind: {
                f: statistics.median(result["loaded"][f"{kind}_seconds"][f])
                / statistics.median(result[f"{kind}_seconds"][f])
                for f in PREDICTING
                if f in result["train_seconds"]
            }
            for kind in ("train", "predict")
        }
    return out


def met(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "NO"


def render(results: list[dict], gemm: dict, header: dict) -> str:
    lines = [
        (
            f"kerspec {header['kerspec']} / numpy {header['numpy']} vs torch {header['torch']};"
            f" {THREADS} threads each; {header['cpu']}; {header['date']}; git {header['git']}"
        ),
        f"BLAS (numpy, threadpoolctl): {header['blas']}",
        "",
        "train: samples/s over whole epochs (median); predict: samples/s at batch 1024 (median);",
        (
            "ratio: median over rounds of kerspec/PyTorch [min-max]; peak RSS of each process in MiB"
            " (RSS after setup in parentheses)."
        ),
        "",
    ]
    head = (
        "| workload | train kerspec | train torch | train ratio | target | "
        "predict kerspec | predict torch | predict ratio | target | "
        "peak RSS kerspec | peak RSS torch | RSS ratio |"
    )
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for result in results:
        w = WORKLOADS[result["workload"]]
        s = summarize(result)
        t, p, m = s["train"], s["predict"], s["memory"]
        lines.append(
            f"| {w.name} {w.title} | {t['kerspec']:,.0f} | {t['torch']:,.0f} | "
            f"{t['ratio']:.2f} [{t['ratio_min']:.2f}-{t['ratio_max']:.2f}] | "
            f">= {w.targets[0]:.1f} {met(t['ratio'], w.targets[0])} | "
            f"{p['kerspec']:,.0f} | {p['torch']:,.0f} | "
            f"{p['ratio']:.2f} [{p['ratio_min']:.2f}-{p['ratio_max']:.2f}] | "
            f">= {w.targets[1]:.1f} {met(p['ratio'], w.targets[1])} | "
            f"{m['kerspec']:,.0f} ({m['kerspec_setup']:,.0f}) | {m['torch']:,.0f} ({m['torch_setup']:,.0f}) | "
            f"{m['ratio']:.2f} {met(m['ratio'], 1.0, higher_is_better=False)} |"
        )
    lines += [
        "",
        "best-of-rounds ratios (fastest epoch / fastest epoch), less sensitive to other load:",
    ]
    for result in results:
        s = summarize(result)
        lines.append(
            f"  {result['workload']}: train {s['train']['best_ratio']:.2f},"
            f" predict {s['predict']['best_ratio']:.2f}"
        )
    lines += render_loaded(results)
    lines += render_baseline(results)
    m_, k_, n_ = GEMM_SHAPE
    lines += [
        "",
        (
            f"numpy float32 GEMM ({m_}x{k_} @ {k_}x{n_}, W1's largest), own process before the"
            f" workloads: {gemm['gemm']:.1f} GFLOP/s; 1024x1024x1024: {gemm['gemm_large']:.1f} GFLOP/s"
        ),
    ]
    w1 = next((r for r in results if r["workload"] == "W1"), None)
    if w1 is not None:
        lines += w1_gemm_fraction(w1, gemm)
    return "\n".join(lines)


def render_loaded(results: list[dict]) -> list[str]:
    """The loaded column: each framework's slowdown (loaded / idle median time) with a competing
    process busy on one core; kerspec's must not exceed PyTorch's, nor MAX_SLOWDOWN."""
    loaded = [(r["workload"], summarize(r)["loaded"]) for r in results if r["loaded"]]
    if not loaded:
        return []
    lines = [
        "",
        f"under load (`python -c \"{SPINNER}\"` busy on one core): slowdown = median loaded"
        " time / median idle time",
        "",
    ]
    head = (
        "| workload | train kerspec | train torch | target | "
        "predict kerspec | predict torch | target |"
    )
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for name, s in loaded:
        cells = []
        for kind in ("train", "predict"):
            k, t = s[kind]["kerspec"], s[kind]["torch"]
            ok = k <= t and k <= MAX_SLOWDOWN
            cells += [f"{k:.2f}x", f"{t:.2f}x", f"<= torch's, <= {MAX_SLOWDOWN} {met(ok, True)}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_baseline(results: list[dict]) -> list[str]:
    """This checkout's kerspec against the baseline checkout's, in the same rounds: the median
    over rounds of baseline time / this time (above 1: this tree is faster)."""
    if not results or "baseline" not in results[0]["train_seconds"]:
        return []
    lines = [
        "",
        "this tree against --baseline, same rounds: median over rounds of baseline time / this"
        " tree's time [min-max] (above 1.00: this tree is faster)",
        "",
        "| workload | train | predict | train loaded | predict loaded |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in results:
        cells = []
        for rounds in (result, result["loaded"]):
            for kind in ("train", "predict"):
                if rounds is None:
                    cells.append("-")
                    continue
                seconds = rounds[f"{kind}_seconds"]
                ratios = [b / k for b, k in zip(seconds["baseline"], seconds["kerspec"])]
                cells.append(f"{statistics.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}]")
        lines.append(f"| {result['workload']} | " + " | ".join(cells) + " |")
    return lines


def w1_gemm_fraction(w1: dict, own: dict) -> list[str]:
    """W1's training FLOP rate against numpy's GEMM rate measured in the kerspec child right after
    each round's epochs (same process, same moment): the median over rounds of the fraction. Also
    the ceiling: W1's GEMMs alone, timed at their own shapes in the GEMM process."""
    flops = w1_train_flops_per_sample()
    gemm = w1["gemm_gflops"]
    batch = WORKLOADS["W1"].batch_size
    ceiling = flops * batch / own["w1_gemm_seconds"] / 1e9
    lines = [
        (
            f"numpy float32 GEMM {GEMM_SHAPE[0]}x{GEMM_SHAPE[1]} @ {GEMM_SHAPE[1]}x{GEMM_SHAPE[2]} in the"
            f" W1 kerspec process, each round: median {statistics.median(gemm):.1f} GFLOP/s"
            f" [{min(gemm):.1f}-{max(gemm):.1f}]"
        )
    ]
    names = {
        "kerspec": "kerspec", "torch": "torch", "numpy": "plain NumPy (numpy_w1.py)",
        "baseline": "kerspec of --baseline",
    }
    for framework, seconds in w1["train_seconds"].items():
        rates = [w1["samples"] / s * flops / 1e9 for s in seconds]
        fractions = [r / g for r, g in zip(rates, gemm)]
        lines.append(
            f"W1 training, {names[framework]}: {statistics.median(rates):.1f} GFLOP/s"
            f" ({flops / 1e6:.2f} MFLOP a sample) = {100 * statistics.median(fractions):.0f}% of numpy's"
            f" GEMM rate (median over rounds)"
            + ("; target >= 70%" if framework == "kerspec" else "")
        )
    lines.append(
        f"W1's GEMMs alone, at their own shapes (own process): {own['w1_gemm_seconds'] * 1e3:.2f} ms"
        f" a batch of {batch}, {ceiling:.1f} GFLOP/s = {100 * ceiling / own['gemm']:.0f}% of that"
        " process's rate: the most a trainer that did nothing else could reach"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads",
        "--only",
        default=",".join(WORKLOADS),
        help="comma-separated, e.g. R1,R3 (default: all)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="timed rounds (one epoch + one predict each) after the warm-up; default 5",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1/8 of the samples and of R1-R3's epochs a round, 1 round (unless --epochs):"
        " a smoke run",
    )
    parser.add_argument(
        "--no-load",
        action="store_true",
        help="skip the loaded rounds (the same rounds again beside a process busy on one core)",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another kerspec checkout (a folder holding kerspec/), run in the same rounds",
    )
    parser.add_argument(
        "--keep-openblas-env",
        action="store_true",
        help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the children's environment",
    )
    parser.add_argument(
        "--child", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS
    )
    parser.add_argument("--samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--round-epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child[0], args.child[1], args.samples, args.round_epochs)
        return

    names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}; expected some of {', '.join(WORKLOADS)}"
        )
    rounds = args.epochs if args.epochs is not None else (1 if args.quick else 5)
    if rounds < 1:
        parser.error("--epochs must be at least 1")
    try:
        import torch  # noqa: F401  (only to fail early with the install hint)
    except ImportError:
        raise SystemExit(
            "PyTorch is not installed: pip install -e '.[bench]' (see bench/README.md)"
        )

    env = child_env(args.keep_openblas_env)
    baseline_env = None
    if args.baseline is not None:
        if not (args.baseline / "kerspec" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no kerspec/ package in that folder")
        baseline_env = dict(env, PYTHONPATH=os.pathsep.join([str(args.baseline.resolve()), env["PYTHONPATH"]]))
    dropped = [v for v in OPENBLAS_WORKAROUNDS if v in os.environ and v not in env]
    if dropped:
        log(f"benchmark children run without {', '.join(dropped)} (--keep-openblas-env keeps them)")
    load_before = os.getloadavg()
    log("numpy GEMM rate ...")
    gemm = run_gemm(env)
    results = []
    for name in names:
        w = WORKLOADS[name]
        samples = max(w.batch_size, w.samples // 8) if args.quick else w.samples
        epochs = max(1, w.epochs // 8) if args.quick else w.epochs
        results.append(
            run_workload(w, samples, epochs, rounds, env, loaded=not args.no_load, baseline_env=baseline_env)
        )
    info = results[0]["info"] if results else {"kerspec": {}, "torch": {}}
    blas = "; ".join(
        ", ".join(f"{k}={v}" for k, v in b.items() if k != "prefix") for b in gemm["blas"]
    )
    header = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "kerspec": info["kerspec"].get("kerspec", "?"),
        "numpy": gemm["numpy"],
        "torch": info["torch"].get("torch", "?"),
        "blas": blas,
        "git": _git_state(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "quick": args.quick,
    }
    if args.json:  # first, so that the measurements outlive a failure to render them
        payload = {
            "header": header,
            "gemm": gemm,
            "results": results,
            "summary": {r["workload"]: summarize(r) for r in results},
        }
        args.json.write_text(json.dumps(payload, indent=1))
    print(render(results, gemm, header))
    print(
        f"\nload average before {load_before[0]:.2f}, after {header['load_average_after'][0]:.2f}"
        " (anything else running on the machine skews the numbers)"
    )
    if args.quick:
        print("--quick: 1/8 of the samples; a smoke run, not a result")


def _git_state() -> str:
    """The commit measured, and whether kerspec/ had uncommitted changes then."""
    repo = BENCH.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "kerspec"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in kerspec/" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
