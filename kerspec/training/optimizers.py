"""Optimizers, by Keras name, with Keras 3's update rules and defaults.

An optimizer is immutable configuration; its slots (momenta, ...) live in a state mapping the
training loop keeps, so a run can be saved and resumed with the optimizer exactly where it was.
Updates are in place over the weight arrays.

The state is a flat mapping of plain numpy arrays, ready for `np.savez`: `iterations` (int64,
the number of steps taken), `learning_rate` (the current rate, in the weights' dtype: callbacks
such as ReduceLROnPlateau change it, and a resumed run starts from it) and one array per slot and
weight, keyed `slot/index` (`momentum/0`, `velocity/3`, ...). A `learning_rate` given as a
schedule (`{type: cosine_decay, ...}`) sets the state's rate from the iteration count before
each step, as Keras evaluates it. Each step does what Keras's `BaseOptimizer.apply` does, in
order: clip the gradients, decay the weights (`w -= w * weight_decay * learning_rate`), apply
the optimizer's rule, count the step. `t` below is the 1-based step number.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import Discriminator, Field, Tag, model_validator

from kerspec.registry import Item, Registry
from kerspec.training.schedules import SCHEDULES, Schedule

OPTIMIZERS = Registry("optimizer")

PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


def _rate_tag(value: Any) -> str:
    return "schedule" if isinstance(value, dict | str | Schedule) else "rate"


# A learning rate: a number, or a schedule evaluated at the iteration count. 0 is allowed, as in
# Keras: the trainable weights stay as they are while BatchNormalization's statistics still move.
LearningRate = Annotated[
    Union[Annotated[NonNegativeFloat, Tag("rate")], Annotated[SCHEDULES.ref(), Tag("schedule")]],  # noqa: UP007
    Discriminator(_rate_tag),
]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]
# A decay that divides by 1 - beta**t: Keras accepts 1 and turns every weight into NaN at step 1.
DecayBelowOne = Annotated[float, Field(ge=0.0, lt=1.0)]

# Keras optimizer arguments kerspec refuses by name, so the message says what is missing.
UNSUPPORTED = (
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
    "name",
)


class Optimizer(Item):
    """Base of every optimizer: the learning rate, weight decay and gradient clipping.

    `clipnorm` rescales each gradient to norm at most `clipnorm`; `global_clipnorm` rescales all
    gradients together to a global norm at most `global_clipnorm`; `clipvalue` clips each element
    to `[-clipvalue, clipvalue]`. Only one of them may be set, as in Keras.
    """

    learning_rate: LearningRate = 0.001
    weight_decay: NonNegativeFloat | None = None
    clipnorm: PositiveFloat | None = None
    clipvalue: PositiveFloat | None = None
    global_clipnorm: PositiveFloat | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in UNSUPPORTED:
                if key in data:
                    raise ValueError(
                        f"the Keras optimizer argument `{key}` is not supported by kerspec. "
                        f"Received: {key}={data[key]!r}"
                    )
        return data

    @model_validator(mode="after")
    def _one_clip(self):
        clips = {"clipnorm": self.clipnorm, "clipvalue": self.clipvalue}
        clips["global_clipnorm"] = self.global_clipnorm
        if sum(value is not None for value in clips.values()) > 1:
            received = ", ".join(f"{k}={v}" for k, v in clips.items())
            raise ValueError(
                f"Only one of clipnorm, clipvalue and global_clipnorm can be set. Received: {received}"
            )
        return self

    def slots(self) -> dict[str, float]:
        """Slot names and their initial value, one array of each per weight."""
        return {}

    @property
    def scheduled(self) -> bool:
        return isinstance(self.learning_rate, Schedule)

    def rate_at(self, iterations: int) -> float:
        """The configured learning rate after `iterations` steps."""
        rate = self.learning_rate
        return float(rate(iterations)) if isinstance(rate, Schedule) else float(rate)

    def init(self, weights: list[np.ndarray]) -> dict[str, Any]:
        dtype = weights[0].dtype if weights else np.dtype(np.float32)
        state: dict[str, Any] = {
            "iterations": np.zeros((), np.int64),
            "learning_rate": np.asarray(self.rate_at(0), dtype),
        }
        for slot, value in self.slots().items():
            for index, weight in enumerate(weights):
                state[f"{slot}/{index}"] = np.full_like(weight, value)
        return state

    def apply(self, state: dict[str, Any], weights: list[np.ndarray], grads: list[np.ndarray]):
        """One step over every weight, in place; the gradients may be overwritten."""
        self._clip(grads)
        iterations = int(state["iterations"])
        if self.scheduled or "learning_rate" not in state:
            dtype = weights[0].dtype if weights else np.dtype(np.float32)
            state["learning_rate"] = np.asarray(self.rate_at(iterations), dtype)
        lr = float(state["learning_rate"])
        if self.weight_decay is not None:
            for weight in weights:
                weight *= weight.dtype.type(1 - self.weight_decay * lr)
        step = iterations + 1
        self._begin_step(state, step, weights[0].dtype.type if weights else np.float32)
        for index, (weight, grad) in enumerate(zip(weights, grads, strict=True)):
            slots = {slot: state[f"{slot}/{index}"] for slot in self.slots()}
            self.update(weight, grad, slots, state, step, lr)
        state["iterations"] = np.asarray(step, np.int64)

    def _clip(self, grads: list[np.ndarray]) -> None:
        if self.clipnorm is not None:
            for grad in grads:
                norm = np.sqrt(np.sum(np.square(grad)))
                grad *= grad.dtype.type(self.clipnorm) / np.maximum(norm, self.clipnorm)
        elif self.global_clipnorm is not None:
            norm = np.sqrt(sum(np.sum(np.square(grad)) for grad in grads))
            for grad in grads:
                grad *= grad.dtype.type(self.global_clipnorm) / np.maximum(
                    norm, self.global_clipnorm
                )
        elif self.clipvalue is not None:
            for grad in grads:
                np.clip(grad, -self.clipvalue, self.clipvalue, out=grad)

    def _begin_step(self, state: dict[str, Any], step: int, dtype) -> None:
        """Per-step bookkeeping shared by all weights (Nadam's momentum cache)."""

    def update(self, weight, grad, slots: dict[str, np.ndarray], state, step: int, lr: float) -> None:
        raise NotImplementedError


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """Without momentum `w -= lr * g`. With momentum `m = momentum * m - lr * g`, then
    `w += m`, or `w += momentum * m - lr * g` with Nesterov."""

    type: Literal["sgd"] = "sgd"
    learning_rate: LearningRate = 0.01
    momentum: UnitFloat = 0.0
    nesterov: bool = False

    def slots(self):
        return {"momentum": 0.0} if self.momentum != 0 else {}

    def update(self, weight, grad, slots, state, step, lr):
        lr = weight.dtype.type(lr)
        grad *= lr
        if self.momentum == 0:
            weight -= grad
            return
        momentum = weight.dtype.type(self.momentum)
        m = slots["momentum"]
        m *= momentum
        m -= grad
        if self.nesterov:
            weight += m * momentum - grad
        else:
            weight += m


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    """`v = rho * v + (1 - rho) * g**2`; centered: `a = rho * a + (1 - rho) * g` and
    `d = v - a**2 + epsilon`, else `d = v + epsilon`; `step = lr * g / sqrt(d)`; with momentum
    `m = momentum * m + step` and `w -= m`, else `w -= step`."""

    type: Literal["rmsprop"] = "rmsprop"
    rho: UnitFloat = 0.9
    momentum: UnitFloat = 0.0
    epsilon: float = 1e-7
    centered: bool = False

    def slots(self):
        names = ["velocity"] + ["momentum"] * (self.momentum > 0)
        return dict.fromkeys(names + ["average_gradient"] * self.centered, 0.0)

    def update(self, weight, grad, slots, state, step, lr):
        f = weight.dtype.type
        rho = f(self.rho)
        v = slots["velocity"]
        v *= rho
        v += (1 - rho) * np.square(grad)
        if self.centered:
            average = slots["average_gradient"]
            average *= rho
            average += (1 - rho) * grad
            denominator = v - np.square(average) + f(self.epsilon)
        else:
            denominator = v + f(self.epsilon)
        grad *= f(lr)
        grad /= np.sqrt(denominator, out=denominator)
        if self.momentum > 0:
            m = slots["momentum"]
            m *= f(self.momentum)
            m += grad
            weight -= m
        else:
            weight -= grad


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """`m += (g - m) * (1 - beta_1)`, `v += (g**2 - v) * (1 - beta_2)` (amsgrad: `v_hat =
    max(v_hat, v)` replaces v below), `w -= m * alpha / (sqrt(v) + epsilon)` with
    `alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`."""

    type: Literal["adam"] = "adam"
    beta_1: DecayBelowOne = 0.9
    beta_2: UnitFloat = 0.999
    epsilon: float = 1e-7
    amsgrad: bool = False

    def slots(self):
        return dict.fromkeys(["momentum", "velocity"] + ["velocity_hat"] * self.amsgrad, 0.0)

    def update(self, weight, grad, slots, state, step, lr):
        f = weight.dtype.type
        beta_1, beta_2 = f(self.beta_1), f(self.beta_2)
        alpha = f(lr) * np.sqrt(1 - beta_2 ** f(step)) / (1 - beta_1 ** f(step))
        m, v = slots["momentum"], slots["velocity"]
        # In place, with one scratch array: the step runs over every weight of the model, and
        # temporaries would double its memory traffic.
        scratch = np.square(grad)
        v *= beta_2
        scratch *= 1 - beta_2
        v += scratch
        m *= beta_1
        grad *= 1 - beta_1
        m += grad
        if self.amsgrad:
            v = np.maximum(slots["velocity_hat"], v, out=slots["velocity_hat"])
        np.sqrt(v, out=scratch)
        scratch += f(self.epsilon)
        np.divide(m, scratch, out=scratch)
        scratch *= alpha
        weight -= scratch


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """Adam with decoupled weight decay, `weight_decay` 0.004 by default and required."""

    type: Literal["adamw"] = "adamw"
    weight_decay: NonNegativeFloat = 0.004


@OPTIMIZERS.register("adagrad")
class Adagrad(Optimizer):
    """`acc += g**2`, `w -= lr * g / sqrt(acc + epsilon)`, acc starting at
    `initial_accumulator_value`."""

    type: Literal["adagrad"] = "adagrad"
    initial_accumulator_value: NonNegativeFloat = 0.1
    epsilon: float = 1e-7

    def slots(self):
        return {"accumulator": self.initial_accumulator_value}

    def update(self, weight, grad, slots, state, step, lr):
        f = weight.dtype.type
        accumulator = slots["accumulator"]
        accumulator += np.square(grad)
        grad *= f(lr)
        grad /= np.sqrt(accumulator + f(self.epsilon))
        weight -= grad


@OPTIMIZERS.register("adadelta")
class Adadelta(Optimizer):
    """`a_g = rho * a_g + (1 - rho) * g**2`,
    `d = -sqrt(a_d + epsilon) * g / sqrt(a_g + epsilon)`, `a_d = rho * a_d + (1 - rho) * d**2`,
    `w += lr * d`."""

    type: Literal["adadelta"] = "adadelta"
    rho: UnitFloat = 0.95
    epsilon: float = 1e-7

    def slots(self):
        return {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}

    def update(self, weight, grad, slots, state, step, lr):
        f = weight.dtype.type
        rho, epsilon = f(self.rho), f(self.epsilon)
        grads, deltas = slots["accumulated_grad"], slots["accumulated_delta_var"]
        grads *= rho
        grads += (1 - rho) * np.square(grad)
        delta = -np.sqrt(deltas + epsilon) * grad / np.sqrt(grads + epsilon)
        deltas *= rho
        deltas += (1 - rho) * np.square(delta)
        delta *= f(lr)
        weight += delta


@OPTIMIZERS.register("adamax")
class Adamax(Optimizer):
    """`m += (g - m) * (1 - beta_1)`, `u = max(beta_2 * u, |g|)`,
    `w -= lr * m / ((1 - beta_1**t) * (u + epsilon))`."""

    type: Literal["adamax"] = "adamax"
    beta_1: DecayBelowOne = 0.9
    beta_2: UnitFloat = 0.999
    epsilon: float = 1e-7

    def slots(self):
        return {"momentum": 0.0, "norm": 0.0}

    def update(self, weight, grad, slots, state, step, lr):
        f = weight.dtype.type
        beta_1 = f(self.beta_1)
        m, u = slots["momentum"], slots["norm"]
        m += (grad - m) * (1 - beta_1)
        u *= f(self.beta_2)
        np.maximum(u, np.abs(grad), out=u)
        weight -= f(lr) * m / ((1 - beta_1 ** f(step)) * (u + f(self.epsilon)))


@OPTIMIZERS.register("nadam")
class Nadam(Optimizer):
    """Adam with Nesterov momentum and Keras's momentum cache:
    `u_t = beta_1 * (1 - 0.5 * 0.96**t)`, `P_t = u_1 * ... * u_t` (state `u_product`),
    `m_hat = u_{t+1} * m / (1 - P_t * u_{t+1}) + (1 - u_t) * g / (1 - P_t)`,
    `v_hat = v / (1 - beta_2**t)`, `w -= lr * m_hat / (sqrt(v_hat) + epsilon)`."""

    type: Literal["nadam"] = "nadam"
    beta_1: UnitFloat = 0.9
    beta_2: DecayBelowOne = 0.999
    epsilon: float = 1e-7

    def slots(self):
        return {"momentum": 0.0, "velocity": 0.0}

    def init(self, weights):
        dtype = weights[0].dtype if weights else np.float32
        return {**super().init(weights), "u_product": np.ones((), dtype)}

    def _momentum_cache(self, step, f):
        return f(self.beta_1) * (1 - f(0.5) * f(0.96) ** f(step))

    def _begin_step(self, state, step, dtype):
        # Keras advances the cache once per step, before updating any weight.
        state["u_product"] = np.asarray(state["u_product"] * self._momentum_cache(step, dtype))

    def update(self, weight, grad, slots, state, step, lr):
        f = weight.dtype.type
        beta_1, beta_2 = f(self.beta_1), f(self.beta_2)
        u_t, u_next = self._momentum_cache(step, f), self._momentum_cache(step + 1, f)
        product = f(state["u_product"])
        m, v = slots["momentum"], slots["velocity"]
        m += (grad - m) * (1 - beta_1)
        v += (np.square(grad) - v) * (1 - beta_2)
        m_hat = u_next * m / (1 - product * u_next) + (1 - u_t) * grad / (1 - product)
        v_hat = v / (1 - beta_2 ** f(step))
        weight -= m_hat * f(lr) / (np.sqrt(v_hat) + f(self.epsilon))
