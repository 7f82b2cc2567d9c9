"""Each kind of layer as ONNX operators on the same tensors, in Keras's layouts: channels-last
convolutions and pooling are wrapped in transposes (ONNX's are channels-first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kerspec.interop.onnx_builder import Builder, ExportError, elem
from kerspec.interop.onnx_lambda import expression
from kerspec.interop.onnx_masks import all_equal
from kerspec.interop.onnx_recurrent import RNN_OPS, bidirectional, recurrent
from kerspec.layers.conv import as_tuple, pad_amounts

if TYPE_CHECKING:
    from kerspec.graph.compile import Node

# Layers that only act in training: at inference their output is their input.
IDENTITY = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
            "GaussianDropout", "ActivityRegularization"}


def emit(b: Builder, node: Node, layer, xs: list[str], w: dict, shapes: list) -> list[str]:
    kind = layer.type
    hint = node.name
    if kind in IDENTITY:
        return [xs[0]]
    if kind == "Dense":
        y = b.op("MatMul", [xs[0], b.const(w["kernel"], f"{hint}/kernel")], hint)
        if layer.use_bias:
            y = b.op("Add", [y, b.const(w["bias"], f"{hint}/bias")], hint)
        return [activation(b, layer.activation, y, hint)]
    if kind == "Activation":
        return [activation(b, layer.activation, xs[0], hint)]
    if kind in ("Conv1D", "Conv2D"):
        return [conv(b, layer, xs[0], w, shapes[0], hint)]
    if kind in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        return [pool(b, layer, xs[0], shapes[0], hint)]
    if kind.startswith("Global"):
        rank = 1 if kind.endswith("1D") else 2
        axes = list(range(2, 2 + rank)) if layer.data_format == "channels_first" else list(range(1, 1 + rank))
        reduce = "ReduceMax" if "Max" in kind else "ReduceMean"
        return [b.op(reduce, [xs[0], b.ints(axes)], hint, keepdims=int(layer.keepdims))]
    if kind == "BatchNormalization":
        return [batch_norm(b, layer, xs[0], w, shapes[0], hint)]
    if kind == "LayerNormalization":
        return [layer_norm(b, layer, xs[0], w, shapes[0], hint)]
    if kind == "Flatten":
        x = xs[0]
        if layer.data_format == "channels_first" and len(shapes[0]) > 1:
            x = b.op("Transpose", [x], hint, perm=[0, *range(2, len(shapes[0]) + 1), 1])
        return [b.op("Flatten", [x], hint, axis=1)]
    if kind == "Reshape":
        return [b.op("Reshape", [xs[0], b.ints([0, *layer.target_shape])], hint)]
    if kind == "Permute":
        return [b.op("Transpose", [xs[0]], hint, perm=[0, *layer.dims])]
    if kind == "RepeatVector":
        y = b.op("Unsqueeze", [xs[0], b.ints([1])], hint)
        return [b.op("Tile", [y, b.ints([1, layer.n, 1])], hint)]
    if kind == "Masking":
        equal = b.op("ReduceMin", [all_equal(b, xs[0], layer.mask_value, hint), b.ints([-1])], hint, keepdims=1)
        keep = b.op("Cast", [b.op("Sub", [b.const(1, "one", np.int32), equal], hint)], hint, to=elem(b))
        return [b.op("Mul", [xs[0], keep], hint)]
    if kind == "Embedding":
        index = b.op("Cast", [xs[0]], hint, to=b.onnx.TensorProto.INT64)
        return [b.op("Gather", [b.const(w["embeddings"], f"{hint}/embeddings"), index], hint, axis=0)]
    if kind == "Concatenate":
        return [b.op("Concat", xs, hint, axis=layer.axis)]
    if kind in ("Add", "Multiply", "Average", "Maximum", "Minimum", "Subtract"):
        op = {"Add": "Sum", "Multiply": "Mul", "Average": "Mean", "Maximum": "Max", "Minimum": "Min",
              "Subtract": "Sub"}[kind]
        if op == "Mul":
            y = xs[0]
            for x in xs[1:]:
                y = b.op("Mul", [y, x], hint)
            return [y]
        return [b.op(op, xs, hint)]
    if kind == "Dot":
        return [dot(b, layer, xs, shapes, hint)]
    if kind in ("ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D"):
        return [pad_or_crop(b, layer, xs[0], shapes[0], hint)]
    if kind in ("UpSampling1D", "UpSampling2D"):
        return [upsample(b, layer, xs[0], shapes[0], hint)]
    if kind in RNN_OPS:
        return recurrent(b, layer, xs[0], w, "", hint)
    if kind == "Bidirectional":
        return bidirectional(b, layer, xs[0], w, hint)
    if kind == "TimeDistributed":
        return [time_distributed(b, node, layer, xs[0], w, shapes[0], hint)]
    if kind == "Lambda":
        return [expression(b, layer.program.root, xs, [len(s) + 1 for s in shapes], hint)]
    raise ExportError(f"kerspec cannot write {kind} to ONNX")


def activation(b: Builder, act, x: str, hint: str) -> str:
    kind = act.type
    if kind == "linear":
        return x
    if kind == "relu":
        if act.negative_slope or act.threshold:
            raise ExportError("relu with negative_slope or threshold has no ONNX translation in kerspec")
        y = b.op("Relu", [x], hint)
        return y if act.max_value is None else b.op("Min", [y, b.const(act.max_value)], hint)
    simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus", "softsign": "Softsign",
              "exponential": "Exp", "selu": "Selu", "mish": "Mish", "hard_silu": "HardSwish"}
    if kind in simple:
        return b.op(simple[kind], [x], hint)
    if kind == "leaky_relu":
        return b.op("LeakyRelu", [x], hint, alpha=float(act.negative_slope))
    if kind == "relu6":
        return b.op("Clip", [x, b.const(0.0), b.const(6.0)], hint)
    if kind == "hard_tanh":
        return b.op("Clip", [x, b.const(-1.0), b.const(1.0)], hint)
    if kind == "hard_sigmoid":
        return b.op("HardSigmoid", [x], hint, alpha=1 / 6, beta=0.5)
    if kind in ("softmax", "log_softmax"):
        return b.op("Softmax" if kind == "softmax" else "LogSoftmax", [x], hint, axis=act.axis)
    if kind == "elu":
        return b.op("Elu", [x], hint, alpha=float(act.alpha))
    if kind == "celu":
        return b.op("Celu", [x], hint, alpha=float(act.alpha))
    if kind == "silu":
        return b.op("Mul", [x, b.op("Sigmoid", [x], hint)], hint)
    if kind == "log_sigmoid":
        return b.op("Neg", [b.op("Softplus", [b.op("Neg", [x], hint)], hint)], hint)
    if kind == "tanh_shrink":
        return b.op("Sub", [x, b.op("Tanh", [x], hint)], hint)
    if kind == "gelu":
        return b.op("Gelu", [x], hint, approximate="tanh" if act.approximate else "none")
    if kind in ("soft_shrink", "hard_shrink"):
        bias = float(act.threshold) if kind == "soft_shrink" else 0.0
        return b.op("Shrink", [x], hint, lambd=float(act.threshold), bias=bias)
    raise ExportError(f"the activation {kind} has no ONNX translation in kerspec")


def _first(b: Builder, x: str, rank: int, hint: str) -> str:
    return b.op("Transpose", [x], hint, perm=[0, rank + 1, *range(1, rank + 1)])


def _last(b: Builder, x: str, rank: int, hint: str) -> str:
    return b.op("Transpose", [x], hint, perm=[0, *range(2, rank + 2), 1])


def _pads(layer, spatial, kernel, strides, dilation) -> dict:
    """ONNX's padding attributes for Keras's `valid`, `same` or `causal`."""
    if any(n is None for n in spatial) and layer.padding == "same":
        return {"auto_pad": "SAME_UPPER"}
    pads = pad_amounts(layer.padding, [n or 0 for n in spatial], kernel, strides, dilation)
    return {"pads": [lo for lo, _ in pads] + [hi for _, hi in pads]}


def conv(b: Builder, layer, x: str, w: dict, shape, hint: str) -> str:
    rank = layer.rank
    last = layer.data_format != "channels_first"
    spatial = shape[:-1] if last else shape[1:]
    kernel = w["kernel"]
    strides, dilation = as_tuple(layer.strides, rank), as_tuple(layer.dilation_rate, rank)
    weight = b.const(np.moveaxis(kernel, (-1, -2), (0, 1)), f"{hint}/kernel")
    inputs = [_first(b, x, rank, hint) if last else x, weight]
    if layer.use_bias:
        inputs.append(b.const(w["bias"], f"{hint}/bias"))
    y = b.op("Conv", inputs, hint, kernel_shape=list(kernel.shape[:rank]), strides=list(strides),
             dilations=list(dilation), group=layer.groups,
             **_pads(layer, spatial, kernel.shape[:rank], strides, dilation))
    y = _last(b, y, rank, hint) if last else y
    return activation(b, layer.activation, y, hint)


def pool(b: Builder, layer, x: str, shape, hint: str) -> str:
    rank = layer.rank
    last = layer.data_format != "channels_first"
    spatial = shape[:-1] if last else shape[1:]
    window = as_tuple(layer.pool_size, rank)
    strides = as_tuple(layer.strides, rank) if layer.strides is not None else window
    op = "MaxPool" if "Max" in layer.type else "AveragePool"
    extra = {} if op == "MaxPool" else {"count_include_pad": 0}
    y = b.op(op, [_first(b, x, rank, hint) if last else x], hint, kernel_shape=list(window),
             strides=list(strides), **_pads(layer, spatial, window, strides, (1,) * rank), **extra)
    return _last(b, y, rank, hint) if last else y


def _axis_shape(axis: int, ndim: int, size: int) -> list[int]:
    """The shape that broadcasts a per-feature vector along `axis` of an input with batch."""
    shape = [1] * ndim
    shape[axis] = size
    return shape[1:]


def batch_norm(b: Builder, layer, x: str, w: dict, shape, hint: str) -> str:
    ndim = len(shape) + 1
    axis = layer.axis if layer.axis >= 0 else ndim + layer.axis
    size = shape[axis - 1]
    one = np.ones(size, np.float64)
    gamma = w.get("gamma", one).astype(np.float64)
    beta = w.get("beta", np.zeros(size)).astype(np.float64)
    scale = gamma / np.sqrt(w["moving_variance"].astype(np.float64) + layer.epsilon)
    shift = beta - w["moving_mean"].astype(np.float64) * scale
    target = _axis_shape(axis, ndim, size)
    y = b.op("Mul", [x, b.const(scale.reshape(target), f"{hint}/scale")], hint)
    return b.op("Add", [y, b.const(shift.reshape(target), f"{hint}/shift")], hint)


def layer_norm(b: Builder, layer, x: str, w: dict, shape, hint: str) -> str:
    ndim = len(shape) + 1
    axes = layer.axis if isinstance(layer.axis, list) else [layer.axis]
    axes = sorted(a if a >= 0 else ndim + a for a in axes)
    if layer.rms_scaling or axes != list(range(axes[0], ndim)):
        raise ExportError("only LayerNormalization over the trailing axes, without rms_scaling, is exported")
    dims = [shape[a - 1] for a in axes]
    scale = w.get("gamma", np.ones(dims))
    bias = w.get("beta", np.zeros(dims))
    return b.op("LayerNormalization", [x, b.const(scale, f"{hint}/gamma"), b.const(bias, f"{hint}/beta")],
                hint, axis=axes[0], epsilon=float(layer.epsilon))


def dot(b: Builder, layer, xs: list[str], shapes, hint: str) -> str:
    if any(len(s) != 1 for s in shapes):
        raise ExportError("only Dot of two vectors per sample (rank 2 inputs) is exported")
    a, c = xs
    if layer.normalize:
        a = b.op("LpNormalization", [a], hint, axis=-1, p=2)
        c = b.op("LpNormalization", [c], hint, axis=-1, p=2)
    return b.op("ReduceSum", [b.op("Mul", [a, c], hint), b.ints([-1])], hint, keepdims=1)


def pad_or_crop(b: Builder, layer, x: str, shape, hint: str) -> str:
    last = getattr(layer, "data_format", None) != "channels_first"
    pairs = layer._pairs()
    rank = len(pairs)
    first_axis = 1 if last else 2
    if layer.type.startswith("ZeroPadding"):
        before = [0] * (rank + 2)
        after = [0] * (rank + 2)
        for i, (lo, hi) in enumerate(pairs):
            before[first_axis + i], after[first_axis + i] = lo, hi
        return b.op("Pad", [x, b.ints(before + after), b.const(0.0)], hint)
    axes = [first_axis + i for i in range(rank)]
    starts = [lo for lo, _ in pairs]
    ends = [-hi if hi else np.iinfo(np.int64).max for _, hi in pairs]
    return b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(axes)], hint)


def upsample(b: Builder, layer, x: str, shape, hint: str) -> str:
    rank = 1 if layer.type.endswith("1D") else 2
    if getattr(layer, "interpolation", "nearest") != "nearest":
        raise ExportError("only nearest-neighbour UpSampling2D is exported")
    factors = as_tuple(layer.size, rank)
    last = getattr(layer, "data_format", None) != "channels_first"
    scales = [1.0, *factors, 1.0] if last else [1.0, 1.0, *factors]
    return b.op("Resize", [x, "", b.const(scales, f"{hint}/scales", np.float32)], hint, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def time_distributed(b: Builder, node, layer, x: str, w: dict, shape, hint: str) -> str:
    """The inner layer on (batch * time, ...), reshaped back to (batch, time, ...)."""
    inner = layer.layer
    if any(d is None for d in shape):
        raise ExportError("TimeDistributed is exported for inputs of known shape only")
    steps, step_shape = shape[0], list(shape[1:])
    folded = b.op("Reshape", [x, b.ints([-1, *step_shape])], hint)
    (y,) = emit(b, node, inner, [folded], w, [tuple(step_shape)])[:1]
    out_shape = list(inner.output_shapes([tuple(step_shape)])[0])
    return b.op("Reshape", [y, b.ints([-1, steps, *out_shape])], hint)
