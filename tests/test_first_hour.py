"""Issue 15: what a Keras user writes in the first hour works, and what fails says why.

Each test drives kerspec as the user does: spec text through the loader, commands through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
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
from kerspec.errors import KerspecError

runner = CliRunner()

BASE = """\
layers:
  - {type: Input, shape: [4], name: features}
  - {type: Dense, units: 3, activation: softmax, name: label}
compile:
  optimizer: {type: adam, learning_rate: LR}
  loss: sparse_categorical_crossentropy
"""


def problems(text: str, overrides=None) -> list[str]:
    with pytest.raises(KerspecError) as err:
        _load(text, overrides)
    return str(err.value).splitlines()


def _load(text: str, overrides=None):
    from kerspec.spec import parse_spec

    return parse_spec(text, "spec.yaml", overrides)


# -- defect 1: YAML 1.2 numbers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "value"), [("1e-3", 1e-3), ("1e5", 1e5), ("1.0e30", 1e30), ("2E-2", 0.02)]
)
def test_exponent_numbers_are_numbers(written, value):
    spec = _load(BASE.replace("LR", written)).spec
    assert spec.compile.optimizer.learning_rate == value


def test_exponent_numbers_in_set_values():
    spec = _load(
        BASE.replace("LR", "0.1"),
        ["compile.optimizer.learning_rate=1e-4", "fit.validation_split=5e-1"],
    ).spec
    assert spec.compile.optimizer.learning_rate == 1e-4
    assert spec.fit.validation_split == 0.5


@pytest.mark.parametrize("field", ["learning_rate: '1e-3'", 'epsilon: "1e-7"'])
def test_a_quoted_number_is_a_string(field):
    text = BASE.replace("learning_rate: LR", field)
    (problem,) = problems(text)
    assert problem.startswith("spec.yaml:5:")
    assert "is a string (quoted)" in problem and "without quotes" in problem


def test_a_quoted_number_in_a_layer_says_where():
    text = BASE.replace("LR", "0.1").replace("units: 3,", "units: '3',")
    (problem,) = problems(text)
    assert problem == (
        "spec.yaml:3:26: Dense 'label': units: '3' is a string (quoted), not a number;"
        " write it without quotes"
    )


# -- defect 2: validate runs every check train runs -----------------------------------------------

TWO_OUTPUTS = """\
layers:
  - {type: Input, shape: [4], name: x}
  - {type: Dense, units: 3, activation: softmax, name: out}
  - {type: Dense, units: 1, from: x, name: aux}
outputs: [out, aux]
compile:
  optimizer: adam
  loss: {outt: mse, aux: mse}
  loss_weights: {ax: 1.0}
fit:
  class_weight: {0: 2.0}
"""

ONE_OUTPUT = """\
layers:
  - {type: Input, shape: [4], name: x}
  - {type: Dense, units: 3, activation: softmax, name: out}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
data:
  train: train.csv
  test: {path: train.csv, target: specie}
fit:
  callbacks:
    - {type: EarlyStopping, monitor: val_accuracy}
