"""SIGKILL at random moments: `kerspec train` is a real subprocess, killed (no handler runs, no
`finally`) at 20 seeded random moments spread over a run's measured duration, from before the run
folder exists to the final weights and metrics. After every kill each file of the run folder is
complete and readable or absent, and the run carries on with `--resume` to the weights of a run
that was never stopped, bit for bit; when nothing resumable was written, `--resume` says so (exit
1) and a fresh start in the same folder does the same.

So that kills land inside writes too, not only between them, the killed processes write slowly:
a `sitecustomize` module (on PYTHONPATH only for them) makes `kerspec.io`'s atomic_write put each
file's bytes into its temporary file in four pieces with a pause after each. Everything else (the
temporary file, fsync, rename) is kerspec's own code. The resumes run in this process.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import kerspec
from kerspec.cli import app
from kerspec.runs import describe_run

ROOT = Path(__file__).resolve().parent.parent
KILLS = 20
EPOCHS = 6
PAUSE = 0.004  # seconds after each quarter of a file

SPEC = f"""\
name: killable
seed: 3
layers:
  - {{type: Input, shape: [6]}}
  - {{type: Dense, units: 16, activation: relu, name: hidden}}
  - {{type: Dropout, rate: 0.2}}
  - {{type: Dense, units: 3, activation: softmax, name: label}}
compile:
  optimizer: {{type: adam, learning_rate: 0.01}}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: train.npz
fit:
  epochs: {EPOCHS}
  batch_size: 16
  validation_split: 0.2
  callbacks:
    - {{type: CSVLogger, filename: log.csv}}
"""

SLOW_WRITES = """\
import io, os, time

if os.environ.get("KERSPEC_TEST_SLOW_WRITES"):
    import kerspec.io
    import kerspec.io.files

    _atomic_write = kerspec.io.files.atomic_write
    _pause = float(os.environ["KERSPEC_TEST_SLOW_WRITES"])

    def atomic_write(path, write, **options):
        def slowly(file):
            buffer = io.BytesIO()
            write(buffer)
            data = buffer.getvalue()
            step = len(data) // 4 + 1
            for start in range(0, len(data), step):
                file.write(data[start : start + step])
                file.flush()
                time.sleep(_pause)

        _atomic_write(path, slowly, **options)

    # Both names it is reached by: kerspec.io's own writers, and modules calling io.atomic_write.
    kerspec.io.files.atomic_write = atomic_write
    kerspec.io.atomic_write = atomic_write
