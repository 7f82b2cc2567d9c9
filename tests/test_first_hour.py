"""Issue 15: what a Keras user writes in the first hour works, and what fails says why.

Each test drives kerspec as the user does: spec text through the loader, commands through the CLI.
"""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize(("written", "value"), [("1e-3", 1e-3), ("1e5", 1e5), ("1.0e30", 1e30), ("2E-2", 0.02)])
def test_exponent_numbers_are_numbers(written, value):
    spec = _load(BASE.replace("LR", written)).spec
    assert spec.compile.optimizer.learning_rate == value


def test_exponent_numbers_in_set_values():
    spec = _load(BASE.replace("LR", "0.1"), ["compile.optimizer.learning_rate=1e-4", "fit.validation_split=5e-1"]).spec
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
