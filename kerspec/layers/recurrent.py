"""Recurrent layers: SimpleRNN, LSTM and GRU, with Keras 3's arguments, weight layouts and math.

SimpleRNN, GRU (and an LSTM whose activations are not elementwise) run batch-major. The input
projection of all time steps is one matmul before the loop (`zx = x @ kernel + bias` over
(time * batch, features)); the loop over time, the only Python loop, does one fused matmul per
step (`h @ recurrent_kernel`, all gates at once) and the gate nonlinearities. Backpropagation
through time runs the loop in reverse, storing the pre-activation gradients of every step; the
kernel, recurrent kernel, bias and input gradients are then each one matmul or sum over all
steps. Arrays inside are time-major: step t reads `zx[t]`, a contiguous (batch, gates * units)
block, and the states live in (time + 1, batch, units) arrays whose row 0 is the zero initial
state, so step t reads row t and writes row t + 1 and nothing else.

The LSTM with elementwise activations (every usual one) runs feature-major instead, each step's
arrays (rows, batch): see `LSTM._forward_feature_major`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from kerspec.activations import ACTIVATIONS, Sigmoid, Tanh
from kerspec.constraints import CONSTRAINTS
from kerspec.initializers import INITIALIZERS, Initializer
from kerspec.layers.base import LAYERS, Context, Layer, ShapeError, WeightSpec, format_shape
from kerspec.regularizers import REGULARIZERS

ActivationRef = ACTIVATIONS.ref()
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


def keep_mask(
    rng: np.random.Generator, rate: float, shape: tuple[int, ...], dtype
) -> np.ndarray | None:
    """A dropout mask: 0 with probability `rate`, else 1 / (1 - rate); None when `rate` is 0."""
    if rate == 0.0:
        return None
    keep = 1.0 - rate
    mask = (rng.random(shape, dtype=np.float32) < keep).astype(dtype)
    mask *= 1.0 / keep
    return mask


def hold(new: np.ndarray, old: np.ndarray, step: np.ndarray) -> None:
    """Where `step` is 0 (a masked step), put the previous state back: new = old + step*(new-old)."""
    new -= old
    new *= step
    new += old


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


def derivative(activation, z: np.ndarray, a: np.ndarray, out: np.ndarray) -> None:
    """An elementwise activation's derivative at every point into `out`, from its output `a`
    (and input `z`): a (1 - a) for sigmoid, 1 - a² for tanh, else its backward of ones."""
    if isinstance(activation, Sigmoid):
        np.subtract(1.0, a, out=out)
        out *= a
    elif isinstance(activation, Tanh):
        np.multiply(a, a, out=out)
        np.subtract(1.0, out, out=out)
    else:
        out[...] = activation.backward(z, a, np.ones(a.shape, a.dtype))


def gru_recurrent_grads(
    dz: np.ndarray,
    d_rec: np.ndarray | None,
    seen: np.ndarray,
    rh: np.ndarray | None,
    with_bias: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The end of both GRU scans' backward: (dz, d recurrent_kernel, d recurrent bias or None)
    from every step's gradients. With reset_after, `d_rec` is the gradient of every step's
    recurrent projection; without, `rh` holds every step's r * h_{t-1}, which the candidate's
    block of the recurrent kernel multiplies."""
    width = dz.shape[-1]
    u = width // 3
    seen2 = seen.reshape(-1, u)
    if d_rec is not None:
        d_rec2 = d_rec.reshape(-1, width)
        d_bias = column_sums(d_rec2) if with_bias else None
        return dz, np.matmul(seen2.T, d_rec2), d_bias
    dz2 = dz.reshape(-1, width)
    d_recurrent = np.concatenate(
        [
            np.matmul(seen2.T, dz2[:, : 2 * u]),
            np.matmul(rh.reshape(-1, u).T, dz2[:, 2 * u :]),
        ],
        axis=1,
    )
    return dz, d_recurrent, None


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

    def layout(self, dtype) -> tuple[np.ndarray | None, np.ndarray | None]:
        """How `scan` wants the gate columns: (order, scale) with internal column j = Keras
        column order[j] times scale[j]. The scale applies to the forward projection only: the
        gradients `scan` returns are for the unscaled columns, in internal order; forward puts
        them back into Keras's order. (None, None): Keras's layout as it is."""
        return None, None

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

        order, scale = self.layout(dtype)
        if order is not None:
            # A copy per forward call (not per step); `kernel` is what dx needs, unscaled.
            kernel = kernel[:, order]
        forward_kernel = kernel if scale is None else kernel * scale
        forward_bias = None
        if self.use_bias:
            forward_bias = w["bias"]
            # GRU with reset_after keeps the input and recurrent biases as the rows of one weight.
            forward_bias = forward_bias[0] if forward_bias.ndim == 2 else forward_bias
            if order is not None:
                forward_bias = forward_bias[order]
            if scale is not None:
                forward_bias = forward_bias * scale
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
            np.matmul(x_ones, np.concatenate([forward_kernel, forward_bias[None]]), out=zx)
        elif features == 1:
            # An outer product: a broadcast multiply is several times faster than a K=1 GEMM.
            np.multiply(x2, forward_kernel, out=zx)
        else:
            np.matmul(x2, forward_kernel, out=zx)
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
            if order is not None:
                d_kernel, d_recurrent = keras_order(d_kernel, order), keras_order(d_recurrent, order)
                d_bias = None if d_bias is None else keras_order(d_bias, order)
                if d_recurrent_bias is not None:
                    d_recurrent_bias = keras_order(d_recurrent_bias, order)
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

    def fast(self) -> bool:
        # The fast scan folds each activation's derivative into factors computed for all steps
        # at once, which takes elementwise activations; softmax-like ones run the general scan.
        return self.activation.elementwise and self.recurrent_activation.elementwise


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

    def layout(self, dtype):
        if not self.fast():
            return None, None
        # Internally [o, i, f, c]: the three σ gates side by side (one activation call a step on
        # a contiguous block), and i, f, c together, the blocks whose gradient is dc times a
        # factor (one broadcast multiply a step in the backward pass).
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
        if not self.fast():
            return super().forward(w, xs, ctx)
        return self._forward_feature_major(w, xs[0], ctx)

    def _forward_feature_major(self, w, x, ctx):
        """The LSTM with elementwise activations, feature-major: every per-step array is
        (rows, batch), so each step is one GEMM, `stacked (4 units, k) @ [h_{t-1}; x_t; 1] (k,
        batch)`, and elementwise passes over contiguous gate blocks. Batch-major, the gates are
        column slices of a (batch, 4 units) row, and NumPy runs such strided 2-D passes several
        times slower than contiguous ones; OpenBLAS also runs the recurrent product faster in
        this orientation (W4: 45 against 62 µs a step).

        The input projection rides in the step's GEMM (x_t and a row of ones for the bias under
        h_{t-1}), and the stacked operands of all steps stay side by side in one (k, time + 1,
        batch) array, so the kernel, recurrent kernel and bias gradients are one GEMM over all
        steps and the input gradient another."""
        batch, time, features = x.shape
        dtype = x.dtype
        u = self.units
        width = 4 * u
        g, sigma = self.activation, self.recurrent_activation
        keep_x, keep_h, steps = self.dropout_and_steps(x, ctx)
        if steps is not None:
            steps = steps.transpose(0, 2, 1)  # (time, 1, batch): a row per step

        order, scale = self.layout(dtype)
        ones = int(self.use_bias)
        k = u + features + ones
        # Rows in the internal gate order, columns [recurrent | kernel | bias]; unscaled for
        # the backward pass, which differentiates with respect to the true pre-activations.
        stacked = np.empty((width, k), dtype)
        stacked[:, :u] = w["recurrent_kernel"][:, order].T
        stacked[:, u : u + features] = w["kernel"][:, order].T
        if ones:
            stacked[:, u + features] = w["bias"][order]
        forward_stacked = stacked if scale is None else stacked * scale[:, None]
        sigmoid_by_tanh = scale is not None
        one_tanh = sigmoid_by_tanh and isinstance(g, Tanh)

        # A backward pass will follow (training, gradient checks): keep every step. Otherwise two
        # of each are enough, alternating, plus every h when the sequence is returned.
        record = getattr(ctx, "record", True)
        keep_sequence = record or self.return_sequences
        slots = time + 1 if keep_sequence else 2
        # Column block t: [h_{t-1} (times the recurrent dropout mask); x_t; 1].
        xh = ctx.buffer("xh", (k, slots, batch), dtype)
        xh[:u, 0] = 0.0
        if ones:
            xh[u + features] = 1.0
        ordered = x[:, ::-1] if self.go_backwards else x
        keep_xt = None if keep_x is None else keep_x.T
        if keep_sequence:
            xs_rows = xh[u : u + features, :time]
            xs_rows[...] = ordered.transpose(2, 1, 0)
            if keep_xt is not None:
                xs_rows *= keep_xt[:, None, :]
        # The real h of every step; the same memory as xh's h rows unless dropout scales those.
        keep_ht = None if keep_h is None else np.ascontiguousarray(keep_h.T)
        if keep_ht is None:
            hs = xh[:u]
        else:
            hs = ctx.buffer("h", (u, slots, batch), dtype)
            hs[:, 0] = 0.0
        n_gates = time if record else 1
        z = ctx.buffer("z", (n_gates, width, batch), dtype)
        uses_z = sigma.uses_input or g.uses_input
        gates = ctx.buffer("gates", z.shape, dtype) if record and uses_z else z
        cs = ctx.buffer("c", (time + 1 if record else 2, u, batch), dtype)
        cs[0] = 0.0
        g_cs = ctx.buffer("g_c", (n_gates, u, batch), dtype)
        ic = ctx.buffer("ic", (u, batch), dtype)
        for t in range(time):
            r0, r1 = (t, t + 1) if keep_sequence else (t % 2, 1 - t % 2)
            c0, c1 = (t, t + 1) if record else (t % 2, 1 - t % 2)
            n = t if record else 0
            if not keep_sequence:
                np.copyto(xh[u : u + features, r0], ordered[:, t].T)
                if keep_xt is not None:
                    xh[u : u + features, r0] *= keep_xt
            zt, a = z[n], gates[n]
            np.matmul(forward_stacked, xh[:, r0], out=zt)
            if one_tanh:
                np.tanh(zt, out=a)
            else:
                if sigmoid_by_tanh:
                    np.tanh(zt[: 3 * u], out=a[: 3 * u])
                else:
                    sigma.forward(zt[: 3 * u], out=a[: 3 * u])
                g.forward(zt[3 * u :], out=a[3 * u :])
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
            g.forward(c_new, out=gc)
            h_new = hs[:, r1]
            np.multiply(o, gc, out=h_new)
            if steps is not None:
                hold(h_new, hs[:, r0], steps[t])
            if keep_ht is not None:
                np.multiply(h_new, keep_ht, out=xh[:u, r1])
        last = time if keep_sequence else time % 2
        c_last = cs[time if record else time % 2]
        finals = [np.ascontiguousarray(hs[:, last].T), np.ascontiguousarray(c_last.T)]
        output = hs[:, 1:].transpose(2, 1, 0) if self.return_sequences else finals[0]
        ys = [output, *finals] if self.return_state else [output]
        if not record:

            def no_backprop(dys):
                raise RuntimeError(f"{self.type} ran with ctx.record False: no backward pass")

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
            with σ' and g' from each activation's backward of ones (elementwise)."""
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
            dh = np.zeros((u, batch), dtype)
            dc = np.zeros((u, batch), dtype)
            if self.return_state:
                for d_state, dy in zip((dh, dc), dys[1:]):
                    if dy is not None:
                        d_state += dy.T
            d_sequence = None
            if self.return_sequences:
                if dys[0] is not None:
                    d_sequence = np.ascontiguousarray(dys[0].transpose(1, 2, 0))
            elif dys[0] is not None:
                dh += dys[0].T
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
                dc += scratch
                np.multiply(dh, factors[t, :u], out=dz[:u, t])
                np.multiply(dc, factors[t, u:].reshape(3, u, batch), out=dz3[:, :, t])
                dc *= gates[t, 2 * u : 3 * u]
                np.matmul(recurrent_t, dz[:, t], out=dh)
                if keep_ht is not None:
                    dh *= keep_ht
                if carried_h is not None:
                    dh += carried_h
                    dc += carried_c
            dz2 = dz.reshape(width, time * batch)
            # Kernel, recurrent kernel and bias at once: [h_{t-1}; x_t; 1] of every step.
            d_stacked = np.matmul(dz2, xh[:, :time].reshape(k, time * batch).T)
            grads = {
                "kernel": keras_order(d_stacked[:, u : u + features].T, order),
                "recurrent_kernel": keras_order(d_stacked[:, :u].T, order),
            }
            if ones:
                grads["bias"] = keras_order(d_stacked[:, u + features], order)
            if not need_dx:
                return [None], grads
            dxt = np.matmul(stacked[:, u : u + features].T, dz2).reshape(features, time, batch)
            if keep_xt is not None:
                dxt *= keep_xt[:, None, :]
            dx = dxt.transpose(2, 1, 0)
            return [dx[:, ::-1] if self.go_backwards else dx], grads

        return ys, backprop

    def scan(self, w, zx, keep_h, ctx, steps):
        """The general scan, batch-major in Keras's gate order, for activations that are not
        elementwise (the feature-major forward above takes every other LSTM)."""
        time, batch, width = zx.shape
        u = self.units
        dtype = zx.dtype
        recurrent = w["recurrent_kernel"]
        g, sigma = self.activation, self.recurrent_activation
        hs, seen = self.states(ctx, time, batch, dtype, keep_h)
        cs = ctx.buffer("c", (time + 1, batch, u), dtype)
        cs[0] = 0.0
        # The gates after their activations and g(c_t): what the backward pass differentiates.
        gates = ctx.buffer("gates", (time, batch, width), dtype)
        g_cs = ctx.buffer("g_c", (time, batch, u), dtype)
        rec = ctx.buffer("rec", (batch, width), dtype)
        for t in range(time):
            if keep_h is not None:
                np.multiply(hs[t], keep_h, out=seen[t])
            z, a = zx[t], gates[t]
            np.matmul(seen[t], recurrent, out=rec)
            z += rec
            a[:, : 2 * u] = sigma.forward(z[:, : 2 * u])
            a[:, 2 * u : 3 * u] = g.forward(z[:, 2 * u : 3 * u])
            a[:, 3 * u :] = sigma.forward(z[:, 3 * u :])
            np.multiply(a[:, u : 2 * u], cs[t], out=cs[t + 1])
            cs[t + 1] += a[:, :u] * a[:, 2 * u : 3 * u]
            g_cs[t] = g.forward(cs[t + 1])
            np.multiply(a[:, 3 * u :], g_cs[t], out=hs[t + 1])
            if steps is not None:
                hold(cs[t + 1], cs[t], steps[t])
                hold(hs[t + 1], hs[t], steps[t])

        def scan_backprop(d_sequence, d_finals):
            dz = np.empty_like(zx)
            dh, dc = d_finals
            da = np.empty((batch, width), dtype)
            for t in reversed(range(time)):
                if d_sequence is not None:
                    dh += d_sequence[t]
                carried_h = carried_c = None
                if steps is not None:
                    carried_h, carried_c = split_carry(dh, steps[t]), split_carry(dc, steps[t])
                z, a, d = zx[t], gates[t], dz[t]
                i, f, c_new, o = a[:, :u], a[:, u : 2 * u], a[:, 2 * u : 3 * u], a[:, 3 * u :]
                np.multiply(dh, g_cs[t], out=da[:, 3 * u :])
                dh *= o
                dc += g.backward(cs[t + 1], g_cs[t], dh)
                np.multiply(dc, c_new, out=da[:, :u])
                np.multiply(dc, cs[t], out=da[:, u : 2 * u])
                np.multiply(dc, i, out=da[:, 2 * u : 3 * u])
                d[:, : 2 * u] = sigma.backward(z[:, : 2 * u], a[:, : 2 * u], da[:, : 2 * u])
                d[:, 2 * u : 3 * u] = g.backward(z[:, 2 * u : 3 * u], c_new, da[:, 2 * u : 3 * u])
                d[:, 3 * u :] = sigma.backward(z[:, 3 * u :], o, da[:, 3 * u :])
                dc *= f
                dh = np.matmul(d, recurrent.T)
                if keep_h is not None:
                    dh *= keep_h
                if carried_h is not None:
                    dh += carried_h
                    dc += carried_c
            d_recurrent = np.matmul(seen.reshape(-1, u).T, dz.reshape(-1, width))
            return dz, d_recurrent, None

        return hs, [hs[time], cs[time]], scan_backprop


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

    def layout(self, dtype):
        if not (self.fast() and isinstance(self.recurrent_activation, Sigmoid)):
            return None, None
        # Keras's order already puts the σ gates z, r side by side; their weights halved once
        # per forward make σ one tanh and an affine a step (see LSTM.layout).
        scale = np.ones(3 * self.units, dtype)
        scale[: 2 * self.units] = 0.5
        return None, scale

    def scan(self, w, zx, keep_h, ctx, steps):
        if not self.fast():
            return self.scan_keras_order(w, zx, keep_h, ctx, steps)
        time, batch, width = zx.shape
        u = self.units
        dtype = zx.dtype
        g, sigma = self.activation, self.recurrent_activation
        reset_after = self.reset_after
        _, scale = self.layout(dtype)
        sigmoid_by_tanh = scale is not None
        recurrent = w["recurrent_kernel"]
        forward_recurrent = recurrent if scale is None else recurrent * scale
        recurrent_bias = w["bias"][1] if reset_after and self.use_bias else None
        forward_bias = recurrent_bias
        if recurrent_bias is not None and scale is not None:
            forward_bias = recurrent_bias * scale
        record = getattr(ctx, "record", True)
        keep_sequence = record or self.return_sequences or keep_h is not None
        hs, seen = self.states(ctx, time if keep_sequence else 1, batch, dtype, keep_h)
        uses_z = sigma.uses_input or g.uses_input
        gates = ctx.buffer("gates", zx.shape, dtype) if record and uses_z else zx
        kept = time if record else 1
        if reset_after:
            # Every step's recurrent projection h_{t-1} @ recurrent_kernel + b_h: its h block is
            # what r scales, which the backward pass needs.
            recs = ctx.buffer("rec", (kept, batch, width), dtype)
        else:
            # Contiguous copies of the two blocks that reset_after=False multiplies separately;
            # the candidate's block is never scaled.
            recurrent_zr = np.ascontiguousarray(forward_recurrent[:, : 2 * u])
            recurrent_h = np.ascontiguousarray(recurrent[:, 2 * u :])
            rec = ctx.buffer("rec", (batch, width), dtype)
            rh = ctx.buffer("rh", (kept, batch, u), dtype)  # r * h_{t-1}, every step's
        scratch = ctx.buffer("scratch", (batch, u), dtype)
        for t in range(time):
            r0, r1 = (t, t + 1) if keep_sequence else (t % 2, 1 - t % 2)
            k = t if record else 0
            if keep_h is not None:
                np.multiply(hs[r0], keep_h, out=seen[t])
                h_seen = seen[t]
            else:
                h_seen = hs[r0]
            z, a = zx[t], gates[t]
            if reset_after:
                rc = recs[k]
                np.matmul(h_seen, forward_recurrent, out=rc)
                if forward_bias is not None:
                    rc += forward_bias
                z[:, : 2 * u] += rc[:, : 2 * u]
            else:
                np.matmul(h_seen, recurrent_zr, out=rec[:, : 2 * u])
                z[:, : 2 * u] += rec[:, : 2 * u]
            if sigmoid_by_tanh:
                np.tanh(z[:, : 2 * u], out=a[:, : 2 * u])
                s = a[:, : 2 * u]
                s *= 0.5
                s += 0.5
            else:
                sigma.forward(z[:, : 2 * u], out=a[:, : 2 * u])
            update, reset, candidate = a[:, :u], a[:, u : 2 * u], a[:, 2 * u :]
            if reset_after:
                np.multiply(reset, rc[:, 2 * u :], out=scratch)
                z[:, 2 * u :] += scratch
            else:
                np.multiply(reset, h_seen, out=rh[k])
                np.matmul(rh[k], recurrent_h, out=rec[:, 2 * u :])
                z[:, 2 * u :] += rec[:, 2 * u :]
            g.forward(z[:, 2 * u :], out=candidate)
            # h_t = h~ + z * (h_{t-1} - h~), the same mix with one product.
            h_new = hs[r1]
            np.subtract(hs[r0], candidate, out=h_new)
            h_new *= update
            h_new += candidate
            if steps is not None:
                hold(h_new, hs[r0], steps[t])
        finals = [hs[time if keep_sequence else time % 2]]
        if not keep_sequence:
            hs = None
        if record:
            factors = ctx.buffer("factors", zx.shape, dtype)
            dz = ctx.buffer("dz", zx.shape, dtype)
            d_rec = ctx.buffer("d_rec", zx.shape, dtype) if reset_after else None
            rec_factors = ctx.buffer("rec_factors", zx.shape, dtype) if reset_after else None
            every = ctx.buffer("every", (time, batch, u), dtype)

        def scan_backprop(d_sequence, d_finals):
            # The factors that do not depend on the incoming gradient dh, for a block of steps
            # at once (a few calls a block instead of a dozen small ones per step):
            #   dz_z = dh * (h_{t-1} - h~) σ'(z)      dz_h = dh * (1 - z) g'(h~)
            #   reset_after:  dz_r = dz_h * rec_h σ'(r), and the recurrent projection's gradient
            #                 is dz with its h block times r;
            #   else:         dz_r = (dz_h @ recurrent_h.T) * h_{t-1} σ'(r).
            gates3 = gates.reshape(time, batch, 3, u)
            update, reset = gates3[:, :, 0], gates3[:, :, 1]
            f3 = factors.reshape(time, batch, 3, u)
            r3 = rec_factors.reshape(time, batch, 3, u) if reset_after else None

            def prepare(lo, hi):
                a, fs, fs3 = gates[lo:hi], factors[lo:hi], f3[lo:hi]
                candidate, other = gates3[lo:hi, :, 2], every[lo:hi]
                derivative(sigma, zx[lo:hi, :, : 2 * u], a[..., : 2 * u], fs[..., : 2 * u])
                derivative(g, zx[lo:hi, :, 2 * u :], candidate, fs3[:, :, 2])
                np.subtract(1.0, update[lo:hi], out=other)
                fs3[:, :, 2] *= other
                np.subtract(hs[lo:hi], candidate, out=other)
                fs3[:, :, 0] *= other
                if reset_after:
                    fs3[:, :, 1] *= recs[lo:hi, :, 2 * u :]
                    fs3[:, :, 1] *= fs3[:, :, 2]
                    np.copyto(rec_factors[lo:hi], fs)
                    r3[lo:hi, :, 2] *= reset[lo:hi]
                else:
                    fs3[:, :, 1] *= seen[lo:hi]

            dz3 = dz.reshape(time, batch, 3, u)
            dh = d_finals[0]
            d_seen = np.empty((batch, u), dtype)
            if reset_after:
                d_rec3 = d_rec.reshape(time, batch, 3, u)
                recurrent_t = np.ascontiguousarray(recurrent.T)
            else:
                d_rh = np.empty((batch, u), dtype)
                recurrent_zr_t = np.ascontiguousarray(recurrent[:, : 2 * u].T)
                recurrent_h_t = np.ascontiguousarray(recurrent_h.T)
            for t in backward_steps(time, batch * width * gates.itemsize, prepare):
                if d_sequence is not None:
                    dh += d_sequence[t]
                carried = None if steps is None else split_carry(dh, steps[t])
                if reset_after:
                    np.multiply(dh[:, None, :], f3[t], out=dz3[t])
                    np.multiply(dh[:, None, :], r3[t], out=d_rec3[t])
                    np.matmul(d_rec[t], recurrent_t, out=d_seen)
                else:
                    # z and h blocks (0 and 2) in one strided multiply; r needs d_rh first.
                    np.multiply(dh[:, None, :], f3[t, :, ::2], out=dz3[t, :, ::2])
                    np.matmul(dz3[t, :, 2], recurrent_h_t, out=d_rh)
                    np.multiply(d_rh, f3[t, :, 1], out=dz3[t, :, 1])
                    np.matmul(dz[t, :, : 2 * u], recurrent_zr_t, out=d_seen)
                    d_rh *= reset[t]
                    d_seen += d_rh
                if keep_h is not None:
                    d_seen *= keep_h
                dh *= update[t]
                dh += d_seen
                if carried is not None:
                    dh += carried
            return gru_recurrent_grads(
                dz, d_rec, seen, None if reset_after else rh, recurrent_bias is not None
            )

        return hs, finals, scan_backprop

    def scan_keras_order(self, w, zx, keep_h, ctx, steps):
        """The general scan, for activations that are not elementwise."""
        time, batch, width = zx.shape
        u = self.units
        dtype = zx.dtype
        g, sigma = self.activation, self.recurrent_activation
        reset_after = self.reset_after
        recurrent = w["recurrent_kernel"]
        recurrent_bias = w["bias"][1] if reset_after and self.use_bias else None
        # Contiguous copies of the two blocks that reset_after=False multiplies separately.
        recurrent_zr = np.ascontiguousarray(recurrent[:, : 2 * u])
        recurrent_h = np.ascontiguousarray(recurrent[:, 2 * u :])
        hs, seen = self.states(ctx, time, batch, dtype, keep_h)
        gates = ctx.buffer("gates", (time, batch, width), dtype)
        # What the candidate's recurrent term is made of, per step: with reset_after the
        # projection h_{t-1} @ recurrent_kernel_h + b_h_h that r scales, else r * h_{t-1}.
        rh = ctx.buffer("rh", (time, batch, u), dtype)
        rec = ctx.buffer("rec", (batch, width), dtype)
        for t in range(time):
            if keep_h is not None:
                np.multiply(hs[t], keep_h, out=seen[t])
            z, a = zx[t], gates[t]
            if reset_after:
                np.matmul(seen[t], recurrent, out=rec)
                if recurrent_bias is not None:
                    rec += recurrent_bias
                z[:, : 2 * u] += rec[:, : 2 * u]
                a[:, : 2 * u] = sigma.forward(z[:, : 2 * u])
                rh[t] = rec[:, 2 * u :]
                z[:, 2 * u :] += a[:, u : 2 * u] * rh[t]
            else:
                np.matmul(seen[t], recurrent_zr, out=rec[:, : 2 * u])
                z[:, : 2 * u] += rec[:, : 2 * u]
                a[:, : 2 * u] = sigma.forward(z[:, : 2 * u])
                np.multiply(a[:, u : 2 * u], seen[t], out=rh[t])
                np.matmul(rh[t], recurrent_h, out=rec[:, 2 * u :])
                z[:, 2 * u :] += rec[:, 2 * u :]
            a[:, 2 * u :] = g.forward(z[:, 2 * u :])
            # h_t = h~ + z * (h_{t-1} - h~), the same mix with one product.
            np.subtract(hs[t], a[:, 2 * u :], out=hs[t + 1])
            hs[t + 1] *= a[:, :u]
            hs[t + 1] += a[:, 2 * u :]
            if steps is not None:
                hold(hs[t + 1], hs[t], steps[t])

        def scan_backprop(d_sequence, d_finals):
            dz = np.empty_like(zx)
            # With reset_after: the gradient of every step's recurrent projection (its h block
            # differs from dz's by the factor r), for one recurrent-kernel matmul after the loop.
            d_rec = np.empty_like(zx) if reset_after else None
            dh = d_finals[0]
            da = np.empty((batch, width), dtype)
            for t in reversed(range(time)):
                if d_sequence is not None:
                    dh += d_sequence[t]
                carried = None if steps is None else split_carry(dh, steps[t])
                z, a, d = zx[t], gates[t], dz[t]
                update, reset, candidate = a[:, :u], a[:, u : 2 * u], a[:, 2 * u :]
                np.subtract(hs[t], candidate, out=da[:, :u])
                da[:, :u] *= dh
                np.subtract(1.0, update, out=da[:, 2 * u :])
                da[:, 2 * u :] *= dh
                d[:, 2 * u :] = g.backward(z[:, 2 * u :], candidate, da[:, 2 * u :])
                if reset_after:
                    np.multiply(d[:, 2 * u :], rh[t], out=da[:, u : 2 * u])
                    d[:, : 2 * u] = sigma.backward(z[:, : 2 * u], a[:, : 2 * u], da[:, : 2 * u])
                    d_rec[t, :, : 2 * u] = d[:, : 2 * u]
                    np.multiply(d[:, 2 * u :], reset, out=d_rec[t, :, 2 * u :])
                    d_seen = np.matmul(d_rec[t], recurrent.T)
                else:
                    d_rh = np.matmul(d[:, 2 * u :], recurrent_h.T)
                    np.multiply(d_rh, seen[t], out=da[:, u : 2 * u])
                    d[:, : 2 * u] = sigma.backward(z[:, : 2 * u], a[:, : 2 * u], da[:, : 2 * u])
                    d_seen = np.matmul(d[:, : 2 * u], recurrent_zr.T)
                    d_rh *= reset
                    d_seen += d_rh
                if keep_h is not None:
                    d_seen *= keep_h
                dh *= update
                dh += d_seen
                if carried is not None:
                    dh += carried
            return gru_recurrent_grads(dz, d_rec, seen, rh, recurrent_bias is not None)

        return hs, [hs[time]], scan_backprop
