"""The execution plan: a graph flattened once into numbered slots and steps.

A forward pass is one loop over prepared steps that reads and writes a list of slots: no
dictionary look-ups by name, no shape checks. Training records each step's backprop closure on a
tape; inference keeps none and drops every intermediate value as soon as its last reader ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerspec.graph.compile import Graph, Ref
from kerspec.graph.lifetimes import Lifetimes, buffer_groups, no_views, views_of
from kerspec.graph.step import Params, Step
from kerspec.layers import Context, hand_over

NO_WEIGHTS: dict[str, np.ndarray] = {}
# Every rewrite in graph/fusions.py has a pooling or a BatchNormalization step. A plan with
# neither has nothing to rewrite and does not import fusions, nor through it the convolution,
# pooling and normalization layers (`validate` of an MLP builds none of them).
REWRITTEN_FAMILIES = ("kerspec.layers.pooling", "kerspec.layers.normalization")


@dataclass
class Tape:
    backprops: list
    values: list


@dataclass
class Forward:
    """What a forward pass gives: the outputs, their masks (None where an output has none), the
    tape of backprops when recording, and the activity-regularization penalty."""

    outputs: list[np.ndarray]
    masks: list[np.ndarray | None]
    tape: Tape | None
    penalty: float


class Plan:
    """The steps of `graph`, rewritten by graph/fusions.py. An `inference` plan also has its
    BatchNormalizations folded: run it with `folded_params(params, plan.folds)`, and never to
    train."""

    def __init__(self, graph: Graph, *, inference: bool = False):
        self.graph = graph
        slots: dict[Ref, int] = {}
        shapes = []
        for node in graph.nodes:
            for index, shape in enumerate(node.output_shapes):
                slots[Ref(node.name, index)] = len(slots)
                shapes.append(shape)
        self.n_slots = len(slots)
        self.input_slots = [slots[Ref(name)] for name in graph.inputs]
        self.output_slots = [slots[ref] for ref in graph.outputs]
        input_names = set(graph.inputs)
        steps: list[Step] = []
        for i, node in enumerate(graph.nodes):
            if node.name in input_names:
                continue
            steps.append(
                Step(
                    layer=node.layer,
                    owner=node.owner,
                    inputs=tuple(slots[r] for r in node.inputs),
                    outputs=tuple(slots[Ref(node.name, k)] for k in range(len(node.output_shapes))),
                    node=i,
                    need_dx=any(r.node not in input_names for r in node.inputs),
                    activity=getattr(node.layer, "activity_regularizer", None),
                    trainable=node.layer.trainable,
                    makes_masks=any(node.output_masked),
                )
            )
        self.steps, self.folds = steps, []
        if any(type(step.layer).__module__ in REWRITTEN_FAMILIES for step in steps):
            from kerspec.graph.fusions import fuse

            self.steps, self.folds = fuse(steps, self.output_slots, inference=inference)
        self.uses_masks = any(step.makes_masks for step in self.steps)
        self.free_after = self._last_reads()
        # A step's kind: steps of one kind take the same buffers, so they best share a group.
        self._kinds = [
            (type(s.layer), tuple(shapes[i] for i in s.inputs), tuple(shapes[o] for o in s.outputs))
            for s in self.steps
        ]
        self.lifetimes = self._lifetimes(no_views(self.steps))

    def _lifetimes(self, views) -> Lifetimes:
        return buffer_groups(self.steps, self.output_slots, self._kinds, views)

    def _last_reads(self) -> list[tuple[int, ...]]:
        """For inference: the slots no later step reads, to drop after each step."""
        last: dict[int, int] = {}
        for i, step in enumerate(self.steps):
            for slot in step.inputs:
                last[slot] = i
        keep = set(self.output_slots)
        free: list[list[int]] = [[] for _ in self.steps]
        for slot, i in last.items():
            if slot not in keep:
                free[i].append(slot)
        return [tuple(f) for f in free]

    def forward(
        self,
        params: Params,
        inputs: list[np.ndarray],
        ctx: Context,
        *,
        record: bool,
        penalties: bool = False,
    ) -> Forward:
        """Run every step. The activity penalty is computed when recording or when `penalties`
        asks for it, as evaluation does. Unrecorded passes on a context with `reuse_buffers`
        key its buffers by `self.lifetimes`' groups (graph/lifetimes.py)."""
        if record or not ctx.reuse_buffers:
            return self._run(params, inputs, ctx, record, penalties, None)
        try:
            while True:
                run = self._run(params, inputs, ctx, record, penalties, self.lifetimes)
                if run is not None:
                    return run
        finally:
            ctx.taken = None

    def _run(
        self, params: Params, inputs: list, ctx: Context, record: bool, penalties: bool,
        lifetimes: Lifetimes | None,
    ) -> Forward | None:  # fmt: skip
        """One pass; None when an output turned out to be a view `lifetimes` did not know of
        (`self.lifetimes` is widened then, and the pass is to start over)."""
        values: list = [None] * self.n_slots
        masks: list = [None] * self.n_slots
        for slot, x in zip(self.input_slots, inputs):
            values[slot] = x
        backprops = [] if record else None
        ctx.record = record
        penalty = 0.0
        for i, step in enumerate(self.steps):
            if lifetimes is None:
                ctx.node, ctx.taken = step.node, None
            else:
                ctx.node, ctx.taken = lifetimes.groups[i], {}
            ctx.need_dx = step.need_dx
            xs = [values[s] for s in step.inputs]
            if self.uses_masks:
                ctx.masks = [masks[s] for s in step.inputs]
            ys, backprop = step.layer.forward(params.get(step.owner, NO_WEIGHTS), xs, ctx)
            if lifetimes is not None:
                found = views_of(xs, ys)
                if not lifetimes.knows(i, found):
                    self.lifetimes = self._lifetimes(lifetimes.widen(i, found))
                    return None
            for slot, y in zip(step.outputs, ys):
                values[slot] = y
            if step.makes_masks:
                for slot, mask in zip(step.outputs, step.layer.compute_mask(xs, ctx.masks, ys)):
                    masks[slot] = mask
            if step.activity is not None and (record or penalties):
                # Keras 3 divides an activity penalty by the batch size.
                penalty += sum(step.activity.penalty(y) for y in ys) / len(ys[0])
            if record:
                backprops.append(backprop)
            else:
                for slot in self.free_after[i]:
                    values[slot] = None
        return Forward(
            outputs=[values[s] for s in self.output_slots],
            masks=[masks[s] for s in self.output_slots],
            tape=Tape(backprops, values) if record else None,
            penalty=penalty,
        )

    def backward(self, tape: Tape, d_outputs: list[np.ndarray]) -> Params:
        """Gradients of every trainable weight, summed over the places a layer is applied.

        `d_outputs` are handed over: the backprops may overwrite them. Every gradient array
        reaches exactly one backprop as its `dy` (the ownership rule in layers/base.py)."""
        grads: list = [None] * self.n_slots

        def add(slot: int, g: np.ndarray) -> None:
            # The slot owns its first gradient (handed over), so later ones sum into it.
            if grads[slot] is None:
                grads[slot] = g
            else:
                grads[slot] += g

        for slot, g in zip(self.output_slots, hand_over(list(d_outputs))):
            add(slot, g)
        weight_grads: Params = {}
        for step, backprop in zip(reversed(self.steps), reversed(tape.backprops)):
            dys = [grads[s] for s in step.outputs]
            if all(dy is None for dy in dys):
                continue
            if step.activity is not None:
                batch = len(tape.values[step.outputs[0]])
                for k, slot in enumerate(step.outputs):
                    extra = step.activity.gradient(tape.values[slot]) / batch
                    dys[k] = extra if dys[k] is None else dys[k] + extra
            dxs, dws = backprop(dys)
            if step.need_dx:
                if len(dxs) > 1:
                    dxs = hand_over(dxs)
                for slot, dx in zip(step.inputs, dxs):
                    if dx is not None:
                        add(slot, dx)
            if step.trainable and dws:
                into = weight_grads.setdefault(step.owner, {})
                for name, g in dws.items():
                    into[name] = g if name not in into else into[name] + g
        return weight_grads
