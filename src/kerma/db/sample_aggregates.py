"""Dose-sample aggregates computed by PostgreSQL: one row per group, never one per sample.

The DRL comparison and the dose statistics describe the registry's dose samples (one
per CT or RF/XA study, one per DX projection or MG view, as
:func:`kerma.services.analytics.dose_samples` reads them). On PostgreSQL these
functions let the database count, rank and describe them with GROUP BY and
``percentile_cont`` (linear interpolation between the closest ranks, numpy's and
pandas' default definition), so a command's memory does not grow with the registry:

- :func:`sample_exam_counts`: samples per standard exam (and whether any is a child's);
- :func:`sample_study_count`: the distinct studies of the samples (why nothing compares);
- :func:`room_medians`: per comparison cell (exam, patient group, DRL row band, view
  and validity) and room, the counts and the median;
- :func:`image_views`: the distinct stored views of a family's events;
- :func:`sample_statistics`: n, mean, std, min, max and percentiles per group.

SQLite has no ``percentile_cont``: there the callers read the samples instead.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    Date,
    DateTime,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    column,
    distinct,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
    values,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, Select, Subquery

from kerma.db.filters import StudyFilter, event_month_conditions, study_conditions
from kerma.db.models import Device, EventGroup, IrradiationEvent, Study
from kerma.db.session import fetch_rows

#: Study-level sample families (one sample per study, from the summary columns).
STUDY_FAMILIES: Final[tuple[str, ...]] = ("CT", "RF/XA")

#: Event-level sample families (one sample per projection / view) and their modalities.
EVENT_FAMILIES: Final[dict[str, tuple[str, ...]]] = {
    "DX": ("DX", "CR", "PX", "IO"),
    "MG": ("MG",),
}


@dataclass(frozen=True)
class RoomUnit:
    """Which samples of a family one set of room medians takes, as plain values.

    Attributes
    ----------
    unit_id : int
        Returned with each room's row.
    exam : str
        The samples' standard exam.
    patient_group : {"adult", "paediatric", "all"}
        Age class: ``adult`` at least ``adult_age_years`` (unknown age counted in
        ``n_unknown_age`` and, under the adult policy, in ``n``), ``paediatric``
        younger, ``all`` every sample.
    column : str
        Sample column whose median is taken.
    band : {"age", "weight", "thickness"} or None
        Band column: age (years) or weight (kg), lower-inclusive and upper-exclusive,
        an open side where the bound is ``None``; compressed breast thickness (mm),
        both bounds inclusive.
    view : str or None
        Only samples of this (normalised) view.
    valid_from, valid_to : datetime.date or None
        Validity of the DRL row (inclusive; ``None`` open): samples on whose date it
        is in force (samples without a date: only when ``valid_to`` is open).
    outside : tuple of (date or None, date or None)
        Validity periods none of which may be in force on the sample's date.
    period_start : datetime.date or None
        Only samples of the period starting that day (:func:`room_medians`'s
        ``period``).
    """

    unit_id: int
    exam: str
    patient_group: str
    column: str
    band: str | None = None
    band_min: float | None = None
    band_max: float | None = None
    view: str | None = None
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    outside: tuple[tuple[dt.date | None, dt.date | None], ...] = ()
    period_start: dt.date | None = None


#: The period of every sample when the units are not per period (a join key, not a date).
NO_PERIOD: Final = dt.date(1, 1, 1)


def _samples(
    family: str,
    *,
    flt: StudyFilter | None,
    columns: Sequence[str],
    mapped_only: bool,
    views: Mapping[str, str] | None = None,
    materialized: bool = False,
    period: str | None = None,
) -> Subquery | CTE:
    """Return the samples of one family as a subquery, one row per sample.

    Columns: ``study_id``, ``device_id``, ``standard_exam``, ``age`` (years),
    ``weight`` (kg), ``day`` (study date), ``thickness`` (mm), ``view`` and
    ``v0``, ``v1`` … (``columns`` in order). Study families: studies with events
    (``standard_exam`` NULL when unmapped); event families: the current events of the
    family's modalities (``standard_exam`` NULL when unmapped; left out with
    ``mapped_only``), their study's context; ``flt`` applies as in the sample frame.
    ``materialized``: a ``MATERIALIZED`` common table expression instead, read once
    by a hash join (the planner would otherwise re-read the samples per unit).
    """
    s = Study
    period_of: Any = literal(NO_PERIOD, Date)
    if period is not None:
        period_of = cast(func.date_trunc(period, cast(s.study_date, DateTime)), Date)
    context = (
        s.id.label("study_id"),
        s.device_id.label("device_id"),
        s.patient_age_years.label("age"),
        s.patient_weight_kg.label("weight"),
        s.study_date.label("day"),
        period_of.label("period"),
    )
    if family in STUDY_FAMILIES:
        stmt = select(
            *context,
            s.standard_exam.label("standard_exam"),
            cast(null(), Float).label("thickness"),
            cast(null(), String).label("view"),
            *(getattr(s, c).label(f"v{i}") for i, c in enumerate(columns)),
        ).where(s.modality_family == family, s.number_of_events > 0, *study_conditions(flt))
        return _named(stmt, materialized=materialized)
    e = IrradiationEvent
    g = EventGroup
    groups = select(g.id).where(
        func.upper(g.modality).in_([m.upper() for m in EVENT_FAMILIES[family]])
    )
    if flt is None or not flt.include_non_patient:
        groups = groups.where(g.is_non_patient.is_(False))
    view: Any = e.image_view
    if views:
        view = case(views, value=e.image_view, else_=e.image_view)
    exam: Any = case((e.standard_exam == "", null()), else_=e.standard_exam)
    stmt = (
        select(
            *context,
            exam.label("standard_exam"),
            e.compression_thickness_mm.label("thickness"),
            view.label("view"),
            *(getattr(e, c).label(f"v{i}") for i, c in enumerate(columns)),
        )
        .join(s, s.id == e.study_id)
        .where(
            e.event_group_id.in_(groups),
            e.standard_exam.is_not(None),
            *study_conditions(flt),
            *event_month_conditions(flt),  # only the filter's months' partitions
        )
    )
    if mapped_only:
        stmt = stmt.where(e.standard_exam != "")
    return _named(stmt, materialized=materialized)


def _named(stmt: Select[Any], *, materialized: bool) -> Subquery | CTE:
    """Return the samples' statement as the ``sample`` subquery or materialised CTE."""
    if materialized:
        return stmt.cte("sample").prefix_with("MATERIALIZED")
    return stmt.subquery("sample")


