"""The catalogs are loaded as specs use them: a layer family's module is imported when a spec first
names one of its layers, and a catalog reference (an activation, an optimizer, ...) builds the
validator of the class it names, not of every class. What a spec does not use costs
`validate` and `summary` nothing (bench/startup.py times them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kerspec.layers import FAMILIES, LAYERS

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
layers:
  - {type: Input, shape: [4]}
  - {type: Dense, units: 8, activation: relu}
  - {type: Dense, units: 3, activation: softmax}
compile: {optimizer: adam, loss: categorical_crossentropy, metrics: [accuracy]}
"""

# Run in a fresh interpreter: this one has imported every family and built most classes.
PROBE = f"""
import json, sys
import kerspec
from kerspec.activations import ACTIVATIONS
from kerspec.layers import FAMILIES, LAYERS
from kerspec.training.optimizers import OPTIMIZERS

model = kerspec.from_yaml({SPEC!r}, seed=0)
model.summary()
imported = sorted(f for f in FAMILIES if "kerspec.layers." + f in sys.modules)
print(json.dumps({{
    "imported": imported,
    "activations": sorted(ACTIVATIONS._one),
    "optimizers": sorted(OPTIMIZERS._one),
    "activation_count": len(ACTIVATIONS.names()),
    "dumped": model.spec.model_dump(mode="json")["layers"][1]["activation"],
}}))
"""


# Families imported out of the catalog's order: wrappers imports recurrent, then every other.
ORDER_PROBE = """
import json
import kerspec.layers.wrappers
from kerspec.layers import LAYERS
print(json.dumps([LAYERS.names(), LAYERS.spellings()]))
"""


def probe(code: str):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return json.loads(done.stdout)


def test_each_family_holds_the_layers_it_registers():
    for family, names in FAMILIES.items():
        for name in names:
            module = LAYERS.get(name).__module__  # the family's module, or one of its package's
            assert f"{module}.".startswith(f"kerspec.layers.{family}."), (name, module)


def test_the_catalog_order_does_not_depend_on_the_import_order():
    """The JSON Schema and the `known:` hints list the layers in one order, however imported."""
    names, spellings = probe(ORDER_PROBE)
    assert names == [name for family in FAMILIES.values() for name in family]
    assert [spelling for spelling in spellings if spelling in names] == names


def test_a_spec_imports_and_builds_only_what_it_names():
    seen = probe(PROBE)
    assert seen["imported"] == ["core", "noise"]  # core imports noise's keep_mask
    assert seen["activations"] == ["relu", "softmax"]
    assert seen["activation_count"] > 10
    assert seen["optimizers"] == ["adam"]
    # A reference is dumped by its own class (built with its validator).
    assert seen["dumped"] == {"type": "relu", "negative_slope": 0.0, "max_value": None, "threshold": 0.0}


def test_an_alias_or_a_misspelling_finds_its_family():
    assert LAYERS.canonical("Convolution2D") == "Conv2D"
    try:
        LAYERS.canonical("LSMT")
    except ValueError as err:
        assert "did you mean 'LSTM'?" in str(err)
    else:
        raise AssertionError("a misspelt layer was accepted")
