"""Whole-plan gradient checks: the loss of a batch, differentiated through `Trainer.gradients`
exactly as a training step runs it, against float64 central differences of that same loss.

The context is the one training keeps between steps (its buffers are reused); only its random
draws restart at every evaluation, so Dropout and noise draw the same values each time. The
analytic gradients are taken at the third step, after two forward and backward passes have
filled and reused every buffer.
"""

from __future__ import annotations

import numpy as np

import kerspec
from kerspec.layers import Context
from tests.gradcheck import derivative

SMALL = 16  # weight arrays up to this size are checked element by element


def batch_lists(model: kerspec.Model, data, n: int):
    """The first `n` samples of a Dataset as the lists a training step takes."""
    x = [data.x[name][:n] for name in model.input_names]
    y = [data.y[name][:n] for name in model.output_names]
    sw = None
    if data.sample_weight:
        sw = [data.sample_weight.get(name, None) for name in model.output_names]
        sw = [None if w is None else w[:n] for w in sw]
    return x, y, sw


def unzero(model: kerspec.Model, rng) -> None:
    """Weights initialised to zero (biases, an LSTM's gates but its forget gate's) drawn small
    and random instead: with a zero bias, exact zeros in the data (the digits' background, padded
    steps) put pre-activations exactly on ReLU's kink, where central differences see half a slope
    that no implementation computes."""
    for weights in model.params.values():
        for w in weights.values():
            zero = w == 0
            w[zero] = rng.normal(0.0, 0.1, int(zero.sum()))


def check_training_gradients(
    model: kerspec.Model, xs, ys, sample_weights=None, *, rng=None, eps=1e-6, rtol=2e-5, atol=1e-7
) -> None:
    """Every trainable weight's gradient against central differences of the training loss
    (after `unzero`).

    Arrays of up to SMALL values are checked at every element, larger ones at four random
    elements."""
    assert model.dtype == np.float64, "a gradient check needs `dtype: float64`"
    rng = rng or np.random.default_rng(0)
    unzero(model, rng)
    trainer = model.trainer
    ctx = Context(training=True, rng=np.random.default_rng(0))

    def run(with_grads=False):
        ctx.rng = np.random.default_rng(7)
        ctx.seeded.clear()
        total, grads, _, _ = trainer.gradients(xs, ys, ctx, sample_weights)
        assert np.isfinite(total), f"the loss is {total}"
        return (total, grads) if with_grads else total

    for _ in range(2):
        run(with_grads=True)
    _, grads = run(with_grads=True)
    grads = [g.copy() for g in grads]  # the next evaluations reuse the buffers
    for (owner, name), weight, grad in zip(trainer.trainable, trainer.weights, grads):
        where = f"gradient of {owner}/{name}"
        if weight.size <= SMALL:
            picks = range(weight.size)
        else:
            picks = rng.choice(weight.size, 4, replace=False)
        for i in picks:
            # By index: weights may be non-contiguous views (a recurrent layer's layout), and
            # a reshaped copy would not be the weight.
            at = np.unravel_index(i, weight.shape)
            numeric = derivative(run, weight, at, eps)
            if abs(numeric - grad[at]) > rtol * abs(grad[at]) + atol:
                # A ReLU or a pooling maximum in a large layer (hundreds of thousands of values)
                # may switch within eps of the point: central differences then average two
                # slopes. Such a kink is rarely within eps / 100 too; a wrong gradient is
                # wrong at both.
                numeric = derivative(run, weight, at, eps / 100)
                assert abs(numeric - grad[at]) <= rtol * abs(grad[at]) + 100 * atol, (
                    f"{where}{tuple(map(int, at))}: {grad[at]} analytic, {numeric} numeric"
                )

