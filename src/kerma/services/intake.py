"""What the intake did not store: rejected and ignored objects, and the intake's importer.

- Rejected objects (``kerma rejects``): listed with a :class:`RejectFilter` (reason,
  reason group, date range), written to CSV, and purged once a user has dealt with
  them (:func:`delete_rejects`, then :func:`remove_archived_files` after the commit:
  the listing goes and so do the archived bytes that no stored report uses).
- Ignored objects (``kerma ignored``): what the network intake acknowledged but did
  not keep, with where each came from.
- :func:`known_instances` and :class:`KnownInstances`: which SOP Instance UIDs the
  registry already knows, for ``kerma pull``.
- :func:`find_missing` and :func:`count_files` (from :mod:`kerma.ingest.sources`):
  what ``kerma import`` checks and counts before it starts.

Functions take a SQLAlchemy ``Session``; the caller owns the unit of work. SQL lives in
:mod:`kerma.db.intake_queries`.

May import ``kerma.db``, ``kerma.ingest``, ``kerma.config`` and ``kerma.errors``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from kerma.db import intake_queries as q
from kerma.db.intake_queries import IgnoredRow, RejectedRow, RejectWhere
from kerma.ingest.sources import count_files, find_missing

if TYPE_CHECKING:
    from kerma.config import Settings
    from kerma.services.registry import Registry

__all__ = [
    "REASON_GROUPS",
    "IgnoredRow",
    "KnownInstances",
    "RejectFilter",
    "RejectPurge",
    "RejectedRow",
    "count_files",
    "count_ignored",
    "count_rejects",
    "delete_rejects",
    "find_missing",
    "ignored_by_kind",
    "iter_ignored",
    "iter_rejects",
    "known_instances",
    "list_ignored",
    "list_rejects",
    "reason_group",
    "remove_archived_files",
]

#: Named groups of rejection reasons: name -> (description, ``LIKE`` patterns of the
#: reasons the pipeline writes, lower case). A reason belongs to the first group whose
#: patterns it matches, in this order; ``other`` takes the rest. The patterns follow
#: the messages of :mod:`kerma.ingest.pipeline` and :mod:`kerma.dicom` (a test checks
#: each group against reasons the pipeline wrote).
REASON_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conflict": (
        "same SOP Instance UID as a stored object, different content",
        ("not imported: %same sop instance uid%",),
    ),
    "strict": ("read with warnings in strict mode (KERMA_STRICT)", ("rejected in strict mode%",)),
    "implausible": (
        "values that cannot be physical (plausibility table)",
        ("rejected as implausible%",),
    ),
    "unreadable": (
        "not readable DICOM: damaged, truncated or undecodable",
        ("unable to read %",),
    ),
    "not-dose": (
        "DICOM without dose information",
        ("%holds no dose information%", "%not a dose report%"),
    ),
    "reader-error": ("Kerma's reader failed on it", ("%internal reader error%",)),
}

#: The group of reasons that match no pattern of :data:`REASON_GROUPS`.
OTHER_GROUP = "other"

#: Placeholders of a masked reason, as the import summary groups reasons
#: (``kerma.ingest.pipeline.reason_group``): they match any text.
_PLACEHOLDERS = re.compile(r"<file>|<uid>")


def _like_literal(text: str) -> str:
    """Return ``text`` with the ``LIKE`` wildcards and the escape character escaped."""
    esc = q.LIKE_ESCAPE
    return text.replace(esc, esc + esc).replace("%", esc + "%").replace("_", esc + "_")


def _like_to_regex(pattern: str) -> re.Pattern[str]:
    """Return a regular expression equivalent to a lower-case ``LIKE`` pattern."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == q.LIKE_ESCAPE and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def reason_group(reason: str) -> str:
    """Return the name of the group of a rejection reason (:data:`REASON_GROUPS`, or ``other``).

    Parameters
    ----------
    reason : str
        A reason as ``rejected_object.reason`` holds it.

    Returns
    -------
    str
        ``conflict``, ``strict``, ``implausible``, ``unreadable``, ``not-dose``,
        ``reader-error`` or ``other``.
    """
    text = reason.lower()
    for name, (_, patterns) in REASON_GROUPS.items():
        if any(_like_to_regex(p).fullmatch(text) for p in patterns):
            return name
    return OTHER_GROUP


