"""Arguments an expression must spell out in its text: indices, axes, shapes, bounds, exponents.

They fix the tree's shapes before any data arrives, so each is read here as a literal (or, for
numbers, a formula over literals and named constants) and anything computed is refused.
"""

from __future__ import annotations

import ast
import math

import numpy as np

from kerspec.expression.tree import ExpressionError, snippet

FLOAT32_MAX = float(np.finfo(np.float32).max)


def integer(node: ast.AST, what: str) -> int:
    if not is_int_literal(node):
        raise ExpressionError(
            f"{what} must be a literal integer (received `{snippet(node)}`)", node
        )
    value = node.operand.value if isinstance(node, ast.UnaryOp) else node.value
    if abs(value) > 2**31:
        raise ExpressionError(f"{what} {value} is out of range", node)
    return -value if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) else value


def integers(node: ast.AST, what: str, tuple_only: bool = False) -> tuple[int, ...]:
    if isinstance(node, ast.Tuple | ast.List):
        if not node.elts:
            raise ExpressionError(f"{what} cannot be empty", node)
        return tuple(integer(item, what) for item in node.elts)
    if tuple_only:
        raise ExpressionError(
            f"{what} must be a literal tuple of integers (received `{snippet(node)}`)", node
        )
    if not is_int_literal(node):
        raise ExpressionError(
            f"{what} must be a literal integer or tuple of integers (received `{snippet(node)}`)",
            node,
        )
    return (integer(node, what),)


def boolean(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Constant) and isinstance(node.value, bool)):
        raise ExpressionError(
            f"`keepdims` must be True or False (received `{snippet(node)}`)", node
        )
    return node.value


def number(node: ast.AST, what: str, constants: dict[str, float]) -> float:
    """A number known before any data: literals, named constants, and + - * / of those."""
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return finite(node.value, node)
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = number(node.operand, what, constants)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
        a, b = number(node.left, what, constants), number(node.right, what, constants)
        if isinstance(node.op, ast.Div) and b == 0:
            raise ExpressionError(f"{what} divides by zero", node)
        ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
        value = a / b if isinstance(node.op, ast.Div) else ops[type(node.op)]
        return finite(value, node)
    raise ExpressionError(
        f"{what} must be a number known in advance (a literal, pi, e or an `arguments` "
        f"entry, with + - * /); received `{snippet(node)}`",
        node,
    )


def is_int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def finite(value: float, node: ast.AST) -> float:
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ExpressionError(f"the number `{snippet(node)}` is too large for float32", node)
    return value
