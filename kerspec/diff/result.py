"""What a comparison of two specs found, as data: also the `--json` form of `kerspec diff`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
