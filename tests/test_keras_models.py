"""Whole models against Keras 3: same weights → same predictions, the same weights after one SGD
step and after three steps of every optimizer, and the same summary counts and shapes."""

import numpy as np
import pytest

import kerspec
from kerspec.training.data import Dataset

keras = pytest.importorskip("keras")
layers = keras.layers

MLP = """
seed: 0
layers:
  - {type: Input, shape: [6], name: x}
  - {type: Dense, units: 8, activation: relu, name: hidden,
     kernel_regularizer: {type: l2, l2: 0.01}, bias_regularizer: l1}
  - {type: Dropout, rate: 0.3}
  - {type: Dense, units: 4, activation: softmax, name: out, kernel_constraint: {type: max_norm, max_value: 0.5}}
compile: {optimizer: {type: sgd, learning_rate: 0.1}, loss: categorical_crossentropy, metrics: [accuracy]}
"""


def mlp_keras(rate=0.3):
    x = keras.Input((6,), name="x")
    h = layers.Dense(8, activation="relu", name="hidden", kernel_regularizer=keras.regularizers.L2(0.01),
                     bias_regularizer="l1")(x)
    h = layers.Dropout(rate)(h)
    y = layers.Dense(4, activation="softmax", name="out",
                     kernel_constraint=keras.constraints.MaxNorm(0.5))(h)
    return keras.Model(x, y)


GRAPH = """
seed: 0
layers:
  - {type: Input, shape: [3, 4], name: a}
  - {type: Input, shape: [5], name: b}
  - {type: Permute, dims: [2, 1], from: a, name: swap}
  - {type: Flatten, name: flat}
  - {type: Dense, units: 6, activation: tanh, from: b, name: db, activity_regularizer: {type: l2, l2: 0.1}}
  - {type: Concatenate, from: [flat, db], name: cat}
  - {type: Dense, units: 6, activation: elu, name: mix}
  - {type: Reshape, target_shape: [2, 3], name: shape}
  - {type: Flatten, name: flat2}
  - {type: Dense, units: 1, activation: sigmoid, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.1}, loss: binary_crossentropy}
"""


def graph_keras():
    a = keras.Input((3, 4), name="a")
    b = keras.Input((5,), name="b")
    flat = layers.Flatten(name="flat")(layers.Permute((2, 1), name="swap")(a))
    db = layers.Dense(6, activation="tanh", name="db", activity_regularizer=keras.regularizers.L2(0.1))(b)
    mix = layers.Dense(6, activation="elu", name="mix")(layers.Concatenate(name="cat")([flat, db]))
    out = layers.Dense(1, activation="sigmoid", name="out")(layers.Flatten(name="flat2")(layers.Reshape((2, 3))(mix)))
    return keras.Model([a, b], out)


REGRESSION = """
seed: 0
layers:
  - {type: Dense, units: 5, activation: selu, input_shape: [3], name: h}
  - {type: Dense, units: 2, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.05}, loss: huber}
"""


def regression_keras():
    x = keras.Input((3,))
    h = layers.Dense(5, activation="selu", name="h")(x)
    return keras.Model(x, layers.Dense(2, name="out")(h))


# ReLUs read only by max pooling: the plan moves them after the pooling (graph/fusions.py).
CNN = """
seed: 0
layers:
  - {type: Input, shape: [8, 8, 2], name: x}
  - {type: Conv2D, filters: 4, kernel_size: 3, activation: relu, name: c1}
  - {type: MaxPooling2D, name: p1}
  - {type: Conv2D, filters: 3, kernel_size: 2, activation: relu, name: c2}
  - {type: GlobalMaxPooling2D, name: g}
  - {type: Dense, units: 3, activation: softmax, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.1}, loss: categorical_crossentropy}
"""


def cnn_keras():
    x = keras.Input((8, 8, 2), name="x")
    h = layers.MaxPooling2D(name="p1")(layers.Conv2D(4, 3, activation="relu", name="c1")(x))
    h = layers.GlobalMaxPooling2D(name="g")(layers.Conv2D(3, 2, activation="relu", name="c2")(h))
    return keras.Model(x, layers.Dense(3, activation="softmax", name="out")(h))


def data_for(model: kerspec.Model, rng, n=16):
    xs = {name: rng.random((n, *shape)).astype(np.float32) for name, shape in model.graph.input_shapes().items()}
    (out,) = model.output_names
    units = model.graph.output_shape(model.graph.outputs[0])[-1]
    loss = model.spec.compile.loss.type
    if loss == "categorical_crossentropy":
        y = np.eye(units, dtype=np.float32)[rng.integers(0, units, n)]
    elif loss == "binary_crossentropy":
        y = rng.integers(0, 2, (n, units)).astype(np.float32)
    else:
        y = rng.standard_normal((n, units)).astype(np.float32)
    return xs, {out: y}


