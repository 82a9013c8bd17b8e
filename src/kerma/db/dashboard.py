"""SQL of the web dashboard's aggregates: studies per month, last contact, workload, originals.

Every function aggregates in the database (GROUP BY on ``study`` or ``dose_report``,
filtered by :func:`kerma.db.filters.study_conditions`) and returns plain tuples, so a
page never reads a table into Python. Month, weekday and hour are computed by the
database (SQLite ``strftime``, PostgreSQL ``to_char`` / ``extract``).

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, and_, cast, func, select
from sqlalchemy.orm import Session

from kerma.db.filters import StudyFilter, study_conditions
from kerma.db.models import Device, DoseReport, RejectedObject, Study
from kerma.db.session import fetch_rows


def _is_postgres(session: Session) -> bool:
    """Return whether the session's database is PostgreSQL."""
    return session.get_bind().dialect.name == "postgresql"


def _month(session: Session) -> Any:
    """Return the ``YYYY-MM`` expression of ``study.study_date`` for the dialect."""
    if _is_postgres(session):
        return func.to_char(Study.study_date, "YYYY-MM")
    return func.strftime("%Y-%m", Study.study_date)


def studies_per_month(session: Session, *, flt: StudyFilter | None = None) -> list[tuple[Any, ...]]:
    """Return ``(month 'YYYY-MM', modality, number of studies)`` of ``flt``'s studies.

    One GROUP BY over the filter's studies; studies without a date are left out.
    Ordered by month, then modality.
    """
    month = _month(session).label("month")
    modality = func.coalesce(Study.modality, "").label("modality")
    stmt = (
        select(month, modality, func.count())
        .where(and_(*study_conditions(flt)), Study.study_date.is_not(None))
        .group_by(month, modality)
        .order_by(month, modality)
    )
    return [tuple(row) for row in fetch_rows(session, stmt)]


def last_received_per_device(session: Session) -> list[tuple[Any, ...]]:
    """Return, per device, ``(device_id, device_name, station_name, modality, last received_at,
    number of dose reports)``; devices that sent nothing have ``None`` and 0.

    ``received_at`` is when Kerma stored the device's newest object (``dose_report``),
    the device's last contact as far as the registry knows. Ordered by device name.
    """
    last = (
        select(
            Study.device_id.label("device_id"),
            func.max(DoseReport.received_at).label("last_received_at"),
            func.count(DoseReport.id).label("n_reports"),
            func.max(Study.modality).label("modality"),
        )
        .join(Study, Study.id == DoseReport.study_id)
        .group_by(Study.device_id)
        .subquery()
    )
    stmt = (
        select(
            Device.id,
            Device.device_name,
            Device.station_name,
            last.c.modality,
            last.c.last_received_at,
            func.coalesce(last.c.n_reports, 0),
        )
        .outerjoin(last, last.c.device_id == Device.id)
        .order_by(Device.device_name, Device.id)
    )
    return [tuple(row) for row in session.execute(stmt)]


def workload(session: Session, *, flt: StudyFilter | None = None) -> list[tuple[int, int, int]]:
    """Return ``(weekday 0=Monday..6, hour 0..23, number of studies)`` of ``flt``'s studies.

    Weekday from ``study_date``, hour from the first two digits of ``study_time``
    (DICOM TM ``HHMMSS``); studies without a date or time are left out.
    """
    if _is_postgres(session):
        dow = cast(func.extract("isodow", Study.study_date), Integer) - 1
    else:  # strftime %w: 0 = Sunday
        dow = (cast(func.strftime("%w", Study.study_date), Integer) + 6) % 7
    hour = cast(func.substr(Study.study_time, 1, 2), Integer)
    weekday, hour_ = dow.label("weekday"), hour.label("hour")
    stmt = (
        select(weekday, hour_, func.count())
        .where(
            and_(*study_conditions(flt)),
            Study.study_date.is_not(None),
            Study.study_time.is_not(None),
            func.length(Study.study_time) >= 2,
        )
        .group_by(weekday, hour_)
    )
    return [(int(d), int(h), int(n)) for d, h, n in fetch_rows(session, stmt) if h is not None]


def data_version(session: Session) -> tuple[int, int, int]:
    """Return ``(highest dose_report id, number of dose reports, highest study id)``.

    Cheap (primary-key index ends and one count): it changes whenever an object is
    stored, superseded or removed, so a cached aggregate keyed by it is never stale
    after an import.
    """
    row = session.execute(
        select(func.coalesce(func.max(DoseReport.id), 0), func.count(DoseReport.id))
    ).one()
    top_study = session.scalar(select(func.coalesce(func.max(Study.id), 0))) or 0
    return int(row[0]), int(row[1]), int(top_study)


def study_reports(session: Session, *, study_id: int) -> list[tuple[Any, ...]]:
    """Return the dose reports of a study: ``(id, sop_instance_uid, kind, received_at,
    source, is_superseded, archive_path)``, oldest first."""
    stmt = (
        select(
            DoseReport.id,
            DoseReport.sop_instance_uid,
            DoseReport.kind,
            DoseReport.received_at,
            DoseReport.source,
            DoseReport.superseded_by_id.is_not(None),
            DoseReport.archive_path,
        )
        .where(DoseReport.study_id == study_id)
        .order_by(DoseReport.received_at, DoseReport.id)
    )
    return [tuple(row) for row in session.execute(stmt)]


def description_groups(session: Session, *, limit: int = 2000) -> list[tuple[Any, ...]]:
    """Return ``(modality, study_description, requested_procedure_description,
    procedure_reported, standard_exam, number of studies)`` per distinct combination.

    The most frequent ``limit`` combinations (one GROUP BY): what a trial exam rule is
    matched against before it is saved.
    """
    columns = (
        Study.modality,
        Study.study_description,
        Study.requested_procedure_description,
        Study.procedure_reported,
        Study.standard_exam,
    )
    n = func.count().label("n")
    stmt = select(*columns, n).group_by(*columns).order_by(n.desc()).limit(limit)
    return [tuple(row) for row in fetch_rows(session, stmt)]


def count_rejected(session: Session) -> int:
    """Return how many rejected objects the registry lists."""
    return int(session.scalar(select(func.count(RejectedObject.id))) or 0)
