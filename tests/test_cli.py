"""The `kerspec` command as a user runs it: every command on the shipped specs, exit codes 0/1/2,
one-line located messages without tracebacks, JSON on stdout, and files written all or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import kerspec
from kerspec import io as kio
from kerspec.cli import app

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DIGITS = SPECS / "digits_mlp.yaml"
IRIS = SPECS / "iris_mlp.yaml"
DIGITS_TEST = ROOT / "datasets" / "digits" / "test.npz"
SHIPPED = sorted(SPECS.glob("*.yaml"))

runner = CliRunner()

# A small single-input, single-output model with its data in the test's folder.
SMALL = """\
name: small
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
fit: {epochs: 2, batch_size: 8}
"""


def kerspec_cli(*args) -> object:
    """Run the CLI as a user would; a failure must never show a Python traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def ok(*args):
    result = kerspec_cli(*args)
    assert result.exit_code == 0, result.output
    return result


def fails(*args, code: int = 1):
    result = kerspec_cli(*args)
    assert result.exit_code == code, result.output
    return result


def write_data(folder: Path, name: str, samples: int, seed: int, **extra) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {
        "x": rng.random((samples, 4), dtype=np.float32),
        "y": rng.integers(0, 3, samples),
        **extra,
    }
    path = folder / name
    np.savez(path, **arrays)
    return path


