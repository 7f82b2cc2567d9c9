"""The shipped specs reach the results their comments and README promise (seeded, so exact)."""

from pathlib import Path

import pytest

import kerspec

SPECS = Path(__file__).parent.parent / "specs"


@pytest.mark.parametrize(
    "spec,at_least",
    [("digits_cnn.yaml", 0.97), ("vowels_lstm.yaml", 0.95), ("gallery/siamese.yaml", 0.92)],
)
def test_spec_reaches_its_documented_test_accuracy(spec, at_least):
    model = kerspec.load(SPECS / spec)
    model.fit()
    assert model.evaluate()["accuracy"] >= at_least
