"""The rules of docs/security.md, one class each, every case with the message it must print.

Every case runs the CLI in-process as a user does (tests/test_cli.py's helpers): exit code 1 (2
for usage), the message once, no traceback, and nothing written where it must not be.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kerspec.cli import app
from kerspec.layers import LAYERS
from kerspec.training.callbacks import CALLBACKS
from kerspec.training.metrics import METRICS
from kerspec.spec import json_schema
from tests.test_cli import SMALL, write_data

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if result.exit_code != 0:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def refused(*args, message: str, code: int = 1):
    """Exit `code` with `message` in stderr exactly once."""
    result = run(*args)
    assert result.exit_code == code, result.output
    assert result.stderr.count(message) == 1, (message, result.stderr)
    return result


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with the small spec and its data, as the current folder."""
    write_data(tmp_path, "train.npz", 40, 1)
    write_data(tmp_path, "test.npz", 16, 2)
    (tmp_path / "small.yaml").write_text(SMALL)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec_with(project: Path, extra: str, name: str = "hostile.yaml") -> Path:
    path = project / name
    path.write_text(SMALL + extra)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. nothing is written outside the run folder ------------------------------------------------

# Where each kind of path-bearing field is put in a spec (found from the schema below).
HOSTILE = {
    "name": [("../../x", "is not a name"), ("/etc/x", "is not a name"), ("a" * 101, "at most 100"),
             ("$(touch pwned)", "is not a name"), (".hidden", "is not a name")],
    "file": [("../x.csv", "leaves its folder"), ("/tmp/x.csv", "is an absolute path"),
             ("a/../../x.csv", "leaves its folder"), ("a" * 201, "at most 200"),
             ("$(id).csv", "is not a plain file path"), ("C:x.csv", "is an absolute path")],
    "pattern": [("../w-{epoch}.npz", "leaves its folder"), ("/tmp/{epoch}.npz", "absolute path"),
                ("w-{epoch:0999999d}.npz", "a field is a logged name"),
                ("w-{epoch!r}.npz", "a field is a logged name"), ("{a.__class__}.npz", "a field")],
    "content": [("\n", "should be"), ('"', "should be"), ("ab", "should be")],
}


def _marked(node) -> str | None:
    if isinstance(node, dict):
        if "x-kerspec-path" in node:
            return node["x-kerspec-path"]
        for key in ("anyOf", "allOf", "oneOf", "items"):
            found = _marked(node.get(key))
            if found:
                return found
    if isinstance(node, list):
        for item in node:
            found = _marked(item)
            if found:
                return found
    return None


def path_fields() -> list[tuple[str, dict, str, str]]:
    """(model name, its schema, field, kind) for every field marked `x-kerspec-path`."""
    schema = json_schema()
    models = [("Spec", schema), *schema["$defs"].items()]
    found = []
    for model, node in models:
        for field, sub in node.get("properties", {}).items():
            kind = _marked(sub)
            if kind:
                found.append((model, node, field, kind))
    return found


def embed(model: str, node: dict, field: str, value: str) -> dict:
    """A spec that puts `value` in `field` of `model`, wherever in a spec that model lives."""
    spec = {"layers": [{"type": "Input", "shape": [4]}, {"type": "Dense", "units": 2}],
            "compile": {"loss": "mse"}}
    kind = node.get("properties", {}).get("type", {})
    kind = kind.get("const", kind.get("default"))
    if model == "Spec":
        spec[field] = value
    elif model == "Shared":
        spec["layers"].append({"share": "d", field: value})
        spec["layers"][1]["name"] = "d"
    elif kind in CALLBACKS.names():
        spec["fit"] = {"callbacks": [{"type": kind, field: value}]}
    elif kind in METRICS.names():
        spec["compile"]["metrics"] = [{"type": kind, field: value}]
    elif kind in LAYERS.names():
        spec["layers"][1] = {"type": kind, field: value}
    else:
        raise AssertionError(f"{model}.{field} names a file; say here where it goes in a spec")
    return spec


WRITTEN = [f for f in path_fields() if f[3] != "read"]


def test_every_field_that_names_something_is_marked():
    """A new string field whose name says it names a file must say how it is checked."""
    schema = json_schema()
    suspicious = re.compile(r"file|path|dir|folder|name|separator|delimiter")
    unmarked = []
    for model, node in [("Spec", schema), *schema["$defs"].items()]:
        for field, sub in node.get("properties", {}).items():
            if suspicious.search(field) and "string" in json.dumps(sub) and not _marked(sub):
                unmarked.append(f"{model}.{field}")
    assert unmarked == []
    kinds = {(m, f): k for m, _, f, k in path_fields()}
    assert kinds[("Spec", "name")] == "name"
    assert kinds[("CSVLoggerConfig", "filename")] == "file"
    assert kinds[("CSVLoggerConfig", "separator")] == "content"
    assert kinds[("ModelCheckpointConfig", "filepath")] == "pattern"
    assert kinds[("Dense", "name")] == "name"


