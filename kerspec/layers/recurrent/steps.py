"""The feature-major scan LSTM and GRU share: each step's arrays are (rows, batch), a step is
one GEMM over the stacked [h_{t-1}; x_t; 1] (`StepInputs`) and passes over contiguous gate
blocks, and the weight gradients are one GEMM over all steps.

An elementwise activation's derivative is a factor computed for blocks of steps before the
backward loop reaches them (`derivative`, `backward_steps`); one that is not elementwise
(softmax) runs on each gate's (batch, units) transpose, forward and backward, at its step
(`activate`, `backprop_gates`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from kerspec.activations import Activation
from kerspec.layers.base import Context
from kerspec.layers.recurrent.base import Recurrent, hold


def keras_order(internal: np.ndarray, order: np.ndarray) -> np.ndarray:
    """A gradient with gate columns in a scan's internal order, back in Keras's order."""
    keras = np.empty_like(internal)
    keras[..., order] = internal
    return keras


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


def backprop_gates(
    act: Activation, x: np.ndarray, y: np.ndarray, d: np.ndarray, gates: int = 1
) -> None:
    """In place, `d` (gates * units, batch) from the gradient of act's output to that of its
    input, gate by gate as `activate` ran it, for an act that is not elementwise."""
    u = d.shape[0] // gates
    for j in range(0, gates * u, u):
        dt = d[j : j + u].T
        act.backward(x[j : j + u].T, y[j : j + u].T, dt, out=dt)


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
    recurrent product faster in this orientation."""

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
