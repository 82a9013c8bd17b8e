"""Rooms and devices: list, rename and merge device records (``kerma devices``).

Names and merges are the user's choices, stored by device identity
(:mod:`kerma.db.devices`), so they survive ``kerma reprocess``. A merge files two
device records that are one machine (e.g. after a software upgrade changed the
identity it reports) under one: its studies move, studies of the same Study Instance
UID are joined and reconciled again, and their summaries derived again.

May import ``kerma.db``, ``kerma.analysis``, ``kerma.ingest``, ``kerma.records``,
``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from kerma.db import devices as store
from kerma.db.models import Study
from kerma.errors import KermaError

if TYPE_CHECKING:
    import pandas as pd

    from kerma.analysis.summary import SummaryContext

#: Columns of :func:`devices_frame`.
DEVICE_COLUMNS: tuple[str, ...] = (
    "device_id",
    "device_name",
    "station_name",
    "manufacturer",
    "manufacturer_model_name",
    "device_serial_number",
    "device_observer_uid",
    "is_user_named",
    "number_of_merged",
    "number_of_studies",
    "first_study_date",
    "last_study_date",
)


def devices_frame(session: Session) -> pd.DataFrame:
    """Return one row per device (:data:`DEVICE_COLUMNS`), ordered by display name.

    ``device_name`` is the unique display name (the user's, or the station name made
    unique with model or serial number); ``is_user_named`` says which;
    ``number_of_merged`` counts the device identities merged into this one.
    """
    import pandas as pd

    return pd.DataFrame.from_records(store.device_rows(session), columns=list(DEVICE_COLUMNS))


def rename_device(session: Session, *, device: str | int, name: str | None) -> str:
    """Give a device (id or display name) a display name; ``None`` restores the automatic one.

    Returns
    -------
    str
        The device's display name afterwards.

    Raises
    ------
    kerma.errors.NotFoundError
        When no device has that id or name.
    kerma.db.devices.DeviceNameError
        When another device already has that name.
    """
    row = store.get_device_or_raise(session, device=device)
    store.rename_device(session, device=row, name=name)
    return row.device_name


@dataclass(frozen=True)
class MergeResult:
    """What a merge did: the device kept, how many studies moved and were joined."""

    device_name: str
    studies_moved: int
    studies_joined: int


def merge_devices(
    session: Session,
    *,
    source: str | int,
    target: str | int,
    context: SummaryContext | None = None,
) -> MergeResult:
    """Merge device ``source`` into ``target`` (ids or display names), in one transaction.

    Every study of ``source`` moves to ``target``; a study whose Study Instance UID
    ``target`` has too is joined to it and reconciled again (newer reports supersede,
    events counted once: :func:`kerma.ingest.reconcile.reconcile_study`). The moved
    studies are derived again (summary, exam, event groups per room). ``source``'s
    identity is recorded as merged, so objects of it (also on ``kerma reprocess``) are
    filed under ``target``.

    Raises
    ------
    kerma.errors.NotFoundError
        When a device is not found.
    kerma.errors.KermaError
        When ``source`` and ``target`` are the same device.
    """
    from kerma.ingest.reconcile import reconcile_study
    from kerma.services.derive import refresh_studies

    src = store.get_device_or_raise(session, device=source)
    dst = store.get_device_or_raise(session, device=target)
    if src.id == dst.id:
        raise KermaError(f"Unable to merge: {src.device_name!r} is the same device twice.")
    joined, moved = store.move_device_studies(session, source=src, target=dst)
    for study_id in sorted(joined):
        study = session.get(Study, study_id)
        if study is not None:
            reconcile_study(session, study=study)
    refresh_studies(session, moved, context=context)
    store.record_merge(session, source=src, target=dst)
    return MergeResult(dst.device_name, len(moved), len(joined))
