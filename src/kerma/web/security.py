"""Who is asking, and may they: the web application's security (issue #13; docs/security.md).

- :class:`Role` — ``viewer`` < ``physicist`` < ``admin`` (ordered).
- :class:`Principal` — the authenticated user or machine client of a request.
- :class:`AuthMiddleware` — finds the principal of every request once (session cookie,
  or ``Authorization: Bearer <token>`` on ``/api/``, ``/dicomweb/`` and ``/fhir/``) and refuses
  every request without one, except to the login page and static files: a page
  request is redirected to ``/login`` (303), an API request answers 401. A route
  that forgets :func:`require_role` is still closed to anonymous clients.
- :func:`require_role` — FastAPI dependency: the request's principal if its role is at
  least ``minimum`` (403 otherwise); for a browser session it also checks the CSRF
  token of every POST/PUT/PATCH/DELETE (:func:`verify_csrf`). Every route depends on
  it (``tests/web`` walks the route table).
- :func:`verify_csrf` — the CSRF check alone (form field ``csrf_token`` or header
  ``X-CSRF-Token``, equal to the session's token); API tokens are exempt (a bearer
  token is not sent by a browser on its own, so a forged request cannot carry it).
- :func:`csrf_token` — the token a template puts into its forms.
- :func:`audit` — append one audit-log entry (who, what, when, from where).
- :func:`install` — add the middleware, the login/logout and admin pages to an app.

The accounts themselves (Argon2 passwords, lock-out, sessions, tokens, audit log) are
:mod:`kerma.services.users`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from kerma.config import Settings

logger = logging.getLogger(__name__)

#: Name of the session cookie (a random id; the server keeps the session).
SESSION_COOKIE = "kerma_session"

#: Name of the cookie that carries the login form's CSRF token (double submit).
LOGIN_CSRF_COOKIE = "kerma_login_csrf"

#: Header a script or htmx sends the CSRF token in (instead of the form field).
CSRF_HEADER = "X-CSRF-Token"

#: Form field of the CSRF token.
CSRF_FIELD = "csrf_token"

#: Methods that change state: a browser session must send its CSRF token with them.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: Paths open without login (exact), and path prefixes (static files).
PUBLIC_PATHS = frozenset({"/login", "/health"})
PUBLIC_PREFIXES = ("/static/",)

#: Path prefixes of machine interfaces: 401 instead of a redirect; bearer tokens accepted.
API_PREFIXES = ("/api/", "/dicomweb/", "/fhir/")  # /fhir/: FHIR servers (docs/ris.md)
API_PATHS = frozenset({"/openapi.json"})


class Role(IntEnum):
    """A user's role; a higher role may do everything a lower one may."""

    viewer = 1  # aggregates only, no study detail
    physicist = 2  # study detail, alert review, exports
    admin = 3  # configuration, users, audit log


@dataclass(frozen=True)
class Principal:
    """The authenticated user (``kind="user"``) or API token (``kind="token"``) of a request.

    ``site_ids`` is ``None`` for "all sites"; a user assigned to sites (``kerma sites
    assign``) or a token made with ``--site`` has their ids (issue #15).
    """

    username: str
    role: Role
    kind: str = "user"
    user_id: int | None = None
    site_ids: tuple[int, ...] | None = None


class LoginRequired(Exception):
    """No valid session or token: a page is redirected to /login, an API answers 401."""


def is_public(path: str) -> bool:
    """Return whether ``path`` is open without login (the login page, static files)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def is_api(path: str) -> bool:
    """Return whether ``path`` is a machine interface (401, bearer tokens)."""
    return path in API_PATHS or path.startswith(API_PREFIXES)


# -- accounts of the app --------------------------------------------------------------------

_accounts_lock = threading.Lock()


def get_accounts(app: Any) -> Any:
    """Return the app's :class:`kerma.services.users.Accounts` (opened on first use)."""
    accounts = getattr(app.state, "accounts", None)
    if accounts is not None:
        return accounts
    with _accounts_lock:
        accounts = getattr(app.state, "accounts", None)
        if accounts is None:
            from kerma.services.users import Accounts

            accounts = Accounts(app.state.settings)
            app.state.accounts = accounts
    return accounts


def client_address(request: Request) -> str | None:
    """Return the client's IP address (behind a proxy: uvicorn --proxy-headers)."""
    return request.client.host if request.client is not None else None


