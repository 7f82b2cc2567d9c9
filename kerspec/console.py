"""What the CLI shows a person: progress and errors on stderr, results on stdout."""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING

from rich.console import Console

from kerspec.training.callbacks import Callback

if TYPE_CHECKING:
    from rich.progress import Progress

err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)


def format_logs(logs: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items())


class RichProgress(Callback):
    """A bar per epoch with ETA and live loss/metrics, then one line per finished epoch."""

    def __init__(self, console: Console = err):
        self.console = console
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch, steps):
        self.started = time.perf_counter()
        if not self.console.is_terminal:
            return  # a log file gets the epoch lines only
        # Imported here: `validate`, `summary` and the other static commands never draw a bar.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[logs]}"),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("", total=steps, epoch=self._of(epoch), logs="")
        self.progress.start()

    def on_train_batch_end(self, batch, logs):
        if self.progress is not None:
            self.progress.update(self.task, advance=1, logs=format_logs(logs))

    def on_epoch_end(self, epoch, logs):
        self.close()
        seconds = time.perf_counter() - self.started
        self.console.print(f"Epoch {self._of(epoch)}  {seconds:.1f}s  {format_logs(logs)}")

    def _of(self, epoch: int) -> str:
        """`3/20`, as Keras counts epochs."""
        return f"{epoch + 1}/{self.session.epochs}"

    def close(self) -> None:
        """Take the bar off the screen, also when training stopped with an error."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def emit_json(data) -> None:
    print(json.dumps(data, indent=2))


def emit_metrics(title: str, metrics: dict[str, float]) -> None:
    out.print(title)
    width = max((len(k) for k in metrics), default=0)
    for key, value in metrics.items():
        out.print(f"  {key:<{width}}  {value:.4f}")


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """Values as a row of block characters, low to high; at most `width` of them (resampled)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    if len(values) > width:
        values = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)]
    low, high = min(values), max(values)
    span = high - low
    last = len(SPARKS) - 1
    return "".join(SPARKS[round((v - low) / span * last) if span else last // 2] for v in values)


def emit_curves(history: dict[str, list[float]]) -> None:
    """The loss (and val_loss) of a run as sparklines, first and last value beside each."""
    rows = [k for k in ("loss", "val_loss") if history.get(k)]
    if not rows or len(history[rows[0]]) < 2:
        return
    width = max(len(k) for k in rows)
    for key in rows:
        values = history[key]
        err.print(f"{key:<{width}}  {values[0]:.4f} {sparkline(values)} {values[-1]:.4f}")


def headline(metrics: dict[str, float]) -> str:
    """The spec's first metric (else the loss) on the test data, else validation, else training:
    `accuracy 0.9417 (test)`."""
    names = [k for k in metrics if not k.startswith(("val_", "test_")) and not k.endswith("loss")]
    name = names[0] if names else "loss"
    for prefix, label in (("test_", "test"), ("val_", "val"), ("", "train")):
        value = metrics.get(prefix + name)
        if isinstance(value, int | float):
            return f"{name} {value:.4f} ({label})"
    return ""


def emit_runs(runs: list[dict], folder, wide: bool = False) -> None:
    """`kerspec runs` as a table: compact (fits 80 columns), or `wide` with every final metric."""
    from pathlib import Path

    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    table.title = f"Runs in {folder}"
    columns = ("run", "spec", "epochs", "status", "started", "time", "final metrics") if wide else (
        "run", "status", "epochs", "result", "time")
    for column in columns:
        table.add_column(column, no_wrap=column != "final metrics", overflow="ellipsis",
                         max_width=32 if column == "run" else None)
    for run in runs:
        metrics = run["metrics"]
        epochs = str(run["epochs_done"]) + (f"/{run['epochs']}" if run["epochs"] else "")
        duration = run["duration"]
        path = Path(run["folder"])
        cells = {
            "run": str(path.relative_to(folder)) if path != Path(folder) else path.name,
            "spec": run["name"],
            "epochs": epochs,
            "status": run["status"],
            "started": (run["started"] or "").replace("T", " ").split("+")[0][:16],
            "time": "" if duration is None else f"{duration:.0f}s",
            "final metrics": "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, int | float)),
            "result": headline(metrics),
        }
        table.add_row(*(cells[c] for c in columns))
    # Wide: each row on one line, however long, for a wide terminal or a file.
    (Console(highlight=False, width=10_000, file=out.file, emoji=False) if wide else out).print(table)
