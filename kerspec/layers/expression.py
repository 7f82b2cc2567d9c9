"""Lambda: a formula over the layer's inputs, written as text and never run as code.

The expression is parsed with `ast` (mode "eval") and every node is checked against a whitelist
before anything happens; the text is never given to eval, exec or compile. What passes is turned
into a small tree of operations, each with a NumPy forward and a vector-Jacobian product, so the
layer trains like any other. The grammar and the function list are documented in docs/lambda.md.

Three stages, each with its own errors:
- `parse_expression(text)` (at spec validation): the whitelist. An `ExpressionError` names the
  construct and its column, and the spec reports it at the `expression` line.
- `infer(node, shapes)` (at graph compilation): static shapes with the batch axis first (None);
  a `ShapeError` names the sub-expression that does not fit.
- `evaluate(program, xs)` (every batch): values, then one reversed pass accumulating gradients.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, PositiveInt, StrictFloat, StrictInt, field_validator, model_validator

from kerspec.layers.base import LAYERS, Layer, ShapeError, format_shape

MAX_LENGTH = 2000
MAX_DEPTH = 100
MAX_EXPONENT = 16
CONSTANTS = {"pi": math.pi, "e": math.e}
KEYWORDS = {"axis", "keepdims", "axes"}
INPUT_NAME = re.compile(r"x(0|[1-9][0-9]{0,2})?")
FLOAT32_MAX = float(np.finfo(np.float32).max)

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


def _text(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# Stage 1: the whitelist parser


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
BINARY_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@"}
REFUSED_OPERATORS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.Not: "not",
    ast.Invert: "~",
}
REFUSED_NODES = {
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Starred: "starred (*) arguments are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.BoolOp: "boolean operators (and, or) are not allowed",
    ast.IfExp: "conditional expressions (a if c else b) are not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


def parse_expression(text: str, constants: tuple[tuple[str, float], ...] = ()) -> Program:
    """Check `text` against the whitelist and build its operation tree (cached per text)."""
    return _parse_cached(text, constants)


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str, constants: tuple[tuple[str, float], ...]) -> Program:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise ExpressionError("is empty")
    _check_brackets(text.strip())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings such as "perhaps you missed a comma?"
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        column = f" (column {err.offset})" if err.offset else ""
        raise ExpressionError(f"is not a valid expression: {err.msg}{column}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("is nested too deeply or cannot be parsed") from None
    _check_depth(tree.body)
    parser = _Parser(dict(constants))
    root = parser.expr(tree.body)
    if not parser.inputs:
        raise ExpressionError("must use its input: `x`, or `x0`, `x1`, ... for several inputs")
    if "x" in parser.inputs and len(parser.inputs) > 1:
        raise ExpressionError("uses both `x` and numbered inputs; use `x0`, `x1`, ... throughout")
    if parser.inputs == {"x"}:
        return Program(root, 1)
    return Program(root, 1 + max(int(name[1:]) for name in parser.inputs))


def _check_brackets(text: str) -> None:
    """Refuse deep bracket nesting, which leaves no trace in the tree: `((((x))))`."""
    depth = 0
    for column, char in enumerate(text, 1):
        depth += (char in "([{") - (char in ")]}")
        if depth > MAX_DEPTH:
            raise ExpressionError(f"is nested more than {MAX_DEPTH} levels deep (column {column})")


def _check_depth(root: ast.AST) -> None:
    """Refuse deep trees before walking them recursively (iteratively, so depth cannot crash)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"is nested more than {MAX_DEPTH} levels deep", node)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Parser:
    def __init__(self, constants: dict[str, float]):
        self.constants = {**CONSTANTS, **constants}
        self.inputs: set[str] = set()

    # Array expressions --------------------------------------------------------------------

    def expr(self, node: ast.AST) -> Node:
        handler = {
            ast.Constant: self._constant,
            ast.Name: self._name,
            ast.UnaryOp: self._unary,
            ast.BinOp: self._binop,
            ast.Subscript: self._subscript,
            ast.Call: self._call,
        }.get(type(node))
        if handler is not None:
            return handler(node)
        if isinstance(node, ast.Attribute):
            raise ExpressionError(f"attribute access `{_text(node)}` is not allowed", node)
        if isinstance(node, ast.List | ast.Tuple):
            raise ExpressionError(
                f"a list or tuple (`{_text(node)}`) is only allowed as concatenate's first argument "
                "or as a literal shape or axis",
                node,
            )
        refused = REFUSED_NODES.get(
            type(node), f"`{_text(node)}` ({type(node).__name__}) is not allowed"
        )
        raise ExpressionError(refused, node)

    def _constant(self, node: ast.Constant) -> Node:
        value = node.value
        if isinstance(value, str | bytes):
            raise ExpressionError("strings are not allowed", node)
        if isinstance(value, bool) or value is None:
            raise ExpressionError(f"`{value}` is not allowed; only numbers", node)
        if value is Ellipsis:
            raise ExpressionError("`...` is only allowed inside a subscript", node)
        if not isinstance(value, int | float):
            raise ExpressionError(f"`{_text(node)}` is not allowed; only real numbers", node)
        return Node("const", params=_finite(value, node), batched=False, text=_text(node))

    def _name(self, node: ast.Name) -> Node:
        name = node.id
        if name.startswith("_"):
            raise ExpressionError(f"`{name}` is not allowed", node)
        if INPUT_NAME.fullmatch(name):
            self.inputs.add(name)
            index = 0 if name == "x" else int(name[1:])
            return Node("input", params=index, text=name)
        if name in self.constants:
            return Node("const", params=self.constants[name], batched=False, text=name)
        if name in FUNCTIONS:
            raise ExpressionError(f"`{name}` is a function; call it as {name}(...)", node)
        raise ExpressionError(
            f"unknown name `{name}`; the inputs are `x` (or `x0`, `x1`, ...) and the constants "
            f"are {', '.join(f'`{c}`' for c in self.constants)}",
            node,
        )

    def _unary(self, node: ast.UnaryOp) -> Node:
        if isinstance(node.op, ast.UAdd):
            return self.expr(node.operand)
        if not isinstance(node.op, ast.USub):
            raise ExpressionError(
                f"operator `{REFUSED_OPERATORS[type(node.op)]}` is not allowed", node
            )
        operand = self.expr(node.operand)
        return Node("neg", (operand,), batched=operand.batched, text=_text(node))

    def _binop(self, node: ast.BinOp) -> Node:
        if isinstance(node.op, ast.Pow):
            base = self.expr(node.left)
            exponent = self._number(node.right, "an exponent")
            if abs(exponent) > MAX_EXPONENT:
                raise ExpressionError(
                    f"exponent {exponent:g} is too large; |exponent| must be at most {MAX_EXPONENT}",
                    node.right,
                )
            return Node("pow", (base,), exponent, base.batched, _text(node))
        symbol = BINARY_OPERATORS.get(type(node.op))
        if symbol is None:
            raise ExpressionError(
                f"operator `{REFUSED_OPERATORS[type(node.op)]}` is not allowed", node
            )
        left, right = self.expr(node.left), self.expr(node.right)
        if symbol == "@" and not (left.batched and right.batched):
            raise ExpressionError("`@` needs arrays on both sides, not a constant", node)
        return Node(symbol, (left, right), batched=left.batched or right.batched, text=_text(node))

    def _subscript(self, node: ast.Subscript) -> Node:
        value = self.expr(node.value)
        if not value.batched:
            raise ExpressionError(
                f"only arrays can be sliced; `{_text(node.value)}` is a constant", node
            )
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        index = tuple(self._index_item(item) for item in items)
        if sum(1 for item in index if item[0] == "ellipsis") > 1:
            raise ExpressionError("a subscript may hold at most one `...`", node)
        first = index[0]
        if first[0] == "index" or (first[0] == "slice" and first[1:] != (None, None, None)):
            raise ExpressionError(
                f"`{_text(node)}` would slice the batch axis; start with `:` or `...` "
                "(as in x[:, 1:3] or x[..., 0])",
                node,
            )
        return Node("slice", (value,), index, text=_text(node))

    def _index_item(self, item: ast.AST) -> tuple:
        if isinstance(item, ast.Constant) and item.value is Ellipsis:
            return ("ellipsis",)
        if isinstance(item, ast.Slice):
            bounds = [
                None if part is None else self._int(part, "a slice bound")
                for part in (item.lower, item.upper, item.step)
            ]
            if bounds[2] == 0:
                raise ExpressionError("a slice step cannot be zero", item)
            if bounds[2] == 1:
                bounds[2] = None
            return ("slice", *bounds)
        if isinstance(item, ast.Constant) and item.value is None:
            raise ExpressionError(
                "`None` (a new axis) is not allowed in a subscript; use expand_dims", item
            )
        if _is_int_literal(item):
            return ("index", self._int(item, "an index"))
        raise ExpressionError(
            f"`{_text(item)}` cannot index an array: only literal integers, slices and `...` "
            "(no indexing with arrays)",
            item,
        )

    def _call(self, node: ast.Call) -> Node:
        func = node.func
        if isinstance(func, ast.Attribute):
            raise ExpressionError(f"attribute access `{_text(func)}` is not allowed", func)
        if not isinstance(func, ast.Name):
            raise ExpressionError(
                f"`{_text(func)}` cannot be called; only the listed functions", func
            )
        name = func.id
        if name.startswith("_"):
            raise ExpressionError(f"`{name}` is not allowed", func)
        if name not in FUNCTIONS:
            raise ExpressionError(
                f"unknown function `{name}`; the functions are {', '.join(FUNCTIONS)}", func
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise ExpressionError("starred (*) arguments are not allowed", arg)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ExpressionError("`**` arguments are not allowed", keyword)
            if keyword.arg not in KEYWORDS:
                raise ExpressionError(
                    f"keyword argument `{keyword.arg}=` is not allowed; only axis=, keepdims=, axes=",
                    keyword,
                )
        text = _text(node)
        if name in UNARY_FUNCTIONS:
            (a,) = self._bind(node, ["x"], 1).values()
            operand = self.expr(a)
            return Node(name, (operand,), batched=operand.batched, text=text)
        if name in ("maximum", "minimum"):
            a, b = self._bind(node, ["a", "b"], 2).values()
            left, right = self.expr(a), self.expr(b)
            return Node(name, (left, right), batched=left.batched or right.batched, text=text)
        if name == "clip":
            a, lo, hi = self._bind(node, ["x", "lo", "hi"], 3).values()
            operand = self.expr(a)
            low, high = (
                self._number(lo, "clip's lower bound"),
                self._number(hi, "clip's upper bound"),
            )
            if low > high:
                raise ExpressionError(f"clip's bounds are reversed: {low:g} > {high:g}", node)
            return Node("clip", (operand,), (low, high), operand.batched, text)
        if name in REDUCTIONS:
            args = self._bind(node, ["x", "axis"], 2, keywords={"axis", "keepdims"})
            operand = self._array(args["x"], name)
            axes = self._ints(args["axis"], "`axis`")
            _not_batch(axes, args["axis"])
            keepdims = self._bool(args["keepdims"]) if "keepdims" in args else False
            return Node(name, (operand,), (axes, keepdims), text=text)
        if name == "reshape":
            args = self._bind(node, ["x", "shape"], 2, keywords=set())
            shape = self._ints(args["shape"], "reshape's shape", tuple_only=True)
            if any(d == 0 or d < -1 for d in shape) or shape.count(-1) > 1:
                raise ExpressionError(
                    "reshape's shape takes positive sizes and at most one -1", args["shape"]
                )
            return Node("reshape", (self._array(args["x"], name),), shape, text=text)
        if name == "transpose":
            args = self._bind(node, ["x", "axes"], 2, keywords={"axes"})
            axes = self._ints(args["axes"], "transpose's axes", tuple_only=True)
            return Node("transpose", (self._array(args["x"], name),), axes, text=text)
        if name == "concatenate":
            args = self._bind(node, ["arrays", "axis"], 1, keywords={"axis"})
            arrays = args["arrays"]
            if not isinstance(arrays, ast.List | ast.Tuple) or not arrays.elts:
                raise ExpressionError(
                    "concatenate takes a list of arrays: concatenate([a, b], axis=-1)", node
                )
            parts = tuple(self._array(a, name) for a in arrays.elts)
            axis = self._int(args["axis"], "`axis`") if "axis" in args else -1
            _not_batch((axis,), args.get("axis"))
            return Node("concatenate", parts, axis, text=text)
        # expand_dims, squeeze
        args = self._bind(node, ["x", "axis"], 2, keywords={"axis"})
        axis = self._int(args["axis"], "`axis`")
        _not_batch((axis,), args["axis"])
        return Node(name, (self._array(args["x"], name),), axis, text=text)

    def _bind(
        self, node: ast.Call, params: list[str], required: int, keywords: set[str] = frozenset()
    ):
        """Positional and keyword arguments of a call, by parameter name."""
        name = node.func.id
        if len(node.args) > len(params):
            raise ExpressionError(f"{name} takes at most {len(params)} positional arguments", node)
        bound = dict(zip(params, node.args))
        for keyword in node.keywords:
            if keyword.arg not in keywords:
                raise ExpressionError(f"{name} takes no keyword argument `{keyword.arg}=`", keyword)
            if keyword.arg in bound:
                raise ExpressionError(f"{name} got `{keyword.arg}` twice", keyword)
            bound[keyword.arg] = keyword.value
        missing = [p for p in params[:required] if p not in bound]
        if missing:
            raise ExpressionError(f"{name} needs its argument `{missing[0]}`", node)
        return bound

    def _array(self, node: ast.AST, function: str) -> Node:
        result = self.expr(node)
        if not result.batched:
            raise ExpressionError(f"{function} needs an array, not a constant", node)
        return result

    # Static (literal) values --------------------------------------------------------------

    def _int(self, node: ast.AST, what: str) -> int:
        if not _is_int_literal(node):
            raise ExpressionError(
                f"{what} must be a literal integer (received `{_text(node)}`)", node
            )
        value = node.operand.value if isinstance(node, ast.UnaryOp) else node.value
        if abs(value) > 2**31:
            raise ExpressionError(f"{what} {value} is out of range", node)
        return -value if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) else value

    def _ints(self, node: ast.AST, what: str, tuple_only: bool = False) -> tuple[int, ...]:
        if isinstance(node, ast.Tuple | ast.List):
            if not node.elts:
                raise ExpressionError(f"{what} cannot be empty", node)
            return tuple(self._int(item, what) for item in node.elts)
        if tuple_only:
            raise ExpressionError(
                f"{what} must be a literal tuple of integers (received `{_text(node)}`)", node
            )
        if not _is_int_literal(node):
            raise ExpressionError(
                f"{what} must be a literal integer or tuple of integers (received `{_text(node)}`)",
                node,
            )
        return (self._int(node, what),)

    def _bool(self, node: ast.AST) -> bool:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, bool)):
            raise ExpressionError(
                f"`keepdims` must be True or False (received `{_text(node)}`)", node
            )
        return node.value

    def _number(self, node: ast.AST, what: str) -> float:
        """A number known before any data: literals, pi, e, `arguments`, and + - * / of those."""
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return _finite(node.value, node)
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self._number(node.operand, what)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            a, b = self._number(node.left, what), self._number(node.right, what)
            if isinstance(node.op, ast.Div) and b == 0:
                raise ExpressionError(f"{what} divides by zero", node)
            ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
            value = a / b if isinstance(node.op, ast.Div) else ops[type(node.op)]
            return _finite(value, node)
        raise ExpressionError(
            f"{what} must be a number known in advance (a literal, pi, e or an `arguments` "
            f"entry, with + - * /); received `{_text(node)}`",
            node,
        )


