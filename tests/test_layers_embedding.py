"""Embedding: the table's gradient (indices have none), index checks, Keras equivalence."""

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.api import from_yaml
from kerspec.errors import DataError, GraphError
from kerspec.layers import LAYERS, Context
from tests.gradcheck import check_grads
from tests.harness import build

# Indices with repeats, so that summed row gradients are checked too.
GRAD_CASES = {
    "Embedding": [
        ({"type": "Embedding", "input_dim": 5, "output_dim": 3}, np.array([[0, 4, 4], [2, 0, 4]])),
        (
            {"type": "Embedding", "input_dim": 4, "output_dim": 2},
            np.array([[[1.0], [3.0]], [[3.0], [0.0]]]),
        ),
        (
            {"type": "Embedding", "input_dim": 3, "output_dim": 2, "mask_zero": True},
            np.array([1, 0, 2]),
        ),
    ],
}


def test_every_embedding_layer_has_a_gradient_case():
    names = {n for n in LAYERS.names() if LAYERS.get(n).__module__ == "kerspec.layers.embedding"}
    assert set(GRAD_CASES) == names


@pytest.mark.parametrize("config,indices", GRAD_CASES["Embedding"])
def test_gradient_of_the_table(config, indices):
    layer = build(config)
    table = np.random.default_rng(0).standard_normal((config["input_dim"], config["output_dim"]))

    def forward():
        (y,), backprop = layer.forward(
            {"embeddings": table}, [indices], Context(training=True, rng=None)
        )
        assert y.shape == (*indices.shape, config["output_dim"]) and y.dtype == np.float64

        def grads(dy):
            (dx,), dws = backprop([dy])
            assert dx is None  # integer indices have no gradient
            return dws

        return y, grads

    check_grads(forward, {"embeddings": table})


def test_float_indices_are_truncated_and_dtype_kept():
    layer = build({"type": "Embedding", "input_dim": 3, "output_dim": 2})
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    (y,), _ = layer.forward(
        {"embeddings": table}, [np.array([[2.0, 0.0, 1.0]], np.float32)], Context(False, None)
    )
    np.testing.assert_array_equal(y, [[[4, 5], [0, 1], [2, 3]]])
    assert y.dtype == np.float32


@pytest.mark.parametrize("bad", [5, -1])
def test_out_of_range_index_is_a_clear_error(bad):
    layer = build({"type": "Embedding", "name": "words", "input_dim": 5, "output_dim": 2})
    table = np.zeros((5, 2), np.float32)
    with pytest.raises(DataError, match=rf"Embedding 'words': index {bad} is outside \[0, 5\)"):
        layer.forward({"embeddings": table}, [np.array([[0, bad]])], Context(False, None))


def test_shapes_and_weights():
    layer = build({"type": "Embedding", "input_dim": 10, "output_dim": 4})
    assert layer.output_shapes([(7,)]) == [(7, 4)]
    assert layer.output_shapes([(None,)]) == [(None, 4)]
    (spec,) = layer.weights([(7,)])
    assert (spec.name, spec.shape, spec.initializer.type) == (
        "embeddings",
        (10, 4),
        "random_uniform",
    )


@pytest.mark.parametrize(
    "extra", [{"input_length": 5}, {"input_dim": 0}, {"lora_rank": 2}, {"weights": [[1.0]]}]
)
def test_rejected_arguments(extra):
    with pytest.raises(ValidationError):
        build({"type": "Embedding", "input_dim": 3, "output_dim": 2, **extra})


@pytest.mark.parametrize("mask_zero", [False, True])
def test_matches_keras(mask_zero):
    keras = pytest.importorskip("keras")
    import torch

    rng = np.random.default_rng(5)
    config = {"type": "Embedding", "input_dim": 6, "output_dim": 3, "mask_zero": mask_zero}
    indices = rng.integers(0, 6, size=(4, 5)).astype(np.float32)
    table = rng.standard_normal((6, 3)).astype(np.float32)
    r = rng.standard_normal((4, 5, 3)).astype(np.float32)

    k_layer = keras.layers.Embedding(6, 3, mask_zero=mask_zero)
    k_layer.build((4, 5))
    k_layer.embeddings.assign(table)
    k_y = k_layer(torch.tensor(indices))
    (k_y * torch.tensor(r)).sum().backward()

    (y,), backprop = build(config).forward({"embeddings": table}, [indices], Context(True, None))
    _, grads = backprop([r.copy()])
    np.testing.assert_allclose(y, k_y.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        grads["embeddings"], k_layer.embeddings.value.grad.numpy(), rtol=1e-5, atol=1e-6
    )


MASKED = """
seed: 0
layers:
  - {name: tokens, type: Input, shape: [4]}
  - {name: emb, type: Embedding, input_dim: 5, output_dim: 3, mask_zero: true}
  - {name: other, type: Embedding, input_dim: 5, output_dim: 3, mask_zero: true, from: tokens}
  - {name: norm, type: LayerNormalization, from: emb}
  - {name: noisy, type: GaussianNoise, stddev: 0.1}
  - {name: total, type: Add, from: [noisy, other]}
  - {name: dot, type: Dot, axes: 2, from: [total, other]}
outputs: [total, dot]
"""


def test_mask_zero_flows_downstream():
    model = from_yaml(MASKED)
    tokens = np.array([[3, 1, 0, 0], [2, 0, 4, 0]], np.float32)
    run = model.plan.forward(
        model.params, [tokens], Context(False, np.random.default_rng(0)), record=False
    )
    total_mask, dot_mask = run.masks
    # Passed through LayerNormalization and GaussianNoise, or-ed by Add, dropped by Dot (Keras).
    np.testing.assert_array_equal(total_mask, tokens != 0)
    assert dot_mask is None
    assert run.outputs[0].shape == (2, 4, 3) and run.outputs[0].dtype == np.float32


def test_a_layer_that_cannot_take_the_mask_is_a_graph_error():
    with pytest.raises(GraphError, match="BatchNormalization .*: cannot take the mask"):
        from_yaml(MASKED.replace("type: LayerNormalization", "type: BatchNormalization"))
