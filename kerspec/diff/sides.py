"""Reading the two sides of `kerspec diff`: a spec path, or `REV:path` read from git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kerspec import api
from kerspec.errors import KerspecError, SpecError, Where
from kerspec.spec import parse_spec
from kerspec.spec.source import MAX_SPEC_BYTES, read_spec_text

GIT_TIMEOUT_SECONDS = 60


def load_side(text: str) -> api.Model:
    """A spec path, or `REV:path` when no file has that name and the text has a colon."""
    path = Path(text)
    if ":" in text and not os.path.lexists(text):  # False, not an error, for a name too long
        rev, _, inside = text.partition(":")
        spec_text = read_revision(text, rev, inside)
        return api.Model(parse_spec(spec_text, text, path=Path(inside)), seed=0)
    return api.Model(parse_spec(read_spec_text(path, text), text, path=path), seed=0)


def _git_error(text: str, message: str) -> SpecError:
    return SpecError([KerspecError(message, Where(text))])


def read_revision(text: str, rev: str, path: str) -> str:
    """The file `path` at revision `rev`, through git with an argument list, never a shell.

    The names go to `git cat-file --batch-check` on its standard input, where nothing can be
    taken for an option; the blob is then read by the object id git answered with.
    """
    if rev.startswith("-"):
        raise _git_error(
            text, f"{rev!r} is not a revision (REV:path, e.g. HEAD~1:specs/model.yaml)"
        )
    if not path:
        raise _git_error(text, "REV:path names no file after the colon")
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise _git_error(repr(text), "REV:path holds a control character")
    queries = ([f"{rev}^{{tree}}"] if rev else []) + [text]
    answers = (
        _git(text, ["cat-file", "--batch-check"], "".join(q + "\n" for q in queries))
        .decode("utf-8", "replace")
        .splitlines()
    )
    if len(answers) != len(queries):
        raise _git_error(text, "git gave an unexpected answer")
    if rev and answers[0].endswith(" missing"):
        raise _git_error(text, f"no revision {rev!r} in this git repository")
    parts = answers[-1].split()
    if answers[-1].endswith((" missing", " ambiguous")) or len(parts) != 3:
        where = f"revision {rev!r}" if rev else "the git index"
        raise _git_error(
            text,
            f"{path!r} is not in {where} (paths are from the top of the repository; ./ for this folder)",
        )
    object_id, kind, size = parts
    if kind != "blob":
        raise _git_error(text, f"is a {'folder' if kind == 'tree' else kind}, not a spec file")
    if int(size) > MAX_SPEC_BYTES:
        raise _git_error(text, f"spec is {int(size):,} bytes; the limit is {MAX_SPEC_BYTES:,}")
    raw = _git(text, ["cat-file", "blob", object_id], "")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _git_error(text, f"not UTF-8 text (byte 0x{raw[err.start]:02x})") from None


def _git(text: str, args: list[str], stdin: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args],
            input=stdin.encode("utf-8"),
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise _git_error(text, "reading REV:path needs git, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise _git_error(text, f"git did not answer within {GIT_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[0].removeprefix("fatal: ") if lines else f"exit status {done.returncode}"
        raise _git_error(text, f"git cannot read it: {reason}")
    return done.stdout
