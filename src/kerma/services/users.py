"""Users, logins, browser sessions, API tokens and the audit log: the use cases of issue #13.

The web application (:mod:`kerma.web.security`) and the ``kerma users`` / ``kerma
tokens`` commands call these, never :mod:`kerma.db.users` directly.
docs/security.md describes the design for a hospital's security officer:

- passwords: Argon2id through argon2-cffi's :class:`argon2.PasswordHasher` (its
  defaults, RFC 9106's second recommended option: t=3, m=64 MiB, p=4); a hash made
  with older parameters is re-made at the next successful login;
- lock-out: after ``settings.login_max_failures`` failed logins in a row the account
  is locked for ``settings.login_lockout_s`` seconds; every further failure after a
  lock doubles it, up to ``settings.login_lockout_max_s`` (OWASP Authentication Cheat
  Sheet, "Account lockout"; NIST SP 800-63B 5.2.2 "Rate limiting");
- sessions: a random 32-byte id (``secrets.token_urlsafe``) in the cookie, only its
  SHA-256 in the database; an absolute and an idle expiry; revoked at logout, password
  reset, role change and disabling;
- API tokens: 32 random bytes shown once, SHA-256 at rest, revocable;
- audit log: every login (also failed, with the name tried), every user and token
  change, made in the same transaction as the change.

:class:`Accounts` owns the transactions (one per call) for the web app and the CLI;
the module functions take an open session for callers that own theirs.

May import ``kerma.db``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from kerma.config import Settings
from kerma.db import sites as site_store
from kerma.db import users as store
from kerma.db.migrate import ensure_schema
from kerma.db.models import ApiToken, UserAccount
from kerma.db.session import make_engine, make_session_factory, session_scope
from kerma.errors import AccountError, NotFoundError

logger = logging.getLogger(__name__)


class UserRole(StrEnum):
    """A role as stored (``user_account.role``, ``api_token.role``); ordered by rank."""

    viewer = "viewer"  # aggregates, no study detail
    physicist = "physicist"  # study detail, alert review, exports
    admin = "admin"  # configuration, users, audit log

    @property
    def rank(self) -> int:
        """Return 1 (viewer), 2 (physicist) or 3 (admin)."""
        return ROLE_ORDER.index(self) + 1


ROLE_ORDER: tuple[UserRole, ...] = (UserRole.viewer, UserRole.physicist, UserRole.admin)

#: Shortest password accepted, in characters (NIST SP 800-63B 5.1.1.2 asks for at
#: least 8; 12 is the usual hospital policy and the BSI IT-Grundschutz ORP.4 advice).
MIN_PASSWORD_LENGTH = 12

#: Longest password accepted (Argon2 takes any length; this bounds the work per request).
MAX_PASSWORD_LENGTH = 1024

#: A user or token name: letters, digits and ``. _ @ -``, 1 to 128 characters.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")

#: Prefix of API tokens, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "kerma_"

#: A session's ``last_seen_at`` (and a token's ``last_used_at``) is written at most
#: once per this many seconds, so reading pages does not write on every request.
TOUCH_INTERVAL_S = 60.0

#: What a failed login shows, whatever the reason (no hint whether the user exists).
LOGIN_FAILED_MESSAGE = "Wrong username or password."


def utc_now() -> dt.datetime:
    """Return the current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Return ``value`` as aware UTC (SQLite gives naive datetimes, stored as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def sha256_hex(secret: str) -> str:
    """Return the SHA-256 (hex) of a session id or token: what the database stores."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_role(value: str) -> UserRole:
    """Return the role named ``value`` (case-insensitive).

    Raises
    ------
    AccountError
        When it is not viewer, physicist or admin.
    """
    try:
        return UserRole(value.strip().lower())
    except ValueError:
        names = ", ".join(r.value for r in ROLE_ORDER)
        raise AccountError(f"{value!r} is not a role; use one of {names}.") from None


def check_name(name: str, what: str = "username") -> str:
    """Return ``name`` stripped, or raise :class:`AccountError` when it is not allowed."""
    name = name.strip()
    if not NAME_RE.match(name):
        raise AccountError(
            f"{name!r} is not a valid {what}: use 1 to 128 letters, digits and . _ @ - "
            "(starting with a letter or digit)."
        )
    return name


def check_password(password: str) -> None:
    """Raise :class:`AccountError` when ``password`` is too short or too long."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters "
            "(a passphrase of several words is easiest to remember)."
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"The password is longer than {MAX_PASSWORD_LENGTH} characters.")


