"""DESIGN §7 as a test: the core never imports an adapter, and adapters never import each
other at run time (types under ``TYPE_CHECKING`` only); only app.py wires them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "arqond"
# Each adapter: a package, or a module of its own.
ADAPTERS = ("transports", "moo", "streams", "cluster", "system")


def part_of(module: str) -> str | None:
    """The adapter (or "core") an ``arqond.…`` module belongs to; None for the shared leaves
    (config, log, unix, principals, ...) and app.py."""
    parts = module.split(".")
    if parts[0] != "arqond" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in (*ADAPTERS, "core") else None


def runtime_imports(path: Path) -> set[str]:
    """The arqond modules ``path`` imports when it runs (not those under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("arqond.")}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_part_imports_another_adapter_at_run_time(path):
    module = ".".join(("arqond", *path.relative_to(PACKAGE).with_suffix("").parts))
    home = part_of(module)
    if home is None:
        return      # app.py wires everything; the leaves import nothing of the parts
    crossing = sorted(name for name in runtime_imports(path)
                      if part_of(name) not in (None, "core", home))
    assert crossing == [], f"{module} ({home}) imports {crossing}"
    if home == "core":
        assert [name for name in runtime_imports(path) if part_of(name) not in (None, "core")
                ] == []
