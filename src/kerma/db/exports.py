"""Keyword-only reads for the exports (issue #14): streamed studies with their events,
counts per exam/protocol/device, and the per-month change fingerprints of the
incremental Parquet export.

Every read streams (``yield_per``: a server-side cursor on PostgreSQL, batches on
SQLite) or aggregates in the database; none holds a table in memory.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Row,
    and_,
    distinct,
    func,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from kerma.db.filters import StudyFilter, event_month_conditions, study_conditions
from kerma.db.models import Device, IrradiationEvent, Study
from kerma.db.studies import (
    STUDY_COLUMNS,
    STUDY_LISTING,
    _events_select,
    _listing,
)

#: Columns of the exported study rows: the listing's, then the change marker.
EXPORT_STUDY_COLUMNS: tuple[str, ...] = (*STUDY_COLUMNS, "updated_at")

#: Name of the partition of studies without a study date (``study_month=unknown``).
UNKNOWN_MONTH = "unknown"


def _kind(sql_type: Any) -> str:
    """Return the plain kind of a SQL type: int, float, bool, date, datetime, json or text."""
    for cls, kind in (
        (Boolean, "bool"),
        (Integer, "int"),
        (Float, "float"),
        (DateTime, "datetime"),
        (Date, "date"),
        (JSON, "json"),
    ):
        if isinstance(sql_type, cls):
            return kind
    return "text"


def study_column_kinds() -> dict[str, str]:
    """Return each :data:`EXPORT_STUDY_COLUMNS` name with its kind (:func:`_kind`)."""
    kinds = {name: _kind(STUDY_LISTING[name].type) for name in STUDY_COLUMNS}
    kinds["updated_at"] = "datetime"
    return kinds


def event_column_kinds() -> dict[str, str]:
    """Return each column of :func:`iter_events_of` rows with its kind (:func:`_kind`)."""
    stmt = _events_select(StudyFilter(include_non_patient=True))
    from kerma.db.studies import EVENT_COLUMNS

    return {
        name: _kind(column.type)
        for name, column in zip(EVENT_COLUMNS, stmt.selected_columns, strict=True)
    }


def iter_export_studies(
    session: Session, *, flt: StudyFilter | None = None, batch_size: int = 1000
) -> Iterator[Row[Any]]:
    """Yield the studies of ``flt`` (:data:`EXPORT_STUDY_COLUMNS`), oldest first, streamed.

    Order: study date, study time, id (the order of :func:`iter_events_of`).
    """
    stmt = (
        _listing(STUDY_COLUMNS)
        .add_columns(Study.updated_at.label("updated_at"))
        .where(*study_conditions(flt))
        .order_by(Study.study_date, Study.study_time, Study.id)
        .execution_options(yield_per=batch_size)
    )
    yield from session.execute(stmt)


def iter_events_of(
    session: Session, *, study_ids: Sequence[int], batch_size: int = 5000
) -> Iterator[Row[Any]]:
    """Yield the current events of these studies (``kerma.db.studies.EVENT_COLUMNS``).

    Ordered by study (date, time, id), then report and event index.
    """
    stmt = _events_select(StudyFilter(include_non_patient=True), study_ids=list(study_ids))
    yield from session.execute(stmt.execution_options(yield_per=batch_size))


def max_events_per_family(session: Session, *, flt: StudyFilter | None = None) -> dict[str, int]:
    """Return the largest ``number_of_events`` of the selected studies per modality family.

    Studies without a family are under ``""``.
    """
    # constants as literal SQL: PostgreSQL must see the same expression in GROUP BY
    family = func.coalesce(Study.modality_family, literal_column("''"))
    stmt = (
        select(family, func.max(Study.number_of_events))
        .where(*study_conditions(flt))
        .group_by(family)
    )
    return {str(family): int(n or 0) for family, n in session.execute(stmt)}


def count_by_exam_protocol_device(
    session: Session, *, flt: StudyFilter | None = None
) -> list[Row[Any]]:
    """Return studies and events per modality family, exam, protocol and device.

    Columns ``modality_family``, ``standard_exam`` (the study's), ``acquisition_protocol``
    (the event's), ``device_name``, ``number_of_studies``, ``number_of_events``; current
    events only; one GROUP BY in the database.
    """
    e = IrradiationEvent
    keys = (
        Study.modality_family.label("modality_family"),
        Study.standard_exam.label("standard_exam"),
        e.acquisition_protocol.label("acquisition_protocol"),
        Device.device_name.label("device_name"),
    )
    stmt = (
        select(
            *keys,
            func.count(distinct(Study.id)).label("number_of_studies"),
            func.count(e.id).label("number_of_events"),
        )
        .select_from(e)
        .join(Study, Study.id == e.study_id)
        .join(Device, Device.id == Study.device_id)
        .where(e.is_current.is_(True), *study_conditions(flt), *event_month_conditions(flt))
        .group_by(*keys)
        .order_by(*keys)
    )
    return list(session.execute(stmt).all())  # type: ignore[arg-type]


def _month_of(session: Session) -> Any:
    """Return the SQL expression ``YYYY-MM`` of ``study.study_date`` for this back end."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(Study.study_date, literal_column("'YYYY-MM'"))
    return func.strftime(literal_column("'%Y-%m'"), Study.study_date)


def month_fingerprints(session: Session) -> dict[str, tuple[int, int, str]]:
    """Return per study month: (studies, sum of study ids, latest ``updated_at`` as text).

    The fingerprint changes when a study of the month is added, removed, moved to
    another month or updated (``study.updated_at``, migration ``0011_export_marker``).
    Months are ``YYYY-MM``; studies without a date are under :data:`UNKNOWN_MONTH`.
    One GROUP BY over ``study``.
    """
    month = func.coalesce(_month_of(session), literal_column(f"'{UNKNOWN_MONTH}'"))
    stmt = select(month, func.count(Study.id), func.sum(Study.id), func.max(Study.updated_at))
    stmt = stmt.group_by(month)
    out: dict[str, tuple[int, int, str]] = {}
    for name, n, id_sum, latest in session.execute(stmt):
        out[str(name)] = (int(n), int(id_sum or 0), "" if latest is None else str(latest))
    return out


def month_condition(month: str) -> Any:
    """Return the WHERE condition selecting the studies of one ``YYYY-MM`` month.

    :data:`UNKNOWN_MONTH` selects the studies without a date.

    Raises
    ------
    ValueError
        When ``month`` is not ``YYYY-MM``.
    """
    if month == UNKNOWN_MONTH:
        return Study.study_date.is_(None)
    first = dt.date.fromisoformat(f"{month}-01")
    after = dt.date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return and_(Study.study_date >= first, Study.study_date < after)


def iter_month_studies(
    session: Session, *, month: str, batch_size: int = 1000
) -> Iterator[Row[Any]]:
    """Yield every study of one month (:data:`EXPORT_STUDY_COLUMNS`; QA studies too), streamed."""
    stmt = (
        _listing(STUDY_COLUMNS)
        .add_columns(Study.updated_at.label("updated_at"))
        .where(month_condition(month))
        .order_by(Study.study_date, Study.study_time, Study.id)
        .execution_options(yield_per=batch_size)
    )
    yield from session.execute(stmt)


def latest_update(session: Session) -> dt.datetime | None:
    """Return the latest ``study.updated_at`` (the high-water mark), or ``None``."""
    return session.scalar(select(func.max(Study.updated_at)))
