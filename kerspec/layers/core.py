"""Core layers: Input, Dense, Activation, Dropout, Flatten, Reshape, Permute, Masking."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt, model_validator

from kerspec.activations import ACTIVATIONS, Linear
from kerspec.constraints import CONSTRAINTS
from kerspec.initializers import INITIALIZERS
from kerspec.layers.base import (
    LAYERS,
    Layer,
    ShapeError,
    SimpleLayer,
    WeightSpec,
    format_shape,
    require_known,
)
from kerspec.layers.noise import keep_mask
from kerspec.regularizers import REGULARIZERS

Dim = PositiveInt | None
# `activation: null` is linear, as Keras's `activation=None`.
ActivationRef = ACTIVATIONS.ref(none="linear")
InitializerRef = INITIALIZERS.ref()
RegularizerRef = REGULARIZERS.ref() | None
ConstraintRef = CONSTRAINTS.ref() | None
DataFormat = Literal["channels_last", "channels_first"]


@LAYERS.register("Input", "InputLayer")
class Input(Layer):
    """A model input. `shape` excludes the batch dimension; None marks a free dimension."""

    type: Literal["Input"] = "Input"
    shape: list[Dim] | None = None
    batch_shape: list[Dim] | None = Field(None, description="The shape with a leading batch size.")
    dtype: Literal["float32", "float64", "int32", "int64"] | None = None
    arity: ClassVar[int] = 0

    @model_validator(mode="after")
    def _one_shape(self):
        if (self.shape is None) == (self.batch_shape is None):
            raise ValueError("Input needs exactly one of 'shape' and 'batch_shape'")
        if self.batch_shape is not None and not self.batch_shape:
            raise ValueError("'batch_shape' needs at least the batch dimension")
        return self

    @property
    def input_dims(self) -> tuple[int | None, ...]:
        return tuple(self.shape if self.shape is not None else self.batch_shape[1:])

    def output_shapes(self, shapes):
        return [self.input_dims]


class KernelBiasLayer(SimpleLayer):
    """The arguments Keras's Dense and Conv layers share, and their `kernel` and `bias` weights."""

    activation: ActivationRef = "linear"
    use_bias: bool = True
    kernel_initializer: InitializerRef = "glorot_uniform"
    bias_initializer: InitializerRef = "zeros"
    kernel_regularizer: RegularizerRef = None
    bias_regularizer: RegularizerRef = None
    activity_regularizer: RegularizerRef = None
    kernel_constraint: ConstraintRef = None
    bias_constraint: ConstraintRef = None

    def kernel_and_bias(self, kernel_shape: tuple[int, ...], units: int) -> list[WeightSpec]:
        specs = [
            WeightSpec("kernel", kernel_shape, self.kernel_initializer,
                       self.kernel_regularizer, self.kernel_constraint)
        ]
        if self.use_bias:
            specs.append(
                WeightSpec("bias", (units,), self.bias_initializer,
                           self.bias_regularizer, self.bias_constraint)
            )
        return specs  # fmt: skip


@LAYERS.register("Dense")
class Dense(KernelBiasLayer):
    """`y = activation(x @ kernel + bias)` over the last axis.

    Input shape (batch, ..., input_dim); output shape (batch, ..., units).
    """

    type: Literal["Dense"] = "Dense"
    supports_masking: ClassVar[bool] = True
    units: PositiveInt

    def output_shape(self, shape):
        if not shape:
            raise ShapeError(f"Dense needs an input with at least 2 dimensions; received {format_shape(shape)}")
        require_known(shape[-1:], "the last input dimension")
        return (*shape[:-1], self.units)

    def weight_specs(self, shape):
        return self.kernel_and_bias((shape[-1], self.units), self.units)

    def call(self, w, x, ctx):
        kernel = w["kernel"]
        x2 = x.reshape(-1, x.shape[-1])
        z = np.matmul(x2, kernel, out=ctx.buffer("z", (x2.shape[0], self.units), x.dtype))
        if self.use_bias:
            z += w["bias"]
        activation = self.activation
        # An elementwise activation whose derivative needs only its output overwrites z in place.
        if activation.elementwise and not activation.uses_input:
            y = activation.forward(z, out=z)
        else:
            y = activation.forward(z)
        kept_z = None if not activation.uses_input else z
        out_shape = (*x.shape[:-1], self.units)
        need_dx = ctx.need_dx

        def backprop(dy):
            dz = activation.backward(kept_z, y, dy.reshape(-1, self.units))
            grads = {"kernel": np.matmul(x2.T, dz)}
            if self.use_bias:
                grads["bias"] = dz.sum(axis=0)
            dx = np.matmul(dz, kernel.T).reshape(x.shape) if need_dx else None
            return dx, grads

        return y.reshape(out_shape), backprop


@LAYERS.register("Activation")
class Activation(SimpleLayer):
    """Applies an activation function element-wise (or along an axis, for softmax)."""

    type: Literal["Activation"] = "Activation"
    supports_masking: ClassVar[bool] = True
    activation: ActivationRef

    def output_shape(self, shape):
        return shape

    def call(self, w, x, ctx):
        activation = self.activation
        # The output into a buffer kept for the node (or, at inference, its buffer group): a
        # fresh array of a large batch costs its page faults on every call. Linear returns x
        # itself; an integer input keeps the float result NumPy gives it.
        out = None
        if not isinstance(activation, Linear) and np.issubdtype(x.dtype, np.floating):
            out = ctx.buffer("y", x.shape, x.dtype)
        y = activation.forward(x, out=out)

        def backprop(dy):
            return activation.backward(x, y, dy), {}

        return y, backprop


