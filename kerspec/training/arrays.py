"""Checks on arrays handed to a model: numbers, finite, the input's shape, one sample count.

Each failure is raised by the `source` the array came from (a data file, a call of the Python
API), so the message names it; `locate` says where in it a bad value is (an index, a CSV line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from kerspec.errors import DataError

Shape = tuple[int | None, ...]


class Source(Protocol):
    """Where arrays came from (a data file, an API call): it makes the error that names it."""

    def error(self, message: str) -> DataError: ...


Locate = Callable[[tuple[int, ...]], str]


def at_index(index: tuple[int, ...]) -> str:
    return f"index {index[0]}" if len(index) == 1 else f"index {index}"


def show(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float):
        if np.isnan(value):
            return "NaN"
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
    return repr(value)


def first(mask: np.ndarray) -> tuple[int, ...] | None:
    if not mask.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def fits(shape: tuple[int, ...], expected: Shape) -> bool:
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))


def check_numbers(file: Source, label: str, array: np.ndarray, locate: Locate) -> None:
    if array.dtype.kind not in "biuf":
        raise file.error(f"{label} holds {array.dtype} values; expected numbers")
    if array.ndim == 0:
        raise file.error(f"{label} is a single number; expected an array with one row per sample")
    if array.shape[0] == 0:
        raise file.error(f"{label} has no samples (shape {array.shape})")
    if array.dtype.kind == "f":
        bad = first(~np.isfinite(array))
        if bad is not None:
            raise file.error(f"{label} has {show(array[bad])} at {locate(bad)}")


def cast(file: Source, label: str, array: np.ndarray, dtype: np.dtype, locate: Locate):
    # Overflow is reported below, with the value and where it is.
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    bad = first(~np.isfinite(cast)) if cast.dtype.kind == "f" else None
    if bad is not None:
        raise file.error(f"{label} has {show(array[bad])} at {locate(bad)}, too large for {dtype}")
    return cast


def fit_input(
    file: Source,
    label: str,
    array: np.ndarray,
    name: str,
    shape: Shape,
    dtype: np.dtype,
    locate: Locate = at_index,
) -> np.ndarray:
    check_numbers(file, label, array, locate)
    expected = (None, *shape)
    if not fits(array.shape, expected):
        raise file.error(f"{label} has shape {array.shape} but input {name!r} expects {expected}")
    return cast(file, label, array, dtype, locate)


def check_samples(file: Source, arrays: dict[str, np.ndarray]) -> None:
    counts = {label: array.shape[0] for label, array in arrays.items()}
    first, n = next(iter(counts.items()))
    for label, count in counts.items():
        if count != n:
            raise file.error(f"{first} has {n} samples but {label} has {count}")
