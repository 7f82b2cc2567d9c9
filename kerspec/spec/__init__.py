"""Spec files → validated `Spec` objects, with every problem reported at its line and column."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kerspec.activations import ACTIVATIONS
from kerspec.constraints import CONSTRAINTS
from kerspec.errors import KerspecError, SpecError
from kerspec.initializers import INITIALIZERS
from kerspec.layers import LAYERS
from kerspec.regularizers import REGULARIZERS
from kerspec.spec.overrides import apply_overrides
from kerspec.spec.schema import Compile, Data, Fit, Shared, Spec, json_schema
from kerspec.spec.source import Source, parse_yaml, read_spec_text
from kerspec.training.callbacks import CALLBACKS
from kerspec.training.losses import LOSSES
from kerspec.training.metrics import METRICS
from kerspec.training.optimizers import OPTIMIZERS
from kerspec.training.schedules import SCHEDULES

__all__ = ["LoadedSpec", "Spec", "json_schema", "load_spec", "located_problems", "parse_spec"]


class LoadedSpec:
    """A validated spec with where it came from, so later stages can point at its lines.

    `notes` are things said about the spec that are not problems (a Keras argument accepted
    and ignored)."""

    def __init__(self, spec: Spec, source: Source, path: Path | None, raw: Any, notes: list[KerspecError] = ()):
        self.spec = spec
        self.source = source
        self.path = path
        self.raw = raw
        self.notes = list(notes)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def name(self) -> str:
        return self.spec.name or (self.path.stem if self.path else "model")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> LoadedSpec:
    path = Path(path)
    text = read_spec_text(path, str(path))
    return parse_spec(text, str(path), overrides, path=path)


def parse_spec(
    text: str, display: str = "<spec>", overrides: list[str] | None = None, path: Path | None = None
) -> LoadedSpec:
    data, source = parse_yaml(text, display)
    if data is None:
        raise SpecError([KerspecError("the spec is empty", display)])
    if not isinstance(data, dict):
        raise SpecError(
            [KerspecError("a spec must be a mapping with at least 'layers'", source.where(()))]
        )
    data, source.overrides = apply_overrides(data, overrides or [])
    checked, notes = _ignored(data, source)
    try:
        spec = Spec.model_validate(checked)
    except ValidationError as err:
        raise SpecError(located_problems(err, data, source)) from None
    quoted = list(_quoted_numbers(data, spec, ()))
    if quoted:
        raise SpecError([_quoted_problem(data, source, at, text) for at, text in quoted])
    return LoadedSpec(spec, source, path, data, notes)


# Keras arguments kerspec accepts and ignores, with why: (section, key) -> note.
IGNORED = {
    ("fit", "verbose"): "fit.verbose is accepted and ignored: kerspec always shows progress on"
    " stderr (2>/dev/null hides it; --json keeps stdout for the result)",
}
# Keras spellings kerspec knows under another name or place: key -> what to write instead.
KERAS_SPELLINGS = {
    "lr": "did you mean 'learning_rate'? (Keras's old name for it)",
    "validation_data": "put validation data in the spec's data.validation (a file, or a mapping"
    " with its path), or use fit.validation_split",
    "nb_epoch": "did you mean 'epochs'? (Keras 1's name for it)",
    "output_dim": "did you mean 'units'? (Keras 1's name for it)",
}


def _ignored(data: dict, source: Source) -> tuple[dict, list[KerspecError]]:
    """The spec without the Keras arguments kerspec ignores, and a note for each one given."""
    notes = []
    for (section, key), note in IGNORED.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            notes.append(KerspecError(f"note: {note}", source.where((section, key), at_key=True)))
            data = {**data, section: {k: v for k, v in data[section].items() if k != key}}
    return data, notes


def _quoted_problem(data: dict, source: Source, at: tuple, text: str) -> KerspecError:
    label, inner = _label(data, at)
    message = f"{_dotted(inner)}: {text!r} is a string (quoted), not a number; write it without quotes"
    return KerspecError(f"{label}: {message}" if label else message, source.where(at))


def _quoted_numbers(raw: Any, value: Any, path: tuple):
    """(path, text) of every string in the spec that validated into a number.

    Pydantic turns `"0.5"` into 0.5 where a number is expected; a quoted number is the user
    telling YAML "this is text", so kerspec says so rather than guess.
    """
    if isinstance(raw, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield path, raw
    elif isinstance(raw, dict) and isinstance(value, BaseModel):
        fields = {f.alias or n: n for n, f in type(value).model_fields.items()}
        fields.update({n: n for n in type(value).model_fields})
        for key, item in raw.items():
            if key in fields:
                yield from _quoted_numbers(item, getattr(value, fields[key]), (*path, key))
    elif isinstance(raw, dict) and isinstance(value, dict):
        for (key, item), inner in zip(raw.items(), value.values()):
            yield from _quoted_numbers(item, inner, (*path, key))
    elif isinstance(raw, list) and isinstance(value, list | tuple) and len(raw) == len(value):
        for i, (item, inner) in enumerate(zip(raw, value)):
            yield from _quoted_numbers(item, inner, (*path, i))


def located_problems(
    err: ValidationError, data: Any, source: Source, sections: dict[tuple, type[BaseModel]] | None = None
) -> list[KerspecError]:
    """pydantic's errors for `data` at their FILE:LINE:COL, one per value: a value that fits no
    branch of a union (`kernel_size: -2` is neither a positive int nor a list) gets pydantic's
    error for each branch; the first says it. `sections` (path -> model) name the fields that a
    did-you-mean picks from; the spec's by default."""
    seen, kept = set(), []
    errors = err.errors()
    # `input_shape: (4,)` in a flow mapping reads as '(4' and a key ')': one mistake, one message.
    tupled = any(_tupled(e) for e in errors)
    for error in errors:
        if tupled and error["type"] == "extra_forbidden" and str(error["loc"][-1]).strip(" ,0123456789") == ")":
            continue
        if error["type"] in ("missing", "extra_forbidden"):
            place = error["loc"]
        else:
            place = _walk(data, error["loc"])[0]
        if place not in seen:
            seen.add(place)
            kept.append(_problem(error, data, source, sections or SECTIONS))
    return kept


