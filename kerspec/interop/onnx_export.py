"""`kerspec export SPEC --weights W -o MODEL.onnx`: the inference graph as ONNX.

Every node of the compiled graph becomes a few ONNX operators on the same tensors, in Keras's
layouts: channels-last convolutions and pooling are wrapped in transposes (ONNX's are
channels-first), recurrent layers become ONNX's LSTM, GRU and RNN operators with their weights
reordered into ONNX's gate order. The batch dimension is symbolic. What ONNX cannot say exactly
(a mask reaching a recurrent layer, a Lambda's formula) is refused with the layer's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kerspec.interop.onnx_builder import Builder, ExportError, need_onnx
from kerspec.interop.onnx_layers import emit
from kerspec.interop.onnx_masks import MASK_READERS, masked_emit, new_mask
from kerspec.io import atomic_write

if TYPE_CHECKING:
    from kerspec.api import Model

OPSET = 20


def write_onnx(model: Model, path: Path, *, overwrite: bool = False) -> None:
    onnx = need_onnx()
    proto = to_onnx(model, onnx)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"the ONNX graph does not check: {str(err).splitlines()[0]}", str(path)) from None
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data), replace=overwrite)


def to_onnx(model: Model, onnx):
    graph = model.graph
    b = Builder(onnx, model.dtype)
    elem = onnx.helper.np_dtype_to_tensor_dtype(model.dtype)
    tensors: dict[str, str] = {}
    inputs = []
    for name in graph.inputs:
        node = graph.node(name)
        dtype = node.layer.dtype or model.spec.dtype
        dims = ["batch", *(d if d is not None else f"{name}_dim{i}" for i, d in enumerate(node.output_shapes[0]))]
        inputs.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims))
        tensors[name] = name
    problems = []
    masks: dict[str, str] = {}  # tensor -> its (batch, steps) bool mask, where it has one
    for node in graph.nodes:
        if node.type == "Input":
            continue
        if any(str(ref) not in tensors for ref in node.inputs):
            continue  # after a layer already refused
        xs = [tensors[str(ref)] for ref in node.inputs]
        masked = [graph.node(ref.node).output_masked[ref.index] if graph.node(ref.node).output_masked else False
                  for ref in node.inputs]
        in_masks = [masks[x] for x, m in zip(xs, masked) if m and x in masks]
        mask = None
        for m in in_masks:
            mask = m if mask is None else b.op("And", [mask, m], node.name)
        try:
            weights = model.params.get(node.owner, {})
            shapes = [graph.output_shape(r) for r in node.inputs]
            if mask is not None and node.type in MASK_READERS:
                ys = masked_emit(b, node.layer, xs[0], mask, weights, node.name)
            else:
                ys = emit(b, node, node.layer, xs, weights, shapes)
        except ExportError as err:
            problems.append(ExportError(f"{node.type} {node.name!r}: {err.message}", err.where))
            continue
        for i, y in enumerate(ys):
            tensors[node.name if i == 0 else f"{node.name}[{i}]"] = y
            if i == 0:
                tensors[f"{node.name}[0]"] = y
            if node.output_masked and node.output_masked[i]:
                masks[y] = new_mask(b, node.layer, xs, node.name) or mask
    if problems:
        from kerspec.errors import Problems

        raise Problems(problems)
    outputs = []
    for ref, name in zip(graph.outputs, model.output_names):
        b.nodes.append(onnx.helper.make_node("Identity", [tensors[str(ref)]], [name]))
        shape = ["batch", *(d if d is not None else f"{name}_dim{i}" for i, d in enumerate(graph.output_shape(ref)))]
        outputs.append(onnx.helper.make_tensor_value_info(name, elem, shape))
    onnx_graph = onnx.helper.make_graph(b.nodes, model.name, inputs, outputs, b.initializers)
    return onnx.helper.make_model(
        onnx_graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="kerspec",
        ir_version=9)
