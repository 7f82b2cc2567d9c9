"""The model summary in Keras 3's layout: Layer (type), Output Shape, Param #, Connected to."""

from __future__ import annotations

import io
import math

from rich import box
from rich.console import Console
from rich.table import Table

from kerspec.graph import Graph
from kerspec.layers.base import format_shape


def summary_rows(graph: Graph) -> list[dict]:
    """One row per node, as data (for `--json`) and for the table."""
    sequential = graph.is_sequential()
    counted: set[str] = set()
    rows = []
    for node in graph.nodes:
        if sequential and node.type == "Input":
            continue  # Keras's Sequential summary has no row for its input
        params = 0
        if node.owner not in counted:
            counted.add(node.owner)
            params = sum(math.prod(s.shape) for s in graph.weights.get(node.owner, []))
        shapes = [format_shape(s) for s in node.output_shapes]
        rows.append(
            {
                "name": node.name,
                "type": "InputLayer" if node.type == "Input" else node.type,
                "output_shape": shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]",
                "params": params,
                "shared_with": None if node.owner == node.name else node.owner,
                "connected_to": [f"{r.node}[0][{r.index}]" for r in node.inputs],
            }
        )
    return rows


def _size(count: int, itemsize: int) -> str:
    size = float(count * itemsize)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def render_summary(graph: Graph, trainable: int, non_trainable: int, itemsize: int) -> str:
    sequential = graph.is_sequential()
    table = Table(box=box.HEAVY_HEAD, show_lines=False)
    table.add_column("Layer (type)", no_wrap=True)
    table.add_column("Output Shape", no_wrap=True)
    table.add_column("Param #", justify="right", no_wrap=True)
    if not sequential:
        table.add_column("Connected to")
    for row in summary_rows(graph):
        cells = [
            f"{row['name']} ({row['type']})",
            row["output_shape"],
            f"{row['params']:,}" + (f" (shared: {row['shared_with']})" if row["shared_with"] else ""),
        ]
        if not sequential:
            cells.append("\n".join(row["connected_to"]) or "-")
        table.add_row(*cells)
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=False, color_system=None)
    console.print(f'Model: "{graph.name}"')
    console.print(table)
    total = trainable + non_trainable
    console.print(f" Total params: {total:,} ({_size(total, itemsize)})")
    console.print(f" Trainable params: {trainable:,} ({_size(trainable, itemsize)})")
    console.print(f" Non-trainable params: {non_trainable:,} ({_size(non_trainable, itemsize)})")
    return buffer.getvalue()
