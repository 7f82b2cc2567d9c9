"""A Lambda's parsed formula as ONNX operators."""

from __future__ import annotations

from kerspec.interop.onnx_builder import Builder, ExportError

ONNX_ELEMENTWISE = {"abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh",
                    "sigmoid": "Sigmoid", "relu": "Relu", "softplus": "Softplus", "sin": "Sin",
                    "cos": "Cos", "neg": "Neg"}
ONNX_BINARY = {"+": "Add", "-": "Sub", "*": "Mul", "/": "Div", "@": "MatMul", "maximum": "Max",
               "minimum": "Min"}
ONNX_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin"}


def expression(b: Builder, node, xs: list[str], ndims: list[int], hint: str) -> str:
    """A Lambda's parsed formula (kerspec.expression) as ONNX operators."""
    from kerspec.expression import permutation

    values = []

    def visit(n):
        args = [visit(a) for a in n.args]
        op, p = n.op, n.params
        if op == "input":
            values.append(ndims[p])
            return xs[p]
        if op == "const":
            return b.const(p)
        if op in ONNX_ELEMENTWISE:
            return b.op(ONNX_ELEMENTWISE[op], args, hint)
        if op == "square":
            return b.op("Mul", [args[0], args[0]], hint)
        if op in ONNX_BINARY:
            return b.op(ONNX_BINARY[op], args, hint)
        if op == "pow":
            return b.op("Pow", [args[0], b.const(p)], hint)
        if op == "clip":
            return b.op("Clip", [args[0], b.const(p[0]), b.const(p[1])], hint)
        if op in ONNX_REDUCE:
            axes, keepdims = p
            return b.op(ONNX_REDUCE[op], [args[0], b.ints(list(axes))], hint, keepdims=int(keepdims))
        if op == "reshape":
            return b.op("Reshape", [args[0], b.ints([0, *p])], hint)
        if op == "expand_dims":
            return b.op("Unsqueeze", [args[0], b.ints([p] if isinstance(p, int) else list(p))], hint)
        if op == "squeeze":
            return b.op("Squeeze", [args[0], b.ints([p] if isinstance(p, int) else list(p))], hint)
        if op == "concatenate":
            return b.op("Concat", args, hint, axis=p)
        if op == "transpose":
            return b.op("Transpose", args, hint, perm=list(permutation(n, _rank(n, ndims))))
        raise ExportError(f"the expression's {n.where()} has no ONNX translation in kerspec")

    return visit(node)


def _rank(node, ndims: list[int]) -> int:
    """The rank of a transposed sub-expression: its input's, when it reads one directly."""
    arg = node.args[0]
    if arg.op == "input":
        return ndims[arg.params]
    raise ExportError(f"the expression's {node.where()} has no ONNX translation in kerspec")
