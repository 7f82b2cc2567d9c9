"""Run folders: what `kerspec train` leaves behind, written as training goes.

    runs/NAME-YYYYmmdd-HHMMSS/
      spec.yaml       the spec as resolved (overrides applied, the seed used, data paths absolute)
      run.json        versions, spec sha256, seed, start and end time, status, epochs done
      history.csv     one row per finished epoch, rewritten after each epoch
      checkpoint.npz  after every finished epoch: what `--resume` needs to carry on bit for bit
      weights.npz     final weights (the last finished epoch's, when stopped early)
      metrics.json    final metrics

      .kerspec-manifest.json  the files kerspec wrote here (kerspec.folders); .kerspec-lock while training

Every file is written atomically, so a run stopped at any moment, even by SIGKILL, leaves each
file complete or absent (and at most a temporary `.NAME.XXXXXXXX.tmp`, which the manifest lists
and a run starting or resuming in the folder deletes). A folder that holds anything is not
trained into afresh without `overwrite`, which still replaces only files the manifest lists. A killed run's run.json still says "running"; `--resume` carries it on
from checkpoint.npz, or only writes the final files when it was killed after its last epoch.

`checkpoint.npz` holds `weights/LAYER/WEIGHT`, `optimizer/KEY` (the optimizer's state: iteration
count, current learning rate, slots), `callbacks/KEY/...` (arrays of callbacks' states, such as
EarlyStopping's best weights) and `meta`, a JSON string with the number of finished epochs, the
shuffle and noise generators' states and the callbacks' and history's states.

A run resumes only with the spec it was started with: the resolved specs are compared, and only
the fields in RESUMABLE may differ (more epochs to extend training; the name and description).
"""

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
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
)

from kerspec import io
from kerspec.errors import KerspecError, RunError
from kerspec.folders import (
    BOOKKEEPING,
    Lock,
    OutputFolder,
    manifest_temporaries,
    read_manifest,
)
from kerspec.paths import MAX_NAME, inside, safe_folder_name
from kerspec.spec.source import MAX_SPEC_BYTES, parse_yaml
from kerspec.training.callbacks import Callback
from kerspec.training.checkpoint import checkpoint_meta

CHECKPOINT = "checkpoint.npz"
# Spec fields that may differ between a run and its resumption.
RESUMABLE = {("fit", "epochs"), ("name",), ("description",)}


# The files of a run folder (ModelCheckpoint and CSVLogger files come from the spec).
RUN_FILES = ("spec.yaml", "run.json", "history.csv", CHECKPOINT, "weights.npz", "metrics.json")
MAX_RUN_JSON_BYTES = 1024 * 1024


class RunInfo(BaseModel):
    """run.json as read back: a file anyone may have edited, so held to this schema."""

    model_config = ConfigDict(extra="ignore", defer_build=True)  # built at the first read

    kerspec: str | None = Field(None, max_length=100)
    spec: str | None = Field(None, max_length=4096)
    spec_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    seed: NonNegativeInt | None = Field(None, lt=2**128)
    started: datetime | None = None
    ended: datetime | None = None
    status: Literal["running", "finished", "stopped", "interrupted", "failed"] = "running"
    epochs: PositiveInt | None = None
    epochs_done: NonNegativeInt = 0
    resumed: list[datetime] = Field(default_factory=list, max_length=100_000)
    message: str | None = Field(None, max_length=10_000)


def read_run_info(path: Path) -> RunInfo | None:
    """A run folder's run.json, None when it has none; RunError when it is damaged."""
    file = Path(path) / "run.json"
    if not file.is_file():
        return None
    return io.read_json_as(file, _RUN_INFO, MAX_RUN_JSON_BYTES, "a kerspec run.json")


_RUN_INFO = TypeAdapter(RunInfo)
# A JSON file read back whole, to be updated and written again (a sweep's run.json, sweep.json).
JSON_OBJECT = TypeAdapter(dict[str, Any])


def new_run_dir(root: Path, name: str) -> Path:
    """runs/NAME-TIME: a spec's `name` is checked when it is validated (kerspec.paths); a spec
    file's stem, the default, is made into a name here. Either way it stays inside `root`."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = safe_folder_name(name)[: MAX_NAME - 20]
    path = inside(root, f"{base}-{stamp}")
    suffix = 1
    while path.exists() or path.is_symlink():
        path = inside(root, f"{base}-{stamp}-{suffix}")
        suffix += 1
    return path


def run_seed(path: Path) -> int | None:
    """The seed a run folder was trained with (to resume it with the same draws)."""
    info = read_run_info(path)
    if info and info.seed is not None:
        return info.seed
    spec = read_run_spec(path, missing_ok=True)  # a run killed before run.json: it holds the seed too
    seed = spec.get("seed") if isinstance(spec, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


def read_run_spec(path: Path, *, missing_ok: bool = False) -> Any:
    """A run folder's spec.yaml, read with the same guards as any spec."""
    file = Path(path) / "spec.yaml"
    try:
        if missing_ok and not file.is_file():
            return None
        if file.stat().st_size > MAX_SPEC_BYTES:
            raise RunError(f"is larger than {MAX_SPEC_BYTES:,} bytes; not a kerspec spec", str(file))
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"cannot be read: {getattr(err, 'strerror', None) or err}", str(file)) from None
    try:
        return parse_yaml(text, str(file))[0]
    except KerspecError as err:
        raise RunError(f"not a readable spec: {err}", str(file)) from None


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
        from kerspec import __version__

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
                self.info["started"] = _stamp(previous.started)
            self.info["resumed"] = [*map(_stamp, previous.resumed), _now()]
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


