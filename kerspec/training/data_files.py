"""A data file's arrays matched to the model: which keys or columns feed which input and output,
each checked (kerspec.training.arrays, kerspec.training.targets) and named in errors by its key
or its line and column."""

from __future__ import annotations

from contextlib import closing

import numpy as np

from kerspec.io.csv import CsvTable
from kerspec.io.datafile import DataFile, some_names
from kerspec.io.npz import NpzArchive, read_npy
from kerspec.spec.data import PathData
from kerspec.training.arrays import Shape, check_samples, fit_input
from kerspec.training.targets import OutputInfo, fit_target, text_targets


def _key_names(file: DataFile, given: str | list[str] | None, names: list[str], field: str):
    """The key to read for each model input (or output) name, from `x:` / `y:` if given."""
    if given is None:
        return None
    keys = [given] if isinstance(given, str) else list(given)
    if len(keys) != len(names):
        raise file.error(
            f"`{field}` names {len(keys)} key(s) ({some_names(keys)}) but the model has {len(names)}"
            f" {'inputs' if field == 'x' else 'outputs'} ({some_names(names)}); give one per"
            f" {'input' if field == 'x' else 'output'}, in order"
        )
    return dict(zip(names, keys))


def _npz_inputs(
    npz: NpzArchive, inputs: dict[str, Shape], given: dict[str, str] | None, dtype: np.dtype
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The inputs, and the key each was read from."""
    names = list(inputs)
    keys = npz.find(names, given, "x", "input")
    if keys is None:
        raise npz.missing(names, "x", "input")
    x = {
        name: fit_input(npz.file, f"key {key!r}", npz.read(key), name, inputs[name], dtype)
        for name, key in keys.items()
    }
    return x, keys


def load_npz(
    file: DataFile,
    entry: PathData,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype,
    require_targets: bool,
):
    x_keys = _key_names(file, entry.x, list(inputs), "x")
    y_keys = _key_names(file, entry.y, list(outputs), "y")
    with closing(NpzArchive(file)) as npz:
        x, used = _npz_inputs(npz, inputs, x_keys, dtype)
        keys = npz.find(list(outputs), y_keys, "y", "output")
        if keys is None and require_targets:
            raise npz.missing(list(outputs), "y", "output")
        y = None
        if keys is not None:
            y = {
                name: fit_target(
                    file, f"key {key!r}", npz.read(key), name, outputs[name], entry.one_hot, dtype
                )
                for name, key in keys.items()
            }
    arrays = {f"key {key!r}": x[name] for name, key in used.items()}
    if y is not None:
        arrays.update({f"key {key!r}": y[name] for name, key in keys.items()})
    check_samples(file, arrays)
    return x, y


def npz_sample_weights(file: DataFile, y: dict[str, np.ndarray], dtype: np.dtype):
    """`<output>_sample_weight` keys, or `sample_weight` for a one-output model, checked: one
    finite, non-negative weight per sample (or per sample and time step, as the target)."""
    with closing(NpzArchive(file)) as npz:
        keys = {name: f"{name}_sample_weight" for name in y if f"{name}_sample_weight" in npz.keys}
        if "sample_weight" in npz.keys:
            if len(y) != 1:
                raise file.error(
                    f"key 'sample_weight' is ambiguous for {len(y)} outputs; name the keys"
                    f" after the outputs ({some_names([f'{n}_sample_weight' for n in y])})"
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


def load_npy(file: DataFile, inputs: dict[str, Shape], dtype: np.dtype) -> dict[str, np.ndarray]:
    if len(inputs) != 1:
        raise file.error(
            f"holds one array, but the model has {len(inputs)} inputs ({some_names(list(inputs))});"
            " use an .npz file keyed by input name"
        )
    ((name, shape),) = inputs.items()
    return {name: fit_input(file, "the array", read_npy(file), name, shape, dtype)}


def load_csv(
    file: DataFile,
    entry: PathData,
    inputs: dict[str, Shape],
    outputs: dict[str, OutputInfo],
    dtype: np.dtype,
    require_targets: bool,
):
    table = _one_input_table(file, inputs)
    if entry.target is not None:
        if len(outputs) != 1:
            raise file.error(
                f"`target` names one column, but the model has {len(outputs)} outputs"
                f" ({some_names(list(outputs))}); name the columns after the outputs instead"
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
                f"has no target column: name it with `target:` (columns: {some_names(table.header)})"
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
    table: CsvTable, columns: list[int], inputs: dict[str, Shape], dtype: np.dtype
) -> dict[str, np.ndarray]:
    ((name, shape),) = inputs.items()
    if len(shape) != 1 or shape[0] not in (None, len(columns)):
        raise table.file.error(
            f"has {len(columns)} feature columns ({some_names([table.header[j] for j in columns])})"
            f" but input {name!r} expects {(None, *shape)}"
        )
    x = table.features(columns)
    return {name: fit_input(table.file, "features", x, name, shape, dtype, table.locate(columns))}


def _csv_target(
    table: CsvTable, j: int, name: str, info: OutputInfo, entry: PathData, dtype: np.dtype
) -> np.ndarray:
    file, label = table.file, f"column {table.header[j]!r}"
    y = table.numbers(j)
    if y is None:
        y = text_targets(file, label, table.columns[j], name, info, entry.one_hot)
    return fit_target(file, label, y, name, info, entry.one_hot, dtype, table.locate([j]))


def read_npz_inputs(file: DataFile, inputs: dict[str, Shape], dtype: np.dtype) -> dict[str, np.ndarray]:
    """Inputs for prediction from an .npz file keyed by input names (or `x` for one input)."""
    with closing(NpzArchive(file)) as npz:
        x, used = _npz_inputs(npz, inputs, None, dtype)
    check_samples(file, {f"key {key!r}": x[name] for name, key in used.items()})
    return x


def read_csv_inputs(
    file: DataFile,
    inputs: dict[str, Shape],
    dtype: np.dtype,
    features: list[str] | None,
    exclude: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Inputs for prediction from the `features` columns of a .csv file, else from every column
    but those in `exclude`, leaving out text columns when every column is more than the input
    takes."""
    table = _one_input_table(file, inputs)
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


def _one_input_table(file: DataFile, inputs: dict[str, Shape]) -> CsvTable:
    if len(inputs) != 1:
        raise file.error(
            f"a .csv file feeds one input, but the model has {len(inputs)} inputs"
            f" ({some_names(list(inputs))}); use an .npz file keyed by input name"
        )
    return CsvTable(file)
