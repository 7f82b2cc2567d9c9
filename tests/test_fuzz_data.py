"""Fuzzing the data and weights loaders.

The only outcomes allowed: the arrays, or a DataError (data) / WeightsError (weights) that names the
file. Damaged archives (cut at random offsets, flipped bytes), arrays of every dtype and shape, and
random CSV tables. `KERSPEC_FUZZ=long` runs thousands of examples (docs/security.md).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kerspec import guards
from kerspec import io as kio
from kerspec.errors import DataError, WeightsError
from kerspec.training.data import Dataset, OutputInfo, load_dataset, load_inputs
from tests.fuzzing import FUZZ

INPUTS = {"features": (4,)}
OUTPUTS = [
    {"species": OutputInfo((3,), "sparse")},
    {"species": OutputInfo((3,), "categorical")},
    {"species": OutputInfo((1,), "binary")},
    {"species": OutputInfo((1,), "real")},
]


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def compressed_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


RNG = np.random.default_rng(0)
X = RNG.random((6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])
SEEDS = [
    npz_bytes(x=X, y=Y),
    compressed_bytes(x=X, y=Y),
    npz_bytes(features=X.astype(np.float32), species=np.eye(3)[Y]),
]
WEIGHTS = {"d": {"kernel": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)}}
WEIGHT_SEEDS = [
    npz_bytes(**{"d/kernel": np.ones((4, 3)), "d/bias": np.ones(3)}),
    compressed_bytes(**{"d/kernel": np.ones((4, 3), np.float32), "d/bias": np.ones(3, np.float32)}),
]


def data_file(tmp_path_factory, name: str, content: bytes) -> Path:
    folder = tmp_path_factory.mktemp("data")
    (folder / name).write_bytes(content)
    return folder


def load_or_refuse(call, kind, name: str):
    """`call()` returns, or raises `kind` naming the file `name`; nothing else."""
    with mock.patch.object(guards, "available_memory", return_value=256_000_000):
        try:
            return call()
        except kind as err:
            assert name in str(err), f"the file is not named: {err}"
            assert "\n" not in str(err)
            return None


def damage(raw: bytes, cut: float, flips: list[tuple[float, int]]) -> bytes:
    data = bytearray(raw[: max(0, int(cut * len(raw)))] if cut < 1 else raw)
    for where, bit in flips:
        if data:
            data[int(where * (len(data) - 1))] ^= 1 << bit
    return bytes(data)


DAMAGE = (
    st.floats(0, 1) | st.just(1.0),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=4),
)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.sampled_from(range(len(OUTPUTS))), *DAMAGE)
@example(0, 0, 0.5, [])
@example(0, 0, 1.0, [(0.0, 0)])
def test_damaged_npz_data(tmp_path_factory, seed, outputs, cut, flips):
    folder = data_file(tmp_path_factory, "d.npz", damage(SEEDS[seed], cut, flips))
    result = load_or_refuse(
        lambda: load_dataset(
            "d.npz",
            base_dir=folder,
            inputs=INPUTS,
            outputs=OUTPUTS[outputs],
            dtype=np.dtype("float32"),
            rng=np.random.default_rng(0),
        ),
        DataError,
        "'d.npz'",
    )
    assert result is None or isinstance(result, Dataset)


@FUZZ
@given(st.sampled_from(range(len(WEIGHT_SEEDS))), *DAMAGE)
def test_damaged_weights(tmp_path_factory, seed, cut, flips):
    folder = data_file(tmp_path_factory, "w.npz", damage(WEIGHT_SEEDS[seed], cut, flips))
    params = {k: {n: w.copy() for n, w in ws.items()} for k, ws in WEIGHTS.items()}
    load_or_refuse(lambda: kio.load_weights(folder / "w.npz", params), WeightsError, "w.npz")
    for ws in params.values():
        for w in ws.values():
            assert np.all(np.isfinite(w))


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(["d.npz", "d.npy", "d.csv"]))
@example(b"PK\x05\x06" + bytes(18), "d.npz")
@example(
    b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f8', 'fortran_order': False, 'shape': (10**9,), }",
    "d.npy",
)
def test_arbitrary_bytes(tmp_path_factory, raw, name):
    folder = data_file(tmp_path_factory, name, raw)
    load_or_refuse(
        lambda: load_inputs(name, inputs=INPUTS, dtype="float32", base_dir=folder),
        DataError,
        f"'{name}'",
    )
    if name == "d.npz":
        load_or_refuse(lambda: kio.read_npz(folder / name, WeightsError), WeightsError, name)


DTYPES = (
    hnp.scalar_dtypes()
    | hnp.byte_string_dtypes()
    | hnp.unicode_string_dtypes()
    | st.sampled_from(
        [np.dtype("f2"), np.dtype("c8"), np.dtype("?"), np.dtype("u8"), np.dtype([("a", "f4")])]
    )
)
ARRAYS = hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6))


@FUZZ
@given(ARRAYS, ARRAYS, st.sampled_from(range(len(OUTPUTS))), st.booleans())
def test_arrays_of_every_dtype_and_shape(tmp_path_factory, x, y, outputs, one_hot):
    folder = data_file(tmp_path_factory, "d.npz", npz_bytes(x=x, y=y))
    load_or_refuse(
        lambda: load_dataset(
            {"path": "d.npz", "one_hot": one_hot},
            base_dir=folder,
            inputs={"features": (None,) if x.ndim == 2 and x.shape[1] == 0 else (4,)},
            outputs=OUTPUTS[outputs],
            dtype=np.dtype("float32"),
            rng=np.random.default_rng(0),
        ),
        DataError,
        "'d.npz'",
    )


@FUZZ
@given(st.dictionaries(st.text(max_size=12), ARRAYS, max_size=4))
@example({"file": np.zeros(1)})
def test_weights_of_every_dtype_and_key(tmp_path_factory, arrays):
    try:
        raw = npz_bytes(**arrays)
    except (ValueError, UnicodeEncodeError, TypeError):
        return  # numpy cannot write such keys (`file` is savez's own argument): no such file exists
    folder = data_file(tmp_path_factory, "w.npz", raw)
    params = {k: {n: w.copy() for n, w in ws.items()} for k, ws in WEIGHTS.items()}
    load_or_refuse(lambda: kio.load_weights(folder / "w.npz", params), WeightsError, "w.npz")


CELLS = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "3",
            "-1",
            "1.5",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "1e300",
            "",
            " ",
            "a",
            "setosa",
            "1j",
            "0x10",
            "1_0",
            '"',
            '"1,2"',
            "\x00",
            "\ufeff",
        ]
    ),
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)
TABLES = st.lists(st.lists(CELLS, min_size=0, max_size=7), min_size=0, max_size=8)


@FUZZ
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "species", "", "a "]), min_size=0, max_size=7),
    TABLES,
    st.sampled_from(range(len(OUTPUTS))),
    st.booleans(),
    st.booleans(),
)
@example(["a", "b", "c", "d", "species"], [], 0, True, False)
@example(["a", "b", "c", "d", "species"], [["1", "2", "3"]], 0, True, False)
def test_random_csv_tables(tmp_path_factory, header, rows, outputs, with_target, one_hot):
    text = "\n".join(",".join(row) for row in [header, *rows]) + "\n"
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    folder = data_file(tmp_path_factory, "d.csv", raw)
    entry = {"path": "d.csv", "one_hot": one_hot}
    if with_target:
        entry["target"] = "species"
    load_or_refuse(
        lambda: load_dataset(
            entry,
            base_dir=folder,
            inputs=INPUTS,
            outputs=OUTPUTS[outputs],
            dtype=np.dtype("float32"),
            rng=np.random.default_rng(0),
        ),
        DataError,
        "'d.csv'",
    )
    load_or_refuse(
        lambda: load_inputs("d.csv", inputs=INPUTS, dtype="float32", base_dir=folder),
        DataError,
        "'d.csv'",
    )


@FUZZ
@given(
    st.lists(
        st.tuples(st.text(max_size=8), st.binary(max_size=40)),
        max_size=4,
        unique_by=lambda member: member[0].split("\x00")[0],
    )
)
def test_zip_members_that_are_not_arrays(tmp_path_factory, members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members:
            try:
                archive.writestr(name or "x", content)
            except (ValueError, UnicodeEncodeError, IndexError):
                return  # zipfile cannot write such a name
    folder = data_file(tmp_path_factory, "d.npz", buffer.getvalue())
    load_or_refuse(
        lambda: load_inputs("d.npz", inputs=INPUTS, dtype="float32", base_dir=folder),
        DataError,
        "'d.npz'",
    )
    load_or_refuse(lambda: kio.read_npz(folder / "d.npz", WeightsError), WeightsError, "d.npz")
