"""Looking back at run folders: their history and final metrics, one run described as
`kerspec runs` shows it, and every run in a folder."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from kerspec.errors import KerspecError
from kerspec.runs.info import read_run_info, read_run_json, read_run_spec, stamp

MAX_HISTORY_BYTES = 64 * 1024 * 1024
Metrics = dict[str, float | None]


def read_history(path: Path) -> dict[str, list[float]]:
    """A run's history.csv as columns (`epoch` and every logged name)."""
    file = Path(path) / "history.csv" if Path(path).is_dir() else Path(path)
    try:
        if file.stat().st_size > MAX_HISTORY_BYTES:
            raise KerspecError(
                f"is larger than {MAX_HISTORY_BYTES:,} bytes; not a kerspec history", str(file)
            )
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
            raise KerspecError(
                f"line {line} has {len(row)} values for {len(keys)} columns", str(file)
            )
        for key, cell in zip(keys, row):
            try:
                columns[key].append(float(cell) if cell else float("nan"))
            except ValueError:
                raise KerspecError(f"line {line}: not a number: {cell[:40]!r}", str(file)) from None
    return columns


def read_metrics(path: Path) -> Metrics | None:
    return read_run_json(path, "metrics.json", _METRICS)


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
        "started": stamp(info.started) if info.started else None,
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
