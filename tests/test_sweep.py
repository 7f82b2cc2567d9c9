"""`kerspec sweep` and `kerspec train --seeds`, run as a user runs them.

One Ray cluster (`ray start --head` on a free loopback port) serves every test that needs Ray:
the sweeps join it with `--address` (or RAY_ADDRESS), so the tests also prove that trials run on
a cluster reached by address. The cluster is stopped, by its process group, at teardown.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from kerspec.cli import app
from kerspec.spec.source import parse_yaml
from kerspec.sweep.load import set_option

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

SPEC = """\
name: tiny
seed: 3
layers:
  - {type: Input, shape: [4], name: features}
  - {type: Dense, units: 5, activation: relu, name: hidden}
  - {type: Dense, units: 3, activation: softmax, name: label}
compile:
  optimizer: {type: adam, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: train.npz
  test: test.npz
fit: {epochs: 3, batch_size: 16, validation_split: 0.25}
"""


def cli(*args, env=None):
    result = runner.invoke(app, [str(a) for a in args], env=env)
    assert "Traceback" not in result.output, result.output
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with the tiny spec and its data; the current folder, as a user's would be."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "test.npz", x=x[:16], y=y[:16])
    (tmp_path / "tiny.yaml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_sweep(folder: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def read_trials(folder: Path) -> list[dict]:
    with open(folder / "trials.csv", newline="") as file:
        return list(csv.DictReader(file))


# -- without Ray ----------------------------------------------------------------------------------


BAD = {
    "unknown path": ("parameters:\n  layers.hiden.units: {choice: [4, 8]}\n", "4:33",
                     "did you mean 'hidden'"),
    "unknown field": ("parameters:\n  compile.optimizer.learnin_rate: {grid: [0.1]}\n", "4:43",
                      "did you mean 'learning_rate'"),
    "refused value": ("parameters:\n  layers.hidden.units: {choice: [4, -2]}\n", "4:37",
                      "greater than 0"),
    "bad distribution": ("parameters:\n  fit.epochs: {chioce: [1, 2]}\n", "4:15",
                         "did you mean 'choice'"),
    "bad range": ("parameters:\n  fit.batch_size: {loguniform: [8, 2]}\n", "4:32",
                  "lower bound must be below"),
    "wrong type": ("parameters:\n  seed: {grid: 3}\nsamples: two\n", "4:16", "valid list"),
    "grace beyond epochs": ("parameters:\n  seed: {grid: [1]}\nscheduler: {type: asha, grace_period: 9}\n",
                            "5:39", "more than the 3 epochs"),
    "unknown key": ("parameters:\n  seed: {grid: [1]}\nserach: grid\n", "5:1", "did you mean 'search'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_files_are_located_and_start_no_ray(project, case, monkeypatch):
    body, place, words = BAD[case]
    path = write_sweep(project, "spec: tiny.yaml\nmetric: val_accuracy\n" + body)
    try:
        import ray
    except ImportError:
        pass
    else:
        monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    for command in (["sweep", path], ["validate", path]):
        result = cli(*command)
        assert result.exit_code == 1
        assert f"sweep.yaml:{place}:" in result.output and words in result.output, result.output


def test_unknown_metric_is_located(project):
    path = write_sweep(project, "spec: tiny.yaml\nmetric: val_acuracy\nparameters: {seed: {grid: [1]}}\n")
    result = cli("sweep", path)
    assert result.exit_code == 1
    assert "sweep.yaml:2:9: the model does not log 'val_acuracy'" in result.output
    assert "did you mean 'val_accuracy'" in result.output


def test_validate_takes_sweep_files_and_schema_describes_them(project):
    path = write_sweep(project, "spec: tiny.yaml\nmetric: loss\nparameters: {seed: {grid: [1, 2]}}\n")
    result = cli("validate", path, "tiny.yaml")
    assert result.exit_code == 0 and "sweep.yaml: ok" in result.output and "tiny.yaml: ok" in result.output
    schema = json.loads(cli("schema", "--sweep").stdout)
    assert schema["title"] == "kerspec sweep" and "parameters" in schema["properties"]


def test_sweep_without_ray_says_how_to_install(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = write_sweep(project, "spec: tiny.yaml\nmetric: loss\nparameters: {seed: {grid: [1]}}\n")
    result = cli("sweep", path)
    assert result.exit_code == 1 and "pip install 'kerspec[sweep]'" in result.output
    assert not (project / "runs").exists()


def test_seeds_without_ray_train_one_after_another(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = cli("train", "tiny.yaml", "--seeds", "3", "--epochs", "2", "--out", "seeds")
    assert result.exit_code == 0, result.output
    assert "one after another" in result.output
    assert "over 3 seeds (3-5" in result.output
    assert "± " in result.output and "min " in result.output
    trials = read_trials(project / "seeds")
    assert sorted(t["seed"] for t in trials) == ["3", "4", "5"]
    assert (project / "seeds" / "trials.csv").read_text().splitlines()[0].count("seed") == 1
    assert all(t["status"] == "finished" and t["epochs"] == "2" for t in trials)
    weights = [np.load(project / "seeds" / t["folder"] / "weights.npz")["hidden/kernel"] for t in trials]
    assert not np.array_equal(weights[0], weights[1])  # the seeds differ


def test_a_resumed_trial_waits_for_its_earlier_worker_to_let_go(project):
    """Ray ends the worker of an interrupted trial after the driver has moved on; the trial run
    again meanwhile waits for the folder's lock instead of failing."""
    from kerspec.sweep.trial import train_trial

    run_dir = project / "trial-0000"
    train_trial("tiny.yaml", ["fit.epochs=1"], run_dir)
    hold = ("import sys, time; from kerspec.folders import Lock; Lock(sys.argv[1]).acquire();"
            " print('locked', flush=True); time.sleep(1)")
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(run_dir)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        final = train_trial("tiny.yaml", ["fit.epochs=2"], run_dir)
    finally:
        holder.wait(30)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["epochs_done"] == 2 and "loss" in final


def test_a_trial_stopped_before_its_first_checkpoint_starts_afresh(project, monkeypatch):
    """Ray may end a trial's worker right after its run.json, before its first checkpoint (the
    Ctrl-C of a sweep): run again, the trial starts over in its folder instead of failing."""
    from kerspec.runs import CHECKPOINT, RunFolder
    from kerspec.sweep.trial import train_trial

    write = RunFolder._write_arrays

    def stopped_at_the_first_checkpoint(self, name, arrays):
        if name == CHECKPOINT:
            raise KeyboardInterrupt
        write(self, name, arrays)

    run_dir = project / "trial-0000"
    monkeypatch.setattr(RunFolder, "_write_arrays", stopped_at_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_trial("tiny.yaml", ["fit.epochs=1"], run_dir)
    assert (run_dir / "run.json").is_file() and not (run_dir / CHECKPOINT).exists()
    monkeypatch.setattr(RunFolder, "_write_arrays", write)
    final = train_trial("tiny.yaml", ["fit.epochs=1"], run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["epochs_done"] == 1 and "loss" in final


def test_a_trial_folder_with_a_foreign_file_and_no_checkpoint_is_not_trained_over(project):
    from kerspec.errors import RunError
    from kerspec.sweep.trial import train_trial

    run_dir = project / "trial-0000"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{}")  # not written by kerspec: no manifest lists it
    with pytest.raises(RunError, match="not one of"):
        train_trial("tiny.yaml", ["fit.epochs=1"], run_dir)
    assert (run_dir / "run.json").read_text() == "{}"


def test_a_trial_folder_tune_did_not_get_from_kerspec_is_refused():
    from kerspec.errors import KerspecError
    from kerspec.sweep.trial import trial_name, trial_number

    assert trial_number(trial_name(7)) == 7
    with pytest.raises(KerspecError, match="earlier kerspec"):
        trial_number("1a2b3_00007")  # Tune's own trial ids named the folders before


@pytest.mark.parametrize("value", [1.0e-4, 0.1, 3, "yes", "1.5", None, True, [1, 2], {"type": "l2"}, "a b"])
def test_set_options_read_back_the_value(value):
    text = set_option("x", value).partition("=")[2]
    assert parse_yaml(text, "value")[0] == value


# -- on a Ray cluster ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    port = _free_port()
    # Ray's token authentication guards real clusters; this one listens on loopback only and
    # lives for this module.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    patch.delenv("RAY_ADDRESS", raising=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--object-store-memory=100000000", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the Ray head did not start")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(head)
        patch.undo()


def _stop(process: subprocess.Popen) -> None:
    """The head and every process it started (they share its new process group)."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the group may outlive its leader for a moment
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)


GRID = """\
spec: tiny.yaml
metric: val_accuracy
parameters:
  compile.optimizer.learning_rate: {grid: [0.01, 0.05]}
  layers.hidden.units: {grid: [4, 8]}
search: grid
"""


def test_grid_sweep_on_a_cluster_ranks_trials_and_reproduces_the_best(project, cluster):
    path = write_sweep(project, GRID)
    result = cli("sweep", path, "--out", "sw", "--address", cluster, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    folder = project / "sw"
    trials = read_trials(folder)
    assert len(trials) == 4 and all(t["status"] == "finished" for t in trials)
    scores = [float(t["val_accuracy"]) for t in trials]
    assert scores == sorted(scores, reverse=True)
    assert {(t["compile.optimizer.learning_rate"], t["layers.hidden.units"]) for t in trials} == {
        ("0.01", "4"), ("0.01", "8"), ("0.05", "4"), ("0.05", "8")}
    manifest = json.loads((folder / "sweep.json").read_text())
    assert manifest["status"] == "finished" and manifest["address"] == cluster
    assert (folder / "curves.svg").read_text().startswith("<svg")
    listed = json.loads(cli("runs", folder, "--json").stdout)
    assert sorted(Path(r["folder"]).name for r in listed) == [f"trial-000{i}" for i in range(4)]
    # The best trial's command, as printed, trains the same weights bit for bit.
    best = folder / trials[0]["folder"]
    words = shlex.split(report["best_command"])
    assert words[:3] == ["kerspec", "train", "tiny.yaml"]
    again = cli(*words[1:], "--out", "again")
    assert again.exit_code == 0, again.output
    ours, theirs = np.load(best / "weights.npz"), np.load(project / "again" / "weights.npz")
    assert sorted(ours.files) == sorted(theirs.files)
    for key in ours.files:
        assert np.array_equal(ours[key], theirs[key]), key


def test_asha_stops_a_weak_trial_early(project, cluster):
    # One trial at a time, the good one first: ASHA compares a trial at each rung with the trials
    # that reached it before, so the weak one (it does not learn) meets the good one's loss there.
    path = write_sweep(project, """\
spec: tiny.yaml
metric: loss
parameters:
  compile.optimizer.learning_rate: {grid: [0.05, 0.0]}
  fit.epochs: 6
search: grid
max_concurrent: 1
scheduler: {type: asha, grace_period: 2, reduction_factor: 2}
""")
    result = cli("sweep", path, "--out", "sw", "--address", cluster)
    assert result.exit_code == 0, result.output
    folder = project / "sw"
    trials = {t["compile.optimizer.learning_rate"]: t for t in read_trials(folder)}
    good, weak = trials["0.05"], trials["0.0"]
    # max_concurrent: 1 held: the weak trial started after the good one had written its last file.
    ended = (folder / good["folder"] / "metrics.json").stat().st_mtime_ns
    assert (folder / weak["folder"] / "spec.yaml").stat().st_mtime_ns >= ended
    # Tune's report waits for the scheduler's answer: the weak trial ran exactly to the rung.
    assert (good["status"], good["epochs"]) == ("finished", "6"), good
    assert (weak["status"], weak["epochs"]) == ("stopped", "2"), weak
    assert "scheduler" in weak["message"]
    assert f"{good['folder']} ended after 6 epochs" in result.output, result.output
    assert f"{weak['folder']} stopped early by the scheduler after 2 epochs" in result.output
    listed = {t["trial"]: t for t in json.loads((folder / "sweep.json").read_text())["trials"]}
    assert listed[int(weak["trial"])]["status"] == "stopped" and listed[int(weak["trial"])]["epochs"] == 2
    run_dir = folder / weak["folder"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "stopped" and run["epochs_done"] == 2 and "scheduler" in run["message"]
    # Closed as the trainer closes a folder: the checkpoint's weights, every file in the
    # manifest, no temporary left, the lock let go.
    checkpoint = np.load(run_dir / "checkpoint.npz")
    weights = np.load(run_dir / "weights.npz")
    for key in weights.files:
        assert np.array_equal(weights[key], checkpoint[f"weights/{key}"]), key
    manifest = json.loads((run_dir / ".kerspec-manifest.json").read_text())
    assert {"weights.npz", "run.json"} <= set(manifest["files"])
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / ".kerspec-lock").exists()
    # A stopped trial is still a run folder: its weights evaluate.
    evaluated = cli("evaluate", run_dir / "spec.yaml", "--weights", run_dir / "weights.npz")
    assert evaluated.exit_code == 0, evaluated.output


def test_optuna_search_draws_trials_within_the_space(project, cluster):
    pytest.importorskip("optuna")
    path = write_sweep(project, """\
spec: tiny.yaml
metric: val_loss
parameters:
  compile.optimizer.learning_rate: {loguniform: [1.0e-3, 1.0e-1]}
  layers.hidden.units: {choice: [3, 6]}
  fit.epochs: {randint: [1, 2]}
samples: 3
search: optuna
""")
    result = cli("sweep", path, "--out", "sw", "--address", cluster, "--json")
    assert result.exit_code == 0, result.output
    trials = json.loads(result.stdout)["trials"]
    assert len(trials) == 3 and all(t["status"] == "finished" for t in trials), trials
    for trial in trials:
        values = trial["parameters"]
        assert 1.0e-3 <= values["compile.optimizer.learning_rate"] <= 1.0e-1
        assert values["layers.hidden.units"] in (3, 6)
        assert values["fit.epochs"] in (1, 2) and trial["epochs"] == values["fit.epochs"]
        spec = yaml.safe_load((Path(trial["folder"]) / "spec.yaml").read_text())
        assert spec["layers"][1]["units"] == values["layers.hidden.units"]


def test_failing_trial_then_ctrl_c_then_resume(project, cluster):
    path = write_sweep(project, """\
spec: tiny.yaml
metric: val_loss
parameters:
  compile.optimizer.learning_rate: {grid: [0.01, 1.0e+30, 0.02, 0.03]}
search: grid
max_concurrent: 1
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "kerspec", "sweep", str(path), "--out", "sw", "--address", cluster],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    folder = project / "sw"
    try:
        deadline = time.monotonic() + 120
        while not (folder / "trial-0000" / "run.json").is_file():
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
            time.sleep(0.1)
        sweep.send_signal(signal.SIGINT)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, out + err
    assert "kerspec sweep --resume sw" in err and "Traceback" not in err, err
    before = read_trials(folder)
    assert any(t["status"] == "unfinished" for t in before), before
    result = cli("sweep", "--resume", "sw", "--address", cluster)
    assert result.exit_code == 0, result.output
    trials = {t["compile.optimizer.learning_rate"]: t for t in read_trials(folder)}
    assert len(trials) == 4
    failed = trials["1e+30"]
    assert failed["status"] == "failed" and "the loss became" in failed["message"], failed
    assert [t["status"] for k, t in trials.items() if k != "1e+30"] == ["finished"] * 3, trials
    assert json.loads((folder / "sweep.json").read_text())["status"] == "finished"


def test_seeds_on_ray_by_ray_address(project, cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    result = cli("train", "tiny.yaml", "--seeds", "2", "--seed", "7", "--out", "seeds", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["seeds"] == [7, 8]
    spread = report["metrics"]["loss"]
    assert spread["min"] <= spread["mean"] <= spread["max"] and spread["n"] == 2
    assert {t["seed"] for t in report["trials"]} == {7, 8}