def sample_exam_counts(
    session: Session,
    *,
    flt: StudyFilter | None,
    family: str,
    adult_age_years: float,
    mapped_only: bool = True,
) -> list[tuple[Any, ...]]:
    """Return per standard exam of a family: samples, samples of children, of the others.

    Rows ``(standard_exam, n, n_paediatric, n_adult_or_unknown)``; ``standard_exam`` is
    ``None`` for unmapped samples (event families: only without ``mapped_only``).
    """
    sample = _samples(family, flt=flt, columns=(), mapped_only=mapped_only)
    child = sample.c.age < adult_age_years
    stmt = select(
        sample.c.standard_exam,
        func.count(),
        func.count(case((child, 1))),
        func.count(case((or_(sample.c.age.is_(None), sample.c.age >= adult_age_years), 1))),
    ).group_by(sample.c.standard_exam)
    return fetch_rows(session, stmt)


def sample_period_exam_counts(
    session: Session,
    *,
    flt: StudyFilter | None,
    family: str,
    adult_age_years: float,
    period: str,
) -> list[tuple[Any, ...]]:
    """Return per period and standard exam of a family's mapped samples the counts.

    Rows ``(period start, standard_exam, n, n_paediatric, n_adult_or_unknown)``: the
    first day of the study date's ``period`` (``month``, ``quarter``, ``year``;
    ``None`` without a date), ``standard_exam`` ``None`` for unmapped study samples.
    """
    sample = _samples(family, flt=flt, columns=(), mapped_only=True, period=period)
    child = sample.c.age < adult_age_years
    dated = case((sample.c.day.is_not(None), sample.c.period))
    stmt = select(
        dated,
        sample.c.standard_exam,
        func.count(),
        func.count(case((child, 1))),
        func.count(case((or_(sample.c.age.is_(None), sample.c.age >= adult_age_years), 1))),
    ).group_by(dated, sample.c.standard_exam)
    return fetch_rows(session, stmt)


