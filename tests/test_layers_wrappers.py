"""Wrappers: TimeDistributed and Bidirectional, their gradients, Keras equivalence (with masks),
nested validation errors at their place, and weights saved as `td/kernel`, `bi/forward/kernel`."""

import json

import numpy as np
import pytest

import kerspec
from kerspec.errors import GraphError, SpecError
from kerspec.layers import Context
from kerspec.spec import json_schema, parse_spec
from kerspec.training.data import Dataset
from tests.harness import build, check_layer_grads, compare_with_keras, random_weights

LSTM_SEQ = {"type": "LSTM", "units": 2, "return_sequences": True}
MODES = ["concat", "sum", "mul", "ave", None]


def bi(layer: dict, **kw) -> dict:
    return {"type": "Bidirectional", "layer": layer, **kw}


def td(layer: dict, **kw) -> dict:
    return {"type": "TimeDistributed", "layer": layer, **kw}


# -- gradients -------------------------------------------------------------------------------

GRAD_CASES = {
    "td-dense": (td({"type": "Dense", "units": 3, "activation": "tanh"}), [(2, 3, 4)]),
    "td-dense-4d": (td({"type": "Dense", "units": 2}), [(2, 3, 2, 4)]),
    "td-conv2d-5d": (td({"type": "Conv2D", "filters": 2, "kernel_size": 2}), [(2, 2, 4, 4, 1)]),
    "td-flatten": (td({"type": "Flatten"}), [(2, 3, 2, 2)]),
    "td-td-dense": (td(td({"type": "Dense", "units": 2})), [(2, 2, 3, 4)]),
    "td-bi-gru": (td(bi({"type": "GRU", "units": 2})), [(2, 2, 3, 3)]),
    **{
        f"bi-lstm-{mode}-{seq}": (
            bi({"type": "LSTM", "units": 2, "return_sequences": seq}, merge_mode=mode),
            [(2, 3, 3)],
        )
        for mode in MODES
        for seq in (False, True)
    },
    **{
        f"bi-gru-state-{mode}": (
            bi({"type": "GRU", "units": 2, "return_sequences": True, "return_state": True},
               merge_mode=mode),
            [(2, 3, 3)],
        )
        for mode in MODES
    },
    "bi-lstm-state-last": (
        bi({"type": "LSTM", "units": 2, "return_state": True}, merge_mode="mul"), [(2, 3, 3)]
    ),
    "bi-simple-rnn": (bi({"type": "SimpleRNN", "units": 3}, merge_mode="ave"), [(2, 4, 2)]),
    "bi-custom-backward": (
        bi(
            {"type": "LSTM", "units": 2, "return_sequences": True, "return_state": True},
            backward_layer={"type": "GRU", "units": 3, "go_backwards": True,
                            "return_sequences": True, "return_state": True},
        ),
        [(2, 3, 3)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradients(name):
    config, shapes = GRAD_CASES[name]
    check_layer_grads(config, shapes)


@pytest.mark.parametrize("mode", ["concat", "mul", None])
def test_masked_gradients(mode):
    """Under a mask (return_sequences): masked steps output zeros; the rest is differentiable."""
    from tests.gradcheck import check_grads

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 2))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], bool)
    layer = build(bi({"type": "GRU", "units": 2, "return_sequences": True, "return_state": True},
                     merge_mode=mode))  # fmt: skip
    w = random_weights(layer, [x.shape], rng)

    def forward():
        ys, backprop = layer.forward(w, [x], Context(False, np.random.default_rng(0), masks=[mask]))
        sizes = np.cumsum([y.size for y in ys])[:-1]

        def grads(r):
            dys = [p.reshape(y.shape) for p, y in zip(np.split(r, sizes), ys)]
            (dx,), dws = backprop(dys)
            return {"x": dx, **dws}

        return np.concatenate([y.ravel() for y in ys]), grads

    check_grads(forward, {"x": x, **w})
    ys, _ = forward()
    assert not ys[: 3 * 4 * (4 if mode == "concat" else 2)].reshape(3, 4, -1)[~mask].any()


