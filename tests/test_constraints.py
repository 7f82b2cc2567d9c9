import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.constraints import CONSTRAINTS

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# name -> [(arguments, weight shape)]
CASES = {
    "max_norm": [({}, (5, 4)), ({"max_value": 0.5, "axis": [0, 1, 2]}, (3, 3, 2, 4))],
    "min_max_norm": [
        ({}, (5, 4)),
        ({"min_value": 1.5, "max_value": 2.0, "rate": 0.7, "axis": 1}, (5, 4)),
    ],
    "non_neg": [({}, (5, 4))],
    "unit_norm": [({}, (5, 4)), ({"axis": [0, 1]}, (3, 2, 4))],
}
PARAMS = [
    pytest.param(name, args, shape, id=f"{name}-{i}")
    for name, cases in CASES.items()
    for i, (args, shape) in enumerate(cases)
]


def make(name, args=None):
    return CONSTRAINTS.create({"type": name, **(args or {})})


def test_every_constraint_has_cases():
    assert set(CASES) == set(CONSTRAINTS.names())


@pytest.mark.parametrize("name, args, shape", PARAMS)
def test_float32_stays_float32(name, args, shape, rng):
    w = rng.normal(size=shape).astype(np.float32)
    assert make(name, args)(w).dtype == np.float32


def test_norm_bounds(rng):
    w = rng.normal(size=(6, 50)) * rng.uniform(0.01, 2.0, size=50)
    norms = lambda v: np.linalg.norm(v, axis=0)
    assert norms(make("max_norm", {"max_value": 1.0})(w)).max() <= 1.0
    bounded = norms(make("min_max_norm", {"min_value": 0.5, "max_value": 1.0})(w))
    assert bounded.min() >= 0.5 - 1e-6 and bounded.max() <= 1.0
    # Keras divides by 1e-7 + norm, so short columns come out a little short of unit norm.
    np.testing.assert_allclose(norms(make("unit_norm")(w)), 1.0, rtol=1e-7 / norms(w).min())
    assert (make("non_neg")(w) >= 0).all()
    # A column already inside the bounds is left as it is, up to Keras's epsilon.
    small = w[:, norms(w) < 1.0]
    np.testing.assert_allclose(make("max_norm", {"max_value": 1.0})(small), small, rtol=1e-5)


def test_zero_weights_stay_zero():
    for name in CONSTRAINTS.names():
        np.testing.assert_array_equal(make(name)(np.zeros((3, 2))), 0.0)


@pytest.mark.parametrize("name, args, shape", PARAMS)
def test_matches_keras(name, args, shape, rng):
    keras = pytest.importorskip("keras")
    w = rng.normal(size=shape).astype(np.float32)
    constraint = keras.constraints.get({"class_name": name, "config": args})
    expected = keras.ops.convert_to_numpy(constraint(w))
    np.testing.assert_allclose(make(name, args)(w), expected, rtol=1e-5, atol=1e-7)


def test_defaults_match_keras():
    keras = pytest.importorskip("keras")
    for name in ["max_norm", "min_max_norm", "unit_norm"]:
        assert make(name).model_dump(exclude={"type"}) == keras.constraints.get(name).get_config()


def test_every_keras_name_is_accepted():
    pytest.importorskip("keras")
    from keras.src.constraints import ALL_OBJECTS_DICT

    for name in set(ALL_OBJECTS_DICT) - {"Constraint", "constraint"}:
        assert CONSTRAINTS.create(name) == CONSTRAINTS.create({"type": name})
    assert CONSTRAINTS.create("MaxNorm") == make("max_norm")


@pytest.mark.parametrize(
    "config",
    [
        {"type": "max_norm", "max_value": -1.0},
        {"type": "min_max_norm", "min_value": 2.0, "max_value": 1.0},
        {"type": "unit_norm", "axis": 0.5},
        {"type": "non_neg", "axis": 0},
        "max_nrom",
    ],
)
def test_invalid_arguments_are_rejected(config):
    with pytest.raises(ValidationError):
        CONSTRAINTS.create(config)
