"""Narrow reads and in-database aggregations for the analytics at scale.

- :func:`study_sample_rows`: one row per CT or RF/XA study from the study summary
  columns (only the columns asked for, filtered in SQL);
- :func:`event_sample_rows`: one row per current DX or MG event, found through the
  event groups' index (``event_group_id``), never by scanning the events;
- :func:`summary_groups`, :func:`group_counts`, :func:`group_value_counts` and
  :func:`group_percentiles`: counts and linear-interpolation percentiles per
  (modality, device, protocol) group computed by the database from the partial
  indexes ``(event_group_id, <quantity>)`` (on SQLite an index walk per percentile, on
  PostgreSQL :func:`postgres_group_percentiles`), so the events are never read into
  Python; when a study filter rules the indexes out, :func:`group_value_rows` reads
  the values (SQLite) or :func:`postgres_summary_rows` counts and ranks them in one
  statement (PostgreSQL);
- :func:`cumulative_rows`: per-patient sums over a date window (GROUP BY).

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, Row, and_, case, func, or_, select, values
from sqlalchemy import column as value_column
from sqlalchemy.orm import Session

from kerma.db.filters import StudyFilter, device_matches, event_month_conditions, study_conditions
from kerma.db.models import Device, EventGroup, IrradiationEvent, Patient, Study
from kerma.db.session import fetch_rows
from kerma.db.summary import chunks

#: Study-level sample families (one sample per study).
STUDY_SAMPLE_FAMILIES: tuple[str, ...] = ("CT", "RF/XA")

#: Event-level sample families (one sample per projection / view) and their modalities.
EVENT_SAMPLE_MODALITIES: dict[str, tuple[str, ...]] = {
    "DX": ("DX", "CR", "PX", "IO"),
    "MG": ("MG",),
}

#: Study columns a study sample may carry (and :func:`study_context_rows` reads).
STUDY_SAMPLE_COLUMNS: tuple[str, ...] = (
    "study_id",
    "study_instance_uid",
    "study_date",
    "study_description",
    "device_id",
    "modality_family",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
    "standard_exam",
    "number_of_events",
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "ctdivol_max_mgy",
    "kvp_kv",
    "ssde_mgy",
    "ssde_size_mm",
    "ssde_size_source",
    "effective_dose_msv",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
)

#: Event columns an event sample may carry (besides the study context).
EVENT_SAMPLE_COLUMNS: tuple[str, ...] = (
    "dap_gym2",
    "dose_rp_gy",
    "entrance_dose_mgy",
    "agd_mgy",
    "compression_thickness_mm",
    "laterality",
    "image_view",
)

#: Study context columns of an event sample.
EVENT_CONTEXT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "study_instance_uid",
    "study_date",
    "study_description",
    "device_id",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
)


def _study_column(name: str) -> Any:
    """Return the ``study`` column of a sample column name (``study_id`` is ``study.id``)."""
    return Study.id if name == "study_id" else getattr(Study, name)


def device_names(session: Session) -> dict[int, tuple[str, str | None]]:
    """Return ``{device id: (device name, station name)}`` of every device (a small table)."""
    stmt = select(Device.id, Device.device_name, Device.station_name)
    return {row.id: (row.device_name, row.station_name) for row in session.execute(stmt)}


def matching_device_ids(session: Session, *, text: str) -> list[int]:
    """Return the ids of devices whose name, station or model contains ``text`` (any case)."""
    pattern = f"%{text}%"
    stmt = select(Device.id).where(device_matches(pattern))
    return list(session.scalars(stmt))


def study_sample_rows(
    session: Session,
    *,
    flt: StudyFilter | None,
    families: Sequence[str] = STUDY_SAMPLE_FAMILIES,
    columns: Sequence[str] = STUDY_SAMPLE_COLUMNS,
) -> list[tuple[Any, ...]]:
    """Return one row per study of the study-level families with events, narrow columns.

    Parameters
    ----------
    flt : StudyFilter or None
        Which studies.
    families : sequence of str, optional
        ``CT`` and/or ``RF/XA`` (``study.modality_family``).
    columns : sequence of str, optional
        :data:`STUDY_SAMPLE_COLUMNS` to read, in this order.
    """
    wanted = [f for f in families if f in STUDY_SAMPLE_FAMILIES]
    if not wanted:
        return []
    stmt = select(*(_study_column(c).label(c) for c in columns)).where(
        Study.modality_family.in_(wanted),
        Study.number_of_events > 0,
        *study_conditions(flt),
    )
    return fetch_rows(session, stmt)


def study_context_rows(
    session: Session, *, flt: StudyFilter | None, columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Return ``study_id`` and ``columns`` of every study ``flt`` selects (one narrow scan)."""
    names = ["study_id", *(c for c in columns if c != "study_id")]
    stmt = select(*(_study_column(c).label(c) for c in names)).where(*study_conditions(flt))
    return fetch_rows(session, stmt)