# -- Keras -----------------------------------------------------------------------------------


def test_time_distributed_dense_matches_keras():
    keras = pytest.importorskip("keras")
    compare_with_keras(
        td({"type": "Dense", "units": 3, "activation": "tanh"}),
        keras.layers.TimeDistributed(keras.layers.Dense(3, activation="tanh")),
        [(2, 3, 4)],
    )


def test_time_distributed_conv2d_matches_keras():
    keras = pytest.importorskip("keras")
    compare_with_keras(
        td({"type": "Conv2D", "filters": 2, "kernel_size": 2, "activation": "relu"}),
        keras.layers.TimeDistributed(keras.layers.Conv2D(2, 2, activation="relu")),
        [(2, 3, 5, 5, 2)],
    )


def keras_bidirectional_name(variable) -> str:
    """`bidirectional/forward_lstm/lstm_cell/kernel` -> `forward/kernel`."""
    parts = variable.path.split("/")
    direction = "forward" if any(p.startswith("forward_") for p in parts) else "backward"
    return f"{direction}/{parts[-1]}"


def compare_bidirectional(config, keras_layer, shape, mask=None, rtol=1e-4, atol=1e-5):
    """Same weights, inputs (and mask): same outputs and gradients as Keras's Bidirectional."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = build(config)
    x = rng.standard_normal(shape).astype(np.float32)
    w = random_weights(layer, [shape], rng, np.float32)
    keras_layer.build(shape)
    names = [keras_bidirectional_name(v) for v in keras_layer.weights]
    assert sorted(names) == sorted(w)
    for variable in keras_layer.weights:
        variable.assign(w[keras_bidirectional_name(variable)])
    x_torch = torch.tensor(x, requires_grad=True)
    kwargs = {} if mask is None else {"mask": torch.tensor(mask)}
    out = keras_layer(x_torch, **kwargs)
    outs = list(out) if isinstance(out, list | tuple) else [out]

    ctx = Context(training=False, rng=np.random.default_rng(0), masks=[mask])
    ys, backprop = layer.forward(w, [x], ctx)
    assert len(ys) == len(outs)
    for y, k in zip(ys, outs):
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, k.detach().numpy(), rtol=rtol, atol=atol)
    rs = [rng.standard_normal(y.shape).astype(np.float32) for y in ys]
    sum((k * torch.tensor(r)).sum() for k, r in zip(outs, rs)).backward()
    (dx,), dws = backprop([r.copy() for r in rs])
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=rtol, atol=atol, err_msg="input")
    for variable in keras_layer.trainable_weights:
        name = keras_bidirectional_name(variable)
        np.testing.assert_allclose(
            dws[name], variable.value.grad.numpy(), rtol=rtol, atol=atol, err_msg=name
        )


RNNS = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "SimpleRNN"}


def keras_rnn(keras, kind, **kw):
    return getattr(keras.layers, kind)(3, **kw)


KERAS_CASES = [
    (kind, mode, kw)
    for kind in ("LSTM", "GRU")
    for mode in MODES
    for kw in ({"return_sequences": True}, {"return_state": True})
] + [
    ("SimpleRNN", "concat", {}),
    ("LSTM", "concat", {"return_sequences": True, "return_state": True}),
    ("GRU", None, {"return_sequences": True, "return_state": True, "reset_after": False}),
]


@pytest.mark.parametrize(
    "kind,mode,kw", KERAS_CASES, ids=[f"{k}-{m}-{'-'.join(kw)}" for k, m, kw in KERAS_CASES]
)
def test_bidirectional_matches_keras(kind, mode, kw):
    keras = pytest.importorskip("keras")
    compare_bidirectional(
        bi({"type": kind, "units": 3, **kw}, merge_mode=mode),
        keras.layers.Bidirectional(keras_rnn(keras, kind, **kw), merge_mode=mode),
        (3, 4, 2),
    )


def test_custom_backward_layer_matches_keras():
    keras = pytest.importorskip("keras")
    kw = {"return_sequences": True, "return_state": True}
    compare_bidirectional(
        bi({"type": "LSTM", "units": 3, **kw},
           backward_layer={"type": "GRU", "units": 2, "go_backwards": True, **kw}),
        keras.layers.Bidirectional(
            keras.layers.LSTM(3, **kw),
            backward_layer=keras.layers.GRU(2, go_backwards=True, **kw),
        ),
        (3, 4, 2),
    )  # fmt: skip


MASKED_CASES = [
    ("LSTM", "concat", {"return_sequences": True}),
    ("GRU", None, {"return_sequences": True, "return_state": True}),
    ("LSTM", "sum", {}),
    ("GRU", "mul", {"return_state": True}),
    ("SimpleRNN", "ave", {"return_sequences": True}),
]


@pytest.mark.parametrize(
    "kind,mode,kw", MASKED_CASES, ids=[f"{k}-{m}-{'-'.join(kw)}" for k, m, kw in MASKED_CASES]
)
def test_masked_bidirectional_matches_keras(kind, mode, kw):
    """Variable-length batches: both directions skip padding; masked steps output zeros."""
    keras = pytest.importorskip("keras")
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]], bool)
    compare_bidirectional(
        bi({"type": kind, "units": 3, **kw}, merge_mode=mode),
        keras.layers.Bidirectional(keras_rnn(keras, kind, **kw), merge_mode=mode),
        (3, 4, 2),
        mask=mask,
    )


def test_masks_as_keras_passes_them():
    layer = build(bi(LSTM_SEQ, merge_mode=None))
    assert layer.output_masked([True], 2) == [True, True]
    assert build(bi({"type": "LSTM", "units": 2, "return_state": True})).output_masked(
        [True], 3
    ) == [False, False, False]
    mask = np.array([[True, False]])
    assert build(td({"type": "Dense", "units": 1})).compute_mask([], [mask], [None])[0] is mask


def test_parameter_count_matches_keras():
    keras = pytest.importorskip("keras")
    model = kerspec.from_yaml(
        """
