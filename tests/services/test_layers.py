"""DESIGN.md's layers in the packages this work owns: imports point down, also inside functions.

Every ``import``/``from ... import`` of ``kerma.*`` anywhere in a module (top level or
inside a function) is read with :mod:`ast`; a module may import only its package's
"may import" column of DESIGN.md (the foundation modules ``kerma.records``,
``kerma.units``, ``kerma.errors`` and ``kerma.config`` everywhere).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kerma"

FOUNDATION = ("kerma.records", "kerma.units", "kerma.errors", "kerma.config", "kerma.files")

#: package -> what it may import (DESIGN.md, "Layers").
ALLOWED: dict[str, tuple[str, ...]] = {
    "kerma.analysis": (*FOUNDATION, "kerma.analysis"),
    "kerma.db": (*FOUNDATION, "kerma.db"),
    "kerma.services": (
        *FOUNDATION,
        "kerma.services",
        "kerma.db",
        "kerma.analysis",
        "kerma.ingest",
        "kerma.dicom",
    ),
    "kerma.api": (*FOUNDATION, "kerma.api", "kerma.services", "kerma.db", "kerma.ingest"),
}


def kerma_imports(path: Path) -> list[tuple[int, str]]:
    """Return (line, module) of every ``kerma`` import in a file, wherever it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("kerma")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kerma":
                found += [(node.lineno, f"kerma.{a.name}") for a in node.names]
            elif node.module.startswith("kerma."):
                found.append((node.lineno, node.module))
    return found


def modules_of(package: str) -> list[Path]:
    """Return the source files of a package (or the module file)."""
    relative = package.removeprefix("kerma").strip(".").replace(".", "/")
    folder = SRC / relative
    if folder.is_dir():
        return sorted(folder.rglob("*.py"))
    return [folder.with_suffix(".py")]


def violations(package: str) -> list[str]:
    """Return ``file:line imports module`` for each import outside the package's column."""
    allowed = ALLOWED[package]
    out = []
    for path in modules_of(package):
        for line, module in kerma_imports(path):
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                out.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    """No module of the package imports a layer above or beside it."""
    assert violations(package) == []


def test_a_forbidden_import_inside_a_function_is_found(tmp_path: Path) -> None:
    """The check sees an import hidden in a function (the kind the issue found)."""
    path = tmp_path / "module.py"
    path.write_text("def f():\n    from kerma.api import Registry\n    return Registry\n")
    assert kerma_imports(path) == [(2, "kerma.api")]