@dataclass(frozen=True)
class RejectFilter:
    """Which rejected objects a listing or a purge takes.

    Attributes
    ----------
    reason : str or None
        A group name of :data:`REASON_GROUPS` (or ``other``); or else any part of
        the reason, where ``<file>`` and ``<uid>`` (as the import summary masks file
        names and UIDs) stand for any text. Case-insensitive.
    since, until : datetime.date or None
        First and last day of rejection (UTC), both included.
    """

    reason: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    def to_where(self) -> RejectWhere:
        """Return the query condition (:class:`kerma.db.intake_queries.RejectWhere`)."""
        like_any: tuple[str, ...] = ()
        like_none: tuple[str, ...] = ()
        text = (self.reason or "").strip()
        names = list(REASON_GROUPS)
        if text.lower() in REASON_GROUPS:
            index = names.index(text.lower())
            like_any = REASON_GROUPS[names[index]][1]
            like_none = tuple(p for name in names[:index] for p in REASON_GROUPS[name][1])
        elif text.lower() == OTHER_GROUP:
            like_none = tuple(p for _, patterns in REASON_GROUPS.values() for p in patterns)
        elif _PLACEHOLDERS.search(text):
            pieces = _PLACEHOLDERS.split(text.lower())
            like_any = ("%" + "%".join(_like_literal(piece) for piece in pieces) + "%",)
        elif text:
            like_any = (f"%{_like_literal(text.lower())}%",)
        start = _utc_midnight(self.since)
        end = _utc_midnight(self.until + dt.timedelta(days=1)) if self.until else None
        return RejectWhere(like_any, like_none, start, end)

    def describe(self) -> str:
        """Return the filter in words, e.g. ``reason group 'unreadable', since 2026-01-01``."""
        parts = []
        if self.reason:
            kind = (
                "reason group"
                if self.reason.strip().lower() in {*REASON_GROUPS, OTHER_GROUP}
                else "reason"
            )
            parts.append(f"{kind} {self.reason.strip()!r}")
        if self.since:
            parts.append(f"since {self.since.isoformat()}")
        if self.until:
            parts.append(f"until {self.until.isoformat()}")
        return ", ".join(parts) or "all"


def _utc_midnight(day: dt.date | None) -> dt.datetime | None:
    """Return the start of ``day`` in UTC, or ``None``."""
    return None if day is None else dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def _as_utc(row: RejectedRow) -> RejectedRow:
    """Return ``row`` with ``rejected_at`` timezone-aware (SQLite returns it naive, in UTC)."""
    if row.rejected_at.tzinfo is not None:
        return row
    return dataclasses.replace(row, rejected_at=row.rejected_at.replace(tzinfo=dt.UTC))


def list_rejects(
    session: Session, *, where: RejectFilter | None = None, limit: int | None = None
) -> list[RejectedRow]:
    """Return the rejected objects that match, newest first.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        Any session.
    where : RejectFilter, optional
        Which ones (default all).
    limit : int, optional
        At most this many.

    Returns
    -------
    list of RejectedRow
        Rejection time (UTC), source, SOP UIDs, reason and where the bytes are archived.
    """
    rows = q.list_rejected_objects(session, where=(where or RejectFilter()).to_where(), limit=limit)
    return [_as_utc(row) for row in rows]


def iter_rejects(session: Session, *, where: RejectFilter | None = None) -> Iterator[RejectedRow]:
    """Yield every rejected object that matches, newest first, in batches (for CSV)."""
    for row in q.iter_rejected_objects(session, where=(where or RejectFilter()).to_where()):
        yield _as_utc(row)


def count_rejects(session: Session, *, where: RejectFilter | None = None) -> int:
    """Return how many rejected objects match."""
    return q.count_rejected_objects(session, where=(where or RejectFilter()).to_where())


@dataclass
class RejectPurge:
    """What :func:`delete_rejects` removed from the listing, and what to remove from the archive.

    Attributes
    ----------
    listings_removed : int
        Rows of ``rejected_object`` deleted.
    archive_paths : list of str
        Archive paths (relative to the archive folder) of the bytes to delete once the
        deletion of the rows is committed: those no stored dose report uses.
    kept_in_use : int
        Archived objects kept because a stored dose report uses the same bytes.
    files_removed, bytes_removed, files_missing : int
        Filled by :func:`remove_archived_files`: files deleted, their size in bytes,
        and files that were not there any more.
    failed : list of str
        Archive paths that could not be deleted (with the reason).
    """

    listings_removed: int = 0
    archive_paths: list[str] = field(default_factory=list)
    kept_in_use: int = 0
    files_removed: int = 0
    bytes_removed: int = 0
    files_missing: int = 0
    failed: list[str] = field(default_factory=list)


