"""Keyword-only reads of studies, events and patient sizes: filter, sort and page in SQL.

Every read takes a :class:`~kerma.db.filters.StudyFilter`. Listings sort in the
database by any listed column (ascending or descending, ties broken by study id) and
page with LIMIT/OFFSET over an index (the page's ids are found on ``study`` alone, then
joined: a late page costs an index walk, not a join per skipped row). Large reads
stream in batches (``yield_per``; server-side cursors on PostgreSQL).

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Row, Select, case, func, select
from sqlalchemy.orm import Session

from kerma.db.filters import StudyFilter, event_month_conditions, study_conditions
from kerma.db.models import (
    Device,
    DoseReport,
    IgnoredObject,
    IrradiationEvent,
    Patient,
    PatientSizeMeasurement,
    RejectedObject,
    Site,
    Study,
)
from kerma.errors import UnknownColumnError
from kerma.records import EVENT_SCALAR_FIELDS

#: Columns of a study listing, in order: name -> SQL expression. ``device_*`` come from
#: ``device``, ``patient_pseudonym`` from ``patient``, the rest from ``study`` (the
#: summary columns, derived at ingest).
STUDY_LISTING: dict[str, Any] = {
    "study_id": Study.id,
    "study_instance_uid": Study.study_instance_uid,
    "accession_number": Study.accession_number,
    "accession_pseudonym": Study.accession_pseudonym,
    "study_date": Study.study_date,
    "study_time": Study.study_time,
    "study_description": Study.study_description,
    "requested_procedure_description": Study.requested_procedure_description,
    "procedure_reported": Study.procedure_reported,
    "modality": Study.modality,
    "modalities": Study.modalities,
    "patient_pseudonym": Patient.pseudonym,
    "patient_age_years": Study.patient_age_years,
    "patient_sex": Study.patient_sex,
    "patient_weight_kg": Study.patient_weight_kg,
    "patient_size_m": Study.patient_size_m,
    "is_non_patient": Study.is_non_patient,
    "standard_exam": Study.standard_exam,
    "device_id": Study.device_id,
    "device_name": Device.device_name,
    "manufacturer": Device.manufacturer,
    "manufacturer_model_name": Device.manufacturer_model_name,
    "station_name": Device.station_name,
    "number_of_events": Study.number_of_events,
    "ct_dlp_total_mgycm": Study.ct_dlp_total_mgycm,
    "dap_total_gym2": Study.dap_total_gym2,
    "dose_rp_total_gy": Study.dose_rp_total_gy,
    "fluoro_time_total_s": Study.fluoro_time_total_s,
    "agd_total_left_mgy": Study.agd_total_left_mgy,
    "agd_total_right_mgy": Study.agd_total_right_mgy,
    "administered_activity_total_mbq": Study.administered_activity_total_mbq,
    "number_of_reports": Study.number_of_reports,
    "image_size_mm": Study.image_size_mm,
    "image_size_source": Study.image_size_source,
    "modality_family": Study.modality_family,
    "acquisition_protocols": Study.acquisition_protocols,
    "ctdivol_mean_mgy": Study.ctdivol_mean_mgy,
    "ctdivol_max_mgy": Study.ctdivol_max_mgy,
    "kvp_kv": Study.kvp_kv,
    "ssde_mgy": Study.ssde_mgy,
    "ssde_size_mm": Study.ssde_size_mm,
    "ssde_size_source": Study.ssde_size_source,
    "effective_dose_msv": Study.effective_dose_msv,
    "dap_total_plane_a_gym2": Study.dap_total_plane_a_gym2,
    "dap_total_plane_b_gym2": Study.dap_total_plane_b_gym2,
    "dose_rp_total_plane_a_gy": Study.dose_rp_total_plane_a_gy,
    "dose_rp_total_plane_b_gy": Study.dose_rp_total_plane_b_gy,
    "ssde_reference": Study.ssde_reference,
    "effective_dose_reference": Study.effective_dose_reference,
    "has_conflict": Study.has_conflict,
    "site": Site.name,
}

#: The study's site name (``site.name``; ``None`` for a study of no site, issue #15): a
#: listed column on request (``columns``; the JSON API asks for it), not one of the
#: default :data:`STUDY_COLUMNS`, so exports and frames keep their columns.
SITE_COLUMN = "site"

#: Columns of :func:`list_studies` rows, in order (every listed column but the site).
STUDY_COLUMNS: tuple[str, ...] = tuple(c for c in STUDY_LISTING if c != SITE_COLUMN)

#: Default listing order: newest first (date, time, then id).
DEFAULT_SORT: tuple[tuple[str, str], ...] = (
    ("study_date", "desc"),
    ("study_time", "desc"),
)

#: Columns of :func:`iter_events` rows before the event fields.
EVENT_CONTEXT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "study_id",
    "study_instance_uid",
    "accession_number",
    "study_date",
    "study_time",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "study_modality",
    "patient_pseudonym",
    "patient_age_years",
    "patient_sex",
    "patient_weight_kg",
    "patient_size_m",
    "is_non_patient",
    "standard_exam",
    "device_id",
    "device_name",
    "manufacturer",
    "manufacturer_model_name",
    "station_name",
    "institution_name",
    "device_serial_number",
    "kind",
)

#: Columns of :func:`iter_events` rows.
EVENT_COLUMNS: tuple[str, ...] = (*EVENT_CONTEXT_COLUMNS, *EVENT_SCALAR_FIELDS, "xray_sources")

SortDirection = Literal["asc", "desc"]


@dataclass(frozen=True)
class SortKey:
    """One sort key of a listing: a :data:`STUDY_COLUMNS` name and a direction."""

    column: str
    direction: SortDirection = "asc"


def parse_sort(sort: str | Sequence[tuple[str, str] | SortKey] | None) -> tuple[SortKey, ...]:
    """Return sort keys from ``"study_date:desc,device_name"`` or (column, direction) pairs.

    Raises
    ------
    UnknownColumnError
        When a column is not in :data:`STUDY_COLUMNS` or a direction is not asc/desc.
    """
    if sort is None:
        return tuple(SortKey(c, d) for c, d in DEFAULT_SORT)  # type: ignore[arg-type]
    items: list[tuple[str, str]] = []
    if isinstance(sort, str):
        for part in sort.split(","):
            if part.strip():
                name, _, direction = part.strip().partition(":")
                items.append((name.strip(), direction.strip() or "asc"))
    else:
        for item in sort:
            items.append((item.column, item.direction) if isinstance(item, SortKey) else item)
    keys = []
    for name, direction in items:
        if name not in STUDY_LISTING:
            raise UnknownColumnError(
                f"Unable to sort studies by {name!r}: not a listed column; use one of "
                f"{', '.join(STUDY_LISTING)}."
            )
        if direction.lower() not in ("asc", "desc"):
            raise UnknownColumnError(
                f"Unable to sort studies by {name!r}: direction {direction!r} is not asc or desc."
            )
        keys.append(SortKey(name, direction.lower()))  # type: ignore[arg-type]
    return tuple(keys)


def _order_by(keys: Sequence[SortKey], id_column: Any) -> list[Any]:
    """Return ORDER BY clauses for ``keys`` with the id tiebreak in the last key's direction."""
    clauses = []
    for key in keys:
        column = STUDY_LISTING[key.column]
        clauses.append(column.desc() if key.direction == "desc" else column.asc())
    last = keys[-1].direction if keys else "asc"
    clauses.append(id_column.desc() if last == "desc" else id_column.asc())
    return clauses


