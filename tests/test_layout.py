"""Layers point one way: no import cycle among the analysis modules (GUIDE.md: no two modules import each other).

The graph is read from the source with ``ast`` (module-level and function-level imports alike, since a
function-level import is a dependency too): an edge A -> B for every ``import``/``from ... import`` in A of a
project module B. The cycles are its strongly connected components of more than one module (Tarjan).
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("cg_train", "analysis", "launch")


def project_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``dotted name -> (file, is a package __init__)`` for every module of :data:`PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (``from pkg import name`` is ``pkg.name`` when
    that is a module, else ``pkg``)."""
    modules = project_modules(root)

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, (path, is_package) in modules.items():
        here = module.split(".") if is_package else module.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
        graph[module] = {found for t in targets if t.split(".")[0] in PACKAGES and (found := owner(t))} - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_planted_cycle_and_only_it(tmp_path: Path) -> None:
    package = tmp_path / "analysis"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .sub.c import g\n")  # a function-level import counts
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("from ..a import x\nimport numpy\n")
    (package / "d.py").write_text("from analysis import a\nfrom .sub import c\n")  # imports the cycle, not in it
    assert cycles(import_graph(tmp_path)) == [["analysis.a", "analysis.b", "analysis.sub.c"]]


def test_no_import_cycle_among_analysis_modules() -> None:
    graph = import_graph(REPO)
    assert "analysis.cli" in graph and "analysis.noise_seeds" in graph["analysis.noise_cli"]  # the graph is real
    in_analysis = [c for c in cycles(graph) if any(m.split(".")[0] == "analysis" for m in c)]
    assert in_analysis == [], f"import cycles in analysis/: {in_analysis}"


def test_shared_analysis_helpers_import_no_command() -> None:
    """The command modules (what analysis/cli.py imports to register them) sit on top: the shared helpers
    (figure saving, argument running, the seeds aggregation, the registries) import none of them."""
    graph = import_graph(REPO)
    cli = ast.parse((REPO / "analysis" / "cli.py").read_text())
    commands = {f"analysis.{alias.name}" for node in ast.walk(cli)  # `from . import cg_curves, debug_cli, ...`
                if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module for alias in node.names}
    assert {"analysis.noise_cli", "analysis.kd", "analysis.debug_cli"} <= commands

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    for helper in ("analysis.common", "analysis.commands", "analysis.seeds", "analysis.detectors.registry"):
        assert not reachable(helper) & commands, helper
