"""Files kerspec writes and reads back: weights, predictions, run folders.

Every write goes to a temporary file in the destination's folder and is renamed over the
destination only when complete, so an interrupted or killed process never leaves a half-written
file where a good one was.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from pydantic import TypeAdapter, ValidationError

from kerspec.errors import DataError, KerspecError, RunError, WeightsError, first_error
from kerspec.io.datafile import some_names
from kerspec.io.npz import READ_ERRORS, check_npy_file, describe_read_error, read_npz_array


def atomic_write(
    path: Path, write: Callable[[IO[bytes]], None], *, temporary: Path | None = None, replace: bool = True
) -> None:
    """Write `path` through `write(file)` all or nothing. `temporary` names the temporary file
    (a folder's manifest lists it beforehand, see kerspec.folders); else mkstemp picks one. With
    `replace=False`, never over a file that exists (even one made while writing)."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if temporary is None:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        else:
            tmp = str(temporary)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise KerspecError(f"cannot write: {err.strerror}", str(path)) from None
    try:
        with os.fdopen(fd, "wb") as file:
            # The temporary file is private (0600); give it the mode a plain open() would.
            os.chmod(tmp, _mode_for(path))
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails, unlike a rename, where a file exists
            os.unlink(tmp)
        _sync_folder(folder)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, FileExistsError):
            raise KerspecError("exists; kerspec does not replace it (choose another name, or"
                               " pass --overwrite)", str(path)) from None
        if isinstance(err, OSError):
            raise KerspecError(f"cannot write: {err.strerror}", str(path)) from None
        raise


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash of the machine, not only of the process, then
    finds the new file). Not every system can open a folder for this; there it is skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def read_json_as(path: Path, adapter: TypeAdapter, limit: int, what: str):
    """A JSON file kerspec wrote and reads back (run.json, the manifest, ...), held to
    `adapter`'s schema: its size first, then its content; RunError naming the file otherwise."""
    try:
        if path.stat().st_size > limit:
            raise RunError(f"is larger than {limit:,} bytes; not {what}", str(path))
        return adapter.validate_json(path.read_bytes())
    except OSError as err:
        raise RunError(f"cannot be read: {err.strerror}", str(path)) from None
    except ValidationError as err:
        raise RunError(f"not {what}: {first_error(err)}", str(path)) from None


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_weights(path: Path, params: dict[str, dict[str, np.ndarray]], *, replace: bool = True) -> None:
    """One array per weight, keyed `LAYER/WEIGHT` with Keras's names and layouts."""
    atomic_write(path, lambda f: save_weights_to(f, params), replace=replace)


def save_weights_to(file: IO[bytes], params: dict[str, dict[str, np.ndarray]]) -> None:
    np.savez(file, **{f"{layer}/{name}": w for layer, ws in params.items() for name, w in ws.items()})


def read_npz(path: Path, error: type[KerspecError]) -> dict[str, np.ndarray]:
    """Every array of an .npz file, refusing pickles; damage becomes `error`, naming the file."""
    try:
        check_npy_file(path)  # a forged .npy header is refused before numpy allocates for it
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise error("is one .npy array, not an .npz archive of named arrays", str(path))
        with archive:
            return {key: read_npz_array(archive, key) for key in archive.files}
    except FileNotFoundError:
        raise error("no such file", str(path)) from None
    except IsADirectoryError:
        raise error("is a folder, not a file", str(path)) from None
    except READ_ERRORS as err:
        raise error(f"not a readable .npz file ({describe_read_error(err)})", str(path)) from None


def load_weights(path: Path, params: dict[str, dict[str, np.ndarray]]) -> None:
    """Copy the file's arrays into `params` in place, after checking every name and shape."""
    arrays = read_npz(path, WeightsError)
    expected = {f"{layer}/{name}": w for layer, ws in params.items() for name, w in ws.items()}
    problems = []
    missing = [k for k in expected if k not in arrays]
    extra = [k for k in arrays if k not in expected]
    if missing:
        problems.append(f"missing {some_names(missing)}")
    if extra:
        problems.append(f"unexpected {some_names(extra)}")
    for key, target in expected.items():
        array = arrays.get(key)
        if array is None:
            continue
        if array.shape != target.shape:
            problems.append(f"{key} has shape {array.shape}, the model needs {target.shape}")
        elif array.dtype.kind not in "iuf":  # not bool, complex, timedelta, text or records
            problems.append(f"{key} has dtype {array.dtype}, expected real numbers")
        elif not np.all(np.isfinite(array)):
            problems.append(f"{key} holds NaN or infinite values")
        else:
            with np.errstate(over="ignore"):
                if not np.all(np.isfinite(array.astype(target.dtype))):
                    problems.append(f"{key} holds values too large for {target.dtype}")
    if problems:
        raise WeightsError("weights do not fit the model: " + "; ".join(problems), str(path))
    for key, target in expected.items():
        target[...] = arrays[key]


def write_predictions(path: Path, predictions: dict[str, np.ndarray]) -> None:
    """By extension: .npz keyed by output name, .npy for one output, .csv with a header."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        write_npz(path, predictions)
    elif suffix == ".npy":
        if len(predictions) != 1:
            raise DataError(
                f"a .npy file holds one array; the model has {len(predictions)} outputs "
                "(use .npz or .csv)", str(path)
            )
        (array,) = predictions.values()
        atomic_write(path, lambda f: np.save(f, array))
    elif suffix == ".csv":
        write_text(path, _csv_text(predictions))
    else:
        raise DataError(
            f"unsupported prediction file type {suffix or '(none)'!r}: use .npz, .npy or .csv",
            str(path),
        )


def _csv_text(predictions: dict[str, np.ndarray]) -> str:
    columns, header = [], []
    for name, array in predictions.items():
        flat = array.reshape(len(array), -1)
        columns.append(flat)
        if flat.shape[1] == 1:
            header.append(name)
        else:
            header.extend(f"{name}_{i}" for i in range(flat.shape[1]))
    table = np.concatenate(columns, axis=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([repr(float(v)) for v in row] for row in table)
    return buffer.getvalue()
