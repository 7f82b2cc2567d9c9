"""Keras <-> kerspec: Keras .keras -> `kerspec import` -> the same predictions as Keras's, and
kerspec -> `kerspec export -o .keras` -> Keras loads it and predicts as kerspec does."""

import numpy as np
import pytest
from typer.testing import CliRunner

import kerspec
from kerspec.cli import app
from tests.interop_models import SHIPPED, SPECS, inputs, model

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
    spec.write_text(SPECS[name] if name in SPECS else open(name).read())
    result = cli("export", spec, "--weights", weights, "-o", tmp_path / "m.keras")
    assert result.exit_code == 0, result.output
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    xs = inputs(ours)
    expected = ours.predict(xs)
    for (key, value), got in zip(expected.items(), keras_predict(theirs, ours, xs)):
        np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6, err_msg=key)
