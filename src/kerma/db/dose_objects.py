"""Keyword-only reads for the FHIR and research exports: a study's device and dose objects.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kerma.db.models import Device, DoseReport, IrradiationEvent, Study

#: Columns of :func:`device_of_study` (``device`` table).
DEVICE_COLUMNS: tuple[str, ...] = (
    "device_id",
    "device_observer_uid",
    "manufacturer",
    "manufacturer_model_name",
    "device_serial_number",
    "station_name",
    "institution_name",
    "software_versions",
    "device_name",
)

#: Columns of :func:`study_dose_reports` (``dose_report`` table).
REPORT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "sop_instance_uid",
    "sop_class_uid",
    "series_instance_uid",
    "kind",
    "archive_path",
    "source",
    "received_at",
    "is_current",
)


def study_ids_by_uid(session: Session, *, study_instance_uids: Sequence[str]) -> list[int]:
    """Return the ids of the studies (one per device) with these Study Instance UIDs."""
    if not study_instance_uids:
        return []
    stmt = (
        select(Study.id)
        .where(Study.study_instance_uid.in_(list(study_instance_uids)))
        .order_by(Study.id)
    )
    return list(session.scalars(stmt))


def device_of_study(session: Session, *, study_id: int) -> dict[str, Any] | None:
    """Return the :data:`DEVICE_COLUMNS` of the device of a study, or ``None``."""
    d = Device
    stmt = (
        select(
            d.id,
            d.device_observer_uid,
            d.manufacturer,
            d.manufacturer_model_name,
            d.device_serial_number,
            d.station_name,
            d.institution_name,
            d.software_versions,
            d.device_name,
        )
        .join(Study, Study.device_id == d.id)
        .where(Study.id == study_id)
    )
    row = session.execute(stmt).one_or_none()
    return None if row is None else dict(zip(DEVICE_COLUMNS, row, strict=True))


def study_dose_reports(
    session: Session, *, study_ids: Sequence[int], current_only: bool = False
) -> list[dict[str, Any]]:
    """Return the dose objects of these studies (:data:`REPORT_COLUMNS`), oldest first.

    ``is_current``: the report is not superseded by a newer one.
    """
    if not study_ids:
        return []
    r = DoseReport
    stmt = select(
        r.study_id,
        r.sop_instance_uid,
        r.sop_class_uid,
        r.series_instance_uid,
        r.kind,
        r.archive_path,
        r.source,
        r.received_at,
        r.superseded_by_id.is_(None),
    ).where(r.study_id.in_(list(study_ids)))
    if current_only:
        stmt = stmt.where(r.superseded_by_id.is_(None))
    stmt = stmt.order_by(r.study_id, r.received_at, r.id)
    return [dict(zip(REPORT_COLUMNS, row, strict=True)) for row in session.execute(stmt)]


def first_event_start(session: Session, *, study_id: int) -> str | None:
    """Return the earliest DICOM DT 'DateTime Started' of a study's current events."""
    e = IrradiationEvent
    stmt = select(func.min(e.datetime_started)).where(
        e.study_id == study_id, e.is_current.is_(True), e.datetime_started.is_not(None)
    )
    return session.scalar(stmt)


def study_rows(session: Session, *, study_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Return the listing rows (:data:`kerma.db.studies.STUDY_COLUMNS`) of these studies.

    One query for the batch, in the order of ``study_ids``.
    """
    from kerma.db.studies import STUDY_COLUMNS, _listing

    if not study_ids:
        return []
    stmt = _listing(STUDY_COLUMNS).where(Study.id.in_(list(study_ids)))
    rows = {row[0]: dict(zip(STUDY_COLUMNS, row, strict=True)) for row in session.execute(stmt)}
    return [rows[i] for i in study_ids if i in rows]
