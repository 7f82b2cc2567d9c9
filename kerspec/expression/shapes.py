"""Stage 2, at graph compilation: the static shape of every node, the batch axis first (None).

A `ShapeError` names the sub-expression that does not fit its operands' shapes; the compiler
reports it at the Lambda's entry. Dimensions unknown until the data arrives stay None and are
checked by `grad.evaluate` on every batch.
"""

from __future__ import annotations

import math

from kerspec.errors import ShapeError, format_shape
from kerspec.expression.tree import REDUCTIONS, FullShape, Node


def _fmt(shape: FullShape) -> str:
    return format_shape(shape[1:]) if shape else "a scalar"


def infer(node: Node, inputs: list[FullShape]) -> FullShape:
    """The shape of `node` (batch axis first) for inputs of the given shapes; ShapeError if not."""
    shapes = [infer(arg, inputs) for arg in node.args]
    op, p = node.op, node.params
    if op == "input":
        return inputs[p]
    if op == "const":
        return ()
    if op in ("+", "-", "*", "/", "maximum", "minimum"):
        return _broadcast(node, *shapes)
    if op == "@":
        return _matmul_shape(node, *shapes)
    if op == "slice":
        return _slice_shape(node, shapes[0])
    if op in REDUCTIONS:
        axes, keepdims = p
        (shape,) = shapes
        reduced = _axes(node, axes, len(shape))
        if keepdims:
            return tuple(1 if i in reduced else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i not in reduced)
    if op == "reshape":
        return _reshape_shape(node, shapes[0])
    if op == "transpose":
        return tuple(shapes[0][i] for i in permutation(node, len(shapes[0])))
    if op == "concatenate":
        return _concatenate_shape(node, shapes)
    if op == "expand_dims":
        (shape,) = shapes
        (axis,) = _axes(node, (p,), len(shape) + 1)
        return (*shape[:axis], 1, *shape[axis:])
    if op == "squeeze":
        (shape,) = shapes
        (axis,) = _axes(node, (p,), len(shape))
        if shape[axis] != 1:
            raise ShapeError(
                f"{node.where()}: axis {p} has size {shape[axis]}, not 1, in {_fmt(shape)}"
            )
        return shape[:axis] + shape[axis + 1 :]
    return shapes[0]  # element-wise functions, neg, pow, clip


def _broadcast(node: Node, a: FullShape, b: FullShape) -> FullShape:
    if not a or not b:
        return a or b
    if len(a) != len(b):
        raise ShapeError(
            f"{node.where()}: shapes {_fmt(a)} and {_fmt(b)} have different ranks; Lambda does not "
            "broadcast a batch axis against another axis (use keepdims=True, expand_dims or reshape)"
        )
    dims = []
    for i, (m, n) in enumerate(zip(a, b)):
        if m == n or n == 1:
            dims.append(m)
        elif m == 1:
            dims.append(n)
        elif m is None or n is None:
            dims.append(m if n is None else n)
        else:
            raise ShapeError(
                f"{node.where()}: shapes {_fmt(a)} and {_fmt(b)} do not broadcast (axis {i})"
            )
    return tuple(dims)


def _matmul_shape(node: Node, a: FullShape, b: FullShape) -> FullShape:
    if len(a) < 3 or len(a) != len(b):
        raise ShapeError(
            f"{node.where()}: `@` needs two operands of the same rank, at least (batch, rows, "
            f"columns); received {_fmt(a)} and {_fmt(b)}"
        )
    if a[-1] is not None and b[-2] is not None and a[-1] != b[-2]:
        raise ShapeError(
            f"{node.where()}: `@` needs the last axis of the left operand to match the second-to-last "
            f"of the right; received {_fmt(a)} and {_fmt(b)}"
        )
    middle = _broadcast(node, a[:-2], b[:-2])
    return (*middle, a[-2], b[-1])


