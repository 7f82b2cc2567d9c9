"""One lookup mechanism for every catalog: layers, activations, initializers, losses, ...

Entries are pydantic models whose `type` field is a `Literal` of their canonical name. The same
class is the validated configuration and the implementation, so a catalog item's arguments are
declared once, as fields with Keras's names and defaults.

Names are matched as Keras users write them: `glorot_uniform`, `GlorotUniform` and `glorotuniform`
are one key, and aliases (`mse`, `swish`) are registered next to the canonical name.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticCustomError


def _key(name: str) -> str:
    return name.replace("_", "").lower()


class Item(BaseModel):
    """Base of every catalog entry: frozen, and unknown arguments are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, defer_build=True)


class Registry:
    """A named catalog of `Item` classes, keyed by canonical name, with aliases."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[Item]] = {}
        self._keys: dict[str, str] = {}
        self._aliases: dict[str, list[str]] = {}
        self._validator: TypeAdapter | None = None

    def register(self, name: str, *aliases: str):
        """Class decorator: register an Item whose `type` field is `Literal[name]`."""

        def decorate(cls: type[Item]) -> type[Item]:
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._classes[name] = cls
            self._aliases[name] = list(aliases)
            for alias in (name, *aliases):
                self._keys[_key(alias)] = name
            return cls

        return decorate

    def names(self) -> list[str]:
        return list(self._classes)

    def spellings(self) -> list[str]:
        """Every accepted name: canonical names and aliases."""
        return [n for name in self._classes for n in (name, *self._aliases[name])]

    def canonical(self, name: str) -> str:
        """The canonical name for `name`, or a ValueError with a did-you-mean hint."""
        found = self._keys.get(_key(name))
        if found is None:
            raise ValueError(self.unknown_message(name))
        return found

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.spellings(), n=1, cutoff=0.6)
        if not close:
            close = difflib.get_close_matches(_key(name), list(self._keys), n=1, cutoff=0.6)
            close = [self._keys[close[0]]] if close else []
        hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(self.names())})"
        return f"unknown {self.kind} {name!r}{hint}"

    def get(self, name: str) -> type[Item]:
        return self._classes[self.canonical(name)]

    def create(self, name_or_config: str | dict[str, Any]) -> Item:
        """Build an item from a name or a `{type: ..., **args}` mapping (for Python callers)."""
        return self.validator().validate_python(name_or_config)

    def union(self):
        """The discriminated union of every registered class, keyed on `type`."""
        classes = tuple(self._classes.values())
        if len(classes) == 1:
            return classes[0]
        return Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007

    def normalize(self, value: Any, none: str | None = None) -> Any:
        """Turn `"name"` into `{"type": canonical}` and canonicalise a mapping's `type`; `None`
        stands for `none` where the catalog has such a name (Keras's `activation=None`)."""
        if value is None and none is not None:
            return {"type": none}
        if isinstance(value, str):
            return {"type": self._checked(value)}
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            return {**value, "type": self._checked(value["type"])}
        if isinstance(value, dict) and "type" not in value:
            raise PydanticCustomError(
                "missing_type", "a {kind} mapping needs a 'type'", {"kind": self.kind}
            )
        return value

    def _checked(self, name: str) -> str:
        try:
            return self.canonical(name)
        except ValueError as err:
            unknown = PydanticCustomError("unknown_name", str(err))
        try:
            float(name)  # `learning_rate: "1e-3"`: a number the user quoted
        except ValueError:
            raise unknown from None
        raise PydanticCustomError(
            "unknown_name",
            "{name} is a string (quoted), not a number; write the number without quotes",
            {"name": repr(name)},
        ) from None

    def ref(self, none: str | None = None):
        """The field type for a catalog reference: a name, or a mapping with `type` and arguments;
        with `none`, a YAML `null` means that name."""
        union = self.union()
        names = Literal[tuple(self.spellings())]
        given = Union[names, union, None] if none else Union[names, union]  # noqa: UP007
        return Annotated[
            union,
            BeforeValidator(
                self.normalize if none is None else lambda value: self.normalize(value, none),
                json_schema_input_type=given,
            ),
        ]

    def validator(self) -> TypeAdapter:
        if self._validator is None:
            self._validator = TypeAdapter(self.ref())
        return self._validator