def _needs(keys: Sequence[SortKey]) -> set[str]:
    """Return the tables (``device``, ``patient``, ``site``) the sort keys need besides
    ``study``."""
    tables = set()
    for key in keys:
        table = STUDY_LISTING[key.column].table.name
        if table != "study":
            tables.add(table)
    return tables


def _listing(columns: Sequence[str], keys: Sequence[SortKey] = ()) -> Select[Any]:
    """Return the SELECT of ``columns`` from study, device and patient (no filter); site
    is joined when ``columns`` or the sort ``keys`` name it."""
    stmt = (
        select(*(STUDY_LISTING[c].label(c) for c in columns))
        .select_from(Study)
        .join(Device, Device.id == Study.device_id)
        .outerjoin(Patient, Patient.id == Study.patient_id)
    )
    if SITE_COLUMN in columns or any(k.column == SITE_COLUMN for k in keys):
        stmt = stmt.outerjoin(Site, Site.id == Study.site_id)
    return stmt


def count_studies(session: Session, *, flt: StudyFilter | None = None) -> int:
    """Return the number of studies ``flt`` selects (one COUNT on ``study``)."""
    stmt = select(func.count(Study.id)).where(*study_conditions(flt))
    return int(session.scalar(stmt) or 0)


def list_studies(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    sort: str | Sequence[tuple[str, str] | SortKey] | None = None,
    limit: int | None = 50,
    offset: int = 0,
    columns: Sequence[str] = STUDY_COLUMNS,
) -> list[Row[Any]]:
    """Return one page of studies, filtered, sorted and paged in the database.

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies (default: every patient study).
    sort : str or sequence, optional
        Sort keys, e.g. ``"study_date:desc"`` or ``[("device_name", "asc")]``; any
        :data:`STUDY_COLUMNS` name. Ties are broken by study id (in the last key's
        direction). Default: newest first (:data:`DEFAULT_SORT`).
    limit : int or None, optional
        Rows per page (default 50; ``None``: all).
    offset : int, optional
        Rows to skip (page × limit).
    columns : sequence of str, optional
        Columns to return (default all of :data:`STUDY_COLUMNS`); ``study_id`` is
        added first when missing.

    Returns
    -------
    list of sqlalchemy.Row
        Rows with attributes named as ``columns``.

    Raises
    ------
    UnknownColumnError
        When a sort or output column is not a listed column.
    """
    keys = parse_sort(sort)
    unknown = [c for c in columns if c not in STUDY_LISTING]
    if unknown:
        raise UnknownColumnError(f"Unable to list studies: unknown column(s) {unknown}.")
    # the page's ids first, on study alone unless the sort needs device or patient
    page = select(Study.id.label("sid")).where(*study_conditions(flt))
    needed = _needs(keys)
    if "device" in needed:
        page = page.join(Device, Device.id == Study.device_id)
    if "patient" in needed:
        page = page.outerjoin(Patient, Patient.id == Study.patient_id)
    if "site" in needed:
        page = page.outerjoin(Site, Site.id == Study.site_id)
    page = page.order_by(*_order_by(keys, Study.id))
    if limit is not None:
        page = page.limit(limit)
    if offset:
        page = page.offset(offset)
    if limit is None and not offset:
        stmt = (
            _listing(columns, keys)
            .where(*study_conditions(flt))
            .order_by(*_order_by(keys, Study.id))
        )
        return list(session.execute(stmt).all())
    ids = [row[0] for row in session.execute(page)]
    if not ids:
        return []
    rank = {sid: index for index, sid in enumerate(ids)}
    wanted = list(columns) if "study_id" in columns else ["study_id", *columns]
    rows = session.execute(_listing(wanted).where(Study.id.in_(ids))).all()
    position = wanted.index("study_id")
    return sorted(rows, key=lambda r: rank[r[position]])