class TestPathsFromSpecs:
    @pytest.mark.parametrize("model,node,field,kind", WRITTEN, ids=[f"{m}.{f}" for m, _, f, _ in WRITTEN])
    def test_validate_reports_every_hostile_value_at_its_line(self, tmp_path, model, node, field, kind):
        import yaml

        for value, message in HOSTILE[kind]:
            if kind == "pattern" or (model.endswith("Config") and kind == "file"):
                value = value if value.endswith((".npz", ".csv")) or kind != "pattern" else value
            if model == "ModelCheckpointConfig" and kind == "file":
                value += ".npz"
            spec = embed(model, node, field, value)
            path = tmp_path / "spec.yaml"
            text = yaml.safe_dump(spec, sort_keys=False, width=1000)
            path.write_text(text)
            result = run("validate", path)
            assert result.exit_code == 1, (model, field, value, result.output)
            line = next(i for i, t in enumerate(text.splitlines(), 1) if f"{field}:" in t and (
                "layers" not in text or i > 1))
            assert re.search(rf"{re.escape(str(path))}:\d+:\d+: .*{re.escape(message)}", result.stderr), (
                model, field, value, result.stderr)
            assert line  # located in the file, not only named

    def test_csv_logger_cannot_overwrite_a_file_outside(self, project, tmp_path_factory):
        outside = tmp_path_factory.mktemp("home") / ".bashrc"
        outside.write_text("# mine\n")
        spec = spec_with(project, f"  callbacks:\n    - {{type: CSVLogger, filename: {outside}}}\n"
                         .replace("fit: {epochs: 2, batch_size: 8}\n", ""))
        spec.write_text(SMALL.replace("fit: {epochs: 2, batch_size: 8}\n", "") +
                        f"fit:\n  epochs: 1\n  callbacks:\n    - {{type: CSVLogger, filename: {outside}}}\n")
        for command in (["validate", spec], ["train", spec, "--out", project / "run"]):
            refused(*command, message="is an absolute path")
        assert outside.read_text() == "# mine\n"
        assert not (project / "run").exists()

    def test_a_symlink_in_the_folder_cannot_lead_out(self, project, tmp_path_factory):
        outside = tmp_path_factory.mktemp("elsewhere")
        out = project / "run"
        out.mkdir()
        (out / "logs").symlink_to(outside)
        spec = spec_with(project, "", "linked.yaml")
        spec.write_text(SMALL.replace("fit: {epochs: 2, batch_size: 8}\n", "") +
                        "fit:\n  epochs: 1\n  callbacks:\n    - {type: CSVLogger, filename: logs/log.csv}\n")
        refused("train", spec, "--out", out, "--overwrite", message="leads outside the folder (through a symlink)")
        assert list(outside.iterdir()) == []

    def test_the_run_folder_from_name_stays_in_runs(self, project):
        spec = project / "..yaml"  # its stem is '.', the default name
        spec.write_text(SMALL.replace("name: small\n", ""))
        result = run("train", spec)
        assert result.exit_code == 0, result.output
        (made,) = (project / "runs").iterdir()
        assert made.name.startswith("_.-")
        refused("validate", spec_with(project, "").with_name("n.yaml").write_text(
            SMALL.replace("name: small", "name: ../../x")) and project / "n.yaml", message="is not a name")

    def test_history_and_logs_are_csv_written_with_the_csv_module(self, project):
        spec = project / "sep.yaml"
        spec.write_text(SMALL.replace("fit: {epochs: 2, batch_size: 8}\n", "") +
                        "fit:\n  epochs: 1\n  callbacks:\n    - {type: CSVLogger, filename: log.csv, separator: ';'}\n")
        assert run("train", spec, "--out", project / "r").exit_code == 0
        import csv

        rows = list(csv.reader((project / "r" / "log.csv").read_text().splitlines(), delimiter=";"))
        assert rows[0][0] == "epoch" and len({len(r) for r in rows}) == 1


# -- 2. nothing the user has is replaced or deleted -----------------------------------------------


