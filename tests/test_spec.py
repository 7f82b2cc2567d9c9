"""Valid specs: what loading, overrides and the JSON Schema give."""

import json
from pathlib import Path

import pytest

import kerspec
from kerspec.spec import json_schema, load_spec, parse_spec

SPECS = sorted((Path(__file__).parent.parent / "specs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_compile(path):
    kerspec.load(path, seed=0)


def test_catalog_entries_as_names_mappings_and_keras_class_names():
    spec = parse_spec(
        """
layers:
  - {type: Input, shape: [3]}
  - {type: Dense, units: 2, activation: LeakyReLU, kernel_initializer: GlorotNormal,
     bias_initializer: {type: constant, value: 0.5}, kernel_regularizer: L2}
compile: {optimizer: Adam, loss: MeanSquaredError, metrics: [mae]}
"""
    ).spec
    dense = spec.layers[1]
    assert dense.activation.type == "leaky_relu"
    assert dense.kernel_initializer.type == "glorot_normal"
    assert dense.bias_initializer.value == 0.5
    assert dense.kernel_regularizer.l2 == 0.01
    assert spec.compile.optimizer.type == "adam"
    assert spec.compile.loss.type == "mean_squared_error"
    assert spec.compile.metrics[0].name == "mae"


def test_overrides_change_fields_by_dotted_path():
    loaded = load_spec(
        Path(__file__).parent.parent / "specs" / "digits_mlp.yaml",
        ["fit.epochs=3", "layers.hidden.units=32", "layers.2.rate=0.5", "compile.optimizer=sgd"],
    )
    spec = loaded.spec
    assert spec.fit.epochs == 3
    assert spec.layers[1].units == 32
    assert spec.layers[2].rate == 0.5
    assert spec.compile.optimizer.type == "sgd"
    assert loaded.raw["fit"]["epochs"] == 3  # the resolved spec a run folder records


def test_override_can_add_a_missing_section():
    spec = parse_spec("layers:\n  - {type: Dense, units: 2, input_shape: [3]}\n", overrides=["fit.batch_size=7"]).spec
    assert spec.fit.batch_size == 7


def test_json_schema_describes_layers_and_catalogs():
    schema = json_schema()
    text = json.dumps(schema)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "Dense" in schema["$defs"] and "units" in schema["$defs"]["Dense"]["properties"]
    assert '"glorot_uniform"' in text and '"relu"' in text
    assert "from" in schema["$defs"]["Dense"]["properties"]


def test_multiple_inputs_and_outputs_as_strings_or_lists():
    spec = parse_spec(
        "layers:\n  - {type: Input, shape: [3], name: a}\n  - {type: Dense, units: 2}\n"
        "inputs: a\noutputs: [dense]\n"
    ).spec
    assert spec.inputs == ["a"] and spec.outputs == ["dense"]
