"""The import direction of ARCHITECTURE.md: pure packages stay pure, nothing imports gateway;
only gateway.cli imports simulators; nothing in the product imports bench or tests; bench
imports nothing from tests but tests.support, and no test module imports another."""

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
# tests/ and bench/ use the product; the product never imports them.
NOT_PRODUCT = {"bench", "tests"}
FORBIDDEN: dict[str, set[str]] = {
    "devices": IO_LIBRARIES | {"adapters", "privacy", "gateway", "simulators"} | NOT_PRODUCT,
    "adapters": IO_LIBRARIES | {"privacy", "gateway", "simulators"} | NOT_PRODUCT,
    "privacy": IO_LIBRARIES | {"adapters", "gateway", "simulators"} | NOT_PRODUCT,
    "simulators": {"gateway"} | NOT_PRODUCT,
    "gateway": NOT_PRODUCT,
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


def test_only_the_cli_imports_simulators() -> None:
    """The gateway sees a simulator only as devices on the broker; `gridgate simulate` and
    `gridgate demo` (gateway.cli) are the one door to it."""
    cli = ROOT / "gateway" / "cli"
    offenders = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "gateway").rglob("*.py")
        if not path.is_relative_to(cli) and "simulators" in imported_roots(path)
    )
    assert offenders == []


def test_inside_the_gateway_cli_imports_api_and_api_imports_runtime() -> None:
    """`cli → api → runtime → the rest`: only the CLI starts the API, and nothing the API
    builds on (runtime, pipeline, stores) knows it exists."""
    api, cli = ROOT / "gateway" / "api", ROOT / "gateway" / "cli"
    offenders = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "gateway").rglob("*.py")
        if not path.is_relative_to(api)
        and not path.is_relative_to(cli)
        and any(m == "gateway.api" or m.startswith("gateway.api.") for m in imported_modules(path))
    )
    assert offenders == []
    assert not any(
        m.startswith("gateway.cli") for p in api.rglob("*.py") for m in imported_modules(p)
    )


# A test module imports shared helpers from tests.support, never from another test module.
MAY_IMPORT_TEST_MODULES: dict[str, set[str]] = {}


def imported_test_modules(path: Path) -> set[str]:
    """The test modules (tests.….test_…) `path` imports, whatever it takes from them."""
    found = set()
    for module in imported_modules(path):
        parts = module.split(".")
        if parts[0] != "tests":
            continue
        for i, part in enumerate(parts[1:], start=2):
            if part.startswith("test_"):
                found.add(".".join(parts[:i]))
                break
    return found


def test_bench_imports_from_tests_only_the_support_code() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m
            for m in imported_modules(path)
            if m.split(".")[0] == "tests" and not m.startswith("tests.support")
        )
        for path in (ROOT / "bench").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_test_module_imports_another() -> None:
    offenders = {}
    for path in (ROOT / "tests").rglob("*.py"):
        name = str(path.relative_to(ROOT))
        found = imported_test_modules(path) - MAY_IMPORT_TEST_MODULES.get(name, set())
        if found:
            offenders[name] = sorted(found)
    assert offenders == {}


# One settings source: the environment is read by gateway/settings.py and nowhere else in the
# service and its pure packages (the simulators are a separate program: device fleets).
ENV_READERS = {"gateway/settings.py"}


def test_only_the_settings_read_the_environment() -> None:
    readers = sorted(
        str(path.relative_to(ROOT))
        for package in ("gateway", "devices", "adapters", "privacy")
        for path in (ROOT / package).rglob("*.py")
        if any(
            isinstance(node, ast.Attribute)
            and node.attr in {"environ", "getenv"}
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    )
    assert [r for r in readers if r not in ENV_READERS] == []