def sample_study_count(
    session: Session, *, flt: StudyFilter | None, families: Sequence[str]
) -> int:
    """Return the distinct studies among the samples of ``families``, mapped or not.

    One ``COUNT(DISTINCT)`` over the families' samples (any database).
    """
    if not families:
        return 0
    parts = [
        select(_samples(f, flt=flt, columns=(), mapped_only=False).c.study_id) for f in families
    ]
    studies = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("studies")
    return int(session.scalar(select(func.count(distinct(studies.c.study_id)))) or 0)


def image_views(session: Session, *, family: str) -> list[str]:
    """Return the distinct stored image views of an event family's mapped events."""
    e = IrradiationEvent
    g = EventGroup
    groups = select(g.id).where(
        func.upper(g.modality).in_([m.upper() for m in EVENT_FAMILIES[family]])
    )
    stmt = (
        select(e.image_view)
        .where(e.event_group_id.in_(groups), e.standard_exam.is_not(None))
        .where(e.image_view.is_not(None))
        .distinct()
    )
    return [str(v) for v in session.scalars(stmt)]


def _unit_row(unit: RoomUnit, value_index: int) -> tuple[Any, ...]:
    """Return a unit's row of the ``VALUES`` list of :func:`room_medians`."""
    return (
        unit.unit_id,
        unit.exam,
        unit.patient_group,
        value_index,
        unit.band,
        unit.band_min,
        unit.band_max,
        unit.view,
        unit.valid_from,
        unit.valid_to,
        unit.period_start or NO_PERIOD,
    )


def _in_force(valid_from: Any, valid_to: Any, day: Any) -> ColumnElement[bool]:
    """Return whether a validity period (inclusive, NULL open) is in force on ``day``.

    A period without bounds is in force on every day; a sample without a date only
    under an open-ended period (``kerma.analysis.drl._in_force``).
    """
    return or_(
        and_(valid_from.is_(None), valid_to.is_(None)),
        and_(
            day.is_not(None),
            or_(valid_from.is_(None), day >= valid_from),
            or_(valid_to.is_(None), day <= valid_to),
        ),
        and_(day.is_(None), valid_to.is_(None)),
    )


