"""The shape of the codebase (issue 16): small modules, no import cycle, the layering kept.

Read from the source with `ast`, never by importing it, so every import statement counts: at
module level, inside functions and under `if TYPE_CHECKING:`. Importing `kerspec.a.b` also runs
`kerspec/a/__init__.py`, so it counts as importing `kerspec.a` too, except where the importer is
itself inside `kerspec.a` (Python has started that package before the importer). An explicit
`from kerspec.a import name` of a non-module name is an import of `kerspec.a` wherever it is.

Each check lists everything that breaks it.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "kerspec"
MAX_LINES = 500
# Catalogs: one short entry per item, read as a table, not as code to follow.
CATALOGS = {"kerspec.activations", "kerspec.initializers"}
# (package, packages it never imports): spec -> graph -> layers -> training -> api/cli.
LAYERING = [
    ("kerspec.layers", ("kerspec.graph", "kerspec.training", "kerspec.api", "kerspec.cli")),
    ("kerspec.graph", ("kerspec.training", "kerspec.api", "kerspec.cli")),
    # The spec is validated by the classes of the catalogs (losses, metrics, optimizers,
    # schedules, callbacks: the spec's vocabulary, like the layers), never by how training runs.
    ("kerspec.spec", (
        "kerspec.graph", "kerspec.api", "kerspec.cli", "kerspec.training.trainer",
        "kerspec.training.loop", "kerspec.training.session", "kerspec.training.checkpoint",
        "kerspec.training.data", "kerspec.training.data_files", "kerspec.training.targets",
        "kerspec.training.arrays", "kerspec.training.heads",
    )),
]


@dataclass(frozen=True)
class Import:
    module: str  # the importer
    target: str  # the module it imports
    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} `{self.text}`"


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the package at `root`, by dotted name (a package by its own name)."""
    package = root.name
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def find_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import statement of one module of `modules` by another, as the modules named."""
    found = []
    for module, path in modules.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package
                    package = module.split(".")
                    package = package[: len(package) - node.level + (1 if is_package else 0)]
                    base = ".".join(package + ([base] if base else []))
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            text = lines[node.lineno - 1].strip()
            for target in dict.fromkeys(targets):
                if target in modules and target != module:
                    found.append(Import(module, target, path, node.lineno, text))
    return found


def import_graph(modules: dict[str, Path], imports: list[Import]) -> dict[str, dict[str, Import]]:
    """module -> {module it imports: the first statement that does}, with the packages an import
    runs on the way (`kerspec.a` for `kerspec.a.b`) unless the importer is inside them."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        graph[imp.module].setdefault(imp.target, imp)
        parts = imp.target.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            if parent in modules and not _within(imp.module, parent):
                graph[imp.module].setdefault(parent, imp)
    return graph


def find_cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected groups of modules (Tarjan): modules that all reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(start: str) -> None:  # iterative: the graph may be deeper than the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def cycle_through(graph: dict[str, dict[str, Import]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members or child in came_from:
                    continue
                came_from[child] = node
                if child == start:
                    path = [start]
                    while True:
                        path.append(came_from[path[-1]])
                        if path[-1] == start:
                            return path[::-1]
                following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in {group}")  # a strongly connected group always has one


def describe_cycle(graph: dict[str, dict[str, Import]], group: list[str]) -> str:
    """One cycle of the group, each step with its import statement, then the group's other
    members (breaking this cycle may leave another among them)."""
    cycle = cycle_through(graph, group)
    steps = [f"  {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    rest = sorted(set(group) - set(cycle))
    also = [f"  in the same tangle: {', '.join(rest)}"] if rest else []
    return "\n".join([" -> ".join(cycle), *steps, *also])


def oversized(modules: dict[str, Path], limit: int, exempt: set[str]) -> list[str]:
    found = []
    for module, path in modules.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit and module not in exempt:
            found.append(f"{module} ({path}): {lines} lines")
    return found


def layering_violations(imports: list[Import], rules) -> list[str]:
    """Import statements of a package that name a package it must never import."""
    return [
        f"{imp.module} imports {imp.target}: {imp}"
        for imp in imports
        for package, never in rules
        if _within(imp.module, package) and any(_within(imp.target, n) for n in never)
    ]


def _report(title: str, problems: list[str]) -> str:
    text = f"{title}:\n" + "\n".join(problems)
    print(text)
    return text


# -- the real tree -----------------------------------------------------------------------------

def test_no_module_is_over_500_lines_except_the_catalogs():
    found = oversized(find_modules(ROOT), MAX_LINES, CATALOGS)
    assert not found, _report(f"modules over {MAX_LINES} lines", found)


def test_no_import_cycle_not_even_under_type_checking():
    modules = find_modules(ROOT)
    graph = import_graph(modules, find_imports(modules))
    cycles = [describe_cycle(graph, c) for c in find_cycles(graph)]
    assert not cycles, _report("import cycles", cycles)


def test_layers_graph_and_spec_never_import_what_comes_after_them():
    found = layering_violations(find_imports(find_modules(ROOT)), LAYERING)
    assert not found, _report("imports against the layering", found)


# -- the checks themselves, on a small package made here ------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _cycles(root: Path) -> list[list[str]]:
    modules = find_modules(root)
    graph = import_graph(modules, find_imports(modules))
    return [cycle_through(graph, group) for group in find_cycles(graph)]


def test_a_cycle_through_a_function_and_type_checking_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
            "b.py": "def f():\n    from pkg import c\n",
            "c.py": "import pkg.a\n",
            "d.py": "import pkg.a\n",
        },
    )
    modules = find_modules(root)
    graph = import_graph(modules, find_imports(modules))
    groups = find_cycles(graph)
    assert groups == [["pkg.a", "pkg.b", "pkg.c"]]
    text = describe_cycle(graph, groups[0])
    assert text.startswith("pkg.a -> pkg.b -> pkg.c -> pkg.a\n")
    assert f"{root / 'a.py'}:3 `from pkg.b import B`" in text
    assert f"{root / 'b.py'}:2 `from pkg import c`" in text