#: Argon2 parameters of new hashes (an ``argon2.Parameters``); ``None``: argon2-cffi's
#: default, RFC 9106's second recommended option (Argon2id, t=3, m=64 MiB, p=4). Only
#: the test suite changes it (to ``argon2.profiles.CHEAPEST``, restored afterwards).
PASSWORD_PARAMETERS: Any = None


def _hasher() -> Any:
    """Return argon2-cffi's PasswordHasher (:data:`PASSWORD_PARAMETERS`)."""
    from argon2 import PasswordHasher

    if PASSWORD_PARAMETERS is None:
        return PasswordHasher()
    return PasswordHasher.from_parameters(PASSWORD_PARAMETERS)


def hash_password(password: str) -> str:
    """Return the Argon2id hash of ``password`` (PHC string ``$argon2id$v=19$m=...``)."""
    return str(_hasher().hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    """Return whether ``password`` matches the Argon2 ``password_hash``."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH: list[str] = []


def _burn_time(password: str) -> None:
    """Verify against a dummy hash: an unknown user costs as much time as a known one."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(16)))
    verify_password(_DUMMY_HASH[0], password)


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """A user as the pages and commands show it (never the password hash)."""

    id: int
    username: str
    role: UserRole
    is_disabled: bool
    is_ldap: bool
    failed_logins: int
    locked_until: dt.datetime | None
    created_at: dt.datetime
    last_login_at: dt.datetime | None
    site_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: UserAccount, site_names: Sequence[str] = ()) -> UserInfo:
        """Return the info of a ``user_account`` row and the names of the sites the user
        is restricted to (empty: every site; ``kerma sites assign``, #15)."""
        return cls(
            id=row.id,
            username=row.username,
            role=UserRole(row.role),
            is_disabled=row.is_disabled,
            is_ldap=row.is_ldap,
            failed_logins=row.failed_logins,
            locked_until=as_utc(row.locked_until),
            created_at=as_utc(row.created_at) or row.created_at,
            last_login_at=as_utc(row.last_login_at),
            site_names=tuple(site_names),
        )


@dataclass(frozen=True)
class TokenInfo:
    """An API token as listed (never the token or its hash)."""

    id: int
    name: str
    role: UserRole
    created_by: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    site_ids: tuple[int, ...] = ()
    site_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: ApiToken, sites: Sequence[tuple[int, str]] = ()) -> TokenInfo:
        """Return the info of an ``api_token`` row and its sites ``(id, name)`` (#15).

        Empty ``sites``: the token is not restricted by site.
        """
        return cls(
            id=row.id,
            name=row.name,
            role=UserRole(row.role),
            created_by=row.created_by,
            created_at=as_utc(row.created_at) or row.created_at,
            last_used_at=as_utc(row.last_used_at),
            revoked_at=as_utc(row.revoked_at),
            site_ids=tuple(sorted(i for i, _ in sites)),
            site_names=tuple(n for _, n in sites),
        )


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for the audit log: a user, a token, the CLI, or nobody yet."""

    name: str
    kind: str = "user"  # user, token, cli, anonymous
    client_address: str | None = None


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login attempt.

    ``user`` is set when it succeeded; otherwise ``message`` says what to show and
    ``locked_until`` is the end of a lock-out (set when the account is locked now).
    """

    user: UserInfo | None
    message: str = ""
    locked_until: dt.datetime | None = None

    @property
    def is_ok(self) -> bool:
        """Whether the login succeeded."""
        return self.user is not None


@dataclass(frozen=True)
class SessionPrincipal:
    """The user behind a valid session cookie, with the session's CSRF token."""

    user: UserInfo
    csrf_token: str


