"""CSVLogger: the epoch log as a CSV file, appended to a previous run's when asked."""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from kerspec.errors import RunError
from kerspec.folders import OutputFolder
from kerspec.paths import FilePath
from kerspec.training.callbacks.base import CALLBACKS, CallbackConfig
from kerspec.training.session import Callback, CallbackState

# An appended CSVLogger log is read back whole, and kept in every checkpoint.
MAX_LOG_BYTES = 64 * 1024 * 1024


@CALLBACKS.register("CSVLogger", "csv_logger")
class CSVLoggerConfig(CallbackConfig):
    """Keras's epoch log as CSV in `filename` (relative to the run folder): a 0-based `epoch`
    column and the logged names in sorted order."""

    type: Literal["CSVLogger"] = "CSVLogger"
    filename: FilePath = "training.log"
    # Part of the file's content: only the usual separators, never a quote or a line break.
    separator: Annotated[
        Literal[",", ";", "\t", "|", " "], Field(json_schema_extra={"x-kerspec-path": "content"})
    ] = ","
    append: bool = False

    def build(self, folder=None):
        return CSVLogger(self, folder)

    def files(self):
        return [self.filename]


class CSVLogger(Callback):
    """Rewritten whole (atomically) after every epoch, so the file is never half a line."""

    class State(CallbackState):
        keys: list[str] | None
        text: str = Field(max_length=MAX_LOG_BYTES)

    def __init__(self, config: CSVLoggerConfig, folder: OutputFolder | None):
        self.config = config
        self.folder = folder or OutputFolder(Path.cwd())
        self.text = ""
        self.keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        self.keys = None
        self.text = ""
        path = self.folder.file(self.config.filename)
        if self.config.append and path.is_file():
            self.text = read_log(path)

    def on_epoch_end(self, epoch, logs):
        buffer = _io.StringIO()
        writer = csv.writer(buffer, delimiter=self.config.separator, lineterminator="\n")
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
            if not self.text:
                writer.writerow(["epoch", *self.keys])
        writer.writerow([epoch, *(_csv_value(logs.get(k, "NA")) for k in self.keys)])
        self.text += buffer.getvalue()
        self.folder.write_text(self.config.filename, self.text)

    def state(self):
        return {"keys": self.keys, "text": self.text}, {}

    def restore(self, values, arrays):
        self.keys, self.text = values["keys"], values["text"]


def read_log(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_LOG_BYTES:
            raise RunError(
                f"CSVLogger appends to files of at most {MAX_LOG_BYTES:,} bytes", str(path)
            )
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"CSVLogger cannot append to it: {err}", str(path)) from None


def _csv_value(value) -> str:
    return value if isinstance(value, str) else repr(float(value))
