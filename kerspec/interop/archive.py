"""Model files from elsewhere, read as hostile input: zip archives, HDF5 files, JSON text.

Nothing is extracted to disk and nothing is unpickled. A zip member is read only when its name
is expected, its declared size is under a cap and within free memory, and it yields no more
bytes than it declared (a zip bomb lies about its size). HDF5 objects are read only through hard
links to plain datasets stored in the file itself: an external link, external storage or a
virtual dataset would make the HDF5 library open other files on this machine.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from kerspec.errors import KerspecError
from kerspec.guards import available_memory, format_bytes
from kerspec.io.npz import READ_ERRORS

# A model's JSON config is text describing layers: tens of kB for real models.
MAX_CONFIG_BYTES = 64 * 2**20
# Weights above this are refused even with the memory to hold them: kerspec trains on a CPU.
MAX_WEIGHTS_BYTES = 8 * 2**30
CHUNK = 2**20


class ModelFileError(KerspecError):
    """A model file from another framework is missing, malformed, hostile or not supported."""


def need_h5py():
    try:
        import h5py
    except ImportError:
        raise ModelFileError(
            "reading and writing Keras weights needs h5py: pip install 'kerspec[keras-io]'"
        ) from None
    return h5py


def _cap(limit: int) -> int:
    available = available_memory()
    return limit if available is None else min(limit, available)


def read_zip(path: Path, expected: dict[str, int], required: set[str]) -> dict[str, bytes]:
    """The members of the archive at `path` named in `expected` (name -> byte cap), in memory.

    Any other member, an unsafe member name, a missing required member, a member larger than
    its cap or than it declared is refused, naming the file and the member."""
    where = str(path)
    archive = _opened(lambda: zipfile.ZipFile(path), "zip archive", where)
    members: dict[str, bytes] = {}
    with archive:
        infos = archive.infolist()
        for info in infos:
            name = info.filename
            shown = repr(name) if not name.isprintable() else name
            if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or ":" in name:
                raise ModelFileError(f"member {shown} has an unsafe name (a path out of the archive)", where)
            if name not in expected:
                raise ModelFileError(
                    f"unexpected member {shown} (a Keras model archive holds only"
                    f" {', '.join(sorted(expected))})", where)
            if name in members:
                raise ModelFileError(f"member {shown} appears twice", where)
            cap = _cap(expected[name])
            if info.file_size > cap:
                raise ModelFileError(
                    f"member {name} declares {format_bytes(info.file_size)}, more than the"
                    f" {format_bytes(cap)} kerspec reads", where)
            members[name] = _read_member(archive, info, where)
    missing = sorted(required - set(members))
    if missing:
        raise ModelFileError(f"not a Keras model archive: no {', '.join(missing)}", where)
    return members


def _opened(open_, kind: str, where: str):
    try:
        return open_()
    except FileNotFoundError:
        raise ModelFileError("no such file", where) from None
    except IsADirectoryError:
        raise ModelFileError("is a folder, not a file", where) from None
    except READ_ERRORS as err:
        raise ModelFileError(f"not a readable {kind} ({_first_line(err)})", where) from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    buffer = io.BytesIO()
    try:
        with archive.open(info) as member:
            while chunk := member.read(CHUNK):
                buffer.write(chunk)
                if buffer.tell() > info.file_size:
                    raise ModelFileError(
                        f"member {info.filename} decompresses to more than the"
                        f" {format_bytes(info.file_size)} it declares (a zip bomb?)", where)
    except READ_ERRORS as err:
        raise ModelFileError(f"member {info.filename} cannot be read ({_first_line(err)})", where) from None
    return buffer.getvalue()


def parse_json(text: bytes | str, what: str, where: str):
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{what} is {format_bytes(len(text))}, more than kerspec reads", where)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ModelFileError(f"{what} is not valid JSON ({_first_line(err)})", where) from None


def _first_line(err: BaseException) -> str:
    text = str(err)
    return text.splitlines()[0] if text else type(err).__name__


class H5Reader:
    """Plain datasets and attributes of an HDF5 file, each checked before it is read."""

    def __init__(self, source: Path | bytes, where: str):
        h5py = need_h5py()
        self.h5py = h5py
        self.where = where
        self.file = _opened(lambda: h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r"),
                            "HDF5 file", where)

    def close(self) -> None:
        self.file.close()

    def fail(self, message: str):
        raise ModelFileError(message, self.where)

    def child(self, group, name: str):
        """The object `name` in `group`, if it is reached by a hard link; else None."""
        try:
            link = group.get(name, getlink=True)
            if link is None:
                return None
            if not isinstance(link, self.h5py.HardLink):
                self.fail(f"{group.name}/{name} is a link to another file or place, which kerspec never follows")
            return group[name]
        except READ_ERRORS as err:
            self.fail(f"{group.name}/{name} cannot be read ({_first_line(err)})")

    def names(self, group) -> list[str]:
        try:
            return list(group.keys())
        except READ_ERRORS as err:
            self.fail(f"{group.name} cannot be read ({_first_line(err)})")

    def is_group(self, obj) -> bool:
        return isinstance(obj, self.h5py.Group)

    def array(self, dataset, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A dataset of real numbers, of `shape` when given, read only after checking both."""
        name = dataset.name
        if not isinstance(dataset, self.h5py.Dataset):
            self.fail(f"{name} is not a dataset")
        try:
            if dataset.is_virtual or dataset.external:
                self.fail(f"{name} keeps its data outside the file, which kerspec never reads")
            stored_shape, dtype = tuple(dataset.shape), dataset.dtype
        except READ_ERRORS as err:
            self.fail(f"{name} cannot be read ({_first_line(err)})")
        if dtype.kind != "f" or dtype.itemsize > 8:
            self.fail(f"{name} holds {dtype}, not real numbers")
        if shape is not None and stored_shape != tuple(shape):
            self.fail(f"{name} has shape {stored_shape}, the model needs {tuple(shape)}")
        need = int(np.prod(stored_shape, dtype=np.float64)) * dtype.itemsize
        if need > _cap(MAX_WEIGHTS_BYTES):
            self.fail(f"{name} would need {format_bytes(need)}, more than kerspec reads")
        try:
            array = dataset[()]
        except READ_ERRORS as err:
            self.fail(f"{name} cannot be read ({_first_line(err)})")
        array = np.asarray(array)
        if not np.all(np.isfinite(array)):
            self.fail(f"{name} holds NaN or infinite values")
        return array

    def attribute(self, obj, name: str):
        """An attribute (a JSON config, a list of names), its size checked before it is read;
        None when there is none."""
        try:
            if name not in obj.attrs:
                return None
            attribute = obj.attrs.get_id(name)
            empty = attribute.shape is not None and 0 in attribute.shape  # has no storage
            size = 0 if empty else attribute.get_storage_size()
            if size > MAX_CONFIG_BYTES:
                self.fail(f"attribute {name} is {format_bytes(size)}, more than kerspec reads")
            return obj.attrs[name]
        except ModelFileError:
            raise
        except READ_ERRORS as err:
            self.fail(f"attribute {name} cannot be read ({_first_line(err)})")

    def text_attribute(self, obj, name: str) -> str | None:
        value = self.attribute(obj, name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        self.fail(f"attribute {name} is not text")

    def string_list(self, obj, name: str) -> list[str] | None:
        values = self.attribute(obj, name)
        if values is None:
            return None
        values = np.atleast_1d(values)
        if values.dtype.kind not in "OSU" and values.size:
            self.fail(f"attribute {name} is not a list of names")
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
