"""Predictions as a CSV table a person reads: for a classifier, the predicted class beside the
probabilities, named by the text labels the spec's CSV target was mapped from; columns of the
input kept beside them (`--keep-columns id`)."""

from __future__ import annotations

import csv
import io as text_io
from pathlib import Path

import numpy as np

from kerspec import io
from kerspec.io.csv import csv_text_labels
from kerspec.spec.data import PathData

CLASSIFIERS = ("sparse", "categorical", "binary")


def class_labels(model) -> dict[str, list[str] | None]:
    """Per classifier output, its class names (None: class indices), from the spec's CSV data."""
    if model.spec.compile is None or model.spec.compile.loss is None:
        return {}
    model._compile()  # as training would, refuse a compile section that does not fit the outputs
    kinds = {name: info for name, info in model.targets.items() if info.kind in CLASSIFIERS}
    section = model.spec.data
    entries = [getattr(section, w) for w in ("train", "validation", "test")] if section else []
    csvs = [e for e in entries if isinstance(e, PathData) and e.path.lower().endswith(".csv")]
    labels: dict[str, list[str] | None] = {}
    for name, info in kinds.items():
        if info.kind == "binary" and info.shape != (1,):
            continue  # several independent yes/no outputs: no single class to name
        labels[name] = None
        for entry in csvs:
            column = entry.target if entry.target is not None else name
            found = csv_text_labels(entry.path, column, model.loaded.base_dir)
            if found is not None:
                labels[name] = found
                break
    return labels


def csv_table(
    predictions: dict[str, np.ndarray],
    labels: dict[str, list[str] | None],
    kept: dict[str, list[str]],
) -> str:
    header = list(kept)
    columns: list[list[str]] = [list(values) for values in kept.values()]
    for name, array in predictions.items():
        flat = array.reshape(len(array), -1)
        if name in labels:
            index = (
                (flat[:, 0] > 0.5).astype(int) if flat.shape[1] == 1 else np.argmax(flat, axis=1)
            )
            names = labels[name]
            header.append(f"{name}_class")
            columns.append([names[i] if names and i < len(names) else str(i) for i in index])
        if flat.shape[1] == 1:
            header.append(name)
        else:
            header.extend(f"{name}_{i}" for i in range(flat.shape[1]))
        columns.extend([repr(float(v)) for v in flat[:, j]] for j in range(flat.shape[1]))
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(*columns))
    return buffer.getvalue()


def write_csv(
    path: Path, model, predictions: dict[str, np.ndarray], kept: dict[str, list[str]]
) -> None:
    io.write_text(path, csv_table(predictions, class_labels(model), kept))