@dataclass(frozen=True)
class AuditEntry:
    """One audit-log entry as shown."""

    id: int
    at: dt.datetime
    username: str
    principal_kind: str
    action: str
    target: str
    detail: dict[str, Any]
    client_address: str | None


@dataclass(frozen=True)
class AuditPage:
    """One page of the audit log (newest first) and the number of matching entries."""

    entries: list[AuditEntry]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class AuditFilter:
    """A filter of the audit log (``None`` leaves a field open); dates are UTC days."""

    username: str | None = None
    action: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive

    def query(self) -> store.AuditQuery:
        """Return the database filter (``until`` becomes the start of the next day)."""

        def start(day: dt.date | None) -> dt.datetime | None:
            return None if day is None else dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

        end = None if self.until is None else self.until + dt.timedelta(days=1)
        return store.AuditQuery(
            username=(self.username or "").strip() or None,
            action=(self.action or "").strip() or None,
            since=start(self.since),
            until=start(end),
        )


# -- audit ----------------------------------------------------------------------------------


def record_audit(
    session: Session,
    *,
    actor: Actor,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Append one entry to the audit log (in the caller's transaction).

    Parameters
    ----------
    actor : Actor
        Who; for a failed login, the name that was tried (kind ``anonymous``).
    action : str
        Dotted verb, e.g. ``login.ok``, ``login.failed``, ``user.add``, ``study.view``,
        ``export.csv``, ``alert.review``, ``config.drl``.
    target : str, optional
        What it was done to (a username, a Study Instance UID, a rule name).
    detail : dict, optional
        JSON-serialisable details (never a password, token or patient identity).
    """
    store.add_audit_entry(
        session,
        at=now or utc_now(),
        username=actor.name[:128],
        principal_kind=actor.kind,
        action=action[:64],
        target=target[:512],
        detail=detail or {},
        client_address=(actor.client_address or None),
    )


def audit_page(
    session: Session, *, audit_filter: AuditFilter, page: int = 1, per_page: int = 50
) -> AuditPage:
    """Return one page of the audit log (filtered and paged in the database)."""
    per_page = min(max(per_page, 1), 500)
    page = max(page, 1)
    query = audit_filter.query()
    total = store.count_audit(session, query=query)
    rows = store.audit_page(session, query=query, offset=(page - 1) * per_page, limit=per_page)
    entries = [
        AuditEntry(
            id=r.id,
            at=as_utc(r.at) or r.at,
            username=r.username,
            principal_kind=r.principal_kind,
            action=r.action,
            target=r.target,
            detail=dict(r.detail or {}),
            client_address=r.client_address,
        )
        for r in rows
    ]
    return AuditPage(entries=entries, total=total, page=page, per_page=per_page)


# -- users ----------------------------------------------------------------------------------


def get_user_or_raise(session: Session, *, username: str) -> UserAccount:
    """Return the user called ``username``.

    Raises
    ------
    NotFoundError
        When there is none.
    """
    user = store.get_user(session, username=username)
    if user is None:
        raise NotFoundError(f"There is no user {username!r} (`kerma users list` lists them).")
    return user


def _check_admin_left(session: Session, *, user: UserAccount, new_role: str, disable: bool) -> None:
    """Refuse a change that would leave no active admin."""
    if user.role != UserRole.admin or user.is_disabled:
        return
    if new_role == UserRole.admin and not disable:
        return
    if store.count_users(session, role=UserRole.admin, active_only=True) <= 1:
        raise AccountError(f"{user.username!r} is the last active admin; make another admin first.")


def add_user(
    session: Session,
    *,
    username: str,
    password: str | None,
    role: str,
    actor: Actor,
    is_ldap: bool = False,
) -> UserInfo:
    """Create a user (with an Argon2 hash of ``password``) and audit it (``user.add``).

    Raises
    ------
    AccountError
        When the name is invalid or taken, the role unknown, or the password too short.
    """
    username = check_name(username)
    user_role = parse_role(role)
    if store.get_user(session, username=username) is not None:
        raise AccountError(f"There is already a user {username!r}.")
    if not is_ldap:
        if password is None:
            raise AccountError("A local user needs a password.")
        check_password(password)
    now = utc_now()
    row = store.add_user(
        session,
        username=username,
        password_hash=hash_password(password) if password is not None and not is_ldap else None,
        role=user_role.value,
        is_ldap=is_ldap,
        now=now,
    )
    record_audit(
        session,
        actor=actor,
        action="user.add",
        target=username,
        detail={"role": user_role.value, "ldap": is_ldap},
        now=now,
    )
    return UserInfo.of(row)


def set_password(session: Session, *, username: str, password: str, actor: Actor) -> UserInfo:
    """Set a user's password; unlock them and end their sessions (``user.password``).

    Raises
    ------
    NotFoundError
        No such user.
    AccountError
        The password is too short, or the user logs in through the directory (LDAP).
    """
    user = get_user_or_raise(session, username=username)
    if user.is_ldap:
        raise AccountError(
            f"{username!r} logs in through the directory (LDAP); change the password there."
        )
    check_password(password)
    now = utc_now()
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.updated_at = now
    ended = store.revoke_user_sessions(session, user_id=user.id, now=now)
    record_audit(
        session,
        actor=actor,
        action="user.password",
        target=username,
        detail={"sessions_ended": ended},
        now=now,
    )
    return UserInfo.of(user)


def set_role(session: Session, *, username: str, role: str, actor: Actor) -> UserInfo:
    """Change a user's role (``user.role``); their sessions end.

    Raises
    ------
    NotFoundError
        No such user.
    AccountError
        Unknown role, or it would leave no active admin.
    """
    user = get_user_or_raise(session, username=username)
    new_role = parse_role(role)
    _check_admin_left(session, user=user, new_role=new_role, disable=False)
    old = user.role
    now = utc_now()
    user.role = new_role.value
    user.updated_at = now
    store.revoke_user_sessions(session, user_id=user.id, now=now)
    record_audit(
        session,
        actor=actor,
        action="user.role",
        target=username,
        detail={"from": old, "to": new_role.value},
        now=now,
    )
    return UserInfo.of(user)


def set_disabled(session: Session, *, username: str, is_disabled: bool, actor: Actor) -> UserInfo:
    """Disable (sessions end) or enable a user (``user.disable`` / ``user.enable``).

    Raises
    ------
    NotFoundError
        No such user.
    AccountError
        Disabling the last active admin.
    """
    user = get_user_or_raise(session, username=username)
    if is_disabled:
        _check_admin_left(session, user=user, new_role=user.role, disable=True)
    now = utc_now()
    user.is_disabled = is_disabled
    user.updated_at = now
    if is_disabled:
        store.revoke_user_sessions(session, user_id=user.id, now=now)
    else:
        user.failed_logins = 0
        user.locked_until = None
    record_audit(
        session,
        actor=actor,
        action="user.disable" if is_disabled else "user.enable",
        target=username,
        now=now,
    )
    return UserInfo.of(user)


def list_users(session: Session) -> list[UserInfo]:
    """Return every user, by name, with the sites each is restricted to (``site_names``)."""
    rows = store.list_users(session)
    sites = site_store.user_sites(session, usernames=[row.username for row in rows])
    return [UserInfo.of(row, [n for _, n in sites.get(row.username, [])]) for row in rows]


def has_users(session: Session) -> bool:
    """Return whether any user exists (``kerma serve`` hints at the first admin if not)."""
    return store.count_users(session) > 0


# -- login ----------------------------------------------------------------------------------


def lockout_seconds(failures: int, settings: Settings) -> float:
    """Return how long an account is locked after ``failures`` failed logins in a row.

    0 below ``settings.login_max_failures``; ``login_lockout_s`` at it, doubling with
    each further failure, at most ``login_lockout_max_s``. With the defaults: 5
    failures lock 60 s, 6 lock 120 s, 7 lock 240 s ... up to one day.
    """
    over = failures - settings.login_max_failures
    if over < 0:
        return 0.0
    return float(min(settings.login_lockout_s * 2.0 ** min(over, 40), settings.login_lockout_max_s))


def authenticate(
    session: Session,
    *,
    username: str,
    password: str,
    settings: Settings,
    client_address: str | None = None,
    now: dt.datetime | None = None,
) -> LoginResult:
    """Check a login; count failures, lock out with back-off, audit every attempt.

    The caller commits in every case (a failure's counter and audit entry are kept).
    A directory (LDAP) user, or an unknown name when ``settings.ldap_url`` is set, is
    checked against the directory (:mod:`kerma.services.directory`), and a directory
    user's role follows their groups at every login.

    Parameters
    ----------
    username, password : str
        As typed.
    settings : Settings
        Lock-out thresholds and LDAP.
    client_address : str, optional
        The client's IP address, for the audit log.
    now : datetime, optional
        The time of the attempt (aware); default now. Tests pass it.

    Returns
    -------
    LoginResult
        ``user`` set when the login succeeded.
    """
    now = now or utc_now()
    name = username.strip()[:128]
    tried = Actor(name=name or "(empty)", kind="anonymous", client_address=client_address)
    user = store.get_user(session, username=name, for_update=True) if name else None
    directory = bool(settings.ldap_url)

    if user is None:
        directory_role = None
        if directory and name and password:
            from kerma.services.directory import directory_login

            directory_role = directory_login(settings, name, password)
        else:
            _burn_time(password)
        if directory_role is None:
            record_audit(
                session, actor=tried, action="login.failed", detail={"reason": "unknown"}, now=now
            )
            return LoginResult(None, LOGIN_FAILED_MESSAGE)
        user = store.add_user(
            session,
            username=name,
            password_hash=None,
            role=directory_role,
            is_ldap=True,
            now=now,
        )
        record_audit(
            session,
            actor=Actor(name="directory", kind="ldap", client_address=client_address),
            action="user.add",
            target=name,
            detail={"role": directory_role, "ldap": True},
            now=now,
        )
        return _login_ok(session, user=user, client_address=client_address, now=now)

    locked_until = as_utc(user.locked_until)
    if user.is_disabled:
        _burn_time(password)
        record_audit(
            session, actor=tried, action="login.failed", detail={"reason": "disabled"}, now=now
        )
        return LoginResult(None, LOGIN_FAILED_MESSAGE)
    if locked_until is not None and now < locked_until:
        record_audit(
            session,
            actor=tried,
            action="login.locked",
            detail={"locked_until": locked_until.isoformat()},
            now=now,
        )
        minutes = max(1, int(-(-(locked_until - now).total_seconds() // 60)))
        return LoginResult(
            None,
            "Too many failed logins: this account is locked; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}.",
            locked_until,
        )

    if user.is_ldap:
        from kerma.services.directory import directory_login

        role = directory_login(settings, name, password) if directory and password else None
        is_ok = role is not None
        if role is not None and role != user.role:
            record_audit(
                session,
                actor=Actor(name="directory", kind="ldap", client_address=client_address),
                action="user.role",
                target=name,
                detail={"from": user.role, "to": role},
                now=now,
            )
            user.role = role
    else:
        is_ok = user.password_hash is not None and verify_password(user.password_hash, password)
        if (
            is_ok
            and user.password_hash is not None
            and _hasher().check_needs_rehash(user.password_hash)
        ):
            user.password_hash = hash_password(password)

    if not is_ok:
        user.failed_logins += 1
        lock_s = lockout_seconds(user.failed_logins, settings)
        user.locked_until = now + dt.timedelta(seconds=lock_s) if lock_s else None
        detail: dict[str, Any] = {"reason": "password", "failures": user.failed_logins}
        if lock_s:
            detail["locked_s"] = lock_s
        record_audit(session, actor=tried, action="login.failed", detail=detail, now=now)
        if lock_s:
            record_audit(
                session,
                actor=tried,
                action="user.lock",
                target=name,
                detail={"locked_s": lock_s, "failures": user.failed_logins},
                now=now,
            )
            logger.warning("user %r locked for %.0f s after failed logins", name, lock_s)
        return LoginResult(None, LOGIN_FAILED_MESSAGE, as_utc(user.locked_until))
    return _login_ok(session, user=user, client_address=client_address, now=now)


def _login_ok(
    session: Session, *, user: UserAccount, client_address: str | None, now: dt.datetime
) -> LoginResult:
    """Reset the failure counter, audit ``login.ok`` and return the result."""
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    record_audit(
        session,
        actor=Actor(name=user.username, kind="user", client_address=client_address),
        action="login.ok",
        detail={"role": user.role, "ldap": user.is_ldap},
        now=now,
    )
    return LoginResult(UserInfo.of(user))


# -- sessions -------------------------------------------------------------------------------


def start_session(
    session: Session,
    *,
    user_id: int,
    settings: Settings,
    client_address: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[str, str]:
    """Open a browser session for a logged-in user.

    Returns
    -------
    tuple of str
        ``(session_id, csrf_token)``: the session id goes into the cookie (only its
        SHA-256 is stored), the CSRF token into every form of the session.
    """
    now = now or utc_now()
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    store.add_session(
        session,
        user_id=user_id,
        session_hash=sha256_hex(session_id),
        csrf_token=csrf,
        client_address=client_address,
        now=now,
        expires_at=now + dt.timedelta(minutes=settings.session_lifetime_minutes),
    )
    return session_id, csrf


def resolve_session(
    session: Session, *, session_id: str, settings: Settings, now: dt.datetime | None = None
) -> tuple[SessionPrincipal | None, bool]:
    """Return the user of a session cookie (``None`` when not valid) and whether to touch it.

    A session is valid when it exists, is not revoked, has not reached its expiry or
    its idle time-out, and its user is not disabled. The second value says that
    ``last_seen_at`` is older than :data:`TOUCH_INTERVAL_S` (call :func:`touch_session`).
    """
    now = now or utc_now()
    if not session_id or len(session_id) > 256:
        return None, False
    found = store.get_session_with_user(session, session_hash=sha256_hex(session_id))
    if found is None:
        return None, False
    row, user = found
    last_seen = as_utc(row.last_seen_at) or now
    expires = as_utc(row.expires_at) or now
    idle_end = last_seen + dt.timedelta(minutes=settings.session_idle_minutes)
    if row.revoked_at is not None or now >= expires or now >= idle_end or user.is_disabled:
        return None, False
    touch = (now - last_seen).total_seconds() >= TOUCH_INTERVAL_S
    return SessionPrincipal(user=UserInfo.of(user), csrf_token=row.csrf_token), touch


def touch_session(session: Session, *, session_id: str, now: dt.datetime | None = None) -> None:
    """Record that a session was used now (for the idle time-out)."""
    found = store.get_session_with_user(session, session_hash=sha256_hex(session_id))
    if found is not None:
        found[0].last_seen_at = now or utc_now()


def end_session(session: Session, *, session_id: str, actor: Actor) -> None:
    """Revoke a session (logout) and audit it (``logout``)."""
    now = utc_now()
    store.revoke_session(session, session_hash=sha256_hex(session_id), now=now)
    record_audit(session, actor=actor, action="logout", now=now)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Return whether a submitted CSRF token equals the session's (constant time)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# -- API tokens -----------------------------------------------------------------------------


def _token_info(session: Session, row: ApiToken) -> TokenInfo:
    """Return the info of one token row with its sites."""
    sites = site_store.token_sites(session, api_token_ids=[row.id])
    return TokenInfo.of(row, sites.get(row.id, []))


def add_token(
    session: Session, *, name: str, role: str, actor: Actor, sites: Sequence[str] = ()
) -> tuple[TokenInfo, str]:
    """Create an API token; return its info and the token (shown once, never stored).

    Parameters
    ----------
    sites : sequence of str, optional
        Names of the sites the token is restricted to (any case), as a user assigned
        with ``kerma sites assign`` (#15); empty: every site.

    Raises
    ------
    AccountError
        The name is invalid or taken, or the role unknown.
    NotFoundError
        A site name is not a site (the message lists the sites).
    """
    name = check_name(name, "token name")
    token_role = parse_role(role)
    site_ids = site_store.site_ids_for_names(session, names=sites)
    if store.get_token(session, name=name) is not None:
        raise AccountError(
            f"There is already a token {name!r} (revoked tokens keep their name); "
            "choose another name."
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utc_now()
    row = store.add_token(
        session,
        name=name,
        token_hash=sha256_hex(token),
        role=token_role.value,
        created_by=actor.name,
        now=now,
    )
    site_store.set_token_sites(session, api_token_id=row.id, site_ids=site_ids)
    detail: dict[str, Any] = {"role": token_role.value}
    if site_ids:
        detail["sites"] = [n.strip() for n in sites if n.strip()]
    record_audit(session, actor=actor, action="token.add", target=name, detail=detail)
    return _token_info(session, row), token


def revoke_token(session: Session, *, name: str, actor: Actor) -> TokenInfo:
    """Revoke an API token (``token.revoke``); requests with it are refused from now on.

    Raises
    ------
    NotFoundError
        No token of that name.
    """
    row = store.get_token(session, name=name)
    if row is None:
        raise NotFoundError(f"There is no token {name!r} (`kerma tokens list` lists them).")
    if row.revoked_at is None:
        row.revoked_at = utc_now()
        record_audit(session, actor=actor, action="token.revoke", target=name)
    return _token_info(session, row)


def list_tokens(session: Session) -> list[TokenInfo]:
    """Return every API token (revoked ones too) with its sites, by name."""
    rows = store.list_tokens(session)
    sites = site_store.token_sites(session, api_token_ids=[row.id for row in rows])
    return [TokenInfo.of(row, sites.get(row.id, [])) for row in rows]


def resolve_token(
    session: Session, *, token: str, now: dt.datetime | None = None
) -> tuple[TokenInfo | None, bool]:
    """Return the token's info (``None``: unknown or revoked) and whether to touch it."""
    if not token or len(token) > 256:
        return None, False
    row = store.get_token_by_hash(session, token_hash=sha256_hex(token))
    if row is None or row.revoked_at is not None:
        return None, False
    now = now or utc_now()
    last = as_utc(row.last_used_at)
    touch = last is None or (now - last).total_seconds() >= TOUCH_INTERVAL_S
    return _token_info(session, row), touch


def touch_token(session: Session, *, token: str, now: dt.datetime | None = None) -> None:
    """Record that a token was used now."""
    row = store.get_token_by_hash(session, token_hash=sha256_hex(token))
    if row is not None:
        row.last_used_at = now or utc_now()


# -- the facade -----------------------------------------------------------------------------


@dataclass
class Accounts:
    """Users, sessions, tokens and the audit log of one registry; one transaction per call.

    Opens its own engine on ``settings.database_url`` (schema migrated on first use).
    Thread-safe: the web app shares one between its request threads.
    """

    settings: Settings
    _engine: Any = field(init=False, repr=False)
    _read: Any = field(init=False, repr=False)
    _write: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Open the engine and migrate the schema."""
        self._engine = make_engine(self.settings.database_url)
        ensure_schema(self._engine)
        self._read = make_session_factory(self._engine)
        self._write = make_session_factory(self._engine, write=True)

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    @contextmanager
    def session(self, *, write: bool = True) -> Iterator[Session]:
        """Yield a session (commit on success, rollback on error)."""
        with session_scope(self._write if write else self._read) as session:
            yield session

    # users
    def add_user(
        self, username: str, password: str | None, role: str, actor: Actor, is_ldap: bool = False
    ) -> UserInfo:
        """See :func:`add_user`."""
        with self.session() as s:
            return add_user(
                s, username=username, password=password, role=role, actor=actor, is_ldap=is_ldap
            )

    def set_password(self, username: str, password: str, actor: Actor) -> UserInfo:
        """See :func:`set_password`."""
        with self.session() as s:
            return set_password(s, username=username, password=password, actor=actor)

    def set_role(self, username: str, role: str, actor: Actor) -> UserInfo:
        """See :func:`set_role`."""
        with self.session() as s:
            return set_role(s, username=username, role=role, actor=actor)

    def set_disabled(self, username: str, is_disabled: bool, actor: Actor) -> UserInfo:
        """See :func:`set_disabled`."""
        with self.session() as s:
            return set_disabled(s, username=username, is_disabled=is_disabled, actor=actor)

    def list_users(self) -> list[UserInfo]:
        """See :func:`list_users`."""
        with self.session(write=False) as s:
            return list_users(s)

    def has_users(self) -> bool:
        """See :func:`has_users`."""
        with self.session(write=False) as s:
            return has_users(s)

    # login and sessions
    def login(
        self, username: str, password: str, client_address: str | None
    ) -> tuple[LoginResult, str | None, str | None]:
        """Check a login and open a session when it succeeds.

        Returns
        -------
        tuple
            ``(result, session_id, csrf_token)``; the ids are ``None`` on failure.
        """
        with self.session() as s:
            result = authenticate(
                s,
                username=username,
                password=password,
                settings=self.settings,
                client_address=client_address,
            )
            if result.user is None:
                return result, None, None
            session_id, csrf = start_session(
                s, user_id=result.user.id, settings=self.settings, client_address=client_address
            )
            return result, session_id, csrf

    def sites_for_user(self, username: str) -> tuple[int, ...] | None:
        """Return the site ids a user is restricted to, or ``None`` (every site; #15)."""
        from kerma.services.sites import sites_for_user

        with self.session(write=False) as s:
            return sites_for_user(s, username)

    def resolve_session(self, session_id: str) -> SessionPrincipal | None:
        """See :func:`resolve_session`; touches the session when due."""
        with self.session(write=False) as s:
            found, touch = resolve_session(s, session_id=session_id, settings=self.settings)
        if found is not None and touch:
            with self.session() as s:
                touch_session(s, session_id=session_id)
        return found

    def logout(self, session_id: str, actor: Actor) -> None:
        """See :func:`end_session`."""
        with self.session() as s:
            end_session(s, session_id=session_id, actor=actor)

    def revoke_session(self, session_id: str) -> None:
        """Revoke a session without an audit entry (the old session of a new login)."""
        with self.session() as s:
            store.revoke_session(s, session_hash=sha256_hex(session_id), now=utc_now())

    # tokens
    def add_token(
        self, name: str, role: str, actor: Actor, sites: Sequence[str] = ()
    ) -> tuple[TokenInfo, str]:
        """See :func:`add_token`."""
        with self.session() as s:
            return add_token(s, name=name, role=role, actor=actor, sites=sites)

    def revoke_token(self, name: str, actor: Actor) -> TokenInfo:
        """See :func:`revoke_token`."""
        with self.session() as s:
            return revoke_token(s, name=name, actor=actor)

    def list_tokens(self) -> list[TokenInfo]:
        """See :func:`list_tokens`."""
        with self.session(write=False) as s:
            return list_tokens(s)

    def resolve_token(self, token: str) -> TokenInfo | None:
        """See :func:`resolve_token`; touches the token when due."""
        with self.session(write=False) as s:
            found, touch = resolve_token(s, token=token)
        if found is not None and touch:
            with self.session() as s:
                touch_token(s, token=token)
        return found

    # audit
    def audit(
        self, actor: Actor, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> None:
        """See :func:`record_audit` (its own transaction)."""
        with self.session() as s:
            record_audit(s, actor=actor, action=action, target=target, detail=detail)

    def audit_page(self, audit_filter: AuditFilter, page: int = 1, per_page: int = 50) -> AuditPage:
        """See :func:`audit_page`."""
        with self.session(write=False) as s:
            return audit_page(s, audit_filter=audit_filter, page=page, per_page=per_page)

    def audit_actions(self) -> list[str]:
        """Return the distinct actions of the audit log."""
        with self.session(write=False) as s:
            return store.audit_actions(s)
