"""The compiler and the plan: names, links, order, shapes, sharing, and whole-graph gradients."""

import re

import pytest

import kerspec
from kerspec.graph import Ref
from tests.gradcheck import check_model_grads


def test_default_names_follow_keras_per_spec():
    model = kerspec.from_yaml(
        """
layers:
  - {type: Input, shape: [8, 8, 1]}
  - {type: Reshape, target_shape: [64]}
  - {type: Dense, units: 4}
  - {type: Dense, units: 4, name: dense_1}
  - {type: Dense, units: 4}
  - {type: Activation, activation: relu}
"""
    )
    names = [n.name for n in model.graph.nodes]
    assert names == ["input_layer", "reshape", "dense", "dense_1", "dense_2", "activation"]


def test_sequential_shorthand_makes_an_input():
    model = kerspec.from_yaml("layers:\n  - {type: Dense, units: 3, input_shape: [5]}\n")
    assert model.input_names == ["input"]
    assert model.graph.output_shape(model.graph.outputs[0]) == (3,)
    assert model.graph.is_sequential()


def test_execution_order_follows_links_not_spec_order():
    model = kerspec.from_yaml(
        """
layers:
  - {type: Input, shape: [4], name: a}
  - {type: Concatenate, from: [left, right], name: cat}
  - {type: Dense, units: 2, from: a, name: left}
  - {type: Dense, units: 3, from: a, name: right}
outputs: [cat]
"""
    )
    assert [n.name for n in model.graph.nodes] == ["a", "left", "right", "cat"]
    assert model.graph.output_shape(Ref("cat")) == (5,)
    assert not model.graph.is_sequential()


def test_summary_connected_to_for_graphs():
    model = kerspec.from_yaml(
        """
layers:
  - {type: Input, shape: [4], name: a}
  - {type: Dense, units: 2, name: left}
  - {type: Dense, units: 2, from: a, name: right}
  - {type: Concatenate, from: [left, right], name: cat}
"""
    )
    text = model.summary()
    assert "Connected to" in text
    assert "left[0][0]" in text and "right[0][0]" in text
    assert "a (InputLayer)" in text
    assert "Total params: 20" in text


SHARED = """
dtype: float64
seed: 3
layers:
  - {type: Input, shape: [3], name: a}
  - {type: Input, shape: [3], name: b}
  - {type: Dense, units: 4, activation: tanh, from: a, name: encode}
  - {name: encode_b, share: encode, from: b}
  - {type: Dense, units: 2, activation: sigmoid, from: encode, name: side}
  - {type: Concatenate, from: [encode, encode_b, side], name: cat}
  - {type: Dense, units: 2, name: out}
"""


def test_shared_layer_has_one_set_of_weights():
    model = kerspec.from_yaml(SHARED)
    assert set(model.params) == {"encode", "side", "out"}
    assert model.count_params() == (3 * 4 + 4 + 4 * 2 + 2 + 10 * 2 + 2, 0)
    row = next(r for r in model.summary_data()["layers"] if r["name"] == "encode_b")
    assert row["shared_with"] == "encode" and row["params"] == 0


def test_whole_graph_gradients_with_sharing_and_fan_out(rng):
    """Gradients summed over a shared layer's two uses and over a node read by two layers."""
    model = kerspec.from_yaml(SHARED)
    check_model_grads(model, [rng.standard_normal((5, 3)), rng.standard_normal((5, 3))])


BRANCHES = """
dtype: float64
seed: 1
layers:
  - {type: Input, shape: [3], name: a}
  - {type: Input, shape: [3], name: b}
  - {type: Dense, units: 5, activation: ACT, name: da, from: a}
  - {type: Dense, units: 5, activation: ACT, name: db, from: FROM}
  - {type: MERGE, from: [da, db], name: merge}
  - {type: Dense, units: 2, name: head}
compile: {optimizer: sgd, loss: mse}
"""


@pytest.mark.parametrize("merge", ["Add", "Average", "Subtract", "Maximum", "Concatenate"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "softmax"])
@pytest.mark.parametrize("source", ["a", "b"])
def test_gradients_where_one_gradient_reaches_two_branches(merge, activation, source, rng):
    """Add hands one dy to both branches, and an activation's backward overwrites its dy: the
    plan must give each branch its own array (the ownership rule in layers/base.py)."""
    text = BRANCHES.replace("MERGE", merge).replace("ACT", activation).replace("FROM", source)
    if source == "a":  # one input read by both branches
        text = text.replace("  - {type: Input, shape: [3], name: b}\n", "")
    model = kerspec.from_yaml(text)
    check_model_grads(model, [rng.standard_normal((4, 3)) for _ in model.input_names])


def test_return_index_out_of_range_is_reported():
    with pytest.raises(kerspec.KerspecError, match=r"dense\[1\] does not exist: 'dense' has 1 output"):
        kerspec.from_yaml(
            "layers:\n  - {type: Input, shape: [2]}\n  - {type: Dense, units: 2}\n"
            "  - {type: Dense, units: 2, from: 'dense[1]'}\n"
        )


def test_inference_drops_intermediate_values(rng):
    model = kerspec.from_yaml(SHARED)
    freed = {slot for slots in model.plan.free_after for slot in slots}
    assert freed and not freed & set(model.plan.output_slots)


def test_first_layer_needs_no_input_gradient():
    model = kerspec.from_yaml("layers:\n  - {type: Dense, units: 3, input_shape: [5]}\n  - {type: Dense, units: 2}\n")
    assert [step.need_dx for step in model.plan.steps] == [False, True]


@pytest.mark.parametrize(
    "compile_section,message",
    [
        ("{loss: {kind: mse, color: mae}}", "compile.loss: 'color' is not an output (outputs: kind, size)"),
        ("{loss: {kind: mse}}", "compile.loss: no loss for output 'size'"),
        ("{loss: mse, loss_weights: [1.0]}", "compile.loss_weights has 1 entries for 2 outputs"),
        ("{loss: mse, metrics: {shape: [mae]}}", "compile.metrics: 'shape' is not an output"),
    ],
)
def test_losses_and_metrics_must_name_real_outputs(compile_section, message):
    model = kerspec.from_yaml(
        "layers:\n  - {type: Input, shape: [3]}\n  - {type: Dense, units: 2, name: kind}\n"
        "  - {type: Dense, units: 1, from: input_layer, name: size}\n"
        f"outputs: [kind, size]\ncompile: {compile_section}\n"
    )
    with pytest.raises(kerspec.KerspecError, match=re.escape(message)):
        model.trainer  # noqa: B018 (building the trainer is what checks compile)
