"""Bridges to other frameworks: `kerspec import` from Keras files, `kerspec export` to ONNX and
Keras 3 archives. kerspec keeps Keras's layer names, arguments and weight layouts, so both
directions are exact. The optional packages they need (h5py, onnx) are imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kerspec.errors import KerspecError

if TYPE_CHECKING:
    from kerspec.api import Model


def export_model(model: Model, output: Path, *, overwrite: bool = False) -> None:
    """`kerspec export`: by the output's extension, ONNX or a Keras 3 archive."""
    suffix = Path(output).suffix.lower()
    if suffix == ".onnx":
        from kerspec.interop.onnx_export import write_onnx

        write_onnx(model, Path(output), overwrite=overwrite)
    elif suffix == ".keras":
        from kerspec.interop.keras_export import write_keras

        write_keras(model, Path(output), overwrite=overwrite)
    else:
        raise KerspecError(f"unsupported export type {suffix or '(none)'!r}: use .onnx or .keras", str(output))
