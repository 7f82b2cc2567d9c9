"""Inference buffers by lifetime (kerspec/graph/lifetimes.py): predict with steps sharing buffers
gives the same bits as with a buffer per step, and keeps fewer bytes, through `Model.predict` as
a user calls it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kerspec
from kerspec.training.data import Dataset

ROOT = Path(__file__).parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted(
    (ROOT / "specs" / "gallery").glob("*.yaml")
)

HEAD = "kerspec: 1\nname: t\nseed: 3\ndtype: float32\ncompile: {optimizer: adam, loss: mse}\n"

GRAPHS = {
    # `a`'s output read through a view (`ra`) at the end, and `c`, a convolution of `a`'s kind
    # (same buffer keys) that runs after `ra`: `c` may not take `a`'s buffers while `ra` waits.
    "views": """
layers:
  - {type: Input, shape: [8, 8, 3], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: a}
  - {type: Activation, activation: relu, from: x, name: f}
  - {type: Reshape, target_shape: [64, 4], from: a, name: ra}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, from: f, name: c}
  - {type: Reshape, target_shape: [8, 8, 4], name: rc}
  - {type: Reshape, target_shape: [64, 4], name: rrc}
  - {type: Concatenate, from: [ra, rrc], name: cat}
  - {type: Flatten}
  - {type: Dropout, rate: 0.5}
  - {type: Dense, units: 3, name: y}
""",
    # Fan-out and residual Adds: one value read by a chain of steps of its own kind.
    "residual": """
layers:
  - {type: Input, shape: [8, 8, 4], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: c1}
  - {type: Activation, activation: relu, name: r1}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: c2}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, name: c3}
  - {type: Add, from: [c3, r1, c1], name: s}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, from: s, name: c4}
  - {type: Concatenate, from: [c4, s, r1], name: cat}
  - {type: GlobalAveragePooling2D}
  - {type: Dense, units: 2, name: y}
""",
    "masked_rnn": """
layers:
  - {type: Input, shape: [6, 3], name: x}
  - {type: Masking, mask_value: 0.0}
  - {type: LSTM, units: 5, return_sequences: true, name: l1}
  - {type: GRU, units: 5, return_sequences: true, name: l2}
  - {type: Add, from: [l1, l2]}
  - {type: SimpleRNN, units: 4}
  - {type: Dense, units: 2, name: y}
""",
    "bidirectional": """
layers:
  - {type: Input, shape: [7], name: x}
  - {type: Embedding, input_dim: 3, output_dim: 4, mask_zero: true}
  - {type: Bidirectional, layer: {type: GRU, units: 4, return_sequences: true}, name: b1}
  - {type: Bidirectional, layer: {type: LSTM, units: 4}, name: b2}
  - {type: Dense, units: 1, name: y}
