"""Errors a user can cause. Each carries where it happened and prints as `WHERE: message`.

Any other exception escaping kerspec is a bug in kerspec, not in the user's input.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class Where:
    """A place in a file (1-based line and column), or a place with no line, such as `--set k=v`."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


class KerspecError(Exception):
    """Base of every error caused by the user's spec, data, weights or arguments."""

    def __init__(self, message: str, where: Where | str | None = None):
        super().__init__(message)
        self.message = message
        self.where = Where(where) if isinstance(where, str) else where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class Problems(KerspecError):
    """Several problems found in one pass; printed one per line."""

    def __init__(self, problems: list[KerspecError]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __str__(self) -> str:
        return self.message


class SpecError(Problems):
    """The spec file is not valid YAML, or does not match the spec schema."""


class GraphError(Problems):
    """The spec is well formed but does not describe a model: dangling links, cycles, shapes."""


class DataError(KerspecError):
    """A data file is missing, unreadable, or does not fit the model."""


class WeightsError(KerspecError):
    """A weights file is missing, unreadable, or does not fit the model."""


class RunError(KerspecError):
    """A training run failed (non-finite loss) or a run folder cannot be used."""


class ShapeError(ValueError):
    """A layer cannot take the shapes it is given; the compiler adds the spec entry's place.

    Here rather than in `kerspec.layers` so that the Lambda expression language, which the
    layers import, raises the same error without importing them.
    """


def format_shape(shape: tuple[int | None, ...]) -> str:
    """A shape as Keras prints it, with the batch dimension: (None, 8, 8, 1)."""
    dims = ["None", *("None" if d is None else str(d) for d in shape)]
    return "(" + ", ".join(dims) + (",)" if len(dims) == 1 else ")")


def first_error(err: ValidationError) -> str:
    """`field.path: what is wrong` for the first error of a file read back (run.json, ...)."""
    first = err.errors()[0]
    place = ".".join(str(p) for p in first["loc"])
    text = first["msg"].replace("Input should", "should", 1)
    return f"{place}: {text}" if place else text
