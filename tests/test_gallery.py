"""Every gallery spec trains from the CLI as written (one epoch here, to stay fast)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerspec.cli import app

GALLERY = sorted((Path(__file__).parent.parent / "specs" / "gallery").glob("*.yaml"))


def test_gallery_has_the_guide_models():
    names = {p.stem for p in GALLERY}
    assert {"mlp", "cnn", "rnn", "shared_input", "shared_feature_extraction", "multiple_inputs",
            "multiple_outputs", "siamese"} <= names


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.stem)
def test_gallery_spec_trains_one_epoch(path, tmp_path):
    result = CliRunner().invoke(
        app, ["train", str(path), "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "weights.npz").exists()


def test_every_gallery_spec_explains_itself():
    for path in GALLERY:
        head = path.read_text().splitlines()[0]
        assert head.startswith("# "), f"{path.name} needs a comment block saying what it shows"
