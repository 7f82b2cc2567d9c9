"""Plan rewrites: each finds a pattern among the plan's steps and swaps in fused layers.

A rewrite changes how steps compute, never what they compute: each below states the identity it
relies on, and tests/test_fusions.py checks it in float64 against the unrewritten plan. The plan
(graph/plan.py) runs `fuse` once, when it is built; layers know nothing of the rewrites. All of
them look at pairs of steps where the second is all that reads the first's output
(`sole_readers`), so no other step, model output, penalty or mask sees what changed between them.
Each has a pooling or BatchNormalization step: the plan runs `fuse` only when it has one
(`plan.REWRITTEN_FAMILIES`); a rewrite without one would add its family there.

In the order they run:

- `fold_batch_norm` (inference plans only): a BatchNormalization folded into the Dense or
  convolution before it, whose weights `folded_params` makes from the current ones. Training
  never uses it: there BatchNormalization normalizes with the batch's statistics.
- `activation_into_fold` (inference plans only): an elementwise activation after a folded
  BatchNormalization becomes the folded layer's own activation.
- `relu_after_max_pooling` (every plan): a ReLU read only by max pooling moves after the pooling.
- `split_into_windows` (every plan): a convolution read only by a pooling over non-overlapping
  windows writes its output already split into those windows.
- `activation_over_norm` (every plan): an elementwise activation whose backward needs only its
  output runs in place over the output of the BatchNormalization before it, in its step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kerspec.activations import ACTIVATIONS, Activation, Linear, Relu
from kerspec.graph.step import Params, Step, sole_readers
from kerspec.layers.base import Layer, SimpleLayer
from kerspec.layers.conv import BaseConv, convolve
from kerspec.layers.core import Activation as ActivationLayer
from kerspec.layers.core import Dense
from kerspec.layers.normalization import BatchNormalization
from kerspec.layers.pooling import (
    AveragePooling,
    BasePooling,
    GlobalMaxPooling,
    MaxPooling,
    average_pool_tiles,
    max_pool_tiles,
    split_tiles,
)


@dataclass(frozen=True)
class Fold:
    """A layer (`producer`) and the BatchNormalization after it (`norm`), run as one layer whose
    weights are kept under `owner`, a key no layer name can take (names have no '/')."""

    producer: str
    norm: str
    owner: str
    epsilon: float


def fuse(
    steps: list[Step], output_slots: list[int], *, inference: bool
) -> tuple[list[Step], list[Fold]]:
    """The steps with every rewrite made, and the BatchNormalization folds (inference only)."""
    folds: list[Fold] = []
    if inference:
        # First, so that the rewrites below see a folded layer as any Dense or convolution.
        steps, folds = fold_batch_norm(steps, output_slots)
        steps = activation_into_fold(steps, output_slots, folds)
    for rewrite in REWRITES:
        steps = rewrite(steps, output_slots)
    return steps, folds


# The fused layers are made with `model_construct`: their parts are layers and activations
# validated already, and validating them again would build their pydantic schemas, which costs
# more than the rest of the plan at start-up.


class ActivationAfter(Layer):
    """`layer`, then `activation` applied to its single output (into a buffer reused batch
    after batch), and the backprop of both."""

    layer: Layer
    activation: Activation

    def forward(self, w, xs, ctx):
        ys, backprop = self.layer.forward(w, xs, ctx)
        x, activation = ys[0], self.activation
        y = activation.forward(x, out=ctx.buffer("after", x.shape, x.dtype))

        def then_backprop(dys):
            return backprop([activation.backward(x, y, dys[0])])

        return [y], then_backprop


def relu_after_max_pooling(steps: list[Step], output_slots: list[int]) -> list[Step]:
    """A ReLU whose output only max pooling reads moves after the pooling.

    max(relu(a), relu(b)) == relu(max(a, b)), so the outputs are the same, and so are the
    gradients: the maximum of the pre-activations is also the maximum after the ReLU unless the
    ReLU made a tie (at 0, or at max_value), and there its derivative is 0 whichever value the
    pooling picked. The ReLU then runs on the pooled output (4x smaller after a 2x2 pool) and
    its backward on the pooled gradient, instead of full-size passes over the layer's output."""
    steps = list(steps)
    for i, j in sole_readers(steps, output_slots):
        step, pool = steps[i], steps[j]
        activation = getattr(step.layer, "activation", None)
        if not (isinstance(activation, Relu) and activation.negative_slope == 0.0):
            continue
        if not isinstance(pool.layer, MaxPooling | GlobalMaxPooling):
            continue
        linear = step.layer.model_copy(update={"activation": ACTIVATIONS.create("linear")})
        steps[i] = replace(step, layer=linear)
        after = ActivationAfter.model_construct(layer=pool.layer, activation=activation)
        steps[j] = replace(pool, layer=after)
    return steps


