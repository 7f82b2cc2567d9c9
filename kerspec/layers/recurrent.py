"""Recurrent layers: SimpleRNN, LSTM and GRU, with Keras 3's arguments, weight layouts and math.

LSTM and GRU with elementwise activations (every usual one) run feature-major: each step's
arrays are (rows, batch), a step is one GEMM over the stacked [h_{t-1}; x_t; 1] (two for a GRU
without reset_after) and passes over contiguous gate blocks, and the weight gradients are one
GEMM over all steps (`StepInputs`).

SimpleRNN, and LSTM and GRU with activations that are not elementwise (softmax), run
batch-major. The input projection of all time steps is one matmul before the loop (`zx = x @
kernel + bias` over (time * batch, features)); the loop over time, the only Python loop, does
one fused matmul per step (`h @ recurrent_kernel`, all gates at once) and the gate
nonlinearities. Backpropagation through time runs the loop in reverse, storing the
pre-activation gradients of every step; the kernel, recurrent kernel, bias and input gradients
are then each one matmul or sum over all steps. Arrays inside are time-major: step t reads
`zx[t]`, a contiguous (batch, gates * units) block, and the states live in (time + 1, batch,
units) arrays whose row 0 is the zero initial state, so step t reads row t and writes row t + 1
and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from kerspec.activations import ACTIVATIONS, Activation, Sigmoid, Tanh
from kerspec.constraints import CONSTRAINTS
from kerspec.initializers import INITIALIZERS, Initializer
from kerspec.layers.base import LAYERS, Context, Layer, ShapeError, WeightSpec, format_shape
from kerspec.layers.noise import keep_mask
from kerspec.regularizers import REGULARIZERS

# `activation: null` is linear, as Keras's `activation=None`.
ActivationRef = ACTIVATIONS.ref(none="linear")
InitializerRef = INITIALIZERS.ref()
RegularizerRef = REGULARIZERS.ref() | None
ConstraintRef = CONSTRAINTS.ref() | None

# scan_backprop(d_sequence, d_final_states) -> (dz, d recurrent_kernel, d recurrent bias or None):
# `d_sequence` is the time-major (time, batch, units) gradient of the returned sequence or None;
# `d_final_states` holds one owned (batch, units) gradient per state; dz is (time, batch, n).
ScanBackprop = Callable[
    [np.ndarray | None, list[np.ndarray]], tuple[np.ndarray, np.ndarray, np.ndarray | None]
]


class UnitForgetBias(Initializer):
    """Keras's `unit_forget_bias` for the LSTM bias (i, f, c, o): `base` for the i, c and o
    blocks and ones for the forget gate, so that the cell remembers from the start."""

    base: Initializer
    units: PositiveInt

    def __call__(self, shape, rng, dtype):
        units = self.units
        # Two calls of `base`, as Keras makes them, so a seeded random base draws the same values.
        return np.concatenate(
            [
                self.base((units,), rng, dtype),
                np.ones(units, dtype),
                self.base((2 * units,), rng, dtype),
            ]
        )


def hold(new: np.ndarray, old: np.ndarray, step: np.ndarray) -> None:
    """Where `step` is 0 (a masked step), put the previous state back. A copy, not the blend
    old + step * (new - old): that rounds a real step's state (1.0 - a + a is not 1.0), and an
    activation that tells its flat parts from its output (hard_tanh at exactly 1) then took a
    saturated unit for a live one."""
    np.copyto(new, old, where=step == 0)


def column_sums(a: np.ndarray) -> np.ndarray:
    """a.sum(axis=0) of a 2-D array as ones @ a: BLAS's gemv, about 3x faster than np.sum over
    the (time * batch) rows of a recurrent layer's gradients."""
    return np.matmul(np.ones(a.shape[0], a.dtype), a)


def keras_order(internal: np.ndarray, order: np.ndarray) -> np.ndarray:
    """A gradient with gate columns in a scan's internal order, back in Keras's order."""
    keras = np.empty_like(internal)
    keras[..., order] = internal
    return keras


