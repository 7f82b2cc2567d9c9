"""Writing a run folder as training goes (the layout is in kerspec.runs): `RunFolder`, a
callback, which also carries a killed or stopped run on with `--resume`."""

from __future__ import annotations

import copy
import csv
import hashlib
import io as _io
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerspec import io
from kerspec.errors import RunError
from kerspec.folders import (
    BOOKKEEPING,
    Lock,
    OutputFolder,
    manifest_temporaries,
    read_manifest,
)
from kerspec.runs.info import CHECKPOINT, RUN_FILES, read_run_info, read_run_spec, stamp
from kerspec.runs.resumable import spec_differences
from kerspec.training.callbacks import Callback
from kerspec.training.checkpoint import checkpoint_meta


class RunFolder(Callback):
    """Writes the run folder as training goes; with `resume`, carries an existing one on.

    `fit` and `data` are what the command line put in place of the spec's settings (`--epochs`,
    `--batch-size`; `--data`, `--validation` as paths from the current folder), so that
    `spec.yaml` describes the run that happened and trains the same way again from any folder.

    Opening it takes the folder's lock and checks, without changing anything, that the folder
    may be trained into; `release()` gives the lock back (`with RunFolder(...)` does).
    """

    def __init__(
        self,
        path: Path,
        model,
        *,
        fit: dict[str, int] | None = None,
        data: dict | None = None,
        resume: bool = False,
        overwrite: bool = False,
        final_metrics: bool = False,
    ):
        from kerspec.version import __version__

        self.path = Path(path)
        self.model = model
        self.raw = _resolve(model, fit or {}, data or {})
        self.resolved = yaml.safe_dump(self.raw, sort_keys=False)
        source = model.loaded.path.read_bytes() if model.loaded.path else self.resolved.encode()
        self.info: dict[str, Any] = {
            "kerspec": __version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "spec": str(model.loaded.path) if model.loaded.path else None,
            "spec_sha256": hashlib.sha256(source).hexdigest(),
            "seed": model.seed,
            "started": _now(),
            "ended": None,
            "status": "running",
            "epochs": None,
            "epochs_done": 0,
        }
        self.checkpoint: dict[str, np.ndarray] | None = None
        # With `final_metrics` (the command line), run.json says the run ended only once
        # metrics.json is written (write_metrics): a run killed before that is resumed to finish.
        self.final_metrics = final_metrics
        self._end_pending = False
        self.notes: list[str] = []  # what resuming found, for the user
        self.overwrite = overwrite
        self.checkpoint_file = self.path / CHECKPOINT
        self.lock = Lock(self.path)
        self._open(resume)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        self.lock.release()

    def _open(self, resume: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError("is a file, not a folder", str(self.path))
        if resume and not self.path.is_dir():
            self._nothing_to_resume()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as err:
            raise RunError(f"cannot use this folder: {err.strerror}", str(self.path)) from None
        try:
            if self.lock.note:
                self.notes.append(self.lock.note)
            self.output = OutputFolder(self.path, manifest=True)
            for name in self.file_names():
                self.output.file(name)  # none leads out of the folder through a symlink there
            if resume:
                self._open_for_resume()
                self.output.manifest.adopt(self.file_names())
            else:
                self._check_fresh()
        except BaseException:
            self.release()
            raise

    def file_names(self) -> list[str]:
        """The files this run writes whose names are known before it starts."""
        names = list(RUN_FILES)
        for config in self.model.spec.fit.callbacks:
            names.extend(config.files())
        return names

    def _check_fresh(self) -> None:
        """A new run goes into an empty folder; with `overwrite`, into one whose files in the
        way were all written by kerspec."""
        manifest = self.output.manifest
        present = sorted(n for n in os.listdir(self.path) if n not in BOOKKEEPING)
        if not present:
            return
        if not self.overwrite:
            raise RunError(
                f"the folder is not empty ({io.some_names(present)}); kerspec does not train into it"
                f" afresh. To carry on the run in it: --resume {self.path}. To replace an earlier"
                " kerspec run there: --overwrite (it replaces only files kerspec wrote, and"
                " keeps the rest). Or choose another --out",
                str(self.path),
            )
        listed = set(manifest.files) | set(manifest.temporaries)
        foreign = [n for n in self.file_names() if n not in listed and (self.path / n).exists()]
        if foreign:
            raise RunError(
                f"--overwrite replaces only files kerspec wrote, and {foreign[0]} is not one of"
                " them; move it away or choose another --out",
                str(self.path),
            )

    # -- resuming -----------------------------------------------------------------------------

    def _open_for_resume(self) -> None:
        if not (self.path / "spec.yaml").is_file() or not (self.path / CHECKPOINT).is_file():
            self._nothing_to_resume()
        before = read_run_spec(self.path)
        differences = spec_differences(before, self.raw)
        if differences:
            where = self._where(differences[0][0])
            listed = "; ".join(text for _, text in differences[:5])
            more = f" (and {len(differences) - 5} more)" if len(differences) > 5 else ""
            raise RunError(
                f"cannot resume {self.path}: the spec has changed since the run: {listed}{more}."
                " Only fit.epochs, name and description may change on resume",
                where,
            )
        self.checkpoint = io.read_npz(self.path / CHECKPOINT, RunError)
        meta = checkpoint_meta(self.checkpoint, str(self.path / CHECKPOINT))
        done, epochs = meta.epoch, self.model.spec.fit.epochs
        epochs = (self.raw.get("fit") or {}).get("epochs", epochs)
        previous = read_run_info(self.path)
        # "running" (or no run.json): killed. A run killed after its last checkpoint, before its
        # final files, is finished by resuming it.
        ended = previous is not None and previous.status in ("finished", "stopped")
        if meta.stop_training and ended:
            raise RunError(
                f"the run was stopped by a callback after epoch {done}; there is nothing to resume",
                str(self.path),
            )
        if done > epochs or (done == epochs and ended):
            raise RunError(
                f"the run has finished its {done} epochs; to train further give more"
                f" (--epochs {done + 5}, or fit.epochs in the spec)",
                str(self.path),
            )
        if done == epochs or meta.stop_training:
            self.notes.append(
                f"the run was stopped after its last epoch ({done}), before writing its final"
                " files; writing them"
            )
        else:
            self.notes.append(f"resuming after epoch {done} of {epochs}")
        self.info["epochs_done"] = done
        if previous is not None:
            if previous.started is not None:
                self.info["started"] = stamp(previous.started)
            self.info["resumed"] = [*map(stamp, previous.resumed), _now()]
        else:
            self.info["resumed"] = [_now()]

    def _nothing_to_resume(self) -> None:
        """A folder without spec.yaml or checkpoint.npz: a run killed before its first checkpoint
        (say so, and how to start it afresh), or not a run folder at all."""
        spec = self.model.loaded.path or "SPEC"
        afresh = f"start it afresh with: kerspec train {spec} --out {self.path} --overwrite"
        if not self.path.is_dir():
            raise RunError(
                "not a kerspec run folder (no such folder): nothing to resume. A run stopped"
                f" before it wrote anything has no folder; {afresh}",
                str(self.path),
            )
        names = {p.name for p in self.path.iterdir()} - BOOKKEEPING
        try:
            killed = set(read_manifest(self.path).temporaries)
        except RunError:
            killed = set()
        # The manifest's first temporary is listed nowhere (there is no manifest before it).
        killed |= set(manifest_temporaries(self.path))
        if names <= {"spec.yaml", "run.json"} | killed:
            raise RunError(
                f"nothing to resume: the run was stopped before its first checkpoint; {afresh}",
                str(self.path),
            )
        missing = " and ".join(n for n in ("spec.yaml", CHECKPOINT) if n not in names)
        raise RunError(
            f"nothing to resume: not a kerspec run folder, or one without {missing}", str(self.path)
        )

    def _where(self, path: tuple):
        try:
            return self.model.loaded.source.where(path)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return str(self.model.loaded.path or self.path)

    # -- hooks --------------------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self.info["epochs"] = self.session.epochs if self.session else None
        manifest = self.output.manifest
        if self.overwrite:
            manifest.remove_files()
        manifest.remove_temporaries()  # of a run killed while writing
        self.output.write_text("spec.yaml", self.resolved)
        self._write_info()
        if self.checkpoint is None and self.session is not None:
            # Epoch 0: a run interrupted in its first epoch resumes from the start.
            self.info["epochs_done"] = self.session.epoch
            self._write_arrays(CHECKPOINT, self.session.checkpoint())

    def _write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self.output.write(name, lambda f: np.savez(f, **arrays))

    def _write_weights(self) -> None:
        params = self.model.params
        self.output.write("weights.npz", lambda f: io.save_weights_to(f, params))

    def on_epoch_end(self, epoch, logs):
        # The checkpoint first: a run killed between the two has a history.csv one epoch short
        # (rewritten on resume), never one that shows an epoch the checkpoint does not hold.
        self._write_arrays(CHECKPOINT, self.session.checkpoint())
        self.write_history()
        self.info["epochs_done"] = epoch + 1
        self._write_info()

    def on_train_end(self, logs=None):
        self.write_history()  # a resume that only finishes the run has not written it
        self._write_weights()
        self.info["ended"] = _now()
        self.info["status"] = self.session.status if self.session else "finished"
        if self.session is not None:
            self.info["epochs_done"] = self.session.epoch
        self._end_pending = True
        if not self.final_metrics:
            self.end()

    def end(self) -> None:
        """Write run.json with the status training ended with (once, after on_train_end)."""
        if self._end_pending:
            self._end_pending = False
            self._write_info()

    def on_train_stopped(self, status, message):
        self.write_history()
        self._write_weights()
        self.info["ended"] = _now()
        self.info["status"] = status
        self.info["message"] = message
        self._write_info()

    def write_history(self) -> None:
        history = self.session.history
        keys = list(history.history)
        buffer = _io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["epoch", *keys])
        for row, epoch in enumerate(history.epochs):
            cells = [str(epoch + 1)]
            for key in keys:
                values = history.history[key]
                cells.append(_cell(values[row]) if row < len(values) else "")
            writer.writerow(cells)
        self.output.write_text("history.csv", buffer.getvalue())

    def write_metrics(self, metrics: dict[str, float]) -> None:
        self.output.write_text("metrics.json", json.dumps(metrics, indent=2) + "\n")
        self.end()

    def _write_info(self) -> None:
        self.output.write_text("run.json", json.dumps(self.info, indent=2) + "\n")


def _resolve(model, fit: dict[str, int], data: dict) -> dict:
    """The spec as run: overrides applied, the seed used, data paths made absolute."""
    raw = copy.deepcopy(model.loaded.raw)
    raw["seed"] = model.seed
    if fit:
        raw["fit"] = {**(raw.get("fit") or {}), **fit}
    entries = dict(raw.get("data") or {})
    for which, entry in entries.items():
        entries[which] = _absolute(entry, model.loaded.base_dir)
    for which, entry in data.items():
        entries[which] = _absolute(entry, Path.cwd())
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