def room_medians(
    session: Session,
    *,
    flt: StudyFilter | None,
    family: str,
    units: Sequence[RoomUnit],
    adult_age_years: float,
    unknown_as_adult: bool,
    views: Mapping[str, str] | None = None,
    period: str | None = None,
) -> list[tuple[Any, ...]]:
    """Return per unit and room the counts and median of the unit's samples (PostgreSQL).

    One statement: the family's mapped samples joined with the units (a ``VALUES``
    list) on the exam and the unit's age class, band, view and validity, grouped by
    unit and room. A sample counts in ``n`` and the median when it is of the age
    class (unknown age: only under ``unknown_as_adult``), in ``n_unknown_age`` when an
    adult unit's sample has no age; samples without the value are left out.

    Parameters
    ----------
    flt : StudyFilter or None
        Which studies.
    family : str
        ``CT``, ``RF/XA``, ``DX`` or ``MG``.
    units : sequence of RoomUnit
        The cells of this family.
    adult_age_years : float
        Age (years) from which a patient is an adult.
    unknown_as_adult : bool
        Count samples of unknown age as adults (``Settings.drl_unknown_age``).
    views : mapping of str to str, optional
        Stored image view → normalised view, for the views that differ.
    period : {"month", "quarter", "year", "week"}, optional
        Units per period: each takes the samples of the period starting on its
        ``period_start`` (joined on it with the exam).

    Returns
    -------
    list of tuple
        ``(unit_id, device_id, n, n_studies, n_unknown_age, median)`` in unit and
        device order; ``median`` is ``None`` when ``n`` is 0.
    """
    if not units:
        return []
    columns = list(dict.fromkeys(u.column for u in units))
    sample = _samples(
        family,
        flt=flt,
        columns=columns,
        mapped_only=True,
        views=views,
        materialized=True,
        period=period,
    )
    unit_table = values(
        column("unit_id", Integer),
        column("exam", String),
        column("age_class", String),
        column("value_index", Integer),
        column("band", String),
        column("band_min", Float),
        column("band_max", Float),
        column("view", String),
        column("valid_from", Date),
        column("valid_to", Date),
        column("period_start", Date),
        name="unit",
    ).data([_unit_row(u, columns.index(u.column)) for u in units])
    outside_rows = [(u.unit_id, a, b) for u in units for a, b in u.outside]
    outside_table = values(
        column("unit_id", Integer),
        column("valid_from", Date),
        column("valid_to", Date),
        name="outside",
    ).data(outside_rows or [(-1, None, None)])
    u, o, s = unit_table.c, outside_table.c, sample.c
    band_min, band_max = cast(u.band_min, Float), cast(u.band_max, Float)
    valid_from, valid_to = cast(u.valid_from, Date), cast(u.valid_to, Date)
    age = s.age
    adult: ColumnElement[bool] = age >= adult_age_years
    if unknown_as_adult:
        adult = or_(adult, age.is_(None))
    included = or_(
        u.age_class == "all",
        and_(u.age_class == "adult", adult),
        and_(u.age_class == "paediatric", age < adult_age_years),
    )
    unknown = and_(u.age_class == "adult", age.is_(None))

    def band_of(name: str, value: Any) -> ColumnElement[bool]:
        return and_(
            u.band == name,
            value.is_not(None),
            or_(band_min.is_(None), value >= band_min),
            or_(band_max.is_(None), value < band_max),
        )

    in_band = or_(
        u.band.is_(None),
        band_of("age", age),
        band_of("weight", s.weight),
        and_(u.band == "thickness", s.thickness >= band_min, s.thickness <= band_max),
    )
    value = case(*((u.value_index == i, s[f"v{i}"]) for i in range(len(columns))))
    covered = exists().where(
        o.unit_id == u.unit_id,
        _in_force(cast(o.valid_from, Date), cast(o.valid_to, Date), s.day),
    )
    counted = case((included, value))
    stmt = (
        select(
            u.unit_id,
            s.device_id,
            func.count(counted),
            func.count(distinct(case((included, s.study_id)))),
            func.count(case((unknown, 1))),
            func.percentile_cont(0.5).within_group(counted),
        )
        .select_from(sample)
        .join(
            unit_table,
            and_(u.exam == s.standard_exam, cast(u.period_start, Date) == s.period),
        )
        .where(
            value.is_not(None),
            or_(included, unknown),
            in_band,
            or_(u.view.is_(None), s.view == u.view),
            _in_force(valid_from, valid_to, s.day),
            ~covered,
        )
        .group_by(u.unit_id, s.device_id)
        .order_by(u.unit_id, s.device_id)
    )
    return fetch_rows(session, stmt)


# -- statistics ----------------------------------------------------------------------------------

#: Statistics of :func:`sample_statistics`, in order (percentiles as fractions).
STATISTIC_FRACTIONS: Final[dict[str, float]] = {
    "p25": 0.25,
    "median": 0.5,
    "p75": 0.75,
    "p95": 0.95,
}


