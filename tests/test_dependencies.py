"""Every third-party module Kerma imports at run time is a declared dependency (issue #9).

Every ``import`` of ``src/kerma`` (module level and inside functions, read with
:mod:`ast`) outside the standard library and Kerma itself must come from a distribution
named in ``pyproject.toml``'s ``dependencies``, or, for an optional feature, from an
extra, and then only inside functions (the feature checks that it is installed before
it imports it). Modules are mapped to distributions with
:func:`importlib.metadata.packages_distributions`; one not installed here (an optional
extra) is taken as the distribution of the same name.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kerma"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def normalise(name: str) -> str:
    """Return a distribution name as PEP 503 compares them (``SQLAlchemy`` → ``sqlalchemy``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """Return the distribution of a requirement string (``psycopg[binary]>=3.1`` → psycopg)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalise(match.group(1))


DEPENDENCIES = {requirement_name(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {
    extra: {requirement_name(r) for r in requirements}
    for extra, requirements in PYPROJECT.get("optional-dependencies", {}).items()
    if extra != "test"
}


def third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """Return top-level module -> [(``file:line``, imported inside a function)]."""
    found: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                in_function.update(id(child) for child in ast.walk(node) if child is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "kerma" or top in sys.stdlib_module_names:
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found[top].append((where, id(node) in in_function))
    return dict(found)


IMPORTS = third_party_imports()
MODULE_DISTRIBUTIONS = packages_distributions()


def distributions_of(module: str) -> set[str]:
    """Return the distributions that provide ``module`` (its own name when not installed)."""
    return {normalise(d) for d in MODULE_DISTRIBUTIONS.get(module, [module])}


class TestDependencies:
    """pyproject.toml declares what the code imports."""

    def test_imports_are_found(self) -> None:
        """The scan sees the main libraries, also imports made inside functions."""
        assert {"pydicom", "pynetdicom", "sqlalchemy", "pandas", "typer", "fastapi"} <= set(IMPORTS)
        assert any(inside for _, inside in IMPORTS["pyskindose"])  # only ever in a function

    @pytest.mark.parametrize("module", sorted(IMPORTS))
    def test_module_is_declared(self, module: str) -> None:
        """The module's distribution is a dependency, or an extra imported only in functions."""
        distributions = distributions_of(module)
        if distributions & DEPENDENCIES:
            return
        extras = [extra for extra, names in EXTRAS.items() if distributions & names]
        places = IMPORTS[module]
        assert extras, (
            f"{module} (distribution {', '.join(sorted(distributions))}) is imported at "
            f"{', '.join(w for w, _ in places)} but not declared in pyproject.toml"
        )
        at_module_level = [w for w, inside in places if not inside]
        assert at_module_level == [], (
            f"{module} comes from the optional extra {extras[0]!r} but is imported at module "
            f"level in {', '.join(at_module_level)}: import it inside the function that "
            "checks it is installed"
        )

    def test_size_has_one_water_equivalent_diameter_algorithm(self) -> None:
        """kerma.dicom.size segments with SciPy, a core dependency, whatever is installed."""
        assert "scipy" in DEPENDENCIES
        source = (SRC / "dicom" / "size.py").read_text(encoding="utf-8")
        tree = ast.parse(source)
        guarded = [
            handler.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Try)
            for handler in node.handlers
            if isinstance(handler.type, ast.Name)
            and handler.type.id in {"ImportError", "ModuleNotFoundError"}
        ]
        assert guarded == [], "size.py switches algorithm on an import failure"
        assert "find_spec" not in source


class TestJobQueueDependency:
    """procrastinate (issue #15): MIT, pinned, and its schema is the one 0020 applies."""

    def test_procrastinate_is_pinned_to_the_migrated_schema(self) -> None:
        """pyproject pins the release whose schema migration 0020_job_queue applies."""
        from kerma.db.jobs import PROCRASTINATE_VERSIONS

        pinned = [r for r in PYPROJECT["dependencies"] if requirement_name(r) == "procrastinate"]
        assert [r.split("#")[0].strip() for r in pinned] == [
            f"procrastinate{PROCRASTINATE_VERSIONS}"
        ]

    def test_procrastinate_licence_is_mit(self) -> None:
        """The installed distribution declares the MIT licence (noted in pyproject)."""
        from importlib.metadata import metadata

        classifiers = metadata("procrastinate").get_all("Classifier") or []
        assert "License :: OSI Approved :: MIT License" in classifiers

    def test_no_procrastinate_schema_migration_after_the_applied_one(self) -> None:
        """The installed procrastinate adds no schema migration that Kerma does not apply.

        When this fails after an upgrade, add a Kerma revision that runs procrastinate's
        migration files after ``PROCRASTINATE_LAST_MIGRATION`` and update the constant.
        """
        from procrastinate.schema import SchemaManager

        from kerma.db.jobs import PROCRASTINATE_LAST_MIGRATION

        files = sorted(
            p.name
            for p in Path(SchemaManager.get_migrations_path()).glob("*.sql")
            if p.name[:2].isdigit()
        )
        assert files[-1] == PROCRASTINATE_LAST_MIGRATION
