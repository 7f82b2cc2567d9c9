"""What every layer is: a validated Keras configuration that also knows its shapes and math.

A layer never holds weights or per-batch state. Weights are passed in (so a shared layer is the
same object applied at several places) and `forward` returns the outputs with a `backprop`
closure that holds what the backward pass needs, as in Thinc and micrograd. Gradients are
returned, never accumulated here: the plan sums them, which makes fan-out and sharing correct.

Who owns a gradient array. A backprop owns the arrays in the `dys` it is handed: it may
overwrite them (activations' backward does, to save a pass) and may return them, or views of
them, as its input gradients. It owns none of the forward values (its inputs, its outputs, the
tape's), which other steps still read, and never writes into them. What it returns it hands
over, and the plan gives each handed-over array to exactly one consumer: when one backprop
returns the same memory for several inputs (Add gives its dy to every input, a Lambda `x0 + x1`
too), `hand_over` copies it for every input after the first, so no array is ever the `dy` of two
backprops. The loss gradients given to `Plan.backward` are handed over the same way. A layer
that runs other layers' backprops (Bidirectional) is a small plan for them, under the same rule
and with the same `hand_over`. Only arrays that really share memory are copied: one-input steps
are never checked, and a Concatenate's disjoint slices of one dy are not shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from pydantic import ConfigDict, Field, PositiveInt

from kerspec.constraints import Constraint
from kerspec.errors import ShapeError, format_shape
from kerspec.initializers import Initializer
from kerspec.paths import Name
from kerspec.registry import Item, Registry
from kerspec.regularizers import Regularizer

LAYERS = Registry("layer")

Shape = tuple[int | None, ...]
Arrays = list[np.ndarray]
# backprop(d_outputs) -> (d_inputs, d_weights); an unused output's gradient comes in as None.
Backprop = Callable[[list[np.ndarray | None]], tuple[list[np.ndarray | None], dict[str, np.ndarray]]]


@dataclass(frozen=True)
class WeightSpec:
    name: str
    shape: tuple[int, ...]
    initializer: Initializer
    regularizer: Regularizer | None = None
    constraint: Constraint | None = None
    trainable: bool = True


@dataclass
class Context:
    """What a forward pass needs besides weights and inputs."""

    training: bool
    rng: np.random.Generator
    # Preallocated arrays per (node, name, shape, dtype), reused batch after batch (`out=`).
    buffers: dict = field(default_factory=dict)
    # The running step's node index, or in an unrecorded pass with `reuse_buffers` its buffer
    # group (graph/lifetimes.py): what `buffer` keys arrays by.
    node: Hashable = 0
    # False when no gradient is wanted for the inputs (they are model inputs): skip computing it.
    need_dx: bool = True
    # The masks of the current step's inputs (None where an input has none), for masking layers.
    masks: list = field(default_factory=list)
    # False when no backward pass will follow (inference): layers may keep less for it.
    record: bool = True
    # True for a context that serves only predict and evaluate: an unrecorded pass then keys
    # `buffers` by lifetime rather than by node, so steps whose values are dead share arrays
    # (graph/lifetimes.py). Off for training's context, whose validation passes reuse the
    # training steps' buffers.
    reuse_buffers: bool = False
    # In a pass by buffer group: the buffers the running step has taken, by key. Its next one
    # is the group's array numbered len(taken), whatever its name, shape and dtype: steps of one
    # group never hold values at the same time, so they may all write into the same bytes.
    # None in any other pass.
    taken: dict | None = None

    # Generators of layers that carry their own `seed`, kept across batches.
    seeded: dict = field(default_factory=dict)

    def seeded_rng(self, owner: object, seed: int) -> np.random.Generator:
        rng = self.seeded.get(id(owner))
        if rng is None:
            rng = self.seeded[id(owner)] = np.random.default_rng(seed)
        return rng

    def buffer(self, name: str, shape: tuple[int, ...], dtype, *, shared: bool = False) -> np.ndarray:
        """An array kept for this node's (or buffer group's) `name`; `shared`: one array for
        every node's `name`, for scratch that is dead once the layer's forward returns (and no
        backward follows)."""
        key = (None if shared else self.node, name, shape, dtype)
        if self.taken is not None and not shared:
            array = self.taken.get(key)
            if array is None:
                array = self.taken[key] = self._pooled(len(self.taken), shape, np.dtype(dtype))
            return array
        array = self.buffers.get(key)
        if array is None:
            array = self.buffers[key] = np.empty(shape, dtype)
        return array

    def _pooled(self, number: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The group's array `number` as `shape` and `dtype`, grown when too small."""
        key = (self.node, number)
        size = math.prod(shape) * dtype.itemsize
        flat = self.buffers.get(key)
        if flat is None or flat.nbytes < size:
            flat = self.buffers[key] = np.empty(size, np.uint8)
        return flat[:size].view(dtype).reshape(shape)


