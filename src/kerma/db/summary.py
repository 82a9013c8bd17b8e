"""Reads and writes of the derived study summary: inputs in batches, bulk updates out.

:func:`derive_inputs` reads what :func:`kerma.analysis.summary.summarise_study` needs
for a batch of studies in five narrow queries (studies, current events, reports,
patient sizes, event groups); :func:`write_summaries`, :func:`write_event_values` and
:func:`event_group_ids` write the results back (bulk UPDATE by primary key). None of
them commits.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kerma.db.models import (
    DoseReport,
    EventGroup,
    IrradiationEvent,
    RegistrySetting,
    Study,
)
from kerma.db.studies import study_size_select
from kerma.records import STUDY_SUMMARY_COLUMNS

#: Study columns :func:`derive_inputs` reads.
STUDY_INPUT_COLUMNS: tuple[str, ...] = (
    "id",
    "study_instance_uid",
    "device_id",
    "modality",
    "study_description",
    "requested_procedure_description",
    "procedure_reported",
    "requested_procedure_code",
    "patient_age_years",
    "is_non_patient",
    "standard_exam",
    "standard_exam_rule",
    "exam_rules_fingerprint",
)


#: Event columns :func:`derive_inputs` reads (``event_id`` is the event's id).
EVENT_INPUT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "modality",
    "acquisition_protocol",
    "target_region",
    "anatomical_structure",
    "image_view",
    "laterality",
    "irradiation_event_type",
    "ct_acquisition_type",
    "ctdivol_mgy",
    "dlp_mgycm",
    "ctdiw_phantom_type",
    "water_equivalent_diameter_mm",
    "kvp_kv",
    "xray_sources",
    "acquisition_plane",
    "dap_gym2",
    "dose_rp_gy",
    "agd_mgy",
    "administered_activity_mbq",
    "irradiation_duration_s",
    "standard_exam",
    "event_group_id",
)

#: The ``registry_setting`` key of the derive version the summary columns were made by.
DERIVE_VERSION_KEY = "derive_version"

#: Largest number of ids in one ``IN`` list (SQLite's default variable limit is 32766).
MAX_IN = 900


@dataclass
class DeriveInputs:
    """The inputs of one batch, grouped by study id.

    Attributes
    ----------
    studies : dict
        ``{study_id: study row as a dict}`` (:data:`STUDY_INPUT_COLUMNS` and the
        current :data:`STUDY_SUMMARY_COLUMNS`).
    events : dict
        ``{study_id: [event dicts]}`` of current events in report and event order
        (:data:`EVENT_INPUT_COLUMNS`, ``event_id`` and the report's ``kind``).
    reports : dict
        ``{study_id: [current report dicts]}`` with ``kind``, ``ct_dlp_total_mgycm``
        and ``accumulated``.
    report_counts : dict
        ``{study_id: number of reports}`` (superseded ones included).
    sizes : dict
        ``{study_instance_uid: {"dw", "ap", "lat"}}`` (mm).
    """

    studies: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    reports: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    report_counts: dict[int, int] = field(default_factory=dict)
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)


def chunks(ids: Iterable[int], size: int = MAX_IN) -> Iterator[list[int]]:
    """Yield ``ids`` sorted, in lists of at most ``size``."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def derive_inputs(session: Session, *, study_ids: Sequence[int]) -> DeriveInputs:
    """Return the inputs of :func:`kerma.analysis.summary.summarise_study` for a batch.

    Parameters
    ----------
    study_ids : sequence of int
        At most :data:`MAX_IN` study ids (missing ones are left out).
    """
    out = DeriveInputs()
    ids = list(study_ids)
    if not ids:
        return out
    s = Study
    columns = (*STUDY_INPUT_COLUMNS, *STUDY_SUMMARY_COLUMNS)
    rows = session.execute(select(*(getattr(s, c) for c in columns)).where(s.id.in_(ids)))
    for row in rows:
        out.studies[row.id] = dict(row._mapping)
    e, r = IrradiationEvent, DoseReport
    stmt = (
        select(e.id.label("event_id"), r.kind, *(getattr(e, c) for c in EVENT_INPUT_COLUMNS))
        .join(r, r.id == e.dose_report_id)
        .where(e.study_id.in_(ids), e.is_current.is_(True))
        # chronological, then by report and position: the same order whichever report
        # arrived first (several ingest nodes, issue #15), not the arrival (id) order
        .order_by(
            e.study_id,
            func.coalesce(e.datetime_started, ""),
            r.sop_instance_uid,
            e.event_index,
        )
    )
    for row in session.execute(stmt):
        out.events.setdefault(row.study_id, []).append(dict(row._mapping))
    stmt = select(
        r.study_id,
        r.kind,
        r.superseded_by_id,
        r.ct_dlp_total_mgycm,
        r.content["accumulated"].label("accumulated"),
    ).where(r.study_id.in_(ids))
    for row in session.execute(stmt):
        out.report_counts[row.study_id] = out.report_counts.get(row.study_id, 0) + 1
        if row.superseded_by_id is None:
            out.reports.setdefault(row.study_id, []).append(
                {
                    "kind": row.kind,
                    "ct_dlp_total_mgycm": row.ct_dlp_total_mgycm,
                    "accumulated": row.accumulated if isinstance(row.accumulated, dict) else {},
                }
            )
    uids = sorted({str(v["study_instance_uid"]) for v in out.studies.values()})
    for row in session.execute(study_size_select(uids)):
        out.sizes[row.uid] = {"dw": row.dw, "ap": row.ap, "lat": row.lat}
    return out


def write_summaries(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write study summary rows (dicts with ``id`` and study column names), one bulk UPDATE."""
    if rows:
        session.execute(update(Study), [dict(row) for row in rows])


def write_event_values(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write event rows (dicts with ``id``, ``standard_exam``, ``event_group_id``) in bulk."""
    if rows:
        session.execute(update(IrradiationEvent), [dict(row) for row in rows])


def clear_non_current_events(session: Session, *, study_ids: Sequence[int]) -> None:
    """Take the event group and exam off the non-current events of these studies."""
    e = IrradiationEvent
    session.execute(
        update(e)
        .where(
            e.study_id.in_(list(study_ids)),
            e.is_current.is_(False),
            (e.event_group_id.is_not(None)) | (e.standard_exam.is_not(None)),
        )
        .values(event_group_id=None, standard_exam=None)
        .execution_options(synchronize_session=False)
    )


GroupKey = tuple[str, int, str, bool]


def event_group_ids(session: Session, *, keys: Iterable[GroupKey]) -> dict[GroupKey, int]:
    """Return the ``event_group`` id of each (modality, device id, protocol, non-patient).

    Missing groups are inserted, each in a SAVEPOINT: when another process inserts the
    same group first, its row is read instead.
    """
    wanted = set(keys)
    if not wanted:
        return {}
    g = EventGroup
    found: dict[GroupKey, int] = {}
    devices = sorted({k[1] for k in wanted})
    for batch in chunks(devices):
        stmt = select(g.id, g.modality, g.device_id, g.acquisition_protocol, g.is_non_patient)
        for row in session.execute(stmt.where(g.device_id.in_(batch))):
            key = (row.modality, row.device_id, row.acquisition_protocol, bool(row.is_non_patient))
            if key in wanted:
                found[key] = row.id
    for key in sorted(wanted - set(found)):
        values = {
            "modality": key[0],
            "device_id": key[1],
            "acquisition_protocol": key[2],
            "is_non_patient": key[3],
        }
        try:
            with session.begin_nested():
                found[key] = int(
                    session.execute(insert(g).values(**values).returning(g.id)).scalar_one()
                )
        except IntegrityError:
            found[key] = int(
                session.execute(
                    select(g.id).where(*(getattr(g, k) == v for k, v in values.items()))
                ).scalar_one()
            )
    return found


def stale_study_ids(
    session: Session, *, fingerprint: str, after_id: int = 0, limit: int = 5000
) -> list[int]:
    """Return ids of studies mapped with other exam rules (or never), ascending, a page."""
    s = Study
    stmt = (
        select(s.id)
        .where(
            s.id > after_id,
            (s.exam_rules_fingerprint.is_(None)) | (s.exam_rules_fingerprint != fingerprint),
        )
        .order_by(s.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def has_stale_studies(session: Session, *, fingerprint: str) -> bool:
    """Return whether any study was mapped with other exam rules than ``fingerprint``."""
    return bool(stale_study_ids(session, fingerprint=fingerprint, limit=1))


def study_id_page(
    session: Session, *, after_id: int = 0, limit: int = 500, last_id: int | None = None
) -> list[int]:
    """Return the next ``limit`` study ids above ``after_id`` (keyset paging).

    With ``last_id``, only ids up to it (a range of the job queue).
    """
    stmt = select(Study.id).where(Study.id > after_id)
    if last_id is not None:
        stmt = stmt.where(Study.id <= last_id)
    return list(session.scalars(stmt.order_by(Study.id).limit(limit)))


def count_all_studies(session: Session) -> int:
    """Return the number of studies in the registry (patient and non-patient)."""
    return int(session.scalar(select(func.count(Study.id))) or 0)


def get_setting(session: Session, *, key: str) -> str | None:
    """Return a ``registry_setting`` value, or ``None``."""
    return session.scalar(select(RegistrySetting.value).where(RegistrySetting.key == key))


def set_setting(session: Session, *, key: str, value: str) -> None:
    """Insert or update a ``registry_setting`` value."""
    row = session.get(RegistrySetting, key)
    now = dt.datetime.now(dt.UTC)
    if row is not None and row.value == value:
        return
    if row is None:
        try:
            with session.begin_nested():
                session.add(RegistrySetting(key=key, value=value, updated_at=now))
        except IntegrityError:
            row = session.get(RegistrySetting, key)
    if row is not None:
        row.value = value
        row.updated_at = now
