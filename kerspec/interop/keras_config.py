"""Keras's serialized objects (initializers, optimizers, losses, ...) and kerspec's catalog
entries, in both directions. kerspec's catalogs use Keras's names and argument names, so the
translation is mostly about leaving out what is at its default and saying what does not fit."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from kerspec.registry import Registry

# Arguments Keras writes into every serialized object that kerspec has no use for, with the
# values at which ignoring them changes nothing.
HARMLESS = {
    "name": None,  # any value: an object's own name (an optimizer's "adam")
    "dtype": ("float32", None),
    "quantization_config": (None,),
    "lora_rank": (None,),
    "lora_alpha": (None,),
    "input_axes": (None,),
    "output_axes": (None,),
    "use_ema": (False,),
    "ema_momentum": None,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": (None,),
    "gradient_accumulation_steps": (None,),
    "reduction": ("sum_over_batch_size", "auto"),
}

# kerspec canonical name -> Keras class name, where snake case does not camel-case into it.
KERAS_CLASS = {
    "sgd": "SGD", "rmsprop": "RMSprop", "adamw": "AdamW", "l1_l2": "L1L2", "l1": "L1", "l2": "L2",
}


def keras_class(name: str) -> str:
    """`glorot_uniform` -> `GlorotUniform`, as Keras names its classes."""
    return KERAS_CLASS.get(name) or "".join(part.capitalize() for part in name.split("_"))


def harmless(key: str, value: Any) -> bool:
    if key not in HARMLESS:
        return False
    allowed = HARMLESS[key]
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = (value.get("config") or {}).get("name")
    return allowed is None or value in allowed


def is_custom(obj: dict) -> bool:
    """A class of the user's own (registered_name `package>Name`, a module outside Keras)."""
    module = obj.get("module")
    registered = obj.get("registered_name")
    return (isinstance(module, str) and not module.startswith("keras")) or (
        isinstance(registered, str) and ">" in registered
    )


def float32_literal(value: Any) -> Any:
    """A float Keras stored from a float32 variable (0.009999999776482582) as it was written (0.01)."""
    if isinstance(value, float) and value != 0 and float(np.float32(value)) == value:
        return float(str(np.float32(value)))
    return value


def without_defaults(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """`values` less every argument that the model would take as its default anyway."""
    try:
        full = model.model_validate(values)
    except ValidationError:
        return values
    kept = dict(values)
    for key in list(values):
        if key == "type":
            continue
        trial = {k: v for k, v in kept.items() if k != key}
        try:
            if model.model_validate(trial) == full:
                kept = trial
        except ValidationError:
            pass
    return kept


class ItemReader:
    """Turns Keras's serialized catalog objects into kerspec's; collects what does not fit."""

    def __init__(self, problem):
        self.problem = problem  # problem(path, message)

    def read(self, registry: Registry, value: Any, path: str, *, floats32: bool = False) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return value if self._name(registry, value, path) else None
        if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
            self.problem(path, f"expected a {registry.kind} name or a serialized {registry.kind}")
            return None
        if is_custom(value):
            self.problem(path, f"{value['class_name']} is a custom {registry.kind} (Python code), which"
                               f" kerspec never runs; use one of kerspec's: {', '.join(registry.names())}")
            return None
        config = value.get("config")
        if value["class_name"] == "function" and isinstance(config, str):
            return self._name(registry, config, path)
        name = self._name(registry, value["class_name"], path)
        if name is None:
            return None
        if config is None:
            config = {}
        if not isinstance(config, dict):
            self.problem(f"{path}.config", "expected a mapping of arguments")
            return None
        model = registry.get(name)
        fields = set(model.model_fields) - {"type"}
        args: dict[str, Any] = {}
        for key, arg in config.items():
            if key in fields:
                args[key] = float32_literal(arg) if floats32 else arg
            elif not harmless(key, arg):
                self.problem(f"{path}.config.{key}", f"kerspec's {name} has no argument {key!r}"
                                                     f" (Keras gives it {_short(arg)})")
        args = without_defaults(model, {"type": name, **args})
        args.pop("type")
        return {"type": name, **args} if args else name

    def _name(self, registry: Registry, value: str, path: str) -> str | None:
        try:
            return registry.canonical(value)
        except ValueError as err:
            self.problem(path, f"kerspec has no such {registry.kind}: {err}")
            return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def serialize(item: Any, module: str) -> Any:
    """A kerspec catalog entry (validated) as Keras serializes it; None stays None."""
    if item is None:
        return None
    config = item.model_dump(exclude={"type"})
    if not config and module == "keras.activations":
        return item.type
    return {"module": module, "class_name": keras_class(item.type), "config": config, "registered_name": None}
