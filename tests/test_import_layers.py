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
    assert {"theory", "simulate.store", "largemodel.training.train", "reports.cli"} <= set(graph)
    assert "largemodel.models.load" in graph["largemodel.training.quality"]  # a lazy import, counted


def test_no_import_circle() -> None:
    circles = import_circles(import_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_layers_import_only_downwards() -> None:
    bad = upward_imports(import_graph())
    assert not bad, f"upward imports (layers {' <- '.join(LAYERS)}): " + ", ".join(bad)


# ---- rooms inside the packages ----------------------------------------------------------------
#: each subpackage (room) and the rooms of the same package it may import; a module outside every
#: listed room (``largemodel.cli``, ``simulate.cli``, ``theory.cli``, ...) may import any room.
ROOMS: dict[str, set[str]] = {
    "largemodel.models": set(),
    "largemodel.training": {"largemodel.models"},
    "largemodel.study": {"largemodel.models"},
    "largemodel.plan": {"largemodel.models", "largemodel.study"},
    "largemodel.diagnose": {"largemodel.models", "largemodel.study", "largemodel.plan"},
    "largemodel.experiments": {"largemodel.models", "largemodel.study", "largemodel.diagnose",
                               "largemodel.training", "largemodel.plan"},
    "theory.symbolic": set(),
    "theory.highdim": {"theory.output"},
    "theory.output": set(),
}
#: experiment packages: each may import the simulator core and ``simulate.experiments`` (common,
#: runner, oracles), never another experiment
EXPERIMENT_PACKAGES = ("fig3", "fig4", "lemma_d1", "prop21", "thm31", "thm41", "thm42", "thm43")
#: the one declared exception: Fig. 4 reuses Fig. 3's field (``fig3.measure.build_field``)
ROOMS["simulate.experiments.fig4"] = {"simulate.experiments.fig3"}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["simulate", "experiments"] and len(parts) >= 3 and parts[2] in EXPERIMENT_PACKAGES:
        return ".".join(parts[:3])
    prefix = ".".join(parts[:2])
    return prefix if prefix in ROOMS else None


def room_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        room = _room(src)
        if room is None:
            continue
        for dst in sorted(targets):
            other = _room(dst)
            if other is None or other == room or other.split(".")[0] != room.split(".")[0]:
                continue
            if other not in ROOMS.get(room, set()):
                bad.append(f"{src} -> {dst}")
    return bad


def test_rooms_import_only_the_rooms_they_declare() -> None:
    assert room_violations(import_graph()) == []


def test_the_room_check_can_fail() -> None:
    graph = {"largemodel.models.load": {"largemodel.study.ode"},
             "simulate.experiments.thm43.judge": {"simulate.experiments.thm41.judge"},
             "largemodel.study.ode": {"largemodel.models.load"}}
    assert room_violations(graph) == ["largemodel.models.load -> largemodel.study.ode",
                                      "simulate.experiments.thm43.judge -> simulate.experiments.thm41.judge"]


def test_no_package_directory_is_a_flat_room() -> None:
    """Rooms by job: no package folder holds more than 16 modules (``__init__`` included)."""
    crowded = {str(d.relative_to(ROOT)): n for layer in LAYERS for d in [ROOT / layer, *(ROOT / layer).rglob("*")]
               if d.is_dir() and (n := len(list(d.glob("*.py")))) > 16}
    assert crowded == {}