@pytest.fixture
def small(tmp_path) -> Path:
    """SMALL written to tmp_path with its train and test data."""
    write_data(tmp_path, "train.npz", 40, 0)
    write_data(tmp_path, "test.npz", 12, 1)
    spec = tmp_path / "small.yaml"
    spec.write_text(SMALL)
    return spec


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One epoch of digits_mlp, trained once for the evaluate and predict tests."""
    out = tmp_path_factory.mktemp("digits") / "run"
    ok("train", DIGITS, "--epochs", 1, "--out", out)
    return out


def weights_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave behind."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# -- validate, summary, schema -----------------------------------------------------------------


def test_validate_accepts_every_shipped_spec():
    assert len(SHIPPED) >= 3
    result = ok("validate", *SHIPPED)
    for spec in SHIPPED:
        assert f"{spec}: ok" in result.stdout

    report = json.loads(ok("validate", "--json", *SHIPPED).stdout)
    assert report["ok"] is True
    assert [entry["file"] for entry in report["specs"]] == [str(s) for s in SHIPPED]
    assert all(entry["problems"] == [] for entry in report["specs"])


def test_validate_reports_every_problem_and_exits_1(tmp_path):
    bad = ROOT / "tests" / "bad_specs" / "many_problems.yaml"
    result = fails("validate", DIGITS, bad)
    assert f"{DIGITS}: ok" in result.stdout
    assert f"{bad}:17:19: Dense (layers[1]): unknown argument 'unitz'" in result.stderr
    assert f"{bad}:18:5: Conv9D (layers[2]): unknown layer 'Conv9D'" in result.stderr

    report = json.loads(fails("validate", "--json", DIGITS, bad).stdout)
    assert report["ok"] is False
    assert report["specs"][0]["problems"] == []
    assert len(report["specs"][1]["problems"]) > 5


def test_summary_has_the_keras_layout():
    text = ok("summary", DIGITS).stdout
    assert text.startswith('Model: "digits_mlp"')
    for header in ("Layer (type)", "Output Shape", "Param #"):
        assert header in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "(None, 64)" in rows["hidden (Dense)"] and "4,160" in rows["hidden (Dense)"]
    assert "(None, 64)" in rows["dropout (Dropout)"]
    assert "(None, 10)" in rows["digit (Dense)"] and "650" in rows["digit (Dense)"]
    assert "Total params: 4,810" in text
    assert "Trainable params: 4,810" in text
    assert "Non-trainable params: 0" in text


def test_summary_json_gives_the_same_counts():
    data = json.loads(ok("summary", "--json", DIGITS).stdout)
    assert data["name"] == "digits_mlp"
    assert data["total_params"] == 4810
    assert data["trainable_params"] == 4810
    assert data["non_trainable_params"] == 0
    assert [(r["name"], r["type"], r["output_shape"], r["params"]) for r in data["layers"]] == [
        ("hidden", "Dense", "(None, 64)", 4160),
        ("dropout", "Dropout", "(None, 64)", 0),
        ("digit", "Dense", "(None, 10)", 650),
    ]
    assert sum(r["params"] for r in data["layers"]) == data["total_params"]


def test_summary_of_every_shipped_spec_and_with_set():
    for spec in SHIPPED:
        assert ok("summary", spec).stdout.startswith("Model: ")
    data = json.loads(ok("summary", "--json", DIGITS, "--set", "layers.hidden.units=8").stdout)
    assert data["total_params"] == 64 * 8 + 8 + 8 * 10 + 10


def test_summary_of_a_graph_has_input_rows_and_connections(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_HEADS)
    text = ok("summary", spec).stdout
    assert text.startswith('Model: "two_heads"') and "Connected to" in text
    rows = [line for line in text.splitlines() if "│" in line]
    assert [r.split("│")[1].strip() for r in rows] == ["x (InputLayer)", "a (Dense)", "b (Dense)"]
    assert "x[0][0]" in rows[1] and "15" in rows[1]
    assert "Total params: 20" in text
    data = json.loads(ok("summary", "--json", spec).stdout)
    assert [r["connected_to"] for r in data["layers"]] == [[], ["x[0][0]"], ["x[0][0]"]]


def test_schema_is_json_schema_with_the_layers(tmp_path):
    schema = json.loads(ok("schema").stdout)
    assert "$schema" in schema
    text = json.dumps(schema)
    assert "Dense" in text and "units" in text

    target = tmp_path / "kerspec.schema.json"
    result = ok("schema", "-o", target)
    assert json.loads(target.read_text()) == schema
    assert result.stdout == ""
    assert leftovers(tmp_path) == []


# -- train ---------------------------------------------------------------------------------------


def test_train_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    result = ok("train", DIGITS, "--epochs", 1, "--out", out, "--json")
    summary = json.loads(result.stdout)  # stdout holds the JSON result and nothing else
    assert "Epoch 1" in result.stderr and "Epoch 1" not in result.stdout
    assert summary["run"] == str(out)
    assert summary["seed"] == 0
    assert set(summary["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    assert {p.name for p in out.iterdir()} == {
        "weights.npz",
        "checkpoint.npz",
        "history.csv",
        "metrics.json",
        "spec.yaml",
        "run.json",
        ".kerspec-manifest.json",  # what kerspec wrote there (the lock is gone)
    }
    weights = weights_of(out / "weights.npz")
    assert {k: w.shape for k, w in weights.items()} == {
        "hidden/kernel": (64, 64),
        "hidden/bias": (64,),
        "digit/kernel": (64, 10),
        "digit/bias": (10,),
    }
    assert all(w.dtype == np.float32 for w in weights.values())

    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    assert len(lines) == 2 and lines[1].startswith("1,")

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == summary["metrics"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(
        metrics
    )

    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0
    assert run["spec_sha256"] == hashlib.sha256(DIGITS.read_bytes()).hexdigest()
    assert run["started"] and run["ended"]
    assert run["kerspec"] == kerspec.__version__ and run["numpy"] == np.__version__
    assert leftovers(out) == []


def test_run_spec_reloads_with_the_overrides_and_trains_again(tmp_path):
    out = tmp_path / "run"
    ok("train", DIGITS, "--set", "fit.epochs=1", "--set", "layers.hidden.units=8", "--out", out)
    resolved = out / "spec.yaml"
    ok("validate", resolved)
    model = kerspec.load(resolved)
    assert model.spec.fit.epochs == 1
    assert model.summary_data()["layers"][0]["params"] == 64 * 8 + 8
    # Its data paths were relative to specs/; the copy in the run folder must still find them.
    assert model.dataset("train").samples == 1437
    again = tmp_path / "again"
    ok("train", resolved, "--out", again)
    assert len((again / "history.csv").read_text().splitlines()) == 2


def test_run_spec_records_the_command_line_settings(tmp_path):
    out = tmp_path / "run"
    ok("train", DIGITS, "--epochs", 1, "--batch-size", 64, "--seed", 5, "--out", out)
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    assert spec["fit"]["epochs"] == 1
    assert spec["fit"]["batch_size"] == 64
    assert spec["seed"] == 5


def test_set_overrides_are_honoured(tmp_path):
    out = tmp_path / "run"
    result = ok(
        "train",
        DIGITS,
        "--set",
        "fit.epochs=2",
        "--set",
        "layers.hidden.units=8",
        "--out",
        out,
        "--json",
    )
    assert len(json.loads(result.stdout)["history"]["loss"]) == 2
    assert len((out / "history.csv").read_text().splitlines()) == 3
    weights = weights_of(out / "weights.npz")
    assert weights["hidden/kernel"].shape == (64, 8)
    assert weights["digit/kernel"].shape == (8, 10)


def test_seed_is_used_and_recorded(small, tmp_path):
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        ok("train", small, "--seed", seed, "--out", tmp_path / name)
    for name, seed in (("a", 11), ("c", 12)):
        assert json.loads((tmp_path / name / "run.json").read_text())["seed"] == seed
    a, b, c = (weights_of(tmp_path / n / "weights.npz") for n in "abc")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["hidden/kernel"], c["hidden/kernel"])


def test_a_spec_without_seed_records_the_drawn_one(small, tmp_path):
    small.write_text(SMALL.replace("seed: 3\n", ""))
    result = ok("train", small, "--out", tmp_path / "run", "--json")
    seed = json.loads(result.stdout)["seed"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seed"] == seed
    ok("train", small, "--seed", seed, "--out", tmp_path / "again")
    first = weights_of(tmp_path / "run" / "weights.npz")
    again = weights_of(tmp_path / "again" / "weights.npz")
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_init_weights_are_the_starting_point(small, tmp_path):
    ok("train", small, "--seed", 1, "--out", tmp_path / "first")
    start = tmp_path / "first" / "weights.npz"
    # Frozen layers keep the weights they start from.
    frozen = ["--set", "layers.hidden.trainable=false", "--set", "layers.label.trainable=false"]
    ok("train", small, *frozen, "--seed", 2, "--init-weights", start, "--out", tmp_path / "next")
    before, after = weights_of(start), weights_of(tmp_path / "next" / "weights.npz")
    assert all(np.array_equal(before[k], after[k]) for k in before)

    scores = json.loads(ok("evaluate", small, "--weights", start, "--json").stdout)["metrics"]
    metrics = json.loads((tmp_path / "next" / "metrics.json").read_text())
    assert scores == {"loss": metrics["test_loss"], "accuracy": metrics["test_accuracy"]}


def test_data_and_validation_options_replace_the_specs_data(small, tmp_path, monkeypatch):
    small.write_text(SMALL.replace("train: train.npz", "train: gone.npz"))
    fails("train", small, "--out", tmp_path / "none")
    (tmp_path / "other").mkdir()
    write_data(tmp_path / "other", "train.npz", 30, 5)
    write_data(tmp_path / "other", "valid.npz", 10, 6)
    monkeypatch.chdir(tmp_path / "other")  # --data paths are read from the current folder
    result = ok(
        "train",
        small,
        "--data",
        "train.npz",
        "--validation",
        "valid.npz",
        "--out",
        tmp_path / "run",
        "--json",
    )
    history = json.loads(result.stdout)["history"]
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    resolved = yaml.safe_load((tmp_path / "run" / "spec.yaml").read_text())
    assert resolved["data"] == {
        "train": str(tmp_path / "other" / "train.npz"),
        "validation": str(tmp_path / "other" / "valid.npz"),
        "test": str(tmp_path / "test.npz"),
    }

    model = kerspec.load(small)
    model.load_weights(tmp_path / "run" / "weights.npz")
    valid = model.dataset("validation", path="valid.npz")
    assert model.evaluate(valid)["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-12)
    scores = json.loads(
        ok(
            "evaluate",
            small,
            "--weights",
            tmp_path / "run" / "weights.npz",
            "--data",
            "valid.npz",
            "--json",
        ).stdout
    )
    assert scores["metrics"]["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-12)


def test_batch_size_option_matches_the_api(small, tmp_path):
    ok("train", small, "--batch-size", 5, "--out", tmp_path / "b5")
    ok("train", small, "--out", tmp_path / "b8")
    model = kerspec.load(small)
    model.fit(batch_size=5)
    b5, b8 = (
        weights_of(tmp_path / "b5" / "weights.npz"),
        weights_of(tmp_path / "b8" / "weights.npz"),
    )
    assert all(np.array_equal(model.params[k.split("/")[0]][k.split("/")[1]], b5[k]) for k in b5)
    assert not np.array_equal(b5["hidden/kernel"], b8["hidden/kernel"])


def test_train_without_out_makes_a_named_run_folder(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", small)
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("small-")
    assert (run / "weights.npz").is_file()


def test_written_files_follow_the_umask(small, tmp_path):
    out = tmp_path / "run"
    ok("train", small, "--out", out)
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    # A file written over keeps its permissions.
    output = tmp_path / "p.csv"
    output.write_text("old")
    output.chmod(0o640)
    ok(
        "predict",
        small,
        "--weights",
        out / "weights.npz",
        "--input",
        tmp_path / "test.npz",
        "--output",
        output,
    )
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
    assert output.read_text().startswith("label_class,label_0,")


# -- evaluate and predict ----------------------------------------------------------------------


def test_evaluate_scores_the_test_data_as_train_did(digits_run):
    weights = digits_run / "weights.npz"
    result = json.loads(ok("evaluate", DIGITS, "--weights", weights, "--json").stdout)
    scores = result["metrics"]
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert scores == {"loss": metrics["test_loss"], "accuracy": metrics["test_accuracy"]}
    assert result["data"] == {"which": "test", "path": os.path.relpath(DIGITS_TEST), "samples": 360}
    text = ok("evaluate", DIGITS, "--weights", weights).stdout
    assert f"on the test data, {os.path.relpath(DIGITS_TEST)} (360 samples)" in text
    assert "loss" in text and "accuracy" in text
    other = json.loads(
        ok("evaluate", DIGITS, "--weights", weights, "--batch-size", 7, "--json").stdout
    )["metrics"]
    assert other["loss"] == pytest.approx(scores["loss"], rel=1e-6)
    assert other["accuracy"] == scores["accuracy"]


def test_predict_writes_npz_npy_and_csv(digits_run, tmp_path):
    weights = digits_run / "weights.npz"
    outputs = {}
    for suffix in ("npz", "npy", "csv"):
        target = tmp_path / f"p.{suffix}"
        args = ("predict", DIGITS, "--weights", weights, "--input", DIGITS_TEST, "--output", target)
        result = ok(*args, "--json")
        assert json.loads(result.stdout) == {"output": str(target), "shapes": {"digit": [360, 10]}}
        outputs[suffix] = target
    with np.load(outputs["npz"]) as archive:
        assert archive.files == ["digit"]
        from_npz = archive["digit"]
    from_npy = np.load(outputs["npy"])
    lines = outputs["csv"].read_text().splitlines()
    assert lines[0].split(",") == ["digit_class"] + [f"digit_{i}" for i in range(10)]
    rows = [line.split(",") for line in lines[1:]]
    from_csv = np.array([[float(v) for v in row[1:]] for row in rows])
    assert [int(row[0]) for row in rows] == list(np.argmax(from_csv, axis=1))
    assert from_npz.dtype == from_npy.dtype == np.float32
    assert from_npz.shape == (360, 10)
    assert np.array_equal(from_npz, from_npy)
    assert np.array_equal(from_csv.astype(np.float32), from_npy)
    assert np.allclose(from_npy.sum(axis=1), 1.0, atol=1e-5)
    assert leftovers(tmp_path) == []


def test_predict_from_csv_with_a_text_column(tmp_path):
    ok("train", IRIS, "--epochs", 1, "--out", tmp_path / "run")
    target = tmp_path / "p.csv"
    ok(
        "predict",
        IRIS,
        "--weights",
        tmp_path / "run" / "weights.npz",
        "--input",
        ROOT / "datasets" / "iris_test.csv",
        "--output",
        target,
    )
    lines = target.read_text().splitlines()
    assert lines[0] == "dense_1_class,dense_1_0,dense_1_1,dense_1_2"
    assert len(lines) == 31
    assert {line.split(",")[0] for line in lines[1:]} <= {"setosa", "versicolor", "virginica"}


# -- bad input: exit 1, one located line, no traceback --------------------------------------------

BAD_SPECS = {
    "malformed_yaml": (
        "layers:\n  - {type: Input, shape: [4]\n  - {type: Dense, units: 3}\n",
        ":3:",
        "invalid YAML",
    ),
    "unknown_layer": (
        "layers:\n  - {type: Input, shape: [4]}\n  - {type: Dense9, units: 3}\n",
        ":3:5:",
        "unknown layer 'Dense9'",
    ),
    "unknown_argument": (
        "layers:\n  - {type: Input, shape: [4]}\n  - {type: Dense, units: 3, unitz: 4}\n",
        ":3:29:",
        "unknown argument 'unitz'; did you mean 'units'?",
    ),
    "wrong_value_type": (
        "layers:\n  - {type: Input, shape: [4]}\n  - {type: Dense, units: three}\n",
        ":3:26:",
        "units: should be a valid integer",
    ),
    "dangling_from": (
        "layers:\n  - {type: Input, shape: [4], name: a}\n  - {type: Dense, units: 3, from: b}\n",
        ":3:",
        "no layer named 'b'",
    ),
    "cycle": (
        (
            "layers:\n  - {type: Input, shape: [4], name: a}\n"
            "  - {type: Dense, units: 4, name: d1, from: d2}\n"
            "  - {type: Dense, units: 4, name: d2, from: d1}\n"
            "outputs: [d2]\n"
        ),
        ":3:",
        "cycle",
    ),
    "shape_mismatch": (
        (
            "layers:\n  - {type: Input, shape: [4], name: a}\n"
            "  - {type: Dense, units: 3, name: d, from: a}\n"
            "  - {type: Add, from: [a, d]}\n"
        ),
        ":4:",
        "Add",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
@pytest.mark.parametrize("command", ["validate", "summary", "train"])
def test_bad_spec_exits_1_with_a_located_line(tmp_path, case, command):
    text, place, message = BAD_SPECS[case]
    spec = tmp_path / f"{case}.yaml"
    spec.write_text(text)
    args = [command, spec] + (["--out", tmp_path / "run"] if command == "train" else [])
    result = fails(*args)
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{spec}{place}"), result.stderr
    assert message in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_spec_without_a_loss_predicts_but_does_not_train(small, tmp_path):
    text = SMALL.split("compile:")[0] + "data:" + SMALL.split("data:")[1]
    small.write_text(text)
    kerspec.load(small).save_weights(tmp_path / "w.npz")
    for args in (
        ("train", small, "--out", tmp_path / "run"),
        ("evaluate", small, "--weights", tmp_path / "w.npz"),
    ):
        result = fails(*args)
        assert (
            result.stderr == f"{small}:1:1: training and evaluating need compile.loss in the spec\n"
        )
    ok(
        "predict",
        small,
        "--weights",
        tmp_path / "w.npz",
        "--input",
        tmp_path / "test.npz",
        "--output",
        tmp_path / "p.npy",
    )
    assert np.load(tmp_path / "p.npy").shape == (12, 3)


def test_evaluate_without_test_or_validation_data(tmp_path):
    ok("train", SPECS / "random_mlp.yaml", "--epochs", 1, "--out", tmp_path / "run")
    result = fails(
        "evaluate", SPECS / "random_mlp.yaml", "--weights", tmp_path / "run" / "weights.npz"
    )
    assert (
        "no data.test or data.validation entry to evaluate on (give one with --data)"
        in result.stderr
    )
    assert result.stderr.startswith(f"{SPECS / 'random_mlp.yaml'}:21:3: ")


def test_missing_spec_file(tmp_path):
    for command in ("validate", "summary", "train"):
        result = fails(command, tmp_path / "nope.yaml")
        assert f"{tmp_path / 'nope.yaml'}: no such spec file" in result.stderr
    result = fails("evaluate", tmp_path / "nope.yaml", "--weights", "w.npz")
    assert "no such spec file" in result.stderr


def test_missing_data_file_names_the_path_as_written_and_resolved(small, tmp_path):
    small.write_text(SMALL.replace("train: train.npz", "train: sub/missing.npz"))
    result = fails("train", small, "--out", tmp_path / "run")
    assert "'sub/missing.npz'" in result.stderr
    assert str(tmp_path / "sub" / "missing.npz") in result.stderr
    assert "not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"x": np.zeros((10, 5), np.float32)}, "has shape (10, 5) but input 'features' expects"),
        ({"x": np.zeros((10, 4, 1), np.float32)}, "has shape (10, 4, 1)"),
        (
            {"x": np.array([[0.0, 1, 2, 3]] * 5 + [[0, np.nan, 0, 0]] * 5)},
            "has NaN at index (5, 1)",
        ),
        (
            {"x": np.zeros((10, 4)), "y": np.full(10, 7)},
            "label 7 at index 0, outside the 3 classes",
        ),
        ({"x": np.zeros((10, 4)), "y": np.zeros(9, int)}, "10 samples"),
    ],
    ids=["width", "rank", "nan", "label", "count"],
)
def test_data_that_does_not_fit_exits_1(small, tmp_path, arrays, message):
    arrays = {"y": np.zeros(10, int), **arrays}
    np.savez(tmp_path / "bad.npz", **arrays)
    for args in (
        ("train", small, "--data", tmp_path / "bad.npz", "--out", tmp_path / "run"),
        ("evaluate", small, "--weights", tmp_path / "w.npz", "--data", tmp_path / "bad.npz"),
    ):
        kerspec.load(small, seed=0).save_weights(tmp_path / "w.npz")
        result = fails(*args)
        assert str(tmp_path / "bad.npz") in result.stderr
        assert message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def bad_weights(path: Path, model: kerspec.Model, case: str) -> str:
    """Write a broken weights file for `model`; return what the message must say."""
    arrays = {f"{o}/{n}": w for o, ws in model.params.items() for n, w in ws.items()}
    if case == "missing":
        del arrays["label/bias"]
        np.savez(path, **arrays)
        return "missing label/bias"
    if case == "shape":
        arrays["hidden/kernel"] = np.zeros((4, 6), np.float32)
        np.savez(path, **arrays)
        return "hidden/kernel has shape (4, 6), the model needs (4, 5)"
    if case == "extra":
        np.savez(path, **arrays, **{"other/kernel": np.zeros(3)})
        return "unexpected other/kernel"
    if case == "corrupt":
        np.savez(path, **arrays)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        return "not a readable .npz file"
    if case == "pickle":
        arrays["hidden/bias"] = np.array([{"a": 1}, None], dtype=object)
        np.savez(path, **arrays)
        return "it holds Python objects, which kerspec never loads"
    if case == "text":
        path.write_text("hello")
        return "not a readable .npz file"
    if case == "nan":
        arrays["hidden/bias"] = np.full(5, np.nan, np.float32)
        np.savez(path, **arrays)
        return "hidden/bias holds NaN or infinite values"
    if case == "absent":
        return "no such file"
    raise AssertionError(case)


WEIGHT_CASES = ["missing", "shape", "extra", "corrupt", "pickle", "text", "nan", "absent"]


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_bad_weights_exit_1_and_leave_the_output_alone(small, tmp_path, case):
    weights = tmp_path / "w.npz"
    message = bad_weights(weights, kerspec.load(small, seed=0), case)
    output = tmp_path / "p.npz"
    output.write_bytes(b"earlier predictions")
    for args in (
        ("evaluate", small, "--weights", weights),
        (
            "predict",
            small,
            "--weights",
            weights,
            "--input",
            tmp_path / "test.npz",
            "--output",
            output,
        ),
        ("train", small, "--init-weights", weights, "--out", tmp_path / "run"),
    ):
        result = fails(*args)
        assert result.stderr.startswith(f"{weights}: "), result.stderr
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert output.read_bytes() == b"earlier predictions"
    assert not (tmp_path / "run").exists()
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file(small, tmp_path, monkeypatch):
    ok("train", small, "--out", tmp_path / "run")
    weights = tmp_path / "run" / "weights.npz"
    output = tmp_path / "p.npz"
    output.write_bytes(b"earlier predictions")

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kio.files.np, "savez", disk_full)
    args = ("--weights", weights, "--input", tmp_path / "test.npz", "--output", output)
    result = fails("predict", small, *args)
    assert result.stderr.strip() == f"{output}: cannot write: No space left on device"
    assert output.read_bytes() == b"earlier predictions"
    assert leftovers(tmp_path) == []


def test_a_failed_training_run_keeps_the_earlier_run_files(small, tmp_path):
    out = tmp_path / "run"
    ok("train", small, "--out", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 4)), y=np.full(3, 9))
    fails("train", small, "--data", bad, "--out", out)
    fails(
        "train",
        small,
        "--set",
        "layers.hidden.units=2",
        "--init-weights",
        out / "weights.npz",
        "--out",
        out,
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_interrupted_run_leaves_complete_files(small, tmp_path, monkeypatch):
    from kerspec.training.trainer import Trainer

    step, calls = Trainer.train_step, []

    def interrupted_in_epoch_2(self, *args):
        calls.append(1)
        if len(calls) == 7:  # 40 samples in batches of 8: the second batch of epoch 2
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Trainer, "train_step", interrupted_in_epoch_2)
    out = tmp_path / "run"
    result = fails("train", small, "--out", out, code=130)
    assert f"kerspec train {small} --resume {out}" in result.stderr
    names = [".kerspec-manifest.json", "checkpoint.npz", "history.csv", "run.json", "spec.yaml",
             "weights.npz"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert len((out / "history.csv").read_text().splitlines()) == 2
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_done"] == 1
    assert leftovers(out) == []


def test_predict_to_npy_needs_one_output_and_a_known_type(tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text(TWO_HEADS)
    model = kerspec.load(spec, seed=0)
    model.save_weights(tmp_path / "w.npz")
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    common = ("--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy")
    result = fails("predict", spec, *common, "--output", tmp_path / "p.npy")
    assert "a .npy file holds one array; the model has 2 outputs" in result.stderr
    result = fails("predict", spec, *common, "--output", tmp_path / "p.txt")
    assert "unsupported prediction file type '.txt'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.yaml", "w.npz", "x.npy"]
    ok("predict", spec, *common, "--output", tmp_path / "p.csv")
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "a_class,a_0,a_1,a_2,b"


TWO_HEADS = """\
name: two_heads
layers:
  - {type: Input, shape: [4], name: x}
  - {type: Dense, units: 3, activation: softmax, name: a, from: x}
  - {type: Dense, units: 1, name: b, from: x}
outputs: [a, b]
compile: {optimizer: adam, loss: {a: sparse_categorical_crossentropy, b: mse}}
"""


# -- bad usage: exit 2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", DIGITS, "--bogus"], "No such option"),
        (["evaluate", DIGITS], "Missing option '--weights'"),
        (["predict", DIGITS, "--weights", "w.npz", "--input", "x.npy"], "Missing option"),
        (["train", DIGITS, "--epochs", "0"], "--epochs"),
        (["train", DIGITS, "--epochs", "many"], "--epochs"),
        (["frobnicate"], "No such command"),
        (["train"], "Missing argument"),
    ],
)
def test_bad_usage_exits_2(args, message):
    result = fails(*args, code=2)
    assert message in result.output


def test_a_path_with_colons_is_printed_as_written_not_as_an_emoji(tmp_path):
    folder = tmp_path / "a:x:b"
    folder.mkdir()
    spec = folder / "bad.yaml"
    spec.write_text("name: bad\nlayers:\n  - {type: Dense, units: 0}\n")
    result = runner.invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1
    assert f"{spec}:3:" in result.stderr
    assert "\u274c" not in result.stderr
