"""Stage 1, at spec validation: the text, checked against the whitelist, becomes a `Program`.

The text is parsed with `ast` (mode "eval") and every node is checked before anything happens;
it is never given to eval, exec or compile. An `ExpressionError` names the refused construct
and its column, and the spec reports it at the `expression` line. The grammar and the function
list are documented in docs/lambda.md.
"""

from __future__ import annotations

import ast
import functools
import math
import re
import warnings

from kerspec.expression.literals import (
    FLOAT32_MAX,
    boolean,
    finite,
    integer,
    integers,
    is_int_literal,
    number,
)
from kerspec.expression.tree import (
    FUNCTIONS,
    REDUCTIONS,
    UNARY_FUNCTIONS,
    ExpressionError,
    Node,
    Program,
    snippet,
)

MAX_LENGTH = 2000
MAX_DEPTH = 100
MAX_EXPONENT = 16
CONSTANTS = {"pi": math.pi, "e": math.e}
KEYWORDS = {"axis", "keepdims", "axes"}
INPUT_NAME = re.compile(r"x(0|[1-9][0-9]{0,2})?")

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


def parse_expression(text: str, constants: dict[str, float] | None = None) -> Program:
    """Check `text` against the whitelist and build its operation tree, given the named
    constants it may use (cached per text and constants)."""
    return _parse_cached(text, tuple(sorted((k, float(v)) for k, v in (constants or {}).items())))


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
            raise ExpressionError(f"attribute access `{snippet(node)}` is not allowed", node)
        if isinstance(node, ast.List | ast.Tuple):
            raise ExpressionError(
                f"a list or tuple (`{snippet(node)}`) is only allowed as concatenate's first argument "
                "or as a literal shape or axis",
                node,
            )
        refused = REFUSED_NODES.get(
            type(node), f"`{snippet(node)}` ({type(node).__name__}) is not allowed"
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
            raise ExpressionError(f"`{snippet(node)}` is not allowed; only real numbers", node)
        return Node("const", params=finite(value, node), batched=False, text=snippet(node))

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
        return Node("neg", (operand,), batched=operand.batched, text=snippet(node))

    def _binop(self, node: ast.BinOp) -> Node:
        if isinstance(node.op, ast.Pow):
            base = self.expr(node.left)
            exponent = number(node.right, "an exponent", self.constants)
            if abs(exponent) > MAX_EXPONENT:
                raise ExpressionError(
                    f"exponent {exponent:g} is too large; |exponent| must be at most {MAX_EXPONENT}",
                    node.right,
                )
            return Node("pow", (base,), exponent, base.batched, snippet(node))
        symbol = BINARY_OPERATORS.get(type(node.op))
        if symbol is None:
            raise ExpressionError(
                f"operator `{REFUSED_OPERATORS[type(node.op)]}` is not allowed", node
            )
        left, right = self.expr(node.left), self.expr(node.right)
        if symbol == "@" and not (left.batched and right.batched):
            raise ExpressionError("`@` needs arrays on both sides, not a constant", node)
        return Node(
            symbol, (left, right), batched=left.batched or right.batched, text=snippet(node)
        )

    def _subscript(self, node: ast.Subscript) -> Node:
        value = self.expr(node.value)
        if not value.batched:
            raise ExpressionError(
                f"only arrays can be sliced; `{snippet(node.value)}` is a constant", node
            )
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        index = tuple(self._index_item(item) for item in items)
        if sum(1 for item in index if item[0] == "ellipsis") > 1:
            raise ExpressionError("a subscript may hold at most one `...`", node)
        first = index[0]
        if first[0] == "index" or (first[0] == "slice" and first[1:] != (None, None, None)):
            raise ExpressionError(
                f"`{snippet(node)}` would slice the batch axis; start with `:` or `...` "
                "(as in x[:, 1:3] or x[..., 0])",
                node,
            )
        return Node("slice", (value,), index, text=snippet(node))

    def _index_item(self, item: ast.AST) -> tuple:
        if isinstance(item, ast.Constant) and item.value is Ellipsis:
            return ("ellipsis",)
        if isinstance(item, ast.Slice):
            bounds = [
                None if part is None else integer(part, "a slice bound")
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
        if is_int_literal(item):
            return ("index", integer(item, "an index"))
        raise ExpressionError(
            f"`{snippet(item)}` cannot index an array: only literal integers, slices and `...` "
            "(no indexing with arrays)",
            item,
        )

    def _call(self, node: ast.Call) -> Node:
        func = node.func
        if isinstance(func, ast.Attribute):
            raise ExpressionError(f"attribute access `{snippet(func)}` is not allowed", func)
        if not isinstance(func, ast.Name):
            raise ExpressionError(
                f"`{snippet(func)}` cannot be called; only the listed functions", func
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
        text = snippet(node)
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
                number(lo, "clip's lower bound", self.constants),
                number(hi, "clip's upper bound", self.constants),
            )
            if low > high:
                raise ExpressionError(f"clip's bounds are reversed: {low:g} > {high:g}", node)
            return Node("clip", (operand,), (low, high), operand.batched, text)
        if name in REDUCTIONS:
            args = self._bind(node, ["x", "axis"], 2, keywords={"axis", "keepdims"})
            operand = self._array(args["x"], name)
            axes = integers(args["axis"], "`axis`")
            _not_batch(axes, args["axis"])
            keepdims = boolean(args["keepdims"]) if "keepdims" in args else False
            return Node(name, (operand,), (axes, keepdims), text=text)
        if name == "reshape":
            args = self._bind(node, ["x", "shape"], 2, keywords=set())
            shape = integers(args["shape"], "reshape's shape", tuple_only=True)
            if any(d == 0 or d < -1 for d in shape) or shape.count(-1) > 1:
                raise ExpressionError(
                    "reshape's shape takes positive sizes and at most one -1", args["shape"]
                )
            return Node("reshape", (self._array(args["x"], name),), shape, text=text)
        if name == "transpose":
            args = self._bind(node, ["x", "axes"], 2, keywords={"axes"})
            axes = integers(args["axes"], "transpose's axes", tuple_only=True)
            return Node("transpose", (self._array(args["x"], name),), axes, text=text)
        if name == "concatenate":
            args = self._bind(node, ["arrays", "axis"], 1, keywords={"axis"})
            arrays = args["arrays"]
            if not isinstance(arrays, ast.List | ast.Tuple) or not arrays.elts:
                raise ExpressionError(
                    "concatenate takes a list of arrays: concatenate([a, b], axis=-1)", node
                )
            parts = tuple(self._array(a, name) for a in arrays.elts)
            axis = integer(args["axis"], "`axis`") if "axis" in args else -1
            _not_batch((axis,), args.get("axis"))
            return Node("concatenate", parts, axis, text=text)
        # expand_dims, squeeze
        args = self._bind(node, ["x", "axis"], 2, keywords={"axis"})
        axis = integer(args["axis"], "`axis`")
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


def _not_batch(axes: tuple[int, ...], node: ast.AST | None) -> None:
    if 0 in axes:
        raise ExpressionError("axis 0 is the batch axis, which must stay whole", node)


def check_constant(name: str, value: float) -> None:
    """A ValueError unless `name` may name a constant (Keras's `arguments`) holding `value`."""
    reserved = name in CONSTANTS or name in FUNCTIONS or INPUT_NAME.fullmatch(name)
    if not name.isidentifier() or name.startswith("_") or reserved:
        raise ValueError(
            f"{name!r} cannot name a constant: it must be an identifier that does not start "
            "with '_' and is not an input, pi, e or a function name"
        )
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ValueError(f"{name!r} must be a finite float32 number (received {value})")
