"""The sweep file format as pydantic models: what `kerspec validate` checks in a sweep file and
`kerspec schema --sweep` prints.

A parameter is a `--set` path with either one distribution (`{loguniform: [1.0e-4, 1.0e-2]}`) or a
constant value that every trial gets (`fit.epochs: 3`). A constant that is itself a mapping is
written as a one-value choice (`{choice: [{type: sgd}]}`), so that it cannot be taken for a
misspelt distribution.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PositiveFloat,
    PositiveInt,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


Number = Union[int, float]  # noqa: UP007 (pydantic keeps ints as ints this way)


class Grid(Section):
    """Every value, in every sample: Tune's grid_search."""

    grid: list[Any] = Field(min_length=1)


class Choice(Section):
    """One of the values, drawn at random (every value in turn with `search: grid`)."""

    choice: list[Any] = Field(min_length=1)


class _Range(Section):
    @model_validator(mode="after")
    def _ordered(self):
        low, high = self.bounds
        if not low < high:
            raise ValueError(f"the lower bound must be below the upper one (received {low}, {high})")
        return self

    @property
    def bounds(self) -> tuple:
        return tuple(next(iter(self.model_dump().values())))


class Uniform(_Range):
    """A float drawn uniformly from [low, high)."""

    uniform: tuple[float, float]


class LogUniform(_Range):
    """A float whose logarithm is uniform: for learning rates, regularization factors."""

    loguniform: tuple[PositiveFloat, PositiveFloat]


class RandInt(_Range):
    """An integer from low to high, both included."""

    randint: tuple[int, int]


DISTRIBUTIONS = {"grid": Grid, "choice": Choice, "uniform": Uniform, "loguniform": LogUniform,
                 "randint": RandInt}
Distribution = Annotated[
    Union[tuple(Annotated[cls, Tag(name)] for name, cls in DISTRIBUTIONS.items())],  # noqa: UP007
    Discriminator(lambda v: _kind(v)),
]


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = [k for k in value if k in DISTRIBUTIONS]
        return keys[0] if len(keys) == 1 and len(value) == 1 else None
    return next((k for k, cls in DISTRIBUTIONS.items() if isinstance(value, cls)), None)


def _distribution_or_constant(value: Any) -> Any:
    if isinstance(value, dict) and _kind(value) is None:
        close = [m for k in value for m in difflib.get_close_matches(str(k), DISTRIBUTIONS, n=1)]
        hint = f"; did you mean {close[0]!r}?" if len(value) == 1 and close else ""
        raise PydanticCustomError(
            "distribution",
            "a parameter mapping must be one distribution ({known}), as in 'choice: [32, 64]';"
            " a constant mapping is written as a choice of one{hint}",
            {"known": ", ".join(DISTRIBUTIONS), "hint": hint},
        )
    return value


Parameter = Annotated[
    Union[  # noqa: UP007
        Annotated[Distribution, Tag("distribution")],
        Annotated[Any, Tag("constant")],
    ],
    Discriminator(lambda v: "distribution" if _kind(v) else "constant"),
    BeforeValidator(_distribution_or_constant),
]


class Asha(Section):
    """Asynchronous successive halving: every `grace_period` epochs x `reduction_factor`, only the
    best 1/`reduction_factor` of the trials carry on."""

    type: Literal["asha"] = "asha"
    grace_period: PositiveInt = Field(1, description="Epochs every trial runs before it can be stopped.")
    reduction_factor: float = Field(3.0, gt=1.0)


class Resources(Section):
    cpu: PositiveFloat = Field(1.0, description="CPUs per trial; also its BLAS thread count.")


class Sweep(Section):
    """A kerspec sweep file: which spec to train, what to vary, what to rank the trials by."""

    model_config = ConfigDict(title="kerspec sweep")

    spec: str = Field(description="The model spec, relative to the sweep file.")
    name: str | None = Field(None, description="Sweep name; defaults to the file's stem.")
    metric: str = Field(description="A name the model logs (loss, val_accuracy, ...); trials are ranked by its final value.")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: as the callbacks decide (losses down, accuracies up).")
    parameters: dict[str, Parameter] = Field(
        min_length=1, description="--set paths (layers by name or index) -> a distribution or a constant."
    )
    samples: PositiveInt = Field(1, description="Random draws; each runs every grid value (Tune's num_samples).")
    search: Literal["grid", "random", "optuna"] = "random"
    seed: int | None = Field(None, ge=0, description="Seed of the random draws (not of the trials).")
    scheduler: Asha | None = Field(None, description="Early stopping of weak trials.")
    trial_resources: Resources = Resources()
    max_concurrent: PositiveInt | None = Field(None, description="Trials at once; default: as many as the CPUs allow.")


def sweep_json_schema() -> dict[str, Any]:
    schema = Sweep.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
