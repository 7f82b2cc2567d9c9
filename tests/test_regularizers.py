import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.regularizers import REGULARIZERS
from tests.gradcheck import check_grads

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# name -> [(arguments, weight shape)]; weights are kept away from 0, where |w| has its kink.
CASES = {
    "l1": [({}, (4, 3)), ({"l1": 0.3}, (2, 3, 4))],
    "l2": [({}, (4, 3)), ({"l2": 0.3}, (2, 3, 4))],
    "l1_l2": [({"l1": 0.01, "l2": 0.02}, (4, 3)), ({"l2": 0.5}, (5,))],
    "orthogonal_regularizer": [({}, (4, 6)), ({"factor": 0.5, "mode": "columns"}, (6, 4))],
}
PARAMS = [
    pytest.param(name, args, shape, id=f"{name}-{i}")
    for name, cases in CASES.items()
    for i, (args, shape) in enumerate(cases)
]


def make(name, args=None):
    return REGULARIZERS.create({"type": name, **(args or {})})


def weights(rng, shape, dtype=np.float64):
    w = rng.uniform(0.1, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return w.astype(dtype)


def test_every_regularizer_has_cases():
    assert set(CASES) == set(REGULARIZERS.names())


@pytest.mark.parametrize("name, args, shape", PARAMS)
def test_gradient(name, args, shape, rng):
    reg = make(name, args)
    w = weights(rng, shape)

    def forward():
        return np.array(reg.penalty(w)), lambda dy: {"w": dy * reg.gradient(w)}

    check_grads(forward, {"w": w})


@pytest.mark.parametrize("name, args, shape", PARAMS)
def test_float32_stays_float32(name, args, shape, rng):
    reg = make(name, args)
    w = weights(rng, shape, np.float32)
    assert isinstance(reg.penalty(w), float)
    assert reg.gradient(w).dtype == np.float32


def test_penalties_by_hand():
    w = np.array([[1.0, -2.0], [0.5, 0.0]])
    assert make("l1").penalty(w) == pytest.approx(0.01 * 3.5)
    assert make("l2").penalty(w) == pytest.approx(0.01 * 5.25)  # no factor 1/2, as in Keras
    assert make("l1_l2", {"l1": 0.1, "l2": 0.2}).penalty(w) == pytest.approx(0.35 + 1.05)
    assert make("l1_l2").penalty(w) == 0.0
    np.testing.assert_allclose(make("l2").gradient(w), 0.02 * w)


def test_orthogonal_regularizer_edges():
    reg = make("orthogonal_regularizer")
    assert reg.penalty(np.eye(3)) == 0.0
    assert reg.penalty(np.ones((1, 4))) == 0.0 and not reg.gradient(np.ones((1, 4))).any()
    with pytest.raises(ValueError, match="2-D"):
        reg.penalty(np.ones((2, 2, 2)))


@pytest.mark.parametrize("name, args, shape", PARAMS)
def test_matches_keras(name, args, shape, rng):
    keras = pytest.importorskip("keras")
    classes = {
        "l1": keras.regularizers.L1,
        "l2": keras.regularizers.L2,
        # Keras's deserializer knows "l1_l2" only as a string, not as a class_name.
        "l1_l2": keras.regularizers.L1L2,
        "orthogonal_regularizer": keras.regularizers.OrthogonalRegularizer,
    }
    w = weights(rng, shape, np.float32)
    # A tensor, not a NumPy array: Keras's normalize turns axis=0 into -1 for NumPy input, which
    # breaks its own mode="columns".
    expected = classes[name](**args)(keras.ops.convert_to_tensor(w))
    np.testing.assert_allclose(make(name, args).penalty(w), float(expected), rtol=1e-5)


def test_string_defaults_match_keras():
    keras = pytest.importorskip("keras")
    # Keras 3.15 knows the string "l1l2" but not "l1_l2" (kerspec takes both).
    for name, keras_name in [("l1", "l1"), ("l2", "l2"), ("l1_l2", "l1l2")] + [
        ("orthogonal_regularizer", "orthogonal_regularizer")
    ]:
        theirs = keras.regularizers.get(keras_name).get_config()
        ours = make(name).model_dump(exclude={"type"})
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            if isinstance(value, str):
                assert ours[key] == value, key
            else:
                # Keras keeps l1 and factor as float32 tensors: 0.01 comes back as 0.009999999776.
                assert ours[key] == pytest.approx(value, rel=1e-6), key


def test_every_keras_name_is_accepted():
    pytest.importorskip("keras")
    from keras.src.regularizers import ALL_OBJECTS_DICT

    for name in set(ALL_OBJECTS_DICT) - {"Regularizer", "regularizer"}:
        assert REGULARIZERS.create(name) == REGULARIZERS.create({"type": name})
    assert REGULARIZERS.create("L1L2") == make("l1_l2")


def test_none_means_the_default():
    assert make("l1", {"l1": None}).l1 == 0.01
    assert make("l1_l2", {"l1": None, "l2": 0.1}).l1 == 0.0


@pytest.mark.parametrize(
    "config",
    [
        {"type": "l2", "l2": -0.1},
        {"type": "l1", "l1": float("nan")},
        {"type": "l1_l2", "l1": float("inf")},
        {"type": "l2", "l1": 0.1},
        {"type": "orthogonal_regularizer", "mode": "diagonal"},
        {"type": "orthogonal_regularizer", "factor": -1.0},
        "l3",
    ],
)
def test_invalid_arguments_are_rejected(config):
    with pytest.raises(ValidationError):
        REGULARIZERS.create(config)