""",
}


def _inputs(model: kerspec.Model, n: int, rng) -> dict[str, np.ndarray]:
    """Small whole numbers, valid for every layer (token ids under 3 included), with zeros that
    Masking and mask_zero mark as padding."""
    return {
        name: rng.integers(0, 3, (n, *(7 if d is None else d for d in shape))).astype(model.dtype)
        for name, shape in model.graph.input_shapes().items()
    }


def _assert_no_value_overwritten(plan) -> None:
    """Worked out here apart from graph/lifetimes.py: when a step runs, no value still to be read
    (or a model output) lies in the buffer group the step writes."""
    groups, views = plan.lifetimes.groups, plan.lifetimes.views
    last = {slot: len(plan.steps) for slot in plan.output_slots}
    for j, step in enumerate(plan.steps):
        for slot in step.inputs:
            last[slot] = max(last.get(slot, j), j)
    lies_in: dict[int, set] = {}
    for j, step in enumerate(plan.steps):
        for slot, where in lies_in.items():
            assert last.get(slot, -1) < j or groups[j] not in where, (j, slot)
        for slot, positions in zip(step.outputs, views[j]):
            lies_in[slot] = {groups[j]}.union(
                *(lies_in.get(step.inputs[k], set()) for k in positions)
            )


def _predict_both_ways(model: kerspec.Model, x) -> None:
    """Predict twice with buffers by lifetime (the second time reusing the first's arrays) and
    with a buffer per step, in batches that leave a smaller last one; the same bits each time."""
    by_lifetime = [model.predict(x, batch_size=8) for _ in range(2)]
    _assert_no_value_overwritten(model._inference_plan)
    model.inference_ctx.reuse_buffers = False
    per_step = model.predict(x, batch_size=8)
    for got in by_lifetime:
        assert got.keys() == per_step.keys()
        for name, want in per_step.items():
            np.testing.assert_array_equal(got[name], want, err_msg=name)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_predict_the_same_bits(path):
    model = kerspec.from_yaml(path.read_text(), seed=1)
    _predict_both_ways(model, _inputs(model, 19, np.random.default_rng(0)))


@pytest.mark.parametrize("name", GRAPHS)
def test_graphs_predict_the_same_bits(name):
    model = kerspec.from_yaml(HEAD + GRAPHS[name], seed=1)
    _predict_both_ways(model, _inputs(model, 19, np.random.default_rng(0)))


def test_a_view_found_late_restarts_the_pass_and_is_kept():
    model = kerspec.from_yaml(HEAD + GRAPHS["views"], seed=1)
    x = _inputs(model, 8, np.random.default_rng(0))
    model.predict(x)
    plan = model.plan
    names = [model.graph.nodes[s.node].name for s in plan.steps]
    views = dict(zip(names, plan.lifetimes.views))
    assert views["ra"] == views["rc"] == views["rrc"] == (frozenset({0}),)
    assert views["a"] == views["c"] == (frozenset(),)
    # `a`'s buffers hold `ra` until `cat` reads it: `c` is in another group.
    groups = dict(zip(names, plan.lifetimes.groups))
    assert groups["a"] != groups["c"]


R4_LIKE = (
    """
layers:
  - {type: Input, shape: [16, 16, 3], name: x}
  - {type: Conv2D, filters: 8, kernel_size: 3, padding: same}
  - {type: BatchNormalization}
  - {type: Activation, activation: relu, name: stem}
"""
    + "".join(
        f"""
  - {{type: Conv2D, filters: 8, kernel_size: 3, padding: same, from: {src}}}
  - {{type: BatchNormalization}}
  - {{type: Activation, activation: relu}}
  - {{type: Conv2D, filters: 8, kernel_size: 3, padding: same}}
  - {{type: BatchNormalization, name: b{k}_bn}}
  - {{type: Add, from: [b{k}_bn, {src}]}}
  - {{type: Activation, activation: relu, name: b{k}}}
"""
        for k, src in enumerate(["stem", "b0", "b1"])
    )
    + """
  - {type: GlobalAveragePooling2D}
  - {type: Dense, units: 10, name: y}
"""
)


def test_a_residual_cnn_keeps_as_many_output_buffers_as_values_live_at_once():
    """At predict, each relu after a BatchNormalization becomes its convolution's own (both
    folded, graph/fusions.py). At most three values of a convolution's output size are live at
    once (a block's input, its first convolution's output and its second's), so three arrays of
    that size are kept, whichever layers wrote them, where a buffer per step keeps one for each
    of the seven convolutions, three Adds and three relus."""
    x = _inputs(kerspec.from_yaml(HEAD + R4_LIKE), 32, np.random.default_rng(0))
    kept = {}
    for reuse in (True, False):
        model = kerspec.from_yaml(HEAD + R4_LIKE, seed=1)
        model.inference_ctx.reuse_buffers = reuse
        model.predict(x)
        kept[reuse] = model.inference_ctx.buffers
    size = 32 * 16 * 16 * 8 * 4  # a convolution's output, float32
    assert sum(a.nbytes == size for a in kept[False].values()) == 7 + 3 + 3
    assert sum(a.nbytes == size for a in kept[True].values()) == 3
    # Scratch every convolution shares (key[0] None) is the same either way.
    by_lifetime, per_step = (
        sum(a.nbytes for key, a in kept[r].items() if key[0] is not None) for r in (True, False)
    )
    assert by_lifetime < per_step / 2


@pytest.mark.parametrize("name", ["views", "masked_rnn"])
def test_evaluate_by_lifetime_gives_the_same_scores(name):
    model = kerspec.from_yaml(HEAD + GRAPHS[name], seed=1)
    rng = np.random.default_rng(0)
    x = _inputs(model, 19, rng)
    y = {
        out: rng.standard_normal(p.shape).astype(model.dtype) for out, p in model.predict(x).items()
    }
    data = Dataset(x=x, y=y, source="test")
    model.inference_ctx.buffers.clear()
    by_lifetime = model.evaluate(data, batch_size=8)
    assert any(
        isinstance(key[0], tuple) and key[0][0] == "group" for key in model.inference_ctx.buffers
    )
    model.inference_ctx.reuse_buffers = False
    assert model.evaluate(data, batch_size=8) == by_lifetime


def test_predict_over_batches_keeps_each_batchs_activation_and_add_outputs():
    """Model outputs written into kept buffers (an Activation's, an Add's, a BatchNormalization
    with its relu): the next batch writes into the same arrays, so predict must have kept each
    batch's outputs elsewhere before it runs."""
    model = kerspec.from_yaml(
        HEAD
        + """
layers:
  - {type: Input, shape: [6], name: x}
  - {type: Dense, units: 4, name: a}
  - {type: Dense, units: 4, name: b}
  - {type: Add, from: [a, b], name: s}
  - {type: Activation, activation: tanh, name: t}
  - {type: BatchNormalization, from: s}
  - {type: Activation, activation: relu, name: r}
outputs: [t, s, r]
""",
        seed=1,
    )
    x = np.random.default_rng(0).standard_normal((11, 6)).astype(np.float32)
    together = model.predict(x, batch_size=4)
    for name, y in together.items():
        apart = np.concatenate([model.predict(x[i : i + 4])[name] for i in range(0, 11, 4)])
        np.testing.assert_array_equal(y, apart, err_msg=name)
    assert len(np.unique(together["t"][:, 0])) == 11  # no two samples alike
