"""Keras <-> kerspec: Keras .keras -> `kerspec import` -> the same predictions as Keras's, and
kerspec -> `kerspec export -o .keras` -> Keras loads it and predicts as kerspec does."""

import numpy as np
import pytest
from typer.testing import CliRunner

import kerspec
from kerspec.cli import app
from tests.interop_models import SHIPPED, SPECS, inputs, model, spec_text

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
layers = keras.layers

# Lambda has no Keras form kerspec writes (Keras keeps Python bytecode); the siamese gallery
# spec has one and is refused, which test_lambda_is_refused_for_keras checks.
EXPORTABLE = [n for n in [*SPECS, *map(str, SHIPPED)] if not n.endswith("siamese.yaml")]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def keras_predict(theirs, ours, xs):
    got = theirs.predict([xs[n] for n in ours.input_names], verbose=0)
    if isinstance(got, dict):
        got = list(got.values())
    return got if isinstance(got, list) else [got]


@pytest.mark.parametrize("name", EXPORTABLE, ids=lambda n: n.split("/")[-1])
def test_exported_keras_archive_predicts_as_kerspec(name, tmp_path):
    ours = model(name)
    weights, spec = tmp_path / "w.npz", tmp_path / "spec.yaml"
    ours.save_weights(weights)
    spec.write_text(spec_text(name))
    result = cli("export", spec, "--weights", weights, "-o", tmp_path / "m.keras")
    assert result.exit_code == 0, result.output
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    xs = inputs(ours)
    expected = ours.predict(xs)
    for (key, value), got in zip(expected.items(), keras_predict(theirs, ours, xs)):
        np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=key)


# -- Keras -> kerspec ----------------------------------------------------------------------------


def sequential():
    return keras.Sequential([keras.Input((6,)), layers.Dense(5, activation="relu", kernel_regularizer="l2"),
                             layers.Dropout(0.2), layers.Dense(3, activation="softmax")], name="seq")


def functional():
    a, b = keras.Input((4, 3), name="a"), keras.Input((5,), name="b")
    shared = layers.Dense(4, activation="tanh", name="shared")
    h = layers.Flatten()(a)
    left, right = shared(layers.Dense(5, name="pre")(h)), shared(b)
    merged = layers.Concatenate()([left, right])
    out1 = layers.Dense(2, activation="sigmoid", name="out1")(merged)
    out2 = layers.Dense(1, name="out2", kernel_constraint=keras.constraints.MaxNorm(3.0))(layers.Subtract()([left, right]))
    m = keras.Model([a, b], [out1, out2])
    m.compile(optimizer=keras.optimizers.RMSprop(0.005), loss=["binary_crossentropy", "mse"],
              metrics=[["accuracy"], ["mae"]], loss_weights=[1.0, 0.5])
    return m


def conv():
    x = keras.Input((10, 10, 2), name="image")
    h = layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)
    h = layers.BatchNormalization()(h)
    h = layers.MaxPooling2D()(h)
    h = layers.Conv2D(3, 2, strides=2)(h)
    h = layers.GlobalAveragePooling2D()(h)
    m = keras.Model(x, layers.Dense(2, activation="softmax")(h))
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return m


def recurrent():
    tokens = keras.Input((7,), dtype="int32", name="tokens")
    h = layers.Embedding(12, 4, mask_zero=True)(tokens)
    h = layers.Bidirectional(layers.LSTM(3, return_sequences=True))(h)
    h = layers.TimeDistributed(layers.Dense(3, activation="relu"))(h)
    h = layers.GRU(3, go_backwards=True)(h)
    frames = keras.Input((6, 2), name="frames")
    g = layers.Masking()(frames)
    g = layers.SimpleRNN(2)(g)
    return keras.Model([tokens, frames], layers.Dense(1)(layers.Concatenate()([h, g])))


def nested():
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3, activation="elu"), layers.Dense(2)], name="inner")
    x = keras.Input((4,), name="x")
    return keras.Model(x, layers.Add()([inner(x), layers.Dense(2)(x)]))


