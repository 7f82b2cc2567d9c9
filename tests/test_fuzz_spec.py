"""Fuzzing the spec loader, validator and compiler.

The only outcomes allowed for any input are a model, or a KerspecError whose every line starts with
a location: the spec file's name or `--set ...`. Any other exception is a bug in kerspec.

CI runs a bounded number of examples; `KERSPEC_FUZZ=long python -m pytest tests/test_fuzz_*.py`
runs thousands (see docs/security.md). Failing examples found so far are kept as regression cases
in tests/hostile/ and in `@example`s below.
"""

from __future__ import annotations

import string
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

import kerspec
from kerspec import guards
from kerspec.errors import KerspecError, Problems
from kerspec.spec import parse_spec
from tests.fuzzing import FUZZ

ROOT = Path(__file__).resolve().parents[1]
SEEDS = sorted((ROOT / "specs").glob("*.yaml")) + sorted(
    (ROOT / "tests" / "bad_specs").glob("*.yaml")
)
TEXTS = [p.read_text(encoding="utf-8") for p in SEEDS]
SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "specs").glob("*.yaml"))]


@contextmanager
def small_machine():
    """A 64 MB machine, so that a mutated spec asking for a big model is refused, not built."""
    with mock.patch.object(guards, "available_memory", return_value=64_000_000):
        yield


def check(call, *prefixes: str) -> None:
    """`call()` returns a model, or raises a KerspecError located at one of `prefixes`."""
    with small_machine():
        try:
            call()
        except KerspecError as err:
            problems = err.problems if isinstance(err, Problems) else [err]
            assert problems, "an error without problems"
            for problem in problems:
                text = str(problem)
                assert text.startswith(prefixes), f"no location: {text!r}"
                assert problem.message.strip(), "an empty message"


def load_text(text: str, sets: list[str] | None = None) -> None:
    kerspec.api.Model(parse_spec(text, "fuzz.yaml", sets), seed=0)


# --- values of every kind and type -------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=10**15, max_value=10**40),
    st.sampled_from([0, -0, 1, -1, 10**30, -(10**30), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, float("nan"), float("inf"), float("-inf")]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=20),
    st.sampled_from(
        [
            "Dense",
            "Input",
            "relu",
            "x",
            "__class__",
            "adam",
            "mse",
            "a.npz",
            "d.csv",
            "",
            "~",
            "null",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["type", "units", "name"]), children, max_size=4
        ),
    ),
    max_leaves=12,
)


def dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@FUZZ
@given(VALUES)
@example({"layers": [{"type": ["Dense"]}]})
@example({"layers": [{"type": "Input", "shape": [10**20]}, {"type": "Dense", "units": 3}]})
@example({"layers": [{"type": "Input", "shape": [4]}, {"type": "Dense", "units": 10**30}]})
def test_random_documents(data):
    check(lambda: load_text(dump(data)), "fuzz.yaml")


# --- shipped specs, mutated --------------------------------------------------------------------


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def mutate(data, path, action, value):
    if not path:
        return value if action == "replace" else data
    parent = data
    for segment in path[:-1]:
        parent = parent[segment]
    key = path[-1]
    if action == "replace":
        parent[key] = value
    elif action == "delete":
        del parent[key]
    elif action == "wrap":
        parent[key] = [parent[key]]
    elif action == "alias":  # the same object twice: YAML anchors and aliases when dumped
        parent[key] = [parent[key], parent[key]]
    elif action == "add" and isinstance(parent, dict):
        parent[str(value)[:12]] = parent[key]
    return data


@FUZZ
@given(
    st.sampled_from(range(len(SHIPPED))),
    st.data(),
    st.sampled_from(["replace", "replace", "replace", "delete", "wrap", "alias", "add"]),
    VALUES,
)
def test_mutated_shipped_specs(index, draw, action, value):
    import copy

    data = copy.deepcopy(SHIPPED[index])
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(list(paths(data))))
        data = mutate(data, path, action, copy.deepcopy(value))  # a fresh copy: no cycles
    check(lambda: load_text(dump(data)), "fuzz.yaml")


# --- text mutations: YAML syntax, encodings, documents -------------------------------------------

YAML_BITS = st.sampled_from(
    [
        "&a ",
        "*a",
        "!!python/object/apply:os.system [id]",
        "!!binary ",
        "!!set ",
        "<<: ",
        "<<: *a",
        "? ",
        ": ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\t",
        "\n",
        "\n---\n",
        "\n...\n",
        "%TAG ! tag:yaml.org,2002:python/\n---\n",
        "#",
        '"',
        "'",
        "|",
        ">",
        "\\",
        "\x00",
        "\x07",
        "\ufeff",
        "\u2028",
        "\ud7ff",
        "1e400",
        ".nan",
        "-.inf",
        "0x1F",
        "0o17",
        "1:30",
        "~",
        "null",
        "yes",
        "2020-01-01",
        "9" * 5000,
        "units: 3\n",
        "  units: 3\n",
    ]
)


@FUZZ
@given(
    st.sampled_from(range(len(TEXTS))),
    st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["insert", "delete", "duplicate"]),
            YAML_BITS | st.text(max_size=5),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_text_mutations(index, edits):
    text = TEXTS[index]
    for where, op, bit in edits:
        i = int(where * len(text))
        if op == "insert":
            text = text[:i] + bit + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + len(bit) + 1 :]
        else:
            line_start = text.rfind("\n", 0, i) + 1
            line_end = text.find("\n", i)
            line_end = len(text) if line_end < 0 else line_end + 1
            text = text[:line_end] + text[line_start:line_end] + text[line_end:]
    check(lambda: load_text(text), "fuzz.yaml")


@FUZZ
@given(st.sampled_from(range(len(TEXTS))), st.binary(max_size=16), st.floats(0, 1))
def test_bytes_in_files(tmp_path_factory, index, junk, where):
    raw = TEXTS[index].encode()
    i = int(where * len(raw))
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(raw[:i] + junk + raw[i:])
    check(lambda: kerspec.load(path, seed=0), str(path))


@FUZZ
@given(st.binary(max_size=64))
@example(b"")
@example(b"\xef\xbb\xbf")
@example(b"\xff\xfe" + "layers: []".encode("utf-16-le"))
@example(b"\x00")
def test_arbitrary_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(raw)
    check(lambda: kerspec.load(path, seed=0), str(path))


# --- --set overrides ----------------------------------------------------------------------------

KEYS = st.lists(
    st.sampled_from(
        [
            "layers",
            "fit",
            "compile",
            "data",
            "0",
            "1",
            "-1",
            "99",
            "hidden",
            "units",
            "epochs",
            "batch_size",
            "optimizer",
            "loss",
            "type",
            "name",
            "",
            "x",
        ]
    )
    | st.text(string.ascii_letters + string.digits + "._-[]", max_size=6),
    min_size=1,
    max_size=4,
).map(".".join)


@FUZZ
@given(
    st.sampled_from(range(len(SHIPPED))),
    st.lists(
        st.tuples(
            KEYS,
            VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())
            | YAML_BITS
            | st.text(max_size=10),
        ),
        min_size=1,
        max_size=3,
    ),
)
@example(0, [("layers.0.units", "&a [1, *a]")])
@example(0, [("name", "[" * 900 + "]" * 900)])
def test_overrides(index, pairs):
    sets = [f"{key}={value}" for key, value in pairs]
    text = TEXTS[SEEDS.index(sorted((ROOT / "specs").glob("*.yaml"))[index])]
    check(lambda: load_text(text, sets), "fuzz.yaml", "--set ")