class ConvIntoWindows(SimpleLayer):
    """`conv`, writing its output split into the pooling windows `window`:
    (batch, *window, *(size // window), filters)."""

    conv: BaseConv
    window: tuple[int, ...]

    def call(self, w, x, ctx):
        return convolve(self.conv, w, x, ctx, blocks=self.window)


class PoolingFromWindows(SimpleLayer):
    """`pooling`, reading an input split into its windows (what `ConvIntoWindows` writes)."""

    pooling: BasePooling

    def call(self, w, x, ctx):
        tiles = split_tiles(x, self.pooling.rank)
        if isinstance(self.pooling, MaxPooling):
            return max_pool_tiles(self.pooling, tiles, ctx)
        return average_pool_tiles(tiles, ctx)


def split_into_windows(steps: list[Step], output_slots: list[int]) -> list[Step]:
    """A convolution whose output only a pooling over non-overlapping windows reads (max or
    average pooling, pool_size == strides, valid padding, channels_last) writes that output
    split into the windows, (batch, *window, *(size // window), channels): every window offset
    is then one contiguous block, and the pooling's passes run along whole blocks instead of one
    channel axis at a time. Positions in no window (an odd edge) are not computed at all.

    The math is unchanged; the kernel gradient sums its rows in another order, so float32
    results can differ in the last bits (float64 ones agree to 1e-12). A ReLU moved after the
    pooling (`relu_after_max_pooling`) stays after it."""
    steps = list(steps)
    for i, j in sole_readers(steps, output_slots):
        step, reader = steps[i], steps[j]
        moved = reader.layer.activation if isinstance(reader.layer, ActivationAfter) else None
        pooling = reader.layer.layer if moved is not None else reader.layer
        window = _tiling_window(pooling)
        conv = step.layer
        if window is None or not isinstance(conv, BaseConv):
            continue
        if conv.data_format == "channels_first" or len(window) != conv.rank:
            continue
        reading: Layer = PoolingFromWindows.model_construct(pooling=pooling)
        if moved is not None:
            reading = ActivationAfter.model_construct(layer=reading, activation=moved)
        steps[i] = replace(step, layer=ConvIntoWindows.model_construct(conv=conv, window=window))
        steps[j] = replace(reader, layer=reading)
    return steps


def _tiling_window(layer: Layer) -> tuple[int, ...] | None:
    """The pool size of a max or average pooling whose windows tile its input (pool_size ==
    strides, valid padding, channels_last); None for any other layer."""
    if not isinstance(layer, MaxPooling | AveragePooling):
        return None
    pool, strides, _ = layer._sizes()
    if pool != strides or layer.padding != "valid" or layer.data_format == "channels_first":
        return None
    return pool


def fold_batch_norm(steps: list[Step], output_slots: list[int]) -> tuple[list[Step], list[Fold]]:
    """Every BatchNormalization that can be folded into the Dense or convolution before it,
    folded: the steps without it, and the folds made.

    At inference BatchNormalization is an affine map per channel with constants (its moving
    statistics): `BN(z) = (z - mean) * s + beta`, `s = gamma / sqrt(moving_variance + epsilon)`.
    When z is a Dense or convolution output without activation, `z = x * kernel + bias` with the
    channels on the kernel's last axis, so `BN(z) = x * (kernel * s) + ((bias - mean) * s +
    beta)`: one layer with a folded kernel and bias, and no pass over its output for the
    normalization. The folded weights are computed from the current ones at every call
    (`folded_params`), so training in between is seen. The sums run in another order than the
    unfolded plan's, so float32 outputs can differ in the last bits; in float64 they agree to
    rounding."""
    folds: list[Fold] = []
    steps = list(steps)
    dropped: set[int] = set()
    for i, j in sole_readers(steps, output_slots):
        producer, norm = steps[i], steps[j]
        if not _foldable(producer, norm):
            continue
        owner = f"{producer.owner}/{norm.owner}"
        fold = Fold(producer.owner, norm.owner, owner, norm.layer.epsilon)
        layer = producer.layer.model_copy(update={"use_bias": True})
        steps[i] = _taking_over(producer, norm, layer, owner=fold.owner)
        dropped.add(j)
        folds.append(fold)
    return _without(steps, dropped), folds


def _taking_over(step: Step, reader: Step, layer: Layer, **changes) -> Step:
    """`step` run as `layer`, which also does what its sole `reader` did: it gives the reader's
    outputs, with the reader's activity penalty and masks, and the reader's step is dropped."""
    return replace(
        step, layer=layer, outputs=reader.outputs, activity=reader.activity,
        makes_masks=reader.makes_masks, **changes,
    )  # fmt: skip


