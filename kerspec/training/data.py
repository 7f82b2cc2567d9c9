"""Data for training, evaluation and prediction: `.npz`, `.npy` and `.csv` files, or random data.

A spec's data entry is a path or a mapping (`DataEntry`). A file is checked against the model
before any training starts: which arrays feed which input and output, shapes, sample counts,
targets that fit each output's loss, and finite numbers. Each problem is one `DataError` that
names the file (as written and as resolved), the key or the line and column, and what was
expected next to what was received.

Files are read with `allow_pickle=False` and the `csv` module, so nothing in a data file is ever
executed.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np

from kerspec.errors import DataError
from kerspec.guards import check_allocation
from kerspec.io.npz import READ_ERRORS, check_npy_file, describe_read_error, read_npz_array
from kerspec.spec.data import PathData, RandomData, check_suffix, parse_entry

Shape = tuple[int | None, ...]
Kind = Literal["sparse", "categorical", "binary", "real"]

# Every way a damaged or hostile file makes numpy's readers fail; each becomes a DataError.
_READ_ERRORS = READ_ERRORS


@dataclass(frozen=True)
class OutputInfo:
    """What a model output's targets look like, as its loss reads them.

    `shape` is the output's shape without the batch dimension. `kind` is what the targets hold:
    class indices (`sparse`), one-hot rows (`categorical`), 0/1 values (`binary`) or real values.
    """

    shape: Shape
    kind: Kind


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


class _File:
    """A data file as written and as resolved, for opening it and for naming it in errors."""

    def __init__(self, path: Path | str, base_dir: Path | None):
        self.written = str(path)
        resolved = Path(path).expanduser()
        if not resolved.is_absolute() and base_dir is not None:
            resolved = Path(base_dir) / resolved
        self.path = resolved.absolute()
        if self.written == str(self.path):
            self.where = f"data file {self.written!r}"
        else:
            self.where = f"data file {self.written!r} (resolved: {self.path})"
        try:
            self.path.stat()
        except FileNotFoundError:
            raise self.error("file not found") from None
        except (OSError, ValueError) as error:  # a symlink loop, a name too long, a NUL byte
            reason = getattr(error, "strerror", None) or error
            raise self.error(f"cannot be opened: {reason}") from None
        if not self.path.is_file():
            raise self.error("is not a file")

    def error(self, message: str) -> DataError:
        return DataError(message, where=self.where)


Locate = Callable[[tuple[int, ...]], str]


def _at_index(index: tuple[int, ...]) -> str:
    return f"index {index[0]}" if len(index) == 1 else f"index {index}"


def _show(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float):
        if np.isnan(value):
            return "NaN"
        if np.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
    return repr(value)


def _first(mask: np.ndarray) -> tuple[int, ...] | None:
    if not mask.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _fits(shape: tuple[int, ...], expected: Shape) -> bool:
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))


def _names(names: list[str] | tuple[str, ...], limit: int = 12) -> str:
    # Names come from files: quote odd ones, so a newline in a key cannot forge a message line.
    shown = ", ".join(
        n if n.isprintable() and n.strip() == n and n else repr(n) for n in map(str, names[:limit])
    )
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _check_numbers(file: _File, label: str, array: np.ndarray, locate: Locate) -> None:
    if array.dtype.kind not in "biuf":
        raise file.error(f"{label} holds {array.dtype} values; expected numbers")
    if array.ndim == 0:
        raise file.error(f"{label} is a single number; expected an array with one row per sample")
    if array.shape[0] == 0:
        raise file.error(f"{label} has no samples (shape {array.shape})")
    if array.dtype.kind == "f":
        bad = _first(~np.isfinite(array))
        if bad is not None:
            raise file.error(f"{label} has {_show(array[bad])} at {locate(bad)}")


def _cast(file: _File, label: str, array: np.ndarray, dtype: np.dtype, locate: Locate):
    # Overflow is reported below, with the value and where it is.
    with np.errstate(over="ignore"):
        cast = array.astype(dtype, copy=False)
    bad = _first(~np.isfinite(cast)) if cast.dtype.kind == "f" else None
    if bad is not None:
        raise file.error(f"{label} has {_show(array[bad])} at {locate(bad)}, too large for {dtype}")
    return cast


def _fit_input(
    file: _File,
    label: str,
    array: np.ndarray,
    name: str,
    shape: Shape,
    dtype: np.dtype,
    locate: Locate = _at_index,
) -> np.ndarray:
    _check_numbers(file, label, array, locate)
    expected = (None, *shape)
    if not _fits(array.shape, expected):
        raise file.error(f"{label} has shape {array.shape} but input {name!r} expects {expected}")
    return _cast(file, label, array, dtype, locate)


def _classes(file: _File, name: str, shape: Shape) -> int:
    """The class count of a classification output: the size of its last dimension."""
    if not shape or shape[-1] is None:
        raise file.error(
            f"output {name!r} has shape {(None, *shape)}, so its class count (the last"
            " dimension) is unknown; class-index targets need a known class count"
        )
    return shape[-1]


def _class_indices(
    file: _File, label: str, y: np.ndarray, name: str, shape: Shape, locate: Locate
) -> np.ndarray:
    """Targets as int64 class indices for an output of `shape`; Keras takes (n,) and (n, 1)."""
    lead, classes = shape[:-1], _classes(file, name, shape)
    if _fits(y.shape, (None, *lead, 1)) and not _fits(y.shape, (None, *lead)):
        y = y.reshape(y.shape[:-1])
    if not _fits(y.shape, (None, *lead)):
        hint = "; these look like one-hot rows" if _fits(y.shape, (None, *shape)) else ""
        raise file.error(
            f"{label} has shape {y.shape} but output {name!r} takes class indices of shape"
            f" {(None, *lead)} or {(None, *lead, 1)}{hint}"
        )
    if y.dtype.kind == "f":
        bad = _first(y != np.floor(y))
        if bad is not None:
            raise file.error(
                f"{label} has label {_show(y[bad])} at {locate(bad)}, which is not a class index"
                f" (a whole number) for output {name!r}"
            )
    bad = _first((y < 0) | (y >= classes))
    if bad is not None:
        raise file.error(
            f"{label} has label {_show(y[bad])} at {locate(bad)}, outside the {classes} classes"
            f" of output {name!r} (expected 0 to {classes - 1})"
        )
    return y.astype(np.int64)


def _fit_target(
    file: _File,
    label: str,
    y: np.ndarray,
    name: str,
    info: OutputInfo,
    one_hot: bool,
    dtype: np.dtype,
    locate: Locate = _at_index,
) -> np.ndarray:
    _check_numbers(file, label, y, locate)
    shape = info.shape
    if info.kind == "sparse" or one_hot:
        if info.kind == "sparse" and one_hot:
            raise file.error(
                f"`one_hot: true` makes one-hot rows, but output {name!r} takes class indices"
                " (a sparse loss): remove `one_hot` or use a categorical loss"
            )
        indices = _class_indices(file, label, y, name, shape, locate)
        if info.kind == "sparse":
            return indices
        y = np.eye(shape[-1], dtype=dtype)[indices]
    if info.kind == "binary":
        bad = _first((y < 0) | (y > 1))
        if bad is not None:
            raise file.error(
                f"{label} has {_show(y[bad])} at {locate(bad)}, but output {name!r} takes"
                " binary targets between 0 and 1"
            )
    expected = (None, *shape)
    one_unit = len(shape) > 0 and shape[-1] == 1 and info.kind in ("binary", "real")
    if one_unit and _fits(y.shape, (None, *shape[:-1])):
        # Keras takes (n,) targets for a one-unit output.
        y = y.reshape(*y.shape, 1)
    if not _fits(y.shape, expected):
        hint = ""
        looks_sparse = _fits(y.shape, expected[:-1]) or _fits(y.shape, (*expected[:-1], 1))
        if info.kind == "categorical" and looks_sparse:
            hint = (
                "; these look like class indices: set `one_hot: true`, or use a sparse loss"
                " (sparse_categorical_crossentropy)"
            )
        raise file.error(
            f"{label} has shape {y.shape} but output {name!r} expects {expected}{hint}"
        )
    return _cast(file, label, y, dtype, locate)


def _check_samples(file: _File, arrays: dict[str, np.ndarray]) -> None:
    counts = {label: array.shape[0] for label, array in arrays.items()}
    first, n = next(iter(counts.items()))
    for label, count in counts.items():
        if count != n:
            raise file.error(f"{first} has {n} samples but {label} has {count}")


def _key_names(file: _File, given: str | list[str] | None, names: list[str], field: str):
    """The key to read for each model input (or output) name, from `x:` / `y:` if given."""
    if given is None:
        return None
    keys = [given] if isinstance(given, str) else list(given)
    if len(keys) != len(names):
        raise file.error(
            f"`{field}` names {len(keys)} key(s) ({_names(keys)}) but the model has {len(names)}"
            f" {'inputs' if field == 'x' else 'outputs'} ({_names(names)}); give one per"
            f" {'input' if field == 'x' else 'output'}, in order"
        )
    return dict(zip(names, keys))


class _Npz:
    """An open .npz archive whose arrays are read one key at a time, every failure a DataError."""

    def __init__(self, file: _File):
        self.file = file
        try:
            self.archive = np.load(file.path, allow_pickle=False)
        except _READ_ERRORS as error:
            raise file.error(f"cannot be read as .npz: {describe_read_error(error)}") from None
        if not isinstance(self.archive, np.lib.npyio.NpzFile):
            raise file.error("is a single .npy array, not an .npz archive of named arrays")
        self.keys = list(self.archive.files)

    def close(self) -> None:
        self.archive.close()

    def read(self, key: str) -> np.ndarray:
        try:
            return read_npz_array(self.archive, key)
        except _READ_ERRORS as error:
            reason = describe_read_error(error)
            raise self.file.error(f"key {key!r} cannot be read: {reason}") from None

    def find(self, names: list[str], given: dict[str, str] | None, fallback: str, role: str):
        """The key for each name: named by `x:`/`y:`, else the name, else `fallback` for one name.

        Returns None when no name has a key (and none was named), so targets can be optional.
        """
        if given is not None:
            missing = [k for k in given.values() if k not in self.keys]
            if missing:
                raise self.file.error(
                    f"has no key {missing[0]!r} (keys in the file: {_names(self.keys) or 'none'})"
                )
            return given
        found = {}
        for name in names:
            if name in self.keys:
                found[name] = name
            elif len(names) == 1 and fallback in self.keys:
                found[name] = fallback
        if not found:
            return None
        if len(found) < len(names):
            missing = next(n for n in names if n not in found)
            raise self.file.error(
                f"has no key {missing!r} for {role} {missing!r}"
                f" (keys in the file: {_names(self.keys)})"
            )
        return found

    def missing(self, names: list[str], fallback: str, role: str) -> DataError:
        if len(names) == 1:
            wanted = f"no {role} array: expected key {names[0]!r} or {fallback!r}"
        else:
            wanted = f"no {role} arrays: expected keys named after the {role}s ({_names(names)})"
        return self.file.error(f"has {wanted} (keys in the file: {_names(self.keys) or 'none'})")


def _npz_inputs(
    npz: _Npz, inputs: dict[str, Shape], given: dict[str, str] | None, dtype: np.dtype
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The inputs, and the key each was read from."""
    names = list(inputs)
    keys = npz.find(names, given, "x", "input")
    if keys is None:
        raise npz.missing(names, "x", "input")
    x = {
        name: _fit_input(npz.file, f"key {key!r}", npz.read(key), name, inputs[name], dtype)
        for name, key in keys.items()
    }
    return x, keys


