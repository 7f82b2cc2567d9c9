"""Run folders: what `kerspec train` leaves behind, written as training goes.

    runs/NAME-YYYYmmdd-HHMMSS/
      spec.yaml     the spec as resolved (overrides applied)
      run.json      kerspec and numpy versions, spec sha256, seed, start and end time
      history.csv   one row per finished epoch, rewritten after each epoch
      weights.npz   final weights
      metrics.json  final metrics

Every file is written atomically, so a run stopped at any moment leaves each file complete or
absent.
"""

from __future__ import annotations

import copy
import hashlib
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from kerspec import io
from kerspec.training.callbacks import Callback


def new_run_dir(root: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}"
    suffix = 1
    while path.exists():
        path = root / f"{name}-{stamp}-{suffix}"
        suffix += 1
    return path


class RunFolder(Callback):
    """Writes the run folder as training goes.

    `fit` and `data` are what the command line put in place of the spec's settings (`--epochs`,
    `--batch-size`; `--data`, `--validation` as paths from the current folder), so that
    `spec.yaml` describes the run that happened and trains the same way again from any folder.
    """

    def __init__(
        self,
        path: Path,
        model,
        *,
        fit: dict[str, int] | None = None,
        data: dict[str, str] | None = None,
    ):
        from kerspec import __version__

        self.path = Path(path)
        self.model = model
        self.resolved = yaml.safe_dump(_resolve(model, fit or {}, data or {}), sort_keys=False)
        source = model.loaded.path.read_bytes() if model.loaded.path else self.resolved.encode()
        self.info = {
            "kerspec": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "spec": str(model.loaded.path) if model.loaded.path else None,
            "spec_sha256": hashlib.sha256(source).hexdigest(),
            "seed": model.seed,
            "started": _now(),
            "ended": None,
        }

    def on_train_begin(self, logs=None):
        io.write_text(self.path / "spec.yaml", self.resolved)
        io.write_json(self.path / "run.json", self.info)
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs):
        self.rows.append({"epoch": epoch + 1, **logs})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        lines = [",".join(keys)]
        lines += [",".join(_cell(row.get(k)) for k in keys) for row in self.rows]
        io.write_text(self.path / "history.csv", "\n".join(lines) + "\n")

    def on_train_end(self, logs=None):
        self.model.save_weights(self.path / "weights.npz")
        self.info["ended"] = _now()
        io.write_json(self.path / "run.json", self.info)

    def write_metrics(self, metrics: dict[str, float]) -> None:
        io.write_json(self.path / "metrics.json", metrics)


def _resolve(model, fit: dict[str, int], data: dict[str, str]) -> dict:
    """The spec as run: overrides applied, the seed used, data paths made absolute."""
    raw = copy.deepcopy(model.loaded.raw)
    raw["seed"] = model.seed
    if fit:
        raw["fit"] = {**(raw.get("fit") or {}), **fit}
    entries = dict(raw.get("data") or {})
    for which, entry in entries.items():
        entries[which] = _absolute(entry, model.loaded.base_dir)
    for which, path in data.items():
        entries[which] = str(Path(path).expanduser().absolute())
    if entries:
        raw["data"] = entries
    return raw


def _absolute(entry, base: Path):
    """A data entry whose path no longer depends on where the spec file is."""
    if isinstance(entry, str):
        return str((base / Path(entry).expanduser()).absolute())
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        return {**entry, "path": _absolute(entry["path"], base)}
    return entry


def _cell(value) -> str:
    return "" if value is None else repr(float(value)) if not isinstance(value, int) else str(value)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
