"""Data loading: entries, .npz/.npy/.csv files, random data, checks and their messages."""

import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from kerspec.errors import DataError
from kerspec.spec.data import DataEntry, PathData, RandomData
from kerspec.training.data import Dataset, OutputInfo, load_dataset, load_inputs

DATASETS = Path(__file__).resolve().parents[1] / "datasets"

ONE_IN = {"features": (4,)}
SPARSE3 = {"species": OutputInfo((3,), "sparse")}
CATEGORICAL3 = {"species": OutputInfo((3,), "categorical")}
BINARY = {"label": OutputInfo((1,), "binary")}
REAL = {"value": OutputInfo((1,), "real")}


def load(entry, tmp_path, inputs=ONE_IN, outputs=SPARSE3, dtype="float32", **kwargs):
    return load_dataset(
        entry,
        base_dir=tmp_path,
        inputs=inputs,
        outputs=outputs,
        dtype=np.dtype(dtype),
        rng=np.random.default_rng(0),
        **kwargs,
    )


@contextmanager
def fails(*fragments: str):
    """pytest.raises(DataError), and the one-line message holds every fragment."""
    with pytest.raises(DataError) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def npz(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return name


def csv_file(tmp_path, text, name="d.csv"):
    (tmp_path / name).write_text(text, encoding="utf-8")
    return name


@pytest.fixture
def xy(rng):
    return rng.random((6, 4)), np.array([0, 1, 2, 0, 1, 2])


# --- entries -------------------------------------------------------------------------------------


class Holder(BaseModel):
    train: DataEntry


def test_entry_forms():
    assert Holder(train="a.npz").train == PathData(path="a.npz")
    entry = Holder(train={"path": "iris.csv", "target": "species", "one_hot": True}).train
    assert entry == PathData(path="iris.csv", target="species", one_hot=True)
    entry = Holder(train={"source": "random", "samples": 5, "seed": 3}).train
    assert entry == RandomData(source="random", samples=5, seed=3)
    assert RandomData(source="random").samples == 1000
    assert Holder.model_validate(Holder(train="a.npz").model_dump()).train.path == "a.npz"


def test_entry_schema_offers_string_path_and_random():
    schema = Holder.model_json_schema()
    options = schema["properties"]["train"]["oneOf"]
    assert {"minLength": 1, "type": "string", "x-kerspec-path": "read"} in options
    assert {"$ref": "#/$defs/PathData"} in options and {"$ref": "#/$defs/RandomData"} in options


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("a.txt", "expected a .npz, .npy or .csv file"),
        ("", "at least 1 character"),
        ({"path": "a.npz", "target": "t"}, "name .csv columns"),
        ({"path": "a.csv", "x": "x"}, "name keys of an .npz file"),
        ({"path": "a.npy", "one_hot": True}, "inputs only"),
        ({"path": "a.csv", "features": ["a", "a"]}, "'a' twice"),
        ({"path": "a.csv", "target": "a", "features": ["a", "b"]}, "also in `features`"),
        ({"path": "a.npz", "shuffle": True}, "Extra inputs"),
        ({"source": "file"}, "'random'"),
        ({"source": "random", "samples": 0}, "greater than 0"),
        ({"source": "random", "rows": 3}, "Extra inputs"),
    ],
)
def test_entry_errors(value, fragment):
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        Holder(train=value)


def test_load_dataset_rejects_an_invalid_entry(tmp_path):
    with fails("invalid data entry", "expected a .npz, .npy or .csv file"):
        load("a.txt", tmp_path)


# --- paths ---------------------------------------------------------------------------------------


def test_relative_path_resolves_against_base_dir(tmp_path, xy):
    (tmp_path / "data").mkdir()
    npz(tmp_path, "data/d.npz", x=xy[0], y=xy[1])
    data = load("data/d.npz", tmp_path)
    assert data.source == "data/d.npz" and data.samples == 6


