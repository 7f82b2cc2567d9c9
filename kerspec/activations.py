"""Activations, by Keras name: `forward(x, out=None)` and `backward(x, y, dy, out=None)`.

`backward` receives the input and the output, and uses whichever makes the derivative cheapest
(sigmoid and tanh are cheapest in terms of their output). It may overwrite `dy`, which the caller
owns. Every formula keeps the input's dtype: constants are Python floats, which NumPy never lets
promote a float32 array.

`out`, when given, is an array of the result's shape and dtype that receives the result (and is
returned); it may be `x` itself for forward, or `dy` for backward. Loops that run an activation
thousands of times on small blocks (the recurrent layers' steps) pass it so that the result lands
in a preallocated buffer without a temporary and a copy. Activations with a cheap in-place form
write into `out` directly; the others compute as usual and copy (see `Activation.__init_subclass__`).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from kerspec.registry import Item, Registry

ACTIVATIONS = Registry("activation")

# Keras's constants for selu (Klambauer et al., 2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Activation(Item):
    # False when backward needs only y, so callers may compute the activation in place over x.
    uses_input: ClassVar[bool] = True
    # False when an output depends on more than its own input (softmax and its kin): then the
    # derivative is no elementwise factor, and `backward(x, y, ones)` is not dy/dx.
    elementwise: ClassVar[bool] = True

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def backward(
        self, x: np.ndarray, y: np.ndarray, dy: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """dy/dx at every point into `out` (elementwise activations only), from the input x and
        the output y: by default the backward of ones; sigmoid and tanh from y alone."""
        out[...] = self.backward(x, y, np.ones(y.shape, y.dtype))
        return out

    def __init_subclass__(cls, **kwargs):
        # Most activations have no cheaper in-place form; rather than spell `out` in each of
        # them, a forward or backward defined without it gets it here: compute, then copy.
        super().__init_subclass__(**kwargs)
        for name in ("forward", "backward"):
            method = cls.__dict__.get(name)
            if method is not None and "out" not in inspect.signature(method).parameters:
                setattr(cls, name, _with_out(method))


def _with_out(method):
    @functools.wraps(method)
    def wrapper(self, *args, out=None):
        result = method(self, *args)
        if out is None or result is out:
            return result
        out[...] = result
        return out

    return wrapper


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), from exp(-|x|) so that no exponent overflows."""
    e = np.exp(-np.abs(x))
    r = 1.0 / (1.0 + e)
    return np.where(x >= 0, r, e * r)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), without overflow."""
    return np.logaddexp(x, 0.0)


def _polyval(coefficients: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    # Horner with Python-float coefficients; np.polyval would turn them into a float64 array.
    y = coefficients[0]
    for c in coefficients[1:]:
        y = y * x + c
    return y


# Cephes' rational approximations of erf and erfc (S. L. Moshier, ndtr.c): near float64 precision.
_ERF_T = (
    9.60497373987051638749e0,
    9.00260197203842689217e1,
    2.23200534594684319226e3,
    7.00332514112805075473e3,
    5.55923013010394962768e4,
)
_ERF_U = (
    1.0,
    3.35617141647503099647e1,
    5.21357949780152679795e2,
    4.59432382970980127987e3,
    2.26290000613890934246e4,
    4.92673942608635921086e4,
)
_ERFC_P = (
    2.46196981473530512524e-10,
    5.64189564831068821977e-1,
    7.46321056442269912687e0,
    4.86371970985681366614e1,
    1.96520832956077098242e2,
    5.26445194995477358631e2,
    9.34528527171957607540e2,
    1.02755188689515710272e3,
    5.57535335369399327526e2,
)
_ERFC_Q = (
    1.0,
    1.32281951154744992508e1,
    8.67072140885989742329e1,
    3.54937778887819891062e2,
    9.75708501743205489753e2,
    1.82390916687909736289e3,
    2.24633760818710981792e3,
    1.65666309194161350182e3,
    5.57535340817727675546e2,
)
_ERFC_R = (
    5.64189583547755073984e-1,
    1.27536670759978104416e0,
    5.01905042251180477414e0,
    6.16021097993053585195e0,
    7.40974269950448939160e0,
    2.97886665372100240670e0,
)
_ERFC_S = (
    1.0,
    2.26052863220117276590e0,
    9.39603524938001434673e0,
    1.20489539808096656605e1,
    1.70814450747565897222e1,
    9.60896809063285878198e0,
    3.36907645100081516050e0,
)


def erfc(x: np.ndarray) -> np.ndarray:
    """1 - erf(x), accurate in both tails (NumPy has no erf, and scipy is not a dependency).

    |x| < 1: 1 - x T(x^2) / U(x^2); |x| >= 1: exp(-x^2) P(|x|) / Q(|x|) (R / S from 8 on),
    reflected as 2 - erfc(|x|) for x < 0.
    """
    # Each branch sees only inputs in its own range, so the branch np.where discards cannot
    # overflow and warn.
    small = np.clip(x, -1.0, 1.0)
    z = small * small
    erf_small = small * _polyval(_ERF_T, z) / _polyval(_ERF_U, z)
    big = np.clip(np.abs(x), 1.0, 30.0)
    ratio = np.where(
        big < 8.0,
        _polyval(_ERFC_P, big) / _polyval(_ERFC_Q, big),
        _polyval(_ERFC_R, big) / _polyval(_ERFC_S, big),
    )
    tail = np.exp(-big * big) * ratio
    return np.where(np.abs(x) < 1.0, 1.0 - erf_small, np.where(x < 0, 2.0 - tail, tail))


def _count(mask: np.ndarray, axis: int, dtype) -> np.ndarray:
    # An integer count would promote a float32 division to float64.
    return np.sum(mask, axis=axis, keepdims=True).astype(dtype)


@ACTIVATIONS.register("linear")
class Linear(Activation):
    """y = x"""

    type: Literal["linear"] = "linear"
    uses_input: ClassVar[bool] = False

    def forward(self, x, out=None):
        if out is None or out is x:
            return x
        out[...] = x
        return out

    def backward(self, x, y, dy, out=None):
        if out is None or out is dy:
            return dy
        out[...] = dy
        return out


@ACTIVATIONS.register("relu")
class Relu(Activation):
    """y = min(x, max_value) if x > threshold, else negative_slope * (x - threshold).

    Arguments are bounded as Keras's ReLU layer bounds them; under those bounds the output alone
    tells the pieces apart (y > 0 only above the threshold), so backward needs only y.
    """

    type: Literal["relu"] = "relu"
    uses_input: ClassVar[bool] = False
    negative_slope: float = Field(0.0, ge=0.0)
    max_value: float | None = Field(None, ge=0.0)
    threshold: float = Field(0.0, ge=0.0)

    def forward(self, x, out=None):
        if self.threshold == 0.0 and self.negative_slope == 0.0:
            # The common case, about twice as fast as np.where, and in place when out is x.
            y = np.maximum(x, 0.0, out=out)
            if self.max_value is not None:
                np.minimum(y, self.max_value, out=y)
            return y
        if self.threshold == 0.0:
            y = np.maximum(x, 0.0)
        else:
            y = np.where(x > self.threshold, x, 0.0)
        if self.max_value is not None:
            np.minimum(y, self.max_value, out=y)
        if self.negative_slope != 0.0:
            y -= self.negative_slope * np.maximum(self.threshold - x, 0.0)
        if out is None:
            return y
        out[...] = y
        return out

    def backward(self, x, y, dy):
        if self.negative_slope == 0.0 and self.max_value is None:
            # The common case in place over dy (which backward may overwrite): a compare and a
            # multiply by the boolean: no np.where and no product temporary.
            np.multiply(dy, y > 0, out=dy)
            return dy
        dx = np.where(y > 0, dy, self.negative_slope * dy)
        if self.max_value is not None:
            dx[y >= self.max_value] = 0.0
        return dx


@ACTIVATIONS.register("leaky_relu")
class LeakyRelu(Activation):
    """y = x if x > 0 else negative_slope * x"""

    type: Literal["leaky_relu"] = "leaky_relu"
    uses_input: ClassVar[bool] = False
    negative_slope: float = Field(0.2, ge=0.0)

    def forward(self, x):
        return np.where(x > 0, x, self.negative_slope * x)

    def backward(self, x, y, dy):
        return np.where(y > 0, dy, self.negative_slope * dy)


@ACTIVATIONS.register("relu6")
class Relu6(Activation):
    """y = min(max(x, 0), 6)"""

    type: Literal["relu6"] = "relu6"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return np.clip(x, 0.0, 6.0)

    def backward(self, x, y, dy):
        dy[(y <= 0.0) | (y >= 6.0)] = 0.0
        return dy


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x)); dy/dx = y (1 - y)"""

    type: Literal["sigmoid"] = "sigmoid"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return sigmoid(x)

    def derivative(self, x, y, out):
        np.subtract(1.0, y, out=out)
        out *= y
        return out

    def backward(self, x, y, dy, out=None):
        d = self.derivative(x, y, np.empty_like(y))
        return np.multiply(dy, d, out=dy if out is None else out)


