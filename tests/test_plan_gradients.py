"""Every shipped spec's training gradients, through the whole plan, against central differences
(float64). Random graphs are in test_plan_fuzz.py."""

from pathlib import Path

import pytest

import kerspec
from tests.wholeplan import batch_lists, check_training_gradients

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs" / "gallery").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_shipped_spec_gradients(path):
    model = kerspec.load(path, overrides=["dtype=float64"], seed=3)
    data = model.dataset("train")
    xs, ys, sw = batch_lists(model, data, 2)
    check_training_gradients(model, xs, ys, sw)