def _walk(data: Any, loc: tuple) -> tuple[tuple, list]:
    """Split a pydantic `loc` into the path through the data and the union tags pydantic added."""
    path, tags, node = [], [], data
    for segment in loc:
        if isinstance(node, dict) and segment in node:  # noqa: SIM114 (mapping, then list)
            path.append(segment)
            node = node[segment]
        elif isinstance(node, list) and isinstance(segment, int) and 0 <= segment < len(node):
            path.append(segment)
            node = node[segment]
        elif isinstance(node, dict | list):
            tags.append(segment)
        else:
            break
    return tuple(path), tags


def _label(data: dict, path: tuple) -> tuple[str, tuple]:
    """`Dense 'hidden'` for a problem inside a layer entry, and the path inside that entry."""
    if len(path) >= 2 and path[0] == "layers" and isinstance(path[1], int):
        entry = data["layers"][path[1]]
        if isinstance(entry, dict):
            kind = entry.get("type")
            kind = "shared layer" if "share" in entry else kind if isinstance(kind, str) else "layer"
            name = entry.get("name")
            label = f"{kind} {name!r}" if isinstance(name, str) else f"{kind} (layers[{path[1]}])"
        else:
            label = f"layers[{path[1]}]"
        return label, path[2:]
    return "", path


REGISTRIES = (
    LAYERS, ACTIVATIONS, INITIALIZERS, REGULARIZERS, CONSTRAINTS, LOSSES, METRICS, OPTIMIZERS,
    CALLBACKS, SCHEDULES,
)
SECTIONS: dict[tuple, type[BaseModel]] = {(): Spec, ("compile",): Compile, ("fit",): Fit, ("data",): Data}


def _fields_of(tags: list, parent: tuple, sections: dict[tuple, type[BaseModel]], data: Any = None) -> list[str]:
    """Argument names of the model that rejected a key, for a did-you-mean hint."""
    if len(parent) == 2 and parent[0] == "layers" and isinstance(data, dict):
        entry = data["layers"][parent[1]]
        tags = [*(["share"] if "share" in entry else [entry.get("type")]), *tags]
    for tag in reversed(tags):
        if tag == "share":
            return _names(Shared)
        for registry in REGISTRIES:
            if isinstance(tag, str) and tag in registry.names():
                return _names(registry.get(tag))
    model = sections.get(parent)
    return _names(model) if model else []


def _names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _problem(error: dict, data: Any, source: Source, sections: dict) -> KerspecError:
    kind, loc = error["type"], error["loc"]
    if kind in ("missing", "extra_forbidden"):
        path, tags = _walk(data, loc[:-1])
        key = loc[-1]
        where = source.where((*path, key), at_key=True) if kind == "extra_forbidden" else source.where(path)
        label, inner = _label(data, path)
        if kind == "missing":
            message = f"missing required argument {key!r}"
        else:
            close = difflib.get_close_matches(str(key), _fields_of(tags, path, sections, data), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if key in KERAS_SPELLINGS:
                hint = f"; {KERAS_SPELLINGS[key]}"
            message = f"unknown argument {key!r}{hint}"
        if inner:
            message = f"{_dotted(inner)}: {message}"
    else:
        path, _ = _walk(data, loc)
        where = source.where(path)
        label, inner = _label(data, path)
        message = error["msg"]
        if kind.startswith(("union_tag", "layer_", "unknown_name", "missing_type", "distribution")):
            pass
        elif _tupled(error):
            items = error["input"].strip().strip("()").strip().rstrip(",")
            message = f"YAML lists are written in brackets, [{items}], not in parentheses (read as text)"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        else:
            message = message.replace("Input should", "should", 1)
            message = f"{message} (received {_short(error.get('input'))})"
        if inner:
            message = f"{_dotted(inner)}: {message}"
    return KerspecError(f"{label}: {message}" if label else message, where)


def _tupled(error: dict) -> bool:
    """A list or number expected, and text in parentheses given: `(4,)` written for `[4]`."""
    value = error.get("input")
    return (
        error["type"] in ("list_type", "tuple_type", "int_parsing", "int_type", "float_parsing")
        and isinstance(value, str)
        and value.lstrip().startswith("(")
    )


def _dotted(path: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