def delete_rejects(session: Session, *, where: RejectFilter | None = None) -> RejectPurge:
    """Delete the listing of the rejected objects that match; say which bytes to remove.

    The rows are deleted in ``session`` (the caller commits); the archived bytes are
    removed afterwards by :func:`remove_archived_files`, so a failed commit never
    leaves a listing without its bytes. Bytes that a stored dose report uses are kept.

    Parameters
    ----------
    session : sqlalchemy.orm.Session
        A writing session.
    where : RejectFilter, optional
        Which ones (default all).

    Returns
    -------
    RejectPurge
        Rows deleted and the archive paths to remove.
    """
    rows = list(q.iter_rejected_objects(session, where=(where or RejectFilter()).to_where()))
    purge = RejectPurge()
    if not rows:
        return purge
    in_use = q.stored_archive_sha256s(session, sha256s=[r.archive_sha256 for r in rows])
    purge.listings_removed = q.delete_rejected_objects(session, ids=[r.id for r in rows])
    purge.archive_paths = sorted({r.archive_path for r in rows if r.archive_sha256 not in in_use})
    purge.kept_in_use = len({r.archive_sha256 for r in rows} & in_use)
    return purge


def remove_archived_files(archive_dir: Path, purge: RejectPurge) -> RejectPurge:
    """Delete the archived files of a committed :func:`delete_rejects`; count what went.

    Parameters
    ----------
    archive_dir : pathlib.Path
        The archive folder (``KERMA_ARCHIVE_DIR``).
    purge : RejectPurge
        The result of :func:`delete_rejects`, after its session was committed.

    Returns
    -------
    RejectPurge
        ``purge``, with ``files_removed``, ``bytes_removed``, ``files_missing`` and
        ``failed`` filled in.
    """
    root = Path(archive_dir)
    for relative in purge.archive_paths:
        path = root / relative
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            purge.files_missing += 1
        except OSError as exc:
            purge.failed.append(f"{relative}: {exc.strerror or exc}")
        else:
            purge.files_removed += 1
            purge.bytes_removed += size
            for folder in (path.parent, path.parent.parent):  # aa/bb/, then aa/
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
    return purge


def _ignored_as_utc(row: IgnoredRow) -> IgnoredRow:
    """Return ``row`` with ``received_at`` timezone-aware (SQLite returns it naive, in UTC)."""
    if row.received_at.tzinfo is not None:
        return row
    return dataclasses.replace(row, received_at=row.received_at.replace(tzinfo=dt.UTC))


def list_ignored(session: Session, *, limit: int | None = None) -> list[IgnoredRow]:
    """Return the objects received without dose information and not kept, newest first.

    Each row says where the object came from (``source``): the peer's AE title and
    address (``C-STORE from CT01 at 10.1.2.3``, ``C-GET from PACS at ...``,
    ``STOW-RS from ...``, ``WADO-RS <url>``), or the path relative to an imported folder.
    """
    return [_ignored_as_utc(row) for row in q.list_ignored_objects(session, limit=limit)]


def iter_ignored(session: Session) -> Iterator[IgnoredRow]:
    """Yield every ignored object, newest first, in batches (for CSV)."""
    for row in q.iter_ignored_objects(session):
        yield _ignored_as_utc(row)


def count_ignored(session: Session) -> int:
    """Return how many ignored objects are listed."""
    return q.count_ignored_objects(session)


def ignored_by_kind(session: Session) -> list[tuple[str | None, str | None, int]]:
    """Return (modality, SOP Class UID, number) of the ignored objects, most numerous first."""
    return q.count_ignored_by_kind(session)


def known_instances(session: Session, uids: Collection[str]) -> set[str]:
    """Return those of ``uids`` (SOP Instance UIDs) the registry has stored, rejected or ignored."""
    return q.known_sop_instance_uids(session, uids=uids)


class KnownInstances:
    """Which SOP Instance UIDs the registry already knows: the ``known`` of a pull.

    A callable for :func:`kerma.net.pull.pull_dimse` and
    :func:`kerma.net.dicomweb.pull_dicomweb`: opens the registry of ``settings``
    read-only on first use, one session per question (:func:`known_instances`).
    Call :meth:`close` when the pull is done.

    Parameters
    ----------
    settings : Settings
        The configuration of the registry.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._registry: Registry | None = None

    def __call__(self, uids: Collection[str]) -> Collection[str]:
        """Return those of ``uids`` stored, rejected or ignored."""
        if self._registry is None:
            from kerma.services.registry import Registry

            self._registry = Registry(settings=self.settings)
        with self._registry.session(write=False) as session:
            return known_instances(session, uids)

    def close(self) -> None:
        """Close the registry, if it was opened."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None