def test_missing_file_names_written_and_resolved_path(tmp_path):
    with fails("'../nope.npz'", str((tmp_path / "../nope.npz").absolute()), "file not found"):
        load("../nope.npz", tmp_path)


def test_directory_is_not_a_file(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    with fails("'dir.npz'", "is not a file"):
        load("dir.npz", tmp_path)


# --- .npz ----------------------------------------------------------------------------------------


def test_npz_x_and_y_serve_single_input_and_output(tmp_path, xy):
    data = load(npz(tmp_path, x=xy[0], y=xy[1]), tmp_path)
    assert isinstance(data, Dataset)
    assert data.x["features"].dtype == np.float32 and data.x["features"].shape == (6, 4)
    assert data.y["species"].dtype == np.int64
    np.testing.assert_array_equal(data.y["species"], xy[1])
    np.testing.assert_allclose(data.x["features"], xy[0], rtol=1e-6)


def test_npz_keyed_by_names_with_several_inputs_and_outputs(tmp_path, rng):
    name = npz(tmp_path, a=rng.random((5, 2)), b=rng.random((5, 3, 1)), p=np.ones(5), q=np.ones(5))
    outputs = {"p": OutputInfo((1,), "real"), "q": OutputInfo((1,), "binary")}
    data = load(name, tmp_path, inputs={"a": (2,), "b": (None, 1)}, outputs=outputs)
    assert set(data.x) == {"a", "b"} and data.x["b"].shape == (5, 3, 1)
    assert data.y["p"].shape == (5, 1) and data.y["q"].dtype == np.float32


def test_npz_name_is_preferred_over_x(tmp_path, rng):
    name = npz(tmp_path, features=np.ones((3, 4)), x=np.zeros((3, 4)), y=np.zeros(3))
    assert load(name, tmp_path).x["features"].sum() == 12


def test_npz_keys_renamed_by_x_and_y(tmp_path, rng):
    name = npz(tmp_path, x_test=rng.random((3, 4)), y_test=np.arange(3), extra=np.ones(3))
    data = load({"path": name, "x": "x_test", "y": ["y_test"]}, tmp_path)
    assert data.samples == 3
    name = npz(tmp_path, "m.npz", u=np.ones((2, 1)), v=np.ones((2, 2)), t=np.zeros(2))
    inputs = {"a": (1,), "b": (2,)}
    data = load({"path": name, "x": ["u", "v"], "y": "t"}, tmp_path, inputs=inputs, outputs=REAL)
    assert data.x["a"].shape == (2, 1) and data.x["b"].shape == (2, 2)


def test_npz_renamed_key_count_must_match(tmp_path):
    name = npz(tmp_path, u=np.ones((2, 1)), t=np.zeros(2))
    with fails("'d.npz'", "`x` names 1 key(s) (u)", "2 inputs (a, b)"):
        load({"path": name, "x": "u"}, tmp_path, inputs={"a": (1,), "b": (1,)}, outputs=REAL)


def test_npz_missing_keys_name_the_keys_in_the_file(tmp_path, rng):
    name = npz(tmp_path, inputs=rng.random((3, 4)), labels=np.zeros(3))
    with fails("'d.npz'", "'features' or 'x'", "keys in the file: inputs, labels"):
        load(name, tmp_path)
    name = npz(tmp_path, "e.npz", x=rng.random((3, 4)), labels=np.zeros(3))
    with fails("'e.npz'", "no output array: expected key 'species' or 'y'", "x, labels"):
        load(name, tmp_path)
    with fails("'e.npz'", "no input arrays: expected keys named after the inputs (a, b)"):
        load(name, tmp_path, inputs={"a": (4,), "b": (4,)})
    with fails("'e.npz'", "has no key 'targets'", "x, labels"):
        load({"path": name, "y": "targets"}, tmp_path)


def test_npz_partial_names_are_an_error(tmp_path):
    name = npz(tmp_path, a=np.ones((2, 1)), y=np.zeros(2))
    with fails("'d.npz'", "has no key 'b' for input 'b'", "a, y"):
        load(name, tmp_path, inputs={"a": (1,), "b": (1,)}, outputs=REAL)


def test_npz_without_targets_when_not_required(tmp_path, rng):
    name = npz(tmp_path, x=rng.random((3, 4)))
    assert load(name, tmp_path, require_targets=False).y is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conversions_follow_dtype(tmp_path, dtype):
    name = npz(tmp_path, x=np.ones((2, 4), np.int32), y=np.array([1.0, 2.0]))
    data = load(name, tmp_path, dtype=dtype)
    assert data.x["features"].dtype == np.dtype(dtype)
    assert data.y["species"].dtype == np.int64
    data = load(name, tmp_path, dtype=dtype, outputs={"v": OutputInfo((1,), "real")})
    assert data.y["v"].dtype == np.dtype(dtype) and data.y["v"].shape == (2, 1)


def test_float64_never_survives_in_a_float32_dataset(tmp_path, rng):
    name = npz(tmp_path, x=rng.random((4, 4)), y=rng.random((4, 3)))
    data = load(name, tmp_path, outputs={"o": OutputInfo((3,), "categorical")})
    assert {a.dtype for a in (*data.x.values(), *data.y.values())} == {np.dtype("float32")}


def test_input_shape_mismatch(tmp_path, rng):
    name = npz(tmp_path, x=rng.random((150, 3)), y=np.zeros(150))
    with fails("'d.npz'", "key 'x' has shape (150, 3) but input 'features' expects (None, 4)"):
        load(name, tmp_path)


def test_none_dims_match_anything(tmp_path, rng):
    name = npz(tmp_path, x=rng.random((2, 7, 3)), y=np.zeros((2, 7)))
    data = load(
        name, tmp_path, inputs={"seq": (None, 3)}, outputs={"t": OutputInfo((None, 5), "sparse")}
    )
    assert data.y["t"].shape == (2, 7)


def test_sample_counts_must_agree(tmp_path, rng):
    name = npz(tmp_path, x=rng.random((5, 4)), y=np.zeros(4))
    with fails("'d.npz'", "key 'x' has 5 samples but key 'y' has 4"):
        load(name, tmp_path)


@pytest.mark.parametrize(
    ("bad", "index", "shown"),
    [(np.nan, (1, 2), "NaN"), (np.inf, (3, 0), "inf"), (-np.inf, (0, 0), "-inf")],
)
def test_non_finite_values_name_the_first_index(tmp_path, rng, bad, index, shown):
    x = rng.random((4, 4))
    x[index] = bad
    name = npz(tmp_path, x=x, y=np.zeros(4))
    with fails("'d.npz'", f"key 'x' has {shown} at index {index}"):
        load(name, tmp_path)


def test_non_finite_targets(tmp_path):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.array([0.0, np.nan, 1.0]))
    with fails("'d.npz'", "key 'y' has NaN at index 1"):
        load(name, tmp_path, outputs=REAL)


