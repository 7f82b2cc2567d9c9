"""Small models shared by the import/export tests: kerspec specs covering every layer family
that exports, and the shipped specs (specs/, specs/gallery/)."""

from pathlib import Path

import numpy as np

import kerspec

ROOT = Path(__file__).parent.parent
SHIPPED = sorted([*(ROOT / "specs").glob("*.yaml"), *(ROOT / "specs" / "gallery").glob("*.yaml")])

SPECS = {
    "conv2d": """
layers:
  - {type: Input, shape: [9, 8, 2], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, padding: same, strides: 2, activation: relu, name: c1}
  - {type: BatchNormalization, name: bn}
  - {type: ZeroPadding2D, padding: [1, 2]}
  - {type: Conv2D, filters: 3, kernel_size: [2, 3], dilation_rate: 1, activation: elu, name: c2}
  - {type: MaxPooling2D, pool_size: 2, padding: same}
  - {type: Cropping2D, cropping: [[0, 1], [1, 0]]}
  - {type: UpSampling2D, size: 2}
  - {type: AveragePooling2D, pool_size: 3, strides: 1, padding: same}
  - {type: Conv2D, filters: 2, kernel_size: 1, data_format: channels_first, activation: selu}
  - {type: GlobalAveragePooling2D, keepdims: true}
  - {type: Flatten}
  - {type: Dense, units: 3, activation: softmax}
""",
    "conv1d": """
layers:
  - {type: Input, shape: [12, 3], name: x}
  - {type: Conv1D, filters: 4, kernel_size: 3, padding: causal, dilation_rate: 2, activation: gelu}
  - {type: Conv1D, filters: 4, kernel_size: 2, groups: 2, padding: same, activation: silu}
  - {type: ZeroPadding1D, padding: 2}
  - {type: MaxPooling1D, pool_size: 3, strides: 2}
  - {type: Cropping1D, cropping: [1, 0]}
  - {type: UpSampling1D, size: 3}
  - {type: AveragePooling1D, pool_size: 2}
  - {type: LayerNormalization}
  - {type: GlobalMaxPooling1D}
  - {type: Dense, units: 2, activation: tanh}
""",
    "merges": """
layers:
  - {type: Input, shape: [6], name: a}
  - {type: Input, shape: [6], name: b}
  - {type: Dense, units: 4, activation: leaky_relu, from: a, name: da}
  - {type: Dense, units: 4, activation: hard_sigmoid, from: b, name: db}
  - {name: db2, share: db, from: a}
  - {type: Add, from: [da, db, db2], name: add}
  - {type: Subtract, from: [da, db], name: sub}
  - {type: Multiply, from: [add, sub], name: mul}
  - {type: Average, from: [add, sub], name: avg}
  - {type: Maximum, from: [mul, avg], name: mx}
  - {type: Minimum, from: [mul, avg], name: mn}
  - {type: Dot, axes: 1, normalize: true, from: [mx, mn], name: dot}
  - {type: Concatenate, from: [mx, mn, dot], name: cat}
  - {type: Dropout, rate: 0.5}
  - {type: Activation, activation: softplus}
  - {type: RepeatVector, n: 3}
  - {type: Permute, dims: [2, 1]}
  - {type: Reshape, target_shape: [3, 9, 1], name: reshaped}
  - {type: Flatten, name: flat}
outputs: [flat, dot]
""",
    "recurrent": """
layers:
  - {type: Input, shape: [7, 3], name: x}
  - {type: LSTM, units: 4, return_sequences: true, name: lstm}
  - {type: GRU, units: 3, return_sequences: true, go_backwards: true, name: gru}
  - {type: GRU, units: 3, reset_after: false, return_sequences: true, name: gru_v1}
  - {type: SimpleRNN, units: 2, return_sequences: true, activation: relu, name: rnn}
  - {type: Bidirectional, layer: {type: LSTM, units: 2, return_sequences: true}, name: bi}
  - {type: Bidirectional, layer: {type: GRU, units: 2}, merge_mode: sum, name: bi2}
  - {type: LSTM, units: 3, return_state: true, go_backwards: true, from: bi, name: enc}
  - {type: Concatenate, from: ["enc", "enc[1]", "enc[2]", bi2], name: cat}
  - {type: Dense, units: 2, name: out}
""",
    "embedding": """
layers:
  - {type: Input, shape: [5], dtype: int32, name: tokens}
  - {type: Embedding, input_dim: 10, output_dim: 4, name: emb}
  - {type: TimeDistributed, layer: {type: Dense, units: 3, activation: relu}, name: td}
  - {type: GlobalAveragePooling1D}
  - {type: Dense, units: 1, activation: sigmoid}
""",
    "masked": """
layers:
  - {type: Input, shape: [6, 3], name: x}
  - {type: Masking, name: mask}
  - {type: LSTM, units: 3, go_backwards: true, name: lstm}
  - {type: Bidirectional, layer: {type: GRU, units: 2}, from: mask, name: bi}
  - {type: SimpleRNN, units: 2, from: mask, name: rnn}
  - {type: Input, shape: [6], dtype: int32, name: tokens}
  - {type: Embedding, input_dim: 10, output_dim: 3, mask_zero: true, name: emb}
  - {type: GlobalAveragePooling1D, name: mean}
  - {type: Concatenate, from: [lstm, bi, rnn, mean], name: out}
""",
}


def spec_text(name: str) -> str:
    return SPECS[name] if name in SPECS else Path(name).read_text()


def model(name: str) -> kerspec.Model:
    """A kerspec model with random (not initializer) weights: zero biases would hide mistakes."""
    ours = kerspec.from_yaml(SPECS[name], seed=0) if name in SPECS else kerspec.load(name, seed=0)
    rng = np.random.default_rng(1)
    for ws in ours.params.values():
        for key, w in ws.items():
            w[...] = rng.uniform(0.2, 1.0, w.shape) if "variance" in key else rng.normal(0, 0.5, w.shape)
    return ours


def inputs(ours: kerspec.Model, n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    xs = {}
    for name, shape in ours.graph.input_shapes().items():
        layer = ours.graph.node(name).layer
        shape = tuple(4 if d is None else d for d in shape)
        if layer.dtype in ("int32", "int64"):
            xs[name] = rng.integers(0, 10, (n, *shape)).astype(layer.dtype)
        else:
            xs[name] = rng.random((n, *shape)).astype(ours.dtype)
        if len(shape) >= 1 and n >= 4:  # padded steps: at the start, the end, the middle
            xs[name][0, :2] = 0
            xs[name][1, -3:] = 0
            xs[name][2, 1:3] = 0
    return xs
