"""What a user installs: every imported package declared, and a wheel that migrates without the repository."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OURS = {"tracker", "tests", "loadtests", "__future__"}


def _declared(requirements: list[str]) -> set[str]:
    """Distribution names the requirements install directly, extras included (``redis[hiredis]``)."""
    names: set[str] = set()
    for req in map(Requirement, requirements):
        names.add(canonicalize_name(req.name))
        for extra in req.extras:
            for sub in map(Requirement, metadata.requires(req.name) or []):
                if sub.marker is not None and sub.marker.evaluate({"extra": extra}):
                    names.add(canonicalize_name(sub.name))
    return names


def _imports(paths: list[Path]) -> dict[str, str]:
    """Top-level third-party module -> the first file importing it."""
    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


RUNTIME = _declared(PROJECT["dependencies"])
TEST = RUNTIME | _declared(PROJECT["optional-dependencies"]["test"])


@pytest.mark.parametrize(
    ("where", "allowed"),
    [(("tracker",), RUNTIME), (("tests", "loadtests"), TEST)],
    ids=["package: dependencies", "tests and loadtests: dependencies + test extra"],
)
def test_every_imported_package_is_declared(where: tuple[str, ...], allowed: set[str]) -> None:
    files = sorted(p for d in where for p in (ROOT / d).rglob("*.py"))
    distributions = metadata.packages_distributions()
    undeclared = {
        module: f"{importer} ({', '.join(distributions.get(module, ['not installed']))})"
        for module, importer in _imports(files).items()
        if not {canonicalize_name(d) for d in distributions.get(module, [])} & allowed
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


@pytest.mark.slow(seconds=10)
def test_a_wheel_installed_without_the_repository_migrates(tmp_path: Path) -> None:
    """`pip wheel . --no-deps`, installed with `pip install --target` (no -e), run from outside the repository."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("tracker-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        *(p.relative_to(ROOT).as_posix() for p in (ROOT / "tracker" / "migrations").glob("*.sql")),
        *(p.relative_to(ROOT).as_posix() for p in (ROOT / "tracker" / "web" / "static").rglob("*") if p.is_file()),
        "tracker/py.typed",
    }
    assert shipped - names == set(), f"missing from the wheel: {sorted(shipped - names)}"

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "REDIS_", "CLICKHOUSE_"))},
        "PYTHONPATH": str(target),
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'new-chdb'}",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # migrate never connects to Redis
    }
    where = subprocess.run(
        [sys.executable, "-c", "import tracker; print(tracker.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    migrations = sorted(p.name for p in (ROOT / "tracker" / "migrations").glob("*.sql"))
    migrate = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "migrate"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert f"Applied {len(migrations)} migration(s)" in migrate.stdout, migrate.stdout
    again = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "migrate"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stdout + again.stderr
