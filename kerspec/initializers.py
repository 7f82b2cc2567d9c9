"""Weight initializers, by Keras name: `init(shape, rng, dtype) -> array`.

Draws come from the generator the model hands in (seeded from the spec's `seed`), unless the
initializer has a `seed` of its own, so the same spec and seed always give the same weights.
Random values are drawn in float64 and cast once to the requested dtype.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from kerspec.registry import Item, Registry

INITIALIZERS = Registry("initializer")

# Keras's correction: a normal truncated at two standard deviations has this standard deviation
# (per unit of the untruncated one), so variance scaling divides by it to keep the variance it asks.
TRUNCATED_STDDEV = 0.87962566103423978

Seed = int | None
Axes = list[int] | None


class Initializer(Item):
    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype) -> np.ndarray:
        raise NotImplementedError


def compute_fans(
    shape: tuple[int, ...], input_axes: Axes = None, output_axes: Axes = None
) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras computes them.

    Given axes: the product of those dimensions. Otherwise: () -> (1, 1); (n,) -> (n, n);
    (in, out) -> (in, out); a convolution kernel (*receptive, in, out) -> (in * r, out * r)
    with r the product of the receptive dimensions.
    """
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        try:
            return (
                math.prod(shape[axis] for axis in input_axes),
                math.prod(shape[axis] for axis in output_axes),
            )
        except IndexError:
            raise ValueError(
                f"input_axes={input_axes} and output_axes={output_axes} must be axes of the "
                f"weight. Received: shape={shape}"
            ) from None
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def truncated_normal(
    rng: np.random.Generator, shape: tuple[int, ...], mean: float, stddev: float
) -> np.ndarray:
    """Normal draws, with those more than two standard deviations from the mean drawn again."""
    values = rng.normal(mean, stddev, size=shape)
    outside = np.abs(values - mean) > 2.0 * stddev
    # Each round redraws only the rejected values (about 4.6% of the last round's).
    while outside.any():
        values[outside] = rng.normal(mean, stddev, size=int(outside.sum()))
        outside = np.abs(values - mean) > 2.0 * stddev
    return values


class RandomInitializer(Initializer):
    # Keras takes an int or a SeedGenerator; only the int has a meaning in a spec.
    seed: Seed = Field(None, ge=0)

    def generator(self, rng: np.random.Generator) -> np.random.Generator:
        """The initializer's own seeded generator if it has a seed, else the model's."""
        return rng if self.seed is None else np.random.default_rng(self.seed)


@INITIALIZERS.register("zeros", "zero")
class Zeros(Initializer):
    """w = 0"""

    type: Literal["zeros"] = "zeros"

    def __call__(self, shape, rng, dtype):
        return np.zeros(shape, dtype=dtype)


@INITIALIZERS.register("ones", "one")
class Ones(Initializer):
    """w = 1"""

    type: Literal["ones"] = "ones"

    def __call__(self, shape, rng, dtype):
        return np.ones(shape, dtype=dtype)


@INITIALIZERS.register("constant")
class Constant(Initializer):
    """w = value (a scalar)"""

    type: Literal["constant"] = "constant"
    value: float = 0.0

    def __call__(self, shape, rng, dtype):
        return np.full(shape, self.value, dtype=dtype)


@INITIALIZERS.register("identity", "identity_initializer")
class Identity(Initializer):
    """w = gain * I, for a 2-D shape (rectangular shapes get ones on the main diagonal)."""

    type: Literal["identity"] = "identity"
    gain: float = 1.0

    def __call__(self, shape, rng, dtype):
        if len(shape) != 2:
            raise ValueError(
                "The identity initializer can only make 2-D weights. "
                f"Received: shape={tuple(shape)} of rank {len(shape)}"
            )
        return (self.gain * np.eye(*shape)).astype(dtype)


@INITIALIZERS.register("random_normal", "normal")
class RandomNormal(RandomInitializer):
    """w ~ N(mean, stddev^2)"""

    type: Literal["random_normal"] = "random_normal"
    mean: float = 0.0
    stddev: float = Field(0.05, ge=0.0)

    def __call__(self, shape, rng, dtype):
        return self.generator(rng).normal(self.mean, self.stddev, size=shape).astype(dtype)


@INITIALIZERS.register("truncated_normal")
class TruncatedNormal(RandomInitializer):
    """w ~ N(mean, stddev^2), redrawn where |w - mean| > 2 stddev"""

    type: Literal["truncated_normal"] = "truncated_normal"
    mean: float = 0.0
    stddev: float = Field(0.05, ge=0.0)

    def __call__(self, shape, rng, dtype):
        return truncated_normal(self.generator(rng), shape, self.mean, self.stddev).astype(dtype)


@INITIALIZERS.register("random_uniform", "uniform")
class RandomUniform(RandomInitializer):
    """w ~ U[minval, maxval)"""

    type: Literal["random_uniform"] = "random_uniform"
    minval: float = -0.05
    maxval: float = 0.05

    @model_validator(mode="after")
    def _ordered(self):
        if self.minval > self.maxval:
            raise ValueError(
                f"expected minval <= maxval. Received: minval={self.minval}, maxval={self.maxval}"
            )
        return self

    def __call__(self, shape, rng, dtype):
        return self.generator(rng).uniform(self.minval, self.maxval, size=shape).astype(dtype)


