"""One lookup mechanism for every catalog: layers, activations, initializers, losses, ...

Entries are pydantic models whose `type` field is a `Literal` of their canonical name. The same
class is the validated configuration and the implementation, so a catalog item's arguments are
declared once, as fields with Keras's names and defaults.

Names are matched as Keras users write them: `glorot_uniform`, `GlorotUniform` and `glorotuniform`
are one key, and aliases (`mse`, `swish`) are registered next to the canonical name.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, TypeAdapter
from pydantic_core import PydanticCustomError, core_schema


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
        self._one: dict[str, TypeAdapter] = {}
        self._every: TypeAdapter | None = None
        # With `lazily`: the module of each canonical name (by key), each name's place in the
        # catalog's order, and the modules not imported yet.
        self._where: dict[str, str] = {}
        self._rank: dict[str, int] = {}
        self._unimported: list[str] = []

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

    def lazily(self, modules: dict[str, tuple[str, ...]]) -> None:
        """Classes that register themselves when their module is imported: `modules` maps each
        module to its canonical names. A module is imported when one of its names is first
        looked up, and every one when the whole catalog is listed, in this order."""
        self._where = {_key(name): module for module, names in modules.items() for name in names}
        self._rank = {name: i for i, name in enumerate(n for names in modules.values() for n in names)}
        self._unimported = list(modules)

    def _import(self, module: str | None = None) -> None:
        """Import `module`, or every module not imported yet."""
        if module is None:
            while self._unimported:
                importlib.import_module(self._unimported.pop(0))
        elif module in self._unimported:
            self._unimported.remove(module)
            importlib.import_module(module)

    def names(self) -> list[str]:
        self._import()
        return sorted(self._classes, key=lambda name: self._rank.get(name, len(self._rank)))

    def spellings(self) -> list[str]:
        """Every accepted name: canonical names and aliases."""
        return [n for name in self.names() for n in (name, *self._aliases[name])]

    def canonical(self, name: str) -> str:
        """The canonical name for `name`, or a ValueError with a did-you-mean hint."""
        found = self._keys.get(_key(name))
        if found is None and self._unimported:
            self._import(self._where.get(_key(name)))  # its module; every one for an alias
            found = self._keys.get(_key(name))
        if found is None and self._unimported:
            self._import()  # a misspelling to hint at, or a name in another module than said
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
        classes = tuple(self._classes[name] for name in self.names())
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
        with `none`, a YAML `null` means that name.

        A reference is validated by the class it names only: building a model that holds one
        builds none of the catalog's classes, and validating builds the classes a spec uses,
        not all of them (most of the start-up of `validate` and `summary`)."""
        normalize = self.normalize if none is None else lambda value: self.normalize(value, none)
        return Annotated[
            Any,
            PlainValidator(lambda value: self._validate(normalize(value))),
            SchemaOnly(lambda: self._given(none)),
        ]

    def union_ref(self):
        """`ref()` validated by the union of every class, for a field of one of the catalog's own
        classes (TimeDistributed's `layer`): a schema built only when asked for cannot hold itself."""
        return Annotated[
            self.union(), BeforeValidator(self.normalize, json_schema_input_type=self._given())
        ]

    def _given(self, none: str | None = None):
        """What a reference accepts, for its JSON Schema: a name, or a mapping of a class."""
        names = Literal[tuple(self.spellings())]
        return Union[names, self.union(), None] if none else Union[names, self.union()]  # noqa: UP007

    def _validate(self, value: Any) -> Any:
        tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        if isinstance(tag, str) and tag in self._classes:
            return self._one_of(tag).validate_python(value)
        # Not a mapping of a known type: the union of every class says what is wrong.
        if self._every is None:
            self._every = TypeAdapter(self.union())
        return self._every.validate_python(value)

    def _one_of(self, name: str) -> TypeAdapter:
        """A validator of the class `name` alone that reports errors at the same places as the
        union of every class does (`optimizer.adam.learning_rate`)."""
        if name not in self._one:
            cls = self._classes[name]
            # Built on its own first (the adapter reuses its schema): a reference's field type is
            # Any, so a model holding one is dumped through the referenced class's serializer.
            cls.model_rebuild()
            self._one[name] = TypeAdapter(Annotated[Any, _Tagged(name, cls)])
        return self._one[name]

    def validator(self) -> TypeAdapter:
        if self._validator is None:
            self._validator = TypeAdapter(self.ref())
        return self._validator


class _Tagged:
    """The core schema of a union tagged on `type` with one class: pydantic's errors for it name
    the tag, as they do for the union of every class."""

    def __init__(self, name: str, cls: type[Item]):
        self.name, self.cls = name, cls

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.tagged_union_schema({self.name: handler(self.cls)}, discriminator="type")


class SchemaOnly:
    """An annotation that gives a field the JSON Schema of the type `given()` returns, made only
    when a schema is asked for (`json_schema_input_type` would build that type with the model)."""

    def __init__(self, given: Callable[[], Any]):
        self.given = given

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> Any:
        return handler(TypeAdapter(self.given()).core_schema)
