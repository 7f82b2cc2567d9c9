"""One training or test step: forward, losses, backward, optimizer, constraints, metrics.

The Trainer is built once from the compile section, with every output's loss, weight and metrics
resolved and every trainable weight listed in the order the optimizer's state follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kerspec.errors import RunError
from kerspec.graph import Graph, Params, Plan
from kerspec.layers import Context
from kerspec.training.losses import Loss
from kerspec.training.metrics import Metric, resolve_metric
from kerspec.training.optimizers import Optimizer


def _mask_weights(mask: np.ndarray | None) -> np.ndarray | None:
    """A mask as loss weights. Keras averages a masked loss over the unmasked steps only, so the
    weights are scaled by all/unmasked to undo the sum_over_batch_size division by all steps."""
    if mask is None:
        return None
    kept = int(mask.sum())
    return mask * np.float32(mask.size / kept) if kept else mask.astype(np.float32)


def _loss_weights(masks, sample_weights) -> list[np.ndarray | None]:
    """Per-output loss weights: the mask's (as above) times the sample weights, as Keras's
    `apply_mask` multiplies them."""
    weights = [_mask_weights(m) for m in masks]
    if sample_weights is None:
        return weights
    for i, sw in enumerate(sample_weights):
        if sw is None:
            continue
        mask = weights[i]
        if mask is None:
            weights[i] = sw
        else:
            weights[i] = mask * sw.reshape(sw.shape + (1,) * (mask.ndim - sw.ndim))
    return weights


class NonFiniteLoss(RunError):
    """A batch's loss was NaN or infinite; the step was not applied."""

    def __init__(self, value: float):
        super().__init__(f"the loss became {value} (non-finite)")
        self.value = value
        self.batch = 0
        self.what = f"batch {{batch}}: the loss became {value}"


class NonFiniteWeights(NonFiniteLoss):
    """A weight became NaN or infinite while the loss stayed finite (a ReLU can hide an infinite
    kernel); found at the end of the epoch, before it is checkpointed."""

    def __init__(self, key: str):
        super().__init__(float("nan"))
        self.what = f"the weight {key} became non-finite"


# NumPy's overflow and invalid-value warnings would clutter the terminal; the loss is checked.
_QUIET = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}


@dataclass
class Head:
    """One model output with its loss, loss weight and metrics."""

    name: str
    loss: Loss
    weight: float
    metrics: list[Metric]
    resolved: list[Metric] | None = None


