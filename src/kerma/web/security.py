"""Who is asking, and may they: the web application's security interface.

INTERFACE STUB (issue #13). The names below are the contract the pages, the JSON API,
the FHIR route and the quality views code against; the security work (users, Argon2
passwords, sessions, CSRF, lock-out, API tokens, audit log, LDAP) replaces the bodies.
Until then every request is treated as the built-in ``admin`` — do not ship this stub.

- :class:`Role` — ``viewer`` < ``physicist`` < ``admin`` (ordered).
- :class:`Principal` — the authenticated user or machine client of a request.
- :func:`require_role` — FastAPI dependency: the request's principal if its role is at
  least ``minimum``; a page request without a session is redirected to ``/login``
  (303), an API request (``/api/``, ``/dicomweb/``) answers 401; a role too low, 403.
- :func:`verify_csrf` — FastAPI dependency for every state-changing form/API call.
- :func:`csrf_token` — the token a template puts into its forms (``csrf_token`` field).
- :func:`audit` — append one audit-log entry (who, what, when, from where).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from fastapi import Request


class Role(IntEnum):
    """A user's role; a higher role may do everything a lower one may."""

    viewer = 1  # aggregates only, no study detail
    physicist = 2  # study detail, alert review, exports
    admin = 3  # configuration, users, audit log


@dataclass(frozen=True)
class Principal:
    """The authenticated user (``kind="user"``) or API token (``kind="token"``) of a request.

    ``site_ids`` is ``None`` for "all sites" (issue #15 narrows it).
    """

    username: str
    role: Role
    kind: str = "user"
    user_id: int | None = None
    site_ids: tuple[int, ...] | None = None


def require_role(minimum: Role) -> Callable[[Request], Principal]:
    """Return a FastAPI dependency giving the request's :class:`Principal` (STUB: admin)."""

    def dependency(request: Request) -> Principal:
        principal = Principal(username="admin", role=Role.admin)
        request.state.principal = principal
        return principal

    return dependency


async def verify_csrf(request: Request) -> None:
    """Refuse (403) a state-changing request without the session's CSRF token (STUB)."""
    return None


def csrf_token(request: Request) -> str:
    """Return the CSRF token of the request's session, for a form's hidden field (STUB)."""
    return "stub"


def audit(
    request: Request | None,
    principal: Principal | None,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry to the audit log (STUB: does nothing)."""
    return None
