"""Hostile inputs: each refused with the exact kind of error, a message and a location.

tests/hostile/specs/*.yaml are spec files, each starting with `# error: KIND` and `# match:`
lines (a `.expect` file beside it holds them when the spec itself is not UTF-8). Data and weights
files are built here, in code, because most of them are binary: truncated archives, pickles,
forged headers. Cases too large to keep in git (a 50 MB string, 10,000-deep nesting) are built
here too. `docs/security.md` says what these cases prove.
"""

from __future__ import annotations

import io
import os
import pickle
import tracemalloc
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import kerspec
from kerspec import errors, guards
from kerspec import io as kio
from kerspec.errors import DataError, GraphError, KerspecError, Problems, SpecError, WeightsError
from kerspec.spec import parse_spec, source
from kerspec.training.data import OutputInfo, load_dataset, load_inputs

CORPUS = Path(__file__).parent / "hostile"
SPECS = sorted((CORPUS / "specs").glob("*.yaml"))


def expectations(path: Path) -> tuple[type[KerspecError], list[str]]:
    sidecar = path.with_suffix(".expect")
    text = sidecar.read_text() if sidecar.exists() else path.read_bytes().decode("utf-8", "replace")
    lines = text.splitlines()
    kind = next(line.removeprefix("# error: ") for line in lines if line.startswith("# error: "))
    matches = [line.removeprefix("# match: ") for line in lines if line.startswith("# match: ")]
    return getattr(errors, kind), matches


def refused(call, kind: type[KerspecError], *fragments: str, where: str | None = None):
    """Run `call`; it must raise exactly `kind`, every problem located, holding every fragment."""
    with pytest.raises(KerspecError) as caught:
        call()
    err = caught.value
    assert type(err) is kind, f"{type(err).__name__} instead of {kind.__name__}: {err}"
    text = str(err)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    problems = err.problems if isinstance(err, Problems) else [err]
    for problem in problems:
        assert problem.where is not None, f"no location: {problem}"
        if where is not None:
            assert str(problem).startswith(where), f"{problem} does not start with {where}"
    return err


