"""Masks in ONNX: the (batch, steps) mask Masking and Embedding make, and the layers that read
one (a masked mean; a recurrent layer over the real steps only)."""

from __future__ import annotations

from kerspec.interop.onnx_builder import Builder, ExportError, elem
from kerspec.interop.onnx_recurrent import merge, recurrent

# Layers whose values depend on the mask they receive.
MASK_READERS = {"SimpleRNN", "LSTM", "GRU", "Bidirectional", "GlobalAveragePooling1D"}


def new_mask(b: Builder, layer, xs: list[str], hint: str) -> str | None:
    """The (batch, steps) mask a layer makes: Masking's, or Embedding's with mask_zero."""
    if layer.type == "Masking":
        equal = b.op("ReduceMin", [all_equal(b, xs[0], layer.mask_value, hint), b.ints([-1])], hint, keepdims=0)
        return b.op("Not", [b.op("Cast", [equal], hint, to=b.onnx.TensorProto.BOOL)], hint)
    if layer.type == "Embedding" and layer.mask_zero:
        return b.op("Not", [b.op("Equal", [b.op("Cast", [xs[0]], hint, to=b.onnx.TensorProto.INT64),
                                           b.ints(0)], hint)], hint)
    return None


def all_equal(b: Builder, x: str, value: float, hint: str) -> str:
    """1 where x equals `value`, as numbers (ReduceMin takes no booleans)."""
    return b.op("Cast", [b.op("Equal", [x, b.const(value)], hint)], hint, to=b.onnx.TensorProto.INT32)


def masked_emit(b: Builder, layer, x: str, mask: str, w: dict, hint: str) -> list[str]:
    """A mask-reading layer: a masked mean, or a recurrent layer over the real steps only.

    A masked step leaves a recurrent state as it was, so the final state is that of the real
    steps run back to back: they are moved to the front, in order, and the ONNX operator is
    told each sequence's length. The whole output sequence would need every masked step's
    carried-over state put back; that is refused."""
    if layer.type == "GlobalAveragePooling1D":
        m = b.op("Unsqueeze", [b.op("Cast", [mask], hint, to=elem(b)), b.ints([-1])], hint)
        total = b.op("ReduceSum", [b.op("Mul", [x, m], hint), b.ints([1])], hint, keepdims=int(layer.keepdims))
        count = b.op("ReduceSum", [m, b.ints([1])], hint, keepdims=int(layer.keepdims))
        return [b.op("Div", [total, count], hint)]
    inner = layer.layer if layer.type == "Bidirectional" else layer
    if inner.return_sequences:
        raise ExportError("a masked sequence output (return_sequences with a mask) has no exact ONNX"
                          " form in kerspec; export with the mask removed or return_sequences off")
    steps = b.op("Cast", [mask], hint, to=b.onnx.TensorProto.INT64)
    lengths = b.op("Cast", [b.op("ReduceSum", [steps, b.ints([1])], hint, keepdims=0)], hint,
                   to=b.onnx.TensorProto.INT32)
    shape = b.op("Shape", [x], hint)
    t = b.op("Slice", [shape, b.ints([1]), b.ints([2])], hint)
    position = b.op("Range", [b.ints(0), b.op("Squeeze", [t, b.ints([0])], hint), b.ints(1)], hint)
    # Real steps sort before padded ones, each group in time order: key = padded * T + t.
    key = b.op("Add", [b.op("Mul", [b.op("Sub", [b.ints(1), steps], hint), t], hint), position], hint)
    _, order = b.op("TopK", [key, t], hint, outputs=2, largest=0, sorted=1)
    index = b.op("Expand", [b.op("Unsqueeze", [order, b.ints([-1])], hint), shape], hint)
    packed = b.op("GatherElements", [x, index], hint, axis=1)
    if layer.type == "Bidirectional":
        forward = recurrent(b, layer.layer, packed, w, "forward/", f"{hint}/forward", lengths)
        backward = recurrent(b, layer.backward, packed, w, "backward/", f"{hint}/backward", lengths)
        return [*merge(b, layer.merge_mode, forward[0], backward[0], hint), *forward[1:], *backward[1:]]
    return recurrent(b, layer, packed, w, "", hint, lengths)
