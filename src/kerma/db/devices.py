"""Device display names, and the user's names and merges (``device_choice``).

Every device gets a unique display name (``device.device_name``): its station name,
made unique with its model, then its serial number, when station names collide; a
name a user gave (``kerma devices rename``) wins and is kept. A user's choices are
stored by device identity (``device.device_key``), not by row id, so that they
survive ``kerma reprocess`` and rows made again. None of these functions commits.

May import ``kerma.db``, ``kerma.records`` and ``kerma.errors`` only.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from kerma.db.models import Device, DeviceChoice, DoseReport, EventGroup, IrradiationEvent, Study
from kerma.db.partitions import move_study_events
from kerma.errors import KermaError, NotFoundError

#: The most merge redirections followed from one identity (a guard against cycles).
MAX_REDIRECTS = 16

#: Key of the PostgreSQL advisory lock under which device names are made (an arbitrary
#: constant: "kerma" in ASCII).
DEVICE_NAMES_LOCK = 0x6B65726D61


class DeviceNameError(KermaError, ValueError):
    """A display name a user chose cannot be used (empty, or another device's name)."""


def _text(value: str | None) -> str:
    """Return ``value`` stripped ("" for ``None``)."""
    return (value or "").strip()


def base_name(device: Any) -> str:
    """Return a device's name before collisions: station name, else manufacturer + model."""
    station = _text(device.station_name)
    if station:
        return station
    name = " ".join(
        p for p in (_text(device.manufacturer), _text(device.manufacturer_model_name)) if p
    )
    return name or "unknown device"


def automatic_names(devices: Iterable[Any], taken: Iterable[str] = ()) -> dict[int, str]:
    """Return a unique automatic display name per device id.

    The station name ((0008,1010) Station Name), or manufacturer and model without one;
    devices whose names collide (compared case-insensitively) get their model added,
    then their serial number, then their row id, until every name is unique and none
    equals a name in ``taken`` (the names users gave).

    Parameters
    ----------
    devices : iterable
        Objects with ``id``, ``station_name``, ``manufacturer``,
        ``manufacturer_model_name`` and ``device_serial_number``.
    taken : iterable of str
        Names already used (user-given names); automatic names avoid them.
    """
    items = sorted(devices, key=lambda d: d.id)
    names = {d.id: base_name(d) for d in items}
    reserved = {t.casefold() for t in taken}

    def detail(device: Any, step: int) -> str:
        model = _text(device.manufacturer_model_name)
        serial = _text(device.device_serial_number)
        if step == 1:
            return model
        if step == 2:
            return " ".join(p for p in (model, f"serial {serial}" if serial else "") if p)
        return " ".join(
            p for p in (model, f"serial {serial}" if serial else "", f"#{device.id}") if p
        )

    for step in (1, 2, 3):
        groups: dict[str, list[Any]] = defaultdict(list)
        for d in items:
            groups[names[d.id].casefold()].append(d)
        clashing = [g for key, g in groups.items() if len(g) > 1 or key in reserved]
        if not clashing:
            break
        for group in clashing:
            for d in group:
                extra = detail(d, step)
                base = base_name(d)
                names[d.id] = f"{base} ({extra})" if extra and extra != base else f"{base} ({d.id})"
    return names


def refresh_device_names(session: Session) -> int:
    """Set every device's display name: the user's name, else a unique automatic one.

    Returns
    -------
    int
        Number of devices whose name changed.

    Notes
    -----
    On PostgreSQL the names are made under a transaction-level advisory lock
    (:data:`DEVICE_NAMES_LOCK`), so that two ingest processes that each add a device
    at once name them one after the other, each seeing the other's committed device
    (issue #15): names stay unique under concurrent ingest.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": DEVICE_NAMES_LOCK})
    devices = list(session.scalars(select(Device)))
    chosen = {
        c.device_key: _text(c.display_name)
        for c in session.scalars(select(DeviceChoice).where(DeviceChoice.display_name.is_not(None)))
        if _text(c.display_name)
    }
    user = {d.id: chosen[d.device_key] for d in devices if d.device_key in chosen}
    auto = automatic_names([d for d in devices if d.id not in user], user.values())
    changed = 0
    for d in devices:
        name = user.get(d.id) or auto[d.id]
        if d.device_name != name:
            d.device_name = name
            changed += 1
    session.flush()
    return changed


def resolve_device_key(session: Session, key: str) -> str:
    """Return the identity a device key is filed under after the user's merges."""
    seen = {key}
    for _ in range(MAX_REDIRECTS):
        target = session.scalar(
            select(DeviceChoice.merged_into_key).where(DeviceChoice.device_key == key)
        )
        if not target or target in seen:
            return key
        seen.add(target)
        key = target
    return key


def _choice(session: Session, key: str) -> DeviceChoice:
    """Return the ``device_choice`` row of an identity, created when missing."""
    choice = session.get(DeviceChoice, key)
    if choice is None:
        choice = DeviceChoice(device_key=key, updated_at=dt.datetime.now(dt.UTC))
        session.add(choice)
    return choice


def get_device_or_raise(session: Session, *, device: str | int) -> Device:
    """Return a device by row id or display name (case-insensitive).

    Raises
    ------
    kerma.errors.NotFoundError
        When no device has that id or name (the message lists the names).
    """
    text = str(device).strip()
    found = None
    if text.isdigit():
        found = session.get(Device, int(text))
    if found is None:
        found = session.scalars(
            select(Device).where(func.lower(Device.device_name) == text.lower())
        ).first()
    if found is None:
        names = ", ".join(sorted(session.scalars(select(Device.device_name))))
        raise NotFoundError(
            f"Unable to find device {text!r}: give its id or display name "
            f"('kerma devices list'); devices: {names or 'none'}."
        )
    return found


def rename_device(session: Session, *, device: Device, name: str | None) -> None:
    """Give a device a display name (``None`` or "" returns to the automatic name).

    Raises
    ------
    DeviceNameError
        When another device already has that name.
    """
    name = _text(name)
    if name:
        clash = session.scalars(
            select(Device.id).where(
                func.lower(Device.device_name) == name.lower(), Device.id != device.id
            )
        ).first()
        if clash is not None:
            raise DeviceNameError(
                f"Unable to rename the device: another device (id {clash}) is called "
                f"{name!r}. Choose another name, or merge the two if they are one machine."
            )
    choice = _choice(session, device.device_key)
    choice.display_name = name or None
    choice.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    refresh_device_names(session)


def move_device_studies(
    session: Session, *, source: Device, target: Device
) -> tuple[set[int], set[int]]:
    """Move every study of ``source`` to ``target``; join studies of the same UID.

    A study of a Study Instance UID that ``target`` also has is joined to target's: its
    reports and events move there and the emptied study is deleted. The derived event
    groups of ``source`` are removed (the caller derives the moved studies again).

    Returns
    -------
    tuple of set of int
        The target studies that got reports of a joined study (to reconcile), and
        every study id now on ``target`` that moved (to derive again).
    """
    joined: set[int] = set()
    moved: set[int] = set()
    target_uids = dict(
        session.execute(
            select(Study.study_instance_uid, Study.id).where(Study.device_id == target.id)
        ).all()
    )
    for study in list(session.scalars(select(Study).where(Study.device_id == source.id))):
        into = target_uids.get(study.study_instance_uid)
        if into is None:
            study.device_id = target.id
            moved.add(study.id)
            continue
        session.execute(
            update(DoseReport).where(DoseReport.study_id == study.id).values(study_id=into)
        )
        session.execute(
            update(IrradiationEvent)
            .where(IrradiationEvent.study_id == study.id)
            .values(study_id=into)
        )
        # the events take the month (partition) of the study they join
        into_date = session.scalar(select(Study.study_date).where(Study.id == into))
        move_study_events(session, study_id=into, study_date=into_date)
        session.flush()
        session.expire_all()
        session.delete(session.get(Study, study.id))
        joined.add(into)
        moved.add(into)
    session.flush()
    session.execute(
        update(IrradiationEvent)
        .where(
            IrradiationEvent.event_group_id.in_(
                select(EventGroup.id).where(EventGroup.device_id == source.id)
            )
        )
        .values(event_group_id=None)
    )
    session.execute(delete(EventGroup).where(EventGroup.device_id == source.id))
    return joined, moved


def record_merge(session: Session, *, source: Device, target: Device) -> None:
    """Remember that ``source``'s identity is filed under ``target``; delete ``source``.

    Earlier merges into ``source`` are pointed at ``target`` too. ``source``'s user
    name is dropped (the merged device keeps ``target``'s).
    """
    session.execute(
        update(DeviceChoice)
        .where(DeviceChoice.merged_into_key == source.device_key)
        .values(merged_into_key=target.device_key)
    )
    choice = _choice(session, source.device_key)
    choice.merged_into_key = target.device_key
    choice.display_name = None
    choice.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    session.delete(source)
    session.flush()
    refresh_device_names(session)


def device_rows(session: Session) -> list[dict[str, Any]]:
    """Return one row per device with its study count and date range.

    Rows: ``device_id``, ``device_name``, ``station_name``, ``manufacturer``,
    ``manufacturer_model_name``, ``device_serial_number``, ``device_observer_uid``,
    ``is_user_named``, ``number_of_merged``, ``number_of_studies``,
    ``first_study_date``, ``last_study_date``; ordered by display name.
    """
    counts = {
        row.device_id: row
        for row in session.execute(
            select(
                Study.device_id,
                func.count(Study.id).label("n"),
                func.min(Study.study_date).label("first"),
                func.max(Study.study_date).label("last"),
            ).group_by(Study.device_id)
        )
    }
    choices = list(session.scalars(select(DeviceChoice)))
    named = {c.device_key for c in choices if _text(c.display_name)}
    merged: dict[str, int] = defaultdict(int)
    for c in choices:
        if c.merged_into_key:
            merged[c.merged_into_key] += 1
    out = []
    for d in session.scalars(select(Device).order_by(func.lower(Device.device_name), Device.id)):
        c = counts.get(d.id)
        out.append(
            {
                "device_id": d.id,
                "device_name": d.device_name,
                "station_name": d.station_name,
                "manufacturer": d.manufacturer,
                "manufacturer_model_name": d.manufacturer_model_name,
                "device_serial_number": d.device_serial_number,
                "device_observer_uid": d.device_observer_uid,
                "is_user_named": d.device_key in named,
                "number_of_merged": merged.get(d.device_key, 0),
                "number_of_studies": int(c.n) if c else 0,
                "first_study_date": c.first if c else None,
                "last_study_date": c.last if c else None,
            }
        )
    return out