class TestNothingReplaced:
    def test_out_into_a_folder_of_the_user_is_refused(self, project):
        out = project / "proj"
        out.mkdir()
        (out / "spec.yaml").write_text("mine")
        (out / "weights.npz").write_bytes(b"mine")
        (out / ".notes.abcdefgh.tmp").write_text("mine")
        before = snapshot(out)
        result = refused("train", project / "small.yaml", "--out", out, message="the folder is not empty")
        assert "--resume" in result.stderr and "--overwrite" in result.stderr
        assert snapshot(out) == before
        # --overwrite still replaces nothing kerspec did not write.
        refused("train", project / "small.yaml", "--out", out, "--overwrite",
                message="--overwrite replaces only files kerspec wrote, and spec.yaml is not one of them")
        assert snapshot(out) == before

    def test_overwrite_keeps_files_kerspec_did_not_write(self, project):
        out = project / "run"
        assert run("train", project / "small.yaml", "--out", out).exit_code == 0
        (out / "notes.txt").write_text("mine")
        (out / ".notes.abcdefgh.tmp").write_text("mine too")
        refused("train", project / "small.yaml", "--out", out, message="the folder is not empty")
        result = run("train", project / "small.yaml", "--out", out, "--overwrite")
        assert result.exit_code == 0, result.output
        assert (out / "notes.txt").read_text() == "mine"
        assert (out / ".notes.abcdefgh.tmp").read_text() == "mine too"

    def test_a_finished_run_given_as_out_is_not_replaced(self, project):
        out = project / "run"
        assert run("train", project / "small.yaml", "--out", out).exit_code == 0
        before = snapshot(out)
        refused("train", project / "small.yaml", "--out", out, message="the folder is not empty")
        assert snapshot(out) == before

    def test_a_second_training_into_a_busy_folder_is_refused(self, project):
        out = project / "run"
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys; from kerspec.folders import Lock; from pathlib import Path;"
             "p = Path(sys.argv[1]); p.mkdir(); Lock(p).acquire(); print('held', flush=True); sys.stdin.read()",
             str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            result = refused("train", project / "small.yaml", "--out", out,
                             message="is training in this folder")
            assert f"pid {holder.pid}" in result.stderr
        finally:
            holder.stdin.close()
            holder.wait()
        # Its process is gone: the lock it left is taken over, with a note.
        result = run("train", project / "small.yaml", "--out", out)
        assert result.exit_code == 0, result.output
        assert result.stderr.count(f"took over the lock of an earlier kerspec (pid {holder.pid}") == 1
        assert not (out / ".kerspec-lock").exists()

    def test_resume_deletes_only_the_temporaries_the_manifest_lists(self, project):
        out = project / "run"
        assert run("train", project / "small.yaml", "--out", out).exit_code == 0
        (out / ".notes.abcdefgh.tmp").write_text("mine")
        result = run("train", project / "small.yaml", "--resume", out, "--epochs", 3)
        assert result.exit_code == 0, result.output
        assert (out / ".notes.abcdefgh.tmp").read_text() == "mine"


# -- 3. every file kerspec reads back is hostile input --------------------------------------------


def finished_run(project: Path) -> Path:
    out = project / "run"
    assert run("train", project / "small.yaml", "--out", out).exit_code == 0
    return out


def rewrite_checkpoint(out: Path, change) -> None:
    with np.load(out / "checkpoint.npz", allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    change(arrays)
    np.savez(out / "checkpoint.npz", **arrays)


def set_meta(arrays, **changes):
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes)
    arrays["meta"] = np.array(json.dumps(meta))


