"""`kerspec diff OLD NEW` as a reviewer runs it: what changed in the model, not in the text.

Exit 0 for the same model, 1 when the models differ, 2 for trouble (as GNU diff does), each
trouble one message and no traceback; `REV:path` read from a real temporary git repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerspec.cli import app
from kerspec.spec.source import MAX_SPEC_BYTES
from tests.test_cli import SMALL

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "specs").rglob("*.yaml"))

runner = CliRunner()

# SMALL written differently: block style, comments, defaults spelled out, other spellings of the
# same names. The model is the same one.
SMALL_RESTYLED = """\
# The same model as SMALL.
name: small
seed: 3
layers:
  - type: Input
    name: features
    shape: [4]
  - type: Dense          # the hidden layer
    name: hidden
    units: 5
    activation: {type: relu}
    use_bias: true
    kernel_initializer: GlorotUniform
  - name: label
    type: Dense
    units: 3
    activation: softmax
    from: hidden
compile:
  optimizer: {type: Adam, learning_rate: 0.01, beta_1: 0.9}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: {path: train.npz}
  test: test.npz
fit:
  epochs: 2
  batch_size: 8
  shuffle: true
"""


def run(*args, cwd: Path | None = None):
    """The CLI as a user runs it: never a traceback, exit 0, 1 or 2."""
    if cwd is not None:
        old = Path.cwd()
        os.chdir(cwd)
    try:
        result = runner.invoke(app, ["diff", *map(str, args)])
    finally:
        if cwd is not None:
            os.chdir(old)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code in (0, 1, 2), (result.exit_code, output)
    return result


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def diff_json(old: Path | str, new: Path | str, code: int, cwd: Path | None = None) -> dict:
    result = run(old, new, "--json", cwd=cwd)
    assert result.exit_code == code, result.stdout + result.stderr
    return json.loads(result.stdout)


def edited(tmp_path: Path, old: str, new: str, text: str = SMALL) -> Path:
    assert old in text
    return write(tmp_path, "new.yaml", text.replace(old, new, 1))


@pytest.fixture
def small(tmp_path) -> Path:
    return write(tmp_path, "old.yaml", SMALL)


# -- the same model --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_every_shipped_spec_is_the_same_model_as_itself(spec):
    result = run(spec, spec)
    assert result.exit_code == 0, result.stdout
    assert "the same model" in result.stdout


def test_formatting_comments_and_spelled_out_defaults_are_the_same_model(small, tmp_path):
    restyled = write(tmp_path, "restyled.yaml", SMALL_RESTYLED)
    assert run(small, restyled).exit_code == 0
    found = diff_json(small, restyled, 0)
    assert found["same"] is True
    assert not found["changed"] and not found["links"] and found["weights"]["loads"]
    markdown = run(small, restyled, "--markdown")
    assert markdown.exit_code == 0 and "The same model" in markdown.stdout


# -- each kind of change ---------------------------------------------------------------------


def test_an_argument_change_with_its_shapes_params_and_weights(small, tmp_path):
    new = edited(tmp_path, "units: 5", "units: 7")
    found = diff_json(small, new, 1)
    changed = {
        c["name"]: {x["path"]: (x["old"], x["new"]) for x in c["changes"]} for c in found["changed"]
    }
    assert changed["hidden"] == {
        "units": (5, 7),
        "output shapes": (["(None, 5)"], ["(None, 7)"]),
        "params": (25, 35),
    }
    assert changed["label"] == {"params": (18, 24)}  # its kernel follows the new width
    assert found["params"]["old"]["total"] == 43 and found["params"]["new"]["total"] == 59
    weights = found["weights"]
    assert weights["loads"] is False
    assert weights["needed"] == [
        {"layer": "hidden", "why": "kernel (4, 5) -> (4, 7), bias (5,) -> (7,)"},
        {"layer": "label", "why": "kernel (5, 3) -> (7, 3)"},
    ]
    text = run(small, new).stdout
    assert "  ~ hidden (Dense)\n      units: 5 -> 7\n" in text
    assert "params: 43 -> 59 (trainable 43 -> 59, non-trainable 0 -> 0)" in text
    assert "weights: NEW cannot load OLD's weights files" in text


def test_a_nested_argument_is_named_by_its_path(small, tmp_path):
    new = edited(tmp_path, "activation: relu", "activation: {type: relu, negative_slope: 0.1}")
    found = diff_json(small, new, 1)
    (layer,) = found["changed"]
    assert layer["changes"] == [{"path": "activation.negative_slope", "old": 0.0, "new": 0.1}]
    assert found["weights"]["loads"] is True  # same weights, other activation

    new = edited(tmp_path, "activation: relu", "activation: tanh")
    (layer,) = diff_json(small, new, 1)["changed"]
    assert layer["changes"] == [{"path": "activation", "old": "relu", "new": "tanh"}]


def test_an_added_layer_and_the_link_it_changes(small, tmp_path):
    new = edited(
        tmp_path,
        "  - {type: Dense, units: 3,",
        "  - {type: Dropout, rate: 0.25, name: drop}\n  - {type: Dense, units: 3,",
    )
    found = diff_json(small, new, 1)
    assert found["added"] == [
        {
            "name": "drop",
            "type": "Dropout",
            "arguments": {"rate": 0.25},
            "from": ["hidden"],
            "output_shapes": ["(None, 5)"],
            "params": 0,
        }
    ]
    assert found["links"] == [{"layer": "label", "old": ["hidden"], "new": ["drop"]}]
    assert found["removed"] == [] and found["changed"] == []
    assert found["weights"] == {"loads": True, "needed": [], "renamed": [], "unused": []}
    text = run(small, new).stdout
    assert "  + drop (Dropout) rate: 0.25\n" in text
    assert "  label: from hidden -> from drop\n" in text
    assert "weights: NEW can load OLD's weights files" in text

    # and the other way round: a removed layer
    found = diff_json(new, small, 1)
    assert found["removed"] == [{"name": "drop", "type": "Dropout"}]


def test_a_renamed_layer_is_one_rename_not_an_add_and_a_remove(small, tmp_path):
    new = edited(tmp_path, "name: hidden}", "name: trunk}")
    found = diff_json(small, new, 1)
    assert found["renamed"] == [{"old": "hidden", "new": "trunk", "type": "Dense"}]
    assert found["added"] == [] and found["removed"] == []
    assert found["links"] == []  # label is fed by the same layer, under its new name
    assert found["changed"] == []
    weights = found["weights"]
    assert weights["loads"] is False  # the file keys it hidden/kernel
    assert weights["renamed"] == [{"layer": "trunk", "old": "hidden"}] and not weights["needed"]
    assert "renamed hidden -> trunk (Dense)" in run(small, new).stdout


def test_a_renamed_and_changed_layer_is_removed_and_added(small, tmp_path):
    new = edited(
        tmp_path,
        "units: 5, activation: relu, name: hidden}",
        "units: 6, activation: relu, name: trunk}",
    )
    found = diff_json(small, new, 1)
    assert found["renamed"] == []
    assert [a["name"] for a in found["added"]] == ["trunk"]
    assert found["removed"] == [{"name": "hidden", "type": "Dense"}]
    assert {"layer": "trunk", "why": "not in OLD"} in found["weights"]["needed"]
    assert found["weights"]["unused"] == ["hidden"]


BRANCHES = """\
name: two
layers:
  - {type: Input, shape: [4], name: a}
  - {type: Input, shape: [4], name: b}
  - {type: Dense, units: 2, name: left, from: a}
  - {type: Dense, units: 2, name: right, from: b}
  - {type: Concatenate, from: [left, right], name: both}
