"""LSTM on the feature-major scan (steps.py): weights in Keras's gate order i, f, c, o, their
rows reordered for the steps (`LSTM.layout`)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import PositiveInt

from kerspec.activations import Sigmoid, Tanh
from kerspec.initializers import Initializer
from kerspec.layers.base import LAYERS
from kerspec.layers.recurrent.base import Gated, hold, split_carry
from kerspec.layers.recurrent.steps import (
    StepInputs,
    activate,
    backprop_gates,
    backward_steps,
    derivative,
    keras_order,
    no_backprop,
    state_grads,
)


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
        """The forward's gate rows: (order, scale), internal row j = Keras column
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
