"""Numerical gradient checks: central differences in float64 against the analytic backward."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kerspec.layers import Context


def derivative(f: Callable[[], float], x: np.ndarray, at: tuple, eps: float) -> float:
    """d f / d x[at] by a central difference, perturbing x in place and putting it back."""
    old = x[at]
    x[at] = old + eps
    up = f()
    x[at] = old - eps
    down = f()
    x[at] = old
    return (up - down) / (2 * eps)


def numerical_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, one element at a time."""
    grad = np.zeros_like(x, dtype=np.float64)
    for at in np.ndindex(x.shape):
        grad[at] = derivative(f, x, at, eps)
    return grad


def check_grads(
    forward: Callable[[], tuple[np.ndarray, Callable]],
    wrt: dict[str, np.ndarray],
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
) -> None:
    """Check every gradient of `forward` against central differences.

    `forward()` computes from the arrays in `wrt` (read at call time, so perturbing them in place
    changes the result) and returns `(y, backprop)`; `backprop(dy)` returns a dict with a gradient
    for every key of `wrt`. The scalar checked is `sum(y * r)` for a random cotangent `r`: an
    all-ones `r` would hide a wrong softmax Jacobian, whose rows sum to zero.
    """
    for name, array in wrt.items():
        assert array.dtype == np.float64, f"{name} must be float64 for a gradient check"
    y, backprop = forward()
    r = np.random.default_rng(seed).standard_normal(np.shape(y))
    analytic = backprop(r.copy())
    for name, array in wrt.items():
        numeric = numerical_grad(lambda: float(np.sum(forward()[0] * r)), array, eps)
        np.testing.assert_allclose(
            analytic[name], numeric, rtol=rtol, atol=atol, err_msg=f"gradient of {name}"
        )


def check_model_grads(model, xs):
    """Every weight's gradient through the whole plan (one output) against central differences."""
    wrt = {f"{o}/{n}": w for o, ws in model.params.items() for n, w in ws.items()}

    def forward():
        ctx = Context(training=True, rng=np.random.default_rng(0))
        run = model.plan.forward(model.params, xs, ctx, record=True)
        (y,) = run.outputs

        def backprop(dy):
            grads = model.plan.backward(run.tape, [dy])
            return {f"{o}/{n}": g for o, gs in grads.items() for n, g in gs.items()}

        return y, backprop

    check_grads(forward, wrt)