def copy_weights(ours: kerspec.Model, theirs) -> None:
    for layer in theirs.layers:
        for variable in layer.weights:
            variable.assign(ours.params[layer.name][variable.path.split("/")[-1]])


def keras_weights(theirs) -> dict:
    return {
        f"{layer.name}/{v.path.split('/')[-1]}": np.asarray(v.numpy())
        for layer in theirs.layers
        for v in layer.weights
    }


def our_weights(ours: kerspec.Model) -> dict:
    return {f"{layer}/{name}": w for layer, ws in ours.params.items() for name, w in ws.items()}


MODELS = [(MLP, mlp_keras), (GRAPH, graph_keras), (REGRESSION, regression_keras), (CNN, cnn_keras)]
# Dropout draws different masks in the two libraries: training is compared without it.
TRAINED = [(MLP.replace("rate: 0.3", "rate: 0.0"), lambda: mlp_keras(0.0)), *MODELS[1:]]


@pytest.mark.parametrize("spec,make", MODELS, ids=["mlp", "graph", "regression", "cnn"])
def test_same_predictions(spec, make, rng):
    ours, theirs = kerspec.from_yaml(spec), make()
    copy_weights(ours, theirs)
    xs, _ = data_for(ours, rng)
    x_list = [xs[n] for n in ours.input_names]
    expected = theirs.predict(x_list[0] if len(x_list) == 1 else x_list, verbose=0)
    (got,) = ours.predict(xs).values()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def train_both(spec, make, optimizer, steps, rng):
    ours, theirs = kerspec.from_yaml(spec), make()
    copy_weights(ours, theirs)
    loss = ours.spec.compile.loss.type
    theirs.compile(optimizer=optimizer, loss=loss)
    xs, ys = data_for(ours, rng)
    x_list = [xs[n] for n in ours.input_names]
    x_list = x_list[0] if len(x_list) == 1 else x_list
    (y,) = ys.values()
    data = Dataset(xs, ys, "test")
    for _ in range(steps):
        theirs.train_on_batch(x_list, y)
        ours.fit(data, epochs=1, batch_size=len(y))
    return ours, theirs


@pytest.mark.parametrize("spec,make", TRAINED, ids=["mlp", "graph", "regression", "cnn"])
def test_same_weights_after_one_sgd_step(spec, make, rng):
    ours, theirs = train_both(spec, make, keras.optimizers.SGD(learning_rate=_lr(spec)), 1, rng)
    expected = keras_weights(theirs)
    got = our_weights(ours)
    assert set(got) == set(expected)
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-6, err_msg=key)


def _lr(spec: str) -> float:
    return float(spec.split("learning_rate: ")[1].split("}")[0])


