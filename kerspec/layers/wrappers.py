"""Wrappers: TimeDistributed and Bidirectional, each with the wrapped layer written inline.

A wrapper holds its inner layer as a validated config field (`layer: {type: Dense, units: 1}`)
and runs that layer's own `forward`; the inner layer's weights are the wrapper's, keyed by the
wrapper's name (`td/kernel`, `bi/forward/kernel`), as Keras names them.

The field type of TimeDistributed's `layer` is every registered layer, a union that exists only
once every layer module is imported: it is the forward reference `InnerLayer`, defined at the end
of this module (which imports every other layer module then).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, Union

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from kerspec.layers.base import (
    LAYERS,
    Context,
    Layer,
    Shape,
    ShapeError,
    WeightSpec,
    format_shape,
    hand_over,
)
from kerspec.layers.recurrent import GRU, LSTM, Recurrent, SimpleRNN


@contextmanager
def inner_scope(ctx: Context, part: str | None = None, masks: list | None = None) -> Iterator[None]:
    """Run an inner layer with its own buffer keys and masks.

    `ctx.buffer` keys arrays by `ctx.node`; Bidirectional's two RNNs would otherwise share (and
    overwrite) each other's buffers, so each runs under `(node, part)`. The plan reads
    `ctx.masks` again after the wrapper's forward, so both are put back."""
    node, outer_masks = ctx.node, ctx.masks
    if part is not None:
        ctx.node = (node, part)
    if masks is not None:
        ctx.masks = masks
    try:
        yield
    finally:
        ctx.node, ctx.masks = node, outer_masks


def _inline(kind: str):
    """A before-validator: the wrapped layer is a mapping (never a name), without a place in the
    graph of its own (`from`, `input_shape`)."""

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "layer_inline",
                "the wrapped layer is a mapping with a 'type' and its arguments, e.g. {example}",
                {
                    "example": "{type: LSTM, units: 8}"
                    if kind == "rnn"
                    else "{type: Dense, units: 1}"
                },
            )
        for key in ("from", "input_shape"):
            if key in value:
                raise PydanticCustomError(
                    "layer_inline",
                    "a wrapped layer takes no '{key}': the wrapper's input is its input",
                    {"key": key},
                )
        value = LAYERS.normalize(value)
        if kind == "rnn" and value.get("type") not in RNN_TYPES:
            raise PydanticCustomError(
                "layer_not_rnn",
                "Bidirectional wraps an RNN (SimpleRNN, LSTM or GRU); received {type}",
                {"type": value.get("type")},
            )
        return value

    return check


def _no_activity_regularizer(layer: Layer, field: str) -> None:
    # Keras's TimeDistributed calls `layer.call` and so skips the inner activity regularizer;
    # its Bidirectional applies it to each direction's raw outputs. Neither is done here.
    if getattr(layer, "activity_regularizer", None) is not None:
        raise ValueError(
            f"an activity regularizer on the wrapped layer is not supported; put an "
            f"ActivityRegularization layer after the wrapper. Received: {field} with "
            f"activity_regularizer"
        )


def _frozen(specs: list[WeightSpec], layer: Layer) -> list[WeightSpec]:
    """An inner layer's weights, not trainable when the inner layer says `trainable: false`."""
    if layer.trainable:
        return specs
    return [dataclasses.replace(spec, trainable=False) for spec in specs]


@LAYERS.register("TimeDistributed")
class TimeDistributed(Layer):
    """Applies `layer` to every time step: `y[:, t] = layer(x[:, t])`, with the same weights.

    Input shape (batch, time, ...); output (batch, time, ...layer's output). The time axis is
    folded into the batch axis, so the inner layer runs once on (batch * time, ...), not once
    per step. Weights: the inner layer's, by its names. A mask (batch, time) passes through
    unchanged, as in Keras; the inner layer sees none. One difference with Keras, which calls
    the inner layer step by step: a BatchNormalization inside takes its training statistics over
    all steps at once instead of per step.
    """

    type: Literal["TimeDistributed"] = "TimeDistributed"
    layer: Annotated[InnerLayer, BeforeValidator(_inline("any"))]  # noqa: F821
    supports_masking: ClassVar[bool] = True

    @field_validator("layer")
    @classmethod
    def _one_input(cls, layer):
        if layer.arity != 1:
            raise ValueError(
                f"TimeDistributed wraps a layer with one input; {layer.type} takes "
                f"{'two or more' if layer.arity is None else layer.arity}"
            )
        _no_activity_regularizer(layer, "layer")
        return layer

    def _step_shape(self, shape: Shape) -> Shape:
        if len(shape) < 2:
            raise ShapeError(
                "TimeDistributed expects an input of rank 3 or more (batch, time, ...); "
                f"received {format_shape(shape)}"
            )
        return shape[1:]

    def output_shapes(self, shapes):
        shape = shapes[0]
        outputs = self.layer.output_shapes([self._step_shape(shape)])
        if len(outputs) != 1:
            raise ShapeError(
                f"TimeDistributed wraps a layer with one output; the {self.layer.type} gives "
                f"{len(outputs)}"
            )
        return [(shape[0], *outputs[0])]

    def weights(self, shapes):
        return _frozen(self.layer.weights([self._step_shape(shapes[0])]), self.layer)

    def forward(self, w, xs, ctx):
        x = xs[0]
        batch, time = x.shape[:2]
        with inner_scope(ctx, masks=[None]):
            (y,), backprop = self.layer.forward(w, [x.reshape(batch * time, *x.shape[2:])], ctx)

        def backprop_folded(dys):
            dy = dys[0]
            (dx,), grads = backprop([dy.reshape(batch * time, *dy.shape[2:])])
            return [None if dx is None else dx.reshape(x.shape)], grads

        return [y.reshape(batch, time, *y.shape[1:])], backprop_folded


