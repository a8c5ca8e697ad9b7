"""The import direction of ARCHITECTURE.md: pure packages stay pure, nothing imports gateway."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {
    "asyncio",
    "paho",
    "fastapi",
    "influxdb_client",
    "httpx",
    "sqlite3",
    "sqlalchemy",
    "aiomqtt",
}
FORBIDDEN: dict[str, set[str]] = {
    "devices": IO_LIBRARIES | {"adapters", "privacy", "gateway", "simulators"},
    "adapters": IO_LIBRARIES | {"privacy", "gateway", "simulators"},
    "privacy": IO_LIBRARIES | {"adapters", "gateway", "simulators"},
    "simulators": {"gateway"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_follow_the_architecture(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


# The registry's ORM tables are private to gateway.registry: everyone else asks the `Registry`
# and gets frozen values. A test that writes an old database's rows may reach in, and says so.
REGISTRY_MODELS = {"gateway.registry._models", "gateway.registry.models"}
MAY_IMPORT_REGISTRY_MODELS = {"tests/unit/test_registry_identifiers.py"}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_only_the_registry_imports_its_orm_models() -> None:
    registry = ROOT / "gateway" / "registry"
    offenders = sorted(
        name
        for top in ("gateway", "devices", "adapters", "privacy", "simulators", "bench", "tests")
        for path in (ROOT / top).rglob("*.py")
        if not path.is_relative_to(registry)
        and (name := str(path.relative_to(ROOT))) not in MAY_IMPORT_REGISTRY_MODELS
        and imported_modules(path) & REGISTRY_MODELS
    )
    assert offenders == []
