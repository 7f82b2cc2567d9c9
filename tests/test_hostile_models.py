"""Hostile model files for `kerspec import`: each refused with exit 1, a message saying what and
where, no traceback, and nothing written. The small cases are files in tests/hostile/models/
(each with a `.expect` of `# match:` lines); the large ones (zip bombs) are built here."""

import struct
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerspec.cli import app

pytest.importorskip("h5py")

CASES = sorted(p for p in (Path(__file__).parent / "hostile" / "models").iterdir() if p.suffix != ".expect")


def refused(model: Path, out: Path, *fragments: str) -> str:
    result = CliRunner().invoke(app, ["import", str(model), "-o", str(out / "spec.yaml")])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a crash
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"
    assert str(model) in result.output
    assert list(out.iterdir()) == []
    return result.output


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_hostile_model_is_refused(path, tmp_path):
    expect = path.with_suffix(".expect").read_text().splitlines()
    refused(path, tmp_path, *(line.removeprefix("# match: ") for line in expect))


def test_every_unsupported_item_is_listed_on_its_own_line(tmp_path):
    output = refused(Path(__file__).parent / "hostile" / "models" / "unsupported.json", tmp_path)
    assert len(output.strip().splitlines()) == 3


def test_zip_bomb_declared_size_is_refused_before_reading(tmp_path):
    bomb = tmp_path / "in" / "bomb.keras"
    bomb.parent.mkdir()
    with (zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
          archive.open("config.json", "w", force_zip64=True) as member):
        for _ in range(80):  # 80 MB of spaces, 80 kB compressed
            member.write(b" " * 2**20)
    out = tmp_path / "out"
    out.mkdir()
    refused(bomb, out, "member config.json declares 83.9 MB, more than the")


def test_zip_member_larger_than_it_declares_is_refused(tmp_path):
    """The central directory says 10 bytes; the member inflates to a megabyte."""
    bomb = tmp_path / "in" / "liar.keras"
    bomb.parent.mkdir()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{" + b" " * 2**20 + b"}")
    data = bytearray(bomb.read_bytes())
    real = struct.pack("<I", 2**20 + 2)
    for offset in [i for i in range(len(data) - 3) if data[i:i + 4] == real]:
        data[offset:offset + 4] = struct.pack("<I", 10)  # local header and central directory
    bomb.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    refused(bomb, out, "member config.json")
