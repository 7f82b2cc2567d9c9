"""W1 trained by plain NumPy: no framework, the step written out by hand for this one model.

The yardstick for the target "W1 training reaches 70% of numpy's GEMM rate": what any NumPy
program can reach on the machine, since a general engine can only add to it. Everything here is
as lean as NumPy allows: buffers allocated once, `out=` everywhere, bias and ReLU in place, the
softmax-crossentropy gradient as `p - y`, ReLU's gradient as one multiply by `y > 0`, no input
gradient for the first layer, Adam in place with one scratch array, the batch gathered with
`np.take(..., mode="clip")` into a fixed buffer (mode "raise" copies through a buffer: 3x
slower). It does what kerspec's W1 epoch does (shuffle, batches of 128, Keras's Glorot-uniform
kernels and zero biases, Adam 1e-3 with epsilon 1e-7) and nothing more: no metrics, no
callbacks, the loss only summed.
"""

from __future__ import annotations

import time

import numpy as np

F32 = np.float32


class NumpyW1:
    def __init__(self, x: np.ndarray, labels: np.ndarray, layers, batch: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.x, self.batch = x, batch
        classes = layers[-1][1]
        self.y = np.eye(classes, dtype=F32)[labels]
        self.kernels, self.biases = [], []
        for n, k in layers:
            limit = np.sqrt(6.0 / (n + k))
            self.kernels.append(rng.uniform(-limit, limit, (n, k)).astype(F32))
            self.biases.append(np.zeros(k, F32))
        self.weights = [w for pair in zip(self.kernels, self.biases) for w in pair]
        self.grads = [np.empty_like(w) for w in self.weights]
        self.m = [np.zeros_like(w) for w in self.weights]
        self.v = [np.zeros_like(w) for w in self.weights]
        self.scratch = [np.empty_like(w) for w in self.weights]
        self.xb = np.empty((batch, x.shape[1]), F32)
        self.yb = np.empty((batch, classes), F32)
        self.acts = [np.empty((batch, k), F32) for _, k in layers]
        self.deltas = [np.empty((batch, k), F32) for _, k in layers]
        self.row = np.empty((batch, 1), F32)
        self.order_rng = np.random.default_rng(seed)
        self.step = 0

    def train_epoch(self) -> tuple[float, float]:
        """One shuffled epoch; (seconds, mean loss). Full batches only, as 16,384 / 128 is."""
        start = time.perf_counter()
        order = self.order_rng.permutation(len(self.x))
        total = 0.0
        for begin in range(0, len(order) - self.batch + 1, self.batch):
            index = order[begin : begin + self.batch]
            np.take(self.x, index, axis=0, out=self.xb, mode="clip")
            np.take(self.y, index, axis=0, out=self.yb, mode="clip")
            total += self._step()
        return time.perf_counter() - start, total / (len(order) // self.batch)

    def _step(self) -> float:
        kernels, biases, acts, deltas = self.kernels, self.biases, self.acts, self.deltas
        last = len(kernels) - 1
        inputs = self.xb
        for i, (kernel, bias) in enumerate(zip(kernels, biases)):
            out = acts[i]
            np.matmul(inputs, kernel, out=out)
            out += bias
            if i < last:
                np.maximum(out, 0, out=out)
            inputs = out
        p = acts[last]
        np.max(p, axis=1, keepdims=True, out=self.row)
        p -= self.row
        np.exp(p, out=p)
        np.sum(p, axis=1, keepdims=True, out=self.row)
        p /= self.row
        loss = -float(np.log(np.maximum(p[self.yb > 0], 1e-7)).mean())
        d = deltas[last]
        np.subtract(p, self.yb, out=d)
        d *= F32(1.0 / self.batch)
        for i in range(last, -1, -1):
            below = acts[i - 1] if i else self.xb
            np.matmul(below.T, d, out=self.grads[2 * i])
            np.sum(d, axis=0, out=self.grads[2 * i + 1])
            if i:
                d_below = np.matmul(d, kernels[i].T, out=deltas[i - 1])
                np.multiply(d_below, below > 0, out=d_below)
                d = d_below
        self._adam()
        return loss

    def _adam(self, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7) -> None:
        self.step += 1
        b1, b2 = F32(beta_1), F32(beta_2)
        alpha = F32(lr) * np.sqrt(1 - b2 ** F32(self.step)) / (1 - b1 ** F32(self.step))
        for w, g, m, v, s in zip(self.weights, self.grads, self.m, self.v, self.scratch):
            np.square(g, out=s)
            v *= b2
            s *= 1 - b2
            v += s
            m *= b1
            g *= 1 - b1
            m += g
            np.sqrt(v, out=s)
            s += F32(epsilon)
            np.divide(m, s, out=s)
            s *= alpha
            w -= s
