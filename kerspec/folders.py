"""Folders kerspec writes into, and what it may replace or delete there.

A run folder may be one the user already had (`--out proj`), so kerspec keeps a manifest in it,
`.kerspec-manifest.json`: every file it wrote and every temporary file it may have left. It
replaces only files the manifest lists (or new ones) and deletes only temporaries it lists; a
file it did not write is never touched. A name enters the manifest before its first temporary is
created, so a kill at any moment leaves nothing kerspec cannot recognise as its own.

The manifest's own first temporary is listed nowhere (there is no manifest before it), so
`.kerspec-manifest.json.XXXXXXXX.tmp`, like `.kerspec-manifest.json` and `.kerspec-lock`, is a
name kerspec keeps for itself in any folder it trains into.

`.kerspec-lock` holds the pid and start time of the process training in the folder, under an
advisory `flock`: the kernel releases it when the process dies, so a lock file left by a killed
run is stale and taken over, while a second training into a busy folder is refused.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from kerspec import io
from kerspec.errors import KerspecError, RunError
from kerspec.paths import FilePath, inside

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

MANIFEST = ".kerspec-manifest.json"
LOCK = ".kerspec-lock"
BOOKKEEPING = {MANIFEST, LOCK}
# What kerspec's writes in a manifest's folder leave when killed: `.NAME.TOKEN.tmp`.
TEMPORARY = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*\.[A-Za-z0-9_][A-Za-z0-9_.-]*\.[a-z0-9_]{8}\.tmp")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


Temporary = Annotated[str, Field(pattern=TEMPORARY.pattern, max_length=300)]


class ManifestData(BaseModel):
    """The manifest as read back: a file someone may have edited, so held to its schema."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at the first read

    kerspec_manifest: Literal[1] = 1
    files: list[FilePath] = Field(default_factory=list, max_length=100_000)
    temporaries: list[Temporary] = Field(default_factory=list, max_length=100_000)


class Manifest:
    def __init__(self, folder: Path, token: str):
        self.folder = folder
        self.token = token
        self.own_temporary = f"{MANIFEST}.{token}.tmp"
        data = read_manifest(folder)
        self.files: list[str] = list(dict.fromkeys(data.files))
        self.temporaries: list[str] = list(dict.fromkeys(data.temporaries))

    def owns(self, name: str) -> bool:
        return name in self.files

    def adopt(self, names: list[str]) -> None:
        """Files kerspec recognises as its own run's (resuming a folder written before
        manifests existed)."""
        self.files.extend(n for n in names if n not in self.files and (self.folder / n).is_file())

    def claim(self, name: str, temporary: str) -> None:
        """List `name` and its temporary before writing; refuse a file kerspec did not write."""
        changed = False
        if name not in self.files:
            path = self.folder / name
            if path.exists() or path.is_symlink():
                raise RunError(
                    f"{name} is not a file kerspec wrote here, and kerspec never replaces those;"
                    " move it away or choose another folder",
                    str(self.folder),
                )
            self.files.append(name)
            changed = True
        for listed in (temporary, self.own_temporary):
            if listed not in self.temporaries:
                self.temporaries.append(listed)
                changed = True
        if changed:
            self.save()

    def save(self) -> None:
        data = {"kerspec_manifest": 1, "files": self.files, "temporaries": self.temporaries}
        text = json.dumps(data, indent=1) + "\n"
        io.atomic_write(
            self.folder / MANIFEST,
            lambda f: f.write(text.encode("utf-8")),
            temporary=self.folder / self.own_temporary,
        )

    def remove_temporaries(self) -> list[str]:
        """Delete the temporaries killed writers left; the names of the files they were for."""
        removed = []
        for name in [*self.temporaries, *manifest_temporaries(self.folder)]:
            if _remove(self.folder, name):
                removed.append(name)
        self.temporaries = []
        return removed

    def remove_files(self) -> None:
        """`--overwrite`: delete every file an earlier run wrote here (and nothing else)."""
        for name in [*self.files, *self.temporaries]:
            _remove(self.folder, name)
        self.files, self.temporaries = [], []


def manifest_temporaries(folder: Path) -> list[str]:
    """The manifest's own temporaries: its first is listed nowhere, as no manifest exists
    before it; the names are kerspec's (see the module's docstring)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [n for n in names if n.startswith(f"{MANIFEST}.") and TEMPORARY.fullmatch(n)]


def _remove(folder: Path, name: str) -> bool:
    try:
        path = inside(folder, name) if not TEMPORARY.fullmatch(name) else folder / name
        if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(folder.resolve()):
            path.unlink()
            return True
    except (OSError, KerspecError):
        pass
    return False


def read_manifest(folder: Path) -> ManifestData:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return ManifestData()
    return io.read_json_as(path, _MANIFEST, MAX_MANIFEST_BYTES, "a valid kerspec manifest")


_MANIFEST = TypeAdapter(ManifestData)


# -- the lock ----------------------------------------------------------------------------------


class Lock:
    """The folder's training lock; `note` says when a killed run's lock was taken over."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None
        self.note: str | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _describe(_read_lock(fd))
                os.close(fd)
                raise RunError(
                    f"another kerspec ({holder}) is training in this folder; wait for it to end,"
                    " or train into another folder",
                    str(self.path.parent),
                ) from None
            # The holder before may have deleted the file between our open and flock.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_lock(fd)
        if previous:
            self.note = f"took over the lock of an earlier kerspec ({_describe(previous)}), which no longer runs"
        me = json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid()), "host": socket.gethostname()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still holding it: see acquire's samestat
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _read_lock(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {"pid": "unknown"}
    return data if isinstance(data, dict) else {"pid": "unknown"}


def _describe(holder: dict) -> str:
    parts = [f"pid {holder.get('pid', 'unknown')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    return ", ".join(str(p)[:80] for p in parts)


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, from /proc): with the pid, it tells a
    process from a later one that was given the same pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class OutputFolder:
    """Writes files by relative names checked against the folder (kerspec.paths); with a
    manifest, replaces only the files kerspec wrote."""

    def __init__(self, path: Path, *, manifest: bool = False):
        self.path = Path(path)
        self.token = secrets.token_hex(4)
        self.manifest = Manifest(self.path, self.token) if manifest else None

    def file(self, name: str) -> Path:
        return inside(self.path, name)

    def write(self, name: str, write: Callable[[IO[bytes]], None]) -> None:
        path = self.file(name)
        if self.manifest is None:
            io.atomic_write(path, write)
            return
        temporary = _temporary(name, self.token)
        self.manifest.claim(name, temporary)
        io.atomic_write(path, write, temporary=self.path / temporary)

    def write_text(self, name: str, text: str) -> None:
        self.write(name, lambda f: f.write(text.encode("utf-8")))


def _temporary(name: str, token: str) -> str:
    folder, _, base = name.rpartition("/")
    return f"{folder}/.{base}.{token}.tmp" if folder else f".{base}.{token}.tmp"