def _load_npz(
    file: _File,
    entry: PathData,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype,
    require_targets: bool,
):
    x_keys = _key_names(file, entry.x, list(inputs), "x")
    y_keys = _key_names(file, entry.y, list(outputs), "y")
    with closing(_Npz(file)) as npz:
        x, used = _npz_inputs(npz, inputs, x_keys, dtype)
        keys = npz.find(list(outputs), y_keys, "y", "output")
        if keys is None and require_targets:
            raise npz.missing(list(outputs), "y", "output")
        y = None
        if keys is not None:
            y = {
                name: _fit_target(
                    file, f"key {key!r}", npz.read(key), name, outputs[name], entry.one_hot, dtype
                )
                for name, key in keys.items()
            }
    arrays = {f"key {key!r}": x[name] for name, key in used.items()}
    if y is not None:
        arrays.update({f"key {key!r}": y[name] for name, key in keys.items()})
    _check_samples(file, arrays)
    return x, y


def _load_npy(file: _File, inputs: dict[str, Shape], dtype: np.dtype) -> dict[str, np.ndarray]:
    if len(inputs) != 1:
        raise file.error(
            f"holds one array, but the model has {len(inputs)} inputs ({_names(list(inputs))});"
            " use an .npz file keyed by input name"
        )
    try:
        check_npy_file(file.path)
        array = np.load(file.path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise file.error(f"cannot be read as .npy: {describe_read_error(error)}") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise file.error("is an .npz archive, not a single .npy array")
    ((name, shape),) = inputs.items()
    return {name: _fit_input(file, "the array", array, name, shape, dtype)}


# A number needs a few dozen characters and a label not many more. Held as one numpy text array,
# every cell would take the widest one's room (a 160 kB file with one 130,000-character cell
# asked for 7.3 GiB), so cells stay Python strings, column by column, each of bounded length.
MAX_CSV_CELL = 1024


class _Csv:
    """A CSV file with a header, held as stripped text cells in columns; converted on demand."""

    def __init__(self, file: _File):
        self.file = file
        rows: list[list[str]] = []
        lines: list[int] = []
        header: list[str] | None = None
        header_line = 0
        try:
            with open(file.path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle, strict=True)
                for row in reader:
                    if not row:
                        continue
                    if header is None:
                        header = [cell.strip() for cell in row]
                        header_line = reader.line_num
                        continue
                    if len(row) != len(header):
                        raise file.error(
                            f"line {reader.line_num}: {len(row)} values, but the header (line {header_line})"
                            f" has {len(header)} columns"
                        )
                    widest = max(map(len, row))
                    if widest > MAX_CSV_CELL:
                        raise file.error(
                            f"line {reader.line_num}: a cell of {widest:,} characters; the limit is"
                            f" {MAX_CSV_CELL:,}"
                        )
                    rows.append([cell.strip() for cell in row])
                    lines.append(reader.line_num)
        except csv.Error as error:
            raise file.error(f"line {reader.line_num}: not valid CSV: {error}") from None
        except UnicodeDecodeError as error:
            raise file.error(f"is not UTF-8 text: {error.reason} at byte {error.start}") from None
        except OSError as error:
            raise file.error(f"cannot be read: {error.strerror or error}") from None
        if header is None:
            raise file.error("is empty; expected a header row naming the columns")
        if "" in header:
            raise file.error(f"line {header_line}: column {header.index('') + 1} has no name")
        repeated = [name for i, name in enumerate(header) if name in header[:i]]
        if repeated:
            raise file.error(f"line {header_line}: column {repeated[0]!r} appears twice")
        if not rows:
            raise file.error("has a header but no rows")
        self.header = header
        self.lines = np.asarray(lines)
        self.columns = [list(column) for column in zip(*rows)]

    def column(self, name: str) -> int:
        if name not in self.header:
            close = difflib.get_close_matches(name, self.header, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.file.error(f"has no column {name!r}{hint} (columns: {_names(self.header)})")
        return self.header.index(name)

    def _empty(self, j: int) -> None:
        bad = next((i for i, cell in enumerate(self.columns[j]) if not cell), None)
        if bad is not None:
            raise self.file.error(
                f"line {self.lines[bad]}, column {self.header[j]!r}: empty cell"
            )

    def numbers(self, j: int) -> np.ndarray | None:
        """Column j as float64, or None when a cell is not a number."""
        self._empty(j)
        column = self.columns[j]
        try:
            return np.fromiter(map(float, column), np.float64, len(column))
        except ValueError:
            return None

    def features(self, columns: list[int]) -> np.ndarray:
        values = []
        for j in columns:
            column = self.numbers(j)
            if column is None:
                i = next(i for i, cell in enumerate(self.columns[j]) if not _is_number(cell))
                raise self.file.error(
                    f"line {self.lines[i]}, column {self.header[j]!r}: {_show(self.columns[j][i])} is"
                    " not a number"
                )
            values.append(column)
        return np.stack(values, axis=1)

    def locate(self, columns: list[int]) -> Locate:
        def at(index: tuple[int, ...]) -> str:
            line = f"line {self.lines[index[0]]}"
            return f"{line}, column {self.header[columns[index[1]]]!r}" if len(index) > 1 else line

        return at


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _text_classes(file: _File, label: str, name: str, info: OutputInfo, one_hot: bool) -> int:
    """How many classes text labels must cover, so that sorted labels are the class indices."""
    if info.kind in ("sparse", "categorical") or one_hot:
        return _classes(file, name, info.shape)
    if info.kind == "binary" and info.shape == (1,):
        return 2
    raise file.error(
        f"{label} holds text, but output {name!r} takes {info.kind} targets of shape"
        f" {(None, *info.shape)}; text labels serve classification outputs"
    )


def _csv_target(
    table: _Csv, j: int, name: str, info: OutputInfo, entry: PathData, dtype: np.dtype
) -> np.ndarray:
    file, label = table.file, f"column {table.header[j]!r}"
    y = table.numbers(j)
    if y is None:
        labels = sorted(set(table.columns[j]))
        index = {label: i for i, label in enumerate(labels)}
        y = np.fromiter((index[cell] for cell in table.columns[j]), np.int64, len(table.columns[j]))
        classes = _text_classes(file, label, name, info, entry.one_hot)
        if len(labels) != classes:
            raise file.error(
                f"{label} holds {len(labels)} text labels ({_names(list(labels))}) but output"
                f" {name!r} has {classes} classes; text labels become class indices in sorted"
                " order, so the file must hold exactly one label per class"
            )
    return _fit_target(file, label, y, name, info, entry.one_hot, dtype, table.locate([j]))


def _load_csv(
    file: _File,
    entry: PathData,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype,
    require_targets: bool,
):
    if len(inputs) != 1:
        raise file.error(
            f"a .csv file feeds one input, but the model has {len(inputs)} inputs"
            f" ({_names(list(inputs))}); use an .npz file keyed by input name"
        )
    table = _Csv(file)
    if entry.target is not None:
        if len(outputs) != 1:
            raise file.error(
                f"`target` names one column, but the model has {len(outputs)} outputs"
                f" ({_names(list(outputs))}); name the columns after the outputs instead"
            )
        targets = {next(iter(outputs)): table.column(entry.target)}
    else:
        # Without `target`, columns named after the model's outputs hold its targets.
        targets = {name: table.header.index(name) for name in outputs if name in table.header}
        if targets and len(targets) < len(outputs):
            missing = next(name for name in outputs if name not in targets)
            raise file.error(f"has no column {missing!r} for output {missing!r}")
        if not targets and require_targets:
            raise file.error(
                f"has no target column: name it with `target:` (columns: {_names(table.header)})"
            )
    if entry.features is not None:
        columns = [table.column(name) for name in entry.features]
    else:
        columns = [j for j in range(len(table.header)) if j not in targets.values()]
        if not columns:
            raise file.error("has no feature columns besides the target")
    x = _csv_inputs(table, columns, inputs, dtype)
    y = {
        name: _csv_target(table, j, name, outputs[name], entry, dtype)
        for name, j in targets.items()
    }
    return x, y or None


def _csv_inputs(
    table: _Csv, columns: list[int], inputs: dict[str, Shape], dtype: np.dtype
) -> dict[str, np.ndarray]:
    ((name, shape),) = inputs.items()
    if len(shape) != 1 or shape[0] not in (None, len(columns)):
        raise table.file.error(
            f"has {len(columns)} feature columns ({_names([table.header[j] for j in columns])})"
            f" but input {name!r} expects {(None, *shape)}"
        )
    x = table.features(columns)
    return {name: _fit_input(table.file, "features", x, name, shape, dtype, table.locate(columns))}


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
    file = _File(entry.path, base_dir)
    suffix = PurePath(entry.path).suffix.lower()
    if suffix == ".npy":
        if require_targets:
            raise file.error("a .npy file holds inputs only; data with targets is .npz or .csv")
        return Dataset(x=_load_npy(file, inputs, dtype), y=None, source=entry.path)
    load = _load_npz if suffix == ".npz" else _load_csv
    x, y = load(file, entry, inputs, outputs, dtype, require_targets)
    weights = _npz_sample_weights(file, y, dtype) if suffix == ".npz" and y else None
    return Dataset(x=x, y=y, source=entry.path, sample_weight=weights)


def _npz_sample_weights(file: _File, y: dict[str, np.ndarray], dtype: np.dtype):
    """`<output>_sample_weight` keys, or `sample_weight` for a one-output model, checked: one
    finite, non-negative weight per sample (or per sample and time step, as the target)."""
    with closing(_Npz(file)) as npz:
        keys = {name: f"{name}_sample_weight" for name in y if f"{name}_sample_weight" in npz.keys}
        if "sample_weight" in npz.keys:
            if len(y) != 1:
                raise file.error(
                    f"key 'sample_weight' is ambiguous for {len(y)} outputs; name the keys"
                    f" after the outputs ({_names([f'{n}_sample_weight' for n in y])})"
                )
            keys.setdefault(next(iter(y)), "sample_weight")
        weights = {}
        for name, key in keys.items():
            array, target = npz.read(key), y[name]
            label = f"key {key!r}"
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise file.error(f"{label} holds {array.dtype} values; sample weights are numbers")
            if array.ndim == 0 or array.shape != target.shape[: array.ndim]:
                raise file.error(
                    f"{label} has shape {array.shape}; sample weights for output {name!r} need"
                    f" one per sample: {target.shape[:1]}"
                    + (f" or {target.shape[:2]}" if target.ndim > 1 else "")
                )
            bad = ~np.isfinite(array) | (array < 0)
            if bad.any():
                index = tuple(int(i) for i in np.argwhere(bad)[0])
                raise file.error(
                    f"{label} holds {array[index]!r} at index {list(index)}; sample weights"
                    " must be finite and non-negative"
                )
            weights[name] = array.astype(dtype)
    return weights or None


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
    file = _File(path, base_dir)
    dtype = np.dtype(dtype)
    if suffix == ".npy":
        return _load_npy(file, inputs, dtype)
    if suffix == ".npz":
        with closing(_Npz(file)) as npz:
            x, used = _npz_inputs(npz, inputs, None, dtype)
        _check_samples(file, {f"key {key!r}": x[name] for name, key in used.items()})
        return x
    if len(inputs) != 1:
        raise file.error(
            f"a .csv file feeds one input, but the model has {len(inputs)} inputs"
            f" ({_names(list(inputs))}); use an .npz file keyed by input name"
        )
    table = _Csv(file)
    if features is not None:
        columns = [table.column(name) for name in features]
    else:
        left_out = {table.column(name) for name in exclude}
        columns = [j for j in range(len(table.header)) if j not in left_out]
        (shape,) = inputs.values()
        if len(shape) == 1 and shape[0] is not None and shape[0] < len(columns):
            numeric = [j for j in columns if table.numbers(j) is not None]
            if len(numeric) == shape[0]:
                columns = numeric
    return _csv_inputs(table, columns, inputs, dtype)


def read_csv_columns(path: Path | str, names: list[str], base_dir: Path | None = None) -> dict[str, list[str]]:
    """The text of some columns of a CSV file (an id column, text labels), by column name."""
    table = _Csv(_File(path, base_dir))
    return {name: list(table.columns[table.column(name)]) for name in names}


def csv_text_labels(entry: PathData, column: str, base_dir: Path) -> list[str] | None:
    """The text labels of a CSV target column in class-index order (sorted), as training mapped
    them; None when the column holds numbers or the file cannot be read."""
    try:
        (cells,) = read_csv_columns(entry.path, [column], base_dir).values()
    except DataError:
        return None
    if all(_is_number(cell) for cell in cells):
        return None
    return sorted(set(cells))


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
        name: _fit_input(given, f"x[{name!r}]", _array(a, f"x[{name!r}]", given), name, inputs[name], dtype)
        for name, a in _by_name(x, list(inputs), "input", given).items()
    }
    ys = {
        name: _fit_target(given, f"y[{name!r}]", _array(a, f"y[{name!r}]", given), name, outputs[name], False, dtype)
        for name, a in _by_name(y, list(outputs), "output", given).items()
    }
    _check_samples(given, {f"x[{k!r}]": v for k, v in xs.items()} | {f"y[{k!r}]": v for k, v in ys.items()})
    return Dataset(x=xs, y=ys, source=where)
