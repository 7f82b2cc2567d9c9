"""Names and relative paths that come from a spec and become files kerspec writes.

A spec is untrusted (docs/security.md), so a value that names a file is held to a small grammar
when the spec is validated, where pydantic reports it at its FILE:LINE:COL: a name is an
identifier (letters, digits, `_`, `-`, `.`, starting with a letter, digit or `_`), and a file
path is such names joined by `/`: never absolute, never `..`, never hidden. At write time
`inside` checks once more, after resolving symlinks, that the file lands in its folder.

Each field of the spec schema that names a file carries `x-kerspec-path` in its JSON schema
(`name`, `file`, `pattern`, `content`; `read` for data files, which may be anywhere), so the
tests find every such field, including ones added later.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from kerspec.errors import KerspecError

MAX_NAME = 100
MAX_PATH = 200
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# A ModelCheckpoint field's format: width and precision of at most two digits, d or f. A wider
# one (`{epoch:0999999999d}`) would allocate as many characters as it asks for.
_FORMAT = re.compile(r"0?[0-9]{0,2}(\.[0-9]{1,2})?[df]?")
_SAMPLE_VALUE = -1234.5678  # formats as wide as a logged value can


def check_name(value: str) -> str:
    """An identifier-like name (a run folder, a layer): raises ValueError saying what is wrong."""
    if len(value) > MAX_NAME:
        raise ValueError(f"a name has at most {MAX_NAME} characters; this one has {len(value)}")
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{_quoted(value)} is not a name: use letters, digits, '_', '-' and '.', starting"
            " with a letter, a digit or '_'"
        )
    return value


def check_relative_path(value: str) -> str:
    """A file path relative to its folder, every part a name (see `check_name`)."""
    if len(value) > MAX_PATH:
        raise ValueError(f"a file path has at most {MAX_PATH} characters; this one has {len(value)}")
    if value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", value):
        raise ValueError(f"{_quoted(value)} is an absolute path; give a path relative to the run folder")
    for part in value.split("/"):
        if part in ("..", "."):
            raise ValueError(f"{_quoted(value)} leaves its folder ('{part}'); give a path inside it")
        if not _NAME.fullmatch(part):
            raise ValueError(
                f"{_quoted(value)} is not a plain file path: use names of letters, digits, '_',"
                " '-' and '.' (not starting with '.' or '-') joined by '/'"
            )
    return value


def check_pattern(value: str) -> str:
    """A relative file path with `{epoch}` or `{name:.2f}` fields (ModelCheckpoint's filepath)."""
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as err:
        raise ValueError(f"{_quoted(value)} is not a valid file name pattern ({err})") from None
    samples = {}
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not field.isidentifier() or conversion or not _FORMAT.fullmatch(spec or ""):
            raise ValueError(
                f"{_quoted(value)}: a field is a logged name with an optional format such as"
                " {epoch:02d} or {val_loss:.2f}"
            )
        samples[field] = 1 if field == "epoch" else _SAMPLE_VALUE
    check_relative_path(value.format(**samples))
    return value


def pattern_fields(value: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(value) if field]


def inside(folder: Path, relative: str) -> Path:
    """`folder / relative`, refused unless it stays inside `folder` once symlinks are resolved
    (a folder of the run may be a symlink someone put there)."""
    try:
        check_relative_path(relative)
    except ValueError as err:
        raise KerspecError(str(err), str(folder)) from None
    path = Path(folder) / relative
    base = Path(folder).resolve()
    if not path.resolve().is_relative_to(base):
        raise KerspecError(f"{relative} leads outside the folder (through a symlink)", str(folder))
    return path


def safe_folder_name(text: str) -> str:
    """A run folder name from a spec file's name (the user's own, not checked like a spec's
    `name`): every character outside a name's becomes '_'."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:MAX_NAME]
    return name if _NAME.fullmatch(name) else f"_{name}"[:MAX_NAME]


def _quoted(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _marked(kind: str):
    return Field(json_schema_extra={"x-kerspec-path": kind})


Name = Annotated[str, AfterValidator(check_name), _marked("name")]
# "" for "the default name".
NameOrEmpty = Annotated[str, AfterValidator(lambda v: check_name(v) if v else v), _marked("name")]
FilePath = Annotated[str, AfterValidator(check_relative_path), _marked("file")]
FilePattern = Annotated[str, AfterValidator(check_pattern), _marked("pattern")]
