"""The package's import graph: leaves stay leaves and data flows one way (STYLE.md).

Read from the source with ``ast`` (imports inside functions count too), so a
shortcut from the redirect to the reports, or a leaf that grows a dependency,
fails here rather than in review. Modules are named by their dotted path under
``tracker`` (``redirect.handler``); a stage is a top-level package (``redirect``).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tracker"
MAX_LINES = 450


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if _name(p)}


def _resolve(target: str) -> str | None:
    """The project module an import names (``tracker.core.errors`` -> ``core.errors``)."""
    if not target.startswith("tracker."):
        return None
    name = target.removeprefix("tracker.")
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _never_imported(node: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (annotations only) and ``if __name__ == "__main__":`` (a script's entry,
    e.g. ``python -m tracker.api.openapi`` building the app) run on no import."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _without_type_checking(tree: ast.Module) -> ast.Module:
    """The module minus the blocks that run on no import (``_never_imported``)."""
    for node in ast.walk(tree):
        for name in ("body", "orelse"):
            block = getattr(node, name, None)
            if isinstance(block, list):
                block[:] = [b for b in block if not _never_imported(b)]
    return tree


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the project's modules it imports."""
    out = {}
    for name, path in modules().items():
        deps: set[str] = set()
        for node in ast.walk(_without_type_checking(ast.parse(path.read_text(encoding="utf-8")))):
            if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "tracker" or node.module.startswith("tracker.")
            ):
                for alias in node.names:
                    dep = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                    if dep:
                        deps.add(dep)
            elif isinstance(node, ast.Import):
                deps |= {d for a in node.names if (d := _resolve(a.name))}
        out[name] = frozenset(deps - {name})
    return out


def reach(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        for dep in graph()[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def stages(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


CORE = sorted(m for m in modules() if m.startswith("core."))


@pytest.mark.parametrize("module", CORE)
def test_core_modules_are_leaves(module: str) -> None:
    assert graph()[module] <= {m for m in CORE}


def test_settings_imports_only_core() -> None:
    assert stages(set(graph()["settings"])) <= {"core"}


@pytest.mark.parametrize(
    ("stage", "never"),
    [
        # The redirect knows nothing of what happens to a click after the stream.
        ("redirect", {"reports", "ingest", "conversions", "registry"}),
        # Reports read ClickHouse; they know nothing of how rows got there.
        ("reports", {"redirect", "ingest", "conversions"}),
        # Ingest moves streams into ClickHouse; it answers no request.
        ("ingest", {"redirect", "reports", "conversions", "registry", "services", "api", "web"}),
        ("conversions", {"redirect", "reports", "ingest"}),
        ("storage", {"redirect", "reports", "ingest", "conversions", "registry", "api", "web"}),
    ],
)
def test_data_flows_one_way(stage: str, never: set[str]) -> None:
    members = [m for m in modules() if m.split(".")[0] == stage]
    assert members, stage
    for module in members:
        assert stages(reach(module)) & never == set(), module


def test_no_import_cycles() -> None:
    cyclic = sorted(m for m in graph() if m in reach(m))
    assert cyclic == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_file_is_too_long(module: str) -> None:
    lines = len(modules()[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by what its parts do (limit {MAX_LINES})"


def test_no_test_or_harness_file_is_too_long() -> None:
    """The same limit for the tests and the benchmark harness."""
    root = PACKAGE.parent
    too_long = {
        str(path.relative_to(root)): lines
        for folder in ("tests", "loadtests")
        for path in sorted((root / folder).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these by what their parts do (limit {MAX_LINES} lines): {too_long}"


def test_the_graph_is_read() -> None:
    """The reader works: it sees known edges (a test of the test)."""
    assert "ingest.delivery" in graph()["ingest.worker"]
    assert "reports.run" in reach("app")
