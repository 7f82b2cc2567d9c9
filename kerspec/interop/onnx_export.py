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

from kerspec.errors import KerspecError
from kerspec.io import atomic_write
from kerspec.layers.conv import as_tuple, pad_amounts

if TYPE_CHECKING:
    from kerspec.api import Model
    from kerspec.graph.compile import Node

OPSET = 20
# Layers that only act in training: at inference their output is their input.
IDENTITY = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
            "GaussianDropout", "ActivityRegularization"}
# Layers whose values depend on the mask they receive.
MASK_READERS = {"SimpleRNN", "LSTM", "GRU", "Bidirectional", "GlobalAveragePooling1D"}
RNN_OPS = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


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
                masks[y] = _new_mask(b, node.layer, xs, node.name) or mask
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


# -- layers --------------------------------------------------------------------------------------


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
        equal = b.op("ReduceMin", [_all_equal(b, xs[0], layer.mask_value, hint), b.ints([-1])], hint, keepdims=1)
        keep = b.op("Cast", [b.op("Sub", [b.const(1, "one", np.int32), equal], hint)], hint, to=_elem(b))
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


def _elem(b: Builder) -> int:
    return b.onnx.helper.np_dtype_to_tensor_dtype(b.dtype)


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


# -- recurrent layers ----------------------------------------------------------------------------

ONNX_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "hard_sigmoid": "HardSigmoid"}


def _rnn_activations(layer) -> dict:
    acts = [layer.recurrent_activation, layer.activation, layer.activation] if layer.type == "LSTM" else (
        [layer.recurrent_activation, layer.activation] if layer.type == "GRU" else [layer.activation])
    names, alphas, betas = [], [], []
    for act in acts:
        if act.type not in ONNX_ACTIVATIONS or (act.type == "relu" and act != type(act)()):
            raise ExportError(f"the recurrent activation {act.type} has no ONNX counterpart")
        names.append(ONNX_ACTIVATIONS[act.type])
        alphas.append(1 / 6 if act.type == "hard_sigmoid" else 0.0)
        betas.append(0.5 if act.type == "hard_sigmoid" else 0.0)
    attrs = {"activations": names}
    if "HardSigmoid" in names:
        attrs.update(activation_alpha=alphas, activation_beta=betas)
    return attrs


def _gates(matrix: np.ndarray, order: list[int], n: int) -> np.ndarray:
    """Keras's gate blocks (last axis) reordered into ONNX's, transposed to ONNX's (gates, in)."""
    blocks = np.split(matrix, n, axis=-1)
    return np.concatenate([blocks[i] for i in order], axis=-1).T


def recurrent(b: Builder, layer, x: str, w: dict, prefix: str, hint: str,
              lengths: str | None = None) -> list[str]:
    """One direction of a Keras RNN as an ONNX RNN/GRU/LSTM over (time, batch, features);
    `lengths` (int32 per sequence) when only each sequence's first steps are real."""
    kind = layer.type
    units = layer.units
    gates = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[kind]
    # Keras: LSTM i, f, c, o; GRU z, r, h. ONNX: LSTM i, o, f, c; GRU z, r, h.
    order = [0, 3, 1, 2] if kind == "LSTM" else list(range(gates))
    kernel, recurrent_kernel = w[f"{prefix}kernel"], w[f"{prefix}recurrent_kernel"]
    W = _gates(kernel, order, gates)[None]
    R = _gates(recurrent_kernel, order, gates)[None]
    bias = w.get(f"{prefix}bias")
    attrs = _rnn_activations(layer)
    if kind == "GRU":
        attrs["linear_before_reset"] = int(layer.reset_after)
    if bias is None:
        B = np.zeros((1, 2 * gates * units))
    elif bias.ndim == 2:  # GRU reset_after: input and recurrent biases
        B = np.concatenate([_gates(bias[0][None], order, gates).T, _gates(bias[1][None], order, gates).T],
                           axis=-1)
    else:
        B = np.concatenate([_gates(bias[None], order, gates).T, np.zeros((1, gates * units))], axis=-1)
    seq = b.op("Transpose", [x], hint, perm=[1, 0, 2])
    if layer.go_backwards:
        reverse = b.op("Cast", [lengths], hint, to=b.onnx.TensorProto.INT64) if lengths else _lengths(b, x, hint)
        seq = b.op("ReverseSequence", [seq, reverse], hint, batch_axis=1, time_axis=0)
    operands = [seq, b.const(W, f"{hint}/W"), b.const(R, f"{hint}/R"), b.const(B, f"{hint}/B")]
    outputs = b.op(RNN_OPS[kind], operands + ([lengths] if lengths else []),
                   hint, outputs=3 if kind == "LSTM" else 2, hidden_size=units, **attrs)
    y_all, h = outputs[0], outputs[1]
    last = b.op("Squeeze", [h, b.ints([0])], hint)
    if layer.return_sequences:
        y = b.op("Transpose", [b.op("Squeeze", [y_all, b.ints([1])], hint)], hint, perm=[1, 0, 2])
    else:
        y = last
    if not layer.return_state:
        return [y]
    states = [last]
    if kind == "LSTM":
        states.append(b.op("Squeeze", [outputs[2], b.ints([0])], hint))
    return [y, *states]


def _lengths(b: Builder, x: str, hint: str) -> str:
    """Every sequence's length: the time dimension, once per batch row."""
    shape = b.op("Shape", [x], hint)
    batch = b.op("Slice", [shape, b.ints([0]), b.ints([1])], hint)
    steps = b.op("Slice", [shape, b.ints([1]), b.ints([2])], hint)
    return b.op("Expand", [steps, batch], hint)


