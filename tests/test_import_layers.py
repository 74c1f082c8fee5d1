"""Import structure of the project: no import circle, and layers only import downwards.

The layers are ``theory <- simulate <- largemodel <- reports``: a module may import its own
package and the packages below it, never one above. Every ``import`` / ``from ... import`` statement counts, at module level
or inside a function (a lazy import still runs, and a circle through one still couples the two
modules). Not counted: the implicit import of a module's parent package, and names a package's
``__init__`` loads on first attribute access (``importlib.import_module`` in ``__getattr__``):
neither is an edge a module author writes.

An edge goes to the module that is imported: ``from .x import y`` is an edge to ``pkg.x`` (or to
``pkg.x.y`` where ``y`` is itself a module), ``from . import x`` to ``pkg.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("theory", "simulate", "largemodel", "reports")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    return {_module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """Absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source (module level or lazily)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(candidate: str) -> None:
        # the longest prefix that is a project module (``a.b.c`` -> ``a.b`` if c is a name)
        parts = candidate.split(".")
        for k in range(len(parts), 0, -1):
            mod = ".".join(parts[:k])
            if mod in modules:
                if mod != name:
                    found.add(mod)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                add(full if full in modules else base)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            if rank[dst.split(".")[0]] > rank[src.split(".")[0]]:
                bad.append(f"{src} -> {dst}")
    return bad


def test_the_walker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for mod in ("__init__", "a", "b", "c"):
        (pkg / f"{mod}.py").write_text("")
    src = pkg / "a.py"
    src.write_text("from .b import thing\n\ndef f():\n    from . import c\n    import pkg.b as bb\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": src, "pkg.b": pkg / "b.py", "pkg.c": pkg / "c.py"}
    assert imports_of("pkg.a", src, modules) == {"pkg.b", "pkg.c"}
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_covers_the_project() -> None:
    graph = import_graph()
    assert {"theory", "simulate.store", "largemodel.train", "reports.cli"} <= set(graph)
    assert "largemodel.model" in graph["largemodel.quality"]  # a lazy import, counted


def test_no_import_circle() -> None:
    circles = import_circles(import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_layers_import_only_downwards() -> None:
    bad = upward_imports(import_graph())
    assert not bad, f"upward imports (layers {' <- '.join(LAYERS)}): " + ", ".join(bad)
