"""Registry fixtures: every store test runs on SQLite and on PostgreSQL.

Each test gets a freshly created database: a SQLite file in ``tmp_path``, or on
PostgreSQL ``CREATE DATABASE kerma_test_<random>`` (made through psycopg on the
``test`` database with autocommit, dropped afterwards). PostgreSQL is skipped only when
``KERMA_TEST_POSTGRES_URL`` is unset and no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from kerma.config import Settings

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

#: Settings fields every registry test pins, whatever the environment says.
TEST_PSEUDONYM_KEY = "kerma-test-pseudonym-key-0123456789abcdef"


def postgres_admin_url() -> str | None:
    """Return the PostgreSQL URL to create test databases from, or ``None`` when absent."""
    url = os.environ.get("KERMA_TEST_POSTGRES_URL")
    if url:
        return url
    import psycopg

    try:
        conninfo = make_url(DEFAULT_POSTGRES_URL).set(drivername="postgresql")
        with psycopg.connect(conninfo.render_as_string(hide_password=False), connect_timeout=2):
            return DEFAULT_POSTGRES_URL
    except psycopg.OperationalError:
        return None


@contextmanager
def fresh_database(backend: str, folder: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database of ``backend``; drop it afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'kerma-test.db'}"
        return
    admin = postgres_admin_url()
    if admin is None:
        pytest.skip("no PostgreSQL server (set KERMA_TEST_POSTGRES_URL)")
    import psycopg

    url = make_url(admin)
    name = f"kerma_test_{secrets.token_hex(6)}"
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(url: str, folder: Path, **overrides: object) -> Settings:
    """Return settings for a test registry: its database, archive and a fixed key."""
    values: dict[str, object] = {
        "database_url": url,
        "archive_dir": folder / "archive",
        "pseudonym_key": TEST_PSEUDONYM_KEY,
        "strict": False,
        # registry tests compare archived files with what was imported; the default
        # (encrypted) and de-identified archives are tested in tests/privacy
        "archive_mode": "original",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty registry database (SQLite file, then PostgreSQL)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def registry_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of the test registry (fresh database, archive in ``tmp_path``)."""
    return make_settings(database_url, tmp_path)


@pytest.fixture
def registry(registry_settings: Settings) -> Iterator[object]:
    """A :class:`kerma.Registry` on a fresh database, closed afterwards."""
    from kerma.api import Registry

    reg = Registry(settings=registry_settings)
    yield reg
    reg.close()
