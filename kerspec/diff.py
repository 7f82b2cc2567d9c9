"""What changed in the model between two specs: `kerspec diff OLD NEW`.

Both specs are loaded and compiled as `kerspec summary` does, so the comparison is of what the
model is, not of the text: defaults are resolved (`units: 8` written out equals the default left
out), parameter counts, output shapes and weight shapes come from the compiled graphs. The result
is data first (`SpecDiff`, also the `--json` form); `render_text` and `render_markdown` print it.

A spec is a file path, or `REV:path` read from git (`HEAD~1:specs/model.yaml`), as `git show`
names a file in a revision.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from kerspec import api
from kerspec.errors import KerspecError, SpecError, Where
from kerspec.layers.base import format_shape
from kerspec.spec import parse_spec
from kerspec.spec.source import MAX_SPEC_BYTES, read_spec_text
from kerspec.summary import summary_rows

# Arguments that say where a layer sits, not what it is: compared as names and links instead.
PLACE_ARGS = ("name", "from", "input_shape", "type")
GIT_TIMEOUT_SECONDS = 60


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


# -- reading the two specs ---------------------------------------------------------------------


def load_side(text: str) -> api.Model:
    """A spec path, or `REV:path` when no file has that name and the text has a colon."""
    path = Path(text)
    if ":" in text and not os.path.lexists(text):  # False, not an error, for a name too long
        rev, _, inside = text.partition(":")
        spec_text = read_revision(text, rev, inside)
        return api.Model(parse_spec(spec_text, text, path=Path(inside)), seed=0)
    return api.Model(parse_spec(read_spec_text(path, text), text, path=path), seed=0)


def _git_error(text: str, message: str) -> SpecError:
    return SpecError([KerspecError(message, Where(text))])


def read_revision(text: str, rev: str, path: str) -> str:
    """The file `path` at revision `rev`, through git with an argument list, never a shell.

    The names go to `git cat-file --batch-check` on its standard input, where nothing can be
    taken for an option; the blob is then read by the object id git answered with.
    """
    if rev.startswith("-"):
        raise _git_error(
            text, f"{rev!r} is not a revision (REV:path, e.g. HEAD~1:specs/model.yaml)"
        )
    if not path:
        raise _git_error(text, "REV:path names no file after the colon")
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise _git_error(repr(text), "REV:path holds a control character")
    queries = ([f"{rev}^{{tree}}"] if rev else []) + [text]
    answers = (
        _git(text, ["cat-file", "--batch-check"], "".join(q + "\n" for q in queries))
        .decode("utf-8", "replace")
        .splitlines()
    )
    if len(answers) != len(queries):
        raise _git_error(text, "git gave an unexpected answer")
    if rev and answers[0].endswith(" missing"):
        raise _git_error(text, f"no revision {rev!r} in this git repository")
    parts = answers[-1].split()
    if answers[-1].endswith((" missing", " ambiguous")) or len(parts) != 3:
        where = f"revision {rev!r}" if rev else "the git index"
        raise _git_error(
            text,
            f"{path!r} is not in {where} (paths are from the top of the repository; ./ for this folder)",
        )
    object_id, kind, size = parts
    if kind != "blob":
        raise _git_error(text, f"is a {'folder' if kind == 'tree' else kind}, not a spec file")
    if int(size) > MAX_SPEC_BYTES:
        raise _git_error(text, f"spec is {int(size):,} bytes; the limit is {MAX_SPEC_BYTES:,}")
    raw = _git(text, ["cat-file", "blob", object_id], "")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _git_error(text, f"not UTF-8 text (byte 0x{raw[err.start]:02x})") from None


def _git(text: str, args: list[str], stdin: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args],
            input=stdin.encode("utf-8"),
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise _git_error(text, "reading REV:path needs git, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise _git_error(text, f"git did not answer within {GIT_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = lines[0].removeprefix("fatal: ") if lines else f"exit status {done.returncode}"
        raise _git_error(text, f"git cannot read it: {reason}")
    return done.stdout


# -- the comparison ----------------------------------------------------------------------------


@dataclass
class Change:
    """One value that differs: `path` is dotted (`optimizer.learning_rate`)."""

    path: str
    old: Any
    new: Any


@dataclass
class LayerChange:
    name: str
    type: str
    changes: list[Change]


@dataclass
class Rename:
    old: str
    new: str
    type: str


@dataclass
class Link:
    layer: str
    old: list[str]
    new: list[str]


@dataclass
class Weights:
    """Whether NEW loads a weights file written by OLD (every name and shape must match)."""

    loads: bool
    # Layers of NEW whose weights OLD's file does not hold: (layer, why).
    needed: list[dict] = field(default_factory=list)
    # Layers whose weights fit but are stored under their old name in OLD's files.
    renamed: list[dict] = field(default_factory=list)
    # Layers of OLD whose weights NEW has no place for (loading refuses the extra keys).
    unused: list[str] = field(default_factory=list)


@dataclass
class SpecDiff:
    old: str
    new: str
    spec: list[Change]
    added: list[dict]
    removed: list[dict]
    renamed: list[Rename]
    changed: list[LayerChange]
    links: list[Link]
    inputs: Change | None
    outputs: Change | None
    compile: list[Change]
    fit: list[Change]
    data: list[Change]
    params: dict[str, dict[str, int]]
    output_shapes: list[dict]
    weights: Weights

    @property
    def same(self) -> bool:
        """The same model: only formatting, comments or spellings of the same values differ."""
        return not any(
            (
                self.spec,
                self.added,
                self.removed,
                self.renamed,
                self.links,
                self.inputs,
                self.outputs,
                self.compile,
                self.fit,
                self.data,
            )
        ) and not any(c.changes for c in self.changed)

    def to_json(self) -> dict:
        return {"same": self.same, **asdict(self)}


def diff_specs(old: str, new: str) -> SpecDiff:
    """Load, validate and compile both specs (every problem of both is reported), then compare."""
    models, problems = [], []
    for text in (old, new):
        try:
            models.append(load_side(text))
        except SpecError as err:  # GraphError too: both are Problems of one spec
            problems.extend(err.problems)
    if problems:
        raise SpecError(problems)
    return compare(old, new, *models)


def compare(old_name: str, new_name: str, old: api.Model, new: api.Model) -> SpecDiff:
    before, after = _nodes(old), _nodes(new)
    renames = _renames(before, after)
    to_new = {name: name for name in before if name in after} | {r.old: r.new for r in renames}
    changed, links = [], []
    for name, was in before.items():
        if name not in to_new:
            continue
        now = after[to_new[name]]
        changes = _layer_changes(was, now, to_new)
        if changes:
            changed.append(LayerChange(now["name"], now["type"], changes))
        old_from = [_rename_ref(ref, to_new) for ref in was["from"]]
        if old_from != now["from"]:
            links.append(Link(now["name"], was["from"], now["from"]))
    matched = set(to_new.values())
    spec_fields = ("name", "description", "seed", "dtype")
    return SpecDiff(
        old=old_name,
        new=new_name,
        spec=_changes(
            {k: getattr(old.spec, k) for k in spec_fields},
            {k: getattr(new.spec, k) for k in spec_fields},
        ),
        added=[_added(node) for name, node in after.items() if name not in matched],
        removed=[
            {"name": n["name"], "type": n["type"]}
            for name, n in before.items()
            if name not in to_new
        ],
        renamed=renames,
        changed=changed,
        links=links,
        inputs=_list_change("inputs", old.input_names, new.input_names),
        outputs=_list_change("outputs", old.output_names, new.output_names),
        compile=_changes(old.spec.compile, new.spec.compile),
        fit=_changes(old.spec.fit, new.spec.fit),
        data=_changes(old.spec.data, new.spec.data),
        params={"old": _params(old), "new": _params(new)},
        output_shapes=_output_shapes(old, new),
        weights=_weights(before, after, to_new),
    )


def _nodes(model: api.Model) -> dict[str, dict]:
    """Each node of the compiled graph as plain data, in execution order."""
    graph = model.graph
    rows = {row["name"]: row for row in summary_rows(graph)}
    nodes = {}
    for position, node in enumerate(graph.nodes):
        shared = node.owner != node.name
        nodes[node.name] = {
            "name": node.name,
            "type": node.type,
            "share": node.owner if shared else None,
            "layer": node.layer,
            "from": [str(ref) for ref in node.inputs],
            "position": position,
            "output_shapes": [format_shape(s) for s in node.output_shapes],
            "params": rows[node.name]["params"] if node.name in rows else 0,
            "weights": {w.name: list(w.shape) for w in graph.weights.get(node.owner, [])},
        }
    return nodes


def _renames(before: dict, after: dict) -> list[Rename]:
    """A layer only in OLD and one only in NEW are one layer renamed when they have the same type
    and arguments and sit at the same place: fed by the same layers, or at the same position."""
    gone = [n for name, n in before.items() if name not in after]
    new = [n for name, n in after.items() if name not in before]
    to_new = {name: name for name in before if name in after}
    found = []
    for was in gone:
        candidates = [n for n in new if n["type"] == was["type"] and _same_layer(was, n, to_new)]
        fed_alike = [
            n for n in candidates if [_rename_ref(r, to_new) for r in was["from"]] == n["from"]
        ]
        placed = fed_alike or [n for n in candidates if n["position"] == was["position"]]
        if placed:
            now = placed[0]
            new.remove(now)
            to_new[was["name"]] = now["name"]
            found.append(Rename(was["name"], now["name"], now["type"]))
    return found


def _same_layer(was: dict, now: dict, to_new: dict) -> bool:
    if was["share"] is not None or now["share"] is not None:
        return was["share"] is not None and to_new.get(was["share"]) == now["share"]
    return not _changes(was["layer"], now["layer"], skip=PLACE_ARGS)


def _rename_ref(ref: str, to_new: dict[str, str]) -> str:
    name, bracket, rest = ref.partition("[")
    return to_new.get(name, name) + bracket + rest


def _layer_changes(was: dict, now: dict, to_new: dict) -> list[Change]:
    changes = []
    if was["type"] != now["type"]:
        changes.append(Change("type", was["type"], now["type"]))
        changes.append(Change("arguments", _args(was["layer"]), _args(now["layer"])))
    elif was["share"] is None and now["share"] is None:
        changes.extend(_changes(was["layer"], now["layer"], skip=PLACE_ARGS))
    if to_new.get(was["share"], was["share"]) != now["share"]:
        changes.append(Change("share", was["share"], now["share"]))
    for key in ("output_shapes", "params"):
        if was[key] != now[key]:
            changes.append(Change(key.replace("_", " "), was[key], now[key]))
    return changes


def _added(node: dict) -> dict:
    entry = {"name": node["name"], "type": node["type"]}
    if node["share"] is not None:
        entry["share"] = node["share"]
    else:
        entry["arguments"] = _args(node["layer"])
    entry["from"] = node["from"]
    entry["output_shapes"] = node["output_shapes"]
    entry["params"] = node["params"]
    return entry


def _list_change(path: str, old: list[str], new: list[str]) -> Change | None:
    return None if old == new else Change(path, old, new)


def _params(model: api.Model) -> dict[str, int]:
    trainable, frozen = model.count_params()
    return {"total": trainable + frozen, "trainable": trainable, "non_trainable": frozen}


def _output_shapes(old: api.Model, new: api.Model) -> list[dict]:
    def shapes(model: api.Model) -> dict[str, str]:
        return {
            str(ref): format_shape(model.graph.output_shape(ref)) for ref in model.graph.outputs
        }

    was, now = shapes(old), shapes(new)
    names = [*now, *(name for name in was if name not in now)]
    return [{"output": name, "old": was.get(name), "new": now.get(name)} for name in names]


def _weights(before: dict, after: dict, to_new: dict[str, str]) -> Weights:
    """Per weight-owning layer, as `load_weights` checks a file: every LAYER/WEIGHT name and shape."""

    def owners(nodes: dict) -> dict[str, dict]:
        return {
            n["name"]: n["weights"] for n in nodes.values() if n["share"] is None and n["weights"]
        }

    was, now = owners(before), owners(after)
    to_old = {new: old for old, new in to_new.items()}
    result = Weights(loads=was == now)
    for name, weights in now.items():
        source = to_old.get(name)
        if name in was and was[name] == weights:
            continue
        if source is not None and source != name and was.get(source) == weights:
            result.renamed.append({"layer": name, "old": source})
            continue
        result.needed.append({"layer": name, "why": _weight_reason(was.get(source), weights)})
    result.unused = [name for name in was if to_new.get(name) not in now]
    return result


def _weight_reason(old: dict | None, new: dict) -> str:
    if old is None:
        return "not in OLD"
    parts = []
    for key in {**old, **new}:
        a, b = old.get(key), new.get(key)
        if a != b:
            parts.append(f"{key} {_shape(a)} -> {_shape(b)}")
    return ", ".join(parts)


def _shape(shape: list[int] | None) -> str:
    return "absent" if shape is None else str(tuple(shape))


# -- values, as the spec says them -------------------------------------------------------------


def _changes(old: Any, new: Any, path: str = "", skip: tuple[str, ...] = ()) -> list[Change]:
    """Every differing value, argument by argument; resolved values are compared, so a default
    written out equals the default left out."""
    if isinstance(old, BaseModel) and type(old) is type(new):
        found = []
        for key in _fields(old):
            if key in skip:
                continue
            inner = f"{path}.{key}" if path else key
            found.extend(_changes(_field(old, key), _field(new, key), inner))
        return found
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        return [
            c
            for key in old
            for c in _changes(old[key], new[key], f"{path}.{key}" if path else str(key))
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
        args = _args(value)
        kind = getattr(value, "type", None)
        if kind is None:
            return args
        return {"type": kind, **args} if args else kind
    if isinstance(value, dict):
        return {str(k): _short(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_short(v) for v in value]
    return _jsonable(value)


def _args(model: BaseModel) -> dict:
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


# -- rendering ---------------------------------------------------------------------------------


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
