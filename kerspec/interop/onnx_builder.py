"""ONNX nodes and initializers under construction (`Builder`), and the error every ONNX writer
raises for what ONNX cannot say exactly."""

from __future__ import annotations

import numpy as np

from kerspec.errors import KerspecError


class ExportError(KerspecError):
    """The model cannot be written in the format asked for."""


def need_onnx():
    try:
        import onnx
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package: pip install 'kerspec[onnx]'") from None
    return onnx


class Builder:
    """ONNX nodes and initializers under construction, with fresh names for intermediates."""

    def __init__(self, onnx, dtype: np.dtype):
        self.onnx = onnx
        self.helper = onnx.helper
        self.dtype = dtype
        self.nodes = []
        self.initializers = []
        self.count = 0
        self.constants: dict[str, str] = {}

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}/{self.count}"

    def const(self, array, hint: str = "const", dtype=None) -> str:
        array = np.asarray(array, dtype=dtype or self.dtype)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(values, np.int64), hint, np.int64)

    def op(self, kind: str, inputs: list[str], hint: str, outputs: int = 1, **attrs):
        names = [self.fresh(f"{hint}/{kind}") for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(kind, inputs, names, **attrs))
        return names[0] if outputs == 1 else names


def elem(b: Builder) -> int:
    return b.onnx.helper.np_dtype_to_tensor_dtype(b.dtype)
