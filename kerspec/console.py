"""What the CLI shows a person: progress and errors on stderr, results on stdout."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kerspec.training.callbacks import Callback

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


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
        self.progress = Progress(
            TextColumn("Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[logs]}"),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("", total=steps, epoch=epoch + 1, logs="")
        self.progress.start()

    def on_train_batch_end(self, batch, logs):
        if self.progress is not None:
            self.progress.update(self.task, advance=1, logs=format_logs(logs))

    def on_epoch_end(self, epoch, logs):
        self.close()
        seconds = time.perf_counter() - self.started
        self.console.print(f"Epoch {epoch + 1}  {seconds:.1f}s  {format_logs(logs)}")

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
