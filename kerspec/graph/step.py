"""One step of the execution plan: a layer applied at one node, reading and writing numbered slots.

The plan (graph/plan.py) runs the steps; the rewrites (graph/fusions.py) swap some of them for
fused ones. Both look at the steps through what this module holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerspec.layers import Layer
from kerspec.regularizers import Regularizer

Params = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Step:
    layer: Layer
    owner: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    node: int
    # False when every input is a model input: no gradient is wanted for it.
    need_dx: bool
    activity: Regularizer | None
    trainable: bool
    # True when some output carries a mask: the step computes its output masks.
    makes_masks: bool


def sole_readers(steps: list[Step], output_slots: list[int]) -> list[tuple[int, int]]:
    """(i, j) where step j, of one input, is all that reads step i's one output, and nothing
    else sees that output: not the model's outputs, an activity penalty, masks."""
    readers: dict[int, list[int]] = {}
    for i, step in enumerate(steps):
        for slot in step.inputs:
            readers.setdefault(slot, []).append(i)
    pairs = []
    for i, step in enumerate(steps):
        reader = readers.get(step.outputs[0], [])
        if (
            len(step.outputs) == 1
            and len(reader) == 1
            and len(steps[reader[0]].inputs) == 1
            and step.outputs[0] not in output_slots
            and step.activity is None
            and not step.makes_masks
        ):
            pairs.append((i, reader[0]))
    return pairs
