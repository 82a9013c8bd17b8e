"""Fixtures of the dashboard tests: one registry imported from ../shared/dicom per backend.

The registry is imported once per module and backend (the 60 shared files, about 47
studies with two open alerts); pages are driven with FastAPI's TestClient. Users are
made and logged in with :func:`sign_in` once the security work is in place (before it,
the security stub treats every request as an admin and :func:`sign_in` does nothing).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kerma.config import Settings
from tests.db_fixtures import fresh_database, make_settings

SHARED_DICOM = Path(__file__).resolve().parents[2].parent / "shared" / "dicom"
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def has_security() -> bool:
    """Return whether the security work (users, login) is installed."""
    return importlib.util.find_spec("kerma.services.users") is not None


def csrf_of(html: str) -> str:
    """Return the first CSRF token of a page ("" when none)."""
    found = _CSRF.search(html)
    return found.group(1) if found else ""


def add_user(settings: Settings, name: str, role: str) -> None:
    """Create a user of ``role`` (no-op without the security work)."""
    if not has_security():
        return
    from kerma.services.users import Accounts, Actor

    accounts = Accounts(settings)
    try:
        accounts.add_user(name, PASSWORD, role, Actor(name="test-setup", kind="cli"))
    finally:
        accounts.close()


def sign_in(client: Any, name: str) -> Any:
    """Log ``client`` in as ``name`` through the login form (no-op without security)."""
    if not has_security():
        return client
    page = client.get("/login")
    answer = client.post(
        "/login",
        data={"username": name, "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text[:500]
    return client


def import_shared(settings: Settings) -> None:
    """Import ../shared/dicom into the registry of ``settings``."""
    if not SHARED_DICOM.is_dir():
        pytest.skip("../shared/dicom is not beside the repository")
    from kerma.api import Registry

    with Registry(settings=settings) as registry:
        registry.import_paths([SHARED_DICOM])


def shared_settings(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Yield settings of a fresh ``backend`` registry holding ../shared/dicom and 3 users."""
    folder = tmp_path_factory.mktemp("dashboard")
    with fresh_database(backend, folder) as url:
        settings = make_settings(url, folder)
        import_shared(settings)
        for name, role in (("admin", "admin"), ("phys", "physicist"), ("view", "viewer")):
            add_user(settings, name, role)
        yield settings


@pytest.fixture(scope="module")
def dash_client(dash_settings: Settings) -> Iterator[TestClient]:
    """A TestClient of the app, logged in as the admin."""
    from kerma.web.app import create_app

    with TestClient(create_app(dash_settings)) as client:
        sign_in(client, "admin")
        yield client


@pytest.fixture(scope="module")
def dash_registry(dash_settings: Settings) -> Iterator[Any]:
    """The registry of the app, for expected values (through the services)."""
    from kerma.api import Registry

    with Registry(settings=dash_settings) as registry:
        yield registry