# --- spec files ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_hostile_spec(path):
    kind, matches = expectations(path)
    assert matches, f"{path.name} has no `# match:` line"
    tracemalloc.start()
    try:
        with composed_nodes() as composed:
            refused(lambda: kerspec.load(path, seed=0), kind, *matches, where=str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # Refused in bounded work and memory: the parser never builds more nodes than the limit.
    assert composed[0] <= source.MAX_EXPANDED_NODES + 1, composed[0]
    assert peak < 64e6, f"peak {peak / 1e6:.0f} MB"


def test_billion_laughs_is_refused_fast_in_bounded_memory():
    path = CORPUS / "specs" / "laughs_lists.yaml"
    tracemalloc.start()
    with composed_nodes() as composed, pytest.raises(SpecError, match="expands to more than"):
        kerspec.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert composed[0] < 1000 and peak < 16e6, (composed[0], peak)


@contextmanager
def composed_nodes():
    """Count the YAML nodes the spec loader composes: the parser's work, bounded by its limits
    (a count, not a time, so a loaded machine cannot make it fail)."""
    count = [0]
    compose = source._Loader.compose_node

    def counting(self, parent, index):
        count[0] += 1
        return compose(self, parent, index)

    source._Loader.compose_node = counting
    try:
        yield count
    finally:
        source._Loader.compose_node = compose


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


LAYERS = "layers:\n  - {type: Input, shape: [4]}\n  - {type: Dense, units: 2, name: d}\n"


def test_50_mb_string_is_refused_by_size(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as f:
        f.write(LAYERS.encode() + b"description: ")
        f.write(b"a" * 50_000_000)
    with composed_nodes() as composed:
        refused(lambda: kerspec.load(path), SpecError, "bytes; the limit is 1,048,576", where=str(path))
    assert composed[0] == 0  # refused before parsing


def test_many_small_nodes_are_refused_before_the_parser_spends_seconds(tmp_path):
    path = write(tmp_path, "wide.yaml", LAYERS + "description: [" + "1," * 600_000 + "1]\n")
    refused(lambda: kerspec.load(path), SpecError, "bytes; the limit is", where=str(path))
    text = LAYERS + "description: [" + "1," * 250_000 + "]\n"
    with composed_nodes() as composed:
        refused(lambda: parse_spec(text, "wide.yaml"), SpecError, "more than 200,000 nodes")
    assert composed[0] == source.MAX_EXPANDED_NODES + 1  # stopped at the limit, not at the end


@pytest.mark.parametrize(
    "text",
    [
        "description: " + "[" * 10_000 + "]" * 10_000,
        "description: " + "{a: " * 10_000 + "1" + "}" * 10_000,
        "description: " + "[{a: " * 5_000 + "1" + "}]" * 5_000,
        "description:\n" + "".join("  " * i + "- \n" for i in range(200)),
    ],
    ids=["lists", "mappings", "mixed", "block"],
)
def test_10000_deep_nesting_is_refused_fast(tmp_path, text):
    path = write(tmp_path, "deep.yaml", LAYERS + text + "\n")
    with composed_nodes() as composed:
        refused(lambda: kerspec.load(path), SpecError, "nested more than 64 levels", where=str(path))
    assert composed[0] <= 3 * source.MAX_DEPTH, composed[0]  # a key and a value a level


def test_missing_folder_and_unreadable_spec(tmp_path):
    refused(lambda: kerspec.load(tmp_path), SpecError, "is a folder", where=str(tmp_path))
    refused(lambda: kerspec.load(tmp_path / "no.yaml"), SpecError, "no such spec file")
    loop = tmp_path / "loop.yaml"
    os.symlink(loop, loop)
    refused(lambda: kerspec.load(loop), SpecError, "cannot read", where=str(loop))


BOMB = (
    "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b],"
    " &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d],"
    " &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]]"
)


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        # Regression: a --set value was read with yaml.safe_load, without the alias and depth
        # limits; an alias bomb took seconds in validation and deep nesting raised RecursionError.
        ("name=" + BOMB, "expands to more than 200,000 nodes"),
        ("description=" + "[" * 900 + "]" * 900, "nested more than 64 levels"),
        ("name=!!python/object/apply:os.system [id]", "could not determine a constructor"),
        ("name=a\x00b", "character U+0000 is not allowed"),
        ("name=a\n---\nb", "only one YAML document"),
        ("name={a: 1, a: 2}", "duplicate key 'a'"),
        ("layers.d.units=" + "9" * 5000, "too long"),
        ("layers.d.units=1000000000000000000000000000000", "the weights alone need"),
        ("=3", "expected KEY=VALUE"),
        ("layers.d.units.x=3", "is a value, not a mapping or list"),
    ],
    ids=lambda v: v[:24],
)
def test_hostile_overrides(option, fragment):
    kind = GraphError if "weights alone" in fragment else SpecError
    with composed_nodes() as composed:
        refused(
            lambda: kerspec.api.Model(parse_spec(LAYERS, "m.yaml", [option]), seed=0),
            kind,
            fragment,
            where=f"--set {option}",  # a guard refusal caused by the option points at it too
        )
    assert composed[0] < 1000, composed[0]


# --- resource guards -------------------------------------------------------------------------