def iter_studies(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    sort: str | Sequence[tuple[str, str] | SortKey] | None = (("study_date", "asc"),),
    columns: Sequence[str] = STUDY_COLUMNS,
    batch_size: int = 2000,
) -> Iterator[Row[Any]]:
    """Yield every study ``flt`` selects, streamed ``batch_size`` rows at a time.

    Memory stays bounded by one batch: rows come through ``yield_per`` (a server-side
    cursor on PostgreSQL). Default order: oldest first (date, time, id).
    """
    keys = parse_sort(sort)
    stmt = (
        _listing(columns, keys)
        .where(*study_conditions(flt))
        .order_by(*_order_by(keys, Study.id))
        .execution_options(yield_per=batch_size)
    )
    yield from session.execute(stmt)


def get_study(
    session: Session, *, study_id: int, columns: Sequence[str] = STUDY_COLUMNS
) -> Row[Any] | None:
    """Return the listing row of one study (``columns``, default :data:`STUDY_COLUMNS`),
    or ``None``."""
    stmt = _listing(columns).where(Study.id == study_id)
    return session.execute(stmt).one_or_none()


def _events_select(
    flt: StudyFilter | None,
    *,
    event_modalities: Sequence[str] = (),
    study_ids: Sequence[int] | None = None,
) -> Select[Any]:
    """Return the SELECT of :data:`EVENT_COLUMNS` for current events of ``flt``'s studies."""
    e = IrradiationEvent
    stmt = (
        select(
            e.id,
            Study.id,
            Study.study_instance_uid,
            Study.accession_number,
            Study.study_date,
            Study.study_time,
            Study.study_description,
            Study.requested_procedure_description,
            Study.procedure_reported,
            Study.modality,
            Patient.pseudonym,
            Study.patient_age_years,
            Study.patient_sex,
            Study.patient_weight_kg,
            Study.patient_size_m,
            Study.is_non_patient,
            Study.standard_exam,
            Device.id,
            Device.device_name,
            Device.manufacturer,
            Device.manufacturer_model_name,
            Device.station_name,
            Device.institution_name,
            Device.device_serial_number,
            DoseReport.kind,
            *(getattr(e, name) for name in EVENT_SCALAR_FIELDS),
            e.xray_sources,
        )
        .join(DoseReport, DoseReport.id == e.dose_report_id)
        .join(Study, Study.id == e.study_id)
        .join(Device, Device.id == Study.device_id)
        .outerjoin(Patient, Patient.id == Study.patient_id)
        .where(e.is_current.is_(True), *study_conditions(flt), *event_month_conditions(flt))
        .order_by(Study.study_date, Study.study_time, Study.id, DoseReport.id, e.event_index)
    )
    if event_modalities:
        stmt = stmt.where(func.upper(e.modality).in_([m.upper() for m in event_modalities]))
    if study_ids is not None:
        stmt = stmt.where(e.study_id.in_(list(study_ids)))
    return stmt