"""

FILES = {"spec.yaml", "run.json", "history.csv", "log.csv", "checkpoint.npz", "weights.npz",
         "metrics.json", ".kerspec-manifest.json"}
LOCK = ".kerspec-lock"  # a killed run's, taken over by the next
# What kerspec.io.atomic_write leaves when killed: mkstemp's `.NAME.XXXXXXXX.tmp`.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(480, 6)).astype(np.float32)
    np.savez(folder / "train.npz", x=x, y=(x[:, 0] > 0).astype(int) + (x[:, 1] > 1))
    spec = folder / "spec.yaml"
    spec.write_text(SPEC)
    hooks = folder / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_WRITES)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]),
        "KERSPEC_TEST_SLOW_WRITES": str(PAUSE),
        "COLUMNS": "120",
    }
    return folder, spec, env


def start(spec: Path, run: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kerspec", "train", str(spec), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture(scope="module")
def reference(setting):
    """An uninterrupted run (the same subprocess, slow writes and seed): its files, when its folder
    appeared (from the start) and how long it then took to write everything."""
    folder, spec, env = setting
    run = folder / "reference"
    began = time.monotonic()
    process = start(spec, run, env)
    appeared = written = None
    while process.poll() is None:
        now = time.monotonic()
        if appeared is None and run.exists():
            appeared = now
        if written is None and (run / "metrics.json").exists():
            written = now
        time.sleep(0.001)
    assert process.returncode == 0
    assert appeared is not None and written is not None
    assert sorted(p.name for p in run.iterdir()) == sorted(FILES)
    return {
        "run": run,
        "appeared": appeared - began,
        "writing": written - appeared,
        "text": {n: (run / n).read_text() for n in ("spec.yaml", "history.csv", "log.csv",
                                                    "metrics.json")},
        "weights": dict(np.load(run / "weights.npz", allow_pickle=False)),
        "checkpoint_keys": set(np.load(run / "checkpoint.npz", allow_pickle=False).files),
    }


def kill_moments(appeared: float, writing: float) -> list[tuple[str, float]]:
    """Seeded: a few counted from the start, before the run folder appears (interpreter start,
    imports, loading the data); the rest counted from when the folder appears (which varies more
    from run to run than what follows), spread evenly over the training and writing up to a little
    after the last file, one at random in each of equal slices."""
    rng = random.Random(7)
    early = 3
    moments = [("start", rng.uniform(0.1, 0.9) * appeared) for _ in range(early)]
    span = writing * 1.05 / (KILLS - early)
    moments += [("folder", (i + rng.random()) * span) for i in range(KILLS - early)]
    return moments


def kill_at(spec: Path, run: Path, env: dict, since: str, moment: float) -> subprocess.Popen:
    process = start(spec, run, env)
    if since == "folder":
        deadline = time.monotonic() + 60
        while not run.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
    try:
        process.wait(timeout=moment)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process


# -- what a killed run folder may hold -----------------------------------------------------------


def check_folder(run: Path, ref: dict) -> str:
    """Assert every file is complete and readable (or absent) and consistent with the others;
    return which phase the folder shows."""
    if not run.exists():
        return "before the run folder existed"
    names = {p.name for p in run.iterdir()}
    assert all((run / n).is_file() for n in names), names
    partial = sorted(n for n in names - FILES - {LOCK})
    listed = set()
    if ".kerspec-manifest.json" in names:
        listed = set(json.loads((run / ".kerspec-manifest.json").read_text())["temporaries"])
    for name in partial:
        match = TEMPORARY.match(name)
        assert match and match["name"].lstrip(".") in {f.lstrip(".") for f in FILES}, f"unexpected file {name!r} in {run}"
        # Listed before it was made, so the next run deletes it; except the manifest's first.
        assert name in listed or ".kerspec-manifest.json" not in names, (name, listed)
    present = names & FILES

    if "spec.yaml" in present:
        text = (run / "spec.yaml").read_text()
        assert isinstance(yaml.safe_load(text), dict)
        kerspec.from_yaml(text)  # a valid kerspec spec (its data paths are absolute)
        assert text == ref["text"]["spec.yaml"]
    info = None
    if "run.json" in present:
        info = json.loads((run / "run.json").read_text())
        assert info["seed"] == 3 and info["status"] in ("running", "finished")
        assert 0 <= info["epochs_done"] <= EPOCHS
        if info["status"] == "finished":  # said only once every file is written
            assert {"weights.npz", "metrics.json"} <= present
            assert info["epochs_done"] == EPOCHS
    done = None
    if "checkpoint.npz" in present:
        with np.load(run / "checkpoint.npz", allow_pickle=False) as saved:
            assert set(saved.files) == ref["checkpoint_keys"]
            arrays = {k: saved[k] for k in saved.files}
        done = json.loads(str(arrays["meta"]))["epoch"]
        assert 0 <= done <= EPOCHS
        assert "run.json" in present and "spec.yaml" in present
        assert info["epochs_done"] <= done
        assert "history.csv" in present or done <= 1
    rows = {}
    for name in ("history.csv", "log.csv"):
        if name in present:
            text = (run / name).read_text()
            table = list(csv.reader(text.splitlines()))
            assert table and table[0][0] == "epoch", name
            assert all(len(row) == len(table[0]) for row in table), name
            for row in table[1:]:
                [float(cell) for cell in row]
            # What was written is what the uninterrupted run wrote, up to some epoch.
            assert ref["text"][name].startswith(text), (name, text, ref["text"][name])
            rows[name] = len(table) - 1
    if "history.csv" in present:
        # history.csv is written after the checkpoint: it never runs ahead of it.
        assert done is not None and done - 1 <= rows["history.csv"] <= done
    if "log.csv" in present:
        # The CSVLogger writes before the run folder's checkpoint: at most one epoch ahead.
        assert done is not None and done <= rows["log.csv"] <= done + 1
    if "weights.npz" in present:
        with np.load(run / "weights.npz", allow_pickle=False) as saved:
            assert set(saved.files) == set(ref["weights"])
            for key in saved.files:
                np.testing.assert_array_equal(saved[key], ref["weights"][key], err_msg=key)
        assert done == EPOCHS
    if "metrics.json" in present:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics == json.loads(ref["text"]["metrics.json"])
        assert "weights.npz" in present
    # `kerspec runs` reads a killed run (and never a temporary file) as it is.
    listed = describe_run(run)
    assert listed is None if info is None else listed["status"] in ("unfinished", "finished")

    after = "" if done is None else f" (checkpoint after epoch {done})"
    if partial:
        return "writing " + ", ".join(TEMPORARY.match(n)["name"] for n in partial) + after
    if done is None:
        return "run folder begun, no checkpoint yet"
    if info["status"] == "finished":
        return "finished"
    if "weights.npz" in present:
        return "final files" + after
    return f"training epoch {done + 1}" if done < EPOCHS else "after the last checkpoint"


def checkpoint_epoch(run: Path) -> int | None:
    if not (run / "checkpoint.npz").is_file():
        return None
    with np.load(run / "checkpoint.npz", allow_pickle=False) as saved:
        return json.loads(str(saved["meta"]))["epoch"]


def assert_resumed_note(stderr: str, done: int, where: str = "") -> None:
    if done == EPOCHS:
        note = "was stopped after its last epoch (6), before writing its final files; writing"
    else:
        note = f"resuming after epoch {done} of {EPOCHS}"
    assert note in stderr, (where, stderr)


def assert_like_the_reference(run: Path, ref: dict) -> None:
    names = sorted(p.name for p in run.iterdir())
    assert names == sorted(FILES), names  # no temporary file left behind
    for name, text in ref["text"].items():
        assert (run / name).read_text() == text, name
    with np.load(run / "weights.npz", allow_pickle=False) as saved:
        assert set(saved.files) == set(ref["weights"])
        for key in saved.files:
            np.testing.assert_array_equal(saved[key], ref["weights"][key], err_msg=key)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_done"] == EPOCHS


def test_sigkill_at_random_moments_leaves_complete_files_and_the_run_resumes(setting, reference):
    folder, spec, env = setting
    ref = reference
    runner = CliRunner()
    phases = []
    for index, (since, moment) in enumerate(kill_moments(ref["appeared"], ref["writing"])):
        run = folder / f"run{index}"
        process = kill_at(spec, run, env, since, moment)
        where = f"kill {index}, {moment:.3f} s after the {since}"
        try:
            phase = check_folder(run, ref)
        except AssertionError as err:
            raise AssertionError(f"{where}: {err}") from err
        phases.append(f"{where}: {phase}")

        assert process.returncode in (0, -9), where
        if phase == "finished":  # all written (killed while exiting, or the moment came later)
            result = runner.invoke(app, ["train", str(spec), "--resume", str(run)])
            assert result.exit_code == 1, (where, result.output)
            assert f"the run has finished its {EPOCHS} epochs" in result.stderr, where
        else:
            assert process.returncode == -9, where
            done_before = checkpoint_epoch(run)
            result = runner.invoke(app, ["train", str(spec), "--resume", str(run)])
            if (run / "checkpoint.npz").is_file():
                assert result.exit_code == 0, (where, phase, result.output)
                assert_resumed_note(result.stderr, done_before, where)
            else:
                # Nothing to carry on from: said so, with the command that starts afresh.
                assert result.exit_code == 1, (where, phase, result.output)
                assert "nothing to resume" in result.stderr, (where, result.stderr)
                assert f"--out {run} --overwrite" in result.stderr, (where, result.stderr)
                assert "Traceback" not in result.output
                result = runner.invoke(app, ["train", str(spec), "--out", str(run), "--overwrite"])
                assert result.exit_code == 0, (where, phase, result.output)
        try:
            assert_like_the_reference(run, ref)
        except AssertionError as err:
            raise AssertionError(f"{where} ({phase}), after carrying on: {err}") from err
    print(f"\nreference run: folder after {ref['appeared']:.3f} s, then {ref['writing']:.3f} s")
    print("\n".join(phases))


# -- the states a kill can leave, made by hand: regression cases ----------------------------------


def killed_copy(ref: dict, run: Path, names: list[str], *, info: dict | None = None,
                history_rows: int | None = None) -> None:
    """A run folder as a kill leaves it: some of the reference's files, run.json still
    "running", history.csv cut short, and a half-written temporary file."""
    run.mkdir()
    for name in [*names, ".kerspec-manifest.json"]:
        (run / name).write_bytes((ref["run"] / name).read_bytes())
    if info is not None:
        base = json.loads((ref["run"] / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**base, "ended": None, **info}))
    if history_rows is not None:
        lines = ref["text"]["history.csv"].splitlines()[: history_rows + 1]
        (run / "history.csv").write_text("\n".join(lines) + "\n")
    (run / ".weights.npz.k1ll3d_x.tmp").write_bytes(b"PK\x03\x04 half a zip")
    manifest = json.loads((run / ".kerspec-manifest.json").read_text())
    manifest["temporaries"].append(".weights.npz.k1ll3d_x.tmp")
    (run / ".kerspec-manifest.json").write_text(json.dumps(manifest))
    (run / LOCK).write_text(json.dumps({"pid": 999999999, "started": "1"}))


def resume(spec: Path, run: Path):
    return CliRunner().invoke(app, ["train", str(spec), "--resume", str(run)])


def test_a_run_killed_after_its_last_checkpoint_is_finished_by_resuming(setting, reference):
    folder, spec, _ = setting
    run = folder / "after-last-checkpoint"
    # Killed while writing the last history.csv: checkpoint at epoch 6, no final files.
    names = ["spec.yaml", "checkpoint.npz", "log.csv"]
    killed_copy(reference, run, names, info={"status": "running", "epochs_done": 5},
                history_rows=5)
    result = resume(spec, run)
    assert result.exit_code == 0, result.output
    assert_resumed_note(result.stderr, EPOCHS)
    assert_like_the_reference(run, reference)  # the temporary file is gone too


def test_a_run_killed_before_its_metrics_is_finished_by_resuming(setting, reference):
    folder, spec, _ = setting
    run = folder / "before-metrics"
    names = ["spec.yaml", "checkpoint.npz", "log.csv", "history.csv", "weights.npz"]
    killed_copy(reference, run, names, info={"status": "running"})
    result = resume(spec, run)
    assert result.exit_code == 0, result.output
    assert_like_the_reference(run, reference)
    # Finished now: a second resume is refused.
    result = resume(spec, run)
    assert result.exit_code == 1
    assert f"the run has finished its {EPOCHS} epochs" in result.stderr


def test_a_run_killed_before_its_first_checkpoint_has_nothing_to_resume(setting, reference):
    folder, spec, _ = setting
    for case, names in [("no-folder", None), ("begun", ["spec.yaml"])]:
        run = folder / case
        if names is not None:
            killed_copy(reference, run, names, info={"status": "running", "epochs_done": 0})
        result = resume(spec, run)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert result.stderr.startswith(f"{run}: ")
        assert "nothing to resume" in result.stderr
        assert f"start it afresh with: kerspec train {spec} --out {run} --overwrite" in result.stderr
        result = CliRunner().invoke(app, ["train", str(spec), "--out", str(run), "--overwrite"])
        assert result.exit_code == 0, result.output
        assert_like_the_reference(run, reference)


def test_resume_still_refuses_a_folder_that_is_not_a_run(setting):
    folder, spec, _ = setting
    other = folder / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    result = resume(spec, other)
    assert result.exit_code == 1
    assert "nothing to resume: not a kerspec run folder, or one without spec.yaml" in result.stderr
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
