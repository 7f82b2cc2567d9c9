"""A sweep's progress on stderr: a live table of the trials on a terminal, else one line per
finished trial."""

from __future__ import annotations

import math

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class SweepProgress:
    def __init__(self, console: Console, metric: str, mode: str):
        self.console, self.metric, self.mode = console, metric, mode
        self.rows: dict[int, dict] = {}
        self.live: Live | None = None
        if console.is_terminal:
            self.live = Live(self._table(), console=console, transient=False, auto_refresh=False)
            self.live.start()

    def started(self, index: int, config: dict) -> None:
        self.rows[index] = {"status": "running", "values": config, "epoch": 0, "best": None}
        self._refresh()

    def epoch(self, index: int, result: dict) -> None:
        row = self.rows.setdefault(index, {"status": "running", "values": {}, "epoch": 0, "best": None})
        row["epoch"] = result.get("epoch", row["epoch"])
        value = result.get(self.metric)
        if isinstance(value, float) and math.isfinite(value):
            best = row["best"]
            better = best is None or (value > best if self.mode == "max" else value < best)
            row["best"] = value if better else best
        self._refresh()

    def ended(self, outcome) -> None:
        row = self.rows.setdefault(outcome.index, {"values": outcome.config, "epoch": 0, "best": None})
        row["status"] = "failed" if outcome.status == "ERROR" else "stopped" if outcome.stopped else "ended"
        if self.live is None:
            values = " ".join(f"{k}={_value(v)}" for k, v in sorted(outcome.config.items()))
            if outcome.status == "ERROR":
                line = f"trial-{outcome.index:04d} failed ({values}): {outcome.error}"
            else:
                best = "" if row["best"] is None else f", best {self.metric} {row['best']:.4f}"
                ended = "stopped early by the scheduler" if outcome.stopped else "ended"
                line = f"trial-{outcome.index:04d} {ended} after {row['epoch']} epochs ({values}){best}"
            self.console.print(line, markup=False, highlight=False)
        self._refresh()

    def _table(self) -> Table:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("trial", "status", "parameters", "epoch", f"best {self.metric}"):
            table.add_column(column)
        for index, row in sorted(self.rows.items()):
            values = " ".join(f"{k}={_value(v)}" for k, v in sorted(row["values"].items()))
            best = "" if row["best"] is None else f"{row['best']:.4f}"
            table.add_row(f"{index:04d}", row["status"], values, str(row["epoch"]), best)
        return table

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
