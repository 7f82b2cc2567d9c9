"""Data for training, evaluation and prediction: `.npz`, `.npy` and `.csv` files, or random data.

A spec's data entry (kerspec.spec.data) is checked against the model before any training
starts: which arrays feed which input and output, shapes, sample counts, targets that fit each
output's loss, and finite numbers. Each problem is one `DataError` that names the file (as
written and as resolved), the key or the line and column, and what was expected next to what
was received.

Files are read with `allow_pickle=False` and the `csv` module (kerspec.io), so nothing in a data
file is ever executed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from kerspec.errors import DataError
from kerspec.guards import check_allocation
from kerspec.io.datafile import DataFile
from kerspec.spec.data import PathData, RandomData, check_suffix, parse_entry
from kerspec.training.arrays import Shape, check_samples, fit_input
from kerspec.training.data_files import (
    load_csv,
    load_npy,
    load_npz,
    npz_sample_weights,
    read_csv_inputs,
    read_npz_inputs,
)
from kerspec.training.targets import OutputInfo, fit_target

__all__ = ["Dataset", "OutputInfo", "arrays_dataset", "load_dataset", "load_inputs"]


@dataclass
class Dataset:
    """Arrays keyed by model input and output name; `y` is None when the data has no targets.

    `sample_weight` maps output names to per-sample loss weights (an .npz file's
    `sample_weight` key for a one-output model, or `<output>_sample_weight` keys).
    """

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray] | None
    source: str
    sample_weight: dict[str, np.ndarray] | None = None

    @property
    def samples(self) -> int:
        return next(iter(self.x.values())).shape[0]

    def subset(self, index) -> Dataset:
        """The samples at `index` (a slice or an index array) of every array."""

        def part(arrays):
            return None if arrays is None else {k: v[index] for k, v in arrays.items()}

        return Dataset(part(self.x), part(self.y), self.source, part(self.sample_weight))


def _random(
    entry: RandomData,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype,
    rng: np.random.Generator,
) -> Dataset:
    rng = np.random.default_rng(entry.seed) if entry.seed is not None else rng
    n = entry.samples

    # An unknown dimension (a variable sequence length) gets a small fixed size.
    def sized(shape: Shape) -> tuple[int, ...]:
        return tuple(10 if d is None else d for d in shape)

    shapes = [(n, *sized(s)) for s in inputs.values()]
    shapes += [(n, *sized(o.shape)) for o in outputs.values()]
    try:
        check_allocation(f"random data of {n:,} samples", shapes, max(dtype.itemsize, 8))
    except ValueError as error:
        raise DataError(str(error), where="data {source: random}") from None

    x = {name: rng.random((n, *sized(shape)), dtype=dtype) for name, shape in inputs.items()}
    y = {}
    for name, info in outputs.items():
        shape = sized(info.shape)
        if info.kind in ("sparse", "categorical"):
            labels = rng.integers(0, shape[-1], size=(n, *shape[:-1]))
            y[name] = labels if info.kind == "sparse" else np.eye(shape[-1], dtype=dtype)[labels]
        elif info.kind == "binary":
            y[name] = rng.integers(0, 2, size=(n, *shape)).astype(dtype)
        else:
            y[name] = rng.random((n, *shape), dtype=dtype)
    return Dataset(x=x, y=y, source="random")


def load_dataset(
    entry: PathData | RandomData | str | Mapping[str, Any],
    *,
    base_dir: Path,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype | str,
    rng: np.random.Generator,
    require_targets: bool = True,
) -> Dataset:
    """Read a data entry and check it against the model's inputs and outputs.

    Inputs come out as `dtype`; targets as int64 class indices for `sparse` outputs and as `dtype`
    otherwise. A .csv text target becomes class indices in sorted label order, so a file must
    hold every class. `y` is None only when `require_targets` is false and the file has none.
    """
    entry = parse_entry(entry)
    dtype = np.dtype(dtype)
    if isinstance(entry, RandomData):
        return _random(entry, inputs, outputs, dtype, rng)
    file = DataFile(entry.path, base_dir)
    suffix = PurePath(entry.path).suffix.lower()
    if suffix == ".npy":
        if require_targets:
            raise file.error("a .npy file holds inputs only; data with targets is .npz or .csv")
        return Dataset(x=load_npy(file, inputs, dtype), y=None, source=entry.path)
    load = load_npz if suffix == ".npz" else load_csv
    x, y = load(file, entry, inputs, outputs, dtype, require_targets)
    weights = npz_sample_weights(file, y, dtype) if suffix == ".npz" and y else None
    return Dataset(x=x, y=y, source=entry.path, sample_weight=weights)


def load_inputs(
    path: Path | str,
    *,
    inputs: dict[str, Shape],
    dtype: np.dtype | str,
    base_dir: Path | None = None,
    features: list[str] | None = None,
    exclude: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Read model inputs for prediction from a .npy, .npz or .csv file.

    A .npy file feeds a single-input model. A .npz file is keyed by input names (or `x` for one
    input); other keys are ignored. A .csv file feeds a single-input model from the `features`
    columns; by default from every column but those in `exclude` (an id column kept beside the
    predictions), leaving out text columns (such as a class name) when every column is more than
    the input takes.
    """
    try:
        suffix = check_suffix(str(path))
    except ValueError as error:
        raise DataError(str(error)) from None
    file = DataFile(path, base_dir)
    dtype = np.dtype(dtype)
    if suffix == ".npy":
        return load_npy(file, inputs, dtype)
    if suffix == ".npz":
        return read_npz_inputs(file, inputs, dtype)
    return read_csv_inputs(file, inputs, dtype, features, exclude)