@ACTIVATIONS.register("hard_sigmoid")
class HardSigmoid(Activation):
    """y = clip(x / 6 + 1/2, 0, 1)"""

    type: Literal["hard_sigmoid"] = "hard_sigmoid"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return np.clip(x / 6.0 + 0.5, 0.0, 1.0)

    def backward(self, x, y, dy):
        dy *= 1.0 / 6.0
        dy[(y <= 0.0) | (y >= 1.0)] = 0.0
        return dy


@ACTIVATIONS.register("hard_silu", "hard_swish")
class HardSilu(Activation):
    """y = x * hard_sigmoid(x)"""

    type: Literal["hard_silu"] = "hard_silu"

    def forward(self, x):
        return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)

    def backward(self, x, y, dy):
        middle = (x + 1.5) / 3.0  # d/dx x (x + 3) / 6
        return dy * np.where(x <= -3.0, 0.0, np.where(x >= 3.0, 1.0, middle))


@ACTIVATIONS.register("log_sigmoid")
class LogSigmoid(Activation):
    """y = log(sigmoid(x)) = -softplus(-x); dy/dx = sigmoid(-x) = 1 - exp(y)"""

    type: Literal["log_sigmoid"] = "log_sigmoid"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return -softplus(-x)

    def backward(self, x, y, dy):
        dy *= -np.expm1(y)
        return dy


