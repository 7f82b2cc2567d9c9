"""A `SpecDiff` printed: plain text for the terminal, Markdown for a pull request."""

from __future__ import annotations

import json
import re
from typing import Any

from kerspec.diff.result import Change, SpecDiff, Weights


def _fmt(value: Any) -> str:
    """A value in YAML's flow style, as a spec would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = value and not any(c.isspace() or c in ",:{}[]#'\"" for c in value)
        return value if plain else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _shapes(shapes: list[str] | None) -> str:
    if shapes is None:
        return "absent"
    return shapes[0] if len(shapes) == 1 else "[" + ", ".join(shapes) + "]"


def _change_value(change: Change, value: Any) -> str:
    if change.path == "output shapes":
        return _shapes(value)
    return f"{value:,}" if change.path == "params" else _fmt(value)


def _arguments(entry: dict) -> str:
    if "share" in entry:
        return f"sharing {entry['share']}"
    return ", ".join(f"{k}: {_fmt(v)}" for k, v in entry["arguments"].items())


def _refs(refs: list[str]) -> str:
    return refs[0] if len(refs) == 1 else _fmt(refs)


def _sections(diff: SpecDiff) -> list[tuple[str, list[Change]]]:
    return [("compile", diff.compile), ("fit", diff.fit), ("data", diff.data)]


def _params_line(diff: SpecDiff) -> str:
    old, new = diff.params["old"], diff.params["new"]
    parts = [f"{old['total']:,} -> {new['total']:,}"]
    for key, label in (("trainable", "trainable"), ("non_trainable", "non-trainable")):
        parts.append(f"{label} {old[key]:,} -> {new[key]:,}")
    return f"{parts[0]} ({', '.join(parts[1:])})"


def _weights_lines(weights: Weights, name=str) -> list[str]:
    if weights.loads:
        return ["NEW can load OLD's weights files"]
    lines = ["NEW cannot load OLD's weights files"]
    if weights.needed:
        lines.append(
            "need new weights: "
            + "; ".join(f"{name(w['layer'])} ({w['why']})" for w in weights.needed)
        )
    if weights.renamed:
        lines.append(
            "fit, but stored under the old name: "
            + ", ".join(f"{name(w['layer'])} (was {name(w['old'])})" for w in weights.renamed)
        )
    if weights.unused:
        lines.append("OLD's weights NEW has no layer for: " + ", ".join(map(name, weights.unused)))
    return lines


def render_text(diff: SpecDiff) -> str:
    lines = [f"--- {diff.old}", f"+++ {diff.new}"]
    if diff.same:
        total = diff.params["new"]["total"]
        lines.append(f"the same model ({total:,} parameters): only formatting or comments differ")
        return "\n".join(lines) + "\n"
    if diff.spec:
        lines += ["spec", *(f"  {c.path}: {_fmt(c.old)} -> {_fmt(c.new)}" for c in diff.spec)]
    layers = [f"  + {a['name']} ({a['type']}) {_arguments(a)}".rstrip() for a in diff.added]
    layers += [f"  - {r['name']} ({r['type']})" for r in diff.removed]
    layers += [f"  renamed {r.old} -> {r.new} ({r.type})" for r in diff.renamed]
    for layer in diff.changed:
        layers.append(f"  ~ {layer.name} ({layer.type})")
        layers += [
            f"      {c.path}: {_change_value(c, c.old)} -> {_change_value(c, c.new)}"
            for c in layer.changes
        ]
    if layers:
        lines += ["layers", *layers]
    if diff.links:
        lines += [
            "links",
            *(f"  {k.layer}: from {_refs(k.old)} -> from {_refs(k.new)}" for k in diff.links),
        ]
    for change in (diff.inputs, diff.outputs):
        if change:
            lines.append(f"{change.path}: {_fmt(change.old)} -> {_fmt(change.new)}")
    for title, changes in _sections(diff):
        if changes:
            lines += [title, *(f"  {c.path}: {_fmt(c.old)} -> {_fmt(c.new)}" for c in changes)]
    lines.append(f"params: {_params_line(diff)}")
    lines.append("output shapes")
    lines += [
        f"  {o['output']}: {o['old'] or 'absent'} -> {o['new'] or 'absent'}"
        for o in diff.output_shapes
    ]
    weights = _weights_lines(diff.weights)
    lines += [f"weights: {weights[0]}", *(f"  {line}" for line in weights[1:])]
    return "\n".join(lines) + "\n"


def _code(text: Any) -> str:
    """`text` as a Markdown code span that nothing inside it can close or break."""
    text = " ".join(str(text).split())
    run = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: Any) -> str:
    """A code span in a table cell, where a `|` would end the cell even inside the span."""
    return _code(text).replace("|", "\\|")


def render_markdown(diff: SpecDiff) -> str:
    lines = [f"### kerspec diff {_code(diff.old)} → {_code(diff.new)}", ""]
    if diff.same:
        total = diff.params["new"]["total"]
        lines.append(f"The same model ({total:,} parameters): only formatting or comments differ.")
        return "\n".join(lines) + "\n"
    layers = [
        f"- added {_code(a['name'])} ({a['type']})"
        + (f": {_code(_arguments(a))}" if _arguments(a) else "")
        for a in diff.added
    ]
    layers += [f"- removed {_code(r['name'])} ({r['type']})" for r in diff.removed]
    layers += [f"- renamed {_code(r.old)} → {_code(r.new)} ({r.type})" for r in diff.renamed]
    for layer in diff.changed:
        changes = ", ".join(
            f"{c.path} {_code(_change_value(c, c.old))} → {_code(_change_value(c, c.new))}"
            for c in layer.changes
        )
        layers.append(f"- changed {_code(layer.name)} ({layer.type}): {changes}")
    layers += [
        f"- {_code(k.layer)} now from {_code(_refs(k.new))} (was {_code(_refs(k.old))})"
        for k in diff.links
    ]
    if layers:
        lines += ["**Layers**", "", *layers, ""]
    settings = [*diff.spec, *(c for c in (diff.inputs, diff.outputs) if c)]
    settings += [
        Change(f"{title}.{c.path}", c.old, c.new)
        for title, changes in _sections(diff)
        for c in changes
    ]
    if settings:
        lines += ["**Settings**", ""]
        lines += [f"- {c.path}: {_code(_fmt(c.old))} → {_code(_fmt(c.new))}" for c in settings]
        lines.append("")
    old, new = diff.params["old"], diff.params["new"]
    lines += ["| | OLD | NEW |", "| --- | ---: | ---: |"]
    lines += [f"| parameters | {old['total']:,} | {new['total']:,} |"]
    lines += [f"| trainable | {old['trainable']:,} | {new['trainable']:,} |"]
    for o in diff.output_shapes:
        lines.append(
            f"| output {_cell(o['output'])} | {_cell(o['old'] or 'absent')} | {_cell(o['new'] or 'absent')} |"
        )
    weights = _weights_lines(diff.weights, name=_code)
    lines += ["", f"**Weights**: {weights[0]}."]
    lines += [f"- {line}" for line in weights[1:]]
    return "\n".join(lines) + "\n"
