"""A user's data file, named in every error as written and as resolved; names read from files,
shown safely."""

from __future__ import annotations

from pathlib import Path

from kerspec.errors import DataError


class DataFile:
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


def some_names(keys: list[str], limit: int = 12) -> str:
    # Keys come from the file: show odd ones quoted, so a newline cannot forge a message line.
    shown = ", ".join(k if k.isprintable() and k.strip() == k and k else repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
