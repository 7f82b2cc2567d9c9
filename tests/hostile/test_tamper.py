"""Hypothesis tampers with one file of a finished run folder (truncates it, flips bytes, swaps or
reshapes its arrays, edits its JSON fields); `--resume`, `evaluate` and `runs` then end with exit
0 or 1 and a message, never a traceback, and never write non-finite weights.

Examples per test: tests/fuzzing.py's profile scaled down (a run per example); KERSPEC_FUZZ=long
for many.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kerspec.cli import app
from tests.fuzzing import FUZZ
from tests.test_cli import SMALL, write_data

TAMPERED = settings(FUZZ, max_examples=max(FUZZ.max_examples // 10, 12))
FILES = ["checkpoint.npz", "weights.npz", "run.json", "metrics.json", "history.csv", "spec.yaml",
         ".kerspec-manifest.json"]
runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tamper")
    write_data(folder, "train.npz", 40, 1)
    write_data(folder, "test.npz", 16, 2)
    (folder / "small.yaml").write_text(SMALL)
    result = runner.invoke(app, ["train", str(folder / "small.yaml"), "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files}


@st.composite
def tampering(draw):
    name = draw(st.sampled_from(FILES))
    how = draw(st.sampled_from(["truncate", "flip", "arrays", "json"]))
    return name, how, draw(st.randoms(use_true_random=False))


def tamper(path: Path, how: str, rng) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(len(data) + 1)])
    elif how == "flip":
        changed = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            changed[rng.randrange(len(changed))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(changed))
    elif how == "arrays" and path.suffix == ".npz":
        arrays = _arrays(path)
        keys = [k for k in arrays if k != "meta"]
        a, b = rng.choice(keys), rng.choice(keys)
        choice = rng.randrange(4)
        if choice == 0:
            arrays[a], arrays[b] = arrays[b], arrays[a]
        elif choice == 1:
            arrays[a] = arrays[a].reshape(-1)[::-1].reshape(-1, 1)
        elif choice == 2:
            arrays[a] = np.full_like(arrays[a], rng.choice([np.nan, np.inf, 1e38]))
        else:
            arrays[a] = arrays[a].astype(rng.choice([np.float64, np.int8, np.bool_]))
        np.savez(path, **arrays)
    elif how == "json" and path.suffix == ".npz" and "meta" in _arrays(path):
        arrays = _arrays(path)
        meta = json.loads(str(arrays["meta"]))
        key = rng.choice(sorted(meta))
        meta[key] = rng.choice([None, -1, 10**40, "x", [], {}, 1.5, True])
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez(path, **arrays)
    elif how == "json" and path.suffix == ".json":
        try:
            info = json.loads(data)
        except ValueError:
            return
        if isinstance(info, dict) and info:
            key = rng.choice(sorted(info))
            info[key] = rng.choice([None, -1, 10**40, "x", [], {}, 1.5, True, "running"])
        path.write_text(json.dumps(info))
    else:
        path.write_bytes(data[::-1])


def _no_crash(result) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.stderr.strip(), "exit 1 without a message"


def _finite_weights(run: Path) -> None:
    for name in ("weights.npz", "checkpoint.npz"):
        path = run / name
        try:
            arrays = _arrays(path)
        except Exception:  # damaged by the test itself, not written by kerspec
            continue
        for key, array in arrays.items():
            if key.startswith(("weights/", "hidden/", "label/")) and array.dtype.kind == "f":
                assert np.all(np.isfinite(array)), (name, key)


@TAMPERED
@given(tampering())
def test_a_tampered_run_folder_ends_with_a_message(finished, tmp_path_factory, case):
    name, how, rng = case
    run = tmp_path_factory.mktemp("case") / "run"
    shutil.copytree(finished / "run", run)
    tamper(run / name, how, rng)
    before = (run / name).read_bytes()
    spec = finished / "small.yaml"
    resumed = runner.invoke(app, ["train", str(spec), "--resume", str(run), "--epochs", "3"])
    _no_crash(resumed)
    if resumed.exit_code == 1:
        assert (run / name).read_bytes() == before  # refused: the folder as it was
    else:
        _finite_weights(run)
    _no_crash(runner.invoke(app, ["evaluate", str(spec), "--weights", str(run / "weights.npz")]))
    _no_crash(runner.invoke(app, ["runs", str(run.parent)]))
