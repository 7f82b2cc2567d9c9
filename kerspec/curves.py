"""Training curves of one or several runs: one panel per logged quantity (loss first, then each
metric), training as a solid line and validation as a dashed one, one colour per run.

SVG is written by kerspec itself; PNG goes through matplotlib, an optional extra
(`pip install 'kerspec[plot]'`).
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

from kerspec import io
from kerspec.errors import KerspecError
from kerspec.runs import read_history

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
PANEL_W, PANEL_H, COLUMNS = 440, 300, 2
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 40

Series = dict[str, list[float]]


def load_runs(paths: list[Path]) -> list[tuple[str, Series]]:
    runs = []
    for path in paths:
        path = Path(path)
        if not (path / "history.csv").is_file():
            raise KerspecError("not a run folder with a history.csv", str(path))
        runs.append((path.name, read_history(path)))
    return runs


def quantities(runs: list[tuple[str, Series]]) -> list[str]:
    """Logged names without their `val_` form, `loss` first, in the order first seen."""
    names: dict[str, None] = {}
    for _, history in runs:
        for key in history:
            if key != "epoch":
                names.setdefault(key.removeprefix("val_"), None)
    ordered = sorted(names, key=lambda k: (k != "loss", not k.endswith("loss")))
    return ordered


def write_curves(paths: list[Path], output: Path) -> list[str]:
    """Draw the runs' curves to `output` (.svg or .png); returns the quantities drawn."""
    suffix = Path(output).suffix.lower()
    if suffix not in (".svg", ".png"):
        raise KerspecError(
            f"unsupported curve file type {suffix or '(none)'!r}: use .svg or .png", str(output)
        )
    runs = load_runs(paths)
    names = quantities(runs)
    if not names:
        raise KerspecError("the runs have no finished epoch to draw", str(paths[0]))
    if suffix == ".svg":
        io.write_text(Path(output), svg(runs, names))
    else:
        _png(runs, names, Path(output))
    return names


# -- SVG ------------------------------------------------------------------------------------------


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.4g}"


def svg(runs: list[tuple[str, Series]], names: list[str]) -> str:
    rows = math.ceil(len(names) / COLUMNS)
    columns = min(COLUMNS, len(names))
    legend_h = 20 * len(runs) + 24
    width, height = PANEL_W * columns, PANEL_H * rows + legend_h
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        ),
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for i, name in enumerate(names):
        x0, y0 = PANEL_W * (i % COLUMNS), PANEL_H * (i // COLUMNS)
        parts.extend(_panel(runs, name, x0, y0))
    y = PANEL_H * rows + 16
    for r, (label, _) in enumerate(runs):
        color = COLORS[r % len(COLORS)]
        yy = y + 20 * r
        parts.append(
            f'<line x1="{LEFT}" y1="{yy}" x2="{LEFT + 24}" y2="{yy}" stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{LEFT + 30}" y="{yy + 4}">{escape(label)}</text>')
    parts.append(
        f'<text x="{width - RIGHT}" y="{y + 4}" text-anchor="end" fill="#555">'
        + "solid: training, dashed: validation</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(runs, name, x0, y0) -> list[str]:
    lines = []
    for r, (_, history) in enumerate(runs):
        epochs = history.get("epoch", [])
        for key, dash in ((name, ""), (f"val_{name}", ' stroke-dasharray="5,3"')):
            points = [(e, v) for e, v in zip(epochs, history.get(key, [])) if math.isfinite(v)]
            if points:
                lines.append((r, dash, points))
    parts = [
        f'<text x="{x0 + PANEL_W / 2}" y="{y0 + 20}" text-anchor="middle" font-size="13" font-weight="bold">{escape(name)}</text>'
    ]
    if not lines:
        return parts
    xs = [e for *_, pts in lines for e, _ in pts]
    ys = [v for *_, pts in lines for _, v in pts]
    x_low, x_high = min(xs), max(max(xs), min(xs) + 1)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    left, right = x0 + LEFT, x0 + PANEL_W - RIGHT
    top, bottom = y0 + TOP, y0 + PANEL_H - BOTTOM

    def px(e):
        return left + (e - x_low) / (x_high - x_low) * (right - left)

    def py(v):
        return bottom - (v - y_low) / (y_high - y_low) * (bottom - top)

    parts.append(
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>'
    )
    for tick in _ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>'
        )
    for tick in _ticks(x_low, x_high):
        if float(tick).is_integer():
            x = px(tick)
            parts.append(
                f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{int(tick)}</text>'
            )
    parts.append(
        f'<text x="{(left + right) / 2}" y="{bottom + 30}" text-anchor="middle" fill="#555">epoch</text>'
    )
    for r, dash, points in lines:
        color = COLORS[r % len(COLORS)]
        coords = " ".join(f"{px(e):.1f},{py(v):.1f}" for e, v in points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
        if len(points) == 1:
            ((e, v),) = points
            parts.append(f'<circle cx="{px(e):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>')
    return parts


# -- PNG ------------------------------------------------------------------------------------------


def _png(runs, names, output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise KerspecError(
            "PNG curves need matplotlib, which is not installed: pip install 'kerspec[plot]'"
            " (or pip install matplotlib); SVG needs nothing (-o curves.svg)",
            str(output),
        ) from None
    rows = math.ceil(len(names) / COLUMNS)
    columns = min(COLUMNS, len(names))
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    for i, name in enumerate(names):
        axis = axes[i // COLUMNS][i % COLUMNS]
        axis.set_title(name)
        axis.set_xlabel("epoch")
        for r, (label, history) in enumerate(runs):
            color = COLORS[r % len(COLORS)]
            epochs = history.get("epoch", [])
            if name in history:
                axis.plot(epochs, history[name], color=color, label=label)
            if f"val_{name}" in history:
                axis.plot(
                    epochs,
                    history[f"val_{name}"],
                    color=color,
                    linestyle="--",
                    label=f"{label} (validation)",
                )
        axis.grid(alpha=0.3)
    for j in range(len(names), rows * columns):
        axes[j // COLUMNS][j % COLUMNS].set_visible(False)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    io.atomic_write(output, lambda f: figure.savefig(f, format="png", dpi=100))
    plt.close(figure)
