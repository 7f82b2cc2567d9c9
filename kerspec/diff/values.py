"""Values as the spec says them: compared after validation (a default written out equals the
default left out) and shortened back to what a spec would write."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from kerspec.diff.result import Change

# Arguments that say where a layer sits, not what it is: compared as names and links instead.
PLACE_ARGS = ("name", "from", "input_shape", "type")


def _jsonable(value: Any, by_alias: bool = False) -> Any:
    """`value` as JSON data. A model goes through its own model_dump: a catalog class validated
    only inside a union has no serializer of its own yet (deferred building), which pydantic's
    to_jsonable_python cannot use."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=by_alias)
    if isinstance(value, dict):
        return {k: _jsonable(v, by_alias) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, by_alias) for v in value]
    return to_jsonable_python(value, by_alias=by_alias)


def value_changes(old: Any, new: Any, path: str = "", skip: tuple[str, ...] = ()) -> list[Change]:
    """Every differing value, argument by argument; resolved values are compared, so a default
    written out equals the default left out."""
    if isinstance(old, BaseModel) and type(old) is type(new):
        found = []
        for key in _fields(old):
            if key in skip:
                continue
            inner = f"{path}.{key}" if path else key
            found.extend(value_changes(_field(old, key), _field(new, key), inner))
        return found
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        return [
            c
            for key in old
            for c in value_changes(old[key], new[key], f"{path}.{key}" if path else str(key))
        ]
    if _equal(_jsonable(old, by_alias=True), _jsonable(new, by_alias=True)):
        return []
    return [Change(path, _short(old), _short(new))]


def _fields(model: BaseModel) -> list[str]:
    return [f.alias or name for name, f in type(model).model_fields.items()]


def _field(model: BaseModel, key: str) -> Any:
    for name, f in type(model).model_fields.items():
        if (f.alias or name) == key:
            return getattr(model, name)
    raise KeyError(key)


def _equal(a: Any, b: Any) -> bool:
    """Equality of JSON-like values where NaN equals NaN (a spec compared with itself is the same)
    and `true` is not `1`."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _short(value: Any) -> Any:
    """A value as one would write it in a spec: a catalog item with default arguments is its name
    (`relu`), otherwise `{type: ..., arguments that differ from the defaults}`."""
    if isinstance(value, BaseModel):
        args = non_default_args(value)
        kind = getattr(value, "type", None)
        if kind is None:
            return args
        return {"type": kind, **args} if args else kind
    if isinstance(value, dict):
        return {str(k): _short(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_short(v) for v in value]
    return _jsonable(value)


def non_default_args(model: BaseModel) -> dict:
    """The arguments of `model` that differ from its class's defaults (required ones always)."""
    defaults = _defaults(model)
    args = {}
    for key in _fields(model):
        if key in PLACE_ARGS:
            continue
        value = _field(model, key)
        if key in defaults and _equal(_jsonable(value, by_alias=True), defaults[key]):
            continue
        args[key] = _short(value)
    return args


def _defaults(model: BaseModel) -> dict:
    """The class's defaults of the optional arguments, validated as the spec's values were
    (`"linear"` -> the item); where the class cannot be built from its required arguments alone
    (an Input needs `shape` or `batch_shape`), the defaults as declared."""
    cls = type(model)
    required = {
        (f.alias or name): _jsonable(getattr(model, name), by_alias=True)
        for name, f in cls.model_fields.items()
        if f.is_required() or (f.alias or name) == "type"
    }
    try:
        base = cls.model_validate(required)
    except (ValidationError, ValueError, TypeError):
        return {
            (f.alias or name): _jsonable(f.default, by_alias=True)
            for name, f in cls.model_fields.items()
            if not f.is_required() and f.default_factory is None
        }
    return {
        key: _jsonable(_field(base, key), by_alias=True)
        for key in _fields(base)
        if key not in required
    }