@dataclass
class Tracker:
    """Running epoch means (weighted by batch size, as Keras's loss tracker) and metric states."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    states: dict[tuple[int, int], object] = field(default_factory=dict)


class Trainer:
    def __init__(
        self,
        graph: Graph,
        plan: Plan,
        params: Params,
        heads: list[Head],
        optimizer: Optimizer,
    ):
        self.graph, self.plan, self.params, self.heads = graph, plan, params, heads
        self.optimizer = optimizer
        trainable = {n.owner for n in graph.nodes if n.layer.trainable}
        self.trainable = [
            (owner, spec.name)
            for owner, specs in graph.weights.items()
            if owner in trainable
            for spec in specs
            if spec.trainable
        ]
        self.weights = [params[o][n] for o, n in self.trainable]
        self.opt_state = optimizer.init(self.weights)
        by_key = {(o, s.name): s for o, specs in graph.weights.items() for s in specs}
        self.regularized = [
            (i, params[o][n], by_key[o, n].regularizer)
            for i, (o, n) in enumerate(self.trainable)
            if by_key[o, n].regularizer is not None
        ]
        self.constrained = [
            (params[o][n], by_key[o, n].constraint)
            for o, n in self.trainable
            if by_key[o, n].constraint is not None
        ]
        self.tracker = Tracker()

    # -- steps --------------------------------------------------------------------------------

    def train_step(self, xs: list[np.ndarray], ys: list[np.ndarray], ctx: Context, sample_weights=None) -> None:
        """One optimizer step; `sample_weights` is None or one array (or None) per output."""
        with np.errstate(**_QUIET):
            self._train_step(xs, ys, ctx, sample_weights)

    def _train_step(self, xs, ys, ctx, sample_weights) -> None:
        total, grad_list, losses, run = self.gradients(xs, ys, ctx, sample_weights)
        if not np.isfinite(total):
            raise NonFiniteLoss(total)
        self.optimizer.apply(self.opt_state, self.weights, grad_list)
        for weight, constraint in self.constrained:
            weight[...] = constraint(weight)
        self._track(total, losses, ys, run.outputs, run.masks)

    def gradients(self, xs, ys, ctx: Context, sample_weights=None):
        """`(loss, gradients, per-output losses, forward run)` of one batch, as a training step
        computes them: the gradients follow `self.trainable`, regularization included. None
        are computed when the loss is not finite."""
        run = self.plan.forward(self.params, xs, ctx, record=True)
        weights = _loss_weights(run.masks, sample_weights)
        total, d_outputs, losses = self._losses(ys, run.outputs, weights, run.penalty, with_grads=True)
        if not np.isfinite(total):
            return total, [], losses, run
        grads = self.plan.backward(run.tape, d_outputs)
        grad_list = []
        for owner, name in self.trainable:
            g = grads.get(owner, {}).get(name)
            grad_list.append(np.zeros_like(self.params[owner][name]) if g is None else g)
        for index, weight, regularizer in self.regularized:
            grad_list[index] = grad_list[index] + regularizer.gradient(weight)
        return total, grad_list, losses, run

    def test_step(self, xs: list[np.ndarray], ys: list[np.ndarray], ctx: Context, sample_weights=None) -> None:
        with np.errstate(**_QUIET):
            run = self.plan.forward(self.params, xs, ctx, record=False, penalties=True)
            weights = _loss_weights(run.masks, sample_weights)
            total, _, losses = self._losses(ys, run.outputs, weights, run.penalty, with_grads=False)
            self._track(total, losses, ys, run.outputs, run.masks)

    def _losses(self, ys, outputs, sample_weights, penalty: float, with_grads: bool):
        total = penalty + sum(reg.penalty(w) for _, w, reg in self.regularized)
        d_outputs, losses = [], []
        for head, y_true, y_pred, weight in zip(self.heads, ys, outputs, sample_weights):
            value, grad = head.loss(y_true, y_pred, weight)
            losses.append(value)
            total += head.weight * value
            if with_grads:
                if head.weight != 1.0:
                    grad *= grad.dtype.type(head.weight)
                d_outputs.append(grad)
        return float(total), d_outputs, losses

    # -- running results -----------------------------------------------------------------------

    def reset(self) -> None:
        self.tracker = Tracker()

    def _track(self, total: float, losses: list[float], ys, outputs, masks) -> None:
        tracker, n = self.tracker, len(outputs[0])
        tracker.count += n
        sums = tracker.sums
        sums["loss"] = sums.get("loss", 0.0) + total * n
        if len(self.heads) > 1:
            for head, value in zip(self.heads, losses):
                key = f"{head.name}_loss"
                sums[key] = sums.get(key, 0.0) + value * n
        for h, (head, y_true, y_pred, mask) in enumerate(zip(self.heads, ys, outputs, masks)):
            if head.resolved is None:
                head.resolved = [resolve_metric(m, y_true, y_pred) for m in head.metrics]
            weight = None if mask is None else mask.astype(y_pred.dtype)
            for m, metric in enumerate(head.resolved):
                state = tracker.states.get((h, m))
                if state is None:
                    state = metric.initial()
                tracker.states[h, m] = metric.update(state, y_true, y_pred, weight)

    def results(self) -> dict[str, float]:
        """The epoch so far, under Keras's history names."""
        tracker = self.tracker
        logs = {k: v / max(tracker.count, 1) for k, v in tracker.sums.items()}
        prefix_heads = len(self.heads) > 1
        for h, head in enumerate(self.heads):
            for m, metric in enumerate(head.resolved or []):
                if (h, m) in tracker.states:
                    key = f"{head.name}_{metric.name}" if prefix_heads else metric.name
                    logs[key] = float(metric.result(tracker.states[h, m]))
        return logs
