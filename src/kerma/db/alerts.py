"""SQL of the alerts: the inputs of rule evaluation, alert records and the review trail.

Keyword-only reads and writes; nothing here commits (the caller's unit of work does).
The review trail (``alert_history``) is one hash chain over every alert: each entry's
``entry_hash`` is SHA-256 of the previous entry's hash and the entry's own content
(:func:`entry_hash`), and ``prev_hash`` is unique, so two writers cannot both extend
the same entry. On PostgreSQL an append takes a transaction-level advisory lock so
writers queue instead of failing; SQLite serialises writers itself.

May import ``kerma.db`` and ``kerma.records`` only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    Integer,
    and_,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session

from kerma.db.filters import DOSE_RANGE_QUANTITIES
from kerma.db.models import (
    Alert,
    AlertHistory,
    AlertStudy,
    Device,
    IrradiationEvent,
    Patient,
    SkinDoseEstimate,
    Study,
)

#: ``prev_hash`` of the first entry of the chain.
GENESIS_HASH: Final = "0" * 64

#: Key of the PostgreSQL advisory lock that serialises appends to the chain.
_CHAIN_LOCK_KEY: Final = 0x6B65726D61  # "kerma"

#: Study columns the evaluation reads (canonical units).
STUDY_COLUMNS: Final = (
    "modality",
    "modalities",
    "modality_family",
    "standard_exam",
    "study_description",
    "acquisition_protocols",
    "patient_age_years",
    "patient_sex",
    "is_non_patient",
    "study_date",
    "study_time",
    "device_id",
    "patient_id",
    "study_instance_uid",
    "ct_dlp_total_mgycm",
    "ctdivol_mean_mgy",
    "ctdivol_max_mgy",
    "ssde_mgy",
    "effective_dose_msv",
    "dap_total_gym2",
    "dose_rp_total_gy",
    "fluoro_time_total_s",
    "agd_total_left_mgy",
    "agd_total_right_mgy",
    "administered_activity_total_mbq",
)

#: Irradiation event columns the evaluation reads (``modality`` as ``event_modality``,
#: ``standard_exam`` as ``event_standard_exam``).
EVENT_COLUMNS: Final = (
    "acquisition_protocol",
    "ct_acquisition_type",
    "ctdiw_phantom_type",
    "image_view",
    "laterality",
    "compression_thickness_mm",
    "ctdivol_mgy",
    "dlp_mgycm",
    "dap_gym2",
    "dose_rp_gy",
    "agd_mgy",
    "entrance_dose_mgy",
    "administered_activity_mbq",
)


def chunks(ids: Iterable[int], size: int = 500) -> Iterator[list[int]]:
    """Yield ``ids`` in lists of at most ``size`` (bound-parameter limits)."""
    batch: list[int] = []
    for value in ids:
        batch.append(int(value))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def study_rows(session: Session, *, study_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Return the evaluation rows of some studies (with device name and peak skin dose).

    One dict per study: ``study_id``, :data:`STUDY_COLUMNS`, ``device_name`` and
    ``peak_skin_dose_mgy`` (PySkinDose estimate, ``None`` otherwise).
    """
    if not study_ids:
        return []
    columns = [getattr(Study, name) for name in STUDY_COLUMNS]
    stmt = (
        select(
            Study.id.label("study_id"),
            *columns,
            Device.device_name,
            SkinDoseEstimate.peak_skin_dose_mgy,
        )
        .join(Device, Device.id == Study.device_id)
        .outerjoin(SkinDoseEstimate, SkinDoseEstimate.study_id == Study.id)
        .where(Study.id.in_(list(study_ids)))
        .order_by(Study.study_date, Study.study_time, Study.id)
    )
    return [dict(row._mapping) for row in session.execute(stmt)]


