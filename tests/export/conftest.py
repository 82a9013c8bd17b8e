"""A small registry of demo studies per back end for the export tests (SQLite, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
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


@pytest.fixture(params=BACKENDS)
def registry(
    request: pytest.FixtureRequest, demo_files: Path, tmp_path: Path
) -> Iterator[Registry]:
    """Yield a fresh registry holding the demo studies, on SQLite and on PostgreSQL."""
    with fresh_database(request.param, tmp_path) as url:
        reg = Registry(settings=make_settings(url, tmp_path))
        try:
            summary = reg.import_paths([demo_files])
            assert sum(summary.imported.values()) == N_STUDIES, summary
            yield reg
        finally:
            reg.close()