"""


def validate(tmp_path, text: str, *args: str):
    (tmp_path / "spec.yaml").write_text(text)
    result = runner.invoke(app, ["validate", str(tmp_path / "spec.yaml"), *args])
    return result.exit_code, result.stderr.splitlines()


def test_validate_reports_what_train_refuses_all_at_once(tmp_path):
    code, lines = validate(tmp_path, TWO_OUTPUTS)
    spec = tmp_path / "spec.yaml"
    assert code == 1
    assert lines == [
        f"{spec}:8:9: compile.loss: no loss for output 'out'",
        f"{spec}:8:10: compile.loss: 'outt' is not an output (outputs: out, aux); did you mean 'out'?",
        f"{spec}:9:18: compile.loss_weights: 'ax' is not an output (outputs: out, aux); did you mean 'aux'?",
        (
            f"{spec}:11:17: fit.class_weight is only supported for models with a single output;"
            " give per-output sample weights in the data instead"
        ),
    ]


def test_validate_checks_monitors_and_data_at_the_spec_line(tmp_path):
    (tmp_path / "train.csv").write_text("a,b,c,d,species\n1,2,3,4,x\n2,3,4,5,y\n3,4,5,6,z\n")
    code, lines = validate(
        tmp_path,
        ONE_OUTPUT.replace("train: train.csv", "train: {path: train.csv, target: species}"),
    )
    spec = tmp_path / "spec.yaml"
    assert code == 1
    assert len(lines) == 2
    assert lines[0].startswith(f"{spec}:7:9: data.test: data file 'train.csv'")
    assert lines[0].endswith(
        "has no column 'specie'; did you mean 'species'? (columns: a, b, c, d, species)"
    )
    assert lines[1].startswith(
        f"{spec}:10:38: EarlyStopping monitors 'val_accuracy', which this model does not log"
    )


def test_validate_data_is_off_when_the_files_are_absent_and_on_when_asked(tmp_path):
    text = ONE_OUTPUT.replace("val_accuracy", "accuracy")
    assert validate(tmp_path, text) == (0, [])
    code, lines = validate(tmp_path, text, "--data")
    spec = tmp_path / "spec.yaml"
    assert code == 1
    assert lines[0].startswith(f"{spec}:6:10: data.train: data file 'train.csv'")
    assert "file not found" in lines[0]


def test_train_refuses_what_validate_refuses(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        TWO_OUTPUTS + "data: {train: {source: random, samples: 8}}\n"
    )
    result = runner.invoke(
        app, ["train", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "'outt' is not an output" in result.stderr


# -- defect 4: --data keeps the options of the entry it replaces -----------------------------------

ROOT = Path(__file__).resolve().parent.parent
IRIS = ROOT / "specs" / "iris_mlp.yaml"
IRIS_TEST = ROOT / "datasets" / "iris_test.csv"


@pytest.fixture(scope="module")
def iris_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("iris") / "weights.npz"
    kerspec.load(IRIS, seed=1).save_weights(path)
    return path


def evaluate_json(*args) -> dict:
    result = runner.invoke(app, ["evaluate", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_data_override_keeps_target_and_one_hot(iris_weights):
    spec_data = evaluate_json(IRIS, "--weights", iris_weights)
    overridden = evaluate_json(IRIS, "--weights", iris_weights, "--data", IRIS_TEST)
    assert overridden["metrics"]["loss"] == spec_data["metrics"]["loss"]
    assert overridden["data"] == {"which": "test", "path": str(IRIS_TEST), "samples": 30}


def test_data_override_as_a_mapping(iris_weights, tmp_path):
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(IRIS_TEST.read_text().replace("species", "kind"))
    spec_data = evaluate_json(IRIS, "--weights", iris_weights)
    given = evaluate_json(
        IRIS, "--weights", iris_weights, "--data", f"{{path: {renamed}, target: kind}}"
    )
    assert given["metrics"]["loss"] == spec_data["metrics"]["loss"]
    result = runner.invoke(
        app,
        ["evaluate", str(IRIS), "--weights", str(iris_weights), "--data", f"{{path: {renamed}}}"],
    )
    assert result.exit_code == 1
    assert "has no column 'species'" in result.stderr


def test_train_records_the_inherited_options(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["train", str(IRIS), "--data", str(IRIS_TEST), "--epochs", "1", "--out", str(run)]
    )
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((run / "spec.yaml").read_text())
    assert resolved["data"]["train"] == {
        "path": str(IRIS_TEST),
        "target": "species",
        "one_hot": True,
    }


# -- defect 6: Ctrl-C and SIGTERM at any moment ----------------------------------------------------


def caught_signals(pid: int) -> int:
    """The signals process `pid` catches, once it runs kerspec: between fork and exec the child
    still has the test process's handlers (pytest's), and a signal sent then is lost."""
    try:
        if b"kerspec" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return 0
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_a_signal_during_start_up_is_one_line(signum, code, line, tmp_path):
    # Bytecode cached, as an installed kerspec runs: CPython loses a signal that arrives while it
    # compiles a module's source (its parser retries, clearing the exception).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=str(tmp_path / "pycache"))
    subprocess.run([sys.executable, "-m", "kerspec", "summary", str(IRIS)], env=env, capture_output=True, check=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "kerspec", "summary", str(IRIS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Python catches SIGINT from its first instant, SIGTERM only once kerspec's entry point has
    # installed its handlers, before importing the rest: signal then, while it imports.
    deadline = time.monotonic() + 60  # a wait, not a measure: the signal goes out either way
    while process.poll() is None and time.monotonic() < deadline:
        if caught_signals(process.pid) & (1 << (signal.SIGTERM - 1)):
            break
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert (process.returncode, stderr, stdout) == (code, f"{line}\n", "")


def test_interrupted_before_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, monkeypatch):
    from kerspec.training.trainer import Trainer

    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupted)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(IRIS), "--out", str(run), "--epochs", "20"])
    assert result.exit_code == 130
    assert result.stderr == (
        "interrupted during the first of 20 epochs, before any epoch finished; nothing to resume;"
        f" start it afresh with: kerspec train {IRIS} --out {run} --overwrite --epochs 20\n"
    )


# -- defect 7: usage errors echo the value; usage shows SPEC; flags show no type -------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--batch-size", "2.5", "'2.5' is not a valid integer"),
        ("--epochs", "0", "'0' is less than 1"),
        ("--seed", "x", "'x' is not a valid integer"),
    ],
)
def test_a_bad_number_is_echoed(option, value, message):
    result = runner.invoke(app, ["train", str(IRIS), option, value], terminal_width=200)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': {message}" in result.stderr


def test_usage_names_spec_and_flags_have_no_type():
    usage = runner.invoke(app, ["train"], terminal_width=200).stderr
    assert "train [OPTIONS] SPEC\n" in usage
    assert "{" not in usage
    help_text = runner.invoke(app, ["train", "--help"], terminal_width=200).stdout
    assert "<bool>" not in help_text and "--json" in help_text


# -- Keras habits ---------------------------------------------------------------------------------

HABITS = """\
layers:
  - type: Input
    shape: (4,)
  - {type: Dense, units: 3, input_shape: (4,)}
