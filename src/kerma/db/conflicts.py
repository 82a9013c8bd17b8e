"""Keyword-only reads and writes of held versions, conflicts and the decision log.

``report_conflict`` (one row per SOP Instance UID stored with several contents),
``report_version`` (each version) and ``conflict_decision`` (append-only: this module
only ever inserts into it) serve the ingest pipeline, which opens conflicts and
applies decisions, and :mod:`kerma.services.conflicts` (``kerma conflicts``). None of
these functions commits.

May import ``kerma.db`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session, selectinload

from kerma.db.models import (
    ConflictDecision,
    Device,
    DoseReport,
    ReportConflict,
    ReportVersion,
    Study,
)


def lock_report(session: Session, *, dose_report_id: int) -> None:
    """Lock a report's row until the transaction ends (``SELECT ... FOR UPDATE``).

    Two copies of one SOP Instance UID arriving at two workers at once then add their
    versions one after the other (PostgreSQL; SQLite serialises writers anyway).
    """
    session.execute(select(DoseReport.id).where(DoseReport.id == dose_report_id).with_for_update())


def get_conflict(session: Session, *, sop_instance_uid: str) -> ReportConflict | None:
    """Return the conflict of a SOP Instance UID (versions loaded), or ``None``."""
    stmt = (
        select(ReportConflict)
        .where(ReportConflict.sop_instance_uid == sop_instance_uid)
        .options(selectinload(ReportConflict.versions))
    )
    return session.scalars(stmt).one_or_none()


def add_conflict(session: Session, *, report: DoseReport, opened_at: dt.datetime) -> ReportConflict:
    """Insert the (open) conflict of a stored report and return it."""
    conflict = ReportConflict(
        sop_instance_uid=report.sop_instance_uid,
        dose_report_id=report.id,
        is_open=True,
        opened_at=opened_at,
    )
    session.add(conflict)
    session.flush()
    return conflict


def add_version(session: Session, *, conflict: ReportConflict, **values: Any) -> ReportVersion:
    """Insert a version of ``conflict`` (number: one more than the last) and return it.

    ``values`` are :class:`~kerma.db.models.ReportVersion` columns other than
    ``conflict_id`` and ``version``.
    """
    number = max((v.version for v in conflict.versions), default=0) + 1
    row = ReportVersion(conflict_id=conflict.id, version=number, **values)
    conflict.versions.append(row)
    session.flush()
    return row


def add_decision(session: Session, **values: Any) -> ConflictDecision:
    """Append a decision to ``conflict_decision`` (the only write this table gets).

    ``values`` are :class:`~kerma.db.models.ConflictDecision` columns.
    """
    row = ConflictDecision(**values)
    session.add(row)
    session.flush()
    return row


def refresh_has_conflict(session: Session, *, study_ids: Collection[int]) -> None:
    """Set ``study.has_conflict`` of the studies: whether any report has an open conflict."""
    if not study_ids:
        return
    session.flush()
    is_open = (
        exists()
        .where(
            ReportConflict.dose_report_id == DoseReport.id,
            DoseReport.study_id == Study.id,
            ReportConflict.is_open.is_(True),
        )
        .correlate(Study)
    )
    session.execute(
        update(Study)
        .where(Study.id.in_(list(study_ids)))
        .values(has_conflict=is_open)
        .execution_options(synchronize_session=False)
    )
    for study in session.identity_map.values():
        if isinstance(study, Study) and study.id in study_ids:
            session.expire(study, ["has_conflict"])


@dataclass(frozen=True)
class ConflictRow:
    """One conflict as ``kerma conflicts list`` shows it.

    Attributes
    ----------
    sop_instance_uid : str
        The SOP Instance UID held in several versions.
    is_open : bool
        Undecided.
    number_of_versions : int
        Versions held.
    current_version : int
        The version the registry counts (``dose_report``).
    opened_at, decided_at : datetime.datetime or None
        When the conflict (last) opened and was last decided.
    study_id : int
        The study of the current version.
    study_instance_uid : str
        Its Study Instance UID.
    study_date : datetime.date or None
        Its date.
    modality : str or None
        Its modality.
    device_name : str
        Its device.
    """

    sop_instance_uid: str
    is_open: bool
    number_of_versions: int
    current_version: int
    opened_at: dt.datetime | None
    decided_at: dt.datetime | None
    study_id: int
    study_instance_uid: str
    study_date: dt.date | None
    modality: str | None
    device_name: str


def list_conflicts(session: Session, *, include_decided: bool = False) -> list[ConflictRow]:
    """Return the conflicts, open ones first, then newest opened first.

    Parameters
    ----------
    include_decided : bool, optional
        Also list decided (closed) conflicts. Default: open ones only.
    """
    n_versions = (
        select(func.count())
        .where(ReportVersion.conflict_id == ReportConflict.id)
        .correlate(ReportConflict)
        .scalar_subquery()
    )
    current = (
        select(func.max(ReportVersion.version))
        .where(ReportVersion.conflict_id == ReportConflict.id, ReportVersion.is_current.is_(True))
        .correlate(ReportConflict)
        .scalar_subquery()
    )
    stmt = (
        select(
            ReportConflict.sop_instance_uid,
            ReportConflict.is_open,
            n_versions,
            current,
            ReportConflict.opened_at,
            ReportConflict.decided_at,
            Study.id,
            Study.study_instance_uid,
            Study.study_date,
            Study.modality,
            Device.device_name,
        )
        .join(DoseReport, DoseReport.id == ReportConflict.dose_report_id)
        .join(Study, Study.id == DoseReport.study_id)
        .join(Device, Device.id == Study.device_id)
        .order_by(ReportConflict.is_open.desc(), ReportConflict.opened_at.desc(), ReportConflict.id)
    )
    if not include_decided:
        stmt = stmt.where(ReportConflict.is_open.is_(True))
    return [
        ConflictRow(
            sop_instance_uid=r[0],
            is_open=bool(r[1]),
            number_of_versions=int(r[2] or 0),
            current_version=int(r[3] or 0),
            opened_at=r[4],
            decided_at=r[5],
            study_id=r[6],
            study_instance_uid=r[7],
            study_date=r[8],
            modality=r[9],
            device_name=r[10] or "",
        )
        for r in session.execute(stmt)
    ]


def count_open_conflicts(session: Session) -> int:
    """Return how many conflicts are undecided."""
    stmt = select(func.count()).where(ReportConflict.is_open.is_(True))
    return int(session.scalar(stmt) or 0)


def list_decisions(
    session: Session, *, sop_instance_uid: str | None = None
) -> Sequence[ConflictDecision]:
    """Return the logged decisions (of one SOP Instance UID, or all), oldest first."""
    stmt = select(ConflictDecision).order_by(ConflictDecision.id)
    if sop_instance_uid is not None:
        stmt = stmt.where(ConflictDecision.sop_instance_uid == sop_instance_uid)
    return session.scalars(stmt).all()
