"""The web application's security (issue #13): login, roles, CSRF, lock-out, tokens, audit.

Every test drives the real app (create_app) through httpx (TestClient) on a fresh
registry, SQLite then PostgreSQL; users and tokens are made through the service that
``kerma users add`` / ``kerma tokens add`` call.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from starlette.routing import BaseRoute, Mount, Route

from kerma.config import Settings
from kerma.services.users import Accounts, AuditFilter, authenticate, lockout_seconds
from kerma.web.routes.accounts import safe_next
from kerma.web.security import Role
from tests.conftest import DICOM_DIR
from tests.web.conftest import PASSWORD, SETUP, form_csrf, login, session_csrf

#: For tests whose outcome does not depend on the database back end (the route table,
#: cookies, roles, CSRF): SQLite only. Storage tests (lock-out, audit log, tokens,
#: STOW-RS) run on SQLite and PostgreSQL.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

#: Paths open without login: the login form and static files.
PUBLIC = {"/login", "/health"}

_PARAM_RE = re.compile(r"\{([^}:]+)(:[^}]*)?\}")


def concrete(path: str) -> str:
    """Return a request path for a route path: every ``{param}`` becomes ``1``."""
    return _PARAM_RE.sub("1", path)


def walk_routes(app: FastAPI) -> Iterator[tuple[str, set[str], BaseRoute]]:
    """Yield ``(path, methods, original route)`` of every route, included routers flattened.

    FastAPI 0.165 keeps included routers as such in ``app.routes``;
    ``fastapi.routing.iter_route_contexts`` (what its OpenAPI generation uses) flattens
    them. Older FastAPI lists the routes themselves.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.165
        for route in app.routes:
            yield getattr(route, "path", ""), set(getattr(route, "methods", None) or ()), route
        return
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        yield context.path or "", set(context.methods or ()), original


def role_dependencies(route: APIRoute) -> list[Role]:
    """Return the ``require_role`` minimum roles in a route's dependency tree."""
    found: list[Role] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        role = getattr(dep.call, "kerma_minimum_role", None)
        if role is not None:
            found.append(role)
        stack.extend(dep.dependencies)
    return found


def audit_actions(accounts: Accounts, **filters: object) -> list[tuple[str, str, str]]:
    """Return (username, action, target) of the audit log, oldest first."""
    page = accounts.audit_page(AuditFilter(**filters), per_page=500)  # type: ignore[arg-type]
    return [(e.username, e.action, e.target) for e in reversed(page.entries)]


