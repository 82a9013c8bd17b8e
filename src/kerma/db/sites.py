"""Sites (institutions), users' and API tokens' site assignments (#15); none of these commits.

May import ``kerma.db``, ``kerma.records`` and ``kerma.errors`` only.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kerma.db.models import ApiTokenSite, Device, Site, Study, UserSite
from kerma.errors import NotFoundError


def get_or_create_site(session: Session, *, name: str) -> Site:
    """Return the site called ``name``, created when new.

    Two ingest processes creating the same site at once: the unique ``site.name``
    refuses the second insert (in a SAVEPOINT), which then reads the first one's row.
    """

    def lookup() -> Site | None:
        return session.scalars(select(Site).where(Site.name == name)).one_or_none()

    site = lookup()
    if site is not None:
        return site
    try:
        with session.begin_nested():
            site = Site(name=name)
            session.add(site)
    except IntegrityError:
        found = lookup()
        if found is None:
            raise
        return found
    return site


def list_sites(session: Session) -> list[tuple[int, str, int, int]]:
    """Return (id, name, devices, studies) per site, by name; counts made in the database."""
    devices = select(Device.site_id, func.count().label("n")).group_by(Device.site_id).subquery()
    studies = select(Study.site_id, func.count().label("n")).group_by(Study.site_id).subquery()
    stmt = (
        select(
            Site.id,
            Site.name,
            func.coalesce(devices.c.n, 0),
            func.coalesce(studies.c.n, 0),
        )
        .outerjoin(devices, devices.c.site_id == Site.id)
        .outerjoin(studies, studies.c.site_id == Site.id)
        .order_by(Site.name)
    )
    return [(int(i), str(n), int(d), int(s)) for i, n, d, s in session.execute(stmt)]


def site_ids_for_names(session: Session, *, names: Iterable[str]) -> tuple[int, ...]:
    """Return the ids of sites given by name (case-insensitive), in the order given.

    Raises
    ------
    NotFoundError
        When a name is not a site (the message lists the sites there are).
    """
    wanted = [n.strip() for n in names if n and n.strip()]
    if not wanted:
        return ()
    rows = session.execute(
        select(Site.id, Site.name).where(func.lower(Site.name).in_([n.lower() for n in wanted]))
    ).all()
    by_name = {str(name).lower(): int(i) for i, name in rows}
    missing = [n for n in wanted if n.lower() not in by_name]
    if missing:
        known = [str(n) for n in session.scalars(select(Site.name).order_by(Site.name))]
        raise NotFoundError(
            f"No site named {', '.join(repr(m) for m in missing)}. The sites are: "
            f"{', '.join(known) if known else 'none yet (sites are made at import)'}."
        )
    return tuple(by_name[n.lower()] for n in wanted)


def study_site_id(session: Session, *, study_id: int) -> int | None:
    """Return the site id of a study (``None`` without a site or without the study)."""
    return session.scalar(select(Study.site_id).where(Study.id == study_id))


def site_names(session: Session, *, site_ids: Iterable[int]) -> list[str]:
    """Return the names of the sites of ``site_ids``, sorted (unknown ids left out)."""
    ids = sorted({int(i) for i in site_ids})
    if not ids:
        return []
    return list(session.scalars(select(Site.name).where(Site.id.in_(ids)).order_by(Site.name)))


def user_site_ids(session: Session, *, username: str) -> tuple[int, ...]:
    """Return the ids of the sites a user is assigned to, ascending (empty: none)."""
    stmt = select(UserSite.site_id).where(UserSite.username == username).order_by(UserSite.site_id)
    return tuple(int(i) for i in session.scalars(stmt))


def set_user_sites(session: Session, *, username: str, site_ids: Iterable[int]) -> None:
    """Replace the sites a user is assigned to (an empty set removes every assignment)."""
    session.execute(delete(UserSite).where(UserSite.username == username))
    for site_id in sorted(set(site_ids)):
        session.add(UserSite(username=username, site_id=site_id))
    session.flush()


def user_sites(session: Session, *, usernames: Iterable[str]) -> dict[str, list[tuple[int, str]]]:
    """Return, per user name, the sites ``(site id, name)`` it is assigned to, by name
    (absent: none, the user sees every site)."""
    names = sorted(set(usernames))
    out: dict[str, list[tuple[int, str]]] = {}
    if not names:
        return out
    stmt = (
        select(UserSite.username, Site.id, Site.name)
        .join(Site, Site.id == UserSite.site_id)
        .where(UserSite.username.in_(names))
        .order_by(Site.name)
    )
    for username, site_id, name in session.execute(stmt):
        out.setdefault(str(username), []).append((int(site_id), str(name)))
    return out


def token_sites(
    session: Session, *, api_token_ids: Iterable[int]
) -> dict[int, list[tuple[int, str]]]:
    """Return, per API token id, its sites ``(site id, name)`` by name (absent: none)."""
    ids = sorted(set(api_token_ids))
    out: dict[int, list[tuple[int, str]]] = {}
    if not ids:
        return out
    stmt = (
        select(ApiTokenSite.api_token_id, Site.id, Site.name)
        .join(Site, Site.id == ApiTokenSite.site_id)
        .where(ApiTokenSite.api_token_id.in_(ids))
        .order_by(Site.name)
    )
    for token_id, site_id, name in session.execute(stmt):
        out.setdefault(int(token_id), []).append((int(site_id), str(name)))
    return out


def set_token_sites(session: Session, *, api_token_id: int, site_ids: Iterable[int]) -> None:
    """Replace the sites an API token is restricted to (empty: no restriction)."""
    session.execute(delete(ApiTokenSite).where(ApiTokenSite.api_token_id == api_token_id))
    for site_id in sorted(set(site_ids)):
        session.add(ApiTokenSite(api_token_id=api_token_id, site_id=site_id))
    session.flush()