class Layer(Item):
    """Arguments every Keras layer takes, and the interface the graph runs."""

    model_config = ConfigDict(populate_by_name=True)

    # Names key weights as LAYER/WEIGHT (members of a zip file) and name CSV columns.
    name: Name | None = None
    from_: str | list[str] | None = Field(None, alias="from")
    trainable: bool = True
    input_shape: list[PositiveInt | None] | None = Field(
        None, description="Sequential shorthand: only on the first layer, instead of an Input."
    )

    # How many inputs the layer takes: a number, or None for "two or more" (merge layers).
    arity: ClassVar[int | None] = 1
    # Keras's supports_masking: the layer accepts a mask (a sequence's padded steps) and, unless
    # it overrides the two mask methods below, passes it on unchanged.
    supports_masking: ClassVar[bool] = False

    def output_masked(self, masked: list[bool], n_outputs: int) -> list[bool]:
        """Which outputs carry a mask, given which inputs do; known when the graph compiles."""
        return [self.supports_masking and any(masked)] * n_outputs

    def compute_mask(self, xs: Arrays, masks: list, ys: Arrays) -> list:
        """The output masks of one batch: by default the inputs' masks combined, passed on."""
        present = [m for m in masks if m is not None]
        mask = None
        if present:
            mask = present[0]
            for other in present[1:]:
                mask = mask & other
        return [mask] * len(ys)

    def output_shapes(self, shapes: list[Shape]) -> list[Shape]:
        raise NotImplementedError

    def weights(self, shapes: list[Shape]) -> list[WeightSpec]:
        return []

    def forward(self, w: dict[str, np.ndarray], xs: Arrays, ctx: Context) -> tuple[Arrays, Backprop]:
        raise NotImplementedError


class SimpleLayer(Layer):
    """A layer with one input and one output: implement `output_shape` and `call`."""

    def output_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError

    def call(self, w: dict[str, np.ndarray], x: np.ndarray, ctx: Context):
        """Return `(y, backprop)` with `backprop(dy) -> (dx, {weight name: gradient})`."""
        raise NotImplementedError

    def output_shapes(self, shapes):
        return [self.output_shape(shapes[0])]

    def weights(self, shapes):
        return self.weight_specs(shapes[0])

    def weight_specs(self, shape: Shape) -> list[WeightSpec]:
        return []

    def forward(self, w, xs, ctx):
        y, backprop = self.call(w, xs[0], ctx)

        def backprop_list(dys):
            dx, dw = backprop(dys[0])
            return [dx], dw

        return [y], backprop_list


def hand_over(arrays: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """`arrays`, with every one that shares memory with an earlier one replaced by a copy: each
    array can then go to its own consumer, which may overwrite it (see the module docstring)."""
    handed: list[np.ndarray | None] = []
    for array in arrays:
        if array is not None and any(h is not None and _overlap(h, array) for h in handed):
            array = array.copy()
        handed.append(array)
    return handed


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    if a is b:
        return True
    try:
        return np.shares_memory(a, b, max_work=10_000)
    except np.exceptions.TooHardError:
        return True


def require_known(shape: Shape, what: str) -> None:
    """Refuse an unknown (None) dimension where weights depend on it."""
    if any(d is None for d in shape):
        raise ShapeError(f"{what} must be known to build weights; received shape {format_shape(shape)}")