@ACTIVATIONS.register("sparse_sigmoid")
class SparseSigmoid(Activation):
    """y = clip((x + 1) / 2, 0, 1)"""

    type: Literal["sparse_sigmoid"] = "sparse_sigmoid"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return np.clip(0.5 * (x + 1.0), 0.0, 1.0)

    def backward(self, x, y, dy):
        dy *= 0.5
        dy[(y <= 0.0) | (y >= 1.0)] = 0.0
        return dy


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    """y = exp(x) / sum(exp(x)) along `axis`; dx = y (dy - sum(dy y))"""

    type: Literal["softmax"] = "softmax"
    uses_input: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False
    axis: int = -1

    def forward(self, x):
        e = np.exp(x - np.max(x, axis=self.axis, keepdims=True))
        e /= np.sum(e, axis=self.axis, keepdims=True)
        return e

    def backward(self, x, y, dy):
        dy -= np.sum(dy * y, axis=self.axis, keepdims=True)
        dy *= y
        return dy


@ACTIVATIONS.register("log_softmax")
class LogSoftmax(Activation):
    """y = x - log(sum(exp(x))) along `axis`; dx = dy - exp(y) sum(dy)"""

    type: Literal["log_softmax"] = "log_softmax"
    uses_input: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False
    axis: int = -1

    def forward(self, x):
        shifted = x - np.max(x, axis=self.axis, keepdims=True)
        shifted -= np.log(np.sum(np.exp(shifted), axis=self.axis, keepdims=True))
        return shifted

    def backward(self, x, y, dy):
        return dy - np.exp(y) * np.sum(dy, axis=self.axis, keepdims=True)


@ACTIVATIONS.register("sparsemax")
class Sparsemax(Activation):
    """y = max(x - tau, 0) along `axis`, tau chosen so that y sums to 1 (Martins et al., 2016).

    On the support S = {y > 0}: dx = dy - mean over S of dy; elsewhere 0.
    """

    type: Literal["sparsemax"] = "sparsemax"
    uses_input: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False
    axis: int = -1

    def forward(self, x):
        z = np.moveaxis(x, self.axis, -1)
        ranked = -np.sort(-z, axis=-1)
        cumulative = np.cumsum(ranked, axis=-1)
        k = np.arange(1, z.shape[-1] + 1, dtype=x.dtype)
        # The support is a prefix of the sorted values, so its size points at its cumsum.
        size = _count(1.0 + k * ranked > cumulative, -1, np.intp)
        tau = (np.take_along_axis(cumulative, size - 1, axis=-1) - 1.0) / size.astype(x.dtype)
        return np.moveaxis(np.maximum(z - tau, 0.0), -1, self.axis)

    def backward(self, x, y, dy):
        support = y > 0
        dy *= support
        dy -= np.sum(dy, axis=self.axis, keepdims=True) / _count(support, self.axis, dy.dtype)
        dy *= support
        return dy


