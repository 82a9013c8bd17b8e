"""Sites (institutions) and the restriction of users to their sites (issue #15).

A user assigned to sites (``user_site``) or an API token made for sites
(``api_token_site``) sees the studies of those sites only; a user or token without
assignment, and a principal whose ``site_ids`` is ``None``, sees every site. The
restriction is enforced here, in the service layer, for every interface: a listing or
statistic runs on :func:`narrow_filter`'s filter (alerts on
:func:`narrow_alert_filter`'s), and a study's or alert's detail is refused with
:class:`~kerma.errors.SiteAccessError` when it is of another site
(:func:`get_study_for`, :func:`check_alert_site`). The web layer maps that error to 403.
A patient's cumulative alert concerns every site with a study in its window (table
``alert_study``): each of them lists, sees and may review it, but sees only its own
sites' studies and a count of the others (:func:`get_alert_for`); the study that
crossed, when of another site, is not named.

May import ``kerma.db``, ``kerma.errors`` and ``kerma.services``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from kerma.db import alerts as alert_store
from kerma.db import sites as store
from kerma.db.alerts import AlertFilter
from kerma.db.filters import StudyFilter
from kerma.errors import NotFoundError, SiteAccessError
from kerma.services import alerts as alert_service
from kerma.services import studies as study_service


class SitePrincipal(Protocol):
    """Anything with the site ids a caller may see (``kerma.web.security.Principal``).

    ``site_ids`` ``None`` means every site.
    """

    @property
    def site_ids(self) -> tuple[int, ...] | None:
        """The ids of the sites the caller may see, or ``None`` for all."""
        ...


@dataclass(frozen=True)
class SiteRow:
    """One site with its numbers of devices and studies."""

    site_id: int
    name: str
    devices: int
    studies: int


def list_sites(session: Session) -> list[SiteRow]:
    """Return every site with its device and study counts (counted in the database)."""
    return [SiteRow(*row) for row in store.list_sites(session)]


def site_ids(session: Session, names: Iterable[str]) -> tuple[int, ...]:
    """Return the ids of sites given by name (any case).

    Raises
    ------
    kerma.errors.NotFoundError
        When a name is not a site (the message lists the sites).
    """
    return store.site_ids_for_names(session, names=names)


def sites_for_user(session: Session, username: str) -> tuple[int, ...] | None:
    """Return the ids of the sites a user is restricted to, or ``None`` (every site).

    A user without any ``user_site`` row is not restricted by site.
    """
    ids = store.user_site_ids(session, username=username)
    return ids or None


def assign_user_sites(session: Session, username: str, names: Iterable[str]) -> tuple[int, ...]:
    """Restrict a user to the sites named (replacing earlier assignments); return their ids.

    An empty ``names`` removes the restriction (the user sees every site).

    Raises
    ------
    kerma.errors.NotFoundError
        When a name is not a site, or ``username`` is empty.
    """
    if not username.strip():
        raise NotFoundError("Unable to assign sites: give a user name.")
    ids = site_ids(session, names)
    store.set_user_sites(session, username=username.strip(), site_ids=ids)
    return ids


def is_user_account(session: Session, username: str) -> bool:
    """Return whether ``username`` is a user account (local, or a directory user seen once).

    A directory (LDAP) user has no account before the first login, so a site assignment
    of an unknown name is kept; the CLI warns, as the name may be misspelt.
    """
    from kerma.db.users import get_user

    return get_user(session, username=username.strip()) is not None


def site_choices(session: Session, principal: SitePrincipal | None) -> list[tuple[int, str]]:
    """Return ``(site id, name)`` of the sites ``principal`` may see, by name (a form's choices).

    An unrestricted principal (``None``, or ``site_ids`` ``None``) sees every site.
    """
    allowed = allowed_site_ids(principal)
    rows = [(r.site_id, r.name) for r in list_sites(session)]
    return sorted(
        ((i, n) for i, n in rows if allowed is None or i in allowed), key=lambda r: r[1].lower()
    )


def site_id_for(session: Session, name: str, principal: SitePrincipal | None) -> int:
    """Return the id of the site named ``name`` (any case) for a filter's ``site``.

    Another site than the principal's is returned as any other: :func:`narrow_filter`
    then selects no study (issue #15), so a restricted principal gets an empty answer,
    not another site's data.

    Raises
    ------
    kerma.errors.NotFoundError
        When ``name`` is not a site; the message names the sites ``principal`` may see
        (a restricted principal is not told the names of the other sites).
    """
    try:
        return store.site_ids_for_names(session, names=[name])[0]
    except (NotFoundError, IndexError) as exc:
        known = [n for _, n in site_choices(session, principal)]
        raise NotFoundError(
            f"No site named {name.strip()!r}. The sites are: "
            f"{', '.join(known) if known else 'none yet (sites are made at import)'}."
        ) from exc


def narrow_filter(flt: StudyFilter | None, principal: SitePrincipal | None) -> StudyFilter:
    """Return ``flt`` narrowed to the sites ``principal`` may see.

    Parameters
    ----------
    flt : StudyFilter or None
        What the caller asked for (``site_ids`` may already choose sites).
    principal : object with ``site_ids``, or None
        ``None``, or ``site_ids`` ``None``: no restriction.

    Returns
    -------
    StudyFilter
        ``site_ids`` is the intersection of the asked and the allowed sites (empty:
        no study), or unchanged for an unrestricted principal.
    """
    flt = flt or StudyFilter()
    allowed = principal.site_ids if principal is not None else None
    if allowed is None:
        return flt
    asked = flt.site_ids
    chosen = set(allowed) if asked is None else set(allowed) & set(asked)
    return flt.replace(site_ids=tuple(sorted(chosen)))


def check_study_site(session: Session, study_id: int, principal: SitePrincipal | None) -> None:
    """Refuse a study of a site ``principal`` may not see.

    Raises
    ------
    kerma.errors.SiteAccessError
        When the principal is restricted to sites and the study is of none of them
        (a study without site is refused to a restricted principal).
    """
    allowed = principal.site_ids if principal is not None else None
    if allowed is None:
        return
    site_id = store.study_site_id(session, study_id=study_id)
    if site_id is None or site_id not in allowed:
        raise SiteAccessError(
            f"Study {study_id} is not of a site you are assigned to; ask an administrator "
            "to assign you its site."
        )


def get_study_for(
    session: Session, study_id: int, principal: SitePrincipal | None
) -> study_service.StudyDetail:
    """Return one study's detail, refused when it is of a site the principal may not see.

    Raises
    ------
    kerma.errors.NotFoundError
        When no study has that id.
    kerma.errors.SiteAccessError
        When it is of another site (:func:`check_study_site`).
    """
    detail = study_service.get_study_or_raise(session, study_id=study_id)
    check_study_site(session, study_id, principal)
    return detail


def allowed_site_ids(principal: SitePrincipal | None) -> tuple[int, ...] | None:
    """Return the site ids ``principal`` may see, or ``None`` (every site)."""
    return principal.site_ids if principal is not None else None


def narrow_alert_filter(flt: AlertFilter | None, principal: SitePrincipal | None) -> AlertFilter:
    """Return the alert filter ``flt`` narrowed to the alerts of ``principal``'s sites.

    An alert is of its study's site, else of its device's site
    (:func:`kerma.db.alerts.site_condition`); a restricted principal does not see an
    alert of no site.
    """
    flt = flt or AlertFilter()
    allowed = allowed_site_ids(principal)
    if allowed is None:
        return flt
    asked = flt.site_ids
    chosen = set(allowed) if asked is None else set(allowed) & set(asked)
    return dataclasses.replace(flt, site_ids=tuple(sorted(chosen)))


def check_alert_site(
    session: Session,
    alert_id: int,
    principal: SitePrincipal | None,
    *,
    crossing_only: bool = False,
) -> None:
    """Refuse an alert that concerns no site ``principal`` may see.

    An alert concerns its study's site (else its device's); a patient's cumulative
    alert also concerns the site of every study of its window (``alert_study``;
    :func:`kerma.db.alerts.site_condition`): each site that exposed the patient
    follows it up (Directive 2013/59/Euratom Art. 63; issue #15). With
    ``crossing_only`` only the alert's own study's (or device's) site passes: the
    significant-event report names that study. An alert that does not exist passes
    (the caller's look-up says 404).

    Raises
    ------
    kerma.errors.SiteAccessError
        When the principal is restricted to sites and the alert concerns none of them.
    """
    allowed = allowed_site_ids(principal)
    if allowed is None or not alert_store.alert_exists(session, alert_id=alert_id):
        return
    if not alert_store.is_alert_of_sites(
        session, alert_id=alert_id, site_ids=allowed, crossing_only=crossing_only
    ):
        what = "its study's site" if crossing_only else "one of its sites"
        raise SiteAccessError(
            f"Alert {alert_id} is not of a site you are assigned to; ask an administrator "
            f"to assign you {what}."
        )


def is_contributing_only(session: Session, alert_id: int, principal: SitePrincipal | None) -> bool:
    """Return whether ``principal`` sees an alert only as a contributing site.

    True when the principal is restricted to sites and the alert's own study (or
    device) is of none of them: a patient alert seen through a window study of its
    sites (:func:`check_alert_site`).
    """
    allowed = allowed_site_ids(principal)
    if allowed is None:
        return False
    return not alert_store.is_alert_of_sites(
        session, alert_id=alert_id, site_ids=allowed, crossing_only=True
    )


def reviewer_site_note(session: Session, alert_id: int, principal: SitePrincipal | None) -> str:
    """Return the prefix that records a contributing site's review in the alert's history.

    ``"[site North] "`` when ``principal`` reviews an alert as a contributing site
    (:func:`is_contributing_only`): the history's user name alone does not say for
    which site the review was made. Empty otherwise.
    """
    if not is_contributing_only(session, alert_id, principal):
        return ""
    names = store.site_names(session, site_ids=allowed_site_ids(principal) or ())
    return f"[site {', '.join(names)}] " if names else ""


#: :func:`kerma.services.alerts.alert_message` keys that describe the alert's own
#: study: hidden from a principal that sees the alert as a contributing site.
CROSSING_STUDY_KEYS = (
    "study_id",
    "study_date",
    "study_instance_uid",
    "device_name",
    "modality",
    "exam",
    "protocol",
)


def get_alert_for(
    session: Session, alert_id: int, principal: SitePrincipal | None
) -> dict[str, Any]:
    """Return one alert as ``principal`` may see it: refused when it concerns no site of
    the principal's, and its window's studies of other sites counted, not shown.

    A patient's cumulative-dose alert sums the patient's studies at every site; a
    principal restricted to sites sees it when one study of its window is of its sites,
    with the alert's value (the alert's finding) and the window's studies of its sites,
    and only the number of the others (``window_studies_other_sites``): no id, UID,
    date or dose of another site's study (:func:`kerma.services.alerts.get_alert` with
    ``site_ids``; issue #15). When the alert crossed at another site's study, that
    study's facts (:data:`CROSSING_STUDY_KEYS`) are ``None``, ``subject_key`` is the
    patient's key without the study id, and ``contributing_site`` is true.

    Returns
    -------
    dict
        :func:`kerma.services.alerts.get_alert`'s keys and ``contributing_site``.

    Raises
    ------
    kerma.errors.NotFoundError
        No such alert.
    kerma.errors.SiteAccessError
        When the alert concerns none of the principal's sites (:func:`check_alert_site`).
    """
    check_alert_site(session, alert_id, principal)
    alert = alert_service.get_alert(session, alert_id, site_ids=allowed_site_ids(principal))
    contributing = is_contributing_only(session, alert_id, principal)
    alert["contributing_site"] = contributing
    if contributing:
        for key in CROSSING_STUDY_KEYS:
            alert[key] = None
        key = str(alert.get("subject_key") or "")
        if alert.get("subject_kind") == "patient" and key.count(":") >= 2:
            alert["subject_key"] = key.rsplit(":", 1)[0]
    return alert