class FanScaled(RandomInitializer):
    """Shared by variance_scaling and its presets (glorot, he, lecun).

    With n = fan_in, fan_out or their mean (at least 1): `truncated_normal` draws with standard
    deviation sqrt(scale / n) after truncation, `untruncated_normal` with sqrt(scale / n), and
    `uniform` from [-limit, limit] with limit = sqrt(3 scale / n).
    """

    input_axes: Axes = None
    output_axes: Axes = None

    @model_validator(mode="after")
    def _axes_together(self):
        # Keras ignores one without the other; a spec should not ignore what it is given.
        if (self.input_axes is None) != (self.output_axes is None):
            raise ValueError(
                "input_axes and output_axes only work together. Received: "
                f"input_axes={self.input_axes}, output_axes={self.output_axes}"
            )
        return self

    def draw(self, shape, rng, dtype, scale: float, mode: str, distribution: str) -> np.ndarray:
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        variance = scale / max(1.0, fan)
        rng = self.generator(rng)
        if distribution == "truncated_normal":
            values = truncated_normal(rng, shape, 0.0, math.sqrt(variance) / TRUNCATED_STDDEV)
        elif distribution == "untruncated_normal":
            values = rng.normal(0.0, math.sqrt(variance), size=shape)
        else:
            limit = math.sqrt(3.0 * variance)
            values = rng.uniform(-limit, limit, size=shape)
        return values.astype(dtype)


@INITIALIZERS.register("variance_scaling")
class VarianceScaling(FanScaled):
    """Draws scaled to the weight's fans; see FanScaled for the formulas."""

    type: Literal["variance_scaling"] = "variance_scaling"
    scale: float = Field(1.0, gt=0.0)
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in"
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = "truncated_normal"

    @field_validator("distribution", mode="before")
    @classmethod
    def _keras_spellings(cls, value):
        # Keras lower-cases the name and reads "normal" as "truncated_normal".
        if isinstance(value, str):
            value = value.lower()
            return "truncated_normal" if value == "normal" else value
        return value

    def __call__(self, shape, rng, dtype):
        return self.draw(shape, rng, dtype, self.scale, self.mode, self.distribution)


class Preset(FanScaled):
    """variance_scaling with fixed (scale, mode, distribution)."""

    preset: ClassVar[tuple[float, str, str]]

    def __call__(self, shape, rng, dtype):
        return self.draw(shape, rng, dtype, *self.preset)


@INITIALIZERS.register("glorot_uniform")
class GlorotUniform(Preset):
    """U[-limit, limit], limit = sqrt(6 / (fan_in + fan_out))"""

    type: Literal["glorot_uniform"] = "glorot_uniform"
    preset: ClassVar = (1.0, "fan_avg", "uniform")


@INITIALIZERS.register("glorot_normal")
class GlorotNormal(Preset):
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out))"""

    type: Literal["glorot_normal"] = "glorot_normal"
    preset: ClassVar = (1.0, "fan_avg", "truncated_normal")


@INITIALIZERS.register("he_uniform")
class HeUniform(Preset):
    """U[-limit, limit], limit = sqrt(6 / fan_in)"""

    type: Literal["he_uniform"] = "he_uniform"
    preset: ClassVar = (2.0, "fan_in", "uniform")


@INITIALIZERS.register("he_normal")
class HeNormal(Preset):
    """Truncated normal with stddev sqrt(2 / fan_in)"""

    type: Literal["he_normal"] = "he_normal"
    preset: ClassVar = (2.0, "fan_in", "truncated_normal")


@INITIALIZERS.register("lecun_uniform")
class LecunUniform(Preset):
    """U[-limit, limit], limit = sqrt(3 / fan_in)"""

    type: Literal["lecun_uniform"] = "lecun_uniform"
    preset: ClassVar = (1.0, "fan_in", "uniform")


@INITIALIZERS.register("lecun_normal")
class LecunNormal(Preset):
    """Truncated normal with stddev sqrt(1 / fan_in)"""

    type: Literal["lecun_normal"] = "lecun_normal"
    preset: ClassVar = (1.0, "fan_in", "truncated_normal")


@INITIALIZERS.register("orthogonal", "orthogonal_initializer")
class Orthogonal(RandomInitializer):
    """gain * Q, Q from the QR decomposition of a normal matrix, with signs fixed by diag(R).

    The weight is seen as a (prod(shape[:-1]), shape[-1]) matrix; its rows are orthonormal when
    it is wide, its columns when it is tall.
    """

    type: Literal["orthogonal"] = "orthogonal"
    gain: float = 1.0

    def __call__(self, shape, rng, dtype):
        if len(shape) < 2:
            raise ValueError(
                "The orthogonal initializer needs a weight of rank 2 or more. "
                f"Received: shape={tuple(shape)} of rank {len(shape)}"
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = self.generator(rng).standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        # Without the sign fix, Q would not be uniformly distributed over orthogonal matrices.
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape).astype(dtype)
