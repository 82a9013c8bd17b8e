"""Queries of the image-quality tables and aggregates (issue #17).

Writes: rejection notes (``rejected_instance``), reject-log rows (``reject_log_entry``),
CT noise histograms (``ct_image_noise``), the calculated deviation index of events.
Reads: every aggregate runs in the database (GROUP BY with conditional counts), and
only the noise histograms of the series asked for are read as rows.

Keyword-only functions that never commit (STYLE.md B7). May import ``kerma.records``
and ``kerma.db`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, Final

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from kerma.db.filters import StudyFilter, event_month_conditions, study_where
from kerma.db.models import (
    CTImageNoise,
    Device,
    DoseReport,
    IrradiationEvent,
    PatientSizeMeasurement,
    RejectedInstance,
    RejectLogEntry,
    Study,
)

#: Grouping keys of the exposure-index and reject-rate aggregates, and their SQL.
GROUPS: Final = ("room", "detector", "protocol", "body_part", "month", "reason")

#: Report kinds whose events are single images (one image = one report).
IMAGE_KINDS: Final = ("header-dx", "header-mg")

#: Largest number of points a scatter query returns.
MAX_POINTS: Final = 5000


def month_of(session: Session, column: Any) -> ColumnElement[str]:
    """Return ``YYYY-MM`` of a date column in the session's SQL dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM")
    return func.strftime("%Y-%m", column)


def room_label() -> ColumnElement[str]:
    """Return the room (device) display name: ``device_name``, else station or model."""
    return func.coalesce(
        func.nullif(Device.device_name, ""),
        Device.station_name,
        Device.manufacturer_model_name,
        "?",
    )


def deviation_index_expr() -> ColumnElement[float]:
    """Return the DI of an event: the device's, else the calculated one."""
    return func.coalesce(
        IrradiationEvent.deviation_index, IrradiationEvent.deviation_index_calculated
    )


# -- writes -------------------------------------------------------------------------------


def add_rejected_instances(
    session: Session,
    *,
    marked_by_uid: str,
    source: str,
    reason: str | None,
    instances: Iterable[tuple[str, str | None, str | None]],
    archive_sha256: str | None = None,
    received_at: dt.datetime | None = None,
) -> int:
    """Record images marked rejected; return how many were new.

    Parameters
    ----------
    marked_by_uid : str
        The marking object's SOP Instance UID (KOS) or ``reject-log:<sha256>``.
    source : str
        ``kos`` or ``reject-log``.
    reason : str or None
        The KOS title meaning or the log's reason.
    instances : iterable of (str, str or None, str or None)
        (SOP, Study, Series Instance UID) of each marked image.
    """
    when = received_at or dt.datetime.now(dt.UTC)
    known = set(
        session.scalars(
            select(RejectedInstance.sop_instance_uid).where(
                RejectedInstance.marked_by_uid == marked_by_uid
            )
        )
    )
    rows = []
    for sop_uid, study_uid, series_uid in instances:
        if sop_uid in known:
            continue
        known.add(sop_uid)
        rows.append(
            {
                "sop_instance_uid": sop_uid,
                "study_instance_uid": study_uid,
                "series_instance_uid": series_uid,
                "marked_by_uid": marked_by_uid,
                "source": source,
                "reason": reason,
                "archive_sha256": archive_sha256,
                "received_at": when,
            }
        )
    if rows:
        session.execute(insert(RejectedInstance), rows)
    return len(rows)


def has_rejection_note(session: Session, *, marked_by_uid: str) -> bool:
    """Return whether a rejection note (or reject log) is stored already."""
    found = session.scalar(
        select(RejectedInstance.id).where(RejectedInstance.marked_by_uid == marked_by_uid).limit(1)
    )
    return found is not None


def study_ids_of_instances(session: Session, *, sop_instance_uids: Sequence[str]) -> set[int]:
    """Return the ids of the studies whose reports have these SOP Instance UIDs."""
    if not sop_instance_uids:
        return set()
    return set(
        session.scalars(
            select(DoseReport.study_id).where(DoseReport.sop_instance_uid.in_(sop_instance_uids))
        )
    )


def has_reject_log(session: Session, *, file_sha256: str) -> bool:
    """Return whether a reject-log file (by its SHA-256) is imported already."""
    found = session.scalar(
        select(RejectLogEntry.id).where(RejectLogEntry.file_sha256 == file_sha256).limit(1)
    )
    return found is not None