def _without(steps: list[Step], dropped: set[int]) -> list[Step]:
    return [step for k, step in enumerate(steps) if k not in dropped]


def _foldable(producer: Step, norm: Step) -> bool:
    layer, bn = producer.layer, norm.layer
    if not isinstance(bn, BatchNormalization) or norm.activity is not None:
        return False
    if not isinstance(layer, Dense | BaseConv):
        return False
    # Channels last, where the kernel's last axis is, and BatchNormalization along them.
    return (
        isinstance(layer.activation, Linear)
        and getattr(layer, "data_format", None) != "channels_first"
        and bn.axis == -1
    )


def folded_params(params: Params, folds: list[Fold]) -> Params:
    """`params` plus the folded kernel and bias of every fold, from the current weights."""
    if not folds:
        return params
    out = dict(params)
    for fold in folds:
        w, bn = params[fold.producer], params[fold.norm]
        kernel = w["kernel"]
        scale = 1.0 / np.sqrt(bn["moving_variance"] + kernel.dtype.type(fold.epsilon))
        if "gamma" in bn:
            scale = scale * bn["gamma"]
        bias = (w["bias"] - bn["moving_mean"]) if "bias" in w else -bn["moving_mean"]
        bias = bias * scale
        if "beta" in bn:
            bias = bias + bn["beta"]
        out[fold.owner] = {"kernel": kernel * scale, "bias": bias}
    return out


def _elementwise_activation(step: Step) -> Activation | None:
    """The activation of an `Activation` layer applied elementwise, but not linear (which
    returns its input and costs no pass); None for any other step."""
    layer = step.layer
    if not isinstance(layer, ActivationLayer):
        return None
    activation = layer.activation
    if not activation.elementwise or isinstance(activation, Linear):
        return None
    return activation


def activation_into_fold(steps: list[Step], output_slots: list[int], folds: list[Fold]) -> list[Step]:
    """An elementwise activation read only after a folded BatchNormalization, made the folded
    layer's own activation, whose output it reads alone.

    A fold's layer has a linear activation (`_foldable`), and `activation(layer(x))` is the same
    layer with that activation, for any elementwise activation. The Dense or convolution then
    applies it as it applies its own (in place over its output when the activation's backward
    needs only its output), and the step of the activation is gone."""
    owners = {fold.owner for fold in folds}
    steps = list(steps)
    dropped: set[int] = set()
    for i, j in sole_readers(steps, output_slots):
        folded, after = steps[i], steps[j]
        activation = _elementwise_activation(after)
        if folded.owner not in owners or activation is None:
            continue
        layer = folded.layer.model_copy(update={"activation": activation})
        steps[i] = _taking_over(folded, after, layer)
        dropped.add(j)
    return _without(steps, dropped)


class NormThenActivation(SimpleLayer):
    """`norm`, then `activation` in place over its output; the backprop of both."""

    norm: BatchNormalization
    activation: Activation

    def call(self, w, x, ctx):
        y, backprop = self.norm.call(w, x, ctx)
        activation = self.activation
        activation.forward(y, out=y)

        def then_backprop(dy):
            # The activation's backward overwrites dy, which the step owns (layers/base.py).
            return backprop(activation.backward(None, y, dy))

        return y, then_backprop


def activation_over_norm(steps: list[Step], output_slots: list[int]) -> list[Step]:
    """A BatchNormalization whose output only an elementwise `Activation` reads, run with that
    activation as one step when the activation's backward needs only its output (relu, tanh,
    sigmoid; not elu, gelu, swish).

    BatchNormalization writes y into a buffer of its own and its backprop reads its input and
    dy, never y; the activation's backward reads only its output and dy. So the activation can
    overwrite y with its output, and its backward dy with the gradient of y, which
    BatchNormalization's backprop then reads: the same operations in the same order as the two
    steps, with no second array the size of the output and no second pass to fault it in."""
    steps = list(steps)
    dropped: set[int] = set()
    for i, j in sole_readers(steps, output_slots):
        norm, after = steps[i], steps[j]
        activation = _elementwise_activation(after)
        if not isinstance(norm.layer, BatchNormalization) or activation is None:
            continue
        if activation.uses_input:
            continue
        layer = NormThenActivation.model_construct(norm=norm.layer, activation=activation)
        steps[i] = _taking_over(norm, after, layer)
        dropped.add(j)
    return _without(steps, dropped)


# In this order: a ReLU moved after max pooling runs on the pooled output, smaller than the
# normalization's, which it then no longer follows.
REWRITES = (relu_after_max_pooling, split_into_windows, activation_over_norm)
