"""Keyword-only reads and writes of skin dose estimates (table ``skin_dose_estimate``).

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.orm import Session

from kerma.db.models import DoseReport, SkinDoseEstimate
from kerma.db.summary import chunks
from kerma.records import ReportKind

#: Columns of :func:`estimate_rows`.
ESTIMATE_COLUMNS: tuple[str, ...] = (
    "study_id",
    "method",
    "peak_skin_dose_mgy",
    "dose_rp_total_gy",
    "reason",
    "map_path",
    "dose_report_sop_instance_uid",
    "computed_at",
)


def current_projection_rdsrs(
    session: Session, *, study_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Return each study's current projection RDSRs, the one with most events (latest) first."""
    r = DoseReport
    out: dict[int, list[dict[str, Any]]] = {}
    for batch in chunks(study_ids):
        stmt = (
            select(r.study_id, r.sop_instance_uid, r.archive_path, r.number_of_events)
            .where(
                r.kind == ReportKind.RDSR_PROJECTION.value,
                r.superseded_by_id.is_(None),
                r.study_id.in_(batch),
            )
            .order_by(r.study_id, r.number_of_events.desc(), r.received_at.desc(), r.id.desc())
        )
        for study_id, uid, path, events in session.execute(stmt):
            out.setdefault(int(study_id), []).append(
                {"sop_instance_uid": uid, "archive_path": path, "number_of_events": events}
            )
    return out


def estimate_sources(
    session: Session, *, study_ids: Sequence[int]
) -> dict[int, tuple[str | None, str | None]]:
    """Return ``{study id: (RDSR SOP Instance UID, reason)}`` of stored estimates."""
    e = SkinDoseEstimate
    out: dict[int, tuple[str | None, str | None]] = {}
    for batch in chunks(study_ids):
        stmt = select(e.study_id, e.dose_report_sop_instance_uid, e.reason).where(
            e.study_id.in_(batch)
        )
        out.update({int(sid): (uid, reason) for sid, uid, reason in session.execute(stmt)})
    return out


def estimate_rows(session: Session, *, study_ids: Sequence[int]) -> list[Row[Any]]:
    """Return the stored estimates of these studies (:data:`ESTIMATE_COLUMNS`)."""
    e = SkinDoseEstimate
    rows: list[Row[Any]] = []
    for batch in chunks(study_ids):
        stmt = select(*(getattr(e, c) for c in ESTIMATE_COLUMNS)).where(e.study_id.in_(batch))
        rows.extend(session.execute(stmt).all())
    return rows


def replace_estimate(session: Session, *, study_id: int, values: Mapping[str, Any]) -> None:
    """Replace a study's estimate with ``values`` (``ESTIMATE_COLUMNS`` but the id and time)."""
    session.execute(delete(SkinDoseEstimate).where(SkinDoseEstimate.study_id == study_id))
    session.add(
        SkinDoseEstimate(study_id=study_id, computed_at=dt.datetime.now(dt.UTC), **dict(values))
    )
