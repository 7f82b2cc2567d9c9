"""Reading .npy and .npz files safely: never a pickle, never an allocation a header only claims.

An array file's header states a shape and a dtype; numpy would allocate what it states before
reading a byte of data. Here the header is read first and its claim held against the bytes the
file (or the zip member) really holds and against the memory this machine has (kerspec.guards).
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from kerspec import guards
from kerspec.errors import DataError
from kerspec.io.datafile import DataFile, some_names

# Every way numpy's .npy/.npz readers fail on damaged or hostile bytes. The header is a Python
# literal read with ast.literal_eval, so a malformed one raises what the tokenizer or parser does.
READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    tokenize.TokenError,
    SyntaxError,
    RecursionError,
    MemoryError,
    OverflowError,
    # zipfile: an unknown compression method, an encrypted member.
    NotImplementedError,
    RuntimeError,
)


def describe_read_error(err: BaseException) -> str:
    """What went wrong reading an array file, in a user's words (not numpy's advice to trust it)."""
    text = str(err)
    if "allow_pickle" in text or "Object arrays" in text or "pickled" in text:
        return "it holds Python objects, which kerspec never loads (allow_pickle=False)"
    if isinstance(err, (tokenize.TokenError, SyntaxError, RecursionError)):
        return "its array header is malformed"
    if isinstance(err, MemoryError):
        return "not enough memory to read it"
    return text.splitlines()[0] if text else type(err).__name__


def _npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, read without reading (or allocating) the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return shape, dtype


def _check_array_size(shape, dtype: np.dtype, stored: int) -> None:
    """The header's claim against the bytes that hold the data, and against free memory."""
    if dtype.hasobject:
        # np.load refuses these itself, with allow_pickle=False; say why in the caller's words.
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    need = math.prod(shape) * dtype.itemsize
    if need > stored:
        raise ValueError(
            f"its header claims shape {tuple(shape)} of {dtype} ({guards.format_bytes(need)}) but the"
            f" file holds {guards.format_bytes(stored)} of data (truncated or forged)"
        )
    guards.check_allocation(f"the array of shape {tuple(shape)}", [shape], dtype.itemsize)


def check_npy_file(path: Path) -> None:
    """Raise ValueError when an .npy file's header promises data the file does not hold."""
    with open(path, "rb") as fp:
        if fp.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            return  # not an .npy file: np.load says what it is (an .npz, a pickle it refuses)
        fp.seek(0)
        shape, dtype = _npy_header(fp)
        stored = os.fstat(fp.fileno()).st_size - fp.tell()
    _check_array_size(shape, dtype, stored)


def read_npz_array(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of an open .npz archive, its header checked before its data is read.

    A zip member's size is in the archive's directory, and the member cannot yield more bytes
    than that, so a header claiming more (a forged shape, a decompression bomb) is refused here.
    """
    names = archive.zip.namelist()
    member = key if key in names else f"{key}.npy"
    info = archive.zip.getinfo(member)
    with archive.zip.open(member) as fp:
        if fp.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            raise ValueError(f"member {member!r} is not a NumPy array")
    with archive.zip.open(member) as fp:
        shape, dtype = _npy_header(fp)
        header = fp.tell()
    _check_array_size(shape, dtype, info.file_size - header)
    return archive[key]


class NpzArchive:
    """An open .npz archive whose arrays are read one key at a time, every failure a DataError."""

    def __init__(self, file: DataFile):
        self.file = file
        try:
            self.archive = np.load(file.path, allow_pickle=False)
        except READ_ERRORS as error:
            raise file.error(f"cannot be read as .npz: {describe_read_error(error)}") from None
        if not isinstance(self.archive, np.lib.npyio.NpzFile):
            raise file.error("is a single .npy array, not an .npz archive of named arrays")
        self.keys = list(self.archive.files)

    def close(self) -> None:
        self.archive.close()

    def read(self, key: str) -> np.ndarray:
        try:
            return read_npz_array(self.archive, key)
        except READ_ERRORS as error:
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
                    f"has no key {missing[0]!r} (keys in the file: {some_names(self.keys) or 'none'})"
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
                f" (keys in the file: {some_names(self.keys)})"
            )
        return found

    def missing(self, names: list[str], fallback: str, role: str) -> DataError:
        if len(names) == 1:
            wanted = f"no {role} array: expected key {names[0]!r} or {fallback!r}"
        else:
            wanted = f"no {role} arrays: expected keys named after the {role}s ({some_names(names)})"
        return self.file.error(f"has {wanted} (keys in the file: {some_names(self.keys) or 'none'})")


def read_npy(file: DataFile) -> np.ndarray:
    """The one array of a .npy file."""
    try:
        check_npy_file(file.path)
        array = np.load(file.path, allow_pickle=False)
    except READ_ERRORS as error:
        raise file.error(f"cannot be read as .npy: {describe_read_error(error)}") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise file.error("is an .npz archive, not a single .npy array")
    return array