def test_value_too_large_for_float32(tmp_path):
    x = np.ones((2, 4))
    x[1, 3] = 1e39
    name = npz(tmp_path, x=x, y=np.zeros(2))
    with fails("key 'x' has 1e+39 at index (1, 3), too large for float32"):
        load(name, tmp_path)
    assert load(name, tmp_path, dtype="float64").x["features"][1, 3] == 1e39


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.array([["a", "b", "c", "d"]]), "holds <U1 values; expected numbers"),
        (np.ones((1, 4), complex), "holds complex128 values"),
        (np.float64(3.0), "is a single number"),
        (np.ones((0, 4)), "has no samples"),
    ],
)
def test_inputs_must_be_numeric_arrays(tmp_path, array, fragment):
    name = npz(tmp_path, x=array, y=np.zeros(1))
    with fails("'d.npz'", "key 'x'", fragment):
        load(name, tmp_path)


def test_object_arrays_are_never_unpickled(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with fails("'d.npz'", "key 'x' cannot be read", "allow_pickle=False"):
        load("d.npz", tmp_path)


def test_pickle_file_is_refused(tmp_path):
    (tmp_path / "d.npz").write_bytes(pickle.dumps({"x": [1, 2]}))
    with fails("'d.npz'", "cannot be read as .npz"):
        load("d.npz", tmp_path)


def test_corrupt_and_truncated_npz(tmp_path, rng):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + bytes(range(200)))
    with fails("'junk.npz'", "cannot be read"):
        load("junk.npz", tmp_path)
    np.savez_compressed(tmp_path / "full.npz", x=rng.random((50, 4)), y=np.zeros(50))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with fails("'cut.npz'", "cannot be read"):
        load("cut.npz", tmp_path)
    (tmp_path / "empty.npz").write_bytes(b"")
    with fails("'empty.npz'", "cannot be read"):
        load("empty.npz", tmp_path)


