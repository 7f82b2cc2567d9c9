"""Plan rewrites (kerspec/graph/fusions.py): where each applies and where not, and each against
the unrewritten plan in float64, through the plan and predict as a user runs them."""

from __future__ import annotations

import numpy as np
import pytest

import kerspec
from kerspec.activations import ACTIVATIONS
from kerspec.graph import Plan, fusions
from kerspec.graph.fusions import ActivationAfter, ConvIntoWindows, PoolingFromWindows
from kerspec.layers import Context
from kerspec.training.data import Dataset
from tests.gradcheck import check_model_grads


def unrewritten(model: kerspec.Model, monkeypatch) -> Plan:
    with monkeypatch.context() as patch:
        patch.setattr(fusions, "REWRITES", ())
        return Plan(model.graph)


def run(plan: Plan, params, xs: list[np.ndarray], seed: int = 5):
    """The outputs and every weight's gradient for random output gradients."""
    ctx = Context(training=True, rng=np.random.default_rng(0))
    forward = plan.forward(params, xs, ctx, record=True)
    rng = np.random.default_rng(seed)
    grads = plan.backward(forward.tape, [rng.standard_normal(y.shape) for y in forward.outputs])
    return [y.copy() for y in forward.outputs], grads


def assert_same_as_unrewritten(model: kerspec.Model, xs: list[np.ndarray], monkeypatch) -> None:
    """Training outputs and gradients, and predict's outputs, of the rewritten plan against the
    unrewritten one's."""
    reference = unrewritten(model, monkeypatch)
    assert [s.layer for s in reference.steps] != [s.layer for s in model.plan.steps]
    (got, got_grads), (want, want_grads) = run(model.plan, model.params, xs), run(reference, model.params, xs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert got_grads.keys() == want_grads.keys()
    for owner, grads in want_grads.items():
        for name, g in grads.items():
            np.testing.assert_allclose(got_grads[owner][name], g, rtol=1e-12, atol=1e-12, err_msg=f"{owner}/{name}")
    ctx = Context(training=False, rng=np.random.default_rng(0))
    predicted = model.predict(dict(zip(model.input_names, xs)))
    for name, y in zip(model.output_names, reference.forward(model.params, xs, ctx, record=False).outputs):
        np.testing.assert_allclose(predicted[name], y, rtol=1e-12, atol=1e-12)


def _steps(model):
    return _steps_of(model, model.plan)


def _steps_of(model, plan):
    return {model.graph.nodes[s.node].name: s for s in plan.steps}


def _conv(layer):
    return layer.conv if isinstance(layer, ConvIntoWindows) else layer


# --- relu_after_max_pooling ---

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


def test_relu_read_only_by_max_pooling_moves_after_it():
    steps = _steps(kerspec.from_yaml(RELU_POOL))
    for conv, pool in (("c1", "p1"), ("c2", "g")):
        assert _conv(steps[conv].layer).activation.type == "linear"
        assert isinstance(steps[pool].layer, ActivationAfter)
        assert steps[pool].layer.activation.type == "relu"
    assert steps["g"].layer.activation.max_value == 0.5
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
    assert _conv(steps["c1"].layer).activation.type == "relu"
    assert not isinstance(steps["p1"].layer, ActivationAfter)


def test_a_moved_relu_against_the_unrewritten_plan(rng, monkeypatch):
    model = kerspec.from_yaml(RELU_POOL)
    # Ties after the ReLU (negative windows), and values above max_value.
    x = rng.standard_normal((3, 6, 6, 2)) - 0.5
    assert_same_as_unrewritten(model, [x], monkeypatch)
    check_model_grads(model, [x])


# --- split_into_windows ---


def test_convolution_writes_its_output_split_into_the_pooling_windows():
    steps = _steps(kerspec.from_yaml(RELU_POOL))
    assert steps["c1"].layer.window == (2, 2)
    assert isinstance(steps["p1"].layer.layer, PoolingFromWindows)  # and the ReLU after it
    # Global pooling has no windows to split into.
    assert not isinstance(steps["c2"].layer, ConvIntoWindows)


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
def test_split_convolution_against_the_unrewritten_plan(case, pooling, rng, monkeypatch):
    split = kerspec.from_yaml(_split_spec(case, pooling))
    assert isinstance(_steps(split)["c"].layer, ConvIntoWindows)
    x = rng.standard_normal((3, *SPLIT_CASES[case][0]))
    assert_same_as_unrewritten(split, [x], monkeypatch)
    check_model_grads(split, [x])


@pytest.mark.parametrize(
    "pool",
    ["pool_size: 2, strides: 1", "pool_size: 2, padding: same", "pool_size: 2, data_format: channels_first"],
)
def test_no_split_when_the_windows_do_not_tile_the_input(pool):
    spec = RELU_POOL.replace("{type: MaxPooling2D, name: p1}", f"{{type: MaxPooling2D, {pool}, name: p1}}")
    steps = _steps(kerspec.from_yaml(spec))
    assert not isinstance(steps["c1"].layer, ConvIntoWindows)
    assert not isinstance(steps["p1"].layer.layer, PoolingFromWindows)


def test_no_split_when_the_convolution_is_also_an_output():
    steps = _steps(kerspec.from_yaml(_split_spec("odd edge", conv_is_output=True)))
    assert not isinstance(steps["c"].layer, ConvIntoWindows)


# --- fold_batch_norm ---

SPEC = """\
name: folds
seed: 0
dtype: float64
layers:
  - {{type: Input, shape: [6, 5, 3], name: x}}
  - {{type: Conv2D, filters: 4, kernel_size: 3, padding: same, {conv}}}
  - {{type: BatchNormalization, {norm}}}
  - {{type: Activation, activation: relu, name: image}}
  - {{type: Input, shape: [7, 4], name: series}}
  - {{type: Conv1D, filters: 3, kernel_size: 2}}
  - {{type: BatchNormalization, center: false}}
  - {{type: Flatten, name: f1}}
  - {{type: Flatten, from: image, name: f0}}
  - {{type: Concatenate, from: [f0, f1]}}
  - {{type: Dense, units: 5, use_bias: false}}
  - {{type: BatchNormalization, scale: false}}
  - {{type: Dense, units: 2, name: y}}
"""


def build(conv: str = "use_bias: true", norm: str = "epsilon: 0.01") -> kerspec.Model:
    model = kerspec.from_yaml(SPEC.format(conv=conv, norm=norm))
    rng = np.random.default_rng(1)
    for weights in model.params.values():  # moving statistics and weights far from their start
        for name, w in weights.items():
            w[...] = rng.standard_normal(w.shape)
            if name == "moving_variance":
                w[...] = np.abs(w) + 0.1
    return model


def inputs():
    rng = np.random.default_rng(2)
    return {"x": rng.standard_normal((5, 6, 5, 3)), "series": rng.standard_normal((5, 7, 4))}


def unfolded(model: kerspec.Model, x: dict) -> np.ndarray:
    ctx = Context(training=False, rng=np.random.default_rng(0))
    xs = [x[name] for name in model.input_names]
    return model.plan.forward(model.params, xs, ctx, record=False).outputs[0]


def test_batch_normalization_folds_into_conv1d_conv2d_and_dense():
    model = build()
    folded = Plan(model.graph, inference=True)
    assert len(folded.folds) == 3 and len(folded.steps) == len(model.plan.steps) - 3
    assert model.plan.folds == []  # the training plan keeps its BatchNormalizations
    x = inputs()
    np.testing.assert_allclose(model.predict(x)["y"], unfolded(model, x), rtol=1e-12, atol=1e-12)


def test_predict_folds_the_current_weights():
    model = build()
    x = inputs()
    model.predict(x)
    for weights in model.params.values():  # as training would between two predicts
        for w in weights.values():
            w *= 1.5
    np.testing.assert_allclose(model.predict(x)["y"], unfolded(model, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "conv,norm",
    [
        ("activation: relu", "epsilon: 0.01"),  # BN(relu(z)) is no affine map of z
        ("data_format: channels_first", "axis: 1"),  # channels on the first axis
        ("use_bias: true", "axis: 1"),  # statistics along a spatial axis, not the channels
    ],
)
def test_no_fold_where_the_identity_does_not_hold(conv, norm):
    model = build(conv, norm)
    folds = Plan(model.graph, inference=True).folds
    assert len(folds) == 2  # the Conv1D's and the Dense's only
    x = inputs()
    np.testing.assert_allclose(model.predict(x)["y"], unfolded(model, x), rtol=1e-12, atol=1e-12)


# --- activation_over_norm, activation_into_fold ---

NORM_ACT = """
name: norm_act
seed: 0
dtype: float64
layers:
  - {{type: Input, shape: [5, 4, 3], name: x}}
  - {{type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: c}}
  - {{type: BatchNormalization, momentum: 0.5, name: bn}}
  - {{type: Activation, activation: {activation}, name: act}}
  - {{type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: c2}}
  - {{type: BatchNormalization, name: bn2}}
  - {{type: Add, from: [bn2, act], name: add}}
  - {{type: Activation, activation: relu, name: out}}
  - {{type: GlobalAveragePooling2D}}
  - {{type: Dense, units: 2, name: y}}
{extra}"""


def norm_act(activation: str = "relu", extra: str = "") -> kerspec.Model:
    return kerspec.from_yaml(NORM_ACT.format(activation=activation, extra=extra))


def run_copy(plan: Plan, params, xs):
    """`run` on a copy of the weights, returned with the copy (the moving statistics moved)."""
    params = {owner: {n: w.copy() for n, w in ws.items()} for owner, ws in params.items()}
    return run(plan, params, xs), params


@pytest.mark.parametrize("activation", ["relu", "tanh", "{type: relu, max_value: 0.5, threshold: 0.2}"])
def test_batch_normalization_and_activation_as_one_step(activation, rng, monkeypatch):
    model = norm_act(activation)
    steps = _steps(model)
    assert isinstance(steps["bn"].layer, fusions.NormThenActivation)
    assert "act" not in steps
    # bn2 is read by the Add: not an activation, so it stays a step of its own, as does the Add.
    assert type(steps["bn2"].layer).__name__ == "BatchNormalization" and "out" in steps
    x = rng.standard_normal((3, 5, 4, 3))
    reference = unrewritten(model, monkeypatch)
    assert steps["bn"].outputs == _steps_of(model, reference)["act"].outputs
    (got, got_grads), got_params = run_copy(model.plan, model.params, [x])
    (want, want_grads), want_params = run_copy(reference, model.params, [x])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-12)
    for owner, grads in want_grads.items():
        for name, g in grads.items():
            np.testing.assert_allclose(got_grads[owner][name], g, rtol=1e-12, atol=1e-12)
    assert got_grads.keys() == want_grads.keys()
    for owner in ("bn", "bn2"):
        for name in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(got_params[owner][name], want_params[owner][name], rtol=1e-12)
            assert not np.allclose(got_params[owner][name], model.params[owner][name])
    assert_same_as_unrewritten(model, [x], monkeypatch)


@pytest.mark.parametrize(
    "activation,extra",
    [
        # The activation's backward reads its input, which the in-place forward overwrites.
        ("elu", ""),
        ("gelu", ""),
        ("swish", ""),
        # Not elementwise.
        ("softmax", ""),
        # The normalization's output has a second reader, or is a model output.
        ("relu", "  - {type: Flatten, from: bn, name: f}\noutputs: [y, f]\n"),
        ("relu", "outputs: [y, bn]\n"),
    ],
)
def test_no_activation_over_norm_where_the_identity_does_not_hold(activation, extra, rng, monkeypatch):
    model = norm_act(activation, extra)
    steps = _steps(model)
    assert type(steps["bn"].layer).__name__ == "BatchNormalization"
    assert steps["act"].layer.activation.type == ACTIVATIONS.create(activation).type
    x = rng.standard_normal((3, 5, 4, 3))
    reference = unrewritten(model, monkeypatch)
    (got, got_grads), (want, want_grads) = run(model.plan, model.params, [x]), run(reference, model.params, [x])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for owner, grads in want_grads.items():
        for name, g in grads.items():
            np.testing.assert_allclose(got_grads[owner][name], g, rtol=1e-12, atol=1e-12)


def test_training_with_norm_and_activation_in_one_step_is_bit_for_bit_the_same(monkeypatch):
    """float32, several steps of Adam through `fit` as a user runs it: the same operations in
    the same order, so the same bits."""
    spec = NORM_ACT.format(activation="relu", extra="compile: {optimizer: adam, loss: mse}\nfit: {epochs: 3, batch_size: 4}\n")
    spec = spec.replace("dtype: float64", "dtype: float32")
    rng = np.random.default_rng(3)
    data = Dataset(
        x={"x": rng.standard_normal((10, 5, 4, 3)).astype(np.float32)},
        y={"y": rng.standard_normal((10, 2)).astype(np.float32)},
        source="test",
    )
    fused = kerspec.from_yaml(spec)
    with monkeypatch.context() as patch:
        patch.setattr(fusions, "REWRITES", ())
        plain = kerspec.from_yaml(spec)
    assert isinstance(_steps(fused)["bn"].layer, fusions.NormThenActivation)
    assert "act" in _steps(plain)
    losses = [model.fit(data).history["loss"] for model in (fused, plain)]
    assert losses[0] == losses[1]
    for owner, weights in plain.params.items():
        for name, w in weights.items():
            assert np.array_equal(fused.params[owner][name], w), f"{owner}/{name}"


def test_an_activation_after_a_folded_norm_is_the_folded_layers_own(rng, monkeypatch):
    model = norm_act("tanh")
    plan = Plan(model.graph, inference=True)
    steps = _steps_of(model, plan)
    # c, bn, act in one Dense-like step; c2 and bn2 folded, but the Add reads them.
    assert "bn" not in steps and "act" not in steps and "bn2" not in steps
    assert steps["c"].layer.activation.type == "tanh" and steps["c2"].layer.activation.type == "linear"
    assert [f.owner for f in plan.folds] == ["c/bn", "c2/bn2"]
    x = rng.standard_normal((3, 5, 4, 3))
    for weights in model.params.values():  # moving statistics far from their start
        for name, w in weights.items():
            w[...] = rng.standard_normal(w.shape)
            if name == "moving_variance":
                w[...] = np.abs(w) + 0.1
    ctx = Context(training=False, rng=np.random.default_rng(0))
    want = unrewritten(model, monkeypatch).forward(model.params, [x], ctx, record=False).outputs[0]
    np.testing.assert_allclose(model.predict(x)["y"], want, rtol=1e-12, atol=1e-12)


def test_norm_and_relu_before_max_pooling(rng, monkeypatch):
    """The ReLU moves after the pooling in training (the normalization keeps no activation);
    at inference it becomes the folded convolution's, then moves after the pooling, and the
    convolution writes its output split into the windows."""
    model = kerspec.from_yaml(
        """
seed: 0
dtype: float64
layers:
  - {type: Input, shape: [6, 4, 3], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: c}
  - {type: BatchNormalization, name: bn}
  - {type: Activation, activation: relu, name: act}
  - {type: MaxPooling2D, name: p}
  - {type: Flatten}
  - {type: Dense, units: 2, name: y}
"""
    )
    steps = _steps(model)
    assert type(steps["bn"].layer).__name__ == "BatchNormalization"
    assert steps["act"].layer.activation.type == "linear" and isinstance(steps["p"].layer, ActivationAfter)
    inference = _steps_of(model, Plan(model.graph, inference=True))
    assert "bn" not in inference and "act" not in inference
    assert isinstance(inference["c"].layer, ConvIntoWindows)
    assert inference["c"].layer.conv.activation.type == "linear"
    assert inference["p"].layer.activation.type == "relu"
    assert_same_as_unrewritten(model, [rng.standard_normal((3, 6, 4, 3))], monkeypatch)
