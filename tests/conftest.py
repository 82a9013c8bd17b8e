"""Shared fixtures: paths to ../shared test data.

Fixtures for the registry database (SQLite and PostgreSQL) live in
``tests/db_fixtures.py`` and are re-exported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.db_fixtures import *  # noqa: F403  (registry fixtures on SQLite and PostgreSQL)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DICOM_DIR = SHARED / "dicom"
CASES_DIR = SHARED / "cases"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder beside the repository (skip when absent)."""
    if not DICOM_DIR.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    return SHARED


@pytest.fixture(autouse=True)
def _private_key_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep each test's pseudonym key file in a temporary folder, not in the checkout.

    Settings built without ``key_file`` (and ``kerma`` subprocesses that inherit the
    environment) would otherwise use ``kerma-key/kerma.key`` in the working folder.
    """
    folder = tmp_path_factory.mktemp("kerma-key")
    monkeypatch.setenv("KERMA_KEY_FILE", str(folder / "kerma.key"))


def load_case(stem: str) -> dict:
    """Return the ``*.expected.json`` of a case in ``../shared/cases``."""
    return json.loads((CASES_DIR / f"{stem}.expected.json").read_text())
