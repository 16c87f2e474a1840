"""The package's import graph: leaf modules stay leaves and data flows one way (STYLE.md).

Read from the source with ``ast`` (imports inside functions count too), so a
shortcut from the redirect to the reports, or a leaf that grows a dependency,
fails here rather than in review.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tracker"


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the project's modules it imports."""
    out = {}
    for path in sorted(PACKAGE.glob("*.py")):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "tracker":
                deps |= {alias.name for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tracker."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tracker.")}
        out[path.stem] = frozenset(deps - {path.stem})
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


LEAVES = ["keys", "errors", "events", "metrics", "records", "money", "ids", "codes", "clickid", "signature", "logs"]


@pytest.mark.parametrize("module", LEAVES)
def test_leaf_modules_import_nothing_of_the_project(module: str) -> None:
    assert graph()[module] == frozenset()


@pytest.mark.parametrize(("module", "allowed"), [("settings", {"errors"}), ("delivery", {"keys"})])
def test_near_leaves_import_only_leaves(module: str, allowed: set[str]) -> None:
    assert graph()[module] <= allowed


@pytest.mark.parametrize(
    ("stage", "never"),
    [
        # The redirect knows nothing of what happens to a click after the stream.
        ("redirect", {"reports", "reports_api", "ingest", "enrich", "delivery", "postbacks", "registry"}),
        # Reports read ClickHouse; they know nothing of how rows got there.
        ("reports_api", {"redirect", "clicklog", "ingest", "delivery", "enrich", "postbacks"}),
        # Ingest moves streams into ClickHouse; it answers no request.
        ("ingest", {"redirect", "reports", "reports_api", "postbacks", "registry", "services", "http"}),
        ("postbacks", {"redirect", "reports", "ingest", "delivery", "enrich"}),
    ],
)
def test_data_flows_one_way(stage: str, never: set[str]) -> None:
    assert reach(stage) & never == set()


def test_no_import_cycles() -> None:
    cyclic = sorted(m for m in graph() if m in reach(m))
    assert cyclic == []


def test_the_graph_is_read() -> None:
    """The reader works: it sees known edges (a test of the test)."""
    assert "delivery" in graph()["ingest"]
    assert "reports" in reach("app")