class TestReadBackIsHostile:
    @pytest.mark.parametrize("change,message", [
        (lambda a: a.update({"weights/hidden/kernel": np.full((4, 5), np.nan, np.float32)}),
         "weights/hidden/kernel holds NaN or infinite values"),
        (lambda a: a.update({"weights/hidden/kernel": np.zeros((5, 4), np.float32)}),
         "weights/hidden/kernel has shape (5, 4), the model needs (4, 5)"),
        (lambda a: a.update({"weights/hidden/kernel": np.zeros((4, 5), np.float64)}),
         "weights/hidden/kernel has dtype float64, the model needs float32"),
        (lambda a: a.pop("weights/hidden/bias"), "missing weights/hidden/bias"),
        (lambda a: a.update({"../../evil": np.zeros(1)}), "unexpected ../../evil"),
        (lambda a: a.update({"optimizer/iterations": np.array(1.5)}), "optimizer/iterations has dtype"),
        (lambda a: a.pop("meta"), "has no meta entry"),
        (lambda a: a.update({"meta": np.array("{not json")}), "its meta entry is damaged"),
        (lambda a: set_meta(a, epoch=-1), "its meta entry is damaged (epoch:"),
        (lambda a: set_meta(a, format=2), "written by another kerspec version"),
        (lambda a: set_meta(a, blas_threads=10**9), "its meta entry is damaged (blas_threads:"),
        (lambda a: set_meta(a, shuffle_rng={"bit_generator": "MT19937"}), "shuffle_rng"),
        (lambda a: set_meta(a, callbacks={"history": {"epochs": "x", "history": {}}}), "callback history"),
    ])
    def test_a_forged_checkpoint_is_refused_and_the_folder_left_as_it_was(self, project, change, message):
        out = finished_run(project)
        rewrite_checkpoint(out, change)
        before = snapshot(out)
        result = refused("train", project / "small.yaml", "--resume", out, "--epochs", 4, message=message)
        assert result.stderr.startswith(f"{out / 'checkpoint.npz'}: ")
        assert snapshot(out) == before

    def test_finite_but_huge_optimizer_state_never_writes_non_finite_weights(self, project):
        """Found by test_tamper.py: an Adam slot of 1e38 drives a kernel to -inf while a ReLU
        keeps the loss finite."""
        out = finished_run(project)
        rewrite_checkpoint(out, lambda a: a.update({
            "optimizer/momentum/0": np.full((4, 5), 1e38, np.float32),
            "optimizer/velocity/0": np.full((4, 5), 1e-38, np.float32)}))
        result = run("train", project / "small.yaml", "--resume", out, "--epochs", 3)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("epoch 3, the weight hidden/kernel became non-finite; kept the"
                                   " weights of epoch 2, the last good one") == 1, result.stderr
        with np.load(out / "weights.npz") as saved:
            assert all(np.isfinite(saved[k]).all() for k in saved.files)

    @pytest.mark.parametrize("content,message", [
        ('{"status": "exploded", "seed": 3}', "not a kerspec run.json: status:"),
        ('{"seed": -3}', "not a kerspec run.json: seed:"),
        ('[1, 2]', "not a kerspec run.json"),
        ('{"epochs_done": 1e400}', "not a kerspec run.json"),
    ])
    def test_a_forged_run_json_is_refused(self, project, content, message):
        out = finished_run(project)
        (out / "run.json").write_text(content)
        before = snapshot(out)
        refused("train", project / "small.yaml", "--resume", out, "--epochs", 4, message=message)
        refused("runs", project, message=message)
        assert snapshot(out) == before

    def test_a_forged_manifest_is_refused(self, project):
        out = finished_run(project)
        (out / ".kerspec-manifest.json").write_text('{"kerspec_manifest": 1, "files": ["../../etc/passwd"]}')
        refused("train", project / "small.yaml", "--out", out, "--overwrite", message="not a valid kerspec manifest")

    def test_a_spec_yaml_with_a_python_tag_is_refused(self, project):
        out = finished_run(project)
        (out / "spec.yaml").write_text("!!python/object/apply:os.system ['touch pwned']\n")
        refused("train", project / "small.yaml", "--resume", out, "--epochs", 4, message="not a readable spec")
        assert not (project / "pwned").exists()


# -- 4. no traceback, whatever the input -----------------------------------------------------------


class TestNoTraceback:
    def test_negative_seed_is_a_usage_error(self, project):
        result = run("train", project / "small.yaml", "--seed", "-5")
        assert result.exit_code == 2 and "--seed" in result.output

    def test_sequential_input_shape_zero(self, project):
        spec = project / "zero.yaml"
        spec.write_text("layers:\n  - {type: Dense, units: 3, input_shape: [0]}\n")
        refused("summary", spec, message=f"{spec}:2:43: Dense (layers[0]): input_shape[0]: should be greater than 0")

    def test_memory_error_is_one_line(self, project, monkeypatch):
        from kerspec import api

        def no_memory(*args, **kwargs):
            raise MemoryError("Unable to allocate 7.3 GiB for an array with shape (1000, 1000000)")

        monkeypatch.setattr(api.Model, "dataset", no_memory)
        result = refused("train", project / "small.yaml", message="not enough memory: Unable to allocate 7.3 GiB")
        assert len(result.stderr.strip().splitlines()) == 1


# -- 5. memory bounded by the input's real size ---------------------------------------------------


class TestMemoryBounds:
    def test_a_wide_cell_is_refused_without_allocating_for_every_cell(self, project):
        import tracemalloc

        rows = ["a,b,c,d,label"] + [f"{i},1,2,3,0" for i in range(3000)]
        rows[1500] = "1," + " " * 130_000 + ",2,3,0"
        (project / "wide.csv").write_text("\n".join(rows) + "\n")
        tracemalloc.start()
        result = refused("train", project / "small.yaml", "--data", "wide.csv",
                         message="line 1501: a cell of 130,000 characters; the limit is 1,024")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 64 * 1024 * 1024
        assert result.exit_code == 1

    def test_the_guard_honours_the_address_space_limit(self):
        code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30));"
                "from kerspec.guards import available_memory; print(available_memory())")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
        assert 0 < int(out.stdout) < 3 * 2**30

    def test_the_guard_reads_a_cgroup_v1_limit(self, tmp_path):
        from kerspec.guards import _cgroup_left

        (tmp_path / "memory").mkdir()
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text("1000000\n")
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text("400000\n")
        assert _cgroup_left(tmp_path) in (600000, None) or _cgroup_left(tmp_path) <= 600000