def add_reject_log_entries(
    session: Session, *, file_sha256: str, rows: Sequence[dict[str, Any]]
) -> int:
    """Insert reject-log rows (``reject_log_entry`` column names); return the count."""
    now = dt.datetime.now(dt.UTC)
    values = [{**row, "file_sha256": file_sha256, "imported_at": now} for row in rows]
    if values:
        session.execute(insert(RejectLogEntry), values)
    return len(values)


def upsert_image_noise(session: Session, *, values: dict[str, Any]) -> None:
    """Store the noise histogram of one CT image, replacing an earlier one of its UID."""
    session.execute(
        delete(CTImageNoise).where(CTImageNoise.sop_instance_uid == values["sop_instance_uid"])
    )
    session.execute(insert(CTImageNoise), [values])


def set_calculated_deviation_index(session: Session, *, values: dict[int, float | None]) -> None:
    """Set ``irradiation_event.deviation_index_calculated`` by event id."""
    for event_id, di in values.items():
        session.execute(
            update(IrradiationEvent)
            .where(IrradiationEvent.id == event_id)
            .values(deviation_index_calculated=di)
        )


def events_missing_deviation_index(
    session: Session, *, study_ids: Sequence[int]
) -> list[tuple[int, float, float]]:
    """Return (event id, EI, EI_T) of the studies' events with EI and target but no DI."""
    if not study_ids:
        return []
    rows = session.execute(
        select(
            IrradiationEvent.id,
            IrradiationEvent.exposure_index,
            IrradiationEvent.target_exposure_index,
        ).where(
            IrradiationEvent.study_id.in_(study_ids),
            IrradiationEvent.deviation_index.is_(None),
            IrradiationEvent.exposure_index.is_not(None),
            IrradiationEvent.target_exposure_index.is_not(None),
        )
    )
    return [(int(r[0]), float(r[1]), float(r[2])) for r in rows]


# -- reads: exposure index -----------------------------------------------------------------


def _group_columns(session: Session, group_by: Sequence[str]) -> list[ColumnElement[Any]]:
    """Return the labelled SQL expressions of the event grouping keys."""
    columns: dict[str, ColumnElement[Any]] = {
        "room": room_label(),
        "detector": func.coalesce(IrradiationEvent.detector_id, ""),
        "protocol": func.coalesce(IrradiationEvent.acquisition_protocol, ""),
        "body_part": func.coalesce(IrradiationEvent.anatomical_structure, ""),
        "month": func.coalesce(month_of(session, Study.study_date), ""),
    }
    unknown = [g for g in group_by if g not in columns]
    if unknown:
        raise ValueError(
            f"Unable to group exposure indices by {', '.join(unknown)}: choose from "
            f"{', '.join(columns)}."
        )
    return [columns[g].label(g) for g in group_by]


def _event_base(flt: StudyFilter | None) -> list[ColumnElement[bool]]:
    """Return the conditions every quality event query shares: current events of the filter."""
    return [IrradiationEvent.is_current.is_(true()), study_where(flt), *event_month_conditions(flt)]


def exposure_index_summary(
    session: Session,
    *,
    group_by: Sequence[str],
    di_edges: Sequence[float],
    flt: StudyFilter | None = None,
) -> list[dict[str, Any]]:
    """Return the EI/DI aggregate per group, one dict per group.

    Keys: the group keys, ``n_events`` (events with an EI or a DI), ``n_di`` (with a DI,
    the device's or calculated), ``n_di_calculated``, ``mean_di``, ``min_di``,
    ``max_di``, ``n_outside_1`` (|DI| > 1), ``n_outside_3`` (|DI| > 3), ``mean_ei``,
    ``n_vendor_index`` (events with only a vendor index) and ``di_bins``: counts of DI
    below ``di_edges[0]``, in each [edge, next edge), and at or above the last edge.
    """
    di = deviation_index_expr()
    keys = _group_columns(session, group_by)
    edges = tuple(float(e) for e in di_edges)
    bins = [func.sum(case((di < edges[0], 1), else_=0)).label("bin_0")]
    for i in range(len(edges) - 1):
        bins.append(
            func.sum(case((and_(di >= edges[i], di < edges[i + 1]), 1), else_=0)).label(
                f"bin_{i + 1}"
            )
        )
    bins.append(func.sum(case((di >= edges[-1], 1), else_=0)).label(f"bin_{len(edges)}"))
    has_index = or_(
        IrradiationEvent.exposure_index.is_not(None),
        IrradiationEvent.deviation_index.is_not(None),
    )
    has_vendor = or_(
        IrradiationEvent.sensitivity.is_not(None),
        IrradiationEvent.relative_xray_exposure.is_not(None),
    )
    stmt = (
        select(
            *keys,
            func.sum(case((has_index, 1), else_=0)).label("n_events"),
            func.count(di).label("n_di"),
            func.count(IrradiationEvent.deviation_index_calculated).label("n_di_calculated"),
            func.avg(cast(di, Float)).label("mean_di"),
            func.min(di).label("min_di"),
            func.max(di).label("max_di"),
            func.sum(case((func.abs(di) > 1.0, 1), else_=0)).label("n_outside_1"),
            func.sum(case((func.abs(di) > 3.0, 1), else_=0)).label("n_outside_3"),
            func.avg(IrradiationEvent.exposure_index).label("mean_ei"),
            func.sum(case((and_(has_vendor, ~has_index), 1), else_=0)).label("n_vendor_index"),
            *bins,
        )
        .select_from(IrradiationEvent)
        .join(Study, Study.id == IrradiationEvent.study_id)
        .join(Device, Device.id == Study.device_id)
        .where(*_event_base(flt), or_(has_index, has_vendor))
        .group_by(*[k.element for k in keys] if keys else [literal(1)])
        .order_by(*[k.element for k in keys] if keys else [literal(1)])
    )
    out = []
    for row in session.execute(stmt).mappings():
        item = dict(row)
        item["di_bins"] = [int(item.pop(f"bin_{i}") or 0) for i in range(len(edges) + 1)]
        for name in ("n_events", "n_outside_1", "n_outside_3", "n_vendor_index"):
            item[name] = int(item[name] or 0)
        out.append(item)
    return out


