"""The spec's `data:` entries: a file path, a mapping naming the file's keys or columns, or
random data. Checked here for what the entry alone says (a file type kerspec reads, options that
fit it); the file itself is read against the model by kerspec.training.data.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from kerspec.errors import DataError

SUFFIXES = (".npz", ".npy", ".csv")


def check_suffix(path: str) -> str:
    suffix = PurePath(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"unsupported data file {path!r}: expected a .npz, .npy or .csv file"
            f" (received {suffix or 'no extension'!r})"
        )
    return suffix


class PathData(BaseModel):
    """A data file and, where needed, which keys or columns of it to read.

    `x` / `y` rename .npz keys (a string for a single input or output, else a list in input or
    output order); `target` and `features` pick .csv columns; `one_hot` turns class indices into
    one-hot rows, as Keras's `to_categorical` does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Read, never written: may be anywhere the user can read (docs/security.md).
    path: str = Field(min_length=1, json_schema_extra={"x-kerspec-path": "read"})
    x: str | Annotated[list[str], Field(min_length=1)] | None = None
    y: str | Annotated[list[str], Field(min_length=1)] | None = None
    target: str | None = None
    features: Annotated[list[str], Field(min_length=1)] | None = None
    one_hot: bool = False

    @model_validator(mode="after")
    def _fits_file_type(self) -> PathData:
        suffix = check_suffix(self.path)
        if suffix != ".npz" and (self.x is not None or self.y is not None):
            raise ValueError(f"`x` and `y` name keys of an .npz file, not of a {suffix} file")
        if suffix != ".csv" and (self.target is not None or self.features is not None):
            raise ValueError(f"`target` and `features` name .csv columns, not {suffix} keys")
        if suffix == ".npy" and self.one_hot:
            raise ValueError("`one_hot` applies to targets, and a .npy file holds inputs only")
        if self.features is not None:
            repeated = sorted({f for f in self.features if self.features.count(f) > 1})
            if repeated:
                raise ValueError(f"`features` lists {', '.join(map(repr, repeated))} twice")
            if self.target is not None and self.target in self.features:
                raise ValueError(f"the target column {self.target!r} is also in `features`")
        return self


class RandomData(BaseModel):
    """Random inputs in [0, 1) and random targets that fit each output: a smoke test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["random"]
    samples: int = Field(1000, gt=0)
    seed: int | None = Field(None, ge=0)


def _path_only(path: str) -> PathData:
    check_suffix(path)
    return PathData(path=path)


def _entry_tag(value: Any) -> str:
    if isinstance(value, str):
        return "file"
    if isinstance(value, RandomData) or (isinstance(value, Mapping) and "source" in value):
        return "random"
    return "path"


DataEntry = Annotated[
    Annotated[Annotated[str, Field(min_length=1, json_schema_extra={"x-kerspec-path": "read"}), AfterValidator(_path_only)], Tag("file")]
    | Annotated[PathData, Tag("path")]
    | Annotated[RandomData, Tag("random")],
    Discriminator(_entry_tag),
]
"""A spec's data entry: a path, a `PathData` mapping, or `{source: random, ...}`.

A path alone validates to `PathData(path=...)`.
"""

_ENTRY = TypeAdapter(DataEntry)


def parse_entry(entry: PathData | RandomData | str | Mapping[str, Any]) -> PathData | RandomData:
    """A data entry given outside a spec (`--data`, the Python API), validated as the spec's are."""
    if isinstance(entry, (PathData, RandomData)):
        return entry
    try:
        return _ENTRY.validate_python(entry)
    except ValidationError as error:
        message = error.errors()[0]["msg"].removeprefix("Value error, ")
        raise DataError(f"invalid data entry {entry!r}: {message}") from None
