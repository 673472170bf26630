"""The layout rules of docs/architecture.md, checked on the source so they stay true.

Imports point down: nothing below ``server/`` imports it, ``engines/`` never imports the
runtime, and the sans-I/O core uses only the engines' protocol types (engines/base.py) and
nothing that does I/O. The core's modules stay small enough to read (600 lines at most).
Every import counts, also those only for type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "openrealtime"
CORE_MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def modules_in(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


LOWER_THAN_SERVER = ["core", "runtime", "engines", "storage", "telemetry", "transports"]


@pytest.mark.parametrize("folder", LOWER_THAN_SERVER)
def test_nothing_below_the_server_imports_it(folder: str) -> None:
    offenders = {
        module_name(path): sorted(n for n in imports_of(path) if under(n, "openrealtime.server"))
        for path in modules_in(folder)
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_engines_never_import_the_runtime() -> None:
    offenders = {
        module_name(path): sorted(n for n in imports_of(path) if under(n, "openrealtime.runtime"))
        for path in modules_in("engines")
    }
    assert {m: names for m, names in offenders.items() if names} == {}


PURE_ENGINE_RULES = ["openrealtime.engines.turn.end_of_turn", "openrealtime.engines.turn.backchannel"]
"""Decision rules that live beside their engines but are pure functions of numbers and text."""


def test_the_core_uses_only_the_engines_protocol_types() -> None:
    allowed = ["openrealtime.engines.base", *PURE_ENGINE_RULES]
    offenders = {
        module_name(path): sorted(
            n
            for n in imports_of(path)
            if under(n, "openrealtime.engines") and not any(under(n, a) for a in allowed)
        )
        for path in modules_in("core")
    }
    assert {m: names for m, names in offenders.items() if names} == {}


@pytest.mark.parametrize("module", PURE_ENGINE_RULES)
def test_the_engine_rules_the_core_uses_are_pure(module: str) -> None:
    """They import the standard library's pure parts only: no numpy, I/O, models or project code."""
    path = PACKAGE / (module.removeprefix("openrealtime.").replace(".", "/") + ".py")
    allowed = {"__future__", "math", "enum", "re", "dataclasses", "typing", "collections"}
    assert {n.split(".")[0] for n in imports_of(path)} - allowed == set()


def test_the_core_does_no_io_and_drives_nothing() -> None:
    """Sans-I/O: no event loop, sockets, threads or clocks; and it knows none of the layers
    that drive it."""
    forbidden = ["asyncio", "socket", "threading", "time", "openrealtime.runtime", "openrealtime.transports"]
    offenders = {
        module_name(path): sorted(n for n in imports_of(path) for f in forbidden if under(n, f))
        for path in modules_in("core")
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_auth_records_are_a_leaf() -> None:
    names = imports_of(PACKAGE / "auth_records.py")
    assert not [n for n in names if under(n, "openrealtime")], names


@pytest.mark.parametrize("path", modules_in("core"), ids=lambda p: p.name)
def test_core_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= CORE_MAX_LINES, f"{path.name} has {lines} lines"


def test_the_rules_see_imports() -> None:
    """The checker itself: relative imports resolve, and a known import is found."""
    names = imports_of(PACKAGE / "core" / "session.py")
    assert "openrealtime.core.state" in names and "openrealtime.engines.base.ChatRequest" in names
