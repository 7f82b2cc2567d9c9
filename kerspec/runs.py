"""Run folders: what `kerspec train` leaves behind, written as training goes.

    runs/NAME-YYYYmmdd-HHMMSS/
      spec.yaml       the spec as resolved (overrides applied, the seed used, data paths absolute)
      run.json        versions, spec sha256, seed, start and end time, status, epochs done
      history.csv     one row per finished epoch, rewritten after each epoch
      checkpoint.npz  after every finished epoch: what `--resume` needs to carry on bit for bit
      weights.npz     final weights (the last finished epoch's, when stopped early)
      metrics.json    final metrics

Every file is written atomically, so a run stopped at any moment, even by SIGKILL, leaves each
file complete or absent (and at most a temporary `.NAME.XXXXXXXX.tmp`, deleted when a run starts
or resumes in the folder). A killed run's run.json still says "running"; `--resume` carries it on
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
import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerspec import io
from kerspec.errors import KerspecError, RunError
from kerspec.training.callbacks import Callback
from kerspec.training.loop import CHECKPOINT_FORMAT

CHECKPOINT = "checkpoint.npz"
# Spec fields that may differ between a run and its resumption.
RESUMABLE = {("fit", "epochs"), ("name",), ("description",)}


def new_run_dir(root: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}"
    suffix = 1
    while path.exists():
        path = root / f"{name}-{stamp}-{suffix}"
        suffix += 1
    return path


def run_seed(path: Path) -> int | None:
    """The seed a run folder was trained with (to resume it with the same draws)."""
    info = _read_json(Path(path) / "run.json")
    if info and isinstance(info.get("seed"), int):
        return info["seed"]
    try:  # a run killed before run.json: its spec.yaml holds the seed too
        spec = yaml.safe_load((Path(path) / "spec.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    seed = spec.get("seed") if isinstance(spec, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


class RunFolder(Callback):
    """Writes the run folder as training goes; with `resume`, carries an existing one on.

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
        data: dict | None = None,
        resume: bool = False,
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
        if resume:
            self._open_for_resume()

    # -- resuming -----------------------------------------------------------------------------

    def _open_for_resume(self) -> None:
        if not (self.path / "spec.yaml").is_file() or not (self.path / CHECKPOINT).is_file():
            self._nothing_to_resume()
        try:
            before = yaml.safe_load((self.path / "spec.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise RunError(f"cannot read the run's spec.yaml: {err}", str(self.path)) from None
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
        meta = json.loads(str(self.checkpoint.get("meta", "{}")))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise RunError(
                "checkpoint written by another kerspec version", str(self.path / CHECKPOINT)
            )
        done, epochs = meta["epoch"], self.model.spec.fit.epochs
        epochs = self.raw.get("fit", {}).get("epochs", epochs)
        previous = _read_json(self.path / "run.json") or {}
        # "running" (or no run.json): killed. A run killed after its last checkpoint, before its
        # final files, is finished by resuming it.
        ended = previous.get("status") in ("finished", "stopped")
        if meta.get("stop_training") and ended:
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
        if done == epochs or meta.get("stop_training"):
            self.notes.append(
                f"the run was stopped after its last epoch ({done}), before writing its final"
                " files; writing them"
            )
        else:
            self.notes.append(f"resuming after epoch {done} of {epochs}")
        self.info["epochs_done"] = done
        self.info["started"] = previous.get("started", self.info["started"])
        self.info["resumed"] = [*previous.get("resumed", []), _now()]

    def _nothing_to_resume(self) -> None:
        """A folder without spec.yaml or checkpoint.npz: a run killed before its first checkpoint
        (say so, and how to start it afresh), or not a run folder at all."""
        spec = self.model.loaded.path or "SPEC"
        afresh = f"start it afresh with: kerspec train {spec} --out {self.path}"
        if not self.path.is_dir():
            raise RunError(
                "not a kerspec run folder (no such folder): nothing to resume. A run stopped"
                f" before it wrote anything has no folder; {afresh}",
                str(self.path),
            )
        names = {p.name for p in self.path.iterdir()}
        if names <= {"spec.yaml", "run.json"} or any(io.TEMPORARY.match(n) for n in names):
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
        io.remove_leftovers(self.path)  # of a run killed while writing (see kerspec.io)
        io.write_text(self.path / "spec.yaml", self.resolved)
        self._write_info()
        if self.checkpoint is None and self.session is not None:
            # Epoch 0: a run interrupted in its first epoch resumes from the start.
            self.info["epochs_done"] = self.session.epoch
            io.write_npz(self.path / CHECKPOINT, self.session.checkpoint())

    def on_epoch_end(self, epoch, logs):
        # The checkpoint first: a run killed between the two has a history.csv one epoch short
        # (rewritten on resume), never one that shows an epoch the checkpoint does not hold.
        io.write_npz(self.path / CHECKPOINT, self.session.checkpoint())
        self.write_history()
        self.info["epochs_done"] = epoch + 1
        self._write_info()

    def on_train_end(self, logs=None):
        self.write_history()  # a resume that only finishes the run has not written it
        self.model.save_weights(self.path / "weights.npz")
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
        self.model.save_weights(self.path / "weights.npz")
        self.info["ended"] = _now()
        self.info["status"] = status
        self.info["message"] = message
        self._write_info()

    def write_history(self) -> None:
        history = self.session.history
        keys = list(history.history)
        lines = [",".join(["epoch", *keys])]
        for row, epoch in enumerate(history.epochs):
            cells = [str(epoch + 1)]
            for key in keys:
                values = history.history[key]
                cells.append(_cell(values[row]) if row < len(values) else "")
            lines.append(",".join(cells))
        io.write_text(self.path / "history.csv", "\n".join(lines) + "\n")

    def write_metrics(self, metrics: dict[str, float]) -> None:
        io.write_json(self.path / "metrics.json", metrics)
        self.end()

    def _write_info(self) -> None:
        io.write_json(self.path / "run.json", self.info)


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


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- looking back ---------------------------------------------------------------------------------


def read_history(path: Path) -> dict[str, list[float]]:
    """A run's history.csv as columns (`epoch` and every logged name)."""
    file = Path(path) / "history.csv" if Path(path).is_dir() else Path(path)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise KerspecError(f"cannot read the run's history: {err.strerror}", str(file)) from None
    if not lines:
        return {}
    keys = lines[0].split(",")
    columns: dict[str, list[float]] = {k: [] for k in keys}
    for line in lines[1:]:
        for key, cell in zip(keys, line.split(",")):
            try:
                columns[key].append(float(cell) if cell else float("nan"))
            except ValueError:
                raise KerspecError(f"not a number in history.csv: {cell!r}", str(file)) from None
    return columns


def describe_run(path: Path) -> dict[str, Any] | None:
    """What `kerspec runs` shows about one run folder, or None when it is not one."""
    info = _read_json(path / "run.json")
    if info is None:
        return None
    name = None
    try:
        spec = yaml.safe_load((path / "spec.yaml").read_text(encoding="utf-8"))
        name = spec.get("name") if isinstance(spec, dict) else None
    except (OSError, yaml.YAMLError):
        pass
    if not name and info.get("spec"):
        name = Path(info["spec"]).stem
    history = {}
    if (path / "history.csv").is_file():
        try:
            history = read_history(path)
        except KerspecError:
            history = {}
    final = _read_json(path / "metrics.json")
    if final is None:
        final = {k: v[-1] for k, v in history.items() if k != "epoch" and v}
    done = info.get("epochs_done", len(history.get("epoch", [])))
    status = info.get("status") or ("finished" if info.get("ended") else "interrupted")
    if status == "running":
        status = "unfinished"  # killed (resumable), or still training
    return {
        "folder": str(path),
        "name": name or path.name,
        "epochs_done": done,
        "epochs": info.get("epochs"),
        "metrics": final,
        "started": info.get("started"),
        "duration": _duration(info.get("started"), info.get("ended")),
        "status": status,
        "seed": info.get("seed"),
    }


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run folder in `root` (or `root` itself when it is one), oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise KerspecError("no such folder", str(root))
    own = describe_run(root)
    if own is not None:
        return [own]
    found = [r for p in sorted(root.iterdir()) if p.is_dir() and (r := describe_run(p))]
    return sorted(found, key=lambda r: (r["started"] or "", r["folder"]))


def _duration(started: str | None, ended: str | None) -> float | None:
    if not started or not ended:
        return None
    try:
        return (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:
        return None