def _groups_of(
    session: Session, *, modalities: Sequence[str], flt: StudyFilter | None
) -> list[int]:
    """Return the event-group ids of these event modalities (non-patient as ``flt`` says)."""
    g = EventGroup
    stmt = select(g.id).where(func.upper(g.modality).in_([m.upper() for m in modalities]))
    if flt is None or not flt.include_non_patient:
        stmt = stmt.where(g.is_non_patient.is_(False))
    return list(session.scalars(stmt))


def event_sample_rows(
    session: Session,
    *,
    flt: StudyFilter | None,
    family: str,
    columns: Sequence[str] = EVENT_SAMPLE_COLUMNS,
) -> list[tuple[Any, ...]]:
    """Return ``event_id``, ``study_id``, ``standard_exam`` and ``columns`` of the current
    events of a DX or MG family, from the covering index ``ix_irradiation_event_samples``.

    The events are found through their group's modality and non-patient flag; the
    study filter is applied by the caller (join with :func:`study_context_rows`). Every
    DX/MG event has a non-null ``standard_exam`` (``""`` when unmapped), so the index
    holds them all.
    """
    groups = _groups_of(session, modalities=EVENT_SAMPLE_MODALITIES[family], flt=flt)
    if not groups:
        return []
    e = IrradiationEvent
    stmt = select(
        e.id.label("event_id"),
        e.study_id.label("study_id"),
        e.standard_exam.label("standard_exam"),
        *(getattr(e, c).label(c) for c in columns),
    ).where(
        e.event_group_id.in_(groups),
        e.standard_exam.is_not(None),
        *event_month_conditions(flt),  # only the filter's months' partitions
    )
    return fetch_rows(session, stmt)


# -- summary per (modality, device, protocol) ---------------------------------------------------


def summary_groups(session: Session, *, flt: StudyFilter | None) -> list[Row[Any]]:
    """Return the event groups ``flt``'s device, modality and non-patient fields select.

    Rows: ``group_id``, ``modality``, ``device_id``, ``device_name``,
    ``acquisition_protocol``, ``is_non_patient``.
    """
    g = EventGroup
    stmt = select(
        g.id.label("group_id"),
        g.modality,
        g.device_id,
        Device.device_name,
        g.acquisition_protocol,
        g.is_non_patient,
    ).join(Device, Device.id == g.device_id)
    flt = flt or StudyFilter()
    if not flt.include_non_patient:
        stmt = stmt.where(g.is_non_patient.is_(False))
    if flt.modalities:
        stmt = stmt.where(func.upper(g.modality).in_(list(flt.modalities)))
    if flt.device_ids:
        stmt = stmt.where(g.device_id.in_(list(flt.device_ids)))
    if flt.device_name:
        pattern = f"%{flt.device_name}%"
        stmt = stmt.where(device_matches(pattern))
    return list(session.execute(stmt).all())


def postgres_summary_rows(
    session: Session,
    *,
    flt: StudyFilter | None,
    group_codes: Mapping[int, int],
    quantities: Sequence[str],
    fractions: Sequence[float],
) -> list[tuple[Any, ...]]:
    """Return the summary per key code of the events ``flt`` selects, in one statement.

    One PostgreSQL ``GROUP BY`` over the events of the groups in ``group_codes`` (a
    ``VALUES`` list joined by group id, so that the groups of one code, e.g. the patient
    and non-patient groups of one (modality, device, protocol), are counted and ranked
    together), joined with ``study``, kept when their study meets ``flt``'s
    :func:`~kerma.db.filters.study_conditions` (the rows :func:`group_value_rows`
    reads) and bounded to the filter's months, so only those partitions are read. Each
    quantity's percentiles are ``percentile_cont`` (linear interpolation between the
    closest ranks, numpy's default; NULLs ignored). The events are read once for every
    count and quantity, where there was a statement per quantity before.

    Parameters
    ----------
    flt : StudyFilter or None
        Which studies' events.
    group_codes : mapping of int to int
        ``{event group id: code}``; rows are per code.
    quantities : sequence of str
        Event quantity columns of ``irradiation_event``.
    fractions : sequence of float
        Percentiles as fractions (0.5, 0.25, 0.75).

    Returns
    -------
    list of tuple
        One row per code with events: code, number of events, number of distinct
        studies, then per quantity the number of values and one float per fraction
        (``None`` without values).
    """
    e = IrradiationEvent
    codes = values(
        value_column("group_id", Integer), value_column("code", Integer), name="group_code"
    ).data(sorted(group_codes.items()))
    measures: list[Any] = []
    for quantity in quantities:
        value = getattr(e, quantity)
        measures.append(func.count(value))
        measures += [func.percentile_cont(q).within_group(value) for q in fractions]
    stmt = (
        select(codes.c.code, func.count(), func.count(func.distinct(e.study_id)), *measures)
        .join(codes, codes.c.group_id == e.event_group_id)
        .join(Study, Study.id == e.study_id)
        .where(*study_conditions(flt), *event_month_conditions(flt))
        .group_by(codes.c.code)
    )
    return fetch_rows(session, stmt)


