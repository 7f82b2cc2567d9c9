"""kerspec -> ONNX -> onnxruntime: the same predictions as kerspec's, at rtol 1e-5."""

import numpy as np
import pytest
from typer.testing import CliRunner

from kerspec.cli import app
from tests.interop_models import SHIPPED, SPECS, inputs, model, spec_text

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
    spec.write_text(spec_text(name))
    result = CliRunner().invoke(app, ["export", str(spec), "--weights", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    xs = inputs(ours)
    expected = ours.predict(xs)
    got = run_onnx(tmp_path / "m.onnx", xs)
    assert list(got) == list(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


MASKED_SEQUENCE = """
layers:
  - {type: Input, shape: [5, 2], name: x}
  - {type: Masking}
  - {type: GRU, units: 2, return_sequences: true, name: gru}
"""


def test_what_onnx_cannot_say_is_refused_by_layer(tmp_path):
    (tmp_path / "spec.yaml").write_text(MASKED_SEQUENCE)
    ours = model_from(MASKED_SEQUENCE)
    ours.save_weights(tmp_path / "w.npz")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "spec.yaml"), "--weights", str(tmp_path / "w.npz"),
                                      "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert "GRU 'gru'" in result.output and "return_sequences" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_export_never_replaces_a_file_and_knows_its_formats(tmp_path):
    ours = model("merges")
    (tmp_path / "spec.yaml").write_text(SPECS["merges"])
    ours.save_weights(tmp_path / "w.npz")
    (tmp_path / "m.onnx").write_text("mine")
    base = ["export", str(tmp_path / "spec.yaml"), "--weights", str(tmp_path / "w.npz"), "-o"]
    result = CliRunner().invoke(app, [*base, str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "exists" in result.output
    assert (tmp_path / "m.onnx").read_text() == "mine"
    assert CliRunner().invoke(app, [*base, str(tmp_path / "m.onnx"), "--overwrite"]).exit_code == 0
    result = CliRunner().invoke(app, [*base, str(tmp_path / "m.tflite")])
    assert result.exit_code == 1 and "use .onnx or .keras" in result.output


def model_from(text):
    import kerspec

    return kerspec.from_yaml(text, seed=0)