layers:
  - {type: Input, shape: [5, 4]}
  - {type: TimeDistributed, layer: {type: Dense, units: 3}}
  - {type: Bidirectional, layer: {type: GRU, units: 2}, backward_layer: {type: GRU, units: 3, go_backwards: true}}
"""
    )
    theirs = keras.Sequential(
        [
            keras.Input((5, 4)),
            keras.layers.TimeDistributed(keras.layers.Dense(3)),
            keras.layers.Bidirectional(
                keras.layers.GRU(2), backward_layer=keras.layers.GRU(3, go_backwards=True)
            ),
        ]
    )
    assert model.count_params() == (theirs.count_params(), 0)
    assert model.graph.nodes[-1].output_shapes == [(5,)]


# -- specs, errors, files ----------------------------------------------------------------------

TAGGER = """
seed: 0
layers:
  - {name: tokens, type: Input, shape: [6]}
  - {name: emb, type: Embedding, input_dim: 8, output_dim: 4, mask_zero: true}
  - {name: bi, type: Bidirectional, layer: {type: LSTM, units: 4, return_sequences: true}}
  - {name: td, type: TimeDistributed, layer: {type: Dense, units: 2, activation: softmax}}
compile: {optimizer: {type: adam, learning_rate: 0.02}, loss: sparse_categorical_crossentropy}
"""


def tagging_data(rng, n=32):
    lengths = rng.integers(2, 7, n)
    tokens = rng.integers(1, 8, (n, 6))
    tokens[np.arange(6)[None, :] >= lengths[:, None]] = 0
    # The tag of a token: does a larger token follow it anywhere later (needs the backward pass).
    later = np.maximum.accumulate(tokens[:, ::-1], axis=1)[:, ::-1]
    tags = (np.concatenate([later[:, 1:], np.zeros((n, 1), int)], axis=1) > tokens).astype(int)
    return tokens.astype(np.float32), tags


def test_embedding_bidirectional_lstm_tagger_trains():
    model = kerspec.from_yaml(TAGGER)
    assert [n.output_masked for n in model.graph.nodes[1:]] == [[True], [True], [True]]
    tokens, tags = tagging_data(np.random.default_rng(0))
    data = Dataset({"tokens": tokens}, {"td": tags}, "t")
    history = model.fit(data, epochs=15, batch_size=8)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]


def test_embedding_bidirectional_lstm_dense_trains():
    model = kerspec.from_yaml(
        """