def vendor_index_summary(
    session: Session, *, flt: StudyFilter | None = None
) -> list[dict[str, Any]]:
    """Return per room and manufacturer the count and mean of each vendor index column."""
    room = room_label().label("room")
    stmt = (
        select(
            room,
            Device.manufacturer.label("manufacturer"),
            func.count(IrradiationEvent.sensitivity).label("n_sensitivity"),
            func.avg(IrradiationEvent.sensitivity).label("mean_sensitivity"),
            func.count(IrradiationEvent.relative_xray_exposure).label("n_relative_xray_exposure"),
            func.avg(IrradiationEvent.relative_xray_exposure).label("mean_relative_xray_exposure"),
        )
        .select_from(IrradiationEvent)
        .join(Study, Study.id == IrradiationEvent.study_id)
        .join(Device, Device.id == Study.device_id)
        .where(
            *_event_base(flt),
            or_(
                IrradiationEvent.sensitivity.is_not(None),
                IrradiationEvent.relative_xray_exposure.is_not(None),
            ),
        )
        .group_by(room.element, Device.manufacturer)
        .order_by(room.element)
    )
    return [dict(r) for r in session.execute(stmt).mappings()]


def dose_di_points(
    session: Session, *, flt: StudyFilter | None = None, limit: int = MAX_POINTS
) -> list[dict[str, Any]]:
    """Return up to ``limit`` events with a DI: protocol, room, DI, KAP (Gy·m²), AGD (mGy)."""
    di = deviation_index_expr()
    stmt = (
        select(
            func.coalesce(IrradiationEvent.acquisition_protocol, "").label("protocol"),
            room_label().label("room"),
            di.label("deviation_index"),
            IrradiationEvent.dap_gym2,
            IrradiationEvent.agd_mgy,
            Study.study_date,
        )
        .join(Study, Study.id == IrradiationEvent.study_id)
        .join(Device, Device.id == Study.device_id)
        .where(*_event_base(flt), di.is_not(None))
        .order_by(Study.study_date.desc(), IrradiationEvent.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in session.execute(stmt).mappings()]


# -- reads: rejects --------------------------------------------------------------------------


def _is_rejected() -> ColumnElement[bool]:
    """Return whether an image report is marked rejected (any note, either arrival order)."""
    return (
        select(RejectedInstance.id)
        .where(RejectedInstance.sop_instance_uid == DoseReport.sop_instance_uid)
        .exists()
    )


def registry_reject_rates(
    session: Session, *, group_by: Sequence[str], flt: StudyFilter | None = None
) -> list[dict[str, Any]]:
    """Return per group the images received and those marked rejected, with their dose.

    Images are the current events of image-header reports (:data:`IMAGE_KINDS`); one is
    rejected when its SOP Instance UID is in ``rejected_instance``. Keys: the group keys
    (``room``, ``body_part``, ``protocol``, ``month``, ``detector``), ``n_images``,
    ``n_rejected``, ``dap_total_gym2``, ``dap_rejected_gym2``, ``agd_rejected_mgy``.
    """
    keys = _group_columns(session, [g for g in group_by if g != "reason"])
    rejected = _is_rejected()
    stmt = (
        select(
            *keys,
            func.count(IrradiationEvent.id).label("n_images"),
            func.sum(case((rejected, 1), else_=0)).label("n_rejected"),
            func.sum(IrradiationEvent.dap_gym2).label("dap_total_gym2"),
            func.sum(case((rejected, IrradiationEvent.dap_gym2), else_=None)).label(
                "dap_rejected_gym2"
            ),
            func.sum(case((rejected, IrradiationEvent.agd_mgy), else_=None)).label(
                "agd_rejected_mgy"
            ),
        )
        .select_from(IrradiationEvent)
        .join(DoseReport, DoseReport.id == IrradiationEvent.dose_report_id)
        .join(Study, Study.id == IrradiationEvent.study_id)
        .join(Device, Device.id == Study.device_id)
        .where(*_event_base(flt), DoseReport.kind.in_(IMAGE_KINDS))
        .group_by(*[k.element for k in keys] if keys else [literal(1)])
        .order_by(*[k.element for k in keys] if keys else [literal(1)])
    )
    out = []
    for row in session.execute(stmt).mappings():
        item = dict(row)
        item["n_rejected"] = int(item["n_rejected"] or 0)
        out.append(item)
    return out


def registry_rejects_by_reason(
    session: Session, *, group_by: Sequence[str], flt: StudyFilter | None = None
) -> list[dict[str, Any]]:
    """Return per group and reason the rejected images (KOS and reject-log notes).

    ``group_by`` may hold the event keys of :func:`registry_reject_rates` and ``reason``.
    """
    keys = _group_columns(session, [g for g in group_by if g != "reason"])
    reason = func.coalesce(RejectedInstance.reason, "").label("reason")
    stmt = (
        select(*keys, reason, func.count(func.distinct(DoseReport.id)).label("n_rejected"))
        .select_from(RejectedInstance)
        .join(DoseReport, DoseReport.sop_instance_uid == RejectedInstance.sop_instance_uid)
        .join(IrradiationEvent, IrradiationEvent.dose_report_id == DoseReport.id)
        .join(Study, Study.id == DoseReport.study_id)
        .join(Device, Device.id == Study.device_id)
        .where(*_event_base(flt), DoseReport.kind.in_(IMAGE_KINDS))
        .group_by(*[k.element for k in keys], reason.element)
        .order_by(*[k.element for k in keys], reason.element)
    )
    return [dict(r) for r in session.execute(stmt).mappings()]


def pending_rejections(session: Session) -> int:
    """Return how many marked SOP Instance UIDs have no image in the registry (yet)."""
    missing = (
        ~select(DoseReport.id)
        .where(DoseReport.sop_instance_uid == RejectedInstance.sop_instance_uid)
        .exists()
    )
    return int(
        session.scalar(
            select(func.count(func.distinct(RejectedInstance.sop_instance_uid))).where(missing)
        )
        or 0
    )


def reject_log_rates(
    session: Session,
    *,
    group_by: Sequence[str],
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> list[dict[str, Any]]:
    """Return per group the reject-log rows, the rejected ones and their KAP (Gy·m²).

    Groups: ``room`` (station name), ``body_part``, ``reason``, ``month``.
    """
    columns: dict[str, ColumnElement[Any]] = {
        "room": func.coalesce(RejectLogEntry.station_name, ""),
        "body_part": func.coalesce(RejectLogEntry.body_part, ""),
        "reason": func.coalesce(
            case((RejectLogEntry.is_rejected.is_(true()), RejectLogEntry.reason), else_=None),
            "",
        ),
        "month": func.coalesce(month_of(session, RejectLogEntry.acquisition_datetime), ""),
    }
    unknown = [g for g in group_by if g not in columns]
    if unknown:
        raise ValueError(
            f"Unable to group the reject log by {', '.join(unknown)}: choose from "
            f"{', '.join(columns)}."
        )
    keys = [columns[g].label(g) for g in group_by]
    conditions: list[ColumnElement[bool]] = []
    if date_from is not None:
        conditions.append(
            RejectLogEntry.acquisition_datetime >= dt.datetime.combine(date_from, dt.time())
        )
    if date_to is not None:
        conditions.append(
            RejectLogEntry.acquisition_datetime
            < dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time())
        )
    rejected = RejectLogEntry.is_rejected.is_(true())
    stmt = select(
        *keys,
        func.count(RejectLogEntry.id).label("n_images"),
        func.sum(case((rejected, 1), else_=0)).label("n_rejected"),
        func.sum(case((rejected, RejectLogEntry.dap_gym2), else_=None)).label("dap_rejected_gym2"),
    ).where(*conditions or [true()])
    if keys:
        stmt = stmt.group_by(*[k.element for k in keys]).order_by(*[k.element for k in keys])
    out = []
    for row in session.execute(stmt).mappings():
        item = dict(row)
        item["n_rejected"] = int(item["n_rejected"] or 0)
        out.append(item)
    return out


def rejected_dose_by_study(
    session: Session, *, study_ids: Sequence[int]
) -> dict[int, dict[str, float | int | None]]:
    """Return per study the rejected images and their KAP (Gy·m²) and AGD (mGy) sums."""
    if not study_ids:
        return {}
    rejected = _is_rejected()
    stmt = (
        select(
            IrradiationEvent.study_id,
            func.count(IrradiationEvent.id).label("n_rejected"),
            func.sum(IrradiationEvent.dap_gym2).label("dap_rejected_gym2"),
            func.sum(IrradiationEvent.agd_mgy).label("agd_rejected_mgy"),
        )
        .join(DoseReport, DoseReport.id == IrradiationEvent.dose_report_id)
        .where(
            IrradiationEvent.study_id.in_(study_ids),
            IrradiationEvent.is_current.is_(true()),
            rejected,
        )
        .group_by(IrradiationEvent.study_id)
    )
    return {int(r.study_id): dict(r._mapping) for r in session.execute(stmt)}


# -- reads: CT noise -------------------------------------------------------------------------


def noise_series(
    session: Session,
    *,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    protocol: str | None = None,
    station: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Return one row per measured CT series, newest first (no histograms).

    Keys: ``series_instance_uid``, ``study_instance_uid``, ``protocol_name``,
    ``series_description``, ``station_name``, ``manufacturer_model_name``,
    ``study_date``, ``n_images``, ``ctdivol_mgy`` (mean over the images that carry it),
    ``convolution_kernel``, ``slice_thickness_mm``, ``kernel_mm``,
    ``water_equivalent_diameter_mm`` (mean Dw of the series' axial images, when measured).
    """
    n = CTImageNoise
    conditions: list[ColumnElement[bool]] = [n.series_instance_uid.is_not(None)]
    if date_from is not None:
        conditions.append(n.study_date >= date_from)
    if date_to is not None:
        conditions.append(n.study_date <= date_to)
    if protocol:
        conditions.append(
            or_(n.protocol_name.ilike(f"%{protocol}%"), n.series_description.ilike(f"%{protocol}%"))
        )
    if station:
        conditions.append(n.station_name.ilike(f"%{station}%"))
    dw = (
        select(func.avg(PatientSizeMeasurement.water_equivalent_diameter_mm))
        .where(
            PatientSizeMeasurement.series_instance_uid == n.series_instance_uid,
            PatientSizeMeasurement.direction == "dw",
        )
        .scalar_subquery()
    )
    stmt = (
        select(
            n.series_instance_uid,
            func.min(n.study_instance_uid).label("study_instance_uid"),
            func.max(n.protocol_name).label("protocol_name"),
            func.max(n.series_description).label("series_description"),
            func.max(n.station_name).label("station_name"),
            func.max(n.manufacturer_model_name).label("manufacturer_model_name"),
            func.max(n.study_date).label("study_date"),
            func.count(n.id).label("n_images"),
            func.avg(n.ctdivol_mgy).label("ctdivol_mgy"),
            func.max(n.convolution_kernel).label("convolution_kernel"),
            func.avg(n.slice_thickness_mm).label("slice_thickness_mm"),
            func.max(n.kernel_mm).label("kernel_mm"),
            dw.label("water_equivalent_diameter_mm"),
        )
        .where(*conditions)
        .group_by(n.series_instance_uid)
        .order_by(func.max(n.study_date).desc(), n.series_instance_uid)
        .limit(limit)
        .offset(offset)
    )
    return [dict(r) for r in session.execute(stmt).mappings()]


def noise_histograms(
    session: Session, *, series_instance_uids: Sequence[str]
) -> dict[str, list[list[int]]]:
    """Return the images' noise histograms of these series, by Series Instance UID."""
    out: dict[str, list[list[int]]] = {uid: [] for uid in series_instance_uids}
    if not series_instance_uids:
        return out
    rows = session.execute(
        select(CTImageNoise.series_instance_uid, CTImageNoise.histogram).where(
            CTImageNoise.series_instance_uid.in_(series_instance_uids)
        )
    )
    for uid, hist in rows:
        out.setdefault(uid, []).append(list(hist or []))
    return out
