"""The execution plan: a graph flattened once into numbered slots and steps.

A forward pass is one loop over prepared steps that reads and writes a list of slots: no
dictionary look-ups by name, no shape checks. Training records each step's backprop closure on a
tape; inference keeps none and drops every intermediate value as soon as its last reader ran.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kerspec.activations import ACTIVATIONS, Activation, Relu
from kerspec.graph.compile import Graph, Ref
from kerspec.layers import Context, Layer, hand_over
from kerspec.regularizers import Regularizer

Params = dict[str, dict[str, np.ndarray]]
NO_WEIGHTS: dict[str, np.ndarray] = {}


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
    # An activation moved here from the step before (see `_relu_after_max`): applied to this
    # step's output, and differentiated before this step's backward.
    after: Activation | None = None


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
    def __init__(self, graph: Graph):
        self.graph = graph
        slots: dict[Ref, int] = {}
        for node in graph.nodes:
            for index in range(len(node.output_shapes)):
                slots[Ref(node.name, index)] = len(slots)
        self.n_slots = len(slots)
        self.input_slots = [slots[Ref(name)] for name in graph.inputs]
        self.output_slots = [slots[ref] for ref in graph.outputs]
        input_names = set(graph.inputs)
        self.steps: list[Step] = []
        for i, node in enumerate(graph.nodes):
            if node.name in input_names:
                continue
            self.steps.append(
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
        self._relu_after_max()
        self._split_into_windows()
        self.uses_masks = any(step.makes_masks for step in self.steps)
        self.free_after = self._last_reads()

    def _relu_after_max(self) -> None:
        """A ReLU whose output only max pooling reads moves after the pooling.

        max(relu(a), relu(b)) == relu(max(a, b)), so the outputs are the same, and so are the
        gradients: the maximum of the pre-activations is also the maximum after the ReLU unless
        the ReLU made a tie (at 0, or at max_value), and there its derivative is 0 whichever
        value the pooling picked. The ReLU then runs on the pooled output (4x smaller after a
        2x2 pool) and its backward on the pooled gradient, instead of full-size passes over the
        layer's output (W2: ~2.5 ms of a 37 ms training step)."""
        for i, j in self._sole_readers():
            step, pool = self.steps[i], self.steps[j]
            activation = getattr(step.layer, "activation", None)
            if not (isinstance(activation, Relu) and activation.negative_slope == 0.0):
                continue
            if not pool.layer.takes_maxima or pool.after is not None:
                continue
            linear = step.layer.model_copy(update={"activation": ACTIVATIONS.create("linear")})
            self.steps[i] = replace(step, layer=linear)
            self.steps[j] = replace(pool, after=activation)

    def _split_into_windows(self) -> None:
        """A layer whose output only a pooling over non-overlapping windows reads (a
        convolution before max or average pooling) writes that output split into the windows,
        (batch, *window, *(size // window), channels): every window offset is then one
        contiguous block, and the pooling's passes run along whole blocks instead of one channel
        axis at a time (W2's first pool: 5.5 -> 2.5-3.5 ms forward and backward). Positions in
        no window (an odd edge) are not computed at all. The math is unchanged; the kernel
        gradient sums its rows in another order, so float32 results can differ in the last
        bits (float64 ones agree to 1e-12, tests/test_graph.py)."""
        for i, j in self._sole_readers():
            step, pool = self.steps[i], self.steps[j]
            window = pool.layer.window_blocks()
            writer = step.layer.writing_blocks(window) if window is not None else None
            if writer is not None:
                self.steps[i] = replace(step, layer=writer)
                self.steps[j] = replace(pool, layer=pool.layer.reading_blocks())

    def _sole_readers(self) -> list[tuple[int, int]]:
        """(i, j) where step j, of one input, is all that reads step i's one output, and
        nothing else sees that output: not the model's outputs, an activity penalty, masks."""
        readers: dict[int, list[int]] = {}
        for i, step in enumerate(self.steps):
            for slot in step.inputs:
                readers.setdefault(slot, []).append(i)
        pairs = []
        for i, step in enumerate(self.steps):
            reader = readers.get(step.outputs[0], [])
            if (
                len(step.outputs) == 1
                and len(reader) == 1
                and len(self.steps[reader[0]].inputs) == 1
                and step.outputs[0] not in self.output_slots
                and step.activity is None
                and not step.makes_masks
            ):
                pairs.append((i, reader[0]))
        return pairs

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
        asks for it, as evaluation does."""
        values: list = [None] * self.n_slots
        masks: list = [None] * self.n_slots
        for slot, x in zip(self.input_slots, inputs):
            values[slot] = x
        backprops = [] if record else None
        ctx.record = record
        penalty = 0.0
        for i, step in enumerate(self.steps):
            ctx.node = step.node
            ctx.need_dx = step.need_dx
            xs = [values[s] for s in step.inputs]
            if self.uses_masks:
                ctx.masks = [masks[s] for s in step.inputs]
            ys, backprop = step.layer.forward(params.get(step.owner, NO_WEIGHTS), xs, ctx)
            if step.after is not None:
                ys, backprop = _then(step.after, ys[0], backprop, ctx)
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


def _then(activation: Activation, x: np.ndarray, backprop, ctx: Context):
    """A layer's single output x through `activation` (into a buffer reused batch after batch),
    and the backprop of both."""
    y = activation.forward(x, out=ctx.buffer("after", x.shape, x.dtype))

    def then_backprop(dys):
        return backprop([activation.backward(x, y, dys[0])])

    return [y], then_backprop