def test_damaged_member_of_a_valid_zip(tmp_path, rng):
    np.savez(tmp_path / "full.npz", x=rng.random((50, 4)), y=np.zeros(50))
    with zipfile.ZipFile(tmp_path / "full.npz") as archive:
        member = archive.read("x.npy")
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x.npy", member[: len(member) // 2])
        archive.writestr("y.npy", member)
    with fails("'d.npz'", "key 'x' cannot be read"):
        load("d.npz", tmp_path)


def test_npy_where_npz_expected(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((2, 4)))
    (tmp_path / "a.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    with fails("'a.npz'", "not an .npz archive"):
        load("a.npz", tmp_path)


# --- targets -------------------------------------------------------------------------------------


def test_sparse_targets_accept_column_and_integral_floats(tmp_path):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.array([[2.0], [0.0], [1.0]]))
    y = load(name, tmp_path).y["species"]
    assert y.dtype == np.int64 and y.shape == (3,)
    np.testing.assert_array_equal(y, [2, 0, 1])


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (
            [0, 3, 1],
            "label 3 at index 1, outside the 3 classes of output 'species' (expected 0 to 2)",
        ),
        ([0, -1, 1], "label -1 at index 1, outside the 3 classes"),
        ([0.0, 1.5, 1.0], "label 1.5 at index 1, which is not a class index"),
    ],
)
def test_sparse_label_errors(tmp_path, labels, fragment):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.array(labels))
    with fails("'d.npz'", "key 'y'", fragment):
        load(name, tmp_path)


def test_sparse_targets_given_as_one_hot_rows(tmp_path):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.eye(3))
    with fails(
        "key 'y' has shape (3, 3)", "class indices of shape (None,) or (None, 1)", "one-hot"
    ):
        load(name, tmp_path)


def test_categorical_targets(tmp_path):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.eye(3))
    assert load(name, tmp_path, outputs=CATEGORICAL3).y["species"].dtype == np.float32
    name = npz(tmp_path, "i.npz", x=np.ones((3, 4)), y=np.array([2, 0, 1]))
    with fails("key 'y' has shape (3,) but output 'species' expects (None, 3)", "one_hot: true"):
        load(name, tmp_path, outputs=CATEGORICAL3)


def test_one_hot_turns_indices_into_rows(tmp_path):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.array([2, 0, 1]))
    y = load({"path": name, "one_hot": True}, tmp_path, outputs=CATEGORICAL3).y["species"]
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[[2, 0, 1]])
    assert y.dtype == np.float32
    with fails("label 3", "outside the 3 classes"):
        bad = npz(tmp_path, "b.npz", x=np.ones((1, 4)), y=np.array([3]))
        load({"path": bad, "one_hot": True}, tmp_path, outputs=CATEGORICAL3)
    with fails("`one_hot: true` makes one-hot rows, but output 'species' takes class indices"):
        load({"path": name, "one_hot": True}, tmp_path, outputs=SPARSE3)


