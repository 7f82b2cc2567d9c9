"""Plan rewrites for inference only, each with the identity it relies on.

Folding BatchNormalization into the layer before it. At inference BatchNormalization is an
affine map per channel with constants (its moving statistics):
`BN(z) = (z - mean) * s + beta`, `s = gamma / sqrt(moving_variance + epsilon)`. When z is a
Dense or convolution output without activation, `z = x * kernel + bias` with the channels on the
kernel's last axis, so `BN(z) = x * (kernel * s) + ((bias - mean) * s + beta)`: one layer with a
folded kernel and bias, and no pass over its output for the normalization. The folded weights are
computed from the current ones at every call (`folded_params`), so training in between is seen.
The sums run in another order than the unfolded plan's, so float32 outputs can differ in the
last bits; in float64 they agree to rounding (tests/test_graph.py).

Training never uses these plans: there BatchNormalization normalizes with the batch's statistics.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np

from kerspec.activations import Linear
from kerspec.graph.plan import Params, Plan
from kerspec.layers.conv import BaseConv
from kerspec.layers.core import Dense
from kerspec.layers.normalization import BatchNormalization


@dataclass(frozen=True)
class Fold:
    """A layer (`producer`) and the BatchNormalization after it (`norm`), run as one layer whose
    weights are kept under `owner`, a key no layer name can take (names have no '/')."""

    producer: str
    norm: str
    owner: str
    epsilon: float


def fold_batch_norm(plan: Plan) -> tuple[Plan, list[Fold]]:
    """A copy of `plan` for inference with every foldable BatchNormalization folded into the
    layer before it, and the folds made (none: the plan itself)."""
    folds: list[Fold] = []
    steps = list(plan.steps)
    dropped: set[int] = set()
    for i, j in plan._sole_readers():
        producer, norm = steps[i], steps[j]
        if not _foldable(producer, norm):
            continue
        fold = Fold(producer.owner, norm.owner, f"{producer.owner}/{norm.owner}", norm.layer.epsilon)
        layer = producer.layer.model_copy(update={"use_bias": True})
        steps[i] = replace(producer, layer=layer, owner=fold.owner, outputs=norm.outputs)
        dropped.add(j)
        folds.append(fold)
    if not folds:
        return plan, []
    folded = copy.copy(plan)
    folded.steps = [step for k, step in enumerate(steps) if k not in dropped]
    folded.free_after = folded._last_reads()
    return folded, folds


def _foldable(producer, norm) -> bool:
    layer, bn = producer.layer, norm.layer
    if not isinstance(bn, BatchNormalization) or norm.activity is not None or norm.after is not None:
        return False
    if not isinstance(layer, Dense | BaseConv) or producer.after is not None:
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