@SQLITE_ONLY
class TestRouteTable:
    """Every route of the app refuses a request without session or token."""

    def test_every_route_without_login_is_refused(self, app, client: TestClient) -> None:  # type: ignore[no-untyped-def]
        """Each method of each route: 401 (API) or 303 to /login (pages); /login is open."""
        checked = 0
        for route_path, methods, route in walk_routes(app):
            if isinstance(route, Mount):
                continue
            assert isinstance(route, Route), route
            for method in sorted(methods or {"GET"}):
                if method == "HEAD":
                    continue
                path = concrete(route_path)
                r = client.request(method, path, follow_redirects=False)
                if route_path in PUBLIC:
                    assert r.status_code in (200, 403), (method, path, r.status_code)
                    continue
                checked += 1
                if r.status_code == 303:
                    assert r.headers["location"].startswith("/login?next="), (method, path)
                else:
                    assert r.status_code == 401, (method, path, r.status_code)
        assert checked >= 10  # the admin pages, STOW-RS, the OpenAPI description, docs

    def test_every_api_route_depends_on_require_role(self, app) -> None:  # type: ignore[no-untyped-def]
        """A route without require_role would be open to any logged-in role: none exists."""
        routes = [(path, route) for path, _m, route in walk_routes(app)]
        missing = [
            path
            for path, route in routes
            if isinstance(route, APIRoute) and path not in PUBLIC and not role_dependencies(route)
        ]
        assert missing == []
        assert sum(isinstance(route, APIRoute) for _p, route in routes) >= 10

    def test_openapi_and_docs_need_login(self, client: TestClient) -> None:
        """/openapi.json answers 401 without a token; /docs redirects to the login page."""
        assert client.get("/openapi.json").status_code == 401
        r = client.get("/docs", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fdocs"

    def test_non_page_requests_get_401_and_keep_the_login_form(self, client: TestClient) -> None:
        """/favicon.ico, images and scripts: 401, no redirect; the login form stays valid."""
        form = client.get("/login")
        token = form_csrf(form.text)
        image = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
        for path, headers in (
            ("/favicon.ico", {"Accept": image}),
            ("/robots.txt", {}),
            ("/studies", {"Accept": "application/json"}),
            ("/analysis.js.map", {"Accept": "*/*"}),
        ):
            r = client.get(path, headers=headers, follow_redirects=False)
            assert r.status_code == 401, (path, r.status_code)
            assert "set-cookie" not in r.headers, path
        # a browser navigation is still sent to the login page
        page = client.get(
            "/studies", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"},
            follow_redirects=False,
        )  # fmt: skip
        assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fstudies"
        # a second login page (another tab) keeps the token of the form already shown
        assert form_csrf(client.get("/login").text) == token
        r = client.post(
            "/login",
            data={"username": "view", "password": PASSWORD, "csrf_token": token, "next": "/"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/"

    def test_security_headers(self, client: TestClient) -> None:
        """No framing, no sniffing, same-origin referrer; logged-in pages are not cached."""
        for r in (client.get("/login"), client.get("/static/kerma.css")):
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["content-security-policy"] == "frame-ancestors 'none'"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "same-origin"
        login(client, "view")
        assert client.get("/test/page").headers["cache-control"] == "no-store"

    def test_static_files_are_public(self, client: TestClient) -> None:
        """The stylesheet is served without login."""
        assert client.get("/static/kerma.css").status_code == 200

    def test_health_is_public_and_names_no_data(self, app, client: TestClient) -> None:  # type: ignore[no-untyped-def]
        """GET /health answers without login, with only the status and the warm-up flag."""
        r = client.get("/health")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "overview_ready": True}  # warm=False: ready
        app.state.warmed.clear()
        assert client.get("/health").json()["overview_ready"] is False


def test_after_login_next_page_is_local_only() -> None:
    """The page after login is a local path; another site's address is refused."""
    assert safe_next("/admin/audit?page=2") == "/admin/audit?page=2"
    refused = ("//evil.example", "https://evil.example", "\\\\x", "/\t/evil.example", "/ /x")
    assert [safe_next(v) for v in refused] == ["/"] * len(refused)


@SQLITE_ONLY
class TestLogin:
    """The login form, the session cookie, logout."""

    def test_login_sets_session_cookie_httponly_samesite(self, client: TestClient) -> None:
        """A good login: 303 to next, cookie HttpOnly + SameSite=Lax, not Secure over http."""
        page = client.get("/login")
        r = client.post(
            "/login",
            data={
                "username": "admin",
                "password": PASSWORD,
                "csrf_token": form_csrf(page.text),
                "next": "/admin/users",
            },
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/admin/users"
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("kerma_session="))
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/"} <= attributes
        assert "secure" not in attributes
        page = client.get("/admin/users")
        assert page.status_code == 200
        assert "admin (admin)" in page.text  # the header shows who is logged in

    def test_cookie_is_secure_over_https(self, app) -> None:  # type: ignore[no-untyped-def]
        """Over https (auto mode) the session cookie gets the Secure attribute."""
        with TestClient(app, base_url="https://testserver") as client:
            page = client.get("/login")
            r = client.post(
                "/login",
                data={"username": "phys", "password": PASSWORD, "csrf_token": form_csrf(page.text)},
                follow_redirects=False,
            )
            cookie = next(
                c for c in r.headers.get_list("set-cookie") if c.startswith("kerma_session=")
            )
            assert "secure" in {a.strip().lower() for a in cookie.split(";")}

    def test_wrong_password_is_refused_and_audited(
        self, client: TestClient, accounts: Accounts
    ) -> None:
        """A wrong password: 401, no session; the audit log has the name that was tried."""
        page = client.get("/login")
        r = client.post(
            "/login",
            data={
                "username": "phys",
                "password": "wrong-password-1",
                "csrf_token": form_csrf(page.text),
            },
            follow_redirects=False,
        )
        assert r.status_code == 401
        assert "Wrong username or password." in r.text
        assert "kerma_session" not in client.cookies
        page = client.get("/login")
        client.post(
            "/login",
            data={"username": "nobody", "password": "x" * 12, "csrf_token": form_csrf(page.text)},
        )
        login(client, "phys")
        entries = audit_actions(accounts, action="login")
        assert entries == [
            ("phys", "login.failed", ""),
            ("nobody", "login.failed", ""),
            ("phys", "login.ok", ""),
        ]
        page = accounts.audit_page(AuditFilter(action="login"))
        assert {e.client_address for e in page.entries} == {"testclient"}

    def test_next_is_escaped_in_the_login_form(self, client: TestClient) -> None:
        """A crafted next= cannot inject markup into the login page."""
        r = client.get('/login?next=/x"><script>alert(1)</script>')
        assert r.status_code == 200
        assert "<script>alert(1)" not in r.text
        assert "&lt;script&gt;" in r.text or "&#34;&gt;" in r.text

    def test_login_form_without_its_csrf_token_is_refused(self, client: TestClient) -> None:
        """A login posted without the form's token (login CSRF) is refused with 403."""
        r = client.post(
            "/login", data={"username": "admin", "password": PASSWORD}, follow_redirects=False
        )
        assert r.status_code == 403
        assert "kerma_session" not in client.cookies

    def test_logout_ends_the_session(self, client: TestClient, accounts: Accounts) -> None:
        """After logout the old cookie no longer opens a page; logout is audited."""
        login(client, "view")
        cookie = client.cookies["kerma_session"]
        r = client.post(
            "/logout", data={"csrf_token": session_csrf(client)}, follow_redirects=False
        )
        assert r.status_code == 303 and r.headers["location"] == "/login"
        client.cookies.set("kerma_session", cookie)
        assert client.get("/test/page", follow_redirects=False).status_code == 303
        assert ("view", "logout", "") in audit_actions(accounts)


@SQLITE_ONLY
class TestRoles:
    """A role too low gets 403."""

    def test_viewer_gets_403_on_physicist_route(self, client: TestClient) -> None:
        """A viewer may not open a physicist page; a physicist may."""
        login(client, "view")
        r = client.get("/test/physicist")
        assert r.status_code == 403
        assert "physicist" in r.json()["detail"]
        client.cookies.clear()
        login(client, "phys")
        assert client.get("/test/physicist").json() == {"user": "phys", "role": "physicist"}

    def test_physicist_gets_403_on_admin_pages(self, client: TestClient) -> None:
        """Users, tokens and the audit log are for admins only."""
        login(client, "phys")
        for path in ("/admin/users", "/admin/tokens", "/admin/audit"):
            assert client.get(path).status_code == 403, path

    def test_role_change_takes_effect_at_once(self, client: TestClient, accounts: Accounts) -> None:
        """A demoted user's sessions end: the next request needs a new login."""
        login(client, "phys")
        assert client.get("/test/physicist").status_code == 200
        accounts.set_role("phys", "viewer", SETUP)
        assert client.get("/test/physicist", follow_redirects=False).status_code == 303
        login(client, "phys")
        assert client.get("/test/physicist").status_code == 403

    def test_disabled_user_cannot_log_in_and_loses_session(
        self, client: TestClient, accounts: Accounts
    ) -> None:
        """Disabling a user ends their session and refuses their next login."""
        login(client, "view")
        accounts.set_disabled("view", True, SETUP)
        assert client.get("/test/page", follow_redirects=False).status_code == 303
        page = client.get("/login")
        r = client.post(
            "/login",
            data={"username": "view", "password": PASSWORD, "csrf_token": form_csrf(page.text)},
        )
        assert r.status_code == 401


@SQLITE_ONLY
class TestCSRF:
    """Every state-changing request of a browser session needs the session's CSRF token."""

    def test_post_without_csrf_token_is_refused(
        self, client: TestClient, accounts: Accounts
    ) -> None:
        """No token, a wrong token: 403 and nothing done; the right one (field or header): done."""
        login(client, "admin")
        r = client.post("/admin/tokens", data={"name": "t1", "role": "viewer"})
        assert r.status_code == 403
        r = client.post("/admin/tokens", data={"name": "t1", "role": "viewer", "csrf_token": "x"})
        assert r.status_code == 403
        assert accounts.list_tokens() == []
        token = session_csrf(client)
        r = client.post("/admin/tokens", data={"name": "t1", "role": "viewer", "csrf_token": token})
        assert r.status_code == 200
        r = client.post(
            "/admin/tokens",
            data={"name": "t2", "role": "viewer"},
            headers={"X-CSRF-Token": token},
        )
        assert r.status_code == 200
        assert [t.name for t in accounts.list_tokens()] == ["t1", "t2"]

    def test_json_post_needs_header(self, client: TestClient) -> None:
        """A session's JSON POST needs the X-CSRF-Token header."""
        login(client, "phys")
        assert client.post("/test/physicist", json={}).status_code == 403
        r = client.post("/test/physicist", json={}, headers={"X-CSRF-Token": session_csrf(client)})
        assert r.status_code == 200

    def test_bearer_token_needs_no_csrf(self, client: TestClient, accounts: Accounts) -> None:
        """An API token is not a browser session: no CSRF token (but pages do not take it)."""
        _info, token = accounts.add_token("script", "physicist", SETUP)
        r = client.post("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 415  # authenticated; the body is not multipart/related
        r = client.get(
            "/test/page", headers={"Authorization": f"Bearer {token}"}, follow_redirects=False
        )
        assert r.status_code == 303  # a page does not accept a token


class TestLockout:
    """Failed logins lock the account with back-off."""

    def test_lockout_backs_off(self, accounts: Accounts, web_settings: Settings) -> None:
        """5 failures lock 60 s; the right password is refused while locked; then 120 s."""
        t0 = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)

        def attempt(password: str, at: dt.datetime):  # type: ignore[no-untyped-def]
            with accounts.session() as s:
                return authenticate(
                    s, username="phys", password=password, settings=web_settings, now=at
                )

        for i in range(4):
            result = attempt("wrong password!", t0 + dt.timedelta(seconds=i))
            assert not result.is_ok and result.locked_until is None
        fifth = attempt("wrong password!", t0 + dt.timedelta(seconds=4))
        assert fifth.locked_until == t0 + dt.timedelta(seconds=4 + 60)
        during = attempt(PASSWORD, t0 + dt.timedelta(seconds=30))
        assert not during.is_ok and "locked" in during.message
        sixth = attempt("wrong password!", t0 + dt.timedelta(seconds=65))
        assert sixth.locked_until == t0 + dt.timedelta(seconds=65 + 120)
        seventh = attempt("wrong password!", t0 + dt.timedelta(seconds=200))
        assert seventh.locked_until == t0 + dt.timedelta(seconds=200 + 240)
        ok = attempt(PASSWORD, t0 + dt.timedelta(seconds=500))
        assert ok.is_ok
        (user,) = [u for u in accounts.list_users() if u.username == "phys"]
        assert (user.failed_logins, user.locked_until) == (0, None)
        actions = [a for _, a, _ in audit_actions(accounts, username="phys")]
        assert actions == [
            *["login.failed"] * 5,
            "user.lock",
            "login.locked",
            "login.failed",
            "user.lock",
            "login.failed",
            "user.lock",
            "login.ok",
        ]

    def test_concurrent_failures_all_count(
        self, accounts: Accounts, web_settings: Settings
    ) -> None:
        """Eight wrong passwords at once from eight threads: the counter says 8."""
        from concurrent.futures import ThreadPoolExecutor

        relaxed = Accounts(web_settings.model_copy(update={"login_max_failures": 50}))
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(
                    pool.map(lambda i: relaxed.login("phys", f"wrong {i:02d} pass", None), range(8))
                )
        finally:
            relaxed.close()
        assert [r[0].is_ok for r in results] == [False] * 8
        (user,) = [u for u in accounts.list_users() if u.username == "phys"]
        assert user.failed_logins == 8

    def test_lockout_durations(self, web_settings: Settings) -> None:
        """Back-off: 0 below the threshold, then 60, 120, 240 s ... capped at one day."""
        assert [lockout_seconds(n, web_settings) for n in range(1, 9)] == [
            0,
            0,
            0,
            0,
            60,
            120,
            240,
            480,
        ]
        assert lockout_seconds(40, web_settings) == 86400

    def test_web_login_is_locked_after_five_failures(self, client: TestClient) -> None:
        """Through the form: after 5 wrong passwords the right one is refused as locked."""
        for _ in range(5):
            page = client.get("/login")
            client.post(
                "/login",
                data={
                    "username": "admin",
                    "password": "not the password",
                    "csrf_token": form_csrf(page.text),
                },
            )
        page = client.get("/login")
        r = client.post(
            "/login",
            data={"username": "admin", "password": PASSWORD, "csrf_token": form_csrf(page.text)},
        )
        assert r.status_code == 401
        assert "locked" in r.text


class TestAuditLog:
    """The audit log: user changes and logins recorded, append-only in the database."""

    def test_user_changes_through_pages_are_audited(
        self, client: TestClient, accounts: Accounts
    ) -> None:
        """Add, role, password, disable, token add/revoke: each one entry by the admin."""
        login(client, "admin")
        csrf = session_csrf(client)
        steps = [
            ("/admin/users", {"username": "newbie", "password": PASSWORD, "role": "viewer"}),
            ("/admin/users/newbie/role", {"role": "physicist"}),
            ("/admin/users/newbie/password", {"password": "another long password"}),
            ("/admin/users/newbie/disable", {}),
            ("/admin/tokens", {"name": "ct3", "role": "physicist"}),
            ("/admin/tokens/ct3/revoke", {}),
        ]
        for path, data in steps:
            r = client.post(path, data={**data, "csrf_token": csrf})
            assert r.status_code == 200, (path, r.text)
        mine = audit_actions(accounts, username="admin")
        assert mine[1:] == [
            ("admin", "user.add", "newbie"),
            ("admin", "user.role", "newbie"),
            ("admin", "user.password", "newbie"),
            ("admin", "user.disable", "newbie"),
            ("admin", "token.add", "ct3"),
            ("admin", "token.revoke", "ct3"),
        ]
        page = client.get("/admin/audit", params={"user": "admin", "action": "token"})
        assert page.status_code == 200
        assert page.text.count("token.") == 2 + page.text.count('<option value="token.')

    def test_audit_filter_by_user_action_and_date(self, accounts: Accounts) -> None:
        """Filters run in the database: user, action family, UTC day range; paged."""
        today = dt.datetime.now(dt.UTC).date()
        for i in range(3):
            accounts.add_user(f"u{i}", PASSWORD, "viewer", SETUP)
        assert accounts.audit_page(AuditFilter(username="test-setup")).total == 6
        assert accounts.audit_page(AuditFilter(action="user")).total == 6
        assert accounts.audit_page(AuditFilter(action="user.ad")).total == 0  # no prefix match
        assert accounts.audit_page(AuditFilter(since=today, until=today)).total == 6
        yesterday = today - dt.timedelta(days=1)
        assert accounts.audit_page(AuditFilter(until=yesterday)).total == 0
        page = accounts.audit_page(AuditFilter(), page=2, per_page=4)
        assert (page.total, page.pages, len(page.entries)) == (6, 2, 2)
        assert [e.target for e in page.entries] == ["phys", "admin"]  # oldest last

    def test_weak_password_is_refused_with_a_message(
        self, client: TestClient, accounts: Accounts
    ) -> None:
        """A password shorter than 12 characters: 400 with the reason, no user made."""
        login(client, "admin")
        r = client.post(
            "/admin/users",
            data={
                "username": "x",
                "password": "short",
                "role": "viewer",
                "csrf_token": session_csrf(client),
            },
        )
        assert r.status_code == 400
        assert "at least 12 characters" in r.text
        assert "x" not in {u.username for u in accounts.list_users()}

    def test_last_admin_cannot_be_disabled(self, accounts: Accounts) -> None:
        """Disabling or demoting the only admin is refused."""
        from kerma.errors import AccountError

        with pytest.raises(AccountError, match="last active admin"):
            accounts.set_disabled("admin", True, SETUP)
        with pytest.raises(AccountError, match="last active admin"):
            accounts.set_role("admin", "viewer", SETUP)

    def test_audit_log_is_append_only(self, accounts: Accounts, web_settings: Settings) -> None:
        """UPDATE and DELETE of audit_log rows through SQL are refused by the database."""
        engine = create_engine(web_settings.database_url)
        try:
            for statement in (
                "UPDATE audit_log SET username = 'someone else'",
                "DELETE FROM audit_log",
            ):
                with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                    conn.execute(text(statement))
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == 3
        finally:
            engine.dispose()

    def test_passwords_are_stored_as_argon2_hashes(
        self, accounts: Accounts, web_settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The database holds an Argon2id hash per user (default parameters), never the password."""
        import kerma.services.users

        monkeypatch.setattr(kerma.services.users, "PASSWORD_PARAMETERS", None)
        accounts.add_user("fourth", PASSWORD, "viewer", SETUP)
        accounts.set_password("phys", PASSWORD + "!", SETUP)
        engine = create_engine(web_settings.database_url)
        try:
            with engine.connect() as conn:
                hashes = (
                    conn.execute(text("SELECT password_hash FROM user_account")).scalars().all()
                )
                dump = " ".join(
                    str(v)
                    for table in ("user_account", "audit_log", "user_session")
                    for row in conn.execute(text(f"SELECT * FROM {table}"))
                    for v in row
                )
        finally:
            engine.dispose()
        assert len(hashes) == 4
        assert all(h.startswith("$argon2id$v=19$") for h in hashes)
        assert sum(h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for h in hashes) == 2
        assert PASSWORD not in dump


class TestTokens:
    """API tokens: hashed at rest, revocable, roles apply."""

    def test_token_is_stored_as_sha256_only(
        self, accounts: Accounts, web_settings: Settings
    ) -> None:
        """The token is not in the database; its SHA-256 is."""
        import hashlib

        _info, token = accounts.add_token("pacs", "physicist", SETUP)
        assert token.startswith("kerma_") and len(token) > 40
        engine = create_engine(web_settings.database_url)
        try:
            with engine.connect() as conn:
                stored = conn.execute(text("SELECT token_hash FROM api_token")).scalar_one()
        finally:
            engine.dispose()
        assert stored == hashlib.sha256(token.encode()).hexdigest()

    def test_revoked_token_is_refused(self, client: TestClient, accounts: Accounts) -> None:
        """After revocation a token gets 401."""
        _info, token = accounts.add_token("gone", "physicist", SETUP)
        headers = {"Authorization": f"Bearer {token}"}
        assert client.post("/dicomweb/studies", headers=headers).status_code == 415
        accounts.revoke_token("gone", SETUP)
        assert client.post("/dicomweb/studies", headers=headers).status_code == 401
        # the answer says the token was refused, not that none was sent (regression: both
        # answered "Authentication required: send 'Authorization: Bearer <token>'")
        refused = client.get("/api/v1/studies", headers=headers)
        assert refused.status_code == 401
        assert "token is not valid" in refused.json()["detail"]
        assert "kerma tokens add" in refused.json()["detail"]
        missing = client.get("/api/v1/studies")
        assert "Authentication required" in missing.json()["detail"]


STOW_FILE = "CT-RDSR-Siemens-Multi-1.dcm"
BOUNDARY = "kerma-websec"


def stow_body() -> bytes:
    """Return a multipart/related body of one shared RDSR."""
    data = (DICOM_DIR / STOW_FILE).read_bytes()
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


class TestStow:
    """STOW-RS needs a token (or session) with the physicist role."""

    CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

    def test_stow_without_token_401_with_token_imported(
        self, app, client: TestClient, accounts: Accounts, shared_dir
    ) -> None:  # type: ignore[no-untyped-def]
        """No token: 401, nothing spooled; viewer token: 403; physicist token: 200, imported."""
        from kerma.api import Registry

        body = stow_body()
        r = client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": self.CONTENT_TYPE}
        )
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        _v, viewer_token = accounts.add_token("viewer-script", "viewer", SETUP)
        r = client.post(
            "/dicomweb/studies",
            content=body,
            headers={"Content-Type": self.CONTENT_TYPE, "Authorization": f"Bearer {viewer_token}"},
        )
        assert r.status_code == 403
        assert app.state.spool.pending() == []
        _p, token = accounts.add_token("ct-room-3", "physicist", SETUP)
        r = client.post(
            "/dicomweb/studies",
            content=body,
            headers={"Content-Type": self.CONTENT_TYPE, "Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        assert app.state.worker.wait_idle(300)
        with Registry(settings=app.state.settings) as reg:
            studies = reg.studies()
        assert len(studies) == 1
        (listed,) = [t for t in accounts.list_tokens() if t.name == "ct-room-3"]
        assert listed.last_used_at is not None
        (entry,) = accounts.audit_page(AuditFilter(action="dicomweb")).entries
        assert (entry.username, entry.principal_kind, entry.detail) == (
            "ct-room-3",
            "token",
            {"stored": 1, "failed": 0},
        )