def test_binary_targets(tmp_path):
    name = npz(tmp_path, x=np.ones((3, 4)), y=np.array([1, 0, 1]))
    y = load(name, tmp_path, outputs=BINARY).y["label"]
    assert y.shape == (3, 1) and y.dtype == np.float32
    name = npz(tmp_path, "b.npz", x=np.ones((3, 4)), y=np.array([1, 2, 1]))
    with fails("'b.npz'", "key 'y' has 2 at index 1", "binary targets between 0 and 1"):
        load(name, tmp_path, outputs=BINARY)


def test_real_targets(tmp_path, rng):
    name = npz(tmp_path, x=np.ones((3, 4)), y=rng.random(3))
    assert load(name, tmp_path, outputs=REAL).y["value"].shape == (3, 1)
    name = npz(tmp_path, "r.npz", x=np.ones((3, 4)), y=rng.random((3, 2)))
    assert load(name, tmp_path, outputs={"v": OutputInfo((2,), "real")}).y["v"].shape == (3, 2)
    with fails("key 'y' has shape (3, 2) but output 'value' expects (None, 1)"):
        load(name, tmp_path, outputs=REAL)


def test_targets_must_be_numeric(tmp_path):
    name = npz(tmp_path, x=np.ones((2, 4)), y=np.array(["a", "b"]))
    with fails("key 'y' holds <U1 values; expected numbers"):
        load(name, tmp_path)


# --- .npy ----------------------------------------------------------------------------------------


def test_npy_holds_inputs_only(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.random((5, 4)))
    data = load("x.npy", tmp_path, require_targets=False)
    assert data.y is None and data.x["features"].dtype == np.float32
    with fails("'x.npy'", "holds inputs only"):
        load("x.npy", tmp_path)
    with fails("'x.npy'", "holds one array, but the model has 2 inputs (a, b)"):
        load("x.npy", tmp_path, inputs={"a": (4,), "b": (4,)}, require_targets=False)
    with fails("'x.npy'", "the array has shape (5, 4) but input 'features' expects (None, 3)"):
        load("x.npy", tmp_path, inputs={"features": (3,)}, require_targets=False)


def test_npy_errors(tmp_path):
    np.savez(tmp_path / "z.npz", x=np.ones(2))
    (tmp_path / "z.npy").write_bytes((tmp_path / "z.npz").read_bytes())
    with fails("'z.npy'", "is an .npz archive"):
        load("z.npy", tmp_path, require_targets=False)
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object))
    with fails("'o.npy'", "cannot be read as .npy", "allow_pickle=False"):
        load("o.npy", tmp_path, require_targets=False)
    np.save(tmp_path / "t.npy", np.ones((100, 4)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:300])
    with fails("'t.npy'", "cannot be read as .npy"):
        load("t.npy", tmp_path, require_targets=False)


# --- .csv ----------------------------------------------------------------------------------------

IRIS_LIKE = """a,b,c,d,species
5.1,3.5,1.4,0.2,setosa
7.0,3.2,4.7,1.4,versicolor
6.3,3.3,6.0,2.5,virginica
4.9,3.0,1.4,0.2,setosa
"""


def test_csv_text_target_becomes_sorted_class_indices(tmp_path):
    name = csv_file(tmp_path, IRIS_LIKE)
    data = load({"path": name, "target": "species"}, tmp_path)
    np.testing.assert_array_equal(data.y["species"], [0, 1, 2, 0])
    assert data.x["features"].dtype == np.float32 and data.x["features"].shape == (4, 4)
    np.testing.assert_allclose(data.x["features"][1], [7.0, 3.2, 4.7, 1.4], rtol=1e-6)


def test_csv_one_hot_and_features(tmp_path):
    name = csv_file(tmp_path, IRIS_LIKE)
    entry = {"path": name, "target": "species", "features": ["d", "a"], "one_hot": True}
    data = load(entry, tmp_path, inputs={"features": (2,)}, outputs=CATEGORICAL3)
    np.testing.assert_allclose(data.x["features"][0], [0.2, 5.1], rtol=1e-6)
    np.testing.assert_array_equal(data.y["species"][2], [0, 0, 1])