def iter_events(
    session: Session,
    *,
    flt: StudyFilter | None = None,
    event_modalities: Sequence[str] = (),
    study_ids: Sequence[int] | None = None,
    batch_size: int = 5000,
) -> Iterator[Row[Any]]:
    """Yield one row (:data:`EVENT_COLUMNS`) per current irradiation event, streamed.

    Parameters
    ----------
    flt : StudyFilter, optional
        Which studies.
    event_modalities : sequence of str, optional
        Only events of these modalities (the event's own, case-insensitive).
    study_ids : sequence of int, optional
        Only these studies.
    batch_size : int, optional
        Rows fetched at a time (``yield_per``).
    """
    stmt = _events_select(flt, event_modalities=event_modalities, study_ids=study_ids)
    yield from session.execute(stmt.execution_options(yield_per=batch_size))


def study_event_rows(session: Session, *, study_id: int) -> list[Row[Any]]:
    """Return the current events of one study (:data:`EVENT_COLUMNS`), in report order."""
    flt = StudyFilter(include_non_patient=True)
    return list(session.execute(_events_select(flt, study_ids=[study_id])).all())


# -- rejects, ignored, patient sizes ------------------------------------------------------------

REJECT_COLUMNS: tuple[str, ...] = (
    "rejected_at",
    "file_name",
    "sop_instance_uid",
    "sop_class_uid",
    "reason",
    "archive_sha256",
    "archive_path",
)

IGNORED_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid",
    "sop_class_uid",
    "study_instance_uid",
    "series_instance_uid",
    "modality",
    "reason",
    "source",
    "received_at",
)

PATIENT_SIZE_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "image_type",
    "direction",
    "water_equivalent_diameter_mm",
    "patient_width_mm",
    "table_position_mm",
    "method",
    "measured_at",
)


def list_rejects(session: Session, *, limit: int | None = None) -> list[Row[Any]]:
    """Return rejected objects newest first (:data:`REJECT_COLUMNS`)."""
    ro = RejectedObject
    stmt = select(*(getattr(ro, c) for c in REJECT_COLUMNS)).order_by(
        ro.rejected_at.desc(), ro.id.desc()
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).all())


def count_rejects(session: Session) -> int:
    """Return the number of rejected objects."""
    return int(session.scalar(select(func.count(RejectedObject.id))) or 0)


def list_ignored(session: Session, *, limit: int | None = None) -> list[Row[Any]]:
    """Return ignored objects newest first (:data:`IGNORED_COLUMNS`)."""
    io_ = IgnoredObject
    stmt = select(*(getattr(io_, c) for c in IGNORED_COLUMNS)).order_by(
        io_.received_at.desc(), io_.id.desc()
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).all())


def list_patient_sizes(
    session: Session, *, study_instance_uid: str | None = None
) -> list[Row[Any]]:
    """Return patient-size measurements (:data:`PATIENT_SIZE_COLUMNS`) by study and position."""
    m = PatientSizeMeasurement
    stmt = select(*(getattr(m, c) for c in PATIENT_SIZE_COLUMNS)).order_by(
        m.study_instance_uid, m.image_type, m.table_position_mm, m.id
    )
    if study_instance_uid is not None:
        stmt = stmt.where(m.study_instance_uid == study_instance_uid)
    return list(session.execute(stmt).all())


def study_size_select(study_instance_uids: Sequence[str] | None = None) -> Select[Any]:
    """Return per Study Instance UID: axial count, mean Dw, mean AP and LAT localizer widths.

    Columns ``uid``, ``n_axial``, ``dw`` (mm), ``ap`` (mm), ``lat`` (mm).
    """
    m = PatientSizeMeasurement
    stmt = select(
        m.study_instance_uid.label("uid"),
        func.count(case((m.direction == "dw", m.id))).label("n_axial"),
        func.avg(case((m.direction == "dw", m.water_equivalent_diameter_mm))).label("dw"),
        func.avg(case((m.direction == "ap", m.patient_width_mm))).label("ap"),
        func.avg(case((m.direction == "lat", m.patient_width_mm))).label("lat"),
    ).group_by(m.study_instance_uid)
    if study_instance_uids is not None:
        stmt = stmt.where(m.study_instance_uid.in_(list(study_instance_uids)))
    return stmt.order_by(m.study_instance_uid)


def study_sizes(
    session: Session, *, study_instance_uids: Sequence[str] | None = None
) -> list[Row[Any]]:
    """Return :func:`study_size_select` rows."""
    return list(session.execute(study_size_select(study_instance_uids)).all())