def test_guard_refuses_dense_1e9_units_without_allocating():
    text = "layers:\n  - {type: Input, shape: [64]}\n  - {type: Dense, units: 1000000000, name: huge}\n"
    tracemalloc.start()
    err = refused(
        lambda: kerspec.api.Model(parse_spec(text, "m.yaml")),
        GraphError,
        "Dense 'huge': ",
        "available",
        where="m.yaml:3:5",
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10e6
    assert "GB" in str(err)


def test_guard_uses_this_machines_memory(monkeypatch):
    monkeypatch.setattr(guards, "available_memory", lambda: 1_000_000)  # a 1 MB machine
    text = "layers:\n  - {type: Input, shape: [100]}\n  - {type: Dense, units: 10000, name: big}\n"
    refused(
        lambda: kerspec.api.Model(parse_spec(text, "m.yaml")),
        GraphError,
        "Dense 'big': the weights alone need 4.0 MB; this machine has 1.0 MB available",
        where="m.yaml:3:5",
    )
    # Weights fit (40 kB); training on a batch of 600 needs 4 x 40 kB + 600 x 2 x 4 x (100 + 100)
    text = "layers:\n  - {type: Input, shape: [100]}\n  - {type: Dense, units: 100}\nfit: {batch_size: 600}\n"
    refused(
        lambda: kerspec.api.Model(parse_spec(text, "m.yaml")),
        GraphError,
        "training needs at least 1.1 MB (weights, gradients and optimizer slots 161.6 kB;"
        " activations of a batch of 600 960.0 kB); this machine has 1.0 MB available",
        where="m.yaml:4:19",
    )
    monkeypatch.setattr(guards, "available_memory", lambda: 900_000)
    refused(
        lambda: kerspec.api.Model(parse_spec(text, "m.yaml")),
        GraphError,
        "a smaller fit.batch_size needs less",
        where="m.yaml:4:19",
    )
    monkeypatch.setattr(guards, "available_memory", lambda: None)  # unknown: no refusal
    kerspec.api.Model(parse_spec(text, "m.yaml"))


def test_available_memory_is_positive():
    available = guards.available_memory()
    assert available is None or available > 0


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (999, "999 bytes"),
        (1500, "1.5 kB"),
        (3.7e12, "3.7 TB"),
        (2e30, "2.0e+30 bytes"),
    ],
)
def test_format_bytes(n, text):
    assert guards.format_bytes(n) == text


# --- data files ------------------------------------------------------------------------------

ONE_IN = {"features": (4,)}
SPARSE3 = {"species": OutputInfo((3,), "sparse")}


def load(entry, base: Path, **kwargs):
    return load_dataset(
        entry,
        base_dir=base,
        inputs=kwargs.pop("inputs", ONE_IN),
        outputs=kwargs.pop("outputs", SPARSE3),
        dtype=np.dtype("float32"),
        rng=np.random.default_rng(0),
        **kwargs,
    )


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


X = np.arange(20, dtype=np.float64).reshape(5, 4) / 20
Y = np.array([0, 1, 2, 0, 1])
GOOD = npz_bytes(x=X, y=Y)


def forged_header(shape: str, descr: str = "<f8") -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


