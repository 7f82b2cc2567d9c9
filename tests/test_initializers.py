import math

import numpy as np
import pytest
from pydantic import ValidationError

from kerspec.initializers import INITIALIZERS, TRUNCATED_STDDEV, compute_fans

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SHAPES = [(7, 5), (3, 3, 4, 6)]
# Keras names left out: the base class, and STFT, a fixed Fourier kernel for one Keras layer.
NOT_SUPPORTED = {"Initializer", "initializer", "STFT", "stft", "STFTInitializer"}


def make(config):
    return INITIALIZERS.create(config)


def sample(config, shape, seed=0, dtype=np.float64):
    return make(config)(shape, np.random.default_rng(seed), dtype)


@pytest.mark.parametrize("name", INITIALIZERS.names())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_dtype_and_determinism(name, dtype):
    shape = (4, 4) if name == "identity" else (3, 3, 4, 6)
    first = sample(name, shape, dtype=dtype)
    assert first.shape == shape and first.dtype == dtype
    np.testing.assert_array_equal(first, sample(name, shape, dtype=dtype))


@pytest.mark.parametrize(
    "name", [n for n in INITIALIZERS.names() if n not in {"zeros", "ones", "constant", "identity"}]
)
def test_random_draws_come_from_the_given_rng(name):
    rng = np.random.default_rng(0)
    init = make(name)
    assert not np.array_equal(init((6, 6), rng, np.float32), init((6, 6), rng, np.float32))
    seeded = make({"type": name, "seed": 3})
    a = seeded((6, 6), np.random.default_rng(1), np.float32)
    b = seeded((6, 6), np.random.default_rng(2), np.float32)
    np.testing.assert_array_equal(a, b)


def test_constant_values():
    np.testing.assert_array_equal(sample("zeros", (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(sample("ones", (2, 3)), np.ones((2, 3)))
    np.testing.assert_array_equal(sample({"type": "constant", "value": 2.5}, (2, 3)), 2.5)
    np.testing.assert_array_equal(sample("constant", (2,)), 0.0)
    np.testing.assert_array_equal(
        sample({"type": "identity", "gain": 3.0}, (2, 3)), 3.0 * np.eye(2, 3)
    )


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4)])
def test_identity_needs_a_matrix(shape):
    with pytest.raises(ValueError, match="2-D"):
        sample("identity", shape)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 3, 2, 5)])
def test_orthogonal(shape):
    w = sample({"type": "orthogonal", "gain": 2.0}, shape).reshape(-1, shape[-1])
    small = min(w.shape)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


def test_orthogonal_needs_rank_two():
    with pytest.raises(ValueError, match="rank 2"):
        sample("orthogonal", (5,))


def test_fans_by_hand():
    assert compute_fans(()) == (1, 1)
    assert compute_fans((5,)) == (5, 5)
    assert compute_fans((3, 4)) == (3, 4)
    assert compute_fans((3, 3, 4, 8)) == (36, 72)
    assert compute_fans((2, 3, 4), input_axes=[0, 1], output_axes=[2]) == (6, 4)
    with pytest.raises(ValueError, match="axes of the weight"):
        compute_fans((2, 3), input_axes=[0], output_axes=[5])


N = 200_000  # draws per statistical check: a relative error of about 0.3% on a std


def stats(config, shape=(N,)):
    w = sample(config, shape, seed=1)
    return w, float(w.mean()), float(w.std())


def test_random_normal_statistics():
    _, mean, std = stats({"type": "random_normal", "mean": 1.0, "stddev": 2.0})
    assert abs(mean - 1.0) < 0.02 and abs(std - 2.0) < 0.02
    _, mean, std = stats("normal")
    assert abs(mean) < 1e-3 and abs(std - 0.05) < 1e-3


def test_random_uniform_statistics():
    w, mean, std = stats({"type": "random_uniform", "minval": -1.0, "maxval": 3.0})
    assert w.min() >= -1.0 and w.max() < 3.0 and w.min() < -0.99 and w.max() > 2.99
    assert abs(mean - 1.0) < 0.02 and abs(std - 4.0 / math.sqrt(12.0)) < 0.01


def test_truncated_normal_statistics():
    w, mean, std = stats({"type": "truncated_normal", "mean": 0.5, "stddev": 2.0})
    assert np.abs(w - 0.5).max() <= 4.0 and np.abs(w - 0.5).max() > 3.99
    assert abs(mean - 0.5) < 0.02 and abs(std - 2.0 * TRUNCATED_STDDEV) < 0.02


FAN_SHAPE = (3, 3, 100, 80)  # fan_in 900, fan_out 720, 72,000 draws


