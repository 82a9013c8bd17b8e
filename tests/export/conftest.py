"""Registries of demo studies per back end for the export tests (SQLite, PostgreSQL).

``registry`` is shared by the tests of a module (read only); ``fresh_registry`` is a
new one per test (for tests that change studies).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kerma.demo.generator import generate_demo_files
from kerma.services.registry import Registry
from tests.db_fixtures import BACKENDS, fresh_database, make_settings

#: Studies of the demo registry (CT, DX, MG, RF/XA rooms of the demo generator).
N_STUDIES = 60
END_DATE = dt.date(2026, 6, 30)


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write the demo dose reports once per session."""
    folder = tmp_path_factory.mktemp("export-demo")
    generate_demo_files(folder, studies=N_STUDIES, seed=14, end_date=END_DATE)
    return folder


@contextmanager
def demo_registry(backend: str, files: Path, folder: Path) -> Iterator[Registry]:
    """Yield a new registry of ``backend`` holding the demo studies; drop it afterwards."""
    with fresh_database(backend, folder) as url:
        reg = Registry(settings=make_settings(url, folder))
        try:
            summary = reg.import_paths([files])
            assert sum(summary.imported.values()) == N_STUDIES, summary
            yield reg
        finally:
            reg.close()


@pytest.fixture(scope="module", params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, demo_files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """Yield a registry of the demo studies shared by a module's tests (do not change it)."""
    with demo_registry(request.param, demo_files, tmp_path_factory.mktemp("reg")) as reg:
        yield reg


@pytest.fixture(params=BACKENDS)
def fresh_registry(
    request: pytest.FixtureRequest, demo_files: Path, tmp_path: Path
) -> Iterator[Registry]:
    """Yield a registry of the demo studies of this test alone."""
    with demo_registry(request.param, demo_files, tmp_path) as reg:
        yield reg