def group_counts(session: Session, *, group_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Return ``{group id: (events, distinct studies)}`` from the ``(group, study)`` index.

    On PostgreSQL ``count(DISTINCT study_id)`` per group: the partitions' indexes are
    merged in group order and each group's studies counted as they come (measured on a
    250,000-event registry partitioned by month: 48 ms against 85 ms for the pairs
    below, which PostgreSQL hashes there; docs/scaling.md). SQLite counts the
    ``(group, study)`` pairs of its one index.
    """
    e = IrradiationEvent
    out: dict[int, tuple[int, int]] = {}
    is_postgres = session.get_bind().dialect.name == "postgresql"
    for batch in chunks(group_ids):
        if is_postgres:
            stmt = (
                select(e.event_group_id, func.count(), func.count(func.distinct(e.study_id)))
                .where(e.event_group_id.in_(batch))
                .group_by(e.event_group_id)
            )
        else:
            pairs = (
                select(
                    e.event_group_id.label("gid"), e.study_id.label("sid"), func.count().label("n")
                )
                .where(e.event_group_id.in_(batch))
                .group_by(e.event_group_id, e.study_id)
                .subquery()
            )
            stmt = select(pairs.c.gid, func.sum(pairs.c.n), func.count()).group_by(pairs.c.gid)
        for gid, n_events, n_studies in session.execute(stmt):
            out[int(gid)] = (int(n_events), int(n_studies))
    return out


def group_value_counts(
    session: Session, *, quantity: str, group_ids: Sequence[int]
) -> dict[int, int]:
    """Return ``{group id: values of quantity}`` from its partial index."""
    e = IrradiationEvent
    column = getattr(e, quantity)
    out: dict[int, int] = {}
    for batch in chunks(group_ids):
        stmt = (
            select(e.event_group_id, func.count())
            .where(e.event_group_id.in_(batch), column.is_not(None))
            .group_by(e.event_group_id)
        )
        out.update({int(gid): int(n) for gid, n in session.execute(stmt)})
    return out


def group_percentiles(
    session: Session, *, quantity: str, group_id: int, n: int, fractions: Sequence[float]
) -> list[float]:
    """Return linear-interpolation percentiles of one group's values (numpy's default).

    For each fraction q the value at rank (n − 1)·q is interpolated between the two
    neighbouring ranks, each read by ``ORDER BY quantity LIMIT 2 OFFSET k`` on the
    partial index ``(event_group_id, quantity)``: the database walks the index, no
    value is sorted or sent but those two.

    Parameters
    ----------
    quantity : str
        An event quantity with a partial index (``SUMMARY_EVENT_QUANTITIES``).
    group_id : int
        The event group.
    n : int
        Number of values in the group (:func:`group_value_counts`).
    fractions : sequence of float
        Percentiles as fractions (0.25, 0.5, 0.75).
    """
    e = IrradiationEvent
    column = getattr(e, quantity)
    base = (
        select(column)
        .where(e.event_group_id == group_id, column.is_not(None))
        .order_by(column)
        .limit(2)
    )
    out = []
    cache: dict[int, list[float]] = {}
    for q in fractions:
        position = (n - 1) * q
        k = math.floor(position)
        if k not in cache:
            cache[k] = [float(v) for v in session.scalars(base.offset(k))]
        pair = cache[k]
        low = pair[0]
        high = pair[1] if len(pair) > 1 else low
        out.append(low + (high - low) * (position - k))
    return out


def postgres_group_percentiles(
    session: Session, *, quantity: str, group_ids: Sequence[int], fractions: Sequence[float]
) -> dict[int, tuple[int, list[float]]]:
    """Return ``{group id: (values, percentiles)}`` with PostgreSQL's ``percentile_cont``.

    One statement per batch of groups counts the values of ``quantity`` and ranks them
    (linear interpolation, numpy's default) from the partial index ``(event_group_id,
    quantity)``; groups without a value are left out. The count was a statement of its
    own (:func:`group_value_counts`, which SQLite's index walk still needs).
    """
    e = IrradiationEvent
    column = getattr(e, quantity)
    out: dict[int, tuple[int, list[float]]] = {}
    for batch in chunks(group_ids):
        stmt = (
            select(
                e.event_group_id,
                func.count(column),
                *(func.percentile_cont(q).within_group(column) for q in fractions),
            )
            .where(e.event_group_id.in_(batch), column.is_not(None))
            .group_by(e.event_group_id)
        )
        for row in session.execute(stmt):
            out[int(row[0])] = (int(row[1]), [float(v) for v in row[2:]])
    return out


def group_value_rows(
    session: Session,
    *,
    flt: StudyFilter | None,
    group_ids: Sequence[int],
    quantities: Sequence[str],
) -> list[tuple[Any, ...]]:
    """Return ``group_id``, ``study_id`` and ``quantities`` of the events of these groups
    whose studies ``flt`` selects (the summary's path when a study filter applies)."""
    e = IrradiationEvent
    rows: list[tuple[Any, ...]] = []
    for batch in chunks(group_ids):
        stmt = (
            select(
                e.event_group_id.label("group_id"),
                e.study_id.label("study_id"),
                *(getattr(e, q).label(q) for q in quantities),
            )
            .join(Study, Study.id == e.study_id)
            .where(
                e.event_group_id.in_(batch), *study_conditions(flt), *event_month_conditions(flt)
            )
        )
        rows.extend(fetch_rows(session, stmt))
    return rows


# -- cumulative dose ------------------------------------------------------------------------------

#: Families whose studies count in the cumulative dose (those with dose samples).
CUMULATIVE_FAMILIES: tuple[str, ...] = ("CT", "RF/XA", "DX", "MG")


def latest_study_date(session: Session, *, flt: StudyFilter | None) -> dt.date | None:
    """Return the latest study date among the patient studies of the sample families."""
    stmt = select(func.max(Study.study_date)).where(
        Study.modality_family.in_(CUMULATIVE_FAMILIES),
        Study.number_of_events > 0,
        Study.patient_id.is_not(None),
        *study_conditions(flt),
    )
    return session.scalar(stmt)


def cumulative_rows(
    session: Session, *, flt: StudyFilter | None, start: dt.date, end: dt.date
) -> list[tuple[Any, ...]]:
    """Return per patient with a dose over ``[start, end]``: study counts and CT / fluoroscopy sums.

    Patients whose studies in the window hold no DLP, effective dose, Ka,r or KAP (all
    missing or zero) are left out.

    Rows (sorted by CT effective dose, then fluoroscopy Ka,r, descending, missing last,
    then pseudonym): ``patient_pseudonym``, ``number_of_studies``,
    ``number_of_ct_exams``, ``ct_dlp_total_mgycm`` (mGy·cm), ``ct_effective_dose_msv``
    (mSv), ``number_of_fluoro_studies``, ``fluoro_studies_dose_rp_total_gy`` (Gy),
    ``fluoro_studies_dap_total_gym2`` (Gy·m²).
    """
    s = Study
    is_ct = s.modality_family == "CT"
    is_fluoro = s.modality_family == "RF/XA"
    per_patient = (
        select(
            s.patient_id.label("patient_id"),
            func.count(s.id).label("number_of_studies"),
            func.sum(case((is_ct, 1), else_=0)).label("number_of_ct_exams"),
            func.sum(case((is_ct, s.ct_dlp_total_mgycm))).label("ct_dlp_total_mgycm"),
            func.sum(case((is_ct, s.effective_dose_msv))).label("ct_effective_dose_msv"),
            func.sum(case((is_fluoro, 1), else_=0)).label("number_of_fluoro_studies"),
            func.sum(case((is_fluoro, s.dose_rp_total_gy))).label(
                "fluoro_studies_dose_rp_total_gy"
            ),
            func.sum(case((is_fluoro, s.dap_total_gym2))).label("fluoro_studies_dap_total_gym2"),
        )
        .where(
            and_(s.study_date >= start, s.study_date <= end),
            s.modality_family.in_(CUMULATIVE_FAMILIES),
            s.number_of_events > 0,
            s.patient_id.is_not(None),
            *study_conditions(flt),
        )
        .group_by(s.patient_id)
        .subquery()
    )
    c = per_patient.c
    stmt = (
        select(
            Patient.pseudonym.label("patient_pseudonym"),
            c.number_of_studies,
            c.number_of_ct_exams,
            c.ct_dlp_total_mgycm,
            c.ct_effective_dose_msv,
            c.number_of_fluoro_studies,
            c.fluoro_studies_dose_rp_total_gy,
            c.fluoro_studies_dap_total_gym2,
        )
        .join(Patient, Patient.id == c.patient_id)
        .where(  # a patient with no dose in the window is not listed
            or_(
                c.ct_dlp_total_mgycm > 0,
                c.ct_effective_dose_msv > 0,
                c.fluoro_studies_dose_rp_total_gy > 0,
                c.fluoro_studies_dap_total_gym2 > 0,
            )
        )
        .order_by(
            c.ct_effective_dose_msv.desc().nulls_last(),
            c.fluoro_studies_dose_rp_total_gy.desc().nulls_last(),
            Patient.pseudonym,
        )
    )
    return fetch_rows(session, stmt)