@LAYERS.register("Dropout")
class Dropout(SimpleLayer):
    """Zeroes a fraction `rate` of inputs while training and scales the rest by 1 / (1 - rate)."""

    type: Literal["Dropout"] = "Dropout"
    supports_masking: ClassVar[bool] = True
    rate: float = Field(ge=0.0, le=1.0)
    noise_shape: list[Dim] | None = Field(
        None, description="Mask shape including the batch axis; None entries follow the input."
    )
    seed: int | None = None

    def output_shape(self, shape):
        if self.noise_shape is not None and len(self.noise_shape) != len(shape) + 1:
            raise ShapeError(
                f"noise_shape {self.noise_shape} must have {len(shape) + 1} entries "
                f"(batch included) for input {format_shape(shape)}"
            )
        return shape

    def call(self, w, x, ctx):
        if not ctx.training or self.rate == 0:
            return x, lambda dy: (dy, {})
        shape = x.shape
        if self.noise_shape is not None:
            shape = tuple(d if n is None else n for n, d in zip(self.noise_shape, x.shape))
        rng = ctx.rng if self.seed is None else ctx.seeded_rng(self, self.seed)
        mask = keep_mask(rng, self.rate, shape, x.dtype)
        y = x * mask

        def backprop(dy):
            return dy * mask, {}

        return y, backprop


@LAYERS.register("Flatten")
class Flatten(SimpleLayer):
    """Flattens every axis but the batch axis. channels_first inputs are moved to channels_last
    order first, as Keras does, so the result matches a channels_last model."""

    type: Literal["Flatten"] = "Flatten"
    data_format: DataFormat | None = None

    def output_shape(self, shape):
        if any(d is None for d in shape):
            return (None,)
        return (math.prod(shape),)

    def _channels_first(self, ndim: int) -> bool:
        return self.data_format == "channels_first" and ndim > 2

    def call(self, w, x, ctx):
        moved = x
        if self._channels_first(x.ndim):
            moved = np.moveaxis(x, 1, -1)
        y = moved.reshape(x.shape[0], -1)

        def backprop(dy):
            dx = dy.reshape(moved.shape)
            if self._channels_first(x.ndim):
                dx = np.moveaxis(dx, -1, 1)
            return dx, {}

        return y, backprop


@LAYERS.register("Reshape")
class Reshape(SimpleLayer):
    """Reshapes to `target_shape` (batch axis excluded); one entry may be -1."""

    type: Literal["Reshape"] = "Reshape"
    target_shape: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid_target(self):
        if any(d == 0 or d < -1 for d in self.target_shape):
            raise ValueError(f"target_shape entries must be positive or -1; received {self.target_shape}")
        if self.target_shape.count(-1) > 1:
            raise ValueError(f"target_shape may contain -1 once; received {self.target_shape}")
        return self

    def output_shape(self, shape):
        known = math.prod(d for d in self.target_shape if d != -1)
        if any(d is None for d in shape):
            if -1 in self.target_shape:
                return tuple(None if d == -1 else d for d in self.target_shape)
            return tuple(self.target_shape)
        size = math.prod(shape)
        if -1 in self.target_shape:
            if size % known:
                raise ShapeError(
                    f"cannot reshape input {format_shape(shape)} ({size} values) "
                    f"to {self.target_shape}"
                )
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if size != known:
            raise ShapeError(
                f"cannot reshape input {format_shape(shape)} ({size} values) to "
                f"{self.target_shape} ({known} values)"
            )
        return tuple(self.target_shape)

    def call(self, w, x, ctx):
        y = x.reshape(x.shape[0], *self.target_shape)
        return y, lambda dy: (dy.reshape(x.shape), {})


@LAYERS.register("Permute")
class Permute(SimpleLayer):
    """Permutes the non-batch axes; `dims` is 1-based, as in Keras (`[2, 1]` swaps two axes)."""

    type: Literal["Permute"] = "Permute"
    dims: list[PositiveInt] = Field(min_length=1)

    @model_validator(mode="after")
    def _is_permutation(self):
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(
                f"dims must be a permutation of 1..{len(self.dims)}; received {self.dims}"
            )
        return self

    def output_shape(self, shape):
        if len(shape) != len(self.dims):
            raise ShapeError(
                f"dims {self.dims} do not fit input {format_shape(shape)}: "
                f"expected {len(shape)} entries"
            )
        return tuple(shape[d - 1] for d in self.dims)

    def call(self, w, x, ctx):
        axes = (0, *self.dims)
        inverse = tuple(np.argsort(axes))
        return np.transpose(x, axes), lambda dy: (np.transpose(dy, inverse), {})


@LAYERS.register("Masking")
class Masking(SimpleLayer):
    """Marks the time steps whose features all equal `mask_value` as padding.

    Output: the input with masked steps zeroed (as Keras multiplies by the mask), and a mask of
    shape (batch, time) that layers downstream honour: RNNs skip masked steps, layers that keep
    the time axis pass it on, and a loss on a masked output ignores masked steps.
    """

    type: Literal["Masking"] = "Masking"
    mask_value: float = 0.0
    supports_masking: ClassVar[bool] = True

    def output_shape(self, shape):
        if not shape:
            raise ShapeError(f"Masking needs (batch, time, ...) input; received {format_shape(shape)}")
        return shape

    def output_masked(self, masked, n_outputs):
        return [True]

    def _keep(self, x: np.ndarray) -> np.ndarray:
        return np.any(x != x.dtype.type(self.mask_value), axis=-1)

    def compute_mask(self, xs, masks, ys):
        return [self._keep(xs[0])]

    def call(self, w, x, ctx):
        keep = self._keep(x)[..., None].astype(x.dtype)
        return x * keep, lambda dy: (dy * keep, {})
