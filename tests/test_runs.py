"""Looking back at runs: `kerspec runs` (table and JSON), `kerspec curves` (SVG written by
kerspec, PNG through matplotlib or an install hint), the loss sparkline at the end of train."""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kerspec.cli import app
from kerspec.console import sparkline
from kerspec.runs import spec_differences

runner = CliRunner()

SPEC = """\
name: tiny
seed: 3
layers:
  - {type: Input, shape: [4], name: features}
  - {type: Dense, units: 5, activation: relu, name: hidden}
  - {type: Dense, units: 3, activation: softmax, name: label}
compile:
  optimizer: {type: adam, learning_rate: 0.02}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
data:
  train: train.npz
fit: {epochs: 4, batch_size: 8, validation_split: 0.25}
"""


def cli(*args, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    x = rng.random((40, 4), dtype=np.float32)
    np.savez(folder / "train.npz", x=x, y=(x[:, 0] * 3).astype(int))
    spec = folder / "tiny.yaml"
    spec.write_text(SPEC)
    root = folder / "runs"
    cli("train", spec, "--out", root / "a")
    cli("train", spec, "--out", root / "b", "--epochs", 2, "--seed", 5)
    return root


def test_train_ends_with_a_loss_sparkline(runs):
    text = (runs / "a" / "history.csv").read_text()
    assert text.count("\n") == 5
    result = cli("train", runs.parent / "tiny.yaml", "--out", runs.parent / "other")
    lines = [line for line in result.stderr.splitlines() if line.startswith(("loss", "val_loss"))]
    assert len(lines) == 2
    assert all(any(c in line for c in "▁▂▃▄▅▆▇█") for line in lines)


def test_runs_lists_every_run_as_json(runs):
    listed = json.loads(cli("runs", runs, "--json").stdout)
    assert [Path(r["folder"]).name for r in listed] == ["a", "b"]
    a, b = listed
    assert (a["name"], a["epochs_done"], a["epochs"], a["status"]) == ("tiny", 4, 4, "finished")
    assert (b["epochs_done"], b["seed"]) == (2, 5)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(a["metrics"])
    assert a["duration"] is not None and a["started"]


def test_runs_table(runs):
    result = cli("runs", runs)
    for word in ("run", "epochs", "status", "4/4", "2/2", "finished"):
        assert word in result.stdout
    wide = cli("runs", runs, "--wide")
    for word in ("spec", "tiny", "val_accuracy"):
        assert word in wide.stdout
    assert cli("runs", runs / "a", "--json").stdout.count('"folder"') == 1
    assert "no such folder" in cli("runs", runs / "missing", code=1).stderr


def test_curves_svg_is_xml_with_a_panel_per_quantity(runs, tmp_path):
    output = tmp_path / "curves.svg"
    result = cli("curves", runs / "a", runs / "b", "-o", output)
    assert "loss, accuracy" in result.stdout
    root = ET.parse(output).getroot()
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    assert {"loss", "accuracy", "a", "b"} <= set(texts)
    lines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(lines) == 8  # 2 quantities x 2 runs x (training, validation)
    assert sum("stroke-dasharray" in e.attrib for e in lines) == 4


def test_curves_png_or_how_to_install_matplotlib(runs, tmp_path):
    output = tmp_path / "curves.png"
    if importlib.util.find_spec("matplotlib") is None:
        result = cli("curves", runs / "a", "-o", output, code=1)
        assert "pip install 'kerspec[plot]'" in result.stderr
        assert not output.exists()
    else:
        cli("curves", runs / "a", "-o", output)
        assert output.read_bytes().startswith(b"\x89PNG")


def test_curves_refuses_what_it_cannot_draw(runs, tmp_path):
    assert "use .svg or .png" in cli("curves", runs / "a", "-o", tmp_path / "c.pdf", code=1).stderr
    assert "not a run folder" in cli("curves", tmp_path, "-o", tmp_path / "c.svg", code=1).stderr


def test_sparkline():
    assert sparkline([3, 2, 1, 0]) == "█▆▃▁"
    assert sparkline([1, 1]) == "▄▄"
    assert len(sparkline(list(range(100)), width=20)) == 20
    assert sparkline([]) == ""


def test_spec_differences_name_fields_by_layer_name():
    before = {"layers": [{"name": "h", "units": 4}], "fit": {"epochs": 3, "batch_size": 8}}
    now = {"layers": [{"name": "h", "units": 5}], "fit": {"epochs": 9, "batch_size": 8.0}}
    assert [text for _, text in spec_differences(before, now)] == [
        "layers.h.units: 4 in the run, 5 now"
    ]
