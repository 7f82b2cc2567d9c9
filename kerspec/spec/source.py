"""Reading a spec file: safe YAML with the position of every node kept.

PyYAML's `compose` gives nodes with marks; the data is constructed from those same nodes with the
SafeLoader, so no tag can build a Python object. Positions are looked up afterwards from a path
of keys and indices, which keeps the loaded data free of bookkeeping keys (`extra="forbid"` sees
exactly what the user wrote).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kerspec.errors import KerspecError, SpecError, Where

# Aliases let a few lines of YAML stand for an exponentially large document ("billion laughs").
# Counting nodes with aliases expanded, before constructing anything, bounds time and memory.
MAX_EXPANDED_NODES = 200_000
# A spec is a few kilobytes; the pure-Python YAML parser takes seconds per megabyte of small nodes.
MAX_SPEC_BYTES = 1024 * 1024
# Mappings and lists nested deeper than any model needs; the composer recurses per level.
MAX_DEPTH = 64
# Python refuses to turn longer digit strings into an int (sys.get_int_max_str_digits).
MAX_INT_DIGITS = 4000


@dataclass
class Source:
    """A spec's text as nodes, for turning a data path into FILE:LINE:COL."""

    file: str
    root: yaml.Node | None
    # Paths set by `--set`, with the text that set them: errors there point at the option.
    overrides: dict[tuple, str] = field(default_factory=dict)

    def where(self, path: tuple, *, at_key: bool = False) -> Where:
        for length in range(len(path), 0, -1):
            if path[:length] in self.overrides:
                return Where(f"--set {self.overrides[path[:length]]}")
        node, mark = self.root, None
        if node is not None:
            mark = node.start_mark
        for i, segment in enumerate(path):
            if isinstance(node, yaml.MappingNode):
                pair = _find_key(node, segment)
                if pair is None:
                    break
                key_node, node = pair
                last = i == len(path) - 1
                mark = key_node.start_mark if (last and at_key) else node.start_mark
            elif isinstance(node, yaml.SequenceNode) and isinstance(segment, int):
                if not 0 <= segment < len(node.value):
                    break
                node = node.value[segment]
                mark = node.start_mark
            else:
                break
        if mark is None:
            return Where(self.file)
        return Where(self.file, mark.line + 1, mark.column + 1)


def _find_key(node: yaml.MappingNode, key: Any):
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
            return key_node, value_node
    return None


def read_spec_text(path: Path, display: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([KerspecError("no such spec file", Where(display))]) from None
    except IsADirectoryError:
        raise SpecError([KerspecError("is a folder, not a spec file", Where(display))]) from None
    except OSError as err:
        raise SpecError([KerspecError(f"cannot read: {err.strerror}", Where(display))]) from None
    if len(raw) > MAX_SPEC_BYTES:
        message = f"spec is {len(raw):,} bytes; the limit is {MAX_SPEC_BYTES:,}"
        raise SpecError([KerspecError(message, Where(display))])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        column = err.start - (before.rfind(b"\n") + 1) + 1
        message = f"not UTF-8 text (byte 0x{raw[err.start]:02x})"
        raise SpecError([KerspecError(message, Where(display, line, column))]) from None


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing too deep nesting and too many nodes while it composes.

    Both checks run before the recursion they protect against (the composer calls itself per
    level) and before the parser has spent seconds on a document that will be refused anyway.
    """

    def __init__(self, text: str, display: str):
        self.display = display
        self.depth = 0
        self.composed = 0
        super().__init__(text)

    def compose_node(self, parent, index):
        self.depth += 1
        self.composed += 1
        try:
            if self.depth > MAX_DEPTH or self.composed > MAX_EXPANDED_NODES:
                mark = self.peek_event().start_mark
                message = (
                    f"YAML nested more than {MAX_DEPTH} levels deep"
                    if self.depth > MAX_DEPTH
                    else f"document has more than {MAX_EXPANDED_NODES:,} nodes"
                )
                raise SpecError([KerspecError(message, _at(self.display, mark))])
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.1 (PyYAML) reads `1e-3`, `1e5` and `1.0e30` as strings: its floats need a dot and a
# signed exponent. Keras users write them everywhere, so plain scalars with an exponent resolve as
# YAML 1.2 floats. Quoted scalars are never resolved, so `"1e-3"` stays a string.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _at(display: str, mark) -> Where:
    return Where(display, mark.line + 1, mark.column + 1) if mark else Where(display)


def parse_yaml(text: str, display: str) -> tuple[Any, Source]:
    """Safe-load `text`; YAML errors become a SpecError at the place the parser stopped."""
    loader = None
    try:
        # The reader checks the whole text for characters YAML forbids when the loader is made.
        loader = _Loader(text, display)
        root = loader.get_single_node()
        if root is not None:
            _check_nodes(root, display)
            data = loader.construct_document(root)
        else:
            data = None
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        line = before.count("\n") + 1
        column = err.position - (before.rfind("\n") + 1) + 1
        message = f"invalid YAML: character U+{err.character:04X} is not allowed in YAML text"
        raise SpecError([KerspecError(message, Where(display, line, column))]) from None
    except yaml.MarkedYAMLError as err:
        where = _at(display, err.problem_mark or err.context_mark)
        problem = err.problem or err.context or "invalid YAML"
        if "expected a single document" in str(err.context):
            problem = "only one YAML document is allowed in a spec"
        raise SpecError([KerspecError(f"invalid YAML: {problem}", where)]) from None
    except yaml.YAMLError as err:
        raise SpecError([KerspecError(f"invalid YAML: {err}", Where(display))]) from None
    except RecursionError:
        raise SpecError([KerspecError("YAML nested too deeply", Where(display))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, Source(display, root)


def is_sweep(data: Any) -> bool:
    """A sweep file names a spec (`spec:`), which no model spec has as a field."""
    return isinstance(data, dict) and "spec" in data


INT_TAG = "tag:yaml.org,2002:int"


def _check_nodes(root: yaml.Node, display: str) -> None:
    """Refuse alias bombs and duplicate keys before any data is constructed."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once instead of looping forever
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    if key_node.value in seen:
                        mark = key_node.start_mark
                        raise SpecError(
                            [
                                KerspecError(
                                    f"duplicate key {key_node.value!r}",
                                    Where(display, mark.line + 1, mark.column + 1),
                                )
                            ]
                        )
                    seen.add(key_node.value)
                total += size(key_node) + size(value_node)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif node.tag == INT_TAG and len(node.value) > MAX_INT_DIGITS:
            mark = node.start_mark
            raise SpecError(
                [
                    KerspecError(
                        f"an integer of {len(node.value):,} characters is too long"
                        f" (the limit is {MAX_INT_DIGITS:,})",
                        Where(display, mark.line + 1, mark.column + 1),
                    )
                ]
            )
        if total > MAX_EXPANDED_NODES:
            mark = node.start_mark
            raise SpecError(
                [
                    KerspecError(
                        f"document expands to more than {MAX_EXPANDED_NODES:,} nodes "
                        "(aliases nested too far?)",
                        Where(display, mark.line + 1, mark.column + 1),
                    )
                ]
            )
        sizes[id(node)] = total
        return total

    size(root)
