"""SQL of the web dashboard's aggregates: studies per month, last contact, workload, originals.

Every function aggregates in the database (GROUP BY on ``study`` or ``dose_report``,
filtered by :func:`kerma.db.filters.study_conditions`) and returns plain tuples, so a
page never reads a table into Python. Month, weekday and hour are computed by the
database (SQLite ``strftime``, PostgreSQL ``to_char`` / ``extract``).

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Integer, and_, cast, func, select
from sqlalchemy.orm import Session

from kerma.db.filters import StudyFilter, study_conditions
from kerma.db.models import Alert, Device, DoseReport, RejectedObject, Study
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


def last_received_per_device(
    session: Session, *, recent: int = 20, site_ids: Sequence[int] | None = None
) -> list[tuple[Any, ...]]:
    """Return, per device, ``(device_id, device_name, station_name, modality, last received_at,
    number of studies)``; a device without studies has ``None`` and 0.

    ``site_ids``: only the devices of these sites, and only their studies of these
    sites (issue #15); ``None``: every device.

    ``received_at`` is when Kerma stored the newest dose report among the device's
    ``recent`` most recently stored studies (highest ids, an index seek on
    ``ix_study_device_id``), so the cost does not grow with the registry: the device's
    last contact as far as the registry knows (a report re-sent for an old study later
    is not seen). Ordered by device name.
    """
    of_sites = [Study.site_id.in_(list(site_ids))] if site_ids is not None else []
    devices = select(Device.id, Device.device_name, Device.station_name)
    if site_ids is not None:
        devices = devices.where(Device.site_id.in_(list(site_ids)))
    counts = dict(
        session.execute(
            select(Study.device_id, func.count()).where(*of_sites).group_by(Study.device_id)
        ).all()
    )
    out = []
    for device_id, name, station in session.execute(
        devices.order_by(Device.device_name, Device.id)
    ):
        newest = (
            select(Study.id, Study.modality)
            .where(Study.device_id == device_id, *of_sites)
            .order_by(Study.id.desc())
            .limit(recent)
            .subquery()
        )
        last, modality = session.execute(
            select(func.max(DoseReport.received_at), func.max(newest.c.modality)).join(
                newest, newest.c.id == DoseReport.study_id
            )
        ).one()
        out.append((device_id, name, station, modality, last, int(counts.get(device_id, 0))))
    return out


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
    rows = fetch_rows(session, stmt)  # type: ignore[arg-type]
    return [(int(d), int(h), int(n)) for d, h, n in rows if h is not None]


def data_version(session: Session) -> tuple[int, int, int]:
    """Return ``(highest dose_report id, highest study id, highest alert id)``.

    Three primary-key index ends (instant at any size): they change whenever an object
    is stored or an alert raised, so a cached aggregate keyed by them shows a new
    import at once (other changes, e.g. a re-mapping, wait for the cache's lifetime).
    """
    return (
        int(session.scalar(select(func.coalesce(func.max(DoseReport.id), 0))) or 0),
        int(session.scalar(select(func.coalesce(func.max(Study.id), 0))) or 0),
        int(session.scalar(select(func.coalesce(func.max(Alert.id), 0))) or 0),
    )


def exam_names(session: Session, *, site_ids: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """Return ``(standard exam, number of studies, QA included)`` per stored exam.

    One GROUP BY over the ``standard_exam`` index (index-only), most frequent first;
    ``site_ids``: the studies of these sites only.
    """
    n = func.count().label("n")
    of_sites = [Study.site_id.in_(list(site_ids))] if site_ids is not None else []
    stmt = (
        select(Study.standard_exam, n)
        .where(Study.standard_exam.is_not(None), Study.standard_exam != "", *of_sites)
        .group_by(Study.standard_exam)
        .order_by(n.desc(), Study.standard_exam)
    )
    return [(str(e), int(c)) for e, c in session.execute(stmt)]


def exam_family(session: Session, *, exam: str) -> str | None:
    """Return the modality family most studies of a standard exam have (``None``: no study)."""
    n = func.count().label("n")
    stmt = (
        select(Study.modality_family, n)
        .where(Study.standard_exam == exam, Study.modality_family.is_not(None))
        .group_by(Study.modality_family)
        .order_by(n.desc())
        .limit(1)
    )
    row = session.execute(stmt).first()
    return str(row[0]) if row is not None else None


def device_names(
    session: Session, *, site_ids: Sequence[int] | None = None
) -> list[tuple[int, str]]:
    """Return ``(device id, display name)`` of every device (of ``site_ids``), by name."""
    stmt = select(Device.id, Device.device_name).order_by(Device.device_name, Device.id)
    if site_ids is not None:
        stmt = stmt.where(Device.site_id.in_(list(site_ids)))
    return [(int(i), str(n)) for i, n in session.execute(stmt)]


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
    return [tuple(row) for row in fetch_rows(session, stmt)]  # type: ignore[arg-type]


def count_rejected(session: Session) -> int:
    """Return how many rejected objects the registry lists."""
    return int(session.scalar(select(func.count(RejectedObject.id))) or 0)
