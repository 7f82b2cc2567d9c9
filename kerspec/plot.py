"""`kerspec plot`: the model graph as Graphviz DOT, and as SVG or PNG where Graphviz is installed.

Each node shows its name, type and output shape, like Keras's `plot_model(show_shapes=True)`;
shared layers are drawn once per use, with a dashed edge to the layer whose weights they reuse.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kerspec import io
from kerspec.errors import KerspecError
from kerspec.graph import Graph
from kerspec.layers.base import format_shape

FORMATS = (".dot", ".gv", ".svg", ".png")
INSTALL_HINT = (
    "Graphviz's `dot` is not installed; install it (Debian/Ubuntu: apt-get install graphviz; "
    "macOS: brew install graphviz) or write a .dot file instead"
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    lines = [
        f"digraph {_quote(graph.name)} {{",
        "  rankdir=TB;",
        '  node [shape=record, fontname="Helvetica", fontsize=11];',
    ]
    for node in graph.nodes:
        kind = "InputLayer" if node.type == "Input" else node.type
        shapes = ", ".join(format_shape(s) for s in node.output_shapes)
        label = f"{{{node.name} | {kind} | {shapes}}}".replace("<", "\\<").replace(">", "\\>")
        lines.append(f"  {_quote(node.name)} [label={_quote(label)}];")
    for node in graph.nodes:
        for ref in node.inputs:
            label = f' [label="{ref.index}"]' if ref.index else ""
            lines.append(f"  {_quote(ref.node)} -> {_quote(node.name)}{label};")
        if node.owner != node.name:
            lines.append(
                f"  {_quote(node.owner)} -> {_quote(node.name)} "
                '[style=dashed, arrowhead=none, label="shares weights"];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


def plot(graph: Graph, path: Path) -> None:
    """Write the graph to `path`, in the format its extension names."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise KerspecError(
            f"unsupported plot format {suffix or '(none)'!r}: use .dot, .svg or .png", str(path)
        )
    dot = to_dot(graph)
    if suffix in (".dot", ".gv"):
        io.write_text(path, dot)
        return
    program = shutil.which("dot")
    if program is None:
        raise KerspecError(INSTALL_HINT, str(path))
    done = subprocess.run(
        [program, f"-T{suffix[1:]}"], input=dot.encode(), capture_output=True, timeout=120,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise KerspecError(f"Graphviz failed: {reason[0] if reason else done.returncode}", str(path))
    io.atomic_write(path, lambda f: f.write(done.stdout))
