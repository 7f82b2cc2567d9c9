"""Which spec a run resumes with: the resolved specs are compared, and only the fields in
RESUMABLE may differ (more epochs to extend training; the name and description)."""

from __future__ import annotations

from typing import Any

import yaml

# Spec fields that may differ between a run and its resumption.
RESUMABLE = {("fit", "epochs"), ("name",), ("description",)}


def spec_differences(before: Any, now: Any) -> list[tuple[tuple, str]]:
    """(path, "fit.epochs: 5 in the run, 8 now") for every field that differs, except
    RESUMABLE ones; layers are named by their `name` when they have one."""
    found: list[tuple[tuple, str]] = []
    _compare(before, now, (), (), found)
    return found


def _compare(a: Any, b: Any, path: tuple, label: tuple, found: list) -> None:
    if path in RESUMABLE:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            if (*path, key) in RESUMABLE:
                continue
            if key not in a:
                found.append(
                    ((*path, key), f"{_dotted((*label, key))}: not in the run, {_show(b[key])} now")
                )
            elif key not in b:
                found.append(
                    (path, f"{_dotted((*label, key))}: {_show(a[key])} in the run, not given now")
                )
            else:
                _compare(a[key], b[key], (*path, key), (*label, key), found)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            name = x.get("name") if isinstance(x, dict) and path == ("layers",) else None
            same = isinstance(name, str) and isinstance(y, dict) and y.get("name") == name
            part = name if same else i
            _compare(x, y, (*path, i), (*label, part), found)
    elif not (a == b and (type(a) is type(b) or _same_number(a, b))):
        found.append((path, f"{_dotted(label) or 'spec'}: {_show(a)} in the run, {_show(b)} now"))


def _same_number(a, b) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _dotted(label: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in label).replace(
        ".[", "["
    )


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."