def event_rows(session: Session, *, study_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Return the current irradiation events of some studies, per study id (narrow columns)."""
    if not study_ids:
        return {}
    stmt = (
        select(
            IrradiationEvent.study_id,
            IrradiationEvent.id.label("event_id"),
            IrradiationEvent.modality.label("event_modality"),
            IrradiationEvent.standard_exam.label("event_standard_exam"),
            *[getattr(IrradiationEvent, name) for name in EVENT_COLUMNS],
        )
        .where(IrradiationEvent.study_id.in_(list(study_ids)), IrradiationEvent.is_current)
        .order_by(IrradiationEvent.study_id, IrradiationEvent.id)
    )
    out: dict[int, list[dict[str, Any]]] = {}
    for row in session.execute(stmt):
        values = dict(row._mapping)
        out.setdefault(int(values.pop("study_id")), []).append(values)
    return out


def _order_key(study: dict[str, Any]) -> tuple[Any, ...]:
    """Return the (date, time, id) of a study row, for 'before' / 'until' comparisons."""
    return (study.get("study_date"), study.get("study_time") or "", int(study["study_id"]))


def _device_exam_query(study: dict[str, Any], quantity: str) -> Any:
    """Return the select of (id, value) of patient studies of the study's device and exam."""
    column = getattr(Study, quantity)
    return select(Study.id, column).where(
        Study.device_id == study["device_id"],
        Study.standard_exam == study["standard_exam"],
        Study.is_non_patient.is_(False),
        column.is_not(None),
        Study.study_date.is_not(None),
    )


def _before(study: dict[str, Any], *, inclusive: bool) -> Any:
    """Return the condition 'ordered before the study' on (date, time, id)."""
    date, time, study_id = _order_key(study)
    key = tuple_(Study.study_date, func.coalesce(Study.study_time, ""), Study.id)
    return key <= (date, time, study_id) if inclusive else key < (date, time, study_id)


def previous_values(
    session: Session, *, study: dict[str, Any], quantity: str, limit: int
) -> list[float]:
    """Return ``quantity`` of the previous studies of the same exam on the same device.

    Newest first, at most ``limit``; non-patient studies and missing values are left
    out. Needs ``study_id``, ``study_date``, ``study_time``, ``device_id`` and
    ``standard_exam`` in ``study``.
    """
    if study.get("study_date") is None or not study.get("standard_exam"):
        return []
    stmt = (
        _device_exam_query(study, quantity)
        .where(_before(study, inclusive=False))
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
        .limit(limit)
    )
    return [float(v) for _, v in session.execute(stmt)]


def window_values(
    session: Session, *, study: dict[str, Any], quantity: str, size: int
) -> list[tuple[int, float]]:
    """Return (study id, value) of the ``size`` studies of the exam on the device ending here.

    Oldest first, the study itself last (when it has a value).
    """
    if study.get("study_date") is None or not study.get("standard_exam"):
        return []
    stmt = (
        _device_exam_query(study, quantity)
        .where(_before(study, inclusive=True))
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
        .limit(size)
    )
    rows = [(int(i), float(v)) for i, v in session.execute(stmt)]
    rows.reverse()
    return rows


def patient_window(
    session: Session,
    *,
    patient_id: int,
    start: dt.date,
    end: dt.date,
    families: Sequence[str],
    quantity: str | None,
) -> list[tuple[int, float | None]]:
    """Return (study id, value) of a patient's studies dated ``start``..``end`` (inclusive).

    Only studies whose ``modality_family`` is in ``families`` (all when empty) and that
    are not non-patient studies; ``quantity`` ``None`` returns ``None`` values (counts).
    """
    stmt = select(Study.id, getattr(Study, quantity)) if quantity else select(Study.id)
    stmt = stmt.where(
        Study.patient_id == patient_id,
        Study.study_date >= start,
        Study.study_date <= end,
        Study.is_non_patient.is_(False),
    )
    if families:
        stmt = stmt.where(Study.modality_family.in_(list(families)))
    stmt = stmt.order_by(Study.study_date, Study.id)
    rows = session.execute(stmt).all()
    if not quantity:
        return [(int(row[0]), None) for row in rows]
    return [(int(i), None if v is None else float(v)) for i, v in rows]


# -- alerts ----------------------------------------------------------------------------------


def get_alert(session: Session, *, alert_id: int) -> Alert | None:
    """Return an alert by id, or ``None``."""
    return session.get(Alert, alert_id)


def get_alert_by_key(
    session: Session, *, rule_id: str, rule_version: str, subject_key: str
) -> Alert | None:
    """Return the alert of (rule, version, subject), or ``None``."""
    stmt = select(Alert).where(
        Alert.rule_id == rule_id,
        Alert.rule_version == rule_version,
        Alert.subject_key == subject_key,
    )
    return session.scalars(stmt).first()


def find_patient_episode(
    session: Session,
    *,
    rule_id: str,
    rule_version: str,
    patient_id: int,
    study_date: dt.date,
    window_days: int,
) -> Alert | None:
    """Return the patient alert of a rule whose window reaches ``study_date``, or ``None``.

    An episode is one alert per run of crossings of one patient: a crossing within
    ``window_days`` of an existing alert's dates (``study_date`` .. ``detail`` last
    date) belongs to it.
    """
    low = study_date - dt.timedelta(days=window_days)
    high = study_date + dt.timedelta(days=window_days)
    stmt = (
        select(Alert)
        .where(
            Alert.rule_id == rule_id,
            Alert.rule_version == rule_version,
            Alert.patient_id == patient_id,
            Alert.subject_kind == "patient",
            Alert.study_date >= low,
            Alert.study_date <= high,
        )
        .order_by(Alert.id)
    )
    return session.scalars(stmt).first()


def lock_patient_rule(session: Session, *, rule_id: str, patient_id: int) -> None:
    """Serialise the episode alerts of one patient and rule until the transaction ends.

    On PostgreSQL a transaction-level advisory lock keyed by the rule and the patient:
    a second process evaluating the same patient waits, then sees the episode alert
    the first one committed instead of opening another (issue #15). SQLite writers
    are serialised already (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
        {"key": f"kerma-alert-episode:{rule_id}:{patient_id}"},
    )


def add_alert(session: Session, **values: Any) -> Alert:
    """Insert an alert (flushed, so it has its id) and return it."""
    row = Alert(**values)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class AlertFilter:
    """Filters of the alert listing; every field optional."""

    state: str | None = None
    rule_id: str | None = None
    pack: str | None = None
    modality_family: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    study_id: int | None = None
    site_ids: tuple[int, ...] | None = None


def crossing_site_condition(site_ids: Sequence[int]) -> Any:
    """Return the condition "the alert's own subject is of one of these sites" (#15).

    An alert is of its study's site (for a patient alert: the study whose dose crossed
    the threshold); an alert without study (a device's exam group) is of its device's
    site; an alert with neither is of no site. An empty ``site_ids`` selects no alert.
    """
    ids = list(site_ids)
    if not ids:
        return false()
    return or_(
        Alert.study_id.in_(select(Study.id).where(Study.site_id.in_(ids))),
        and_(
            Alert.study_id.is_(None),
            Alert.device_id.in_(select(Device.id).where(Device.site_id.in_(ids))),
        ),
    )


def site_condition(site_ids: Sequence[int]) -> Any:
    """Return the condition "the alert concerns one of these sites" (issue #15).

    :func:`crossing_site_condition`, or a patient alert one of whose window's studies
    (``alert_study``) is now of one of the sites: every site that exposed the patient
    follows up the cumulative dose (Directive 2013/59/Euratom Art. 63). Both parts are
    indexed look-ups (``alert_study`` by alert, ``study`` by id). An empty ``site_ids``
    selects no alert.
    """
    ids = list(site_ids)
    if not ids:
        return false()
    window = exists(
        select(AlertStudy.alert_id)
        .join(Study, Study.id == AlertStudy.study_id)
        .where(AlertStudy.alert_id == Alert.id, Study.site_id.in_(ids))
    )
    return or_(crossing_site_condition(ids), and_(Alert.subject_kind == "patient", window))


def set_alert_studies(session: Session, *, alert_id: int, study_ids: Iterable[int]) -> None:
    """Replace the window studies (``alert_study``) of an alert; ids of no study are left out."""
    session.execute(delete(AlertStudy).where(AlertStudy.alert_id == alert_id))
    for chunk in chunks(sorted({int(i) for i in study_ids})):  # once each (primary key)
        session.execute(
            insert(AlertStudy).from_select(
                ["alert_id", "study_id"],
                select(literal(int(alert_id), Integer), Study.id).where(Study.id.in_(chunk)),
            )
        )


def alert_exists(session: Session, *, alert_id: int) -> bool:
    """Return whether an alert of that id exists."""
    return session.scalar(select(Alert.id).where(Alert.id == alert_id)) is not None


def is_alert_of_sites(
    session: Session, *, alert_id: int, site_ids: Sequence[int], crossing_only: bool = False
) -> bool:
    """Return whether an alert concerns one of ``site_ids`` (:func:`site_condition`), or
    with ``crossing_only`` whether its own subject is of one (:func:`crossing_site_condition`)."""
    condition = crossing_site_condition if crossing_only else site_condition
    stmt = select(Alert.id).where(Alert.id == alert_id, condition(site_ids))
    return session.scalar(stmt) is not None


def _filtered(stmt: Any, flt: AlertFilter) -> Any:
    """Return ``stmt`` with the filter's conditions."""
    conditions = []
    if flt.site_ids is not None:
        conditions.append(site_condition(flt.site_ids))
    if flt.state:
        conditions.append(Alert.state == flt.state)
    if flt.rule_id:
        conditions.append(Alert.rule_id == flt.rule_id)
    if flt.pack:
        conditions.append(Alert.pack == flt.pack)
    if flt.modality_family:
        conditions.append(Alert.modality_family == flt.modality_family)
    if flt.date_from:
        conditions.append(Alert.study_date >= flt.date_from)
    if flt.date_to:
        conditions.append(Alert.study_date <= flt.date_to)
    if flt.study_id is not None:
        conditions.append(Alert.study_id == flt.study_id)
    return stmt.where(and_(*conditions)) if conditions else stmt


#: Columns of :func:`list_alerts`.
LIST_COLUMNS: Final = (
    "alert_id",
    "rule_id",
    "pack",
    "state",
    "outcome",
    "study_id",
    "study_date",
    "modality_family",
    "device_name",
    "standard_exam",
    "quantity",
    "value",
    "threshold",
    "unit",
    "subject_kind",
    "created_at",
    "updated_at",
)


def list_alerts(
    session: Session, *, flt: AlertFilter, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Return one page of alerts, newest study first (:data:`LIST_COLUMNS`)."""
    study_id: Any = Alert.study_id
    study_date: Any = Alert.study_date
    device_name: Any = Device.device_name
    exam: Any = Study.standard_exam
    if flt.site_ids is not None:  # another site's crossing study is not identified
        own = crossing_site_condition(flt.site_ids)
        study_id = case((own, Alert.study_id), else_=null())
        study_date = case((own, Alert.study_date), else_=null())
        device_name = case((own, Device.device_name), else_=null())
        exam = case((own, Study.standard_exam), else_=null())
    stmt = (
        select(
            Alert.id.label("alert_id"),
            Alert.rule_id,
            Alert.pack,
            Alert.state,
            Alert.outcome,
            study_id.label("study_id"),
            study_date.label("study_date"),
            Alert.modality_family,
            device_name.label("device_name"),
            exam.label("standard_exam"),
            Alert.quantity,
            Alert.value,
            Alert.threshold,
            Alert.unit,
            Alert.subject_kind,
            Alert.created_at,
            Alert.updated_at,
        )
        .outerjoin(Study, Study.id == Alert.study_id)
        .outerjoin(Device, Device.id == Alert.device_id)
    )
    stmt = _filtered(stmt, flt).order_by(Alert.study_date.desc(), Alert.id.desc())
    stmt = stmt.limit(limit).offset(offset)
    return [dict(row._mapping) for row in session.execute(stmt)]


def count_alerts(session: Session, *, flt: AlertFilter) -> int:
    """Return how many alerts match the filter."""
    stmt = _filtered(select(func.count(Alert.id)), flt)
    return int(session.scalar(stmt) or 0)


def alert_context(session: Session, *, alert: Alert) -> dict[str, Any]:
    """Return the study, device and patient facts of an alert (no patient identity).

    Keys: ``device_name``, ``study_instance_uid``, ``modality``, ``standard_exam``,
    ``acquisition_protocols``, ``patient_age_years``, ``patient_sex``, ``pseudonym``.
    """
    out: dict[str, Any] = dict.fromkeys(
        (
            "study_instance_uid",
            "modality",
            "standard_exam",
            "acquisition_protocols",
            "patient_age_years",
            "patient_sex",
            "pseudonym",
        )
    )
    device = session.get(Device, alert.device_id) if alert.device_id is not None else None
    out["device_name"] = device.device_name if device is not None else None
    study = session.get(Study, alert.study_id) if alert.study_id is not None else None
    if study is not None:
        for name in (
            "study_instance_uid",
            "modality",
            "standard_exam",
            "acquisition_protocols",
            "patient_age_years",
            "patient_sex",
        ):
            out[name] = getattr(study, name)
    patient = session.get(Patient, alert.patient_id) if alert.patient_id is not None else None
    out["pseudonym"] = patient.pseudonym if patient is not None else None
    return out


#: Study dose columns a significant-event report lists (canonical units, kerma.units):
#: the study summary columns a dose range may be given on.
STUDY_DOSE_COLUMNS: tuple[str, ...] = DOSE_RANGE_QUANTITIES


def study_dose_values(session: Session, *, study_id: int | None) -> list[tuple[str, float]]:
    """Return the study's stored dose quantities as (column, value), empty ones left out.

    Values in the canonical units of the column names (:data:`STUDY_DOSE_COLUMNS`).
    """
    study = session.get(Study, study_id) if study_id is not None else None
    if study is None:
        return []
    values = ((name, getattr(study, name)) for name in STUDY_DOSE_COLUMNS)
    return [(name, float(v)) for name, v in values if v is not None]


#: Columns of :func:`window_studies` rows.
WINDOW_STUDY_COLUMNS: Final = (
    "study_id",
    "study_instance_uid",
    "study_date",
    "modality",
    "standard_exam",
    "device_name",
    "site_id",
    "value",
)


def window_studies(
    session: Session, *, study_ids: Sequence[int], quantity: str | None
) -> list[dict[str, Any]]:
    """Return the studies of an alert's window (:data:`WINDOW_STUDY_COLUMNS`), oldest first.

    ``value`` is the study's ``quantity`` column (canonical unit), ``None`` when
    ``quantity`` is ``None`` or not a study dose column (a count rule). Ids that are no
    study (any more) are left out; ``site_id`` is ``None`` for a study of no site.
    """
    ids = sorted({int(i) for i in study_ids})
    if not ids:
        return []
    is_column = quantity in (*STUDY_COLUMNS, *DOSE_RANGE_QUANTITIES)
    value = getattr(Study, quantity) if quantity and is_column else null()
    stmt = (
        select(
            Study.id,
            Study.study_instance_uid,
            Study.study_date,
            Study.modality,
            Study.standard_exam,
            Device.device_name,
            Study.site_id,
            value,
        )
        .outerjoin(Device, Device.id == Study.device_id)
        .where(Study.id.in_(ids))
        .order_by(Study.study_date, Study.id)
    )
    return [dict(zip(WINDOW_STUDY_COLUMNS, row, strict=True)) for row in session.execute(stmt)]


def alert_ids_with_study(session: Session, *, study_ids: Sequence[int]) -> set[int]:
    """Return which of ``study_ids`` have an alert."""
    if not study_ids:
        return set()
    stmt = select(Alert.study_id).where(Alert.study_id.in_(list(study_ids))).distinct()
    return {int(v) for v in session.scalars(stmt) if v is not None}


def study_id_page(
    session: Session,
    *,
    after: tuple[Any, int] | None,
    limit: int,
    first_id: int | None = None,
    last_id: int | None = None,
) -> list[tuple[Any, int]]:
    """Return (study_date, id) of the next studies in (date, id) order (keyset paging).

    Studies without a date come last (``after`` holds ``None`` then). ``first_id`` and
    ``last_id`` keep the studies of one id range (a job of the job queue).
    """
    stmt = select(Study.study_date, Study.id).where(Study.is_non_patient.is_(False))
    if first_id is not None:
        stmt = stmt.where(Study.id >= first_id)
    if last_id is not None:
        stmt = stmt.where(Study.id <= last_id)
    if after is not None:
        date, last = after
        if date is None:
            stmt = stmt.where(Study.study_date.is_(None), Study.id > last)
        else:
            stmt = stmt.where(
                or_(
                    Study.study_date > date,
                    and_(Study.study_date == date, Study.id > last),
                    Study.study_date.is_(None),
                )
            )
    stmt = stmt.order_by(Study.study_date.is_(None), Study.study_date, Study.id).limit(limit)
    return [(d, int(i)) for d, i in session.execute(stmt)]


def count_patient_studies(session: Session) -> int:
    """Return the number of patient (not QA) studies."""
    stmt = select(func.count(Study.id)).where(Study.is_non_patient.is_(False))
    return int(session.scalar(stmt) or 0)


# -- the review trail (hash chain) ------------------------------------------------------------


def _at_text(at: dt.datetime) -> str:
    """Return a timestamp as UTC ISO text without offset (SQLite returns it naive)."""
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str,
    *,
    alert_id: int,
    at: dt.datetime,
    user_name: str,
    action: str,
    state: str,
    outcome: str | None,
    text: str,
    value: float | None,
) -> str:
    """Return SHA-256 (hex) of the previous hash and an entry's content.

    The content is the JSON array ``[alert_id, at (UTC ISO), user_name, action, state,
    outcome, text, value]`` (compact separators, UTF-8), appended to ``prev_hash``.
    """
    content = json.dumps(
        [alert_id, _at_text(at), user_name, action, state, outcome, text, value],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


def _lock_chain(session: Session) -> None:
    """Serialise appends to the chain (PostgreSQL advisory lock until the transaction ends)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})


def last_entry_hash(session: Session) -> str:
    """Return the ``entry_hash`` of the newest history entry (genesis when none)."""
    stmt = select(AlertHistory.entry_hash).order_by(AlertHistory.id.desc()).limit(1)
    return session.scalar(stmt) or GENESIS_HASH


def append_history(
    session: Session,
    *,
    alert: Alert,
    action: str,
    user_name: str,
    text: str = "",
    at: dt.datetime | None = None,
) -> AlertHistory:
    """Append one entry for ``alert`` (its current state, outcome and value) to the chain."""
    _lock_chain(session)
    session.flush()
    prev = last_entry_hash(session)
    at = at or dt.datetime.now(dt.UTC)
    # keep what the database will give back: microseconds, UTC
    at = at.astimezone(dt.UTC)
    value = float(alert.value) if alert.value is not None else None
    row = AlertHistory(
        alert_id=alert.id,
        at=at,
        user_name=user_name,
        action=action,
        state=alert.state,
        outcome=alert.outcome,
        text=text,
        value=value,
        prev_hash=prev,
        entry_hash=entry_hash(
            prev,
            alert_id=alert.id,
            at=at,
            user_name=user_name,
            action=action,
            state=alert.state,
            outcome=alert.outcome,
            text=text,
            value=value,
        ),
    )
    session.add(row)
    session.flush()
    return row


def history_rows(session: Session, *, alert_id: int) -> list[AlertHistory]:
    """Return the history of one alert, oldest first."""
    stmt = select(AlertHistory).where(AlertHistory.alert_id == alert_id).order_by(AlertHistory.id)
    return list(session.scalars(stmt))


def iter_history(session: Session, *, batch_size: int = 1000) -> Iterator[AlertHistory]:
    """Yield every history entry in chain order, a batch at a time (keyset paging)."""
    last = 0
    while True:
        stmt = (
            select(AlertHistory)
            .where(AlertHistory.id > last)
            .order_by(AlertHistory.id)
            .limit(batch_size)
        )
        batch = list(session.scalars(stmt))
        if not batch:
            return
        yield from batch
        last = batch[-1].id
        session.expunge_all()


def last_history_per_alert(
    session: Session, *, after_alert_id: int, limit: int
) -> list[tuple[int, str, str | None, str | None, str | None]]:
    """Return (alert id, alert state, alert outcome, last entry state, last entry outcome).

    For ``limit`` alerts with id above ``after_alert_id``; the entry columns are
    ``None`` for an alert without history.
    """
    last_id = (
        select(AlertHistory.alert_id, func.max(AlertHistory.id).label("last_id"))
        .group_by(AlertHistory.alert_id)
        .subquery()
    )
    stmt = (
        select(Alert.id, Alert.state, Alert.outcome, AlertHistory.state, AlertHistory.outcome)
        .outerjoin(last_id, last_id.c.alert_id == Alert.id)
        .outerjoin(AlertHistory, AlertHistory.id == last_id.c.last_id)
        .where(Alert.id > after_alert_id)
        .order_by(Alert.id)
        .limit(limit)
    )
    return [tuple(row) for row in session.execute(stmt)]  # type: ignore[misc]
