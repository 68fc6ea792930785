"""The import graph the design promises: no cycle among startsim's modules, the harness never
imports the engine (it depends on the model and the records only), the core never imports the
edges (CLI, report writers, harness), and the simulation CLI never loads gevent, Locust or
asyncpg. Read from the source with ``ast``, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("sim", "loadtests")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {
        _module(p): p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if "tests" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        targets = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_module_imports_itself_back_even_from_inside_a_function():
    # A lazy import inside a function still ties the two modules together: it hides a cycle
    # from the interpreter until the call, not from the design (loadtests.campaign ↔ command ↔
    # settings was one).
    graph = _graph(top_level_only=False)
    # A package's __init__ that imports its own submodules is how packages are made, not a cycle.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            assert state.get(t) != 1, " → ".join([*path, m, t])
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [])


def test_the_harness_never_imports_the_engine():
    graph = _graph(top_level_only=False)
    for name, targets in graph.items():
        if name.startswith("loadtests"):
            assert "sim.engine" not in targets, name
            assert not any(t.startswith("sim.fast") for t in targets), name


def test_the_core_never_imports_an_edge():
    graph = _graph(top_level_only=False)
    core = (
        "sim.scenario",
        "sim.engine",
        "sim.stats",
        "sim.records",
        "sim.runner",
        "sim.sweep",
        "sim.search",
        "sim.sizing",
        "sim.decision",
        "sim.recommend",
        "sim.distributions",
        "sim.errors",
    )
    for name in core:
        for t in graph[name]:
            assert not t.startswith(("sim.cli", "sim.report", "loadtests")), (name, t)


def _private_imports(path: Path) -> list[str]:
    """Modules or names imported from another package that are private to it (``typer._click``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            top, *rest = name.split(".")
            private = [p for p in rest if p.startswith("_") and not p.startswith("__")]
            if top not in PACKAGES and top != "__future__" and private:
                found.append(name)
    return found


def test_no_module_imports_a_private_module_of_a_dependency():
    # A dependency's private module changes without notice: typer vendored click as typer._click
    # in 0.26, so `from typer._click...` broke every typer from 0.12 to 0.25 that we allowed.
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            assert _private_imports(path) == [], path


def _scenario_fields() -> set[str]:
    from pydantic import BaseModel

    from sim.scenario import Scenario

    names, todo = set(), [Scenario]
    while todo:
        model = todo.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                todo.append(kind)
    return names


def test_no_default_stands_in_for_a_scenario_field():
    # The scenario is frozen and has every field: `getattr(pool, "workers", 1)` could only ever
    # hide a typo, or disagree with the field's real default (3).
    fields = _scenario_fields()
    assert {"cloudsql", "workers", "retry_jitter", "multiplier"} <= fields
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "getattr"
                    and len(node.args) == 3
                    and isinstance(node.args[1], ast.Constant)
                ):
                    assert node.args[1].value not in fields, (path, node.lineno)


def _mentions_outcome(node: ast.AST) -> bool:
    return "outcome" in ast.unparse(node)


def test_outcome_names_come_from_the_records_vocabulary():
    # Outcomes are sim.records.Outcome members, never restated: no `outcome == "ready"` and no
    # second list of the outcome names (a name added there would be missed here).
    from sim.records import OUTCOMES

    names = set(OUTCOMES)
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path == ROOT / "sim" / "records.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Compare) and _mentions_outcome(node):
                    for side in (node.left, *node.comparators):
                        literal = isinstance(side, ast.Constant) and side.value in names
                        assert not literal, (path, node.lineno, ast.unparse(node))
                if isinstance(node, ast.Tuple | ast.List | ast.Set):
                    listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & names
                    assert len(listed) < 3, (path, node.lineno, sorted(listed))
                if isinstance(node, ast.Dict):
                    listed = {v.value for v in node.values if isinstance(v, ast.Constant)} & names
                    assert len(listed) < 2, (path, node.lineno, sorted(listed))


def test_the_harness_opens_a_pool_every_way_the_scenario_names():
    # loadtests/container.py acts out each pool.start of the scenario's Literal by name: a start
    # added to the scenario without a branch there would quietly run as another.
    from typing import get_args

    from sim.scenario import Pool

    tree = ast.parse((ROOT / "loadtests" / "container.py").read_text(encoding="utf-8"))
    handled = {
        side.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and "start" in ast.unparse(node)
        for side in (node.left, *node.comparators)
        if isinstance(side, ast.Constant) and isinstance(side.value, str)
    }
    starts = set(get_args(Pool.model_fields["start"].annotation))
    assert starts - handled <= {"background"}, starts - handled  # background: the else branch
    assert handled <= starts, handled - starts


def _defined_names(path: Path) -> set[str]:
    """Classes and constants a module defines at its top level (private ones aside)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name) and t.id[0].isupper())
    return {n for n in names if not n.startswith("_")}


def test_a_class_or_constant_name_means_one_thing():
    # `Outcome` was an attempt's outcome in sim.records and a campaign's result in
    # loadtests.campaign; `Settings`, `STOP_GRACE_S`, `MAX_INSTANCES` and others likewise.
    where: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name in _defined_names(path):
                where.setdefault(name, []).append(_module(path))
    twice = {name: mods for name, mods in where.items() if len(mods) > 1}
    assert twice == {}, twice
