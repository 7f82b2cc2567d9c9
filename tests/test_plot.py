"""`kerspec plot`: DOT always; SVG and PNG through Graphviz where it is installed."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kerspec
from kerspec.cli import app
from kerspec.plot import to_dot

CNN = str(Path(__file__).parent.parent / "specs" / "digits_cnn.yaml")
GRAPH = """
layers:
  - {type: Input, shape: [4], name: a}
  - {type: Input, shape: [4], name: b}
  - {type: Dense, units: 3, from: a, name: enc}
  - {name: enc_b, share: enc, from: b}
  - {type: Concatenate, from: [enc, enc_b], name: cat}
"""


def test_dot_shows_name_type_shape_edges_and_sharing():
    dot = to_dot(kerspec.from_yaml(GRAPH).graph)
    assert '"enc" [label="{enc | Dense | (None, 3)}"];' in dot
    assert '"a" [label="{a | InputLayer | (None, 4)}"];' in dot
    assert '"enc" -> "cat";' in dot and '"enc_b" -> "cat";' in dot
    assert '"enc" -> "enc_b" [style=dashed' in dot


def test_cli_writes_dot(tmp_path):
    out = tmp_path / "m.dot"
    result = CliRunner().invoke(app, ["plot", CNN, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith('digraph "digits_cnn"')


@pytest.mark.parametrize("suffix,magic", [(".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_cli_renders_with_graphviz(tmp_path, suffix, magic):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed")
    out = tmp_path / f"m{suffix}"
    result = CliRunner().invoke(app, ["plot", CNN, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)


def test_missing_graphviz_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = CliRunner().invoke(app, ["plot", CNN, "-o", str(tmp_path / "m.svg")])
    assert result.exit_code == 1
    assert "apt-get install graphviz" in result.output
    assert not (tmp_path / "m.svg").exists()


def test_unknown_format_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["plot", CNN, "-o", str(tmp_path / "m.jpg")])
    assert result.exit_code == 1 and "use .dot, .svg or .png" in result.output
