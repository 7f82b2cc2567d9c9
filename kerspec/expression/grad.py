"""Stage 3, on every batch: forward values, then one reversed pass of vector-Jacobian products.

`evaluate` runs the tree on the inputs and keeps a tape of each node's vjp; its `backprop`
walks the tape backwards and sums the gradients reaching each node, so a sub-expression used
twice (`x * x`) gets both contributions.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from kerspec.activations import ACTIVATIONS, Activation
from kerspec.errors import ShapeError, format_shape
from kerspec.expression.shapes import permutation
from kerspec.expression.tree import REDUCTIONS, Node, Program


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `g` down to `shape`, undoing NumPy broadcasting."""
    if g.shape == shape:
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


# The functions that are also activations, by their activation name: their forward and
# derivative come from the activations catalog, so each formula has one home.
ACTIVATIONS_BY_FUNCTION = {
    "exp": "exponential",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "softplus": "softplus",
    "tanh": "tanh",
}

# The other element-wise functions: (forward(x), vjp(x, y, dy)), derivatives in terms of the
# output where that is cheaper.
ELEMENTWISE = {
    "abs": (np.abs, lambda x, y, dy: dy * np.sign(x)),
    "log": (np.log, lambda x, y, dy: dy / x),
    "sqrt": (np.sqrt, lambda x, y, dy: dy / (y + y)),
    "square": (np.square, lambda x, y, dy: dy * (x + x)),
    "sin": (np.sin, lambda x, y, dy: dy * np.cos(x)),
    "cos": (np.cos, lambda x, y, dy: -dy * np.sin(x)),
    "neg": (np.negative, lambda x, y, dy: -dy),
}


@functools.cache
def _activation(function: str) -> Activation:
    # Built on first use, not at import: building a catalog entry validates it.
    return ACTIVATIONS.create(ACTIVATIONS_BY_FUNCTION[function])


def _forward(node: Node, values: list, xs: list[np.ndarray], dtype):
    """`(y, vjp)` of one node; vjp(dy) returns one gradient per argument, shaped like it."""
    op, p = node.op, node.params
    if op == "input":
        return xs[p], None
    if op == "const":
        return np.asarray(p, dtype), None
    if op in ACTIVATIONS_BY_FUNCTION:
        (x,) = values
        activation = _activation(op)
        y = activation.forward(x)
        # An activation's backward may overwrite its dy, which here can be another node's
        # gradient too (`+` hands one dy to both of its sides).
        return y, lambda dy: [activation.backward(x, y, dy.copy())]
    if op in ELEMENTWISE:
        (x,) = values
        fn, grad = ELEMENTWISE[op]
        y = fn(x)
        return y, lambda dy: [grad(x, y, dy)]
    if op in ("+", "-", "*", "/", "maximum", "minimum", "@"):
        return _binary(op, *values)
    x = values[0]
    if op == "pow":
        exponent = dtype.type(p)
        y = x**exponent
        return y, lambda dy: [
            dy * exponent * x ** (exponent - 1) if exponent != 0 else np.zeros_like(x)
        ]
    if op == "clip":
        low, high = dtype.type(p[0]), dtype.type(p[1])
        y = np.clip(x, low, high)
        return y, lambda dy: [dy * ((x >= low) & (x <= high))]
    if op in REDUCTIONS:
        return _reduce(node, x)
    if op == "slice":
        index = tuple(
            Ellipsis
            if item[0] == "ellipsis"
            else item[1]
            if item[0] == "index"
            else slice(*item[1:])
            for item in p
        )

        def vjp_slice(dy):
            dx = np.zeros_like(x)
            dx[index] = dy  # basic indexing selects each element at most once
            return [dx]

        return x[index], vjp_slice
    if op == "reshape":
        return x.reshape((x.shape[0], *p)), lambda dy: [dy.reshape(x.shape)]
    if op == "transpose":
        order = permutation(node, x.ndim)
        return np.transpose(x, order), lambda dy: [np.transpose(dy, np.argsort(order))]
    if op == "expand_dims":
        return np.expand_dims(x, p), lambda dy: [dy.reshape(x.shape)]
    if op == "squeeze":
        return np.squeeze(x, p), lambda dy: [dy.reshape(x.shape)]
    if op == "concatenate":
        axis = p % values[0].ndim
        sizes = [v.shape[axis] for v in values]
        y = np.concatenate(values, axis=axis)
        return y, lambda dy: np.split(dy, np.cumsum(sizes)[:-1], axis=axis)
    raise AssertionError(f"unhandled operation {op}")


