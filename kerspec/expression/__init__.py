"""The Lambda layer's formula language: text that is parsed, never run as code.

What passes the whitelist becomes a small tree of operations, each with a NumPy forward and a
vector-Jacobian product, so a Lambda trains like any other layer. Three stages, each with its
own errors, in its own module:

- `parse.py`, at spec validation: the whitelist (`parse_expression`, `ExpressionError`);
  `literals.py` reads the arguments that must be literal (axes, shapes, bounds).
- `shapes.py`, at graph compilation: static shapes (`infer`, `ShapeError`).
- `grad.py`, on every batch: values, then the backward pass (`evaluate`).

`tree.py` holds the operation tree they share. Nothing here imports `kerspec.layers`: the
Lambda layer (kerspec/layers/lambda_.py) is a thin layer over this package.
"""

from kerspec.expression.grad import evaluate
from kerspec.expression.parse import check_constant, parse_expression
from kerspec.expression.shapes import infer, permutation
from kerspec.expression.tree import FUNCTIONS, ExpressionError, Node, Program

__all__ = [
    "FUNCTIONS",
    "ExpressionError",
    "Node",
    "Program",
    "check_constant",
    "evaluate",
    "infer",
    "parse_expression",
    "permutation",
]
