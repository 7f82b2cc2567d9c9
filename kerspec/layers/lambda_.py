"""Lambda: a formula over the layer's inputs, written as text and never run as code.

The language itself (parser, shapes, gradients) is kerspec.expression; this module is the layer
around it: its fields, its output shape and its forward/backward.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, StrictFloat, StrictInt, field_validator, model_validator

from kerspec.expression import Program, check_constant, evaluate, infer, parse_expression
from kerspec.layers.base import LAYERS, Layer, ShapeError, format_shape

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
            check_constant(name, value)
        return arguments

    @field_validator("expression")
    @classmethod
    def _whitelisted(cls, expression: str, info) -> str:
        if "arguments" not in info.data:
            return expression  # `arguments` failed: its names are unknown, so skip until fixed
        parse_expression(expression, info.data["arguments"])
        return expression

    @property
    def program(self) -> Program:
        return parse_expression(self.expression, self.arguments)

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
