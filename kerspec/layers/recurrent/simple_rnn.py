"""SimpleRNN, batch-major: the input projection of all steps is one matmul before the loop, and
the loop, the only Python loop, does one recurrent matmul and the activation a step. Arrays
inside are time-major: step t reads `zx[t]`, a contiguous (batch, units) block, and the states
live in a (time + 1, batch, units) array whose row 0 is the zero initial state, so step t reads
row t and writes row t + 1 and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np

from kerspec.layers.base import LAYERS, Context
from kerspec.layers.recurrent.base import Recurrent, hold, split_carry

# scan_backprop(d_sequence, d_h) -> (dz, d recurrent_kernel): `d_sequence` is the time-major
# (time, batch, units) gradient of the returned sequence or None; `d_h` the final state's owned
# (batch, units) gradient; dz is (time, batch, units).
ScanBackprop = Callable[[np.ndarray | None, np.ndarray], tuple[np.ndarray, np.ndarray]]


def column_sums(a: np.ndarray) -> np.ndarray:
    """a.sum(axis=0) of a 2-D array as ones @ a: BLAS's gemv, faster than np.sum over the
    (time * batch) rows of a recurrent layer's gradients."""
    return np.matmul(np.ones(a.shape[0], a.dtype), a)


@LAYERS.register("SimpleRNN")
class SimpleRNN(Recurrent):
    """A fully connected RNN: `h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)`.

    Weights: kernel (features, units), recurrent_kernel (units, units), bias (units,).
    Outputs: [output] or, with return_state, [output, h].
    """

    type: Literal["SimpleRNN"] = "SimpleRNN"
    gates: ClassVar[int] = 1

    def forward(self, w, xs, ctx):
        x = xs[0]
        batch, time, features = x.shape
        dtype = x.dtype
        kernel = w["kernel"]
        width = kernel.shape[1]
        keep_x, keep_h, steps = self.dropout_and_steps(x, ctx)

        # A time-major copy, so that each step's projection is one contiguous block. With a bias,
        # a column of ones after the features and the bias as the kernel's last row: the bias
        # rides in the projection's GEMM instead of a pass over (time, batch, width) after it
        # (and OpenBLAS runs a 1-feature projection far faster as K=2 than as K=1).
        ones = int(self.use_bias)
        xt = ctx.buffer("x", (time, batch, features + ones), dtype)
        xt[..., :features] = (x[:, ::-1] if self.go_backwards else x).transpose(1, 0, 2)
        if keep_x is not None:
            xt[..., :features] *= keep_x
        x_ones = xt.reshape(time * batch, features + ones)
        x2 = x_ones[:, :features]
        zx = ctx.buffer("zx", (time * batch, width), dtype)
        if self.use_bias:
            xt[..., features] = 1.0
            np.matmul(x_ones, np.concatenate([kernel, w["bias"][None]]), out=zx)
        elif features == 1:
            # An outer product: a broadcast multiply is several times faster than a K=1 GEMM.
            np.multiply(x2, kernel, out=zx)
        else:
            np.matmul(x2, kernel, out=zx)
        hs, scan_backprop = self.scan(w, zx.reshape(time, batch, width), keep_h, ctx, steps)

        # In Keras the sequence comes out in the order it was read, reversed by go_backwards.
        h = hs[time]
        output = hs[1:].transpose(1, 0, 2) if self.return_sequences else h
        ys = [output, h] if self.return_state else [output]
        need_dx = ctx.need_dx

        def backprop(dys):
            d_h = np.zeros((batch, self.units), dtype)
            if self.return_state and dys[1] is not None:
                d_h += dys[1]
            d_sequence = None
            if self.return_sequences:
                d_sequence = None if dys[0] is None else dys[0].transpose(1, 0, 2)
            elif dys[0] is not None:
                d_h += dys[0]
            dz, d_recurrent = scan_backprop(d_sequence, d_h)
            dz2 = dz.reshape(time * batch, width)
            grads = {"kernel": np.matmul(x2.T, dz2), "recurrent_kernel": d_recurrent}
            if self.use_bias:
                grads["bias"] = column_sums(dz2)
            if not need_dx:
                return [None], grads
            dxt = np.matmul(dz2, kernel.T).reshape(time, batch, features)
            if keep_x is not None:
                dxt *= keep_x
            dx = dxt.transpose(1, 0, 2)
            return [dx[:, ::-1] if self.go_backwards else dx], grads

        return ys, backprop

    def scan(
        self,
        w: dict[str, np.ndarray],
        zx: np.ndarray,
        keep_h: np.ndarray | None,
        ctx: Context,
        steps: np.ndarray | None,
    ) -> tuple[np.ndarray, ScanBackprop]:
        """Run the steps over the time-major input projection `zx`, which becomes the
        pre-activations; return every h as (time + 1, batch, units) and the backward of the
        loop. `steps` (time, batch, 1) is 1 where a step is real and 0 where the mask says
        padding: there the state is carried over unchanged, as in Keras."""
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

        def scan_backprop(d_sequence, dh):
            dz = np.empty_like(zx)
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
            return dz, d_recurrent

        return hs, scan_backprop

    def states(self, ctx: Context, time: int, batch: int, dtype, keep_h: np.ndarray | None):
        """The h of every step, (time + 1, batch, units) with row 0 the zero initial state, and
        the previous states as the recurrent matmul sees them: row t is h_{t-1}, times the
        recurrent dropout mask when there is one (step t fills it), else a view of h."""
        hs = ctx.buffer("h", (time + 1, batch, self.units), dtype)
        hs[0] = 0.0
        if keep_h is None:
            return hs, hs[:-1]
        return hs, ctx.buffer("h_seen", (time, batch, self.units), dtype)