def test_csv_target_defaults_to_a_column_named_after_the_output(tmp_path):
    name = csv_file(tmp_path, IRIS_LIKE)
    assert load(name, tmp_path).y["species"].tolist() == [0, 1, 2, 0]
    with fails("'d.csv'", "has no target column: name it with `target:`", "a, b, c, d, species"):
        load(name, tmp_path, inputs={"features": (5,)}, outputs=REAL)


def test_csv_without_targets_when_not_required(tmp_path):
    name = csv_file(tmp_path, "a,b\n1,2\n3,4\n")
    data = load(name, tmp_path, inputs={"features": (2,)}, outputs=REAL, require_targets=False)
    assert data.y is None and data.samples == 2


def test_csv_numeric_targets(tmp_path):
    name = csv_file(tmp_path, "a,b,t\n1,2,1\n3,4,1.5\n")
    data = load({"path": name, "target": "t"}, tmp_path, inputs={"features": (2,)}, outputs=REAL)
    np.testing.assert_allclose(data.y["value"][:, 0], [1, 1.5])
    with fails("column 't' has label 1.5 at line 3, which is not a class index"):
        load({"path": name, "target": "t"}, tmp_path, inputs={"features": (2,)})


def test_csv_binary_text_labels(tmp_path):
    name = csv_file(tmp_path, "a,ok\n1,yes\n2,no\n3,yes\n")
    data = load({"path": name, "target": "ok"}, tmp_path, inputs={"f": (1,)}, outputs=BINARY)
    np.testing.assert_array_equal(data.y["label"][:, 0], [1, 0, 1])
    with fails("column 'ok' holds text, but output 'value' takes real targets"):
        load({"path": name, "target": "ok"}, tmp_path, inputs={"f": (1,)}, outputs=REAL)


def test_csv_text_labels_must_cover_every_class(tmp_path):
    name = csv_file(tmp_path, "a,s\n1,x\n2,y\n")
    with fails(
        "'d.csv'", "column 's' holds 2 text labels (x, y) but output 'species' has 3 classes"
    ):
        load({"path": name, "target": "s"}, tmp_path, inputs={"f": (1,)})


def test_csv_quoting_bom_and_blank_lines(tmp_path):
    text = '\ufeff"a","b","label"\n\n"1.5", 2 ,"one, two"\n\n3,4,three\n'
    name = csv_file(tmp_path, text)
    outputs = {"label": OutputInfo((2,), "sparse")}
    data = load({"path": name, "target": "label"}, tmp_path, inputs={"f": (2,)}, outputs=outputs)
    np.testing.assert_allclose(data.x["f"], [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(data.y["label"], [0, 1])
    (tmp_path / "e.csv").write_text("a,b,label\n\n1,x,one\n\n3,4,two\n")
    with fails("line 3, column 'b': 'x' is not a number"):
        load({"path": "e.csv", "target": "label"}, tmp_path, inputs={"f": (2,)}, outputs=outputs)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["is empty; expected a header row"]),
        ("a,b,species\n", ["has a header but no rows"]),
        ("a,b,species\n1,2,x\n3,4\n", ["line 3: 2 values, but the header (line 1) has 3 columns"]),
        ("a,b,species\n1,2,x\n3,4,y,z\n", ["line 3: 4 values"]),
        ("a,b,species\n1,2,x\n3,oops,y\n", ["line 3, column 'b': 'oops' is not a number"]),
        ("a,b,species\n1,,x\n3,4,y\n", ["line 2, column 'b': empty cell"]),
        ("a,b,species\n1,2,x\n3,4,\n", ["line 3, column 'species': empty cell"]),
        ("a,b,species\n1,nan,0\n3,4,1\n", ["features has NaN at line 2, column 'b'"]),
        ("a,b,species\n1,2,0\n3,1e39,1\n", ["1e+39 at line 3, column 'b', too large for float32"]),
        ("a,b,species\n1,2,0\n3,4,3\n", ["column 'species' has label 3 at line 3, outside the 3"]),
        ("a,a,species\n1,2,0\n", ["line 1: column 'a' appears twice"]),
        ("a,,species\n1,2,0\n", ["line 1: column 2 has no name"]),
        ("a,b,c,species\n1,2,3,0\n", ["has 3 feature columns (a, b, c)", "expects (None, 2)"]),
        ('a,b,species\n1,2,"x\n', ["line 2: not valid CSV: unexpected end of data"]),
        ('a,b,species\n1,2,"x"y\n', ["line 2: not valid CSV"]),
    ],
)
def test_csv_errors(tmp_path, text, fragments):
    name = csv_file(tmp_path, text)
    with fails("'d.csv'", *fragments):
        load({"path": name, "target": "species"}, tmp_path, inputs={"features": (2,)})