def _not_batch(axes: tuple[int, ...], node: ast.AST | None) -> None:
    if 0 in axes:
        raise ExpressionError("axis 0 is the batch axis, which must stay whole", node)


def _is_int_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _finite(value: float, node: ast.AST) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise ExpressionError(f"the number `{_text(node)}` is too large for float32", node)
    return number


# ---------------------------------------------------------------------------------------------
# Stage 2: static shapes


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
        return tuple(shapes[0][i] for i in _permutation(node, len(shapes[0])))
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


def _permutation(node: Node, ndim: int) -> tuple[int, ...]:
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


# ---------------------------------------------------------------------------------------------
# Stage 3: forward values and vector-Jacobian products


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `g` down to `shape`, undoing NumPy broadcasting."""
    if g.shape == shape:
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, g.shape)) if n == 1 and m != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))


# name: (forward(x), vjp(x, y, dy)); derivatives in terms of the output where that is cheaper.
ELEMENTWISE = {
    "abs": (np.abs, lambda x, y, dy: dy * np.sign(x)),
    "exp": (np.exp, lambda x, y, dy: dy * y),
    "log": (np.log, lambda x, y, dy: dy / x),
    "sqrt": (np.sqrt, lambda x, y, dy: dy / (y + y)),
    "square": (np.square, lambda x, y, dy: dy * (x + x)),
    "tanh": (np.tanh, lambda x, y, dy: dy * (1 - y * y)),
    "sigmoid": (_sigmoid, lambda x, y, dy: dy * y * (1 - y)),
    "relu": (lambda x: np.maximum(x, 0), lambda x, y, dy: dy * (x > 0)),
    "softplus": (lambda x: np.logaddexp(0, x), lambda x, y, dy: dy * _sigmoid(x)),
    "sin": (np.sin, lambda x, y, dy: dy * np.cos(x)),
    "cos": (np.cos, lambda x, y, dy: -dy * np.sin(x)),
    "neg": (np.negative, lambda x, y, dy: -dy),
}


def _forward(node: Node, values: list, xs: list[np.ndarray], dtype):
    """`(y, vjp)` of one node; vjp(dy) returns one gradient per argument, shaped like it."""
    op, p = node.op, node.params
    if op == "input":
        return xs[p], None
    if op == "const":
        return np.asarray(p, dtype), None
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
        order = _permutation(node, x.ndim)
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


# ---------------------------------------------------------------------------------------------
# The layer


CODE_ARGUMENTS = {
    "function": "`function` is not supported: Lambda takes an `expression` (a formula), not code",
    "mask": "`mask` is not supported: it is code in Keras, and Lambda passes no mask on",
}


@LAYERS.register("Lambda")
class Lambda(Layer):
    """Applies a whitelisted formula to its inputs: `{type: Lambda, expression: "x * 2 + 1"}`.

    The inputs are `x`, or `x0`, `x1`, ... in `from` order. Arithmetic, `@`, slicing and the
    functions listed in docs/lambda.md are allowed; the text is parsed, never executed.

    Input shape: any. Output shape: inferred from the formula; `output_shape` (without the batch
    axis, as in Keras) is checked against it and fills in dimensions it leaves unknown.
    """

    type: Literal["Lambda"] = "Lambda"
    arguments: dict[str, StrictInt | StrictFloat] | None = Field(
        None, description="Named numeric constants the expression may use (Keras's `arguments`)."
    )
    expression: str = Field(description="The formula; see docs/lambda.md for the grammar.")
    output_shape: list[PositiveInt | None] | None = Field(
        None, description="The expected output shape without the batch axis."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_code(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, message in CODE_ARGUMENTS.items():
                if key in data:
                    raise ValueError(message)
        return data

    @field_validator("arguments")
    @classmethod
    def _argument_names(cls, arguments):
        for name, value in (arguments or {}).items():
            reserved = name in CONSTANTS or name in FUNCTIONS or INPUT_NAME.fullmatch(name)
            if not name.isidentifier() or name.startswith("_") or reserved:
                raise ValueError(
                    f"{name!r} cannot name a constant: it must be an identifier that does not start "
                    "with '_' and is not an input, pi, e or a function name"
                )
            if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                raise ValueError(f"{name!r} must be a finite float32 number (received {value})")
        return arguments

    @field_validator("expression")
    @classmethod
    def _whitelisted(cls, expression: str, info) -> str:
        if "arguments" not in info.data:
            return expression  # `arguments` failed: its names are unknown, so skip until fixed
        parse_expression(expression, _constants(info.data["arguments"]))
        return expression

    @property
    def program(self) -> Program:
        return parse_expression(self.expression, _constants(self.arguments))

    @property
    def arity(self) -> int:
        """One input for `x`; for `x0`...`xN`, N + 1 (an unused lower index still counts)."""
        return self.program.n_inputs

    def output_shapes(self, shapes):
        program = self.program
        if len(shapes) != program.n_inputs:
            raise ShapeError(
                f"the expression uses {program.n_inputs} input(s); received {len(shapes)}"
            )
        shape = infer(program.root, [(None, *s) for s in shapes])[1:]
        if self.output_shape is not None:
            declared = tuple(self.output_shape)
            if len(declared) != len(shape) or any(
                d is not None and s is not None and d != s for d, s in zip(declared, shape)
            ):
                raise ShapeError(
                    f"output_shape {format_shape(declared)} does not match the expression's "
                    f"output shape {format_shape(shape)}"
                )
            shape = tuple(s if d is None else d for d, s in zip(declared, shape))
        return [shape]

    def forward(self, w, xs, ctx):
        y, backprop = evaluate(self.program, xs)
        if self.output_shape is not None:
            declared = self.output_shape
            if y.ndim - 1 != len(declared) or any(
                d not in (None, n) for d, n in zip(declared, y.shape[1:])
            ):
                raise ShapeError(
                    f"the expression gave shape {format_shape(y.shape[1:])}; output_shape is "
                    f"{format_shape(tuple(declared))}"
                )
        need_dx = ctx.need_dx

        def backprop_list(dys):
            if dys[0] is None or not need_dx:
                return [None] * len(xs), {}
            return backprop(dys[0]), {}

        return [y], backprop_list


def _constants(arguments: dict[str, float] | None) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, float(v)) for k, v in (arguments or {}).items()))