def _binary(op: str, a: np.ndarray, b: np.ndarray):
    if op == "+":
        return a + b, lambda dy: [_unbroadcast(dy, a.shape), _unbroadcast(dy, b.shape)]
    if op == "-":
        return a - b, lambda dy: [_unbroadcast(dy, a.shape), _unbroadcast(-dy, b.shape)]
    if op == "*":
        return a * b, lambda dy: [_unbroadcast(dy * b, a.shape), _unbroadcast(dy * a, b.shape)]
    if op == "/":
        y = a / b
        return y, lambda dy: [_unbroadcast(dy / b, a.shape), _unbroadcast(-dy * y / b, b.shape)]
    if op == "@":

        def vjp_matmul(dy):
            da = np.matmul(dy, np.swapaxes(b, -1, -2))
            db = np.matmul(np.swapaxes(a, -1, -2), dy)
            return [_unbroadcast(da, a.shape), _unbroadcast(db, b.shape)]

        return np.matmul(a, b), vjp_matmul
    # maximum / minimum: ties send the gradient to the first argument, as TensorFlow does.
    first = a >= b if op == "maximum" else a <= b
    y = np.where(first, a, b)
    return y, lambda dy: [_unbroadcast(dy * first, a.shape), _unbroadcast(dy * ~first, b.shape)]


def _reduce(node: Node, x: np.ndarray):
    axes, keepdims = node.params
    axes = tuple(a % x.ndim for a in axes)
    op = node.op
    y = getattr(np, "amax" if op == "max" else "amin" if op == "min" else op)(
        x, axis=axes, keepdims=True
    )
    count = math.prod(x.shape[a] for a in axes)

    def vjp(dy):
        dy = dy.reshape(y.shape)
        if op == "sum":
            return [np.broadcast_to(dy, x.shape).copy()]
        if op == "mean":
            return [np.broadcast_to(dy / x.dtype.type(count), x.shape).copy()]
        # max / min: the gradient is shared evenly among tied extremes (TensorFlow, torch.amax).
        hit = x == y
        return [hit * (dy / hit.sum(axis=axes, keepdims=True))]

    return (y if keepdims else np.squeeze(y, axis=axes)), vjp


def evaluate(program: Program, xs: list[np.ndarray]):
    """`(y, backprop)` for the expression on `xs`; backprop(dy) -> one gradient per input."""
    dtype = np.result_type(*xs)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
        xs = [x.astype(dtype) for x in xs]
    tape: list[tuple[Node, Any]] = []

    def visit(node: Node) -> np.ndarray:
        values = [visit(arg) for arg in node.args]
        try:
            y, vjp = _forward(node, values, xs, dtype)
        except (ValueError, IndexError) as err:
            # Only dimensions unknown before the data arrives can get here (static ones are
            # checked by `infer`): a reshape or broadcast that these batches do not fit.
            shapes = ", ".join(format_shape(v.shape[1:]) for v in values)
            raise ShapeError(f"{node.where()} fails on inputs of shape {shapes}: {err}") from None
        tape.append((node, vjp))
        return y

    y = visit(program.root)

    def backprop(dy: np.ndarray) -> list[np.ndarray]:
        grads: dict[int, np.ndarray] = {id(program.root): dy}
        dxs: list[np.ndarray | None] = [None] * len(xs)
        for node, vjp in reversed(tape):
            g = grads.pop(id(node), None)
            if g is None or not node.batched:
                continue
            if node.op == "input":
                i = node.params
                dxs[i] = g if dxs[i] is None else dxs[i] + g
                continue
            for arg, g_arg in zip(node.args, vjp(g)):
                if arg.batched:
                    key = id(arg)
                    grads[key] = g_arg if key not in grads else grads[key] + g_arg
        return [
            np.zeros_like(x) if dx is None else dx.astype(x.dtype, copy=False)
            for dx, x in zip(dxs, xs)
        ]

    return y, backprop