def test_csv_unknown_columns(tmp_path):
    name = csv_file(tmp_path, IRIS_LIKE)
    with fails("has no column 'kind' (columns: a, b, c, d, species)"):
        load({"path": name, "target": "kind"}, tmp_path)
    with fails("has no column 'e'"):
        load({"path": name, "target": "species", "features": ["a", "e"]}, tmp_path)


def test_csv_not_utf8(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"a,species\n\xff\xfe,1\n")
    with fails("'d.csv'", "is not UTF-8 text"):
        load({"path": "d.csv", "target": "species"}, tmp_path, inputs={"f": (1,)})


def test_csv_feeds_one_input_and_target_one_output(tmp_path):
    name = csv_file(tmp_path, IRIS_LIKE)
    with fails("a .csv file feeds one input, but the model has 2 inputs"):
        load(name, tmp_path, inputs={"a": (2,), "b": (2,)})
    outputs = {"p": OutputInfo((1,), "real"), "q": OutputInfo((1,), "real")}
    with fails("`target` names one column, but the model has 2 outputs (p, q)"):
        load({"path": name, "target": "species"}, tmp_path, outputs=outputs)
    with fails("has no column 'q' for output 'q'"):
        load(
            csv_file(tmp_path, "a,p\n1,2\n", "p.csv"), tmp_path, inputs={"f": (1,)}, outputs=outputs
        )


# --- random --------------------------------------------------------------------------------------


def test_random_data_fits_inputs_and_outputs(tmp_path):
    outputs = {
        "s": OutputInfo((4,), "sparse"),
        "c": OutputInfo((3,), "categorical"),
        "b": OutputInfo((1,), "binary"),
        "r": OutputInfo((None, 2), "real"),
    }
    inputs = {"img": (8, 8, 1), "seq": (None, 3)}
    data = load({"source": "random", "samples": 20}, tmp_path, inputs=inputs, outputs=outputs)
    assert data.source == "random" and data.samples == 20
    assert data.x["img"].shape == (20, 8, 8, 1) and data.x["seq"].shape == (20, 10, 3)
    assert all(a.dtype == np.float32 and a.min() >= 0 and a.max() < 1 for a in data.x.values())
    assert data.y["s"].dtype == np.int64 and data.y["s"].shape == (20,)
    assert set(np.unique(data.y["s"])) <= set(range(4))
    np.testing.assert_array_equal(data.y["c"].sum(axis=1), np.ones(20))
    assert data.y["c"].dtype == np.float32
    assert set(np.unique(data.y["b"])) <= {0.0, 1.0} and data.y["b"].shape == (20, 1)
    assert data.y["r"].shape == (20, 10, 2) and data.y["r"].dtype == np.float32


def test_random_data_seed(tmp_path):
    entry = {"source": "random", "samples": 5, "seed": 4}
    first, again = load(entry, tmp_path), load(entry, tmp_path)
    np.testing.assert_array_equal(first.x["features"], again.x["features"])
    rng = np.random.default_rng(9)
    unseeded = load_dataset(
        {"source": "random", "samples": 5},
        base_dir=tmp_path,
        inputs=ONE_IN,
        outputs=SPARSE3,
        dtype=np.dtype("float64"),
        rng=rng,
    )
    expected = np.random.default_rng(9).random((5, 4))
    np.testing.assert_array_equal(unseeded.x["features"], expected)


