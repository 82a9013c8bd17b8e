"""Fixtures of the web tests: the app on a fresh registry (SQLite and PostgreSQL), users.

The app is driven with FastAPI's TestClient (httpx) in this process; users and tokens
are made through :class:`kerma.services.users.Accounts`, as ``kerma users add`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import Depends, Request
from fastapi.testclient import TestClient

from kerma.config import Settings
from kerma.services.users import Accounts, Actor
from kerma.web.security import Principal, Role, require_role
from tests.db_fixtures import make_settings

#: Password of every test user (long enough for the 12-character minimum).
PASSWORD = "correct horse battery staple"

#: The audit actor of the fixtures' changes.
SETUP = Actor(name="test-setup", kind="cli")

#: Dependencies of the test pages (module level: the annotations are strings, resolved
#: in the module's namespace).
AnyRole = Annotated[Principal, Depends(require_role(Role.viewer))]
Physicist = Annotated[Principal, Depends(require_role(Role.physicist))]

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_csrf(html: str) -> str:
    """Return the CSRF token of the first form in ``html``."""
    found = _CSRF_RE.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    """Log ``client`` in through the login form (asserting success); return it."""
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": form_csrf(page.text),
            "next": "/admin/audit",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return client


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2-cffi's CHEAPEST profile (made for tests).

    The default parameters (64 MiB, 3 passes) take about half a second per hash on a
    busy test machine; ``test_passwords_are_stored_as_argon2_hashes`` checks them.
    """
    from argon2 import profiles

    import kerma.services.users

    monkeypatch.setattr(kerma.services.users, "PASSWORD_PARAMETERS", profiles.CHEAPEST)


@pytest.fixture
def web_settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings of the app's registry (fresh database, SQLite then PostgreSQL)."""
    return make_settings(database_url, tmp_path)


@pytest.fixture
def accounts(web_settings: Settings) -> Iterator[Accounts]:
    """The registry's accounts with three users: admin, phys (physicist), view (viewer)."""
    acc = Accounts(web_settings)
    for name, role in (("admin", "admin"), ("phys", "physicist"), ("view", "viewer")):
        acc.add_user(name, PASSWORD, role, SETUP)
    yield acc
    acc.close()


@pytest.fixture
def app(web_settings: Settings, accounts: Accounts):  # type: ignore[no-untyped-def]
    """The Kerma web app (create_app) on the test registry, plus two tiny test pages.

    ``GET /test/page`` (any role) renders ``base.html``, whose header holds the logout
    form and so the session's CSRF token; ``GET|POST /test/physicist`` needs the
    physicist role.
    """
    from kerma.web.app import create_app
    from kerma.web.templating import render

    application = create_app(web_settings)

    @application.get("/test/page")
    def page(request: Request, principal: AnyRole) -> Any:
        return render(request, "base.html")

    @application.api_route("/test/physicist", methods=["GET", "POST"])
    def physicist_only(principal: Physicist) -> dict[str, str]:
        return {"user": principal.username, "role": principal.role.name}

    yield application
    opened = getattr(application.state, "accounts", None)
    if opened is not None:
        opened.close()  # its connections, before the test database is dropped


def session_csrf(client: TestClient) -> str:
    """Return the CSRF token of the client's session (from the header's logout form)."""
    r = client.get("/test/page")
    assert r.status_code == 200, r.text
    return form_csrf(r.text)


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A client without session or token (lifespan run: the import worker)."""
    with TestClient(app) as c:
        yield c