def _axes(node: Node, axes: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Axes counted with the batch axis (negative from the end); the batch axis is refused."""
    resolved = []
    for axis in axes:
        if not -ndim <= axis < ndim:
            raise ShapeError(
                f"{node.where()}: axis {axis} is out of range for rank {ndim} (batch included)"
            )
        axis %= ndim
        if axis == 0:
            raise ShapeError(f"{node.where()}: axis 0 is the batch axis, which must stay whole")
        if axis in resolved:
            raise ShapeError(f"{node.where()}: axis {axis} is repeated")
        resolved.append(axis)
    return tuple(resolved)


def _expanded_index(node: Node, ndim: int) -> tuple:
    """The subscript with `...` replaced by full slices: one item per axis consumed."""
    items = list(node.params)
    consumed = sum(1 for item in items if item[0] != "ellipsis")
    if consumed > ndim:
        raise ShapeError(
            f"{node.where()}: {consumed} indices for an array of rank {ndim} (batch included)"
        )
    full = ("slice", None, None, None)
    if ("ellipsis",) in items:
        at = items.index(("ellipsis",))
        if at == 0 and consumed == ndim:
            raise ShapeError(
                f"{node.where()}: `...` covers no axis here, so the batch axis would be indexed"
            )
        items[at : at + 1] = [full] * (ndim - consumed)
    return tuple(items)


def _slice_shape(node: Node, shape: FullShape) -> FullShape:
    items = _expanded_index(node, len(shape))
    dims = []
    for axis, item in enumerate(items):
        size = shape[axis]
        if item[0] == "index":
            if size is not None and not -size <= item[1] < size:
                raise ShapeError(
                    f"{node.where()}: index {item[1]} is out of range for axis {axis} of size {size}"
                )
            continue
        if size is None:
            dims.append(None)
            continue
        length = len(range(*slice(*item[1:]).indices(size)))
        if length == 0:
            raise ShapeError(
                f"{node.where()}: the slice selects nothing from axis {axis} of size {size}"
            )
        dims.append(length)
    dims.extend(shape[len(items) :])
    return tuple(dims)


def _reshape_shape(node: Node, shape: FullShape) -> FullShape:
    target = node.params
    known = shape[1:]
    if any(d is None for d in known):
        return (None, *(None if d == -1 else d for d in target))
    size, fixed = math.prod(known), math.prod(d for d in target if d != -1)
    if -1 in target:
        if size % fixed:
            raise ShapeError(f"{node.where()}: cannot reshape {_fmt(shape)} to {target}")
        target = tuple(size // fixed if d == -1 else d for d in target)
    elif size != fixed:
        raise ShapeError(
            f"{node.where()}: cannot reshape {_fmt(shape)} ({size} values) to {target}"
        )
    return (None, *target)


def permutation(node: Node, ndim: int) -> tuple[int, ...]:
    """transpose's axes: a permutation of 1..rank-1 (Keras Permute), or of 0..rank-1 with 0 first."""
    axes = node.params
    if len(axes) == ndim and axes[0] == 0:
        axes = axes[1:]
    if sorted(axes) != list(range(1, ndim)):
        raise ShapeError(
            f"{node.where()}: axes must order the non-batch axes 1..{ndim - 1} (as Keras Permute), "
            f"received {node.params} for {_fmt((None,) * ndim)}"
        )
    return (0, *axes)


def _concatenate_shape(node: Node, shapes: list[FullShape]) -> FullShape:
    ranks = {len(s) for s in shapes}
    listed = ", ".join(_fmt(s) for s in shapes)
    if len(ranks) != 1:
        raise ShapeError(f"{node.where()}: the arrays must have the same rank; received {listed}")
    ndim = ranks.pop()
    (axis,) = _axes(node, (node.params,), ndim)
    dims = []
    for i in range(ndim):
        column = [s[i] for s in shapes]
        if i == axis:
            dims.append(None if None in column else sum(column))
            continue
        known = set(column) - {None}
        if len(known) > 1:
            raise ShapeError(
                f"{node.where()}: the arrays must match on every axis but {axis}; received {listed}"
            )
        dims.append(known.pop() if known else None)
    return tuple(dims)