def _bearer(request: Request) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or ``None``."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _identify(request: Request) -> tuple[Principal | None, str | None]:
    """Return the request's principal and its session's CSRF token (blocking: DB)."""
    accounts = get_accounts(request.app)
    token = _bearer(request)
    if token is not None and is_api(request.url.path):
        info = accounts.resolve_token(token)
        if info is None:
            return None, None
        principal = Principal(
            username=info.name,
            role=Role[info.role.value],
            kind="token",
            site_ids=info.site_ids or None,  # a token's sites, as a user's (issue #15)
        )
        return principal, None
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        found = accounts.resolve_session(session_id)
        if found is not None:
            user = found.user
            principal = Principal(
                username=user.username,
                role=Role[user.role.value],
                kind="user",
                user_id=user.id,
                site_ids=accounts.sites_for_user(user.username),  # issue #15
            )
            return principal, found.csrf_token
    return None, None


async def identify(request: Request) -> Principal | None:
    """Find the request's principal once; store it on ``request.state``.

    Sets ``request.state.principal`` and ``request.state.csrf_expected`` (the
    session's CSRF token, ``None`` for tokens and anonymous requests).
    """
    if getattr(request.state, "identified", False):
        return getattr(request.state, "principal", None)
    principal, csrf = await run_in_threadpool(_identify, request)
    request.state.principal = principal
    request.state.csrf_expected = csrf
    request.state.identified = True
    return principal


def wants_page(request: Request) -> bool:
    """Return whether a request is a page a browser navigates to (HTML).

    A page: ``Accept`` names ``text/html`` (every browser navigation, also to a CSV
    download link). Not a page: ``Accept`` names other types only (the browser's
    ``/favicon.ico`` request, images, scripts, ``fetch()`` of JSON); without
    ``Accept`` or with ``*/*`` alone (curl, scripts), a path whose last segment has a
    file extension (``/favicon.ico``, ``/robots.txt``).
    """
    accept = request.headers.get("accept", "").strip().lower()
    if "text/html" in accept:
        return True
    if accept and accept != "*/*":
        return False
    last = request.url.path.rsplit("/", 1)[-1]
    return "." not in last.strip(".")