seed: 0
layers:
  - {name: tokens, type: Input, shape: [6]}
  - {type: Embedding, input_dim: 8, output_dim: 4, mask_zero: true}
  - {type: Bidirectional, layer: {type: LSTM, units: 3}, merge_mode: sum}
  - {name: out, type: Dense, units: 1, activation: sigmoid}
compile: {optimizer: {type: adam, learning_rate: 0.02}, loss: binary_crossentropy}
"""
    )
    tokens, _ = tagging_data(np.random.default_rng(1))
    y = (tokens[:, 0] > 4).astype(np.float32)[:, None]
    history = model.fit(Dataset({"tokens": tokens}, {"out": y}, "t"), epochs=10, batch_size=8)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_weights_are_saved_under_the_wrapper_names(tmp_path):
    model = kerspec.from_yaml(TAGGER)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    with np.load(path) as saved:
        keys = set(saved.files)
    assert {"td/kernel", "td/bias", "bi/forward/kernel", "bi/backward/kernel",
            "bi/forward/recurrent_kernel", "bi/backward/bias"} <= keys  # fmt: skip
    assert keys == {f"{o}/{n}" for o, ws in model.params.items() for n in ws}
    other = kerspec.from_yaml(TAGGER.replace("seed: 0", "seed: 1"))
    assert not np.allclose(
        other.params["bi"]["forward/kernel"], model.params["bi"]["forward/kernel"]
    )
    other.load_weights(path)
    tokens, _ = tagging_data(np.random.default_rng(0), n=4)
    np.testing.assert_array_equal(other.predict(tokens)["td"], model.predict(tokens)["td"])


def test_a_frozen_wrapped_layer_does_not_train():
    model = kerspec.from_yaml(
        TAGGER.replace("activation: softmax}", "activation: softmax, trainable: false}")
    )
    kernel = model.params["td"]["kernel"].copy()
    tokens, tags = tagging_data(np.random.default_rng(0), n=8)
    model.fit(Dataset({"tokens": tokens}, {"td": tags}, "t"), epochs=1, batch_size=8)
    np.testing.assert_array_equal(model.params["td"]["kernel"], kernel)
    assert model.count_params()[1] == 4 * 2 * 2 + 2  # td's kernel (8, 2) and bias (2,)


def spec_problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "m.yaml")
    return [str(p) for p in caught.value.problems]


def test_an_error_inside_the_wrapped_layer_is_reported_at_its_place():
    problems = spec_problems(
        "layers:\n"
        "  - {type: Input, shape: [5, 4]}\n"
        "  - {type: TimeDistributed, layer: {type: Dense, unitz: 3}}\n"
        "  - name: bi\n"
        "    type: Bidirectional\n"
        "    layer:\n"
        "      type: LSTM\n"
        "      units: 0\n"
    )
    assert (
        "m.yaml:3:50: TimeDistributed (layers[1]): layer: unknown argument 'unitz'; "
        "did you mean 'units'?"
    ) in problems
    assert (
        "m.yaml:8:14: Bidirectional 'bi': layer.units: should be greater than 0 (received 0)"
        in problems
    )


@pytest.mark.parametrize(
    "entry,message",
    [
        ("{type: Bidirectional, layer: {type: Dense, units: 3}}",
         ("5:34: Bidirectional (layers[1]): layer: Bidirectional wraps an RNN "
          "(SimpleRNN, LSTM or GRU); received Dense")),
        ("{type: Bidirectional, layer: {type: LSTM, units: 3}, merge_mode: max}",
         ("merge_mode: Invalid merge mode: expected one of concat, sum, mul, ave or null (None). "
          "Received: merge_mode='max'")),
        ("{type: Bidirectional, layer: {type: LSTMM, units: 3}}",
         "layer: unknown layer 'LSTMM'; did you mean 'LSTM'?"),
        ("{type: Bidirectional, layer: {type: LSTM, units: 3}, weights: [1, 2]}",
         "weights: Bidirectional's `weights` is not supported"),
        ("{type: Bidirectional, layer: {type: LSTM, units: 3, go_backwards: true}}",
         "the backward copy of `layer` reads backwards"),
        ("{type: Bidirectional, layer: {type: GRU, units: 3}, backward_layer: {type: GRU, units: 3}}",
         "Forward layer and backward layer should have different `go_backwards` value"),
        (("{type: Bidirectional, layer: {type: GRU, units: 3}, "
          "backward_layer: {type: GRU, units: 3, go_backwards: true, return_sequences: true}}"),
         "layer and backward_layer must have the same return_sequences"),
        ("{type: Bidirectional, layer: {type: LSTM, units: 3, activity_regularizer: l2}}",
         "an activity regularizer on the wrapped layer is not supported"),
        ("{type: TimeDistributed, layer: Dense}", "layer: the wrapped layer is a mapping"),
        ("{type: TimeDistributed, layer: {units: 3}}", "layer: a layer mapping needs a 'type'"),
        ("{type: TimeDistributed, layer: {type: Add}}",
         "layer: TimeDistributed wraps a layer with one input; Add takes two or more"),
        ("{type: TimeDistributed, layer: {type: Dense, units: 2, from: x}}",
         "layer: a wrapped layer takes no 'from'"),
        ("{type: TimeDistributed, layer: {type: TimeDistributed, layer: {type: Dense, units: -1}}}",
         "layer.layer.units: should be greater than 0 (received -1)"),
    ],
)  # fmt: skip
def test_invalid_wrappers_are_spec_errors(entry, message):
    problems = spec_problems(f"layers:\n  - {{type: Input, shape: [5, 4]}}\n\n\n  - {entry}\n")
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize(
    "shape,entry,message",
    [
        ("[4]", "{type: TimeDistributed, layer: {type: Dense, units: 2}}",
         "TimeDistributed expects an input of rank 3 or more (batch, time, ...); received (None, 4)"),
        ("[5, 3, 4]", "{type: TimeDistributed, layer: {type: LSTM, units: 2, return_state: true}}",
         "TimeDistributed wraps a layer with one output; the LSTM gives 3"),
        ("[4]", "{type: Bidirectional, layer: {type: LSTM, units: 2}}",
         "LSTM expects a 3-D input (batch, time, features)"),
        ("[5, 4]", ("{type: Bidirectional, layer: {type: GRU, units: 2}, merge_mode: sum, "
                    "backward_layer: {type: GRU, units: 3, go_backwards: true}}"),
         "merge_mode 'sum' needs both directions to give the same shape"),
    ],
)  # fmt: skip
def test_shape_errors_are_graph_errors(shape, entry, message):
    with pytest.raises(GraphError) as caught:
        kerspec.from_yaml(f"layers:\n  - {{type: Input, shape: {shape}}}\n  - {entry}\n")
    assert message in str(caught.value)


def test_json_schema_nests_the_layer_union():
    schema = json_schema()
    json.dumps(schema)
    defs = schema["$defs"]
    inner = json.dumps(defs["TimeDistributed"]["properties"]["layer"])
    assert '"#/$defs/Dense"' in inner and '"#/$defs/TimeDistributed"' in inner
    rnn = json.dumps(defs["Bidirectional"]["properties"]["layer"])
    assert '"#/$defs/LSTM"' in rnn and '"#/$defs/Dense"' not in rnn


def test_summary_lists_the_wrappers():
    text = kerspec.from_yaml(TAGGER).summary()
    assert "bi (Bidirectional)" in text and "td (TimeDistributed)" in text
