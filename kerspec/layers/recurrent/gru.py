"""GRU on the feature-major scan (steps.py), gates in Keras's order z, r, h."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from kerspec.activations import Sigmoid
from kerspec.layers.base import LAYERS
from kerspec.layers.recurrent.base import Gated, split_carry
from kerspec.layers.recurrent.steps import (
    StepInputs,
    activate,
    backprop_gates,
    backward_steps,
    derivative,
    no_backprop,
    state_grads,
)


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
                    # g's backward is no factor: dz_h first, then r's gradient and the
                    # recurrent part's from it.
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
