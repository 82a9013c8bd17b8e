"""Keyword-only reads and writes of what the intake did not store: rejected and ignored objects.

``rejected_object`` lists archived objects that could not be imported, ``ignored_object``
objects the network intake acknowledged but did not keep (no dose information). These
queries serve :mod:`kerma.services.intake` (``kerma rejects``, ``kerma ignored``) and
the known-instances check of ``kerma pull``; none of them commits (the caller owns the
unit of work, :func:`kerma.db.session.session_scope`).

Reasons are matched with SQL ``LIKE`` patterns, case-insensitively (``lower()`` on both
sides, which SQLite and PostgreSQL both support), with ``\\`` as the escape character.

May import ``kerma.db`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, not_, or_, select, true
from sqlalchemy.orm import Session

from kerma.db.models import DoseReport, IgnoredObject, RejectedObject, ReportVersion

#: Largest number of values in one SQL ``IN (...)`` list (SQLite's default limit on
#: host parameters is 32,766; PostgreSQL's 65,535).
MAX_IN_VALUES = 10_000

#: Escape character of the ``LIKE`` patterns given to these queries.
LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class RejectWhere:
    """Which rows of ``rejected_object`` a query touches.

    Attributes
    ----------
    reason_like_any : tuple of str
        ``LIKE`` patterns (lower case, ``\\`` escapes); a row matches when its reason
        matches any of them. Empty: any reason.
    reason_like_none : tuple of str
        ``LIKE`` patterns the reason must match none of.
    rejected_from, rejected_before : datetime.datetime or None
        ``rejected_at`` from this instant (included) and before that one (excluded),
        timezone-aware.
    """

    reason_like_any: tuple[str, ...] = ()
    reason_like_none: tuple[str, ...] = ()
    rejected_from: dt.datetime | None = None
    rejected_before: dt.datetime | None = None


@dataclass(frozen=True)
class RejectedRow:
    """One row of ``rejected_object``.

    Attributes
    ----------
    id : int
        Row id.
    rejected_at : datetime.datetime
        When it was first rejected (UTC).
    file_name : str or None
        Where it came from: the file as given, or the network origin.
    sop_instance_uid, sop_class_uid : str or None
        Of the object, when known.
    reason : str
        Why it was rejected.
    archive_sha256 : str
        SHA-256 of the archived bytes.
    archive_path : str
        Path inside the archive folder.
    """

    id: int
    rejected_at: dt.datetime
    file_name: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None
    reason: str
    archive_sha256: str
    archive_path: str


@dataclass(frozen=True)
class IgnoredRow:
    """One row of ``ignored_object`` (see :class:`kerma.db.models.IgnoredObject`)."""

    sop_instance_uid: str
    sop_class_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    modality: str | None
    reason: str
    source: str | None
    received_at: dt.datetime


def _reject_condition(where: RejectWhere) -> ColumnElement[bool]:
    """Return the SQL condition of a :class:`RejectWhere`."""
    reason = func.lower(RejectedObject.reason)
    parts: list[ColumnElement[bool]] = []
    if where.reason_like_any:
        parts.append(or_(*(reason.like(p, escape=LIKE_ESCAPE) for p in where.reason_like_any)))
    parts.extend(not_(reason.like(p, escape=LIKE_ESCAPE)) for p in where.reason_like_none)
    if where.rejected_from is not None:
        parts.append(RejectedObject.rejected_at >= where.rejected_from)
    if where.rejected_before is not None:
        parts.append(RejectedObject.rejected_at < where.rejected_before)
    return and_(true(), *parts)


def _rejected_row(row: Any) -> RejectedRow:
    """Return a :class:`RejectedRow` from a result row of :data:`_REJECT_COLUMNS`."""
    return RejectedRow(*row)


_REJECT_COLUMNS = (
    RejectedObject.id,
    RejectedObject.rejected_at,
    RejectedObject.file_name,
    RejectedObject.sop_instance_uid,
    RejectedObject.sop_class_uid,
    RejectedObject.reason,
    RejectedObject.archive_sha256,
    RejectedObject.archive_path,
)


def list_rejected_objects(
    session: Session, *, where: RejectWhere, limit: int | None = None
) -> list[RejectedRow]:
    """Return the rejected objects that match, newest first.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Any session.
    where : RejectWhere
        Which rows.
    limit : int, optional
        At most this many rows.

    Returns
    -------
    list of RejectedRow
        Ordered by ``rejected_at`` then id, both descending.
    """
    stmt = (
        select(*_REJECT_COLUMNS)
        .where(_reject_condition(where))
        .order_by(RejectedObject.rejected_at.desc(), RejectedObject.id.desc())
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_rejected_row(row) for row in session.execute(stmt)]


def iter_rejected_objects(
    session: Session, *, where: RejectWhere, batch_size: int = 1000
) -> Iterator[RejectedRow]:
    """Yield every rejected object that matches, newest first, a batch at a time.

    Keyset paging on (``rejected_at``, ``id``), so memory holds one batch whatever the
    size of the listing.
    """
    condition = _reject_condition(where)
    last: tuple[dt.datetime, int] | None = None
    while True:
        stmt = select(*_REJECT_COLUMNS).where(condition)
        if last is not None:
            when, row_id = last
            stmt = stmt.where(
                or_(
                    RejectedObject.rejected_at < when,
                    and_(RejectedObject.rejected_at == when, RejectedObject.id < row_id),
                )
            )
        stmt = stmt.order_by(RejectedObject.rejected_at.desc(), RejectedObject.id.desc()).limit(
            batch_size
        )
        rows = [_rejected_row(row) for row in session.execute(stmt)]
        if not rows:
            return
        yield from rows
        last = (rows[-1].rejected_at, rows[-1].id)


def count_rejected_objects(session: Session, *, where: RejectWhere) -> int:
    """Return how many rejected objects match."""
    stmt = select(func.count(RejectedObject.id)).where(_reject_condition(where))
    return int(session.scalar(stmt) or 0)


def delete_rejected_objects(session: Session, *, ids: Sequence[int]) -> int:
    """Delete rows of ``rejected_object`` by id; return how many were deleted."""
    deleted = 0
    for start in range(0, len(ids), MAX_IN_VALUES):
        chunk = list(ids[start : start + MAX_IN_VALUES])
        result = session.execute(delete(RejectedObject).where(RejectedObject.id.in_(chunk)))
        deleted += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return deleted


def stored_archive_sha256s(session: Session, *, sha256s: Collection[str]) -> set[str]:
    """Return those of the given archive SHA-256s that a stored dose report uses.

    A version held of a report in conflict (``report_version``) uses its bytes too.
    """
    found: set[str] = set()
    values = list(sha256s)
    for start in range(0, len(values), MAX_IN_VALUES):
        chunk = values[start : start + MAX_IN_VALUES]
        for column in (DoseReport.archive_sha256, ReportVersion.archive_sha256):
            found.update(session.scalars(select(column).where(column.in_(chunk))))
    return found


def known_sop_instance_uids(session: Session, *, uids: Collection[str]) -> set[str]:
    """Return those of the given SOP Instance UIDs the registry knows.

    A UID is known when a dose report, a rejected object or an ignored object carries
    it (``dose_report``, ``rejected_object``, ``ignored_object``).

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Any session.
    uids : collection of str
        The UIDs to look up (looked up :data:`MAX_IN_VALUES` at a time).

    Returns
    -------
    set of str
        The known ones.
    """
    values = sorted({u for u in uids if u})
    found: set[str] = set()
    for start in range(0, len(values), MAX_IN_VALUES):
        chunk = values[start : start + MAX_IN_VALUES]
        for column in (
            DoseReport.sop_instance_uid,
            RejectedObject.sop_instance_uid,
            IgnoredObject.sop_instance_uid,
        ):
            found.update(u for u in session.scalars(select(column).where(column.in_(chunk))) if u)
    return found


_IGNORED_COLUMNS = (
    IgnoredObject.sop_instance_uid,
    IgnoredObject.sop_class_uid,
    IgnoredObject.study_instance_uid,
    IgnoredObject.series_instance_uid,
    IgnoredObject.modality,
    IgnoredObject.reason,
    IgnoredObject.source,
    IgnoredObject.received_at,
)


def list_ignored_objects(session: Session, *, limit: int | None = None) -> list[IgnoredRow]:
    """Return the ignored objects, newest first (``received_at``, then id, descending)."""
    stmt = select(*_IGNORED_COLUMNS).order_by(
        IgnoredObject.received_at.desc(), IgnoredObject.id.desc()
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [IgnoredRow(*row) for row in session.execute(stmt)]


def iter_ignored_objects(session: Session, *, batch_size: int = 1000) -> Iterator[IgnoredRow]:
    """Yield every ignored object, newest first, a batch at a time (keyset paging)."""
    last: tuple[dt.datetime, int] | None = None
    while True:
        stmt = select(*_IGNORED_COLUMNS, IgnoredObject.id)
        if last is not None:
            when, row_id = last
            stmt = stmt.where(
                or_(
                    IgnoredObject.received_at < when,
                    and_(IgnoredObject.received_at == when, IgnoredObject.id < row_id),
                )
            )
        stmt = stmt.order_by(IgnoredObject.received_at.desc(), IgnoredObject.id.desc()).limit(
            batch_size
        )
        rows = list(session.execute(stmt))
        if not rows:
            return
        for row in rows:
            yield IgnoredRow(*row[:-1])
        last = (rows[-1][-2], rows[-1][-1])


def count_ignored_objects(session: Session) -> int:
    """Return how many ignored objects are listed."""
    return int(session.scalar(select(func.count(IgnoredObject.id))) or 0)


def count_ignored_by_kind(session: Session) -> list[tuple[str | None, str | None, int]]:
    """Return (modality, SOP Class UID, number of objects) of the ignored objects, most first."""
    n = func.count(IgnoredObject.id)
    stmt = (
        select(IgnoredObject.modality, IgnoredObject.sop_class_uid, n)
        .group_by(IgnoredObject.modality, IgnoredObject.sop_class_uid)
        .order_by(n.desc(), IgnoredObject.modality, IgnoredObject.sop_class_uid)
    )
    return [
        (modality, sop_class, int(count)) for modality, sop_class, count in session.execute(stmt)
    ]
