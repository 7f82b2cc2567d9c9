"""What every recurrent layer shares: Keras's arguments, shapes and weights, the dropout masks,
the step mask, and how a masked step carries the states over (forward and backward)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from kerspec.activations import ACTIVATIONS
from kerspec.constraints import CONSTRAINTS
from kerspec.initializers import INITIALIZERS, Initializer
from kerspec.layers.base import Context, Layer, ShapeError, WeightSpec, format_shape
from kerspec.layers.noise import keep_mask
from kerspec.regularizers import REGULARIZERS

# `activation: null` is linear, as Keras's `activation=None`.
ActivationRef = ACTIVATIONS.ref(none="linear")
InitializerRef = INITIALIZERS.ref()
RegularizerRef = REGULARIZERS.ref() | None
ConstraintRef = CONSTRAINTS.ref() | None


def hold(new: np.ndarray, old: np.ndarray, step: np.ndarray) -> None:
    """Where `step` is 0 (a masked step), put the previous state back. A copy, not the blend
    old + step * (new - old): that rounds a real step's state (1.0 - a + a is not 1.0), and an
    activation that tells its flat parts from its output (hard_tanh at exactly 1) then took a
    saturated unit for a live one."""
    np.copyto(new, old, where=step == 0)


def split_carry(d: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Split a state's gradient at a step: masked rows pass it straight to the previous state
    (returned), real rows keep it (left in `d`) for the step's own backward."""
    carried = d * (1 - step)
    d *= step
    return carried


class Recurrent(Layer):
    """What SimpleRNN, LSTM and GRU share: arguments, shapes, weights, dropout and the step mask.

    Input shape (batch, time, features); output (batch, time, units) with `return_sequences`,
    else (batch, units); with `return_state` the final states follow as (batch, units) each.
    Dropout follows Keras: one input mask (batch, features) and one recurrent mask (batch, units)
    per sequence, drawn in training only and reused at every step. The recurrent mask applies to
    the previous state where it enters the recurrent matmul, never to the carried state. One
    difference: where Keras's LSTM and GRU switch to per-gate kernels (recurrent_dropout > 0, or
    implementation=1) they draw one mask per gate; here the gates share the two masks, which keeps
    each step one fused matmul.
    """

    units: PositiveInt
    activation: ActivationRef = "tanh"
    use_bias: bool = True
    kernel_initializer: InitializerRef = "glorot_uniform"
    recurrent_initializer: InitializerRef = "orthogonal"
    bias_initializer: InitializerRef = "zeros"
    kernel_regularizer: RegularizerRef = None
    recurrent_regularizer: RegularizerRef = None
    bias_regularizer: RegularizerRef = None
    activity_regularizer: RegularizerRef = None
    kernel_constraint: ConstraintRef = None
    recurrent_constraint: ConstraintRef = None
    bias_constraint: ConstraintRef = None
    # Keras clamps these to [0, 1], and at 1 its LSTM and GRU drop nothing when
    # recurrent_dropout is set (their cells check 0 < rate < 1) but every input otherwise.
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int | None = Field(None, ge=0, description="Seed of the dropout masks.")
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = Field(False, description="Read the sequence from its last step.")
    stateful: bool = Field(False, description="Not supported: states start at zero every batch.")
    unroll: bool = Field(False, description="Accepted for Keras compatibility; no effect.")

    # Gate blocks in the kernels (1, 4 or 3) and states carried from step to step (h, or h and c).
    gates: ClassVar[int]
    n_states: ClassVar[int] = 1
    # A mask marks padded steps to skip; it flows on only with the whole sequence.
    supports_masking: ClassVar[bool] = True

    def output_masked(self, masked, n_outputs):
        sequence = self.return_sequences and any(masked)
        return [sequence] + [False] * (n_outputs - 1)

    def compute_mask(self, xs, masks, ys):
        mask = masks[0] if self.return_sequences else None
        return [mask] + [None] * (len(ys) - 1)

    @field_validator("stateful")
    @classmethod
    def _not_stateful(cls, value):
        if value:
            raise ValueError(
                "stateful=True is not supported: kerspec starts every batch from zero states"
            )
        return value

    def output_shapes(self, shapes):
        shape = shapes[0]
        if len(shape) != 2 or shape[1] is None:
            raise ShapeError(
                f"{self.type} expects a 3-D input (batch, time, features) with a known number of "
                f"features; received {format_shape(shape)}"
            )
        time = shape[0]
        if self.unroll and time is None:
            raise ShapeError("cannot unroll an RNN over an unknown number of time steps")
        output = (time, self.units) if self.return_sequences else (self.units,)
        return [output, *[(self.units,)] * (self.n_states if self.return_state else 0)]

    def bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def bias_init(self) -> Initializer:
        return self.bias_initializer

    def weights(self, shapes):
        width = self.gates * self.units
        specs = [
            WeightSpec("kernel", (shapes[0][-1], width), self.kernel_initializer,
                       self.kernel_regularizer, self.kernel_constraint),
            WeightSpec("recurrent_kernel", (self.units, width), self.recurrent_initializer,
                       self.recurrent_regularizer, self.recurrent_constraint),
        ]  # fmt: skip
        if self.use_bias:
            specs.append(
                WeightSpec("bias", self.bias_shape(), self.bias_init(),
                           self.bias_regularizer, self.bias_constraint)
            )  # fmt: skip
        return specs

    def dropout_and_steps(self, x: np.ndarray, ctx: Context):
        """The dropout masks of this sequence, (batch, features) and (batch, units), or None
        each, and the step mask (time, batch, 1) in the order the steps are read (1 for a real
        step, 0 for padding), or None."""
        batch, _, features = x.shape
        keep_x = keep_h = None
        if ctx.training and (self.dropout or self.recurrent_dropout):
            rng = ctx.rng if self.seed is None else ctx.seeded_rng(self, self.seed)
            keep_x = keep_mask(rng, self.dropout, (batch, features), x.dtype)
            keep_h = keep_mask(rng, self.recurrent_dropout, (batch, self.units), x.dtype)
        steps = None
        if ctx.masks and ctx.masks[0] is not None:
            steps = ctx.masks[0].T[..., None].astype(x.dtype)
            if self.go_backwards:
                steps = steps[::-1]
        return keep_x, keep_h, steps


class Gated(Recurrent):
    """Arguments LSTM and GRU add: the gates' activation and two that only steer Keras's kernels."""

    recurrent_activation: ActivationRef = "sigmoid"
    implementation: Literal[1, 2] = Field(
        2, description="Accepted for Keras compatibility; no effect."
    )
    use_cudnn: Literal["auto"] | bool = "auto"

    @field_validator("use_cudnn")
    @classmethod
    def _no_cudnn(cls, value):
        if value is True:
            raise ValueError(
                "use_cudnn=True is not supported: kerspec runs on NumPy, without cuDNN"
            )
        return value
