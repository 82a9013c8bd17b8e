"""Keyword-only reads and writes of the registry; none of them commits.

The unit of work belongs to the caller (:func:`kerma.db.session.session_scope`). Writes
that may race with another process (device, patient, study creation) insert inside a
SAVEPOINT and fall back to reading the row the other process created.

May import ``kerma.db``, ``kerma.records`` and ``kerma.errors`` only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kerma.db.devices import refresh_device_names, resolve_device_key
from kerma.db.models import (
    Device,
    DoseReport,
    IgnoredObject,
    IrradiationEvent,
    Patient,
    PatientSizeMeasurement,
    PlausibilityFlag,
    RejectedObject,
    Study,
)
from kerma.errors import NotFoundError
from kerma.records import DeviceInfo, SizeDirection, size_direction

T = TypeVar("T")


#: Serial numbers that anonymisers or devices write when the real one is unknown.
PLACEHOLDER_SERIAL_NUMBERS = frozenset(
    {"", "REMOVED", "ANONYMIZED", "ANONYMISED", "ANONYMOUS", "UNKNOWN", "NONE", "N/A", "0", "-"}
)


def device_key(info: DeviceInfo) -> str:
    """Return the identity key of a device: SHA-256 of its serial, observer UID or equipment.

    One physical device sends objects that describe it differently: a PET-CT's CT RDSR,
    its radiopharmaceutical SR and its images carry different model and station names,
    and image headers have no TID 1004 Device Observer UID. So the key is, in order:

    1. manufacturer (case-insensitive) + (0018,1000) Device Serial Number, when the
       serial is given and is not a placeholder (``PLACEHOLDER_SERIAL_NUMBERS``);
    2. the TID 1004 Device Observer UID;
    3. (manufacturer, model name, serial number, station name).
    """
    serial = (info.device_serial_number or "").strip()
    if serial.upper() not in PLACEHOLDER_SERIAL_NUMBERS:
        manufacturer = (info.manufacturer or "").strip().casefold()
        text = "serial\x1f" + manufacturer + "\x1f" + serial
    elif info.device_observer_uid:
        return observer_device_key(info.device_observer_uid)
    else:
        parts = (
            info.manufacturer,
            info.manufacturer_model_name,
            info.device_serial_number,
            info.station_name,
        )
        text = "equipment\x1f" + "\x1f".join((p or "").strip() for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def device_name(info: DeviceInfo | Device) -> str:
    """Return a provisional name ``"<manufacturer> <model> (<station>)"`` of a new device.

    The display name is then set by :func:`kerma.db.devices.refresh_device_names`
    (station name, made unique; or the user's name).
    """
    name = " ".join(p for p in (info.manufacturer, info.manufacturer_model_name) if p)
    if info.station_name:
        name = f"{name} ({info.station_name})" if name else info.station_name
    return name or "unknown device"


def _insert_or_get(session: Session, row: T, lookup: Callable[[], T | None]) -> T:
    """Insert ``row`` in a SAVEPOINT; on a unique-constraint race return the existing row."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = lookup()
        if existing is None:
            raise
        return existing
    return row


def observer_device_key(device_observer_uid: str) -> str:
    """Return the identity key of a device known by its TID 1004 Device Observer UID."""
    return hashlib.sha256(("uid\x1f" + device_observer_uid).encode("utf-8")).hexdigest()


def _observers_differ(device: Device, info: DeviceInfo) -> bool:
    """Return whether a stored device and ``info`` name two different Device Observer UIDs."""
    return bool(
        device.device_observer_uid
        and info.device_observer_uid
        and device.device_observer_uid != info.device_observer_uid
    )


def get_or_create_device(session: Session, *, info: DeviceInfo) -> Device:
    """Return the device of ``info`` (created when new; missing attributes filled in).

    The key is :func:`device_key`. A serial number is not unique across a
    manufacturer's models everywhere (test and anonymised systems send ``1234``): when
    the device found by manufacturer and serial number has another TID 1004 Device
    Observer UID than ``info``, the two are different devices (PS3.16 TID 1004: the
    observer UID identifies the device), and ``info``'s device is keyed by its observer
    UID instead (:func:`observer_device_key`).
    """
    own_key = device_key(info)
    key = resolve_device_key(session, own_key)
    # a user's merge (kerma devices merge, kerma.db.devices) says the two are one
    # machine, whatever their observer UIDs say
    is_merged = key != own_key

    def lookup() -> Device | None:
        return session.scalars(select(Device).where(Device.device_key == key)).one_or_none()

    def other_observer(found: Device) -> bool:
        return bool(not is_merged and info.device_observer_uid and _observers_differ(found, info))

    device = lookup()
    if device is not None and other_observer(device):
        assert info.device_observer_uid is not None
        key = resolve_device_key(session, observer_device_key(info.device_observer_uid))
        device = lookup()
    if device is None:
        new = _new_device(key, info)
        created = _insert_or_get(session, new, lookup)
        if created is not new and created.device_key == own_key and other_observer(created):
            # another process stored a device of the same serial number and another
            # observer UID between our look-up and our insert: ours is keyed by its
            # observer UID, as a serial import would have keyed it (issue #15)
            assert info.device_observer_uid is not None
            key = resolve_device_key(session, observer_device_key(info.device_observer_uid))
            new = _new_device(key, info)
            created = lookup() or _insert_or_get(session, new, lookup)
        device = created
        if device is new:
            refresh_device_names(session)  # unique names: a new station name may collide
            return device
    changed = _fill_missing(
        device,
        info,
        (
            "device_observer_uid",
            "manufacturer",
            "manufacturer_model_name",
            "device_serial_number",
            "station_name",
            "institution_name",
            "software_versions",
        ),
    )
    if changed:
        refresh_device_names(session)
    return device


def _new_device(key: str, info: DeviceInfo) -> Device:
    """Return a new (not added) ``device`` row of ``info`` under identity ``key``."""
    return Device(
        device_key=key,
        device_observer_uid=info.device_observer_uid,
        manufacturer=info.manufacturer,
        manufacturer_model_name=info.manufacturer_model_name,
        device_serial_number=info.device_serial_number,
        station_name=info.station_name,
        institution_name=info.institution_name,
        software_versions=info.software_versions,
        device_name=device_name(info),
    )


def get_or_create_patient(session: Session, *, pseudonym: str) -> Patient:
    """Return the patient of a pseudonym, created when new."""

    def lookup() -> Patient | None:
        return session.scalars(select(Patient).where(Patient.pseudonym == pseudonym)).one_or_none()

    return lookup() or _insert_or_get(session, Patient(pseudonym=pseudonym), lookup)


def get_or_create_study(
    session: Session, *, study_instance_uid: str, device: Device, lock: bool = True
) -> Study:
    """Return the study (Study Instance UID, device), created when new.

    Parameters
    ----------
    study_instance_uid : str
        Study Instance UID.
    device : Device
        The device that performed it.
    lock : bool, optional
        Lock the row (``SELECT ... FOR UPDATE`` on PostgreSQL) so that reports of one
        study are reconciled one at a time. Default ``True``.
    """

    def lookup() -> Study | None:
        stmt = select(Study).where(
            Study.study_instance_uid == study_instance_uid, Study.device_id == device.id
        )
        if lock:
            stmt = stmt.with_for_update()
        return session.scalars(stmt).one_or_none()

    study = lookup()
    if study is None:
        study = _insert_or_get(
            session,
            Study(study_instance_uid=study_instance_uid, device_id=device.id, is_non_patient=False),
            lookup,
        )
    return study


def _fill_missing(row: Any, source: Any, names: tuple[str, ...]) -> bool:
    """Copy attributes that are ``None`` on ``row`` from ``source``; return whether any was."""
    changed = False
    for name in names:
        value = getattr(source, name, None)
        if getattr(row, name) is None and value is not None:
            setattr(row, name, value)
            changed = True
    return changed


def fill_study(study: Study, values: dict[str, Any]) -> None:
    """Set the study attributes in ``values`` that the study does not hold yet."""
    for name, value in values.items():
        if value is not None and getattr(study, name) is None:
            setattr(study, name, value)


def get_dose_report(session: Session, *, sop_instance_uid: str) -> DoseReport | None:
    """Return the dose report of a SOP Instance UID, or ``None``."""
    return session.scalars(
        select(DoseReport).where(DoseReport.sop_instance_uid == sop_instance_uid)
    ).one_or_none()


def get_dose_report_or_raise(session: Session, *, sop_instance_uid: str) -> DoseReport:
    """Return the dose report of a SOP Instance UID.

    Raises
    ------
    NotFoundError
        When no report has that SOP Instance UID.
    """
    report = get_dose_report(session, sop_instance_uid=sop_instance_uid)
    if report is None:
        raise NotFoundError(f"No dose report with SOP Instance UID {sop_instance_uid}.")
    return report


def get_dose_report_by_sha256(session: Session, *, sha256: str) -> DoseReport | None:
    """Return a dose report whose archived bytes have this SHA-256, or ``None``."""
    stmt = select(DoseReport).where(DoseReport.archive_sha256 == sha256).limit(1)
    return session.scalars(stmt).first()


def get_rejected_object(session: Session, *, sha256: str) -> RejectedObject | None:
    """Return the rejection of an archived object, or ``None``."""
    return session.scalars(
        select(RejectedObject).where(RejectedObject.archive_sha256 == sha256)
    ).one_or_none()


def add_rejected_object(
    session: Session,
    *,
    sha256: str,
    archive_path: str,
    file_name: str | None,
    reason: str,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    rejected_at: dt.datetime | None = None,
) -> RejectedObject:
    """Record (or update) the rejection of an archived object; one row per SHA-256."""
    when = rejected_at or dt.datetime.now(dt.UTC)

    def lookup() -> RejectedObject | None:
        return get_rejected_object(session, sha256=sha256)

    row = lookup()
    if row is None:
        row = RejectedObject(
            archive_sha256=sha256,
            archive_path=archive_path,
            file_name=file_name,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            reason=reason,
            rejected_at=when,
        )
        row = _insert_or_get(session, row, lookup)
    row.reason = reason
    row.sop_class_uid = sop_class_uid or row.sop_class_uid
    row.sop_instance_uid = sop_instance_uid or row.sop_instance_uid
    return row


def delete_rejected_object(session: Session, *, sha256: str) -> int:
    """Delete the rejection of an archived object (it now imports); return rows deleted."""
    result = session.execute(delete(RejectedObject).where(RejectedObject.archive_sha256 == sha256))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def add_ignored_object(
    session: Session,
    *,
    sop_instance_uid: str,
    reason: str,
    sop_class_uid: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    modality: str | None = None,
    source: str | None = None,
    received_at: dt.datetime | None = None,
) -> IgnoredObject:
    """Record (or update) an object received without dose information; one row per SOP UID.

    Receiving the same SOP Instance UID again updates the reason, source and time.
    """
    when = received_at or dt.datetime.now(dt.UTC)

    def lookup() -> IgnoredObject | None:
        return session.scalars(
            select(IgnoredObject).where(IgnoredObject.sop_instance_uid == sop_instance_uid)
        ).one_or_none()

    row = lookup()
    if row is None:
        row = _insert_or_get(
            session,
            IgnoredObject(sop_instance_uid=sop_instance_uid, reason=reason, received_at=when),
            lookup,
        )
    row.reason = reason
    row.received_at = when
    row.sop_class_uid = sop_class_uid or row.sop_class_uid
    row.study_instance_uid = study_instance_uid or row.study_instance_uid
    row.series_instance_uid = series_instance_uid or row.series_instance_uid
    row.modality = modality or row.modality
    row.source = source or row.source
    return row


def add_patient_size_measurement(
    session: Session,
    *,
    sop_instance_uid: str,
    study_instance_uid: str,
    image_type: str,
    size_mm: float,
    method: str,
    series_instance_uid: str | None = None,
    table_position_mm: float | None = None,
    measured_at: dt.datetime | None = None,
    direction: str | None = None,
) -> PatientSizeMeasurement:
    """Record (or update) the patient size measured on one CT image; one row per SOP UID.

    Parameters
    ----------
    sop_instance_uid, study_instance_uid, series_instance_uid : str
        Of the CT image.
    image_type : {'axial', 'localizer'}
        What the image is.
    size_mm : float
        Axial image: water-equivalent diameter Dw (mm, AAPM Report 220); localizer:
        the patient width along the image row (mm), whose direction ``method`` names.
    method : str
        How it was measured (:mod:`kerma.dicom.size` method names; a localizer's
        starts with :data:`kerma.records.SIZE_METHOD_LOCALIZER_LAT` or ``_AP``).
    table_position_mm : float, optional
        Longitudinal position of an axial image (mm).
    direction : {'dw', 'lat', 'ap'}, optional
        What ``size_mm`` is (:class:`kerma.records.SizeDirection`); default from
        ``image_type`` and ``method`` (:func:`kerma.records.size_direction`). A Dw is
        stored in ``water_equivalent_diameter_mm``, a localizer width in
        ``patient_width_mm``.

    Raises
    ------
    ValueError
        When the direction of a localizer cannot be told from its method.
    """
    when = measured_at or dt.datetime.now(dt.UTC)
    kind = SizeDirection(direction) if direction else size_direction(image_type, method)
    if kind is None:
        raise ValueError(
            f"Unable to store the patient size of {sop_instance_uid}: the localizer method "
            f"{method!r} names no direction (LAT or AP)."
        )

    def lookup() -> PatientSizeMeasurement | None:
        return session.scalars(
            select(PatientSizeMeasurement).where(
                PatientSizeMeasurement.sop_instance_uid == sop_instance_uid
            )
        ).one_or_none()

    is_dw = kind is SizeDirection.DW
    values: dict[str, Any] = {
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "image_type": image_type,
        "direction": str(kind),
        "water_equivalent_diameter_mm": size_mm if is_dw else None,
        "patient_width_mm": None if is_dw else size_mm,
        "table_position_mm": table_position_mm,
        "method": method,
        "measured_at": when,
    }
    row = lookup()
    if row is None:
        row = _insert_or_get(
            session, PatientSizeMeasurement(sop_instance_uid=sop_instance_uid, **values), lookup
        )
    for name, value in values.items():
        setattr(row, name, value)
    return row


def study_event_keys(
    session: Session, *, study_id: int
) -> list[tuple[int, int, int | None, str | None, bool]]:
    """Return (report id, event id, superseded_by_id, event key, is_current) of a study.

    Reports without events appear once with event id ``-1``.
    """
    stmt = (
        select(
            DoseReport.id,
            IrradiationEvent.id,
            DoseReport.superseded_by_id,
            IrradiationEvent.event_key,
            IrradiationEvent.is_current,
        )
        .outerjoin(IrradiationEvent, IrradiationEvent.dose_report_id == DoseReport.id)
        .where(DoseReport.study_id == study_id)
        .order_by(DoseReport.id, IrradiationEvent.event_index)
    )
    return [
        (rid, -1 if eid is None else eid, sup, key, bool(cur))
        for rid, eid, sup, key, cur in session.execute(stmt)
    ]


def study_ids_for_uid(session: Session, *, study_instance_uid: str) -> set[int]:
    """Return the ids of the studies (one per device) of a Study Instance UID."""
    stmt = select(Study.id).where(Study.study_instance_uid == study_instance_uid)
    return set(session.scalars(stmt))


def replace_plausibility_flags(
    session: Session,
    *,
    study_id: int,
    dose_report_id: int,
    flags: list[dict[str, Any]],
    flagged_at: dt.datetime | None = None,
) -> int:
    """Replace the plausibility flags of one dose report; return how many it has now.

    Parameters
    ----------
    study_id, dose_report_id : int
        The study and report the values belong to.
    flags : list of dict
        One per value: ``quantity``, ``location``, ``value`` (``None`` when not finite),
        ``value_text``, ``range_min``, ``range_max``, ``source``, ``message``.
    flagged_at : datetime, optional
        Default now (UTC).
    """
    session.execute(
        delete(PlausibilityFlag).where(PlausibilityFlag.dose_report_id == dose_report_id)
    )
    when = flagged_at or dt.datetime.now(dt.UTC)
    for flag in flags:
        session.add(
            PlausibilityFlag(
                study_id=study_id, dose_report_id=dose_report_id, flagged_at=when, **flag
            )
        )
    return len(flags)


def list_plausibility_flags(
    session: Session, *, study_ids: list[int] | None = None
) -> list[PlausibilityFlag]:
    """Return plausibility flags (of ``study_ids``, or all), by study and id."""
    stmt = select(PlausibilityFlag).order_by(PlausibilityFlag.study_id, PlausibilityFlag.id)
    if study_ids is not None:
        stmt = stmt.where(PlausibilityFlag.study_id.in_(study_ids))
    return list(session.scalars(stmt))
