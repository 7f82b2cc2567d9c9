"""The compiler and the plan: names, links, order, shapes, sharing, and whole-graph gradients."""

import re

import numpy as np
import pytest

import kerspec
from kerspec.graph import Ref
from kerspec.layers import Context
from tests.gradcheck import check_grads


def check_model_grads(model, xs):
    """Every weight's gradient through the whole plan (one output) against central differences."""
    wrt = {f"{o}/{n}": w for o, ws in model.params.items() for n, w in ws.items()}

    def forward():
        ctx = Context(training=True, rng=np.random.default_rng(0))
        run = model.plan.forward(model.params, xs, ctx, record=True)
        (y,) = run.outputs

        def backprop(dy):
            grads = model.plan.backward(run.tape, [dy])
            return {f"{o}/{n}": g for o, gs in grads.items() for n, g in gs.items()}

        return y, backprop

    check_grads(forward, wrt)


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


RELU_POOL = """
dtype: float64
seed: 0
layers:
  - {type: Input, shape: [6, 6, 2], name: x}
  - {type: Conv2D, filters: 3, kernel_size: 3, activation: relu, name: c1}
  - {type: MaxPooling2D, name: p1}
  - {type: Conv2D, filters: 2, kernel_size: 2, activation: {type: relu, max_value: 0.5}, name: c2}
  - {type: GlobalMaxPooling2D, name: g}
  - {type: Dense, units: 2, activation: relu, name: d}
"""


def _steps(model):
    return {model.graph.nodes[s.node].name: s for s in model.plan.steps}


def test_relu_read_only_by_max_pooling_moves_after_it():
    steps = _steps(kerspec.from_yaml(RELU_POOL))
    for conv, pool in (("c1", "p1"), ("c2", "g")):
        assert steps[conv].layer.activation.type == "linear"
        assert steps[pool].after.type == "relu"
    assert steps["c2"].layer.activation.type == "linear"
    assert steps["g"].after.max_value == 0.5
    assert steps["d"].layer.activation.type == "relu"  # read by no pooling


@pytest.mark.parametrize(
    "name,extra",
    [
        # The conv output is also a model output, has a second reader, a leaky ReLU (no ties to
        # hide a different pick) or an activity regularizer (it sees the ReLU's output).
        ("output", "outputs: [d, c1]\n"),
        ("second reader", "  - {type: Flatten, from: c1, name: f}\noutputs: [d, f]\n"),
        ("leaky", ""),
        ("activity", ""),
    ],
)
def test_relu_stays_where_moving_it_would_change_something(name, extra):
    spec = RELU_POOL + extra
    if name == "leaky":
        spec = spec.replace("activation: relu, name: c1", "activation: {type: relu, negative_slope: 0.1}, name: c1")
    if name == "activity":
        spec = spec.replace("name: c1}", "name: c1, activity_regularizer: l2}")
    steps = _steps(kerspec.from_yaml(spec))
    assert steps["c1"].layer.activation.type == "relu"
    assert steps["p1"].after is None


def test_gradients_through_a_moved_relu(rng):
    check_model_grads(kerspec.from_yaml(RELU_POOL), [rng.standard_normal((3, 6, 6, 2))])


def test_convolution_writes_its_output_split_into_the_pooling_windows():
    steps = _steps(kerspec.from_yaml(RELU_POOL))
    assert steps["c1"].layer._pool_blocks == (2, 2)
    assert steps["p1"].layer._split_input
    # Global pooling has no windows to split into.
    assert steps["c2"].layer._pool_blocks is None


# A first convolution, then the one whose output is split (c) before the pooling (p), so that
# c's input gradient reaches a's weights. Odd edges, strides, dilation, groups, padding, short
# and long windows (bias in the GEMM or after it), offset-major columns.
SPLIT_CASES = {
    "odd edge": ([9, 9, 2], "kernel_size: 3", "pool_size: 2"),
    "strided": ([11, 11, 2], "kernel_size: 3, strides: 2", "pool_size: 2"),
    "dilated same grouped": ([8, 7, 2], "kernel_size: 2, dilation_rate: 2, padding: same, groups: 2", "pool_size: [3, 2]"),
    "long window": ([6, 6, 8], "kernel_size: 3", "pool_size: 2"),
    "offset-major": ([5, 24, 1], "kernel_size: [1, 3]", "pool_size: [1, 2]"),
    "1D causal": ([13, 2], "kernel_size: 3, padding: causal", "pool_size: 3"),
}


def _split_spec(case: str, pooling: str = "Max", *, conv_is_output: bool = False) -> str:
    shape, conv, pool = SPLIT_CASES[case]
    rank = len(shape) - 1
    return (
        f"dtype: float64\nseed: 1\nlayers:\n  - {{type: Input, shape: {shape}}}\n"
        f"  - {{type: Conv{rank}D, filters: {shape[-1]}, kernel_size: 1, activation: tanh, name: a}}\n"
        f"  - {{type: Conv{rank}D, filters: 4, {conv}, activation: relu, name: c}}\n"
        f"  - {{type: {pooling}Pooling{rank}D, {pool}, name: p}}\n"
        "  - {type: Flatten}\n  - {type: Dense, units: 2, name: d}\n"
        + ("outputs: [d, c]\n" if conv_is_output else "")
    )


@pytest.mark.parametrize("pooling", ["Max", "Average"])
@pytest.mark.parametrize("case", SPLIT_CASES)
def test_split_convolution_outputs_and_gradients(case, pooling, rng):
    split = kerspec.from_yaml(_split_spec(case, pooling))
    whole = kerspec.from_yaml(_split_spec(case, pooling, conv_is_output=True))
    assert _steps(split)["c"].layer._pool_blocks is not None
    assert _steps(whole)["c"].layer._pool_blocks is None
    for owner, weights in split.params.items():
        for name, w in weights.items():
            whole.params[owner][name][...] = w
    x = rng.standard_normal((3, *SPLIT_CASES[case][0]))
    np.testing.assert_allclose(split.predict(x)["d"], whole.predict(x)["d"], rtol=1e-12, atol=1e-12)
    check_model_grads(split, [x])


@pytest.mark.parametrize(
    "pool",
    ["pool_size: 2, strides: 1", "pool_size: 2, padding: same", "pool_size: 2, data_format: channels_first"],
)
def test_no_split_when_the_windows_do_not_tile_the_input(pool):
    spec = RELU_POOL.replace("{type: MaxPooling2D, name: p1}", f"{{type: MaxPooling2D, {pool}, name: p1}}")
    steps = _steps(kerspec.from_yaml(spec))
    assert steps["c1"].layer._pool_blocks is None
    assert not steps["p1"].layer._split_input
