"""Login through an LDAP or Active Directory server (ldap3), and the role from its groups.

Used by :func:`kerma.services.users.authenticate` when ``settings.ldap_url`` is set.
The user's password is checked by binding as the user (a simple bind, over LDAPS or
StartTLS in production; docs/security.md); Kerma never stores it. The user's DN is
made from ``ldap_user_dn_template`` or found under ``ldap_search_base`` (as
``ldap_bind_dn``, or anonymously). The role is the highest one that
``ldap_group_roles`` gives to the user's groups: those whose ``member`` (or
``uniqueMember``) is the user under ``ldap_group_search_base``, else the user entry's
``memberOf`` values. No mapped group: no login.

May import ``kerma.config`` only (and ldap3).
"""

from __future__ import annotations

import logging
import math
import ssl
from typing import Any

from kerma.config import Settings

logger = logging.getLogger(__name__)

#: Roles by rank (as :class:`kerma.services.users.UserRole`, not imported: no cycle).
_RANK = {"viewer": 1, "physicist": 2, "admin": 3}


def _normalise_dn(dn: str) -> str:
    """Return a DN for comparison: lower case, no blanks around ``,`` and ``=``."""
    parts = [p.strip() for p in dn.split(",")]
    return ",".join("=".join(x.strip() for x in p.split("=", 1)) for p in parts).lower()


def _timeout(settings: Settings) -> int:
    """Return the time-out in whole seconds (ldap3 packs it into a socket option)."""
    return max(1, math.ceil(settings.ldap_timeout_s))


def _server(settings: Settings) -> Any:
    """Return the ldap3 Server of the settings."""
    from ldap3 import NONE, Server, Tls

    tls = None
    if settings.ldap_ca_file is not None or settings.ldap_url.lower().startswith("ldaps"):  # type: ignore[union-attr]
        tls = Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(settings.ldap_ca_file) if settings.ldap_ca_file else None,
        )
    return Server(settings.ldap_url, get_info=NONE, tls=tls, connect_timeout=_timeout(settings))


def _connect(settings: Settings, server: Any, user: str | None, password: str | None) -> Any:
    """Return a bound connection (``None`` when the bind was refused)."""
    from ldap3 import Connection

    conn = Connection(
        server,
        user=user,
        password=password,
        receive_timeout=_timeout(settings),
        raise_exceptions=False,
        read_only=True,
    )
    conn.open()
    if settings.ldap_start_tls:
        conn.start_tls()
    if not conn.bind():
        conn.unbind()
        return None
    return conn


def _user_dn(settings: Settings, server: Any, username: str) -> str | None:
    """Return the DN of ``username`` (template, or search as the service account)."""
    from ldap3 import SUBTREE
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

    if settings.ldap_user_dn_template:
        return settings.ldap_user_dn_template.format(username=escape_rdn(username))
    if not settings.ldap_search_base:
        logger.error("LDAP: set KERMA_LDAP_USER_DN_TEMPLATE or KERMA_LDAP_SEARCH_BASE")
        return None
    password = (
        settings.ldap_bind_password.get_secret_value() if settings.ldap_bind_password else None
    )
    conn = _connect(settings, server, settings.ldap_bind_dn, password)
    if conn is None:
        logger.error("LDAP: the service account %r cannot bind", settings.ldap_bind_dn)
        return None
    try:
        query = settings.ldap_search_filter.format(username=escape_filter_chars(username))
        conn.search(settings.ldap_search_base, query, SUBTREE, attributes=[])
        entries = list(conn.entries)
        if len(entries) != 1:
            return None
        return str(entries[0].entry_dn)
    finally:
        conn.unbind()


def _groups(settings: Settings, conn: Any, user_dn: str) -> list[str]:
    """Return the DNs of the user's groups."""
    from ldap3 import BASE, SUBTREE
    from ldap3.utils.conv import escape_filter_chars

    if settings.ldap_group_search_base:
        dn = escape_filter_chars(user_dn)
        conn.search(
            settings.ldap_group_search_base,
            f"(|(member={dn})(uniqueMember={dn}))",
            SUBTREE,
            attributes=[],
        )
        return [str(e.entry_dn) for e in conn.entries]
    conn.search(user_dn, "(objectClass=*)", BASE, attributes=["memberOf"])
    if not conn.entries:
        return []
    entry = conn.entries[0]
    return [str(v) for v in entry.memberOf.values] if "memberOf" in entry else []


def directory_login(settings: Settings, username: str, password: str) -> str | None:
    """Check ``username``/``password`` against the directory; return the role or ``None``.

    Parameters
    ----------
    settings : Settings
        ``ldap_*`` settings.
    username, password : str
        As typed at login. An empty password is refused here: an LDAP simple bind with
        an empty password is an unauthenticated bind, which servers accept (RFC 4513
        5.1.2).

    Returns
    -------
    str or None
        ``viewer``, ``physicist`` or ``admin``; ``None`` when the bind fails, the user
        is not found, is in no mapped group, or the directory cannot be reached (logged).
    """
    if not settings.ldap_url or not password:
        return None
    from ldap3.core.exceptions import LDAPException

    try:
        server = _server(settings)
        user_dn = _user_dn(settings, server, username)
        if user_dn is None:
            return None
        conn = _connect(settings, server, user_dn, password)
        if conn is None:
            return None
        try:
            groups = {_normalise_dn(g) for g in _groups(settings, conn, user_dn)}
        finally:
            conn.unbind()
    except (LDAPException, OSError) as exc:
        logger.error("LDAP login of %r failed: %s", username, exc)
        return None
    mapping = {
        _normalise_dn(dn): role.strip().lower() for dn, role in settings.ldap_group_roles.items()
    }
    roles = [mapping[g] for g in groups if mapping.get(g) in _RANK]
    if not roles:
        logger.warning("LDAP user %r is in no group of KERMA_LDAP_GROUP_ROLES", username)
        return None
    return max(roles, key=_RANK.__getitem__)
