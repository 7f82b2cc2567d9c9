"""Keras's recurrent layers as ONNX's RNN, GRU and LSTM operators, their weights reordered into
ONNX's gate order; Bidirectional as two of them."""

from __future__ import annotations

import numpy as np

from kerspec.interop.onnx_builder import Builder, ExportError

RNN_OPS = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU"}

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
    return [*merge(b, layer.merge_mode, yf, yb, hint), *forward[1:], *backward[1:]]


def merge(b: Builder, mode: str | None, yf: str, yb: str, hint: str) -> list[str]:
    if mode is None:
        return [yf, yb]
    if mode == "concat":
        return [b.op("Concat", [yf, yb], hint, axis=-1)]
    if mode == "sum":
        return [b.op("Add", [yf, yb], hint)]
    if mode == "mul":
        return [b.op("Mul", [yf, yb], hint)]
    return [b.op("Mul", [b.op("Add", [yf, yb], hint), b.const(0.5)], hint)]