"""


def test_renames_follow_the_graph_place(tmp_path):
    """Two identical branches renamed: each is matched with the branch fed by the same input."""
    old = write(tmp_path, "old.yaml", BRANCHES)
    # the NEW spec lists the branches the other way round, under new names
    swapped = BRANCHES.replace(
        "  - {type: Dense, units: 2, name: left, from: a}\n"
        "  - {type: Dense, units: 2, name: right, from: b}\n",
        "  - {type: Dense, units: 2, name: from_b, from: b}\n"
        "  - {type: Dense, units: 2, name: from_a, from: a}\n",
    )
    new = write(tmp_path, "new.yaml", swapped.replace("[left, right]", "[from_a, from_b]"))
    found = diff_json(old, new, 1)
    assert found["renamed"] == [
        {"old": "left", "new": "from_a", "type": "Dense"},
        {"old": "right", "new": "from_b", "type": "Dense"},
    ]
    assert found["links"] == []


def test_settings_inputs_and_outputs(small, tmp_path):
    text = SMALL.replace("learning_rate: 0.01", "learning_rate: 0.001")
    text = text.replace("epochs: 2", "epochs: 5").replace("train: train.npz", "train: other.npz")
    text = text.replace("seed: 3", "seed: 4")
    new = write(tmp_path, "new.yaml", text)
    found = diff_json(small, new, 1)
    assert found["spec"] == [{"path": "seed", "old": 3, "new": 4}]
    assert found["compile"] == [{"path": "optimizer.learning_rate", "old": 0.01, "new": 0.001}]
    assert found["fit"] == [{"path": "epochs", "old": 2, "new": 5}]
    assert found["data"] == [{"path": "train.path", "old": "train.npz", "new": "other.npz"}]
    assert found["weights"]["loads"] is True and not found["changed"]
    shown = run(small, new, "--markdown").stdout
    assert "- compile.optimizer.learning_rate: `0.01` → `0.001`" in shown

    two_outputs = SMALL.replace("fit:", "outputs: [label, hidden]\nfit:")
    two_outputs = two_outputs.replace(
        "loss: sparse_categorical_crossentropy",
        "loss: {label: sparse_categorical_crossentropy, hidden: mse}",
    )
    new = write(tmp_path, "new.yaml", two_outputs)
    found = diff_json(small, new, 1)
    assert found["outputs"] == {"path": "outputs", "old": ["label"], "new": ["label", "hidden"]}
    assert found["output_shapes"] == [
        {"output": "label", "old": "(None, 3)", "new": "(None, 3)"},
        {"output": "hidden", "old": None, "new": "(None, 5)"},
    ]
    assert found["compile"][0]["path"] == "loss"


def test_a_shared_layer(tmp_path):
    shared = BRANCHES.replace(
        "{type: Dense, units: 2, name: right, from: b}", "{share: left, from: b, name: right}"
    )
    old = write(tmp_path, "old.yaml", shared)
    assert run(old, old).exit_code == 0
    new = write(tmp_path, "new.yaml", BRANCHES)
    found = diff_json(old, new, 1)
    (layer,) = found["changed"]
    assert layer["name"] == "right"
    assert {"path": "share", "old": "left", "new": None} in layer["changes"]
    assert found["weights"]["needed"] == [{"layer": "right", "why": "not in OLD"}]

    # the shared layer renamed: the layer sharing it follows, nothing else changed
    renamed = shared.replace("name: left", "name: trunk").replace("left", "trunk")
    found = diff_json(old, write(tmp_path, "renamed.yaml", renamed), 1)
    assert found["renamed"] == [{"old": "left", "new": "trunk", "type": "Dense"}]
    assert found["changed"] == [] and found["links"] == []


def test_markdown_cannot_be_broken_by_names(tmp_path):
    """A file name holding backticks stays inside its code span (layer and output names cannot
    hold them: they are identifiers)."""
    old = write(tmp_path, "x`|`y.yaml", SMALL)
    new = write(tmp_path, "new.yaml", SMALL.replace("units: 3", "units: 4"))
    title = run(old, new, "--markdown").stdout.splitlines()[0]
    assert f"``{old}``" in title, title


# -- REV:path through git --------------------------------------------------------------------


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    (root / "specs").mkdir(parents=True)
    git(root, "init", "-q")
    write(root / "specs", "m.yaml", SMALL)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    write(root / "specs", "m.yaml", SMALL.replace("units: 5", "units: 6"))
    git(root, "commit", "-q", "-am", "wider")
    return root


def test_rev_path_reads_a_file_at_a_revision(repo):
    found = diff_json("HEAD~1:specs/m.yaml", "HEAD:specs/m.yaml", 1, cwd=repo)
    assert found["old"] == "HEAD~1:specs/m.yaml"
    assert found["changed"][0]["changes"][0] == {"path": "units", "old": 5, "new": 6}
    assert run("HEAD:specs/m.yaml", "specs/m.yaml", cwd=repo).exit_code == 0
    assert run(":specs/m.yaml", "specs/m.yaml", cwd=repo).exit_code == 0  # the index
    assert run("HEAD:./m.yaml", "m.yaml", cwd=repo / "specs").exit_code == 0


def test_a_bad_spec_at_a_revision_gives_its_place(repo):
    write(repo / "specs", "m.yaml", SMALL.replace("units: 5", "units: -5"))
    git(repo, "commit", "-q", "-am", "broken")
    result = run("HEAD:specs/m.yaml", "HEAD~1:specs/m.yaml", cwd=repo)
    assert result.exit_code == 2
    assert result.stderr.startswith("HEAD:specs/m.yaml:5:"), result.stderr


@pytest.mark.parametrize(
    ("old", "message"),
    [
        ("--upload-pack=x:foo", "'--upload-pack=x' is not a revision"),
        ("-c:specs/m.yaml", "'-c' is not a revision"),
        ("nosuchrev:specs/m.yaml", "no revision 'nosuchrev'"),
        ("HEAD:specs/missing.yaml", "'specs/missing.yaml' is not in revision 'HEAD'"),
        ("HEAD:../../../etc/passwd", "'../../../etc/passwd' is outside repository"),
        ("HEAD:", "names no file after the colon"),
        ("HEAD:specs", "is a folder, not a spec file"),
        ("HEAD:specs/m.yaml\nHEAD:x", "control character"),
        ("HEAD~1000:specs/m.yaml", "no revision 'HEAD~1000'"),
        ("HEAD:" + "a" * 5000, "is not in revision 'HEAD'"),
    ],
    ids=lambda v: v[:40],
)
def test_hostile_rev_path(repo, old, message):
    result = run("--", old, "specs/m.yaml", cwd=repo)
    assert result.exit_code == 2
    shown = repr(old) if "\n" in old else old
    assert result.stderr.startswith(f"{shown}: "), result.stderr
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_too_large_file_in_git_is_refused_before_reading(repo):
    write(repo / "specs", "big.yaml", "#" * (MAX_SPEC_BYTES + 1))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "big")
    result = run("HEAD:specs/big.yaml", "specs/m.yaml", cwd=repo)
    assert result.exit_code == 2 and "the limit is" in result.stderr


def test_outside_a_repository_and_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    spec = write(tmp_path, "m.yaml", SMALL)
    result = run("HEAD:m.yaml", spec, cwd=tmp_path)
    assert result.exit_code == 2 and "git cannot read it: not a git repository" in result.stderr
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    result = run("HEAD:m.yaml", spec, cwd=tmp_path)
    assert result.exit_code == 2 and "needs git, which is not installed" in result.stderr


# -- trouble -----------------------------------------------------------------------------------


def test_missing_files_and_bad_specs_exit_2_with_every_problem(small, tmp_path):
    result = run(tmp_path / "nope.yaml", small)
    assert result.exit_code == 2 and result.stderr.startswith(
        f"{tmp_path / 'nope.yaml'}: no such spec file"
    )
    bad = edited(tmp_path, "units: 5", "units: many")
    worse = write(
        tmp_path, "worse.yaml", SMALL.replace("type: Dense, units: 3", "type: Dense, unit: 3")
    )
    result = run(bad, worse)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{bad}:5:") and "units" in lines[0]
    assert any(
        line.startswith(f"{worse}:6:") and "did you mean 'units'" in line for line in lines
    ), lines
    assert result.stdout == ""


def test_json_and_markdown_together_is_a_usage_error(small):
    result = run(small, small, "--json", "--markdown")
    assert result.exit_code == 2 and "cannot be combined" in result.stderr


def test_a_nan_in_the_spec_is_the_same_as_itself(tmp_path):
    spec = write(
        tmp_path,
        "nan.yaml",
        SMALL.replace("units: 5", "units: 5, bias_initializer: {type: Constant, value: .nan}"),
    )
    assert run(spec, spec).exit_code == 0


def test_a_real_process_exits_1_for_a_difference(small, tmp_path):
    new = edited(tmp_path, "units: 5", "units: 6")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "kerspec", "diff", str(small), str(new), "--markdown"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert "- changed `hidden` (Dense): units `5` → `6`" in done.stdout