compile:
  optimizer: {type: adam, lr: 0.01}
  loss: mse
fit:
  validation_data: val.npz
"""


def test_keras_habits_get_keras_answers():
    assert problems(HABITS) == [
        (
            "spec.yaml:3:12: Input (layers[0]): shape: YAML lists are written in brackets, [4],"
            " not in parentheses (read as text)"
        ),
        (
            "spec.yaml:4:42: Dense (layers[1]): input_shape: YAML lists are written in brackets, [4],"
            " not in parentheses (read as text)"
        ),
        (
            "spec.yaml:6:27: compile.optimizer: unknown argument 'lr'; did you mean 'learning_rate'?"
            " (Keras's old name for it)"
        ),
        (
            "spec.yaml:9:3: fit: unknown argument 'validation_data'; put validation data in the spec's"
            " data.validation (a file, or a mapping with its path), or use fit.validation_split"
        ),
    ]


def test_activation_null_is_linear():
    text = BASE.replace("LR", "0.1").replace("activation: softmax", "activation: null")
    model = kerspec.api.Model(_load(text), seed=0)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    params = model.params["label"]
    expected = x @ params["kernel"] + params["bias"]
    np.testing.assert_allclose(model.predict(x)["label"], expected, rtol=1e-6)


def test_fit_verbose_is_accepted_with_a_note(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE.replace("LR", "0.1") + "fit: {epochs: 1, verbose: 2}\n")
    result = runner.invoke(app, ["summary", str(spec)])
    assert result.exit_code == 0
    assert (
        result.stderr
        == f"{spec}:7:18: note: fit.verbose is accepted and ignored: kerspec always shows progress on stderr (2>/dev/null hides it; --json keeps stdout for the result)\n"
    )


# -- the command line a Keras user expects ----------------------------------------------------------


def test_version():
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"kerspec {kerspec.__version__}\n")


def test_predict_csv_has_the_class_labels_and_kept_columns(iris_weights, tmp_path):
    rows = IRIS_TEST.read_text().splitlines()
    given = tmp_path / "ids.csv"
    given.write_text(
        "\n".join([f"id,{rows[0]}"] + [f"{i},{row}" for i, row in enumerate(rows[1:], 101)]) + "\n"
    )
    output = tmp_path / "p.csv"
    result = runner.invoke(
        app,
        [
            "predict",
            str(IRIS),
            "--weights",
            str(iris_weights),
            "--input",
            str(given),
            "-o",
            str(output),
            "--keep-columns",
            "id",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line.split(",") for line in output.read_text().splitlines()]
    assert lines[0] == ["id", "dense_1_class", "dense_1_0", "dense_1_1", "dense_1_2"]
    assert [row[0] for row in lines[1:]] == [str(i) for i in range(101, 131)]
    probabilities = np.array([[float(v) for v in row[2:]] for row in lines[1:]])
    labels = np.array(["setosa", "versicolor", "virginica"])
    assert [row[1] for row in lines[1:]] == list(labels[np.argmax(probabilities, axis=1)])
    model = kerspec.load(IRIS)
    model.load_weights(iris_weights)
    x = np.loadtxt(IRIS_TEST, delimiter=",", skiprows=1, usecols=range(4), dtype=np.float32)
    np.testing.assert_allclose(probabilities, model.predict(x)["dense_1"], rtol=1e-6)


def test_runs_fits_80_columns_and_shows_the_test_metric(tmp_path):
    run = tmp_path / "runs" / "iris-with-a-rather-long-name-20261205-101010"
    result = runner.invoke(app, ["train", str(IRIS), "--epochs", "2", "--out", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    compact = runner.invoke(app, ["runs", str(tmp_path / "runs")], terminal_width=80).stdout
    title, *table = compact.splitlines()  # the title names the folder, as long as its path
    assert title == f"Runs in {tmp_path / 'runs'}"
    assert all(len(line) <= 80 for line in table), compact
    assert f"accuracy {metrics['test_accuracy']:.4f} (test)" in compact
    assert "finished" in compact and "2/2" in compact
    wide = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--wide"], terminal_width=200).stdout
    assert f"test_accuracy {metrics['test_accuracy']:.4f}" in wide and "iris_mlp" in wide


# -- the Python API as Keras users call it ----------------------------------------------------------


def test_fit_takes_arrays_as_keras_does():
    rng = np.random.default_rng(0)
    x, labels = rng.random((40, 4)), rng.integers(0, 3, 40)
    y = np.eye(3)[labels]
    by_position = kerspec.load(IRIS, ["fit.epochs=2"]).fit(x, y)
    by_name = kerspec.load(IRIS, ["fit.epochs=2"]).fit(x=x, y=y, validation_data=(x[:10], y[:10]))
    assert by_position.history["loss"] == by_name.history["loss"]
    assert len(by_name.history["val_loss"]) == 2
    keyed = kerspec.load(IRIS, ["fit.epochs=2"]).fit({"input": x}, {"dense_1": y})
    assert keyed.history["loss"] == by_position.history["loss"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x, y: m.fit(x), "fit(x, y): give both x and y"),
        (
            lambda m, x, y: m.fit(x, y[:5]),
            "fit(x, y): x['input'] has 40 samples but y['dense_1'] has 5",
        ),
        (
            lambda m, x, y: m.fit(x[:, :3], y),
            "x['input'] has shape (40, 3) but input 'input' expects (None, 4)",
        ),
        (lambda m, x, y: m.fit(x, y, validation_data=x), "takes a pair (x_val, y_val)"),
        (lambda m, x, y: m.fit({"inp": x}, y), "no input named 'inp'; missing 'input'"),
        (lambda m, x, y: m.fit([[1, 2], [3]], y), "x['input'] is not an array"),
    ],
)
def test_a_wrong_fit_call_says_what_is_wrong(call, message):
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 4)), np.eye(3)[rng.integers(0, 3, 40)]
    with pytest.raises(KerspecError) as err:
        call(kerspec.load(IRIS, ["fit.epochs=1"]), x, y)
    assert message in str(err.value)


def test_validate_reports_schema_graph_and_training_problems_together(tmp_path):
    text = """\
layers:
  - {type: Input, shape: [4], name: x}
  - {type: Dense, units: 3, activation: softmax, name: out}
  - {type: Dense, units: 2, name: dead}
outputs: [out]
compile:
  optimizer: adam
  loss: {outt: mse}
fit:
  epochs: 0
"""
    code, lines = validate(tmp_path, text)
    spec = tmp_path / "spec.yaml"
    assert code == 1
    assert lines == [
        f"{spec}:4:5: Dense 'dead': does not lead to any output (is 'outputs' or a 'from' missing it?)",
        f"{spec}:10:11: fit.epochs: should be greater than 0 (received 0)",
    ]
    code, lines = validate(tmp_path, text.replace("  - {type: Dense, units: 2, name: dead}\n", ""))
    assert lines == [
        f"{spec}:7:9: compile.loss: no loss for output 'out'",
        f"{spec}:7:10: compile.loss: 'outt' is not an output (outputs: out); did you mean 'out'?",
        f"{spec}:9:11: fit.epochs: should be greater than 0 (received 0)",
    ]
