"""Reads and writes of users, browser sessions, API tokens and the audit log.

Keyword-only functions on an open session; none commits (the caller owns the unit of
work). Secrets never reach this module in clear: sessions and tokens are looked up by
their SHA-256, users carry an Argon2 hash made by :mod:`kerma.services.users`.
The audit log is only ever inserted into (:func:`add_audit_entry`).

May import ``kerma.db`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from kerma.db.models import ApiToken, AuditLog, UserAccount, UserSession


def get_user(session: Session, *, username: str, for_update: bool = False) -> UserAccount | None:
    """Return the user called ``username`` (exact, case-sensitive), or ``None``.

    ``for_update`` locks the row until the transaction ends (``SELECT ... FOR UPDATE`` on
    PostgreSQL; SQLite's writing sessions hold the database lock anyway), so that
    concurrent failed logins each count.
    """
    stmt = select(UserAccount).where(UserAccount.username == username)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def count_users(session: Session, *, role: str | None = None, active_only: bool = False) -> int:
    """Return how many users there are (of ``role``; not disabled with ``active_only``)."""
    stmt = select(func.count()).select_from(UserAccount)
    if role is not None:
        stmt = stmt.where(UserAccount.role == role)
    if active_only:
        stmt = stmt.where(UserAccount.is_disabled.is_(False))
    return int(session.scalar(stmt) or 0)


def list_users(session: Session) -> Sequence[UserAccount]:
    """Return every user, by username (a site has tens to hundreds, not millions)."""
    return session.scalars(select(UserAccount).order_by(UserAccount.username)).all()


def add_user(
    session: Session,
    *,
    username: str,
    password_hash: str | None,
    role: str,
    is_ldap: bool,
    now: dt.datetime,
) -> UserAccount:
    """Insert a user and return it (flushed, with its id)."""
    user = UserAccount(
        username=username,
        password_hash=password_hash,
        role=role,
        is_disabled=False,
        is_ldap=is_ldap,
        failed_logins=0,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    session.flush()
    return user


def add_session(
    session: Session,
    *,
    user_id: int,
    session_hash: str,
    csrf_token: str,
    client_address: str | None,
    now: dt.datetime,
    expires_at: dt.datetime,
) -> UserSession:
    """Insert a browser session and return it."""
    row = UserSession(
        user_id=user_id,
        session_hash=session_hash,
        csrf_token=csrf_token,
        client_address=client_address,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row


def get_session_with_user(
    session: Session, *, session_hash: str
) -> tuple[UserSession, UserAccount] | None:
    """Return the session whose id hashes to ``session_hash`` and its user, or ``None``."""
    row = session.execute(
        select(UserSession, UserAccount)
        .join(UserAccount, UserAccount.id == UserSession.user_id)
        .where(UserSession.session_hash == session_hash)
    ).first()
    return (row[0], row[1]) if row is not None else None


def revoke_session(session: Session, *, session_hash: str, now: dt.datetime) -> None:
    """Mark one session revoked (logout)."""
    session.execute(
        update(UserSession)
        .where(UserSession.session_hash == session_hash, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_user_sessions(session: Session, *, user_id: int, now: dt.datetime) -> int:
    """Mark every open session of a user revoked; return how many."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def add_token(
    session: Session, *, name: str, token_hash: str, role: str, created_by: str, now: dt.datetime
) -> ApiToken:
    """Insert an API token (its hash) and return it."""
    row = ApiToken(
        name=name, token_hash=token_hash, role=role, created_by=created_by, created_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_token(session: Session, *, name: str) -> ApiToken | None:
    """Return the API token called ``name``, or ``None``."""
    return session.scalars(select(ApiToken).where(ApiToken.name == name)).first()


def get_token_by_hash(session: Session, *, token_hash: str) -> ApiToken | None:
    """Return the API token whose SHA-256 is ``token_hash``, or ``None``."""
    return session.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()


def list_tokens(session: Session) -> Sequence[ApiToken]:
    """Return every API token (revoked ones too), by name."""
    return session.scalars(select(ApiToken).order_by(ApiToken.name)).all()


def add_audit_entry(
    session: Session,
    *,
    at: dt.datetime,
    username: str,
    principal_kind: str,
    action: str,
    target: str,
    detail: dict[str, Any],
    client_address: str | None,
) -> None:
    """Append one entry to the audit log."""
    session.add(
        AuditLog(
            at=at,
            username=username,
            principal_kind=principal_kind,
            action=action,
            target=target,
            detail=detail,
            client_address=client_address,
        )
    )
    session.flush()


@dataclass(frozen=True)
class AuditQuery:
    """A filter of the audit log: each field narrows it, ``None`` leaves it open."""

    username: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def _audit_where(query: AuditQuery) -> list[Any]:
    """Return the WHERE clauses of an audit-log filter."""
    clauses: list[Any] = []
    if query.username:
        clauses.append(AuditLog.username == query.username)
    if query.action:
        # an action family ('login' matches 'login.ok', 'login.failed', ...)
        clauses.append(
            (AuditLog.action == query.action) | AuditLog.action.startswith(f"{query.action}.")
        )
    if query.since is not None:
        clauses.append(AuditLog.at >= query.since)
    if query.until is not None:
        clauses.append(AuditLog.at < query.until)
    return clauses


def count_audit(session: Session, *, query: AuditQuery) -> int:
    """Return how many audit entries match ``query``."""
    stmt = select(func.count()).select_from(AuditLog).where(*_audit_where(query))
    return int(session.scalar(stmt) or 0)


def audit_page(
    session: Session, *, query: AuditQuery, offset: int, limit: int
) -> Sequence[AuditLog]:
    """Return one page of matching audit entries, newest first."""
    stmt = (
        select(AuditLog)
        .where(*_audit_where(query))
        .order_by(AuditLog.at.desc(), AuditLog.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(stmt).all()


def audit_actions(session: Session) -> list[str]:
    """Return the distinct actions in the audit log (for a filter's choices)."""
    return list(session.scalars(select(AuditLog.action).distinct().order_by(AuditLog.action)))
