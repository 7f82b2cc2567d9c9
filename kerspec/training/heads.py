"""The spec's compile section per model output: its loss, loss weight and metrics (a `Head`),
the problems that keep training from using the section, and the names training logs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING

from kerspec.errors import KerspecError, Where
from kerspec.training.losses import Loss
from kerspec.training.metrics import LossMetric
from kerspec.training.trainer import Head

if TYPE_CHECKING:
    from kerspec.spec.schema import Compile

Locate = Callable[..., Where]


def compile_problems(compile_: Compile | None, names: list[str], where: Locate) -> list[KerspecError]:
    """Why training cannot use the compile section: no loss, or loss, loss_weights and metrics
    that do not fit the model's outputs `names`."""
    if compile_ is None or compile_.loss is None:
        return [KerspecError("training and evaluating need compile.loss in the spec", where(("compile",)))]
    problems = []
    for field in ("loss", "loss_weights", "metrics"):
        value = getattr(compile_, field)
        if isinstance(value, dict):
            for key in value:
                if key not in names:
                    close = difflib.get_close_matches(key, names, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    problems.append(KerspecError(
                        f"compile.{field}: {key!r} is not an output (outputs: {', '.join(names)}){hint}",
                        where(("compile", field, key), at_key=True)))
    if isinstance(compile_.loss, dict):
        for name in names:
            if name not in compile_.loss:
                problems.append(KerspecError(f"compile.loss: no loss for output {name!r}",
                                             where(("compile", "loss"))))
    weights = compile_.loss_weights
    if isinstance(weights, list) and len(weights) != len(names):
        problems.append(KerspecError(
            f"compile.loss_weights has {len(weights)} entries for {len(names)} outputs",
            where(("compile", "loss_weights"))))
    return problems


def output_losses(compile_: Compile | None, names: list[str]) -> dict[str, Loss | None]:
    """Each output's loss (None where the section gives it none)."""
    loss = compile_.loss if compile_ is not None else None
    if isinstance(loss, dict):
        return {name: loss.get(name) for name in names}
    return dict.fromkeys(names, loss)


def build_heads(compile_: Compile, names: list[str]) -> list[Head]:
    """One Head per output, from a compile section `compile_problems` found nothing wrong with."""
    losses = output_losses(compile_, names)
    weights = compile_.loss_weights
    heads = []
    for i, name in enumerate(names):
        if isinstance(weights, dict):
            weight = weights.get(name, 1.0)
        elif isinstance(weights, list):
            weight = weights[i]
        else:
            weight = 1.0
        metrics = compile_.metrics
        metrics = metrics.get(name, []) if isinstance(metrics, dict) else metrics
        heads.append(Head(name, losses[name], float(weight), list(metrics)))
    return heads


def logged_names(heads: list[Head], *, validation: bool, learning_rate: bool) -> dict[str, str]:
    """Every name training will log, with whether it should go down (`min`) or up (`max`):
    `loss`, `<output>_loss` for several outputs, the metrics, their `val_` forms, and
    `learning_rate` when a callback sets it."""
    names = {"loss": "min"}
    if len(heads) > 1:
        names.update({f"{head.name}_loss": "min" for head in heads})
    for head in heads:
        for metric in head.metrics:
            key = f"{head.name}_{metric.name}" if len(heads) > 1 else metric.name
            names[key] = "min" if isinstance(metric, LossMetric) else "max"
    if validation:
        names.update({f"val_{k}": v for k, v in list(names.items())})
    if learning_rate:
        names["learning_rate"] = "min"
    return names