def sample_statistics(
    session: Session,
    *,
    flt: StudyFilter | None,
    families: Mapping[str, Sequence[str]],
    keys: Sequence[str],
    exam: str | None = None,
    period: str = "month",
    views: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Return n, mean, std, min, max and percentiles per group and quantity (PostgreSQL).

    One statement over the samples of every family (``UNION ALL``), grouped by
    ``keys``: samples of different families that share a group are described
    together, as in the sample frame.

    Parameters
    ----------
    flt : StudyFilter or None
        Which studies.
    families : mapping of str to sequence of str
        Per family (``CT``, ``RF/XA``, ``DX``, ``MG``; every sample, mapped or not)
        its sample columns to describe.
    keys : sequence of str
        Grouping keys (:data:`STATISTIC_KEYS`).
    exam : str, optional
        Only the samples of this standard exam.
    period : {"month", "quarter", "year", "week"}, optional
        The ``period`` key: the first day of the study date's period (weeks start on
        Monday, as pandas' ``W`` periods), ``None`` without a study date.
    views : mapping of str to mapping of str to str, optional
        Per event family, stored image view → normalised view, where they differ.

    Returns
    -------
    tuple of (list of str, list of tuple)
        The quantities described (the union of the families' columns, in order) and
        one row per group: ``(*keys, *per quantity (n, mean, std, min, max, p25, median,
        p75, p95))``; ``std`` is the sample standard deviation (``None`` for one
        value), the percentiles interpolate linearly; a quantity without a value in a
        group has ``n`` 0.
    """
    quantities = list(dict.fromkeys(q for columns in families.values() for q in columns))
    if not quantities or not families:
        return quantities, []
    parts = [
        _statistics_samples(
            family,
            flt=flt,
            keys=keys,
            quantities=[q if q in columns else None for q in quantities],
            period=period,
            views=(views or {}).get(family),
        )
        for family, columns in families.items()
    ]
    sample = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("sample")
    s = sample.c
    key_columns = [s[f"k{i}"] for i in range(len(keys))]
    aggregates = []
    for i in range(len(quantities)):
        value = s[f"v{i}"]
        aggregates += [
            func.count(value),
            func.avg(value),
            func.stddev_samp(value),
            func.min(value),
            func.max(value),
            *(func.percentile_cont(q).within_group(value) for q in STATISTIC_FRACTIONS.values()),
        ]
    stmt = select(*key_columns, *aggregates).group_by(*key_columns)
    if exam is not None:
        stmt = stmt.where(s.standard_exam == exam)
    return quantities, fetch_rows(session, stmt)


#: Grouping keys :func:`sample_statistics` computes in the database.
STATISTIC_KEYS: Final[tuple[str, ...]] = (
    "standard_exam",
    "device_name",
    "station_name",
    "device_id",
    "modality_family",
    "sample_level",
    "patient_sex",
    "study_description",
    "view",
    "laterality",
    "ssde_size_source",
    "period",
)


def _statistics_samples(
    family: str,
    *,
    flt: StudyFilter | None,
    keys: Sequence[str],
    quantities: Sequence[str | None],
    period: str,
    views: Mapping[str, str] | None,
) -> Select[Any]:
    """Return a family's samples with their keys ``k0`` … and values ``v0`` … (NULL: none)."""
    s = Study
    is_event = family in EVENT_FAMILIES
    e = IrradiationEvent
    text_null = cast(null(), String)
    view: Any = text_null
    if is_event:
        view = case(views, value=e.image_view, else_=e.image_view) if views else e.image_view
    exam: Any = (
        case((e.standard_exam == "", text_null), else_=e.standard_exam)
        if is_event
        else s.standard_exam
    )
    per_key: dict[str, Any] = {
        "standard_exam": exam,
        "device_name": Device.device_name,
        "station_name": Device.station_name,
        "device_id": s.device_id,
        "modality_family": cast(literal(family), String),
        "sample_level": cast(literal("event" if is_event else "study"), String),
        "patient_sex": s.patient_sex,
        "study_description": s.study_description,
        "view": view,
        "laterality": e.laterality if family == "MG" else text_null,
        "ssde_size_source": s.ssde_size_source if family == "CT" else text_null,
        "period": func.date_trunc(period, cast(s.study_date, DateTime)),
    }
    owner: Any = e if is_event else s
    stmt = select(
        exam.label("standard_exam"),
        *(per_key[k].label(f"k{i}") for i, k in enumerate(keys)),
        *(
            (getattr(owner, q) if q else cast(null(), Float)).label(f"v{i}")
            for i, q in enumerate(quantities)
        ),
    )
    if is_event:
        g = EventGroup
        groups = select(g.id).where(
            func.upper(g.modality).in_([m.upper() for m in EVENT_FAMILIES[family]])
        )
        if flt is None or not flt.include_non_patient:
            groups = groups.where(g.is_non_patient.is_(False))
        stmt = stmt.select_from(e).join(s, s.id == e.study_id)
        stmt = stmt.where(
            e.event_group_id.in_(groups),
            e.standard_exam.is_not(None),
            *event_month_conditions(flt),  # only the filter's months' partitions
        )
    else:
        stmt = stmt.select_from(s).where(s.modality_family == family, s.number_of_events > 0)
    if {"device_name", "station_name"} & set(keys):
        stmt = stmt.join(Device, Device.id == s.device_id)
    return stmt.where(*study_conditions(flt))


__all__ = [
    "EVENT_FAMILIES",
    "STATISTIC_FRACTIONS",
    "STATISTIC_KEYS",
    "STUDY_FAMILIES",
    "RoomUnit",
    "image_views",
    "room_medians",
    "sample_exam_counts",
    "sample_period_exam_counts",
    "sample_statistics",
    "sample_study_count",
]