def login_required_response(request: Request) -> Response:
    """Return 401 for an API path or a non-page request, else a 303 to /login?next=<page>.

    Non-page requests (:func:`wants_page`: ``/favicon.ico``, images, scripts) are not
    sent to the login page: following the redirect would render the login form again
    and so replace the login CSRF token of a form already open in the browser.
    """
    path = request.url.path
    if is_api(path):
        if request.headers.get("authorization", "").lower().startswith("bearer "):
            detail = (
                "The bearer token is not valid (unknown, revoked or mistyped): check it with "
                "kerma tokens list, or make one with kerma tokens add NAME --role ROLE."
            )
        else:
            detail = "Authentication required: send 'Authorization: Bearer <token>'."
        return JSONResponse(
            {"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    if not wants_page(request):
        return PlainTextResponse("Login required.", status_code=401)
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


#: Headers added to every response (OWASP Secure Headers): no framing by other sites
#: (clickjacking), no MIME sniffing, no full URL (with its query) sent to other sites.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class AuthMiddleware:
    """Pure ASGI middleware: identify every HTTP request; refuse anonymous ones.

    Public paths (:func:`is_public`) pass without a principal. WebSocket connections
    are refused (Kerma has none). Every response gets :data:`SECURITY_HEADERS`; a
    response to a logged-in request that sets no ``Cache-Control`` gets ``no-store``
    (pages show patient dose data; a shared browser must not keep them).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one connection."""
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        public = is_public(request.url.path)

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if not public and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        if public:
            await self.app(scope, receive, send_with_headers)
            return
        principal = await identify(request)
        if principal is None:
            await login_required_response(request)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


# -- dependencies ---------------------------------------------------------------------------


async def _submitted_csrf(request: Request) -> str | None:
    """Return the CSRF token a request sent: header, else form field (forms only)."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def _check_csrf(request: Request, principal: Principal | None) -> None:
    """Refuse (403) a state-changing browser request without its session's CSRF token."""
    if request.method not in UNSAFE_METHODS or getattr(request.state, "csrf_ok", False):
        return
    if principal is not None and principal.kind == "token":
        return  # bearer tokens are not sent by browsers on their own: no CSRF
    from kerma.services.users import csrf_matches

    expected = getattr(request.state, "csrf_expected", None)
    if not csrf_matches(expected, await _submitted_csrf(request)):
        logger.warning("CSRF token missing or wrong: %s %s", request.method, request.url.path)
        raise HTTPException(
            status_code=403,
            detail="The form's security token (CSRF) is missing or expired; reload the page "
            "and try again.",
        )
    request.state.csrf_ok = True


def require_role(minimum: Role) -> Callable[[Request], Awaitable[Principal]]:
    """Return a FastAPI dependency giving the request's :class:`Principal`.

    Parameters
    ----------
    minimum : Role
        The lowest role allowed.

    Returns
    -------
    callable
        An async dependency. It raises :class:`LoginRequired` without a valid session
        or token (303 to /login for a page, 401 for ``/api/``, ``/dicomweb/``, ``/fhir/``),
        ``HTTPException(403)`` when the role is lower than ``minimum``, and
        ``HTTPException(403)`` when a browser session's POST/PUT/PATCH/DELETE lacks its
        CSRF token. The dependency carries ``kerma_minimum_role`` (tests check that
        every route has one).
    """

    async def dependency(request: Request) -> Principal:
        principal = await identify(request)
        if principal is None:
            raise LoginRequired()
        if principal.role < minimum:
            raise HTTPException(
                status_code=403,
                detail=f"This needs the {minimum.name} role; you are {principal.role.name}.",
            )
        await _check_csrf(request, principal)
        return principal

    dependency.kerma_minimum_role = minimum  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{minimum.name}"
    return dependency


async def verify_csrf(request: Request) -> None:
    """Refuse (403) a state-changing browser request without the session's CSRF token."""
    principal = await identify(request)
    await _check_csrf(request, principal)


def csrf_token(request: Request) -> str:
    """Return the CSRF token of the request's session, for a form's hidden field.

    Empty when the request has no session (the login page passes its own token).
    """
    return str(getattr(request.state, "csrf_expected", None) or "")


def actor_of(request: Request | None, principal: Principal | None) -> Any:
    """Return the audit :class:`kerma.services.users.Actor` of a request's principal."""
    from kerma.services.users import Actor

    address = client_address(request) if request is not None else None
    if principal is None:
        return Actor(name="(anonymous)", kind="anonymous", client_address=address)
    return Actor(name=principal.username, kind=principal.kind, client_address=address)


def audit(
    request: Request | None,
    principal: Principal | None,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry to the audit log (who, what, when, from where).

    Blocking (one INSERT in its own transaction): call it from a sync route (which
    runs on a worker thread) or through ``run_in_threadpool``.

    Parameters
    ----------
    request : Request or None
        Gives the app (its registry) and the client address; ``None`` is not allowed
        for the web app (the entry needs the registry).
    principal : Principal or None
        Who; ``None``: anonymous.
    action : str
        Dotted verb: ``study.view``, ``export.csv``, ``alert.review``, ``config.drl`` ...
    target : str, optional
        What: a Study Instance UID, an alert id, a rule name.
    detail : dict, optional
        JSON-serialisable details; never a password, token or patient identity.
    """
    if request is None:
        raise ValueError("audit() needs the request (it names the registry and the client)")
    get_accounts(request.app).audit(actor_of(request, principal), action, target, detail)


def cookie_secure(request: Request, settings: Settings) -> bool:
    """Return whether the session cookie gets the Secure attribute (settings, scheme)."""
    mode = settings.session_cookie_secure
    if mode == "always":
        return True
    if mode == "never":
        return False
    return request.url.scheme == "https"


# -- installation ---------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """Add the security middleware, its exception handler and the account pages to ``app``.

    Also serves ``/static`` (the stylesheet) when the app does not yet.
    """
    from fastapi.staticfiles import StaticFiles

    from kerma.web.routes import accounts

    async def _login_required(request: Request, _exc: Exception) -> Response:
        return login_required_response(request)

    app.add_exception_handler(LoginRequired, _login_required)
    app.add_middleware(AuthMiddleware)
    app.include_router(accounts.router)
    if not any(getattr(r, "path", None) == "/static" for r in app.routes):
        from kerma.web.templating import TEMPLATE_DIR

        app.mount(
            "/static", StaticFiles(directory=str(TEMPLATE_DIR.with_name("static"))), name="static"
        )
