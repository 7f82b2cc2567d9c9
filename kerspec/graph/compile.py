"""Spec → Graph: names, `from` links, shared layers, order, and every node's output shapes.

Everything that can be known before data arrives is checked here, once, and every problem points
at the spec entry at fault. The result is what the plan executes.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from kerspec.errors import GraphError, KerspecError
from kerspec.layers import Layer, Shape, ShapeError, WeightSpec
from kerspec.layers.base import format_shape
from kerspec.layers.core import Input
from kerspec.spec import LoadedSpec
from kerspec.spec.schema import Shared

REF = re.compile(r"^(?P<name>.+?)(?:\[(?P<index>\d+)\])?$")


@dataclass(frozen=True)
class Ref:
    """One output of one node: `encoder[1]` is Ref("encoder", 1)."""

    node: str
    index: int = 0

    def __str__(self) -> str:
        return self.node if self.index == 0 else f"{self.node}[{self.index}]"


@dataclass
class Node:
    """One application of a layer: an entry of the spec (or the Input made by `input_shape`)."""

    name: str
    layer: Layer
    owner: str  # the layer whose weights this node uses: itself, or the layer it shares
    inputs: list[Ref]
    entry: int  # index in spec.layers, for error places
    output_shapes: list[Shape] = field(default_factory=list)
    output_masked: list[bool] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.layer.type


@dataclass
class Graph:
    name: str
    nodes: list[Node]  # in execution order
    inputs: list[str]
    outputs: list[Ref]
    weights: dict[str, list[WeightSpec]]  # owner layer name -> weights, in creation order
    dtype: str

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def output_shape(self, ref: Ref) -> Shape:
        return self.node(ref.node).output_shapes[ref.index]

    def input_shapes(self) -> dict[str, Shape]:
        return {name: self.node(name).output_shapes[0] for name in self.inputs}

    def is_sequential(self) -> bool:
        """A plain stack: one input, each node fed by the one before, one output at the end."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            return False
        for before, node in zip(self.nodes, self.nodes[1:]):
            if node.inputs != [Ref(before.name)] or node.owner != node.name:
                return False
        return self.outputs == [Ref(self.nodes[-1].name)]


