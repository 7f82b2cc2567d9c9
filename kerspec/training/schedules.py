"""Learning-rate schedules, by Keras name: `schedule(step) -> learning rate`.

A schedule is usable as an optimizer's `learning_rate` (evaluated at the optimizer's iteration
count before each step, as Keras does) and in the LearningRateScheduler callback (evaluated at the
0-based epoch). Values are computed in float32, as Keras computes them from a float32 initial rate.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from kerspec.registry import Item, Registry

SCHEDULES = Registry("learning-rate schedule")

NonNegativeFloat = Annotated[float, Field(ge=0.0)]
F = np.float32


class Schedule(Item):
    def __call__(self, step: float) -> np.float32:
        raise NotImplementedError


@SCHEDULES.register("exponential_decay", "ExponentialDecay")
class ExponentialDecay(Schedule):
    """`initial_learning_rate * decay_rate ** (step / decay_steps)`, the exponent floored when
    `staircase`."""

    type: Literal["exponential_decay"] = "exponential_decay"
    initial_learning_rate: NonNegativeFloat
    decay_steps: Annotated[float, Field(gt=0.0)]
    # Keras accepts a negative rate and returns NaN (or a rate of alternating sign) from step 1.
    decay_rate: NonNegativeFloat
    staircase: bool = False

    def __call__(self, step):
        p = F(step) / F(self.decay_steps)
        if self.staircase:
            p = np.floor(p)
        return F(self.initial_learning_rate) * np.power(F(self.decay_rate), p)


@SCHEDULES.register("cosine_decay", "CosineDecay")
class CosineDecay(Schedule):
    """Optional linear warmup from `initial_learning_rate` to `warmup_target` over
    `warmup_steps`, then `lr * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)`
    with `s` capped at `decay_steps` and `lr` the warmup target (else the initial rate)."""

    type: Literal["cosine_decay"] = "cosine_decay"
    initial_learning_rate: NonNegativeFloat
    decay_steps: Annotated[int, Field(gt=0)]
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    warmup_target: NonNegativeFloat | None = None
    warmup_steps: Annotated[int, Field(ge=0)] = 0

    def _decay(self, step, decay_from):
        fraction = step / F(self.decay_steps)
        cosine = F(0.5) * (F(1.0) + np.cos(F(math.pi) * fraction))
        return decay_from * ((F(1) - F(self.alpha)) * cosine + F(self.alpha))

    def __call__(self, step):
        initial, decay_steps = F(self.initial_learning_rate), F(self.decay_steps)
        step = F(step)
        if self.warmup_target is None:
            return self._decay(min(step, decay_steps), initial)
        target, warmup = F(self.warmup_target), F(self.warmup_steps)
        step = min(step, decay_steps + warmup)
        if step < warmup:
            return (target - initial) * (step / warmup) + initial
        return self._decay(step - warmup, target)


@SCHEDULES.register("piecewise_constant", "PiecewiseConstantDecay", "piecewise_constant_decay")
class PiecewiseConstant(Schedule):
    """`values[0]` while `step <= boundaries[0]`, `values[i]` while
    `boundaries[i-1] < step <= boundaries[i]`, `values[-1]` after the last boundary."""

    type: Literal["piecewise_constant"] = "piecewise_constant"
    boundaries: list[float] = Field(min_length=1)
    values: list[NonNegativeFloat] = Field(min_length=2)

    @model_validator(mode="after")
    def _lengths(self):
        if len(self.boundaries) != len(self.values) - 1:
            raise ValueError(
                "The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={self.boundaries} of length {len(self.boundaries)}, "
                f"and values={self.values} of length {len(self.values)}."
            )
        if any(b >= a for a, b in zip(self.boundaries[1:], self.boundaries)):
            raise ValueError(f"boundaries must increase. Received: boundaries={self.boundaries}")
        return self

    def __call__(self, step):
        index = int(np.searchsorted(np.asarray(self.boundaries), step, side="left"))
        return F(self.values[index])
