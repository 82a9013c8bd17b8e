"""Login, logout, and the admin pages of users, API tokens and the audit log (issue #13).

- ``GET /login`` (form) and ``POST /login``: the only pages open without a session.
  The login form carries its own CSRF token (double submit: a random value in a
  SameSite=Strict cookie and in the form, compared on POST), so a foreign site cannot
  log a browser in to an account of its choosing.
- ``POST /logout``: ends the session.
- ``/admin/users``: list, add, change role, disable/enable, set a password.
- ``/admin/tokens``: create (the token is shown once), revoke.
- ``/admin/audit``: the audit log, filtered by user, action and date, paged.

Every admin route depends on ``require_role(Role.admin)``, which also checks the CSRF
token of every POST. Routes are thin: each calls one method of
:class:`kerma.services.users.Accounts`.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from kerma.errors import AccountError, NotFoundError
from kerma.web.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    Role,
    actor_of,
    client_address,
    cookie_secure,
    get_accounts,
    identify,
    require_role,
)
from kerma.web.templating import render

router = APIRouter(tags=["accounts"])

Admin = Annotated[Principal, Depends(require_role(Role.admin))]
Viewer = Annotated[Principal, Depends(require_role(Role.viewer))]

ROLE_NAMES = tuple(role.name for role in Role)

#: A login CSRF token as :func:`_login_page` makes them (``secrets.token_urlsafe(32)``).
LOGIN_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def safe_next(target: str | None) -> str:
    """Return a local path to go to after login ("/" for anything else: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(c.isspace() or ord(c) < 0x20 for c in target):  # browsers drop tabs: "/\t/x"
        return "/"
    return target


def _login_page(
    request: Request, *, next_path: str, message: str = "", status: int = 200
) -> Response:
    """Render the login form with its login CSRF token (cookie and hidden field).

    The token of the browser's login cookie is kept when it has one, so a second load
    of the login page (another tab, a redirected background request) does not make a
    form already shown expire; otherwise a fresh one.
    """
    current = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    token = current if LOGIN_TOKEN_RE.fullmatch(current) else secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {"csrf_token": token, "next": next_path, "message": message},
        status_code=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, request.app.state.settings),
        path="/login",
        max_age=3600,
    )
    return response


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str = "/") -> Response:
    """Show the login form (a logged-in user goes on to ``next``)."""
    if await identify(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next_path=safe_next(next))


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    """Check the login; on success open a session (new id) and go to ``next``."""
    from kerma.services.users import csrf_matches

    next_path = safe_next(next)
    if not csrf_matches(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        return _login_page(
            request,
            next_path=next_path,
            message="The login form expired; please try again.",
            status=403,
        )
    accounts = get_accounts(request.app)
    old = request.cookies.get(SESSION_COOKIE)
    result, session_id, _csrf = accounts.login(username, password, client_address(request))
    if not result.is_ok or session_id is None:
        return _login_page(request, next_path=next_path, message=result.message, status=401)
    if old:  # a new session id at every login (no session fixation)
        accounts.revoke_session(old)
    settings = request.app.state.settings
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="lax",
        secure=cookie_secure(request, settings),
        path="/",
        max_age=settings.session_lifetime_minutes * 60,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
def logout(request: Request, principal: Viewer) -> Response:
    """End the session and go back to the login page."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and principal.kind == "user":
        get_accounts(request.app).logout(session_id, actor_of(request, principal))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- users ----------------------------------------------------------------------------------


def _users_page(
    request: Request, *, message: str = "", error: str = "", status: int = 200
) -> Response:
    """Render the users page."""
    users = get_accounts(request.app).list_users()
    return render(
        request,
        "admin_users.html",
        {"users": users, "roles": ROLE_NAMES, "message": message, "error": error},
        status_code=status,
    )


def _user_change(request: Request, action: Any, done: str) -> Response:
    """Run one user change; show the page with what was done or why not."""
    try:
        action()
    except AccountError as exc:
        return _users_page(request, error=str(exc), status=400)
    except NotFoundError as exc:
        return _users_page(request, error=str(exc), status=404)
    return _users_page(request, message=done)


@router.get("/admin/users", include_in_schema=False)
def users_page(request: Request, principal: Admin) -> Response:
    """List the users with forms to add one and change each."""
    return _users_page(request)


@router.post("/admin/users", include_in_schema=False)
def add_user(
    request: Request,
    principal: Admin,
    username: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    """Add a local user."""
    accounts, actor = get_accounts(request.app), actor_of(request, principal)
    return _user_change(
        request,
        lambda: accounts.add_user(username, password, role, actor),
        f"User {username} added ({role}).",
    )


@router.post("/admin/users/{username}/role", include_in_schema=False)
def change_role(
    request: Request,
    principal: Admin,
    username: str,
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    """Change a user's role (their sessions end)."""
    accounts, actor = get_accounts(request.app), actor_of(request, principal)
    return _user_change(
        request,
        lambda: accounts.set_role(username, role, actor),
        f"{username} is now {role}.",
    )


@router.post("/admin/users/{username}/disable", include_in_schema=False)
def disable_user(request: Request, principal: Admin, username: str) -> Response:
    """Disable a user (their sessions end)."""
    accounts, actor = get_accounts(request.app), actor_of(request, principal)
    return _user_change(
        request, lambda: accounts.set_disabled(username, True, actor), f"{username} disabled."
    )


@router.post("/admin/users/{username}/enable", include_in_schema=False)
def enable_user(request: Request, principal: Admin, username: str) -> Response:
    """Enable a disabled user (and lift a lock-out)."""
    accounts, actor = get_accounts(request.app), actor_of(request, principal)
    return _user_change(
        request, lambda: accounts.set_disabled(username, False, actor), f"{username} enabled."
    )


@router.post("/admin/users/{username}/password", include_in_schema=False)
def reset_password(
    request: Request,
    principal: Admin,
    username: str,
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Set a user's password (lifts a lock-out; their sessions end)."""
    accounts, actor = get_accounts(request.app), actor_of(request, principal)
    return _user_change(
        request,
        lambda: accounts.set_password(username, password, actor),
        f"Password of {username} set.",
    )


# -- tokens ---------------------------------------------------------------------------------


def _tokens_page(
    request: Request,
    *,
    new_token: str = "",
    new_name: str = "",
    message: str = "",
    error: str = "",
    status: int = 200,
) -> Response:
    """Render the tokens page (with a new token shown once)."""
    tokens = get_accounts(request.app).list_tokens()
    response = render(
        request,
        "admin_tokens.html",
        {
            "tokens": tokens,
            "roles": ROLE_NAMES,
            "new_token": new_token,
            "new_name": new_name,
            "message": message,
            "error": error,
        },
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/admin/tokens", include_in_schema=False)
def tokens_page(request: Request, principal: Admin) -> Response:
    """List the API tokens with a form to create one."""
    return _tokens_page(request)


@router.post("/admin/tokens", include_in_schema=False)
def add_token(
    request: Request,
    principal: Admin,
    name: Annotated[str, Form(max_length=128)],
    role: Annotated[str, Form(max_length=16)],
    sites: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Create an API token (restricted to the comma-separated ``sites``) and show it once."""
    names = [n.strip() for n in sites.split(",") if n.strip()]
    try:
        info, token = get_accounts(request.app).add_token(
            name, role, actor_of(request, principal), sites=names
        )
    except (AccountError, NotFoundError) as exc:
        return _tokens_page(request, error=str(exc), status=400)
    return _tokens_page(request, new_token=token, new_name=info.name)


@router.post("/admin/tokens/{name}/revoke", include_in_schema=False)
def revoke_token(request: Request, principal: Admin, name: str) -> Response:
    """Revoke an API token."""
    try:
        get_accounts(request.app).revoke_token(name, actor_of(request, principal))
    except NotFoundError as exc:
        return _tokens_page(request, error=str(exc), status=404)
    return _tokens_page(request, message=f"Token {name} revoked.")


# -- audit ----------------------------------------------------------------------------------


def _parse_day(value: str | None) -> dt.date | None:
    """Return a ``YYYY-MM-DD`` date, ``None`` for empty or malformed input."""
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


@router.get("/admin/audit", include_in_schema=False)
def audit_page(
    request: Request,
    principal: Admin,
    user: Annotated[str, Query(max_length=128)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """Show the audit log, newest first, filtered and paged in the database."""
    from kerma.services.users import AuditFilter

    accounts = get_accounts(request.app)
    audit_filter = AuditFilter(
        username=user or None,
        action=action or None,
        since=_parse_day(since),
        until=_parse_day(until),
    )
    result = accounts.audit_page(audit_filter, page=page, per_page=50)
    query = {"user": user, "action": action, "since": since, "until": until}
    return render(
        request,
        "admin_audit.html",
        {"result": result, "query": query, "actions": accounts.audit_actions()},
    )