KERAS_MODELS = {"sequential": sequential, "functional": functional, "conv": conv,
                "recurrent": recurrent, "nested": nested}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each Keras model with random weights, saved once as .keras (the module's tests share them)."""
    folder = tmp_path_factory.mktemp("keras")
    rng = np.random.default_rng(3)
    paths = {}
    for name, make in KERAS_MODELS.items():
        theirs = make()
        for v in theirs.weights:
            v.assign(rng.uniform(0.2, 1.0, v.shape) if "variance" in v.path else rng.normal(0, 0.5, v.shape))
        paths[name] = folder / f"{name}.keras"
        theirs.save(paths[name])
    return paths


def keras_inputs(theirs, rng):
    xs = []
    for tensor in theirs.inputs:
        shape = (6, *tensor.shape[1:])
        x = rng.integers(0, 12, shape).astype("int32") if "int" in str(tensor.dtype) else rng.random(shape).astype("float32")
        x[0, :2] = 0  # padded steps for the masked inputs
        xs.append(x)
    return xs


@pytest.mark.parametrize("name", list(KERAS_MODELS))
def test_imported_model_predicts_as_keras(name, saved, tmp_path, rng):
    result = cli("import", saved[name], "-o", tmp_path / "spec.yaml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "spec.npz").exists()
    ours = kerspec.load(tmp_path / "spec.yaml", seed=0)
    ours.load_weights(tmp_path / "spec.npz")
    theirs = keras.saving.load_model(saved[name])
    xs = keras_inputs(theirs, rng)
    expected = theirs.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    got = ours.predict(dict(zip(ours.input_names, xs)))
    for (key, value), want in zip(got.items(), expected):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=key)
    # The spec round-trips: what it writes validates and reads back as the same spec.
    assert cli("validate", tmp_path / "spec.yaml").exit_code == 0


def test_import_reads_like_a_hand_written_spec(saved, tmp_path):
    cli("import", saved["functional"], "-o", tmp_path / "spec.yaml")
    text = (tmp_path / "spec.yaml").read_text()
    assert "glorot_uniform" not in text and "zeros" not in text  # Keras defaults left out
    assert "- {name: shared_call, share: shared, from: b}" in text
    assert "data_format" not in text
    assert "max_norm" in text and "max_value: 3.0" in text
    assert "  optimizer: {type: rmsprop, learning_rate: 0.005}\n" in text
    loaded = kerspec.load(tmp_path / "spec.yaml")
    assert loaded.spec.compile.loss_weights == {"out1": 1.0, "out2": 0.5}


def test_nested_model_is_flattened_and_says_so(saved, tmp_path):
    result = cli("import", saved["nested"], "-o", tmp_path / "spec.yaml")
    assert "flattened" in result.output
    assert "inner flattened" in kerspec.load(tmp_path / "spec.yaml").spec.description


@pytest.mark.parametrize("name", EXPORTABLE, ids=lambda n: n.split("/")[-1])
def test_kerspec_keras_kerspec_round_trip(name, tmp_path):
    """Every shipped spec: export to .keras, import back: the same predictions."""
    ours = model(name)
    spec, weights = tmp_path / "spec.yaml", tmp_path / "w.npz"
    spec.write_text(spec_text(name))
    ours.save_weights(weights)
    assert cli("export", spec, "--weights", weights, "-o", tmp_path / "m.keras").exit_code == 0
    result = cli("import", tmp_path / "m.keras", "-o", tmp_path / "back.yaml")
    assert result.exit_code == 0, result.output
    back = kerspec.load(tmp_path / "back.yaml", seed=0)
    back.load_weights(tmp_path / "back.npz")
    xs = inputs(ours)
    for (key, want), got in zip(ours.predict(xs).items(), back.predict(xs).values()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=key)


def test_lambda_is_refused_for_keras(tmp_path):
    siamese = next(p for p in SHIPPED if p.stem == "siamese")
    ours = model(str(siamese))
    ours.save_weights(tmp_path / "w.npz")
    result = cli("export", siamese, "--weights", tmp_path / "w.npz", "-o", tmp_path / "m.keras")
    assert result.exit_code == 1
    assert "Lambda 'distance'" in result.output and "bytecode" in result.output
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("name", ["sequential", "functional", "recurrent"])
def test_legacy_h5_and_json_import(name, tmp_path, rng):
    """Keras's legacy HDF5 model and model.to_json() (architecture only)."""
    theirs = KERAS_MODELS[name]()
    for v in theirs.weights:
        v.assign(rng.normal(0, 0.5, v.shape))
    theirs.save(tmp_path / "m.h5")
    (tmp_path / "m.json").write_text(theirs.to_json())
    result = cli("import", tmp_path / "m.h5", "-o", tmp_path / "h5.yaml")
    assert result.exit_code == 0, result.output
    ours = kerspec.load(tmp_path / "h5.yaml", seed=0)
    ours.load_weights(tmp_path / "h5.npz")
    xs = keras_inputs(theirs, rng)
    expected = theirs.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    for (key, value), want in zip(ours.predict(dict(zip(ours.input_names, xs))).items(), expected):
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=key)
    result = cli("import", tmp_path / "m.json", "-o", tmp_path / "json.yaml")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "json.npz").exists()  # architecture only
    h5_layers = (tmp_path / "h5.yaml").read_text().split("layers:")[1].split("compile:")[0]
    assert h5_layers in (tmp_path / "json.yaml").read_text()


def test_import_never_replaces_a_file(saved, tmp_path):
    (tmp_path / "spec.npz").write_text("mine")
    result = cli("import", saved["sequential"], "-o", tmp_path / "spec.yaml")
    assert result.exit_code == 1 and "exists" in result.output and "--overwrite" in result.output
    assert (tmp_path / "spec.npz").read_text() == "mine" and not (tmp_path / "spec.yaml").exists()
    assert cli("import", saved["sequential"], "-o", tmp_path / "spec.yaml", "--overwrite").exit_code == 0
    assert kerspec.load(tmp_path / "spec.yaml").name == "seq"