# --- load_inputs ---------------------------------------------------------------------------------


def test_load_inputs_npy_and_npz(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.random((3, 4)))
    x = load_inputs("x.npy", inputs=ONE_IN, dtype="float32", base_dir=tmp_path)
    assert x["features"].shape == (3, 4) and x["features"].dtype == np.float32
    np.savez(tmp_path / "x.npz", x=rng.random((3, 4)), y=np.array(["ignored"] * 3))
    assert load_inputs(tmp_path / "x.npz", inputs=ONE_IN, dtype="float32")["features"].shape == (
        3,
        4,
    )
    np.savez(tmp_path / "ab.npz", a=np.ones((2, 1)), b=np.ones((3, 1)))
    with fails("'ab.npz'", "key 'a' has 2 samples but key 'b' has 3"):
        load_inputs("ab.npz", inputs={"a": (1,), "b": (1,)}, dtype="float32", base_dir=tmp_path)


def test_load_inputs_csv(tmp_path):
    name = csv_file(tmp_path, IRIS_LIKE)
    x = load_inputs(name, inputs=ONE_IN, dtype="float32", base_dir=tmp_path)["features"]
    assert x.shape == (4, 4)
    plain = csv_file(tmp_path, "a,b\n1,2\n3,4\n", "p.csv")
    x = load_inputs(plain, inputs={"f": (2,)}, dtype="float64", base_dir=tmp_path)["f"]
    assert x.dtype == np.float64 and x.tolist() == [[1, 2], [3, 4]]
    x = load_inputs(
        name, inputs={"f": (2,)}, dtype="float32", base_dir=tmp_path, features=["b", "a"]
    )
    assert x["f"][0].tolist() == pytest.approx([3.5, 5.1])
    with fails("'d.csv'", "has 5 feature columns", "expects (None, 3)"):
        load_inputs(name, inputs={"f": (3,)}, dtype="float32", base_dir=tmp_path)


def test_load_inputs_errors(tmp_path):
    with fails("unsupported data file 'x.txt'"):
        load_inputs("x.txt", inputs=ONE_IN, dtype="float32", base_dir=tmp_path)
    with fails("'x.npz'", "file not found"):
        load_inputs("x.npz", inputs=ONE_IN, dtype="float32", base_dir=tmp_path)


# --- shipped datasets ----------------------------------------------------------------------------


def test_shipped_iris():
    entry = {"path": "iris.csv", "target": "species"}
    data = load(entry, DATASETS)
    assert data.x["features"].shape == (150, 4) and data.x["features"].dtype == np.float32
    assert np.bincount(data.y["species"]).tolist() == [50, 50, 50]
    for split, n in [("iris_train.csv", 40), ("iris_test.csv", 10)]:
        data = load({**entry, "path": split, "one_hot": True}, DATASETS, outputs=CATEGORICAL3)
        assert data.y["species"].sum(axis=0).tolist() == [n, n, n]


def test_shipped_digits():
    inputs, outputs = {"pixels": (64,)}, {"digit": OutputInfo((10,), "sparse")}
    for split, n, per_class in [("train", 1437, 139), ("test", 360, 35)]:
        data = load(f"digits/{split}.npz", DATASETS, inputs=inputs, outputs=outputs)
        x, y = data.x["pixels"], data.y["digit"]
        assert x.shape == (n, 64) and x.dtype == np.float32 and y.shape == (n,)
        assert x.min() == 0.0 and x.max() == 1.0
        assert np.bincount(y, minlength=10).min() >= per_class
    with fails("'digits/test.npz'", "key 'x' has shape (360, 64) but input 'img' expects"):
        load("digits/test.npz", DATASETS, inputs={"img": (8, 8, 1)}, outputs=outputs)
