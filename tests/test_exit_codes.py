"""Every CLI command, given bad arguments and bad files: exit 1 (bad input) or 2 (bad usage), a
message, and never a traceback (SPEC.md §2).

Commands are found by walking the Typer app, so one added later is walked too: it gets the
generic checks (an unknown option, a word where a number goes, hostile files as its arguments).
"""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

from kerspec.cli import app

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands
CALLBACKS = {
    (info.name or info.callback.__name__.rstrip("_").replace("_", "-")): info.callback
    for info in app.registered_commands
}

SPEC = """\
name: small
seed: 3
layers:
  - {type: Input, shape: [4], name: features}
  - {type: Dense, units: 3, activation: softmax, name: label}
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
data: {train: train.npz, test: train.npz}
fit: {epochs: 1, batch_size: 4}
"""

# Hostile contents, by file name. Each must be refused wherever a file is read.
HOSTILE = {
    "python_tag.yaml": "layers:\n  - !!python/object/apply:os.system ['echo pwned']\n",
    "laughs.yaml": "a: &a [1,1,1,1,1,1,1,1,1]\n"
    + "".join(
        f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefg", "bcdefgh")
    ),
    "not_utf8.yaml": b"layers: \xff\xfe\n",
    "empty.yaml": "",
    "pickle.npz": pickle.dumps({"x": 1}),
    "truncated.npz": None,  # filled from a real archive below
    "text.npy": "not an array\n",
    "ragged.csv": "a,b,c,d,label\n1,2,3\n",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("exit_codes")
    (root / "spec.yaml").write_text(SPEC)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 4)), np.arange(8) % 3
    np.savez(root / "train.npz", x=x, y=y)
    np.save(root / "input.npy", x)
    np.savez(root / "weights.npz", **{"label/kernel": np.zeros((4, 3)), "label/bias": np.zeros(3)})
    (root / "runs").mkdir()
    (root / "a_file").write_text("I am a file, not a folder\n")
    (root / "a_folder").mkdir()
    os.symlink(root / "loop", root / "loop")
    hostile = root / "hostile"
    hostile.mkdir()
    for name, content in HOSTILE.items():
        if content is None:
            content = (root / "train.npz").read_bytes()[:60]
        (hostile / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def bad_paths(root: Path) -> list[str]:
    """Paths that no command can read as its input."""
    hostile = sorted(str(p) for p in (root / "hostile").iterdir())
    return [str(root / "missing.yaml"), str(root / "a_folder"), str(root / "loop"), *hostile]


def base_args(name: str, root: Path) -> dict[str, list[str]]:
    """Valid arguments per parameter of the known commands (each one alone works)."""
    spec, weights = str(root / "spec.yaml"), str(root / "weights.npz")
    known = {
        "validate": {"specs": [spec]},
        "summary": {"spec": [spec]},
        "train": {"spec": [spec], "out": ["--out", str(root / "runs" / "r")]},
        "evaluate": {"spec": [spec], "weights": ["--weights", weights]},
        "predict": {
            "spec": [spec],
            "weights": ["--weights", weights],
            "input_": ["--input", str(root / "input.npy")],
            "output": ["--output", str(root / "out.npy")],
        },
        "plot": {"spec": [spec], "output": ["-o", str(root / "graph.dot")]},
        "runs": {"folder": [str(root / "runs")]},
        "curves": {"runs_": [str(root / "runs")], "output": ["-o", str(root / "curves.svg")]},
        "schema": {},
        "diff": {"old": [spec], "new": [spec]},
        "export": {"spec": [spec], "weights": ["--weights", weights], "output": ["-o", str(root / "model.onnx")]},
    }
    return known.get(name, {})


def invoke(args: list[str]):
    result = runner.invoke(app, args)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    return result


def refused(args: list[str], codes=(1, 2)):
    result = invoke(args)
    assert result.exit_code in codes, (result.exit_code, args, result.stdout, result.stderr)
    assert result.stderr.strip(), f"no message for {args}"
    return result


def hints(name: str) -> dict[str, type]:
    callback = CALLBACKS[name]
    found = {}
    for param, hint in typing.get_type_hints(callback, include_extras=True).items():
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        found[param] = base
    return found


def is_number(base) -> bool:
    return (
        base in (int, float)
        or set(typing.get_args(base)) - {type(None)} <= {int, float}
        and bool(typing.get_args(base))
    )


def is_path(base) -> bool:
    return base is Path or Path in typing.get_args(base) or typing.get_args(base)[:1] == (Path,)


def test_every_command_is_known():
    """The commands SPEC.md lists; others added later are walked by the generic tests."""
    assert {"validate", "summary", "train", "evaluate", "predict", "plot", "schema"} <= set(
        COMMANDS
    )
    assert set(CALLBACKS) == set(COMMANDS)


def test_no_command_and_an_unknown_command():
    result = invoke([])
    assert result.exit_code == 2 and "Usage" in result.stdout + result.stderr
    refused(["no-such-command"], codes=(2,))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unknown_option(name, workspace):
    args = [a for value in base_args(name, workspace).values() for a in value]
    result = refused([name, *args, "--no-such-option"], codes=(2,))
    assert "No such option" in result.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_missing_required_arguments(name):
    required = [p for p in COMMANDS[name].params if p.required]
    if not required:
        pytest.skip(f"{name} has no required argument")
    result = refused([name], codes=(2,))
    assert "Missing" in result.stderr


NUMBER_OPTIONS = [
    (name, option)
    for name in sorted(COMMANDS)
    for param in COMMANDS[name].params
    if param.param_type_name == "option" and is_number(hints(name).get(param.name))
    for option in param.opts[:1]
]


@pytest.mark.parametrize(("name", "option"), NUMBER_OPTIONS, ids=lambda v: v)
@pytest.mark.parametrize("value", ["many", "1e400", "", "0x", "9" * 5000])
def test_a_word_where_a_number_goes(name, option, value, workspace):
    args = [a for value_ in base_args(name, workspace).values() for a in value_]
    refused([name, *args, option, value], codes=(2,))


PATH_PARAMS = [
    (name, param.name)
    for name in sorted(COMMANDS)
    for param in COMMANDS[name].params
    if is_path(hints(name).get(param.name)) or param.name in ("data", "validation")
]
OUTPUTS = {"output", "out"}


@pytest.mark.parametrize(("name", "param"), PATH_PARAMS, ids=lambda v: v)
def test_bad_files_everywhere(name, param, workspace):
    """Each path parameter in turn gets every bad file; the rest stay valid."""
    base = base_args(name, workspace)
    spec = next(p for p in COMMANDS[name].params if p.name == param)
    if param in OUTPUTS:
        values = [str(workspace / "a_file" / "x.npy"), str(workspace / "loop" / "x")]
    else:
        values = bad_paths(workspace)
    if (name, param) == ("runs", "folder"):
        values.remove(str(workspace / "a_folder"))  # an empty folder has no runs: that is fine
    for value in values:
        args = dict(base)
        args[param] = [value] if spec.param_type_name == "argument" else [spec.opts[0], value]
        refused([name, *(a for v in args.values() for a in v)])


@pytest.mark.parametrize(
    "option",
    [
        "fit.epochs",
        "fit.epochs=many",
        "layers.nope.units=3",
        "layers.label.units=!!python/object/apply:os.system [id]",
        "layers.label.units=1000000000000000000000000000000",
        "name=[" + "[" * 100 + "]" * 101,
        "=",
    ],
)
@pytest.mark.parametrize(
    "name", sorted(n for n in COMMANDS if any(p.name == "set_" for p in COMMANDS[n].params))
)
def test_bad_overrides(name, option, workspace):
    args = [a for value in base_args(name, workspace).values() for a in value]
    result = refused([name, *args, "--set", option], codes=(1,))
    assert result.stderr.startswith(f"--set {option}: "), result.stderr


def test_generic_walk_of_positional_arguments(workspace):
    """Any command (one added later too) fed bad files as its positional arguments."""
    for name, command in sorted(COMMANDS.items()):
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        if not arguments:
            continue
        options = [
            a
            for p, v in base_args(name, workspace).items()
            if p not in {x.name for x in arguments}
            for a in v
        ]
        for value in bad_paths(workspace):
            if name == "runs" and value == str(workspace / "a_folder"):
                continue  # an empty folder has no runs: that is fine
            refused([name, *[value] * len(arguments), *options])


def test_commands_signature_is_readable():
    for name in COMMANDS:
        assert inspect.signature(CALLBACKS[name]).parameters is not None


def test_a_real_subprocess_prints_one_located_line_and_no_traceback(workspace):
    bad = workspace / "hostile" / "python_tag.yaml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kerspec",
            "train",
            str(bad),
            "--out",
            str(workspace / "runs" / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith(f"{bad}:2:5: invalid YAML: could not determine a constructor"), (
        done.stderr
    )
    assert not (workspace / "runs" / "x").exists()
    done = subprocess.run(
        [sys.executable, "-m", "kerspec", "summary", "--bogus"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and "No such option" in done.stderr
    assert "Traceback" not in done.stderr