def snake_case(name: str) -> str:
    """Keras's default layer names: `MaxPooling2D` -> `max_pooling2d`, `SimpleRNN` -> `simple_rnn`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class _Problems:
    def __init__(self, loaded: LoadedSpec):
        self.loaded = loaded
        self.found: list[KerspecError] = []

    def add(self, message: str, entry: int | None, *path, at_key: bool = False) -> None:
        """A problem at spec entry `entry` (labelled `Dense 'hidden'`), or at a top-level path."""
        if entry is not None:
            layer = self.loaded.spec.layers[entry]
            name = f"{layer.name!r}" if layer.name else f"(layers[{entry}])"
            if isinstance(layer, Shared):
                message = f"{name} (sharing {layer.share!r}): {message}"
            else:
                message = f"{layer.type} {name}: {message}"
            path = ("layers", entry, *path)
        self.found.append(KerspecError(message, self.loaded.source.where(path, at_key=at_key)))

    def raise_any(self) -> None:
        if self.found:
            raise GraphError(self.found)


def compile_spec(loaded: LoadedSpec) -> Graph:
    spec = loaded.spec
    problems = _Problems(loaded)
    nodes = _name_nodes(spec.layers, problems)
    problems.raise_any()
    by_name = {node.name: node for node in nodes}
    _link(spec.layers, nodes, by_name, problems)
    problems.raise_any()
    order = _order(nodes, by_name, problems)
    problems.raise_any()
    inputs, outputs = _ends(loaded, nodes, by_name, problems)
    problems.raise_any()
    order = _prune(order, inputs, outputs, by_name, problems)
    problems.raise_any()
    weights = _infer_shapes(order, by_name, problems)
    problems.raise_any()
    for ref in outputs:
        _check_index(ref, by_name, problems, None, ("outputs",))
    problems.raise_any()
    return Graph(loaded.name, order, inputs, outputs, weights, spec.dtype)


def _name_nodes(entries, problems: _Problems) -> list[Node]:
    explicit = {e.name for e in entries if e.name}
    seen: dict[str, int] = {}
    counters: dict[str, int] = {}

    def fresh(base: str) -> str:
        count = counters.get(base, 0)
        while True:
            candidate = base if count == 0 else f"{base}_{count}"
            count += 1
            if candidate not in explicit and candidate not in seen:
                counters[base] = count
                return candidate

    nodes = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Shared):
            node = Node(entry.name or "", None, entry.share, [], i)  # layer is resolved in _link
        else:
            if entry.input_shape is not None:
                if i != 0:
                    problems.add("input_shape is only allowed on the first layer", i, "input_shape", at_key=True)
                elif isinstance(entry, Input):
                    problems.add("an Input takes 'shape', not 'input_shape'", i, "input_shape", at_key=True)
                else:
                    made = Input(shape=entry.input_shape)
                    name = "input" if "input" not in explicit else fresh("input")
                    seen[name] = i
                    nodes.append(Node(name, made, name, [], i))
            base = "input_layer" if isinstance(entry, Input) else snake_case(entry.type)
            name = entry.name or fresh(base)
            node = Node(name, entry, name, [], i)
        if not node.name:
            node.name = fresh(entry.share)
        if node.name in seen:
            problems.add(f"duplicate layer name {node.name!r}", i, "name")
        seen[node.name] = i
        nodes.append(node)
    if nodes and not isinstance(nodes[0].layer, Input) and not isinstance(entries[0], Shared):
        problems.add(
            "the first layer needs an Input before it, or input_shape: [...] on itself",
            0,
        )
    return nodes


def _parse_ref(text: str) -> Ref:
    match = REF.match(text)
    index = match.group("index")
    return Ref(match.group("name"), int(index) if index else 0)


def _link(entries, nodes: list[Node], by_name: dict[str, Node], problems: _Problems) -> None:
    for position, node in enumerate(nodes):
        entry = entries[node.entry]
        if isinstance(entry, Shared):
            target = by_name.get(entry.share)
            if target is None or target.layer is None:
                problems.add(_unknown("share", entry.share, by_name), node.entry, "share")
                continue
            if isinstance(target.layer, Input):
                problems.add(f"cannot share Input {entry.share!r}", node.entry, "share")
                continue
            node.layer, node.owner = target.layer, target.owner
        layer = node.layer
        if isinstance(layer, Input):
            if layer is entry and entry.from_ is not None:
                problems.add("an Input takes no 'from'", node.entry, "from", at_key=True)
            continue
        sources = entry.from_
        if sources is None:
            if position == 0:
                continue  # already reported: nothing above the first layer
            refs = [Ref(nodes[position - 1].name)]
        else:
            refs = [_parse_ref(s) for s in ([sources] if isinstance(sources, str) else sources)]
        for ref in refs:
            if ref.node not in by_name:
                problems.add(_unknown("from", ref.node, by_name), node.entry, "from")
        arity = layer.arity
        if arity is None and len(refs) < 2:
            problems.add(f"merges two or more inputs; 'from' names {len(refs)}", node.entry, "from")
        elif arity is not None and len(refs) != arity:
            problems.add(f"takes {arity} input(s); 'from' names {len(refs)}", node.entry, "from")
        node.inputs = refs


def _unknown(what: str, name: str, by_name: dict) -> str:
    close = difflib.get_close_matches(name, list(by_name), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{what}: no layer named {name!r}{hint}"


def _order(nodes: list[Node], by_name: dict[str, Node], problems: _Problems) -> list[Node]:
    """Topological order, keeping spec order among nodes that are ready together."""
    waiting = {n.name: {r.node for r in n.inputs} for n in nodes}
    done: set[str] = set()
    order: list[Node] = []
    while len(order) < len(nodes):
        ready = [n for n in nodes if n.name not in done and waiting[n.name] <= done]
        if not ready:
            stuck = [n for n in nodes if n.name not in done]
            cycle = _find_cycle(stuck, by_name)
            path = " -> ".join(cycle + cycle[:1])
            problems.add(f"the layers form a cycle: {path}", by_name[cycle[0]].entry, "from")
            return order
        for node in ready:
            done.add(node.name)
            order.append(node)
    return order


def _find_cycle(stuck: list[Node], by_name: dict[str, Node]) -> list[str]:
    names = {n.name for n in stuck}
    current, path = stuck[0].name, []
    while current not in path:
        path.append(current)
        current = next(r.node for r in by_name[current].inputs if r.node in names)
    return path[path.index(current):]


def _ends(loaded: LoadedSpec, nodes, by_name, problems: _Problems):
    spec = loaded.spec
    if spec.inputs is None:
        inputs = [n.name for n in nodes if isinstance(n.layer, Input)]
    else:
        inputs = spec.inputs
        for i, name in enumerate(inputs):
            if name not in by_name:
                problems.add(_unknown("inputs", name, by_name), None, "inputs", i)
            elif not isinstance(by_name[name].layer, Input):
                problems.add(f"inputs: {name!r} is a {by_name[name].type}, not an Input", None, "inputs", i)
    if spec.outputs is None:
        outputs = [Ref(nodes[-1].name)]
    else:
        outputs = []
        for i, text in enumerate(spec.outputs):
            ref = _parse_ref(text)
            if ref.node not in by_name:
                problems.add(_unknown("outputs", ref.node, by_name), None, "outputs", i)
            outputs.append(ref)
    return inputs, outputs


def _prune(order, inputs, outputs, by_name, problems: _Problems) -> list[Node]:
    """Keep the nodes the outputs need; anything else is a wiring mistake, reported."""
    needed: set[str] = set()
    stack = [r.node for r in outputs]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(r.node for r in by_name[name].inputs)
    for node in order:
        if node.name in needed:
            if isinstance(node.layer, Input) and node.name not in inputs:
                problems.add(
                    f"the outputs need Input {node.name!r}, which 'inputs' leaves out", None, "inputs"
                )
            continue
        if isinstance(node.layer, Input):
            problems.add("this input is not used by any output", node.entry)
        else:
            problems.add("does not lead to any output (is 'outputs' or a 'from' missing it?)", node.entry)
    return [n for n in order if n.name in needed]


def _check_index(ref: Ref, by_name, problems: _Problems, entry, path) -> bool:
    count = len(by_name[ref.node].output_shapes)
    if ref.index >= count:
        problems.add(f"{ref} does not exist: {ref.node!r} has {count} output(s)", entry, *path)
        return False
    return True


def _infer_shapes(order: list[Node], by_name, problems: _Problems) -> dict[str, list[WeightSpec]]:
    weights: dict[str, list[WeightSpec]] = {}
    failed: set[str] = set()
    for node in order:
        if any(r.node in failed for r in node.inputs):
            failed.add(node.name)  # already reported upstream
            continue
        if not all(_check_index(r, by_name, problems, node.entry, ("from",)) for r in node.inputs):
            failed.add(node.name)
            continue
        shapes = [by_name[r.node].output_shapes[r.index] for r in node.inputs]
        masked = [by_name[r.node].output_masked[r.index] for r in node.inputs]
        if any(masked) and not node.layer.supports_masking:
            sources = ", ".join(str(r) for r, m in zip(node.inputs, masked) if m)
            problems.add(
                f"cannot take the mask that {sources} carries (from Masking or "
                "Embedding(mask_zero) upstream); use a layer that supports masking, or drop the mask",
                node.entry,
            )
            failed.add(node.name)
            continue
        try:
            node.output_shapes = node.layer.output_shapes(shapes)
            node.output_masked = node.layer.output_masked(masked, len(node.output_shapes))
            specs = node.layer.weights(shapes)
        except ShapeError as err:
            problems.add(str(err), node.entry)
            failed.add(node.name)
            continue
        if node.owner not in weights:
            weights[node.owner] = specs
            continue
        before = {s.name: s.shape for s in weights[node.owner]}
        after = {s.name: s.shape for s in specs}
        if before != after:
            got = ", ".join(format_shape(s) for s in shapes)
            problems.add(
                f"cannot take input {got}: the weights of {node.owner!r} would be "
                f"{_weight_text(after)} instead of {_weight_text(before)}",
                node.entry,
            )
            failed.add(node.name)
    return weights


def _weight_text(shapes: dict) -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