def zipped(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


PICKLE = pickle.dumps({"x": X})
# A pickle whose loading would run a command: it must never be unpickled.
EVIL = b"cos\nsystem\n(S'echo pwned > /tmp/kerspec-pwned'\ntR."

# name -> (file name, bytes or text, DataError fragment)
DATA = {
    "npz_empty": ("d.npz", b"", "cannot be read as .npz"),
    "npz_truncated_half": ("d.npz", GOOD[: len(GOOD) // 2], "cannot be read as .npz"),
    "npz_truncated_10": ("d.npz", GOOD[:10], "cannot be read as .npz"),
    "npz_flipped_directory": ("d.npz", GOOD[:-30] + bytes(30), "cannot be read as .npz"),
    "npz_object_array": (
        "d.npz",
        npz_bytes(x=np.array([{}] * 5, dtype=object), y=Y),
        "never loads",
    ),
    "npz_is_a_pickle": ("d.npz", PICKLE, "never loads"),
    "npz_is_an_evil_pickle": ("d.npz", EVIL, "cannot be read as .npz"),
    "npz_is_a_npy": ("d.npz", npy_bytes(X), "is a single .npy array"),
    "npz_is_text": ("d.npz", "x,y\n1,2\n", "cannot be read as .npz"),
    "npz_member_not_npy": (
        "d.npz",
        zipped(**{"x.npy": b"garbage", "y.npy": npy_bytes(Y)}),
        "not a NumPy array",
    ),
    "npz_member_pickle": (
        "d.npz",
        zipped(**{"x.npy": PICKLE, "y.npy": npy_bytes(Y)}),
        "not a NumPy array",
    ),
    "npz_header_malformed": (
        "d.npz",
        zipped(**{"x.npy": b"\x93NUMPY\x01\x00\x20\x00{'descr': ((((", "y.npy": npy_bytes(Y)}),
        "cannot be read",
    ),
    "npz_header_forged_shape": (
        "d.npz",
        zipped(**{"x.npy": forged_header("(10**12, 4)"), "y.npy": npy_bytes(Y)}),
        "cannot be read",
    ),
    "npz_header_claims_too_much": (
        "d.npz",
        zipped(**{"x.npy": forged_header("(1000000, 4)") + bytes(64), "y.npy": npy_bytes(Y)}),
        "truncated or forged",
    ),
    "npz_header_terabytes": (
        "d.npz",
        zipped(**{"x.npy": forged_header("(1000000000000, 4)") + bytes(64), "y.npy": npy_bytes(Y)}),
        "truncated or forged",
    ),
    "npz_object_dtype_header": (
        "d.npz",
        zipped(**{"x.npy": forged_header("(5, 4)", "|O") + PICKLE, "y.npy": npy_bytes(Y)}),
        "never loads",
    ),
    "npz_complex": (
        "d.npz",
        npz_bytes(x=X.astype(complex), y=Y),
        "holds complex128 values; expected numbers",
    ),
    "npz_strings": ("d.npz", npz_bytes(x=X.astype(str), y=Y), "expected numbers"),
    "npz_bytes": ("d.npz", npz_bytes(x=X.astype("S4"), y=Y), "expected numbers"),
    "npz_datetime": ("d.npz", npz_bytes(x=X.astype("datetime64[s]"), y=Y), "expected numbers"),
    "npz_timedelta": ("d.npz", npz_bytes(x=X.astype("timedelta64[s]"), y=Y), "expected numbers"),
    "npz_records": (
        "d.npz",
        npz_bytes(x=np.zeros(5, dtype=[("a", "f4")]), y=Y),
        "expected numbers",
    ),
    "npz_nan": ("d.npz", npz_bytes(x=np.where(X > 0.5, np.nan, X), y=Y), "has NaN at index"),
    "npz_inf": ("d.npz", npz_bytes(x=np.where(X > 0.5, -np.inf, X), y=Y), "has -inf at index"),
    "npz_overflow_float32": ("d.npz", npz_bytes(x=X * 1e300, y=Y), "too large for float32"),
    "npz_label_outside_classes": (
        "d.npz",
        npz_bytes(x=X, y=np.array([0, 1, 3, 0, 1])),
        "outside the 3 classes",
    ),
    "npz_label_negative": (
        "d.npz",
        npz_bytes(x=X, y=np.array([0, -1, 2, 0, 1])),
        "outside the 3 classes",
    ),
    "npz_label_fraction": (
        "d.npz",
        npz_bytes(x=X, y=np.array([0, 0.5, 2, 0, 1])),
        "not a class index",
    ),
    "npz_label_nan": ("d.npz", npz_bytes(x=X, y=np.array([0, np.nan, 2, 0, 1])), "has NaN"),
    "npz_label_text": ("d.npz", npz_bytes(x=X, y=np.array(list("abcab"))), "expected numbers"),
    "npz_no_samples": ("d.npz", npz_bytes(x=np.zeros((0, 4)), y=np.zeros(0)), "has no samples"),
    "npz_scalar": ("d.npz", npz_bytes(x=np.float64(1), y=Y), "is a single number"),
    "npz_sample_counts": ("d.npz", npz_bytes(x=X, y=Y[:3]), "samples but"),
    "npz_wrong_shape": ("d.npz", npz_bytes(x=X.reshape(5, 2, 2), y=Y), "has shape (5, 2, 2)"),
    "npz_no_keys": ("d.npz", npz_bytes(), "has no input array"),
    "csv_empty": ("d.csv", "", "is empty"),
    "csv_blank_lines": ("d.csv", "\n\n\n", "is empty"),
    "csv_header_only": ("d.csv", "a,b,c,d,species\n", "has a header but no rows"),
    "csv_ragged_short": ("d.csv", "a,b,c,d,species\n1,2,3,4,0\n1,2,3\n", "line 3: 3 values"),
    "csv_ragged_long": ("d.csv", "a,b,c,d,species\n1,2,3,4,0,9\n", "line 2: 6 values"),
    "csv_text_feature": ("d.csv", "a,b,c,d,species\n1,2,three,4,0\n", "'three' is not a number"),
    "csv_complex_feature": ("d.csv", "a,b,c,d,species\n1,2,1j,4,0\n", "'1j' is not a number"),
    "csv_empty_cell": ("d.csv", "a,b,c,d,species\n1,2,,4,0\n", "empty cell"),
    "csv_nan_feature": ("d.csv", "a,b,c,d,species\n1,2,nan,4,0\n", "has NaN at line 2, column 'c'"),
    "csv_inf_feature": ("d.csv", "a,b,c,d,species\n1,2,-inf,4,0\n", "has -inf at line 2"),
    "csv_1e400_feature": ("d.csv", "a,b,c,d,species\n1,2,1e400,4,0\n", "has inf at line 2"),
    "csv_overflow_float32": ("d.csv", "a,b,c,d,species\n1,2,1e300,4,0\n", "too large for float32"),
    "csv_label_outside_classes": ("d.csv", "a,b,c,d,species\n1,2,3,4,7\n", "outside the 3 classes"),
    "csv_label_5000_digits": (
        "d.csv",
        "a,b,c,d,species\n1,2,3,4," + "9" * 5000 + "\n",
        "line 2: a cell of 5,000 characters; the limit is 1,024",
    ),
    "csv_text_labels_too_many": (
        "d.csv",
        "a,b,c,d,species\n" + "".join(f"1,2,3,4,{c}\n" for c in "pqrs"),
        "4 text labels",
    ),
    "csv_huge_field": (
        "d.csv",
        "a,b,c,d,species\n1,2,3,4," + "9" * 200_000 + "\n",
        "field larger than field limit",
    ),
    "csv_unclosed_quote": ("d.csv", 'a,b,c,d,species\n1,2,"3,4,0\n', "not valid CSV"),
    "csv_not_utf8": ("d.csv", b"a,b,c,d,species\n1,2,\xff,4,0\n", "is not UTF-8 text"),
    "csv_duplicate_column": ("d.csv", "a,a,c,d,species\n1,2,3,4,0\n", "column 'a' appears twice"),
    "csv_unnamed_column": ("d.csv", "a,,c,d,species\n1,2,3,4,0\n", "has no name"),
    "csv_is_a_zip": ("d.csv", GOOD, "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(DATA), ids=str)
def test_hostile_data(tmp_path, case):
    name, data, fragment = DATA[case]
    write(tmp_path, name, data)
    entry = {"path": name, "target": "species"} if name.endswith(".csv") else name
    refused(lambda: load(entry, tmp_path), DataError, fragment, where=f"data file {name!r}")
    assert not Path("/tmp/kerspec-pwned").exists()


NPY = {
    "npy_empty": (b"", "cannot be read as .npy"),
    "npy_is_a_zip": (GOOD, "is an .npz archive"),
    "npy_is_a_pickle": (PICKLE, "never loads"),
    "npy_is_an_evil_pickle": (EVIL, "never loads"),
    "npy_object_array": (npy_bytes(np.array([None] * 5, dtype=object)), "never loads"),
    "npy_truncated": (npy_bytes(X)[:-7], "truncated or forged"),
    "npy_header_only": (npy_bytes(X)[:128], "truncated or forged"),
    "npy_forged_terabytes": (forged_header("(1000000000000, 4)"), "truncated or forged"),
    "npy_header_malformed": (
        b"\x93NUMPY\x01\x00\x20\x00{'descr': ((((((((",
        "cannot be read as .npy",
    ),
    "npy_bad_version": (b"\x93NUMPY\x09\x00" + bytes(64), "cannot be read as .npy"),
    "npy_complex": (npy_bytes(X.astype(np.complex64)), "expected numbers"),
}


@pytest.mark.parametrize("case", sorted(NPY), ids=str)
def test_hostile_npy_inputs(tmp_path, case):
    data, fragment = NPY[case]
    write(tmp_path, "p.npy", data)
    refused(
        lambda: load_inputs("p.npy", inputs=ONE_IN, dtype="float32", base_dir=tmp_path),
        DataError,
        fragment,
        where="data file 'p.npy'",
    )
    assert not Path("/tmp/kerspec-pwned").exists()


def test_data_paths_that_cannot_be_opened(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    refused(lambda: load("dir.npz", tmp_path), DataError, "is not a file")
    refused(lambda: load("none.npz", tmp_path), DataError, "file not found")
    os.symlink(tmp_path / "b.npz", tmp_path / "a.npz")
    os.symlink(tmp_path / "a.npz", tmp_path / "b.npz")
    # Regression: a symlink loop or a too long name raised OSError from Path.exists().
    refused(lambda: load("a.npz", tmp_path), DataError, "Too many levels of symbolic links")
    refused(lambda: load("n" * 5000 + ".npz", tmp_path), DataError, "cannot be opened")
    refused(lambda: load("a\x00b.npz", tmp_path), DataError, "cannot be opened")
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    refused(lambda: load("fifo.npz", tmp_path), DataError, "is not a file")


def test_random_data_of_1e30_samples_is_refused():
    refused(
        lambda: load({"source": "random", "samples": 10**30}, Path(".")),
        DataError,
        "random data of 1,000,000,000,000,000,000,000,000,000,000 samples needs",
    )


# --- weights files ---------------------------------------------------------------------------


def params():
    return {"d": {"kernel": np.zeros((4, 2), np.float32), "bias": np.zeros(2, np.float32)}}


K, BIAS = np.ones((4, 2)), np.ones(2)


def unknown_compression(raw: bytes) -> bytes:
    """The archive with its first member's compression method (central directory) set to 99."""
    at = raw.index(b"PK\x01\x02") + 10
    return raw[:at] + b"\x63\x00" + raw[at + 2 :]


WEIGHTS = {
    "w_empty": (b"", "not a readable .npz file"),
    "w_truncated": (npz_bytes(**{"d/kernel": K, "d/bias": BIAS})[:100], "not a readable .npz file"),
    "w_pickle": (PICKLE, "never loads"),
    "w_evil_pickle": (EVIL, "not a readable .npz file"),
    "w_object_array": (
        npz_bytes(**{"d/kernel": np.array([None] * 8, object).reshape(4, 2), "d/bias": BIAS}),
        "never loads",
    ),
    "w_npy_not_npz": (npy_bytes(K), "is one .npy array"),
    "w_member_not_npy": (
        zipped(**{"d/kernel.npy": b"junk", "d/bias.npy": npy_bytes(BIAS)}),
        "not a NumPy array",
    ),
    "w_forged_header": (
        zipped(
            **{"d/kernel.npy": forged_header("(100000000000, 2)"), "d/bias.npy": npy_bytes(BIAS)}
        ),
        "truncated or forged",
    ),
    "w_header_short": (
        zipped(
            **{
                "d/kernel.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': (((((",
                "d/bias.npy": npy_bytes(BIAS),
            }
        ),
        "not a readable .npz file",
    ),
    "w_header_malformed": (
        zipped(
            **{
                "d/kernel.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': ((((((",
                "d/bias.npy": npy_bytes(BIAS),
            }
        ),
        "array header is malformed",
    ),
    "w_missing": (npz_bytes(**{"d/kernel": K}), "missing d/bias"),
    "w_unexpected": (
        npz_bytes(**{"d/kernel": K, "d/bias": BIAS, "evil/__init__": K}),
        "unexpected evil/__init__",
    ),
    "w_many_unexpected": (
        npz_bytes(**{"d/kernel": K, "d/bias": BIAS, **{f"x{i}": BIAS for i in range(100)}}),
        "(100 in all)",
    ),
    "w_shape": (
        npz_bytes(**{"d/kernel": K.T, "d/bias": BIAS}),
        "has shape (2, 4), the model needs (4, 2)",
    ),
    "w_complex": (npz_bytes(**{"d/kernel": K.astype(complex), "d/bias": BIAS}), "dtype complex128"),
    "w_bool": (npz_bytes(**{"d/kernel": K.astype(bool), "d/bias": BIAS}), "dtype bool"),
    "w_strings": (
        npz_bytes(**{"d/kernel": K.astype(str), "d/bias": BIAS}),
        "expected real numbers",
    ),
    # Regression: timedelta64 is a np.number, so it passed the check and was cast into weights.
    "w_timedelta": (
        npz_bytes(**{"d/kernel": K.astype("m8[s]"), "d/bias": BIAS}),
        "dtype timedelta64[s]",
    ),
    "w_nan": (
        npz_bytes(**{"d/kernel": K * np.nan, "d/bias": BIAS}),
        "holds NaN or infinite values",
    ),
    "w_inf": (
        npz_bytes(**{"d/kernel": K, "d/bias": BIAS * np.inf}),
        "holds NaN or infinite values",
    ),
    # Regression (fuzzing): a flipped compression-method byte raised NotImplementedError.
    "w_compression_method": (unknown_compression(npz_bytes(**{"d/kernel": K})), "not a readable"),
    # Regression (fuzzing): a key holding a newline forged a second line of the message.
    "w_key_newline": (
        npz_bytes(**{"d/kernel": K, "d/bias": BIAS, "a\nb": K}),
        "unexpected 'a\\nb'",
    ),
    # Regression: finite float64 values that overflow float32 became inf weights.
    "w_overflow_float32": (
        npz_bytes(**{"d/kernel": K * 1e300, "d/bias": BIAS}),
        "too large for float32",
    ),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS), ids=str)
def test_hostile_weights(tmp_path, case):
    data, fragment = WEIGHTS[case]
    path = write(tmp_path, "w.npz", data)
    target = params()
    refused(lambda: kio.load_weights(path, target), WeightsError, fragment, where=str(path))
    assert not target["d"]["kernel"].any(), "weights changed although the file was refused"
    assert not Path("/tmp/kerspec-pwned").exists()


def test_weights_paths_that_cannot_be_opened(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    refused(lambda: kio.load_weights(tmp_path / "dir.npz", params()), WeightsError, "is a folder")
    refused(lambda: kio.load_weights(tmp_path / "no.npz", params()), WeightsError, "no such file")
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    refused(lambda: kio.load_weights(loop, params()), WeightsError, "symbolic links")


def test_corpus_size():
    """The issue asks for at least 100 hostile cases across specs, data and weights."""
    total = len(SPECS) + len(DATA) + len(NPY) + len(WEIGHTS)
    assert len(SPECS) >= 60 and total >= 100, total