class _Given:
    """Arrays handed to the Python API, named in errors as the call that gave them."""

    def __init__(self, where: str):
        self.where = where

    def error(self, message: str) -> DataError:
        return DataError(message, where=self.where)


def _by_name(given: Any, names: list[str], what: str, where: _Given) -> dict[str, Any]:
    """An array (one name), a list in `names` order, or a mapping by name."""
    def quoted(items: list) -> str:  # a name may be a plain word such as input
        return ", ".join(repr(str(item)) for item in items)

    if isinstance(given, Mapping):
        unknown = [k for k in given if k not in names]
        missing = [n for n in names if n not in given]
        if unknown or missing:
            raise where.error(
                f"expected {what} arrays keyed by {quoted(names)}"
                + (f"; no {what} named {quoted(unknown)}" if unknown else "")
                + (f"; missing {quoted(missing)}" if missing else "")
            )
        return dict(given)
    if isinstance(given, list | tuple) and len(names) > 1:
        if len(given) != len(names):
            raise where.error(f"expected {len(names)} {what} arrays ({quoted(names)}); received {len(given)}")
        return dict(zip(names, given))
    if len(names) > 1:
        raise where.error(f"the model has {len(names)} {what}s ({quoted(names)}): pass a list or a dict of arrays")
    return {names[0]: given}


def _array(value: Any, label: str, where: _Given) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise where.error(f"{label} is not an array: {error}") from None


def arrays_dataset(
    x: Any,
    y: Any,
    *,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype | str,
    where: str,
) -> Dataset:
    """A Dataset from arrays (`model.fit(x, y)`), checked as a data file's arrays are."""
    given, dtype = _Given(where), np.dtype(dtype)
    xs = {
        name: fit_input(given, f"x[{name!r}]", _array(a, f"x[{name!r}]", given), name, inputs[name], dtype)
        for name, a in _by_name(x, list(inputs), "input", given).items()
    }
    ys = {
        name: fit_target(given, f"y[{name!r}]", _array(a, f"y[{name!r}]", given), name, outputs[name], False, dtype)
        for name, a in _by_name(y, list(outputs), "output", given).items()
    }
    check_samples(given, {f"x[{k!r}]": v for k, v in xs.items()} | {f"y[{k!r}]": v for k, v in ys.items()})
    return Dataset(x=xs, y=ys, source=where)
