"""The comparison of two compiled models: layers matched by name (or found renamed), then
argument by argument, plus parameter counts, output shapes and whether weights still load."""

from __future__ import annotations

from kerspec import api
from kerspec.diff.result import Change, LayerChange, Link, Rename, SpecDiff, Weights
from kerspec.diff.sides import load_side
from kerspec.diff.values import PLACE_ARGS, non_default_args, value_changes
from kerspec.errors import SpecError
from kerspec.layers.base import format_shape
from kerspec.summary import summary_rows


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
        spec=value_changes(
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
        compile=value_changes(old.spec.compile, new.spec.compile),
        fit=value_changes(old.spec.fit, new.spec.fit),
        data=value_changes(old.spec.data, new.spec.data),
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
    return not value_changes(was["layer"], now["layer"], skip=PLACE_ARGS)


def _rename_ref(ref: str, to_new: dict[str, str]) -> str:
    name, bracket, rest = ref.partition("[")
    return to_new.get(name, name) + bracket + rest


def _layer_changes(was: dict, now: dict, to_new: dict) -> list[Change]:
    changes = []
    if was["type"] != now["type"]:
        changes.append(Change("type", was["type"], now["type"]))
        changes.append(
            Change("arguments", non_default_args(was["layer"]), non_default_args(now["layer"]))
        )
    elif was["share"] is None and now["share"] is None:
        changes.extend(value_changes(was["layer"], now["layer"], skip=PLACE_ARGS))
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
        entry["arguments"] = non_default_args(node["layer"])
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
