"""Command-line changes to a spec: `--set KEY=VALUE`, and `--data`-style data entries.

`--set` changes any spec field by dotted path before validation. Layers are addressed by name or
index (`layers.hidden.units=32`, `layers.0.rate=0.1`); values are YAML scalars or flow
collections, parsed with the safe loader (`[1, 2]`, `{type: l2}`, `null`).

`--data P` (and `--validation P`) replaces a data entry of the spec and keeps that entry's
options (a CSV's `target`, `features`, `one_hot`; an .npz file's `x`, `y`), so the same model
reads another file of the same kind. A YAML mapping gives them instead:
`--data '{path: new.csv, target: label}'`; keys it leaves out are still inherited.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import PurePath
from typing import Any

from kerspec.errors import KerspecError, SpecError, Where
from kerspec.spec.source import parse_yaml


def apply_overrides(data: Any, sets: list[str]) -> tuple[Any, dict[tuple, str]]:
    """Return a changed copy of `data` and, per changed path, the option text that changed it."""
    if not sets:
        return data, {}
    data = copy.deepcopy(data)
    applied: dict[tuple, str] = {}
    problems = []
    for text in sets:
        try:
            path = _apply(data, text)
        except KerspecError as err:
            problems.append(err)
        else:
            applied[path] = text
    if problems:
        raise SpecError(problems)
    return data, applied


def _apply(data: Any, text: str) -> tuple:
    where = Where(f"--set {text}")
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise KerspecError("expected KEY=VALUE, e.g. fit.epochs=3", where)
    try:
        # The same guarded loader as spec files: an option is as untrusted as a file.
        value, _ = parse_yaml(raw, "value")
    except SpecError as err:
        reason = "; ".join(p.message for p in err.problems)
        raise KerspecError(f"cannot read the value {raw!r} as YAML ({reason})", where) from None
    if not isinstance(data, dict):
        raise KerspecError("the spec is not a mapping", where)
    segments = key.strip().split(".")
    node: Any = data
    path: list = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if isinstance(node, list):
            index = _list_index(node, segment, where, ".".join(segments[:i]))
            path.append(index)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            path.append(segment)
            if last:
                node[segment] = value
            else:
                node = node.setdefault(segment, {}) if node.get(segment) is None else node[segment]
        else:
            raise KerspecError(f"{'.'.join(segments[:i])} is a value, not a mapping or list", where)
    return tuple(path)


def _list_index(items: list, segment: str, where: Where, parent: str) -> int:
    if segment.lstrip("-").isdigit():
        index = int(segment)
        if not -len(items) <= index < len(items):
            raise KerspecError(f"{parent} has {len(items)} entries; no index {index}", where)
        return index % len(items)
    names = [item.get("name") for item in items if isinstance(item, dict)]
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == segment:
            return index
    close = difflib.get_close_matches(segment, [n for n in names if isinstance(n, str)], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise KerspecError(f"no entry named {segment!r} in {parent}{hint}", where)


# The options of a data entry that each kind of file can take.
_DATA_OPTIONS = {".csv": ("target", "features", "one_hot"), ".npz": ("x", "y", "one_hot")}


def data_override(given: str, option: str, replaced: Any) -> str | dict[str, Any]:
    """The data entry for `--data given` (or `--validation`), replacing the spec's `replaced`.

    `replaced` is the spec's validated entry (a PathData, RandomData or None). The result is a
    path, or a mapping the data loader validates.
    """
    if not given.lstrip().startswith("{"):
        entry: dict[str, Any] = {"path": given}
    else:
        try:
            entry, _ = parse_yaml(given, option)
        except SpecError as err:
            reason = "; ".join(p.message for p in err.problems)
            raise KerspecError(f"cannot read {given!r} as a YAML mapping ({reason})", option) from None
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise KerspecError(
                f"expected a file, or a mapping with its path: '{{path: FILE.csv, target: COLUMN}}'"
                f" (received {given!r})", option)
    options = _DATA_OPTIONS.get(PurePath(entry["path"]).suffix.lower(), ())
    fields = getattr(replaced, "model_fields_set", set())
    inherited = {key: getattr(replaced, key) for key in options if key in fields}
    if not inherited and len(entry) == 1:
        return entry["path"]
    return {"path": entry["path"], **inherited, **entry}