def split_carry(d: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Split a state's gradient at a step: masked rows pass it straight to the previous state
    (returned), real rows keep it (left in `d`) for the step's own backward."""
    carried = d * (1 - step)
    d *= step
    return carried


def backward_steps(
    time: int, step_bytes: int, prepare: Callable[[int, int], None]
) -> Iterator[int]:
    """The steps of a backward pass through time, last first, calling `prepare(lo, hi)` for each
    block of steps just before its first one. A block holds about 256 KiB of gates
    (`step_bytes` a step): large enough that the calls are few, small enough that what prepare
    writes is still in cache when the steps read it."""
    block = max(1, (256 << 10) // step_bytes)
    lo = time
    for t in reversed(range(time)):
        if t < lo:
            lo = max(0, t + 1 - block)
            prepare(lo, t + 1)
        yield t


def activate(act: Activation, z: np.ndarray, out: np.ndarray, gates: int = 1) -> None:
    """`act` over a feature-major block of `gates` gates, (gates * units, batch), into `out`
    (which may be z). One that is not elementwise (softmax) runs on each gate's (batch, units)
    transpose: Keras applies it to each gate's pre-activation on its own."""
    if act.elementwise:
        act.forward(z, out=out)
        return
    u = z.shape[0] // gates
    for j in range(0, gates * u, u):
        act.forward(z[j : j + u].T, out=out[j : j + u].T)


def derivative(act: Activation, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """act's derivative into `out`, as a factor of a backward pass prepared for blocks of
    steps; 1 where act is not elementwise: its backward, no factor, runs at the step
    (`backprop_gates`)."""
    if act.elementwise:
        act.derivative(x, y, out)
    else:
        out.fill(1.0)


def backprop_gates(act: Activation, x: np.ndarray, y: np.ndarray, d: np.ndarray,
                   gates: int = 1) -> None:
    """In place, `d` (gates * units, batch) from the gradient of act's output to that of its
    input, gate by gate as `activate` ran it, for an act that is not elementwise."""
    u = d.shape[0] // gates
    for j in range(0, gates * u, u):
        dt = d[j : j + u].T
        act.backward(x[j : j + u].T, y[j : j + u].T, dt, out=dt)


class Recurrent(Layer):
    """What SimpleRNN, LSTM and GRU share: arguments, shapes, weights, dropout and the input side.

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

    def scan(
        self,
        w: dict[str, np.ndarray],
        zx: np.ndarray,
        keep_h: np.ndarray | None,
        ctx: Context,
        steps: np.ndarray | None,
    ) -> tuple[np.ndarray, list[np.ndarray], ScanBackprop]:
        """Run the steps over the time-major input projection `zx` (which it may overwrite with
        the pre-activations); return every h as (time + 1, batch, units), the final states and
        the backward of the loop. `steps` (time, batch, 1) is 1 where a step is real and 0 where
        the mask says padding: there the states are carried over unchanged, as in Keras."""
        raise NotImplementedError

    def states(self, ctx: Context, time: int, batch: int, dtype, keep_h: np.ndarray | None):
        """The h of every step, (time + 1, batch, units) with row 0 the zero initial state, and
        the previous states as the recurrent matmul sees them: row t is h_{t-1}, times the
        recurrent dropout mask when there is one (step t fills it), else a view of h."""
        hs = ctx.buffer("h", (time + 1, batch, self.units), dtype)
        hs[0] = 0.0
        if keep_h is None:
            return hs, hs[:-1]
        return hs, ctx.buffer("h_seen", (time, batch, self.units), dtype)

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

    def forward(self, w, xs, ctx):
        x = xs[0]
        batch, time, features = x.shape
        dtype = x.dtype
        kernel = w["kernel"]
        width = kernel.shape[1]
        keep_x, keep_h, steps = self.dropout_and_steps(x, ctx)

        forward_bias = None
        if self.use_bias:
            forward_bias = w["bias"]
            # GRU with reset_after keeps the input and recurrent biases as the rows of one weight.
            forward_bias = forward_bias[0] if forward_bias.ndim == 2 else forward_bias
        # A time-major copy, so that each step's projection is one contiguous block. With a bias,
        # a column of ones after the features and the bias as the kernel's last row: the bias
        # rides in the projection's GEMM instead of a pass over (time, batch, width) after it
        # (and OpenBLAS runs W3's 1-feature projection far faster as K=2 than as K=1).
        ones = int(forward_bias is not None)
        xt = ctx.buffer("x", (time, batch, features + ones), dtype)
        xt[..., :features] = (x[:, ::-1] if self.go_backwards else x).transpose(1, 0, 2)
        if keep_x is not None:
            xt[..., :features] *= keep_x
        x_ones = xt.reshape(time * batch, features + ones)
        x2 = x_ones[:, :features]
        zx = ctx.buffer("zx", (time * batch, width), dtype)
        if forward_bias is not None:
            xt[..., features] = 1.0
            np.matmul(x_ones, np.concatenate([kernel, forward_bias[None]]), out=zx)
        elif features == 1:
            # An outer product: a broadcast multiply is several times faster than a K=1 GEMM.
            np.multiply(x2, kernel, out=zx)
        else:
            np.matmul(x2, kernel, out=zx)
        hs, finals, scan_backprop = self.scan(
            w, zx.reshape(time, batch, width), keep_h, ctx, steps
        )

        # In Keras the sequence comes out in the order it was read, reversed by go_backwards.
        # (Without return_sequences a scan may keep only the last states and return hs=None.)
        output = hs[1:].transpose(1, 0, 2) if self.return_sequences else finals[0]
        ys = [output, *finals] if self.return_state else [output]
        need_dx = ctx.need_dx

        def backprop(dys):
            d_finals = [np.zeros((batch, self.units), dtype) for _ in finals]
            if self.return_state:
                for d_final, dy in zip(d_finals, dys[1:]):
                    if dy is not None:
                        d_final += dy
            d_sequence = None
            if self.return_sequences:
                d_sequence = None if dys[0] is None else dys[0].transpose(1, 0, 2)
            elif dys[0] is not None:
                d_finals[0] += dys[0]
            dz, d_recurrent, d_recurrent_bias = scan_backprop(d_sequence, d_finals)
            dz2 = dz.reshape(time * batch, width)
            d_kernel = np.matmul(x2.T, dz2)
            # A sum over rows as a product with ones: BLAS's gemv, 3x faster than np.sum here.
            d_bias = column_sums(dz2) if self.use_bias else None
            grads = {"kernel": d_kernel, "recurrent_kernel": d_recurrent}
            if self.use_bias:
                grads["bias"] = (
                    d_bias if d_recurrent_bias is None else np.stack([d_bias, d_recurrent_bias])
                )
            if not need_dx:
                return [None], grads
            dxt = np.matmul(dz2, kernel.T).reshape(time, batch, features)
            if keep_x is not None:
                dxt *= keep_x
            dx = dxt.transpose(1, 0, 2)
            return [dx[:, ::-1] if self.go_backwards else dx], grads

        return ys, backprop


@LAYERS.register("SimpleRNN")
class SimpleRNN(Recurrent):
    """A fully connected RNN: `h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)`.

    Weights: kernel (features, units), recurrent_kernel (units, units), bias (units,).
    Outputs: [output] or, with return_state, [output, h].
    """

    type: Literal["SimpleRNN"] = "SimpleRNN"
    gates: ClassVar[int] = 1

    def scan(self, w, zx, keep_h, ctx, steps):
        time, batch, units = zx.shape
        dtype = zx.dtype
        recurrent = w["recurrent_kernel"]
        activation = self.activation
        hs, seen = self.states(ctx, time, batch, dtype, keep_h)
        rec = ctx.buffer("rec", (batch, units), dtype)
        for t in range(time):
            if keep_h is not None:
                np.multiply(hs[t], keep_h, out=seen[t])
            np.matmul(seen[t], recurrent, out=rec)
            zx[t] += rec
            hs[t + 1] = activation.forward(zx[t])
            if steps is not None:
                hold(hs[t + 1], hs[t], steps[t])

        def scan_backprop(d_sequence, d_finals):
            dz = np.empty_like(zx)
            dh = d_finals[0]
            for t in reversed(range(time)):
                if d_sequence is not None:
                    dh += d_sequence[t]
                carried = None if steps is None else split_carry(dh, steps[t])
                dz[t] = activation.backward(zx[t], hs[t + 1], dh)
                dh = np.matmul(dz[t], recurrent.T)
                if keep_h is not None:
                    dh *= keep_h
                if carried is not None:
                    dh += carried
            d_recurrent = np.matmul(seen.reshape(-1, units).T, dz.reshape(-1, units))
            return dz, d_recurrent, None

        return hs, [hs[time]], scan_backprop


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



class StepInputs:
    """The operands of a feature-major scan (LSTM, GRU), where every per-step array is (rows,
    batch): column block t of `xh` (k, slots, batch) is [h_{t-1}, times the recurrent dropout
    mask; x_t; 1 when there is a bias], so a step's input projection, recurrent product and bias
    are one GEMM, and the blocks of all steps side by side give every weight gradient in one
    more. `hs` (units, slots, batch) holds the real h of every step (the same memory as xh's h
    rows unless recurrent dropout scales those). With `keep_all` every step has its own block;
    otherwise two alternate and x_t is copied in at its step.

    Batch-major, gates are column slices of (batch, gates * units) rows, and NumPy runs such
    strided 2-D passes several times slower than contiguous ones; OpenBLAS also runs the
    recurrent product faster in this orientation (W4: 45 against 62 µs a step)."""

    def __init__(self, layer: Recurrent, x: np.ndarray, ctx: Context, keep_all: bool):
        batch, time, features = x.shape
        u = layer.units
        self.u, self.time, self.features, self.keep_all = u, time, features, keep_all
        self.ones = int(layer.use_bias)
        self.k = u + features + self.ones
        keep_x, keep_h, steps = layer.dropout_and_steps(x, ctx)
        # (time, 1, batch): a row per step.
        self.steps = None if steps is None else steps.transpose(0, 2, 1)
        slots = time + 1 if keep_all else 2
        self.xh = xh = ctx.buffer("xh", (self.k, slots, batch), x.dtype)
        xh[:u, 0] = 0.0
        if self.ones:
            xh[u + features] = 1.0
        self.ordered = x[:, ::-1] if layer.go_backwards else x
        self.go_backwards = layer.go_backwards
        self.keep_xt = None if keep_x is None else keep_x.T
        if keep_all:
            rows = xh[u : u + features, :time]
            rows[...] = self.ordered.transpose(2, 1, 0)
            if self.keep_xt is not None:
                rows *= self.keep_xt[:, None, :]
        self.keep_ht = None if keep_h is None else np.ascontiguousarray(keep_h.T)
        if self.keep_ht is None:
            self.hs = xh[:u]
        else:
            self.hs = ctx.buffer("h", (u, slots, batch), x.dtype)
            self.hs[:, 0] = 0.0

    def slots(self, t: int) -> tuple[int, int]:
        """The blocks step t reads and writes."""
        return (t, t + 1) if self.keep_all else (t % 2, 1 - t % 2)

    def block(self, t: int, r0: int) -> np.ndarray:
        """Step t's stacked operand (k, batch), with x_t copied in when blocks alternate."""
        if not self.keep_all:
            rows = self.xh[self.u : self.u + self.features, r0]
            np.copyto(rows, self.ordered[:, t].T)
            if self.keep_xt is not None:
                rows *= self.keep_xt
        return self.xh[:, r0]

    def seen(self, r0: int) -> np.ndarray:
        """h_{t-1} as the recurrent product sees it (times the recurrent dropout mask)."""
        return self.xh[: self.u, r0]

    def finish_step(self, t: int, r0: int, r1: int) -> None:
        """After hs[:, r1] got h_t: carry h over a masked step, and give the next step's block
        its h (times the recurrent dropout mask)."""
        h_new = self.hs[:, r1]
        if self.steps is not None:
            hold(h_new, self.hs[:, r0], self.steps[t])
        if self.keep_ht is not None:
            np.multiply(h_new, self.keep_ht, out=self.xh[: self.u, r1])

    def last_h(self) -> np.ndarray:
        return np.ascontiguousarray(self.hs[:, self.time if self.keep_all else self.time % 2].T)

    def sequence(self) -> np.ndarray:
        """Every h_t as (batch, time, units), in the order the steps were read."""
        return self.hs[:, 1:].transpose(2, 1, 0)

    def weight_grad(self, d_pre: np.ndarray) -> np.ndarray:
        """From the pre-activation gradients of every step (rows, time, batch): the gradient of
        the stacked weight (rows, k), one GEMM over all steps."""
        rows, time = d_pre.shape[0], self.time
        stacked = self.xh[:, :time].reshape(self.k, -1)
        return np.matmul(d_pre.reshape(rows, -1), stacked.T)

    def input_grad(self, stacked: np.ndarray, d_pre: np.ndarray) -> np.ndarray:
        """dx (batch, time, features) from the stacked weight (rows, k) and d_pre."""
        u, features = self.u, self.features
        rows, time, batch = d_pre.shape
        dxt = np.matmul(stacked[:, u : u + features].T, d_pre.reshape(rows, -1))
        dxt = dxt.reshape(features, time, batch)
        if self.keep_xt is not None:
            dxt *= self.keep_xt[:, None, :]
        dx = dxt.transpose(2, 1, 0)
        return dx[:, ::-1] if self.go_backwards else dx


def state_grads(layer: Recurrent, dys: list, batch: int, dtype):
    """A feature-major scan's incoming gradients: one (units, batch) array per state (h, and c
    for the LSTM), owned and summed from the outputs that carry it, and the sequence's as
    (time, units, batch) or None."""
    u = layer.units
    d_states = [np.zeros((u, batch), dtype) for _ in range(layer.n_states)]
    if layer.return_state:
        for d_state, dy in zip(d_states, dys[1:]):
            if dy is not None:
                d_state += dy.T
    d_sequence = None
    if layer.return_sequences:
        if dys[0] is not None:
            d_sequence = np.ascontiguousarray(dys[0].transpose(1, 2, 0))
    elif dys[0] is not None:
        d_states[0] += dys[0].T
    return d_states, d_sequence


def no_backprop(dys):
    raise RuntimeError("the recurrent layer ran with ctx.record False: no backward pass")


@LAYERS.register("LSTM")
class LSTM(Gated):
    """Long short-term memory (Hochreiter and Schmidhuber, 1997), gates in Keras's order i, f, c, o:

        [i, f, c~, o] = [σ, σ, g, σ](x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)
        c_t = f * c_{t-1} + i * c~
        h_t = o * g(c_t)

    with σ = recurrent_activation and g = activation. Weights: kernel (features, 4 units),
    recurrent_kernel (units, 4 units), bias (4 units,). Outputs: [output] or, with return_state,
    [output, h, c].
    """

    type: Literal["LSTM"] = "LSTM"
    unit_forget_bias: bool = True
    gates: ClassVar[int] = 4
    n_states: ClassVar[int] = 2

    def bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        return UnitForgetBias(base=self.bias_initializer, units=self.units)

    def layout(self, dtype) -> tuple[np.ndarray, np.ndarray | None]:
        """The feature-major forward's gate rows: (order, scale), internal row j = Keras column
        order[j] times scale[j] (None: 1). The scale applies to the forward GEMM only; the
        gradients are for the unscaled weights, put back into Keras's order.

        Internally [o, i, f, c]: the three σ gates side by side (one activation call a step on
        a contiguous block), and i, f, c together, the blocks whose gradient is dc times a
        factor (one broadcast multiply a step in the backward pass)."""
        u = self.units
        order = np.concatenate([np.arange(3 * u, 4 * u), np.arange(3 * u)])
        if not isinstance(self.recurrent_activation, Sigmoid):
            return order, None
        # σ(z) = (1 + tanh(z / 2)) / 2: with the σ columns' weights halved once per forward, a
        # step needs one tanh for all gates (or for the σ block) and no exp, abs or where.
        scale = np.ones(4 * u, dtype)
        scale[: 3 * u] = 0.5
        return order, scale

    def forward(self, w, xs, ctx):
        """Feature-major (see StepInputs): a step is one GEMM, `stacked (4 units, k) @ [h_{t-1};
        x_t; 1]`, and passes over contiguous gate blocks."""
        x = xs[0]
        batch, time, features = x.shape
        dtype = x.dtype
        u = self.units
        width = 4 * u
        g, sigma = self.activation, self.recurrent_activation
        # A backward pass will follow (training, gradient checks): keep every step. Otherwise two
        # of each are enough, alternating, plus every h when the sequence is returned.
        record = ctx.record
        inputs = StepInputs(self, x, ctx, keep_all=record or self.return_sequences)
        steps = inputs.steps

        order, scale = self.layout(dtype)
        # Rows in the internal gate order, columns [recurrent | kernel | bias]; unscaled for
        # the backward pass, which differentiates with respect to the true pre-activations.
        stacked = np.empty((width, inputs.k), dtype)
        stacked[:, :u] = w["recurrent_kernel"][:, order].T
        stacked[:, u : u + features] = w["kernel"][:, order].T
        if inputs.ones:
            stacked[:, u + features] = w["bias"][order]
        forward_stacked = stacked if scale is None else stacked * scale[:, None]
        sigmoid_by_tanh = scale is not None
        one_tanh = sigmoid_by_tanh and isinstance(g, Tanh)

        hs = inputs.hs
        n_gates = time if record else 1
        z = ctx.buffer("z", (n_gates, width, batch), dtype)
        uses_z = sigma.uses_input or g.uses_input
        gates = ctx.buffer("gates", z.shape, dtype) if record and uses_z else z
        cs = ctx.buffer("c", (time + 1 if record else 2, u, batch), dtype)
        cs[0] = 0.0
        g_cs = ctx.buffer("g_c", (n_gates, u, batch), dtype)
        ic = ctx.buffer("ic", (u, batch), dtype)
        for t in range(time):
            r0, r1 = inputs.slots(t)
            c0, c1 = (t, t + 1) if record else (t % 2, 1 - t % 2)
            n = t if record else 0
            zt, a = z[n], gates[n]
            np.matmul(forward_stacked, inputs.block(t, r0), out=zt)
            if one_tanh:
                np.tanh(zt, out=a)
            else:
                if sigmoid_by_tanh:
                    np.tanh(zt[: 3 * u], out=a[: 3 * u])
                else:
                    activate(sigma, zt[: 3 * u], a[: 3 * u], 3)
                activate(g, zt[3 * u :], a[3 * u :])
            if sigmoid_by_tanh:
                s = a[: 3 * u]
                s *= 0.5
                s += 0.5
            o, i, f, candidate = a[:u], a[u : 2 * u], a[2 * u : 3 * u], a[3 * u :]
            c_new = cs[c1]
            np.multiply(f, cs[c0], out=c_new)
            np.multiply(i, candidate, out=ic)
            c_new += ic
            if steps is not None:
                hold(c_new, cs[c0], steps[t])
            gc = g_cs[n]
            activate(g, c_new, gc)
            np.multiply(o, gc, out=hs[:, r1])
            inputs.finish_step(t, r0, r1)
        c_last = cs[time if record else time % 2]
        finals = [inputs.last_h(), np.ascontiguousarray(c_last.T)]
        output = inputs.sequence() if self.return_sequences else finals[0]
        ys = [output, *finals] if self.return_state else [output]
        if not record:
            return ys, no_backprop

        # The backward pass's large arrays, kept from batch to batch: fresh ones of a few MB
        # each would be new pages every batch, and their first touch showed in the profile.
        factors = ctx.buffer("factors", z.shape, dtype)
        dz = ctx.buffer("dz", (width, time, batch), dtype)
        dg_c = ctx.buffer("dg_c", (time, u, batch), dtype)
        need_dx = ctx.need_dx

        def prepare(lo, hi):
            """Every factor that does not depend on the incoming gradient, for steps lo..hi:
                dz_o = dh * g(c_t) σ'(o)          dc += dh * o g'(c_t)
                dz_i, dz_f, dz_c = dc * (c~ σ'(i), c_{t-1} σ'(f), i g'(c~))
            with σ' and g' from each activation's `derivative` (1 for one that is not
            elementwise, whose backward the step applies)."""
            a, fs, dgc, gc = gates[lo:hi], factors[lo:hi], dg_c[lo:hi], g_cs[lo:hi]
            o, i, candidate = a[:, :u], a[:, u : 2 * u], a[:, 3 * u :]
            # σ' over the three σ blocks; for sigmoid over all four, contiguous, then block c
            # overwritten.
            n = width if isinstance(sigma, Sigmoid) else 3 * u
            derivative(sigma, z[lo:hi, :n], a[:, :n], fs[:, :n])
            derivative(g, z[lo:hi, 3 * u :], candidate, fs[:, 3 * u :])
            derivative(g, cs[lo + 1 : hi + 1], gc, dgc)
            fs[:, :u] *= gc
            fs[:, u : 2 * u] *= candidate
            fs[:, 2 * u : 3 * u] *= cs[lo:hi]
            fs[:, 3 * u :] *= i
            dgc *= o

        def backprop(dys):
            (dh, dc), d_sequence = state_grads(self, dys, batch, dtype)
            recurrent_t = np.ascontiguousarray(stacked[:, :u].T)
            scratch = np.empty((u, batch), dtype)
            dz3 = dz[u:].reshape(3, u, time, batch)
            for t in backward_steps(time, batch * width * dtype.itemsize, prepare):
                if d_sequence is not None:
                    dh += d_sequence[t]
                carried_h = carried_c = None
                if steps is not None:
                    carried_h, carried_c = split_carry(dh, steps[t]), split_carry(dc, steps[t])
                np.multiply(dh, dg_c[t], out=scratch)
                if not g.elementwise:
                    backprop_gates(g, cs[t + 1], g_cs[t], scratch)
                dc += scratch
                np.multiply(dh, factors[t, :u], out=dz[:u, t])
                np.multiply(dc, factors[t, u:].reshape(3, u, batch), out=dz3[:, :, t])
                if not sigma.elementwise:
                    backprop_gates(sigma, z[t, : 3 * u], gates[t, : 3 * u], dz[: 3 * u, t], 3)
                if not g.elementwise:
                    backprop_gates(g, z[t, 3 * u :], gates[t, 3 * u :], dz[3 * u :, t])
                dc *= gates[t, 2 * u : 3 * u]
                np.matmul(recurrent_t, dz[:, t], out=dh)
                if inputs.keep_ht is not None:
                    dh *= inputs.keep_ht
                if carried_h is not None:
                    dh += carried_h
                    dc += carried_c
            # Kernel, recurrent kernel and bias at once.
            d_stacked = inputs.weight_grad(dz)
            grads = {
                "kernel": keras_order(d_stacked[:, u : u + features].T, order),
                "recurrent_kernel": keras_order(d_stacked[:, :u].T, order),
            }
            if inputs.ones:
                grads["bias"] = keras_order(d_stacked[:, u + features], order)
            return [inputs.input_grad(stacked, dz) if need_dx else None], grads

        return ys, backprop


@LAYERS.register("GRU")
class GRU(Gated):
    """Gated recurrent unit (Cho et al., 2014), gates in Keras's order z (update), r (reset), h:

        [z, r] = σ(x_t @ kernel[:, :2u] + b_x[:2u] + h_{t-1} @ recurrent_kernel[:, :2u] + b_h[:2u])
        reset_after=True:  h~ = g(x_t @ kernel_h + b_x_h + r * (h_{t-1} @ recurrent_kernel_h + b_h_h))
        reset_after=False: h~ = g(x_t @ kernel_h + b_x_h + (r * h_{t-1}) @ recurrent_kernel_h)
        h_t = z * h_{t-1} + (1 - z) * h~

    with σ = recurrent_activation and g = activation. Weights: kernel (features, 3 units),
    recurrent_kernel (units, 3 units), bias (2, 3 units) as rows b_x, b_h with reset_after, else
    (3 units,) = b_x and no b_h. Outputs: [output] or, with return_state, [output, h].
    Without reset_after, r acts before the candidate's recurrent matmul, so a step needs two.
    """

    type: Literal["GRU"] = "GRU"
    reset_after: bool = True
    gates: ClassVar[int] = 3

    def bias_shape(self):
        width = 3 * self.units
        return (2, width) if self.reset_after else (width,)

    def forward(self, w, xs, ctx):
        """Feature-major (see StepInputs). The step GEMM's
        rows: [z, r] from [h_{t-1}; x_t; 1], the candidate's input part from [x_t; 1], and with
        reset_after its recurrent part from [h_{t-1}; 1], which r scales; without, the
        candidate's recurrent product of r * h_{t-1} is a second GEMM."""
        x = xs[0]
        batch, time, features = x.shape
        dtype = x.dtype
        u = self.units
        g, sigma = self.activation, self.recurrent_activation
        reset_after = self.reset_after
        record = ctx.record
        inputs = StepInputs(self, x, ctx, keep_all=record or self.return_sequences)
        steps, hs = inputs.steps, inputs.hs

        kernel, recurrent = w["kernel"], w["recurrent_kernel"]
        rows = 4 * u if reset_after else 3 * u
        # Unscaled for the backward pass; the zero blocks cost a quarter of the step GEMM and
        # save a separate projection of the input and an add a step.
        stacked = np.zeros((rows, inputs.k), dtype)
        stacked[: 2 * u, :u] = recurrent[:, : 2 * u].T
        stacked[: 3 * u, u : u + features] = kernel.T
        if reset_after:
            stacked[3 * u :, :u] = recurrent[:, 2 * u :].T
        if inputs.ones:
            bias = w["bias"]
            if reset_after:
                stacked[: 2 * u, -1] = bias[0, : 2 * u] + bias[1, : 2 * u]
                stacked[2 * u : 3 * u, -1] = bias[0, 2 * u :]
                stacked[3 * u :, -1] = bias[1, 2 * u :]
            else:
                stacked[:, -1] = bias
        # Keras's order already puts the σ gates z, r side by side; their rows halved make σ
        # one tanh and an affine a step (see LSTM.layout).
        sigmoid_by_tanh = isinstance(sigma, Sigmoid)
        forward_stacked = stacked
        if sigmoid_by_tanh:
            forward_stacked = stacked.copy()
            forward_stacked[: 2 * u] *= 0.5
        recurrent_h_t = None if reset_after else np.ascontiguousarray(recurrent[:, 2 * u :].T)

        n_steps = time if record else 1
        # Every step's GEMM output; its candidate rows become the candidate's pre-activation.
        pre = ctx.buffer("z", (n_steps, rows, batch), dtype)
        uses_z = sigma.uses_input or g.uses_input
        gates = ctx.buffer("gates", (n_steps, 3 * u, batch), dtype) if record and uses_z else pre
        # Without reset_after: r * h_{t-1} of every step, for the recurrent kernel's gradient.
        rh = None if reset_after else ctx.buffer("rh", (u, n_steps, batch), dtype)
        scratch = ctx.buffer("scratch", (u, batch), dtype)
        for t in range(time):
            r0, r1 = inputs.slots(t)
            n = t if record else 0
            p, a = pre[n], gates[n]
            np.matmul(forward_stacked, inputs.block(t, r0), out=p)
            if sigmoid_by_tanh:
                s = a[: 2 * u]
                np.tanh(p[: 2 * u], out=s)
                s *= 0.5
                s += 0.5
            else:
                activate(sigma, p[: 2 * u], a[: 2 * u], 2)
            update, reset, candidate = a[:u], a[u : 2 * u], a[2 * u : 3 * u]
            if reset_after:
                np.multiply(reset, p[3 * u :], out=scratch)
            else:
                np.multiply(reset, inputs.seen(r0), out=rh[:, n])
                np.matmul(recurrent_h_t, rh[:, n], out=scratch)
            p[2 * u : 3 * u] += scratch
            activate(g, p[2 * u : 3 * u], candidate)
            # h_t = h~ + z * (h_{t-1} - h~), the same mix with one product.
            h_new = hs[:, r1]
            np.subtract(hs[:, r0], candidate, out=h_new)
            h_new *= update
            h_new += candidate
            inputs.finish_step(t, r0, r1)
        finals = [inputs.last_h()]
        output = inputs.sequence() if self.return_sequences else finals[0]
        ys = [output, *finals] if self.return_state else [output]
        if not record:
            return ys, no_backprop

        factors = ctx.buffer("factors", (time, rows, batch), dtype)
        d_pre = ctx.buffer("d_pre", (rows, time, batch), dtype)
        other = ctx.buffer("other", (time, u, batch), dtype)
        need_dx = ctx.need_dx

        def prepare(lo, hi):
            """Every factor that does not depend on the incoming gradient dh, for steps lo..hi:
                dz_z = dh * (h_{t-1} - h~) σ'(z)      dz_h = dh * (1 - z) g'(h~)
                reset_after:  dz_r = dz_h * rec_h σ'(r), and the recurrent part's gradient
                              is dz_h * r;
                else:         dz_r = (recurrent_h @ dz_h) * h_{t-1} σ'(r).
            σ' or g' is 1 for an activation that is not elementwise: the step applies its
            backward, and then dz_r and the recurrent part's gradient are made from dz_h."""
            a, p, fs, o = gates[lo:hi], pre[lo:hi], factors[lo:hi], other[lo:hi]
            update, reset, candidate = a[:, :u], a[:, u : 2 * u], a[:, 2 * u : 3 * u]
            derivative(sigma, p[:, : 2 * u], a[:, : 2 * u], fs[:, : 2 * u])
            derivative(g, p[:, 2 * u : 3 * u], candidate, fs[:, 2 * u : 3 * u])
            np.subtract(1.0, update, out=o)
            fs[:, 2 * u : 3 * u] *= o
            np.subtract(hs[:, lo:hi].transpose(1, 0, 2), candidate, out=o)
            fs[:, :u] *= o
            if reset_after:
                fs[:, u : 2 * u] *= p[:, 3 * u :]
                if g.elementwise:
                    fs[:, u : 2 * u] *= fs[:, 2 * u : 3 * u]
                    np.multiply(fs[:, 2 * u : 3 * u], reset, out=fs[:, 3 * u :])
                else:
                    np.copyto(fs[:, 3 * u :], reset)
            else:
                fs[:, u : 2 * u] *= inputs.xh[:u, lo:hi].transpose(1, 0, 2)

        def backprop(dys):
            (dh,), d_sequence = state_grads(self, dys, batch, dtype)
            recurrent_t = np.ascontiguousarray(stacked[:, :u].T)
            d_seen = np.empty((u, batch), dtype)
            d_rh = None if reset_after else np.empty((u, batch), dtype)
            blocks = d_pre.reshape(rows // u, u, time, batch)
            for t in backward_steps(time, batch * rows * dtype.itemsize, prepare):
                if d_sequence is not None:
                    dh += d_sequence[t]
                carried = None if steps is None else split_carry(dh, steps[t])
                reset = gates[t, u : 2 * u]
                d_h = d_pre[2 * u : 3 * u, t]
                if reset_after and g.elementwise:
                    np.multiply(dh, factors[t].reshape(4, u, batch), out=blocks[:, :, t])
                elif reset_after:
                    np.multiply(dh, factors[t, :u], out=d_pre[:u, t])
                    np.multiply(dh, factors[t, 2 * u : 3 * u], out=d_h)
                    backprop_gates(g, pre[t, 2 * u : 3 * u], gates[t, 2 * u :], d_h)
                    np.multiply(d_h, factors[t, u : 2 * u], out=d_pre[u : 2 * u, t])
                    np.multiply(d_h, factors[t, 3 * u :], out=d_pre[3 * u :, t])
                else:
                    np.multiply(dh, factors[t, :u], out=d_pre[:u, t])
                    np.multiply(dh, factors[t, 2 * u :], out=d_h)
                    if not g.elementwise:
                        backprop_gates(g, pre[t, 2 * u :], gates[t, 2 * u :], d_h)
                    np.matmul(recurrent[:, 2 * u :], d_h, out=d_rh)
                    np.multiply(d_rh, factors[t, u : 2 * u], out=d_pre[u : 2 * u, t])
                if not sigma.elementwise:
                    backprop_gates(sigma, pre[t, : 2 * u], gates[t, : 2 * u], d_pre[: 2 * u, t], 2)
                np.matmul(recurrent_t, d_pre[:, t], out=d_seen)
                if not reset_after:
                    d_rh *= reset
                    d_seen += d_rh
                if inputs.keep_ht is not None:
                    d_seen *= inputs.keep_ht
                dh *= gates[t, :u]
                dh += d_seen
                if carried is not None:
                    dh += carried
            d_stacked = inputs.weight_grad(d_pre)
            if reset_after:
                d_recurrent_h = d_stacked[3 * u :, :u].T
            else:
                d_h = d_pre[2 * u :].reshape(u, -1)
                d_recurrent_h = np.matmul(rh.reshape(u, -1), d_h.T)
            grads = {
                "kernel": np.ascontiguousarray(d_stacked[: 3 * u, u : u + features].T),
                "recurrent_kernel": np.concatenate(
                    [d_stacked[: 2 * u, :u].T, d_recurrent_h], axis=1
                ),
            }
            if inputs.ones:
                d_bias = d_stacked[:, -1]
                if reset_after:
                    grads["bias"] = np.stack(
                        [d_bias[: 3 * u], np.concatenate([d_bias[: 2 * u], d_bias[3 * u :]])]
                    )
                else:
                    grads["bias"] = d_bias.copy()
            return [inputs.input_grad(stacked, d_pre) if need_dx else None], grads

        return ys, backprop