def test_importing_a_submodule_runs_its_package(tmp_path):
    # pkg.x -> pkg.sub.y runs pkg/sub/__init__.py, which imports pkg.x back.
    root = _package(
        tmp_path,
        {"x.py": "import pkg.sub.y\n", "sub/__init__.py": "from .. import x\n", "sub/y.py": ""},
    )
    assert _cycles(root) == [["pkg.sub", "pkg.x", "pkg.sub"]]


def test_a_package_re_exporting_its_modules_is_no_cycle(tmp_path):
    # Siblings import each other, the package imports both: Python starts the package first.
    root = _package(
        tmp_path,
        {
            "sub/__init__.py": "from pkg.sub.one import f\nfrom pkg.sub.two import g\n",
            "sub/one.py": "from pkg.sub.two import g\n",
            "sub/two.py": "x = 1\n",
            "user.py": "from pkg.sub import f\n",
        },
    )
    assert _cycles(root) == []
    # ... but a module taking a name from its own package's __init__ is one.
    (root / "sub" / "two.py").write_text("from pkg.sub import f\n")
    assert _cycles(root) == [["pkg.sub", "pkg.sub.two", "pkg.sub"]]


def test_relative_imports_are_resolved(tmp_path):
    root = _package(
        tmp_path,
        {"sub/__init__.py": "", "sub/a.py": "from .b import x\n", "sub/b.py": "from . import a\n"},
    )
    assert _cycles(root) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]]


def test_layering_names_the_import_line(tmp_path):
    root = _package(
        tmp_path,
        {
            "layers/__init__.py": "",
            "layers/dense.py": "import numpy\n\ndef f():\n    from pkg.graph.plan import Plan\n",
            "graph/__init__.py": "from pkg.layers import dense\n",
            "graph/plan.py": "",
        },
    )
    found = layering_violations(find_imports(find_modules(root)), [("pkg.layers", ("pkg.graph",))])
    assert found == [
        f"pkg.layers.dense imports pkg.graph.plan: {root / 'layers' / 'dense.py'}:4 "
        + "`from pkg.graph.plan import Plan`"
    ]


def test_oversized_modules_are_listed_except_the_exempt(tmp_path):
    root = _package(
        tmp_path, {"big.py": "x = 1\n" * 501, "table.py": "x = 1\n" * 900, "ok.py": "x = 1\n" * 500}
    )
    found = oversized(find_modules(root), 500, {"pkg.table"})
    assert found == [f"pkg.big ({root / 'big.py'}): 501 lines"]


def test_every_module_of_a_tangle_is_named(tmp_path):
    # Two cycles sharing pkg.a: the shortest is shown, the other module is still named.
    root = _package(
        tmp_path,
        {
            "a.py": "import pkg.b\nimport pkg.c\n",
            "b.py": "import pkg.a\n",
            "c.py": "import pkg.d\n",
            "d.py": "import pkg.a\n",
        },
    )
    modules = find_modules(root)
    graph = import_graph(modules, find_imports(modules))
    (group,) = find_cycles(graph)
    text = describe_cycle(graph, group)
    assert text.splitlines()[0] == "pkg.a -> pkg.b -> pkg.a"
    assert text.splitlines()[-1] == "  in the same tangle: pkg.c, pkg.d"
