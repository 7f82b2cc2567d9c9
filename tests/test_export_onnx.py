"""kerspec -> ONNX -> onnxruntime: the same predictions as kerspec's, at rtol 1e-5."""

import numpy as np
import pytest
from typer.testing import CliRunner

from kerspec.cli import app
from tests.interop_models import SHIPPED, SPECS, inputs, model

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run_onnx(path, xs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, xs)))


@pytest.mark.parametrize("name", [*SPECS, *map(str, SHIPPED)], ids=lambda n: n.split("/")[-1])
def test_onnx_predicts_as_kerspec(name, tmp_path):
    ours = model(name)
    weights, spec = tmp_path / "w.npz", tmp_path / "spec.yaml"
    ours.save_weights(weights)
    spec.write_text(SPECS[name] if name in SPECS else open(name).read())
    result = CliRunner().invoke(app, ["export", str(spec), "--weights", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    xs = inputs(ours)
    expected = ours.predict(xs)
    got = run_onnx(tmp_path / "m.onnx", xs)
    assert list(got) == list(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