OPTIMIZERS = {
    "sgd": ("{type: sgd, learning_rate: 0.1, momentum: 0.9, nesterov: true}",
            lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)),
    "rmsprop": ("{type: rmsprop, learning_rate: 0.01}", lambda: keras.optimizers.RMSprop(0.01)),
    "adam": ("{type: adam, learning_rate: 0.01, amsgrad: true}", lambda: keras.optimizers.Adam(0.01, amsgrad=True)),
    "adamw": ("{type: adamw, learning_rate: 0.01}", lambda: keras.optimizers.AdamW(0.01)),
    "adagrad": ("{type: adagrad, learning_rate: 0.1}", lambda: keras.optimizers.Adagrad(0.1)),
    "adadelta": ("{type: adadelta, learning_rate: 1.0}", lambda: keras.optimizers.Adadelta(1.0)),
    "adamax": ("{type: adamax, learning_rate: 0.01}", lambda: keras.optimizers.Adamax(0.01)),
    "nadam": ("{type: nadam, learning_rate: 0.01, clipnorm: 0.5}", lambda: keras.optimizers.Nadam(0.01, clipnorm=0.5)),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_same_weights_after_three_steps_of_each_optimizer(name, rng):
    spec_opt, make_opt = OPTIMIZERS[name]
    spec = TRAINED[0][0].replace("{type: sgd, learning_rate: 0.1}", spec_opt)
    ours, theirs = train_both(spec, TRAINED[0][1], make_opt(), 3, rng)
    expected = keras_weights(theirs)
    for key, value in our_weights(ours).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_loss_includes_regularization_as_keras_reports_it(rng):
    spec, make = TRAINED[0]
    ours, theirs = kerspec.from_yaml(spec), make()
    copy_weights(ours, theirs)
    theirs.compile(optimizer="sgd", loss="categorical_crossentropy")
    xs, ys = data_for(ours, rng)
    expected = theirs.evaluate(xs["x"], ys["out"], batch_size=16, verbose=0)
    got = ours.evaluate(Dataset(xs, ys, "test"), batch_size=16)["loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("spec,make", MODELS, ids=["mlp", "graph", "regression", "cnn"])
def test_summary_matches_keras_counts_and_shapes(spec, make):
    ours, theirs = kerspec.from_yaml(spec), make()
    assert ours.count_params() == (theirs.count_params(), 0)
    rows = {row["name"]: row for row in ours.summary_data()["layers"]}
    for layer in theirs.layers:
        if layer.name in rows:
            shape = layer.output.shape
            assert rows[layer.name]["output_shape"] == str(tuple(shape)).replace(",)", ",)")
            assert rows[layer.name]["params"] == layer.count_params()


TWO_HEADS = """
seed: 0
layers:
  - {type: Input, shape: [5], name: x}
  - {type: Dense, units: 6, activation: relu, name: trunk}
  - {type: Dense, units: 3, activation: softmax, from: trunk, name: kind}
  - {type: Dense, units: 2, from: trunk, name: size}
outputs: [kind, size]
compile:
  optimizer: {type: sgd, learning_rate: 0.1}
  loss: {kind: categorical_crossentropy, size: mse}
  loss_weights: {kind: 1.0, size: 0.3}
"""


def two_heads_keras():
    x = keras.Input((5,), name="x")
    trunk = layers.Dense(6, activation="relu", name="trunk")(x)
    kind = layers.Dense(3, activation="softmax", name="kind")(trunk)
    size = layers.Dense(2, name="size")(trunk)
    return keras.Model(x, {"kind": kind, "size": size})


SIAMESE = """
seed: 0
layers:
  - {type: Input, shape: [4], name: a}
  - {type: Input, shape: [4], name: b}
  - {type: Dense, units: 3, activation: tanh, from: a, name: enc}
  - {name: enc_b, share: enc, from: b}
  - {type: Subtract, from: [enc, enc_b], name: diff}
  - {type: Dense, units: 1, activation: sigmoid, name: out}
compile: {optimizer: {type: sgd, learning_rate: 0.2}, loss: binary_crossentropy}
"""


def siamese_keras():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    enc = layers.Dense(3, activation="tanh", name="enc")
    diff = layers.Subtract(name="diff")([enc(a), enc(b)])
    return keras.Model([a, b], layers.Dense(1, activation="sigmoid", name="out")(diff))


def test_two_outputs_with_loss_weights_match_keras(rng):
    ours, theirs = kerspec.from_yaml(TWO_HEADS), two_heads_keras()
    copy_weights(ours, theirs)
    x = rng.random((8, 5)).astype(np.float32)
    ys = {"kind": np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)],
          "size": rng.standard_normal((8, 2)).astype(np.float32)}
    expected = theirs.predict(x, verbose=0)
    got = ours.predict(x)
    for name in ys:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6)
    theirs.compile(optimizer=keras.optimizers.SGD(0.1),
                   loss={"kind": "categorical_crossentropy", "size": "mse"},
                   loss_weights={"kind": 1.0, "size": 0.3})
    keras_logs = theirs.evaluate(x, ys, batch_size=8, verbose=0, return_dict=True)
    data = Dataset({"x": x}, ys, "t")
    our_logs = ours.evaluate(data, batch_size=8)
    for key in ("loss", "kind_loss", "size_loss"):
        np.testing.assert_allclose(our_logs[key], keras_logs[key], rtol=1e-5, err_msg=key)
    theirs.train_on_batch(x, ys)
    ours.fit(data, epochs=1, batch_size=8)
    expected_w = keras_weights(theirs)
    for key, value in our_weights(ours).items():
        np.testing.assert_allclose(value, expected_w[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_shared_layer_matches_keras(rng):
    ours, theirs = kerspec.from_yaml(SIAMESE), siamese_keras()
    copy_weights(ours, theirs)
    xs = {"a": rng.random((8, 4)).astype(np.float32), "b": rng.random((8, 4)).astype(np.float32)}
    y = rng.integers(0, 2, (8, 1)).astype(np.float32)
    np.testing.assert_allclose(ours.predict(xs)["out"], theirs.predict([xs["a"], xs["b"]], verbose=0), rtol=1e-4)
    theirs.compile(optimizer=keras.optimizers.SGD(0.2), loss="binary_crossentropy")
    theirs.train_on_batch([xs["a"], xs["b"]], y)
    ours.fit(Dataset(xs, {"out": y}, "t"), epochs=1, batch_size=8)
    expected = keras_weights(theirs)
    assert set(our_weights(ours)) == set(expected) == {"enc/kernel", "enc/bias", "out/kernel", "out/bias"}
    for key, value in our_weights(ours).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-6, err_msg=key)