@ACTIVATIONS.register("tanh")
class Tanh(Activation):
    """y = tanh(x); dy/dx = 1 - y^2"""

    type: Literal["tanh"] = "tanh"
    uses_input: ClassVar[bool] = False

    def forward(self, x, out=None):
        return np.tanh(x, out=out)

    def derivative(self, x, y, out):
        np.multiply(y, y, out=out)
        np.subtract(1.0, out, out=out)
        return out

    def backward(self, x, y, dy, out=None):
        d = self.derivative(x, y, np.empty_like(y))
        return np.multiply(dy, d, out=dy if out is None else out)


@ACTIVATIONS.register("hard_tanh")
class HardTanh(Activation):
    """y = clip(x, -1, 1)"""

    type: Literal["hard_tanh"] = "hard_tanh"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return np.clip(x, -1.0, 1.0)

    def backward(self, x, y, dy):
        dy[np.abs(y) >= 1.0] = 0.0
        return dy


@ACTIVATIONS.register("tanh_shrink")
class TanhShrink(Activation):
    """y = x - tanh(x); dy/dx = tanh(x)^2"""

    type: Literal["tanh_shrink"] = "tanh_shrink"

    def forward(self, x):
        return x - np.tanh(x)

    def backward(self, x, y, dy):
        dy *= np.square(np.tanh(x))
        return dy


@ACTIVATIONS.register("elu")
class Elu(Activation):
    """y = x if x > 0 else alpha (exp(x) - 1)"""

    type: Literal["elu"] = "elu"
    alpha: float = 1.0

    def forward(self, x):
        # expm1 of min(x, 0) so that the discarded branch cannot overflow.
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))

    def backward(self, x, y, dy):
        return np.where(x > 0, dy, dy * (self.alpha * np.exp(np.minimum(x, 0.0))))


@ACTIVATIONS.register("selu")
class Selu(Activation):
    """y = scale * elu(x, alpha), with Keras's fixed scale = 1.0507... and alpha = 1.6732..."""

    type: Literal["selu"] = "selu"

    def forward(self, x):
        return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))

    def backward(self, x, y, dy):
        slope = np.where(x > 0, SELU_SCALE, (SELU_SCALE * SELU_ALPHA) * np.exp(np.minimum(x, 0.0)))
        dy *= slope
        return dy


@ACTIVATIONS.register("celu")
class Celu(Activation):
    """y = max(x, 0) + alpha (exp(min(x, 0) / alpha) - 1)"""

    type: Literal["celu"] = "celu"
    # alpha divides x; the CELU paper defines it for alpha > 0.
    alpha: float = Field(1.0, gt=0.0)

    def forward(self, x):
        return np.maximum(x, 0.0) + self.alpha * np.expm1(np.minimum(x, 0.0) / self.alpha)

    def backward(self, x, y, dy):
        return np.where(x > 0, dy, dy * np.exp(np.minimum(x, 0.0) / self.alpha))


@ACTIVATIONS.register("softplus")
class Softplus(Activation):
    """y = log(1 + exp(x)); dy/dx = sigmoid(x) = 1 - exp(-y)"""

    type: Literal["softplus"] = "softplus"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return softplus(x)

    def backward(self, x, y, dy):
        dy *= -np.expm1(-y)
        return dy


@ACTIVATIONS.register("sparse_plus")
class SparsePlus(Activation):
    """y = 0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1"""

    type: Literal["sparse_plus"] = "sparse_plus"

    def forward(self, x):
        return np.where(x <= -1.0, 0.0, np.where(x < 1.0, 0.25 * np.square(x + 1.0), x))

    def backward(self, x, y, dy):
        dy *= np.clip(0.5 * (x + 1.0), 0.0, 1.0)
        return dy


