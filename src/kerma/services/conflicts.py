"""Conflicts: copies of one SOP Instance UID with different content, held until decided.

The ingest pipeline keeps every version of a SOP Instance UID that arrives with other
extracted content than the stored report (``report_version``) and marks the study as
in conflict; the registry counts the current version (the first one received,
unconfirmed) until a decision. These use cases serve ``kerma conflicts``, the web app
and the Python API alike:

- :func:`list_conflicts`: open (or all) conflicts with their study;
- :func:`get_conflict_or_raise`: the versions, how each arrived, and the fields in
  which they differ, side by side, with the decisions logged so far;
- :func:`resolve_conflict`: a user keeps one version; the report, its events and the
  study totals follow, and the decision is appended to the log;
- :func:`list_decisions`: the append-only decision log (users and the rule).

Reads take a SQLAlchemy ``Session`` (the caller owns the unit of work); SQL lives in
:mod:`kerma.db.conflicts`. :func:`resolve_conflict` runs its own transaction through the
ingest :class:`~kerma.ingest.pipeline.Importer`, which owns how a report is stored.

May import ``kerma.db``, ``kerma.ingest`` and ``kerma.errors``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from kerma.db import conflicts as q
from kerma.db.conflicts import ConflictRow
from kerma.db.models import DoseReport
from kerma.errors import NotFoundError
from kerma.ingest.pipeline import Importer, differing_fields

__all__ = [
    "ConflictDetail",
    "ConflictRow",
    "DecisionRow",
    "VersionRow",
    "count_open_conflicts",
    "get_conflict",
    "get_conflict_or_raise",
    "list_conflicts",
    "list_decisions",
    "resolve_conflict",
]

#: Characters of a patient pseudonym shown to tell versions' patients apart.
PSEUDONYM_SHOWN = 8


@dataclass(frozen=True)
class VersionRow:
    """One held version of a SOP Instance UID.

    Attributes
    ----------
    version : int
        1 = first received.
    is_current : bool
        The version the registry counts.
    received_at : datetime.datetime
        When it arrived (UTC).
    transport : str
        ``file``, ``c-store``, ``c-get``, ``stow-rs``, ``wado-rs`` or ``other``.
    calling_ae_title : str or None
        The peer's AE title on a DICOM association.
    source : str or None
        The imported file, or the network origin.
    archive_path : str
        The archived object, relative to ``KERMA_ARCHIVE_DIR``.
    study_instance_uid, device_observer_uid : str or None
        What the version's content gives.
    patient : str or None
        The first characters of the version's patient pseudonym.
    """

    version: int
    is_current: bool
    received_at: dt.datetime
    transport: str
    calling_ae_title: str | None
    source: str | None
    archive_path: str
    study_instance_uid: str | None
    device_observer_uid: str | None
    patient: str | None


@dataclass(frozen=True)
class DecisionRow:
    """One entry of the decision log (``conflict_decision``).

    Attributes
    ----------
    sop_instance_uid : str
        The SOP Instance UID decided.
    version_kept, version_before : int
        The version kept, and the current one before the decision.
    method : str
        ``user`` or ``rule``.
    decided_by : str
        The user, or ``rule:<name>``.
    reason : str
        Why.
    decided_at : datetime.datetime
        When (UTC).
    """

    sop_instance_uid: str
    version_kept: int
    version_before: int
    method: str
    decided_by: str
    reason: str
    decided_at: dt.datetime


@dataclass(frozen=True)
class ConflictDetail:
    """A SOP Instance UID in conflict: its versions and how they differ.

    Attributes
    ----------
    sop_instance_uid : str
        The SOP Instance UID.
    is_open : bool
        Undecided.
    opened_at, decided_at : datetime.datetime or None
        When it (last) opened and was last decided.
    study_id : int
        The study of the current version.
    versions : list of VersionRow
        In version order.
    differences : list of (str, list)
        Fields whose values differ: ``(field, [value per version])``, values in the
        canonical units of the field names (:func:`kerma.ingest.pipeline.differing_fields`).
    decisions : list of DecisionRow
        The decisions logged for it, oldest first.
    """

    sop_instance_uid: str
    is_open: bool
    opened_at: dt.datetime | None
    decided_at: dt.datetime | None
    study_id: int
    versions: list[VersionRow]
    differences: list[tuple[str, list[Any]]]
    decisions: list[DecisionRow]

    @property
    def current_version(self) -> int:
        """The version the registry counts."""
        return next(v.version for v in self.versions if v.is_current)


def list_conflicts(session: Session, *, include_decided: bool = False) -> list[ConflictRow]:
    """Return the conflicts (open ones; with ``include_decided`` the decided ones too).

    Returns
    -------
    list of ConflictRow
        Open conflicts first, newest opened first.
    """
    return q.list_conflicts(session, include_decided=include_decided)


def count_open_conflicts(session: Session) -> int:
    """Return how many conflicts are undecided."""
    return q.count_open_conflicts(session)


def _decision(row: Any) -> DecisionRow:
    """Return a :class:`DecisionRow` of a ``conflict_decision`` row."""
    return DecisionRow(
        sop_instance_uid=row.sop_instance_uid,
        version_kept=row.version_kept,
        version_before=row.version_before,
        method=row.method,
        decided_by=row.decided_by,
        reason=row.reason,
        decided_at=row.decided_at,
    )


def list_decisions(session: Session, *, sop_instance_uid: str | None = None) -> list[DecisionRow]:
    """Return the decision log (of one SOP Instance UID, or all), oldest first."""
    return [_decision(r) for r in q.list_decisions(session, sop_instance_uid=sop_instance_uid)]


def get_conflict(session: Session, *, sop_instance_uid: str) -> ConflictDetail | None:
    """Return the versions of a SOP Instance UID and how they differ, or ``None``."""
    conflict = q.get_conflict(session, sop_instance_uid=sop_instance_uid.strip())
    if conflict is None:
        return None
    report = session.get(DoseReport, conflict.dose_report_id)
    assert report is not None
    versions = [
        VersionRow(
            version=v.version,
            is_current=bool(v.is_current),
            received_at=v.received_at,
            transport=v.transport,
            calling_ae_title=v.calling_ae_title,
            source=v.source,
            archive_path=v.archive_path,
            study_instance_uid=v.study_instance_uid,
            device_observer_uid=v.device_observer_uid,
            patient=v.patient_pseudonym[:PSEUDONYM_SHOWN] if v.patient_pseudonym else None,
        )
        for v in conflict.versions
    ]
    differences = differing_fields([v.content for v in conflict.versions])
    patients = [v.patient for v in versions]
    if len(set(patients)) > 1:
        differences.insert(0, ("patient (pseudonym)", patients))
    return ConflictDetail(
        sop_instance_uid=conflict.sop_instance_uid,
        is_open=bool(conflict.is_open),
        opened_at=conflict.opened_at,
        decided_at=conflict.decided_at,
        study_id=report.study_id,
        versions=versions,
        differences=differences,
        decisions=list_decisions(session, sop_instance_uid=conflict.sop_instance_uid),
    )


def get_conflict_or_raise(session: Session, *, sop_instance_uid: str) -> ConflictDetail:
    """Return :func:`get_conflict`, or raise when the UID has no held versions.

    Raises
    ------
    NotFoundError
        When no versions of ``sop_instance_uid`` are held.
    """
    detail = get_conflict(session, sop_instance_uid=sop_instance_uid)
    if detail is None:
        raise NotFoundError(
            f"Unable to show {sop_instance_uid}: no versions of this SOP Instance UID are "
            "held. List the conflicts with 'kerma conflicts list'."
        )
    return detail


def resolve_conflict(
    importer: Importer, *, sop_instance_uid: str, keep: int, reason: str, user: str
) -> set[int]:
    """Keep one version of a SOP Instance UID in conflict, by a user's decision.

    The kept version becomes the report the registry counts: its values and events
    replace the current ones, the study totals and summary columns are derived again,
    the study leaves the conflict state (unless another of its reports is in
    conflict), and the decision (who, when, why, which version) is appended to the
    decision log. One transaction.

    Parameters
    ----------
    importer : Importer
        The registry's ingest pipeline (``Registry.importer``).
    sop_instance_uid : str
        The SOP Instance UID in conflict.
    keep : int
        The version to keep (1 = first received; ``kerma conflicts show`` lists them).
    reason : str
        Why (required; kept in the log).
    user : str
        Who decides.

    Returns
    -------
    set of int
        Ids of the studies whose totals changed or were checked.

    Raises
    ------
    NotFoundError
        When the SOP Instance UID has no held versions.
    ConflictError
        When the version is not held, the reason is empty, or the version's archived
        copy is missing or no longer extracts.
    """
    return importer.resolve_conflict(
        sop_instance_uid=sop_instance_uid.strip(),
        keep=keep,
        reason=reason,
        decided_by=user.strip() or "unknown",
    )