def bidirectional(b: Builder, layer, x: str, w: dict, hint: str) -> list[str]:
    forward = recurrent(b, layer.layer, x, w, "forward/", f"{hint}/forward")
    backward = recurrent(b, layer.backward, x, w, "backward/", f"{hint}/backward")
    yf, yb = forward[0], backward[0]
    if layer.layer.return_sequences:  # Keras puts the backward sequence back in time order
        yb = b.op("ReverseSequence", [b.op("Transpose", [yb], hint, perm=[1, 0, 2]), _lengths(b, x, hint)],
                  hint, batch_axis=1, time_axis=0)
        yb = b.op("Transpose", [yb], hint, perm=[1, 0, 2])
    return [*_merge(b, layer.merge_mode, yf, yb, hint), *forward[1:], *backward[1:]]


def _merge(b: Builder, mode: str | None, yf: str, yb: str, hint: str) -> list[str]:
    if mode is None:
        return [yf, yb]
    if mode == "concat":
        return [b.op("Concat", [yf, yb], hint, axis=-1)]
    if mode == "sum":
        return [b.op("Add", [yf, yb], hint)]
    if mode == "mul":
        return [b.op("Mul", [yf, yb], hint)]
    return [b.op("Mul", [b.op("Add", [yf, yb], hint), b.const(0.5)], hint)]


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


# -- masks ---------------------------------------------------------------------------------------


def _new_mask(b: Builder, layer, xs: list[str], hint: str) -> str | None:
    """The (batch, steps) mask a layer makes: Masking's, or Embedding's with mask_zero."""
    if layer.type == "Masking":
        equal = b.op("ReduceMin", [_all_equal(b, xs[0], layer.mask_value, hint), b.ints([-1])], hint, keepdims=0)
        return b.op("Not", [b.op("Cast", [equal], hint, to=b.onnx.TensorProto.BOOL)], hint)
    if layer.type == "Embedding" and layer.mask_zero:
        return b.op("Not", [b.op("Equal", [b.op("Cast", [xs[0]], hint, to=b.onnx.TensorProto.INT64),
                                           b.ints(0)], hint)], hint)
    return None


def _all_equal(b: Builder, x: str, value: float, hint: str) -> str:
    """1 where x equals `value`, as numbers (ReduceMin takes no booleans)."""
    return b.op("Cast", [b.op("Equal", [x, b.const(value)], hint)], hint, to=b.onnx.TensorProto.INT32)


def masked_emit(b: Builder, layer, x: str, mask: str, w: dict, hint: str) -> list[str]:
    """A mask-reading layer: a masked mean, or a recurrent layer over the real steps only.

    A masked step leaves a recurrent state as it was, so the final state is that of the real
    steps run back to back: they are moved to the front, in order, and the ONNX operator is
    told each sequence's length. The whole output sequence would need every masked step's
    carried-over state put back; that is refused."""
    if layer.type == "GlobalAveragePooling1D":
        m = b.op("Unsqueeze", [b.op("Cast", [mask], hint, to=_elem(b)), b.ints([-1])], hint)
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
        return [*_merge(b, layer.merge_mode, forward[0], backward[0], hint), *forward[1:], *backward[1:]]
    return recurrent(b, layer, packed, w, "", hint, lengths)


# -- Lambda expressions --------------------------------------------------------------------------

ONNX_ELEMENTWISE = {"abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh",
                    "sigmoid": "Sigmoid", "relu": "Relu", "softplus": "Softplus", "sin": "Sin",
                    "cos": "Cos", "neg": "Neg"}
ONNX_BINARY = {"+": "Add", "-": "Sub", "*": "Mul", "/": "Div", "@": "MatMul", "maximum": "Max",
               "minimum": "Min"}
ONNX_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin"}


def expression(b: Builder, node, xs: list[str], ndims: list[int], hint: str) -> str:
    """A Lambda's parsed formula (kerspec.expression) as ONNX operators."""
    from kerspec.expression import permutation

    values = []

    def visit(n):
        args = [visit(a) for a in n.args]
        op, p = n.op, n.params
        if op == "input":
            values.append(ndims[p])
            return xs[p]
        if op == "const":
            return b.const(p)
        if op in ONNX_ELEMENTWISE:
            return b.op(ONNX_ELEMENTWISE[op], args, hint)
        if op == "square":
            return b.op("Mul", [args[0], args[0]], hint)
        if op in ONNX_BINARY:
            return b.op(ONNX_BINARY[op], args, hint)
        if op == "pow":
            return b.op("Pow", [args[0], b.const(p)], hint)
        if op == "clip":
            return b.op("Clip", [args[0], b.const(p[0]), b.const(p[1])], hint)
        if op in ONNX_REDUCE:
            axes, keepdims = p
            return b.op(ONNX_REDUCE[op], [args[0], b.ints(list(axes))], hint, keepdims=int(keepdims))
        if op == "reshape":
            return b.op("Reshape", [args[0], b.ints([0, *p])], hint)
        if op == "expand_dims":
            return b.op("Unsqueeze", [args[0], b.ints([p] if isinstance(p, int) else list(p))], hint)
        if op == "squeeze":
            return b.op("Squeeze", [args[0], b.ints([p] if isinstance(p, int) else list(p))], hint)
        if op == "concatenate":
            return b.op("Concat", args, hint, axis=p)
        if op == "transpose":
            return b.op("Transpose", args, hint, perm=list(permutation(n, _rank(n, ndims))))
        raise ExportError(f"the expression's {n.where()} has no ONNX translation in kerspec")

    return visit(node)


def _rank(node, ndims: list[int]) -> int:
    """The rank of a transposed sub-expression: its input's, when it reads one directly."""
    arg = node.args[0]
    if arg.op == "input":
        return ndims[arg.params]
    raise ExportError(f"the expression's {node.where()} has no ONNX translation in kerspec")
