"""Bad specs: every problem reported at once, each as FILE:LINE:COL: message.

Each file in tests/bad_specs/ starts with `# expect:` lines naming exactly the problems it must
produce; the CLI test runs a few of them end to end.
"""

from pathlib import Path

import pytest

import kerspec
from kerspec.errors import GraphError, Problems, SpecError

BAD = sorted((Path(__file__).parent / "bad_specs").glob("*.yaml"))


def expected(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_reports_every_problem_at_its_place(path):
    with pytest.raises(Problems) as caught:
        kerspec.load(path, seed=0)
    found = [str(p).removeprefix(f"{path}:").removeprefix(str(path)).lstrip(": ") for p in caught.value.problems]
    assert sorted(found) == sorted(expected(path))


def test_corpus_is_not_empty():
    assert len(BAD) >= 15
    assert all(expected(p) for p in BAD)


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"layers:\n  - {type: Dense, units: \xff}\n")
    with pytest.raises(SpecError, match=r"binary.yaml:2:26: not UTF-8 text \(byte 0xff\)"):
        kerspec.load(path)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        kerspec.load(tmp_path / "nope.yaml")


def test_graph_errors_are_a_separate_kind():
    with pytest.raises(GraphError):
        kerspec.load(Path(__file__).parent / "bad_specs" / "dangling_from.yaml")


@pytest.mark.parametrize(
    "option,message",
    [
        ("layers.nope.units=3", "no entry named 'nope' in layers"),
        ("layers.7.units=3", "layers has 2 entries; no index 7"),
        ("fit.epochs", "expected KEY=VALUE"),
        ("layers.hidden.units=0", "units: should be greater than 0 (received 0)"),
    ],
)
def test_override_errors_point_at_the_option(option, message):
    spec = "layers:\n  - {type: Input, shape: [4]}\n  - {type: Dense, units: 3, name: hidden}\n"
    with pytest.raises(SpecError) as caught:
        kerspec.api.Model(kerspec.spec.parse_spec(spec, "m.yaml", [option]))
    assert str(caught.value).startswith(f"--set {option}: ")
    assert message in str(caught.value)
