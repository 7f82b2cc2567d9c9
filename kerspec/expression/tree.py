"""The operation tree the parser builds and the other stages walk, and the parser's error."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

UNARY_FUNCTIONS = (
    *("abs", "exp", "log", "sqrt", "square", "tanh", "sigmoid", "relu", "softplus"),
    *("sin", "cos"),
)
REDUCTIONS = ("sum", "mean", "max", "min")
FUNCTIONS = (
    *UNARY_FUNCTIONS,
    *("maximum", "minimum", "clip", *REDUCTIONS, "reshape", "transpose", "concatenate"),
    *("expand_dims", "squeeze"),
)

FullShape = tuple[int | None, ...]  # batch axis first (None); () for a constant


class ExpressionError(ValueError):
    """An expression outside the whitelist: what is wrong, and where in the expression."""

    def __init__(self, message: str, node: ast.AST | None = None):
        if node is not None and hasattr(node, "col_offset"):
            line = getattr(node, "lineno", 1)
            place = (
                f"line {line}, column {node.col_offset + 1}"
                if line > 1
                else f"column {node.col_offset + 1}"
            )
            message = f"{message} ({place})"
        super().__init__(message)


@dataclass(frozen=True, eq=False)
class Node:
    """One operation of the expression tree. `params` holds its static arguments (an axis, a
    shape, an input index, a constant); `batched` is False for constants (shape ())."""

    op: str
    args: tuple[Node, ...] = ()
    params: Any = None
    batched: bool = True
    text: str = ""

    def where(self) -> str:
        return f"`{self.text}`"


@dataclass(frozen=True)
class Program:
    root: Node
    n_inputs: int


def snippet(node: ast.AST) -> str:
    """The source text of `node`, cut short enough to quote in a message."""
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."
