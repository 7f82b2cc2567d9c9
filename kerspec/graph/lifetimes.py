"""Buffer groups for unrecorded passes: steps whose values are dead hand their buffers on.

`ctx.buffer` keys a layer's arrays by `ctx.node`. Keyed by the step, every step keeps its own for
the whole pass (a convolution's output at 1,024 samples is over 100 MB) although inference drops
each value after its last reader (`Plan.free_after`). An unrecorded pass on a context that asks
for it (`Context.reuse_buffers`) keys them by a buffer group instead: a step may take group g only
when every value lying in g's buffers is dead before the step runs (its last reader ran before
it), so none of the step's inputs lies there either. The model's outputs live to the end. Two
steps of a group thus never need their buffers at once: the k-th buffer a step takes is the
group's k-th array, whatever the layer names it (`Context.taken`), so that a convolution's
output and an Add's that later take the same group are one array, not two.

A value lies in its producer's buffers, and also wherever the input it is a view of lies (Flatten,
Reshape, Dropout at inference, a Lambda returning its input...). Which outputs are views is
learnt while running, with no list of layers to keep up to date: after each step the plan checks
its outputs against its inputs (`views_of`), and a view not known yet widens the plan's
`Lifetimes` and starts the pass over, before any later step can have written over what the view
shows. Each widening adds a view, so a plan starts over at most a few times in its life.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from kerspec.graph.step import Step

# Per step, per output: the positions of the step's inputs the output may be a view of.
Views = tuple[tuple[frozenset[int], ...], ...]


@dataclass(frozen=True)
class Lifetimes:
    views: Views
    # Per step, the `ctx.node` its buffers are kept under: never a node index, so a context
    # that also runs recorded passes keeps those apart.
    groups: tuple[tuple[str, int], ...]

    def knows(self, i: int, found: tuple[frozenset[int], ...]) -> bool:
        return all(f <= known for f, known in zip(found, self.views[i]))

    def widen(self, i: int, found: tuple[frozenset[int], ...]) -> Views:
        """The views, with step i's widened by `found`."""
        merged = tuple(f | known for f, known in zip(found, self.views[i]))
        return self.views[:i] + (merged,) + self.views[i + 1 :]


def no_views(steps: Sequence[Step]) -> Views:
    return tuple(tuple(frozenset() for _ in step.outputs) for step in steps)


def views_of(xs: list, ys: list) -> tuple[frozenset[int], ...]:
    """For each output, the inputs it may share memory with. By memory bounds, so a view is
    never missed (an unrelated array is never within another's bounds)."""
    return tuple(frozenset(k for k, x in enumerate(xs) if np.may_share_memory(y, x)) for y in ys)


def buffer_groups(
    steps: Sequence[Step], output_slots: Sequence[int], kinds: Sequence[Hashable], views: Views
) -> Lifetimes:
    """The group of every step, greedily in step order: a free group that a step of the same
    kind (layer type and shapes, so the same buffer keys) used before, else any free group,
    else a new one."""
    end = _ends(steps, output_slots, views)
    free_after: list[int] = []
    kinds_in: list[set] = []
    groups = []
    for j, kind in enumerate(kinds):
        free = [g for g, last in enumerate(free_after) if last < j]
        same = [g for g in free if kind in kinds_in[g]]
        if same or free:
            g = (same or free)[0]
        else:
            g = len(free_after)
            free_after.append(-1)
            kinds_in.append(set())
        free_after[g] = end[j]
        kinds_in[g].add(kind)
        groups.append(("group", g))
    return Lifetimes(views, tuple(groups))


def _ends(steps: Sequence[Step], output_slots: Sequence[int], views: Views) -> list[int]:
    """For each step, the last step that reads a value lying in its buffers (itself when none
    does; len(steps) when one is a model output)."""
    last_read: dict[int, int] = {}
    for j, step in enumerate(steps):
        for slot in step.inputs:
            last_read[slot] = j
    for slot in output_slots:
        last_read[slot] = len(steps)
    end = list(range(len(steps)))
    lies_in: dict[int, set[int]] = {}
    for j, step in enumerate(steps):
        for slot, positions in zip(step.outputs, views[j]):
            owners = {j}.union(*(lies_in.get(step.inputs[k], ()) for k in positions))
            lies_in[slot] = owners
            for p in owners:
                end[p] = max(end[p], last_read.get(slot, j))
    return end
