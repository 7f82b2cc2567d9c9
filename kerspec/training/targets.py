"""Targets checked against the loss that reads them: class indices, one-hot rows, 0/1 values or
real values, of the output's shape.

What each output takes (`OutputInfo`) is worked out once, when the model is compiled, from its
loss's `targets`; the data loaders receive it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kerspec.io.datafile import some_names
from kerspec.training.arrays import (
    Locate,
    Shape,
    Source,
    at_index,
    cast,
    check_numbers,
    first,
    fits,
    show,
)
from kerspec.training.losses import Loss

Kind = Literal["sparse", "categorical", "binary", "real"]


@dataclass(frozen=True)
class OutputInfo:
    """What a model output's targets look like, as its loss reads them.

    `shape` is the output's shape without the batch dimension. `kind` is what the targets hold:
    class indices (`sparse`), one-hot rows (`categorical`), 0/1 values (`binary`) or real values.
    """

    shape: Shape
    kind: Kind


def output_targets(shapes: Mapping[str, Shape], losses: Mapping[str, Loss | None]) -> dict[str, OutputInfo]:
    """Each output's targets: its shape and what its loss reads (real values without a loss)."""
    kinds = {name: loss.targets for name, loss in losses.items() if loss is not None}
    return {name: OutputInfo(shape, kinds.get(name, "real")) for name, shape in shapes.items()}


def _classes(file: Source, name: str, shape: Shape) -> int:
    """The class count of a classification output: the size of its last dimension."""
    if not shape or shape[-1] is None:
        raise file.error(
            f"output {name!r} has shape {(None, *shape)}, so its class count (the last"
            " dimension) is unknown; class-index targets need a known class count"
        )
    return shape[-1]


def _class_indices(
    file: Source, label: str, y: np.ndarray, name: str, shape: Shape, locate: Locate
) -> np.ndarray:
    """Targets as int64 class indices for an output of `shape`; Keras takes (n,) and (n, 1)."""
    lead, classes = shape[:-1], _classes(file, name, shape)
    if fits(y.shape, (None, *lead, 1)) and not fits(y.shape, (None, *lead)):
        y = y.reshape(y.shape[:-1])
    if not fits(y.shape, (None, *lead)):
        hint = "; these look like one-hot rows" if fits(y.shape, (None, *shape)) else ""
        raise file.error(
            f"{label} has shape {y.shape} but output {name!r} takes class indices of shape"
            f" {(None, *lead)} or {(None, *lead, 1)}{hint}"
        )
    if y.dtype.kind == "f":
        bad = first(y != np.floor(y))
        if bad is not None:
            raise file.error(
                f"{label} has label {show(y[bad])} at {locate(bad)}, which is not a class index"
                f" (a whole number) for output {name!r}"
            )
    bad = first((y < 0) | (y >= classes))
    if bad is not None:
        raise file.error(
            f"{label} has label {show(y[bad])} at {locate(bad)}, outside the {classes} classes"
            f" of output {name!r} (expected 0 to {classes - 1})"
        )
    return y.astype(np.int64)


def fit_target(
    file: Source,
    label: str,
    y: np.ndarray,
    name: str,
    info: OutputInfo,
    one_hot: bool,
    dtype: np.dtype,
    locate: Locate = at_index,
) -> np.ndarray:
    check_numbers(file, label, y, locate)
    shape = info.shape
    if info.kind == "sparse" or one_hot:
        if info.kind == "sparse" and one_hot:
            raise file.error(
                f"`one_hot: true` makes one-hot rows, but output {name!r} takes class indices"
                " (a sparse loss): remove `one_hot` or use a categorical loss"
            )
        indices = _class_indices(file, label, y, name, shape, locate)
        if info.kind == "sparse":
            return indices
        y = np.eye(shape[-1], dtype=dtype)[indices]
    if info.kind == "binary":
        bad = first((y < 0) | (y > 1))
        if bad is not None:
            raise file.error(
                f"{label} has {show(y[bad])} at {locate(bad)}, but output {name!r} takes"
                " binary targets between 0 and 1"
            )
    expected = (None, *shape)
    one_unit = len(shape) > 0 and shape[-1] == 1 and info.kind in ("binary", "real")
    if one_unit and fits(y.shape, (None, *shape[:-1])):
        # Keras takes (n,) targets for a one-unit output.
        y = y.reshape(*y.shape, 1)
    if not fits(y.shape, expected):
        hint = ""
        looks_sparse = fits(y.shape, expected[:-1]) or fits(y.shape, (*expected[:-1], 1))
        if info.kind == "categorical" and looks_sparse:
            hint = (
                "; these look like class indices: set `one_hot: true`, or use a sparse loss"
                " (sparse_categorical_crossentropy)"
            )
        raise file.error(
            f"{label} has shape {y.shape} but output {name!r} expects {expected}{hint}"
        )
    return cast(file, label, y, dtype, locate)


def _text_classes(file: Source, label: str, name: str, info: OutputInfo, one_hot: bool) -> int:
    """How many classes text labels must cover, so that sorted labels are the class indices."""
    if info.kind in ("sparse", "categorical") or one_hot:
        return _classes(file, name, info.shape)
    if info.kind == "binary" and info.shape == (1,):
        return 2
    raise file.error(
        f"{label} holds text, but output {name!r} takes {info.kind} targets of shape"
        f" {(None, *info.shape)}; text labels serve classification outputs"
    )


def text_targets(file: Source, label: str, cells: list[str], name: str, info: OutputInfo, one_hot: bool) -> np.ndarray:
    """Text labels as class indices in sorted label order, so the file must hold every class."""
    labels = sorted(set(cells))
    index = {label: i for i, label in enumerate(labels)}
    y = np.fromiter((index[cell] for cell in cells), np.int64, len(cells))
    classes = _text_classes(file, label, name, info, one_hot)
    if len(labels) != classes:
        raise file.error(
            f"{label} holds {len(labels)} text labels ({some_names(list(labels))}) but output"
            f" {name!r} has {classes} classes; text labels become class indices in sorted"
            " order, so the file must hold exactly one label per class"
        )
    return y


def class_weights(y: np.ndarray, class_weight: Mapping[int, float], dtype: np.dtype) -> np.ndarray:
    """Keras's class_weight: a weight per sample from its target's class (the argmax of a one-hot
    target, the rounded value of a single column); classes not listed weigh 1."""
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else y[..., 0]
    classes = np.round(y).astype(np.int64)
    weights = np.ones(classes.shape, dtype)
    for index, weight in class_weight.items():
        weights[classes == index] = weight
    return weights