@ACTIVATIONS.register("squareplus")
class Squareplus(Activation):
    """y = (x + sqrt(x^2 + b)) / 2"""

    type: Literal["squareplus"] = "squareplus"
    # A negative b puts a negative number under the square root near x = 0.
    b: float = Field(4.0, ge=0.0)

    def forward(self, x):
        return 0.5 * (x + np.sqrt(np.square(x) + self.b))

    def backward(self, x, y, dy):
        dy *= 0.5 * (1.0 + x / np.sqrt(np.square(x) + self.b))
        return dy


@ACTIVATIONS.register("softsign")
class Softsign(Activation):
    """y = x / (1 + |x|); dy/dx = 1 / (1 + |x|)^2"""

    type: Literal["softsign"] = "softsign"

    def forward(self, x):
        return x / (1.0 + np.abs(x))

    def backward(self, x, y, dy):
        dy /= np.square(1.0 + np.abs(x))
        return dy


@ACTIVATIONS.register("soft_shrink")
class SoftShrink(Activation):
    """y = x - threshold if x > threshold, x + threshold if x < -threshold, else 0"""

    type: Literal["soft_shrink"] = "soft_shrink"
    threshold: float = 0.5

    def forward(self, x):
        t = self.threshold
        return np.where(x > t, x - t, np.where(x < -t, x + t, 0.0))

    def backward(self, x, y, dy):
        dy[(x <= self.threshold) & (x >= -self.threshold)] = 0.0
        return dy


@ACTIVATIONS.register("hard_shrink")
class HardShrink(Activation):
    """y = x if |x| > threshold else 0"""

    type: Literal["hard_shrink"] = "hard_shrink"
    threshold: float = 0.5

    def forward(self, x):
        return np.where(np.abs(x) > self.threshold, x, 0.0)

    def backward(self, x, y, dy):
        dy[np.abs(x) <= self.threshold] = 0.0
        return dy


@ACTIVATIONS.register("threshold")
class Threshold(Activation):
    """y = x if x > threshold else default_value (both arguments required, as in Keras)"""

    type: Literal["threshold"] = "threshold"
    threshold: float
    default_value: float

    def forward(self, x):
        return np.where(x > self.threshold, x, self.default_value)

    def backward(self, x, y, dy):
        dy[x <= self.threshold] = 0.0
        return dy


@ACTIVATIONS.register("silu", "swish")
class Silu(Activation):
    """y = x sigmoid(x); dy/dx = s + y (1 - s) with s = sigmoid(x)"""

    type: Literal["silu"] = "silu"

    def forward(self, x):
        return x * sigmoid(x)

    def backward(self, x, y, dy):
        s = sigmoid(x)
        dy *= s + y * (1.0 - s)
        return dy


@ACTIVATIONS.register("gelu")
class Gelu(Activation):
    """y = x P(X <= x), X ~ N(0, 1): x erfc(-x / sqrt(2)) / 2, or with `approximate`
    x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2.
    """

    type: Literal["gelu"] = "gelu"
    approximate: bool = False

    def forward(self, x):
        if self.approximate:
            inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
            return 0.5 * x * (1.0 + np.tanh(inner))
        # erfc rather than 1 + erf keeps the left tail accurate instead of cancelling to 0.
        return 0.5 * x * erfc(-x / math.sqrt(2.0))

    def backward(self, x, y, dy):
        if self.approximate:
            c = math.sqrt(2.0 / math.pi)
            t = np.tanh(c * (x + 0.044715 * x**3))
            dinner = c * (1.0 + 3.0 * 0.044715 * np.square(x))
            dy *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
            return dy
        density = np.exp(-0.5 * np.square(x)) / math.sqrt(2.0 * math.pi)
        dy *= 0.5 * erfc(-x / math.sqrt(2.0)) + x * density
        return dy


@ACTIVATIONS.register("mish")
class Mish(Activation):
    """y = x tanh(softplus(x)); dy/dx = t + x (1 - t^2) sigmoid(x) with t = tanh(softplus(x))"""

    type: Literal["mish"] = "mish"

    def forward(self, x):
        return x * np.tanh(softplus(x))

    def backward(self, x, y, dy):
        t = np.tanh(softplus(x))
        dy *= t + x * (1.0 - t * t) * sigmoid(x)
        return dy


@ACTIVATIONS.register("exponential")
class Exponential(Activation):
    """y = exp(x); dy/dx = y"""

    type: Literal["exponential"] = "exponential"
    uses_input: ClassVar[bool] = False

    def forward(self, x):
        return np.exp(x)

    def backward(self, x, y, dy):
        dy *= y
        return dy