@pytest.mark.parametrize(
    "config, scale, mode, distribution",
    [
        ({"type": "variance_scaling", "scale": 2.0}, 2.0, "fan_in", "truncated_normal"),
        (
            {"type": "variance_scaling", "mode": "fan_out", "distribution": "uniform"},
            1.0,
            "fan_out",
            "uniform",
        ),
        (
            {"type": "variance_scaling", "mode": "fan_avg", "distribution": "untruncated_normal"},
            1.0,
            "fan_avg",
            "untruncated_normal",
        ),
        (
            {"type": "variance_scaling", "distribution": "normal", "scale": 0.5},
            0.5,
            "fan_in",
            "truncated_normal",
        ),
        ("glorot_uniform", 1.0, "fan_avg", "uniform"),
        ("glorot_normal", 1.0, "fan_avg", "truncated_normal"),
        ("he_uniform", 2.0, "fan_in", "uniform"),
        ("he_normal", 2.0, "fan_in", "truncated_normal"),
        ("lecun_uniform", 1.0, "fan_in", "uniform"),
        ("lecun_normal", 1.0, "fan_in", "truncated_normal"),
    ],
)
def test_variance_scaling_statistics(config, scale, mode, distribution):
    """Every distribution has std sqrt(scale / fan) (after truncation, for the truncated one)."""
    fan_in, fan_out = compute_fans(FAN_SHAPE)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    expected = math.sqrt(scale / fan)
    w = sample(config, FAN_SHAPE, seed=1)
    assert abs(w.mean()) < 0.02 * expected
    assert abs(w.std() - expected) < 0.02 * expected
    bound = {
        "uniform": math.sqrt(3.0) * expected,
        "truncated_normal": 2.0 * expected / TRUNCATED_STDDEV,
        "untruncated_normal": np.inf,
    }[distribution]
    assert np.abs(w).max() <= bound


@pytest.mark.parametrize(
    "name", [n for n in INITIALIZERS.names() if n not in {"zeros", "ones", "constant", "identity"}]
)
def test_statistics_match_keras(name):
    keras = pytest.importorskip("keras")
    shape = (3, 3, 40, 50)
    ours = sample(name, shape, dtype=np.float32)
    keras_init = keras.initializers.get({"class_name": name, "config": {"seed": 0}})
    theirs = keras.ops.convert_to_numpy(keras_init(shape))
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.03)
    if name not in {"random_normal", "orthogonal"}:  # bounded: both reach close to the bound
        np.testing.assert_allclose(np.abs(ours).max(), np.abs(theirs).max(), rtol=0.02)
    assert abs(ours.mean() - theirs.mean()) < 0.03 * theirs.std()


def test_deterministic_ones_match_keras():
    keras = pytest.importorskip("keras")
    convert = keras.ops.convert_to_numpy
    for config in [
        "zeros",
        "ones",
        {"type": "constant", "value": -1.5},
        {"type": "identity", "gain": 0.5},
    ]:
        name, args = (config, {}) if isinstance(config, str) else (config["type"], config)
        args = {k: v for k, v in args.items() if k != "type"}
        shape = (3, 5)
        expected = convert(keras.initializers.get({"class_name": name, "config": args})(shape))
        np.testing.assert_array_equal(sample(config, shape, dtype=np.float32), expected)


def test_fans_match_keras():
    pytest.importorskip("keras")
    from keras.src.initializers.random_initializers import compute_fans as keras_fans

    for shape in [(), (5,), (3, 4), (3, 3, 4, 8), (2, 3, 4, 5, 6)]:
        assert compute_fans(shape) == keras_fans(shape)
    assert compute_fans((2, 3, 4), [0, 1], [2]) == keras_fans((2, 3, 4), [0, 1], [2])


def test_every_keras_name_is_accepted():
    pytest.importorskip("keras")
    from keras.src.initializers import ALL_OBJECTS_DICT

    for name in set(ALL_OBJECTS_DICT) - NOT_SUPPORTED:
        assert make(name) == make({"type": name})
    assert make("normal") == make("random_normal")
    assert make("GlorotUniform") == make("glorot_uniform")


def test_keras_defaults():
    assert make("random_normal").stddev == 0.05
    assert (make("random_uniform").minval, make("random_uniform").maxval) == (-0.05, 0.05)
    vs = make("variance_scaling")
    assert (vs.scale, vs.mode, vs.distribution) == (1.0, "fan_in", "truncated_normal")
    assert make({"type": "variance_scaling", "distribution": "Uniform"}).distribution == "uniform"


@pytest.mark.parametrize(
    "config",
    [
        {"type": "random_normal", "stddev": -1.0},
        {"type": "truncated_normal", "stddev": -0.1},
        {"type": "random_uniform", "minval": 1.0, "maxval": 0.0},
        {"type": "random_normal", "seed": -1},
        {"type": "random_normal", "seed": 1.5},
        {"type": "variance_scaling", "scale": 0.0},
        {"type": "variance_scaling", "mode": "fan_sum"},
        {"type": "variance_scaling", "distribution": "cauchy"},
        {"type": "glorot_uniform", "input_axes": [0]},
        {"type": "glorot_uniform", "scale": 2.0},
        {"type": "zeros", "value": 1.0},
        "glorot_unifrom",
    ],
)
def test_invalid_arguments_are_rejected(config):
    with pytest.raises(ValidationError):
        make(config)