RNN_TYPES = ("SimpleRNN", "LSTM", "GRU")
RNNLayer = Annotated[
    Annotated[Union[SimpleRNN, LSTM, GRU], Field(discriminator="type")],  # noqa: UP007
    BeforeValidator(_inline("rnn")),
]


@LAYERS.register("Bidirectional")
class Bidirectional(Layer):
    """Runs an RNN over the sequence forwards and a second one backwards, and merges them.

    `layer` is the forward RNN; `backward_layer` the backward one, by default a copy of `layer`
    with `go_backwards: true` (as Keras makes it). With `return_sequences`, the backward
    sequence is flipped back to input order before merging, and under a mask the outputs of
    masked steps are zeros (Keras forces `zero_output_for_mask`). `merge_mode`: concat (the
    default) joins the features, sum, mul and ave combine element-wise, None returns both.

    Input shape (batch, time, features). Outputs: [merged] or, with merge_mode None,
    [forward, backward]; with `return_state`, the forward states and then the backward states
    follow, as in Keras. Weights: `forward/<name>` and `backward/<name>` (`forward/kernel`,
    `backward/recurrent_kernel`, ...). A mask goes to both directions; the merged sequence keeps
    it.
    """

    type: Literal["Bidirectional"] = "Bidirectional"
    layer: RNNLayer
    merge_mode: Literal["concat", "sum", "mul", "ave"] | None = "concat"
    backward_layer: RNNLayer | None = None
    weights_: Any = Field(
        None, alias="weights", description="Not supported: give weights in an .npz file."
    )
    supports_masking: ClassVar[bool] = True

    @field_validator("merge_mode", mode="before")
    @classmethod
    def _known_merge_mode(cls, value):
        if value not in ("concat", "sum", "mul", "ave", None):
            raise ValueError(
                "Invalid merge mode: expected one of concat, sum, mul, ave or null (None). "
                f"Received: merge_mode={value!r}"
            )
        return value

    @field_validator("weights_")
    @classmethod
    def _no_initial_weights(cls, value):
        if value is not None:
            raise ValueError(
                "Bidirectional's `weights` is not supported: load weights from an .npz file "
                "(--init-weights, or Model.load_weights)"
            )
        return value

    @model_validator(mode="after")
    def _directions_agree(self):
        _no_activity_regularizer(self.layer, "layer")
        if self.backward_layer is None:
            if self.layer.go_backwards:
                raise ValueError(
                    "the backward copy of `layer` reads backwards like `layer` itself "
                    "(go_backwards: true): give a `backward_layer`, or drop go_backwards"
                )
            return self
        _no_activity_regularizer(self.backward_layer, "backward_layer")
        if self.backward_layer.go_backwards == self.layer.go_backwards:
            raise ValueError(
                "Forward layer and backward layer should have different `go_backwards` value. "
                f"Received: layer.go_backwards={self.layer.go_backwards}, "
                f"backward_layer.go_backwards={self.backward_layer.go_backwards}"
            )
        for name in ("return_sequences", "return_state"):
            ours, theirs = getattr(self.layer, name), getattr(self.backward_layer, name)
            if ours != theirs:
                raise ValueError(
                    f"layer and backward_layer must have the same {name}. Received: {ours} "
                    f"for layer and {theirs} for backward_layer"
                )
        return self

    @cached_property
    def backward(self) -> Recurrent:
        """The backward RNN: `backward_layer`, or one copy of `layer` reading backwards (one
        object, so that its seeded dropout generator persists across batches)."""
        if self.backward_layer is not None:
            return self.backward_layer
        return self.layer.model_copy(update={"go_backwards": True})

    def _merged(self, forward: Shape, backward: Shape) -> list[Shape]:
        if self.merge_mode is None:
            return [forward, backward]
        if self.merge_mode == "concat":
            return [(*forward[:-1], forward[-1] + backward[-1])]
        if forward != backward:
            raise ShapeError(
                f"merge_mode {self.merge_mode!r} needs both directions to give the same shape; "
                f"received {format_shape(forward)} forwards and {format_shape(backward)} backwards"
            )
        return [forward]

    def output_shapes(self, shapes):
        forward = self.layer.output_shapes(shapes)
        backward = self.backward.output_shapes(shapes)
        return [*self._merged(forward[0], backward[0]), *forward[1:], *backward[1:]]

    def _n_merged(self) -> int:
        return 2 if self.merge_mode is None else 1

    def output_masked(self, masked, n_outputs):
        sequence = self.layer.return_sequences and any(masked)
        merged = self._n_merged()
        return [sequence] * merged + [False] * (n_outputs - merged)

    def compute_mask(self, xs, masks, ys):
        mask = masks[0] if self.layer.return_sequences else None
        merged = self._n_merged()
        return [mask] * merged + [None] * (len(ys) - merged)

    def weights(self, shapes):
        return [
            dataclasses.replace(spec, name=f"{part}/{spec.name}")
            for part, layer in (("forward", self.layer), ("backward", self.backward))
            for spec in _frozen(layer.weights(shapes), layer)
        ]

    def forward(self, w, xs, ctx):
        mask = ctx.masks[0] if ctx.masks else None
        runs = []
        for part, layer in (("forward", self.layer), ("backward", self.backward)):
            prefix = f"{part}/"
            inner = {k[len(prefix) :]: v for k, v in w.items() if k.startswith(prefix)}
            with inner_scope(ctx, part):
                ys, backprop = layer.forward(inner, xs, ctx)
            runs.append((prefix, ys, backprop))
        (_, ys_f, backprop_f), (_, ys_b, backprop_b) = runs
        y_f, y_b = ys_f[0], ys_b[0]
        sequences = self.layer.return_sequences
        if sequences:
            y_b = y_b[:, ::-1]
        keep = None
        if sequences and mask is not None:
            keep = mask[:, :, None].astype(y_f.dtype)
            y_f, y_b = y_f * keep, y_b * keep
        mode = self.merge_mode
        if mode is None:
            merged = [y_f, y_b]
        elif mode == "concat":
            merged = [np.concatenate([y_f, y_b], axis=-1)]
        elif mode == "sum":
            merged = [y_f + y_b]
        elif mode == "ave":
            merged = [(y_f + y_b) * y_f.dtype.type(0.5)]
        else:
            merged = [y_f * y_b]
        n_f = len(ys_f) - 1
        split = y_f.shape[-1]

        def backprop(dys):
            d_merged, d_states = dys[: len(merged)], dys[len(merged) :]
            if mode is None:
                d_f, d_b = d_merged
            else:
                dy = d_merged[0]
                if dy is None:
                    d_f = d_b = None
                elif mode == "concat":
                    d_f, d_b = dy[..., :split], dy[..., split:]
                elif mode == "sum":
                    d_f = d_b = dy
                elif mode == "ave":
                    d_f = d_b = dy * dy.dtype.type(0.5)
                else:
                    d_f, d_b = dy * y_b, dy * y_f
            if keep is not None:
                d_f = None if d_f is None else d_f * keep
                d_b = None if d_b is None else d_b * keep
            d_f, d_b = hand_over([d_f, d_b])
            if sequences and d_b is not None:
                d_b = d_b[:, ::-1]
            (dx_f,), grads_f = backprop_f([d_f, *d_states[:n_f]])
            (dx_b,), grads_b = backprop_b([d_b, *d_states[n_f:]])
            grads = {f"forward/{k}": g for k, g in grads_f.items()}
            grads.update({f"backward/{k}": g for k, g in grads_b.items()})
            if dx_f is None:
                return [dx_b], grads
            return [dx_f if dx_b is None else dx_f + dx_b], grads

        return [*merged, *ys_f[1:], *ys_b[1:]], backprop


# TimeDistributed's `layer`: the union of every layer, which imports every layer module. Pydantic
# builds the field from this module's namespace when the class is first used.
InnerLayer = LAYERS.union_ref()