# -- comparing specs ------------------------------------------------------------------------------


def spec_differences(before: Any, now: Any) -> list[tuple[tuple, str]]:
    """(path, "fit.epochs: 5 in the run, 8 now") for every field that differs, except
    RESUMABLE ones; layers are named by their `name` when they have one."""
    found: list[tuple[tuple, str]] = []
    _compare(before, now, (), (), found)
    return found


def _compare(a: Any, b: Any, path: tuple, label: tuple, found: list) -> None:
    if path in RESUMABLE:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            if (*path, key) in RESUMABLE:
                continue
            if key not in a:
                found.append(
                    ((*path, key), f"{_dotted((*label, key))}: not in the run, {_show(b[key])} now")
                )
            elif key not in b:
                found.append(
                    (path, f"{_dotted((*label, key))}: {_show(a[key])} in the run, not given now")
                )
            else:
                _compare(a[key], b[key], (*path, key), (*label, key), found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            name = x.get("name") if isinstance(x, dict) and path == ("layers",) else None
            same = isinstance(name, str) and isinstance(y, dict) and y.get("name") == name
            part = name if same else i
            _compare(x, y, (*path, i), (*label, part), found)
    elif not (a == b and (type(a) is type(b) or _same_number(a, b))):
        found.append((path, f"{_dotted(label) or 'spec'}: {_show(a)} in the run, {_show(b)} now"))


def _same_number(a, b) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _dotted(label: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in label).replace(
        ".[", "["
    )


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


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


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


# -- looking back ---------------------------------------------------------------------------------

MAX_HISTORY_BYTES = 64 * 1024 * 1024
Metrics = dict[str, float | None]


def read_history(path: Path) -> dict[str, list[float]]:
    """A run's history.csv as columns (`epoch` and every logged name)."""
    file = Path(path) / "history.csv" if Path(path).is_dir() else Path(path)
    try:
        if file.stat().st_size > MAX_HISTORY_BYTES:
            raise KerspecError(f"is larger than {MAX_HISTORY_BYTES:,} bytes; not a kerspec history", str(file))
        with open(file, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, strict=True))
    except OSError as err:
        raise KerspecError(f"cannot read the run's history: {err.strerror}", str(file)) from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise KerspecError(f"not a readable history: {err}", str(file)) from None
    if not rows:
        return {}
    keys = rows[0]
    columns: dict[str, list[float]] = {k: [] for k in keys}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(keys):
            raise KerspecError(f"line {line} has {len(row)} values for {len(keys)} columns", str(file))
        for key, cell in zip(keys, row):
            try:
                columns[key].append(float(cell) if cell else float("nan"))
            except ValueError:
                raise KerspecError(f"line {line}: not a number: {cell[:40]!r}", str(file)) from None
    return columns


def read_metrics(path: Path) -> Metrics | None:
    file = Path(path) / "metrics.json"
    if not file.is_file():
        return None
    return io.read_json_as(file, _METRICS, MAX_RUN_JSON_BYTES, "a kerspec metrics.json")


_METRICS = TypeAdapter(Metrics)


def describe_run(path: Path) -> dict[str, Any] | None:
    """What `kerspec runs` shows about one run folder, or None when it is not one; RunError
    when its files are damaged."""
    info = read_run_info(path)
    if info is None:
        return None
    spec = read_run_spec(path, missing_ok=True)
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str):
        name = Path(info.spec).stem if info.spec else None
    history = read_history(path) if (path / "history.csv").is_file() else {}
    final = read_metrics(path)
    if final is None:
        final = {k: v[-1] for k, v in history.items() if k != "epoch" and v}
    status = "unfinished" if info.status == "running" else info.status  # killed, or training
    return {
        "folder": str(path),
        "name": name or path.name,
        "epochs_done": info.epochs_done,
        "epochs": info.epochs,
        "metrics": final,
        "started": _stamp(info.started) if info.started else None,
        "duration": _duration(info.started, info.ended),
        "status": status,
        "seed": info.seed,
    }


def list_runs(root: Path, problems: list[KerspecError] | None = None) -> list[dict[str, Any]]:
    """Every run folder in `root` (or `root` itself when it is one), oldest first. A damaged
    run folder is left out, with what is wrong added to `problems` (raised without it)."""
    root = Path(root)
    if not root.is_dir():
        raise KerspecError("no such folder", str(root))
    own = describe_run(root)
    if own is not None:
        return [own]
    found = []
    for path in sorted(root.iterdir()):
        try:
            run = describe_run(path) if path.is_dir() else None
        except KerspecError as err:
            if problems is None:
                raise
            problems.append(err)
            continue
        if run is not None:
            found.append(run)
    return sorted(found, key=lambda r: (r["started"] or "", r["folder"]))


def _duration(started: datetime | None, ended: datetime | None) -> float | None:
    if not started or not ended:
        return None
    try:
        return (ended - started).total_seconds()
    except TypeError:  # one has a time zone, the other not
        return None
