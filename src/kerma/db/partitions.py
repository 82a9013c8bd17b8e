"""Monthly partitions of ``irradiation_event`` by study month (issue #15).

Every event row carries ``study_month``, the first day of the month of its study's
``study.study_date`` (:data:`UNDATED_STUDY_MONTH` when the study has no date), on both
back ends. On PostgreSQL the table is partitioned by range of that column (migration
``0019_event_partitions``): one partition per month, ``irradiation_event_yYYYYmMM``,
and a DEFAULT partition, ``irradiation_event_default``, for undated studies and months
that have no partition yet. :func:`ensure_partitions` creates the partitions of the
coming months and gives every dated month found in DEFAULT its own partition; queries
filtered by study date add :func:`month_conditions` so the planner reads only the
partitions of those months (partition pruning). On SQLite ``study_month`` is a plain
column and nothing here but :func:`study_month`, :func:`month_conditions` and
:func:`move_study_events` applies.

Keyword-only functions that never commit (STYLE.md B7). May import ``kerma.db`` only.

References
----------
PostgreSQL 15 documentation, 5.11 "Table Partitioning" (declarative partitioning,
DEFAULT partitions, partition pruning) and ``CREATE TABLE ... PARTITION OF``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import Connection, and_, text, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from kerma.db.models import IrradiationEvent

__all__ = [
    "DEFAULT_PARTITION",
    "PARTITION_LOCK_KEY",
    "UNDATED_STUDY_MONTH",
    "PartitionReport",
    "add_months",
    "ensure_partitions",
    "is_partitioned",
    "list_partitions",
    "month_conditions",
    "move_study_events",
    "partition_name",
    "study_month",
]

#: ``study_month`` of the events of a study without a date: a date no DICOM study has
#: (DA values are real dates), so it is never inside a month's partition and always
#: lands in DEFAULT. A partition key cannot be NULL under a primary key.
UNDATED_STUDY_MONTH: Final = dt.date(1, 1, 1)

#: The partitioned table and its DEFAULT partition.
PARENT_TABLE: Final = "irradiation_event"
DEFAULT_PARTITION: Final = "irradiation_event_default"

#: Any constant (``"kermapart"``): the advisory lock held while partitions are made, so
#: every node may run ``kerma db partitions`` at once.
PARTITION_LOCK_KEY: Final = 0x6B65726D6170

#: A partition's name: ``irradiation_event_y2026m12`` or the DEFAULT one.
PARTITION_NAME_RE: Final = re.compile(r"^irradiation_event_(?:y(\d{4})m(\d{2})|default)$")

#: Seconds creating a partition waits for the table lock before it gives up (a long
#: query holding the table); the command can simply be run again.
LOCK_TIMEOUT_S: Final = 30.0


@dataclass
class PartitionReport:
    """What :func:`ensure_partitions` did.

    Attributes
    ----------
    created : list of str
        Partitions created, oldest month first.
    moved_rows : int
        Event rows moved out of the DEFAULT partition into their month's new partition.
    partitions : int
        Monthly partitions afterwards (DEFAULT not counted).
    """

    created: list[str] = field(default_factory=list)
    moved_rows: int = 0
    partitions: int = 0


def study_month(study_date: dt.date | None) -> dt.date:
    """Return the ``study_month`` of events of a study dated ``study_date``.

    Parameters
    ----------
    study_date : datetime.date or None
        ``study.study_date``, (0008,0020) 'Study Date'.

    Returns
    -------
    datetime.date
        The first day of its month, or :data:`UNDATED_STUDY_MONTH` when ``None``.
    """
    if study_date is None:
        return UNDATED_STUDY_MONTH
    return study_date.replace(day=1)


def add_months(month: dt.date, count: int) -> dt.date:
    """Return the first day of the month ``count`` months after ``month`` (may be negative)."""
    years, index = divmod(month.month - 1 + count, 12)
    return dt.date(month.year + years, index + 1, 1)


def partition_name(month: dt.date) -> str:
    """Return the name of the partition of ``month``: ``irradiation_event_y2026m12``."""
    return f"{PARENT_TABLE}_y{month.year:04d}m{month.month:02d}"


def month_conditions(
    date_from: dt.date | None, date_to: dt.date | None
) -> list[ColumnElement[bool]]:
    """Return ``study_month`` bounds implied by a study date filter, for pruning.

    A study dated between ``date_from`` and ``date_to`` (both inclusive) has its events'
    ``study_month`` between the two months; the bounds add nothing to the filter's
    meaning (the ``study_date`` condition stays) but let PostgreSQL skip the partitions
    of other months. With no bound nothing is returned.

    Parameters
    ----------
    date_from, date_to : datetime.date or None
        The inclusive study date bounds of the filter.

    Returns
    -------
    list of ColumnElement
        Zero, one or two conditions on ``irradiation_event.study_month``.
    """
    out: list[ColumnElement[bool]] = []
    if date_from is not None:
        out.append(IrradiationEvent.study_month >= study_month(date_from))
    if date_to is not None:
        out.append(IrradiationEvent.study_month <= study_month(date_to))
    if date_from is None and date_to is not None:  # undated studies never match a date
        out.append(IrradiationEvent.study_month > UNDATED_STUDY_MONTH)
    return out


def move_study_events(session: Session, *, study_id: int, study_date: dt.date | None) -> int:
    """Set ``study_month`` of every event of a study to the month of its (new) date.

    Called when a study's date is set or changed (a reprocess, a later report filling a
    missing date); on PostgreSQL the UPDATE moves the rows to the new month's partition.

    Parameters
    ----------
    session : Session
        The unit of work (not committed here).
    study_id : int
        ``study.id``.
    study_date : datetime.date or None
        The study's date now.

    Returns
    -------
    int
        Event rows moved.
    """
    month = study_month(study_date)
    result = session.execute(
        update(IrradiationEvent)
        .where(and_(IrradiationEvent.study_id == study_id, IrradiationEvent.study_month != month))
        .values(study_month=month)
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def is_partitioned(connection: Connection) -> bool:
    """Return whether ``irradiation_event`` is a partitioned table (PostgreSQL after 0019)."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(
        connection.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table p "
                "JOIN pg_class c ON c.oid = p.partrelid "
                "WHERE c.relname = :t AND pg_table_is_visible(c.oid))"
            ),
            {"t": PARENT_TABLE},
        ).scalar()
    )


def list_partitions(connection: Connection) -> list[str]:
    """Return the names of the partitions of ``irradiation_event``, sorted (PostgreSQL)."""
    rows = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:t AS regclass) ORDER BY c.relname"
        ),
        {"t": PARENT_TABLE},
    )
    return [r[0] for r in rows]


def ensure_partitions(
    connection: Connection,
    *,
    ahead_months: int = 12,
    since: dt.date | None = None,
    today: dt.date | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> PartitionReport:
    """Create the monthly partitions of ``irradiation_event`` that are missing.

    Made: the partition of the current month and of the ``ahead_months`` after it,
    those of every month from ``since`` on (a history about to be loaded), and
    one for every dated month that has rows in the DEFAULT partition (a study dated
    before the oldest partition, or after the last one made ahead). PostgreSQL refuses
    to create a partition whose range has rows in DEFAULT, so those rows are taken out
    of DEFAULT, the partition is created, and they are inserted again, in the same
    transaction. Idempotent; under a transaction-level advisory lock, so nodes running
    it at once wait for each other and the later finds nothing to do.

    Parameters
    ----------
    connection : Connection
        A PostgreSQL connection in a transaction (committed by the caller).
    ahead_months : int, optional
        Months after the current one to create (default 12).
    since : datetime.date, optional
        Also create every month from this date's month to the current one.
    today : datetime.date, optional
        The current date (default: today, UTC).
    lock_timeout_s : float, optional
        Seconds to wait for a table lock (default 30; PostgreSQL ``lock_timeout``).

    Returns
    -------
    PartitionReport
        The partitions created and the rows moved out of DEFAULT.

    Raises
    ------
    ValueError
        When ``ahead_months`` is negative or the table is not partitioned.
    sqlalchemy.exc.OperationalError
        SQLSTATE 55P03 when a lock was not granted within ``lock_timeout_s`` (the
        transaction must be rolled back; nothing was changed).
    """
    if ahead_months < 0:
        raise ValueError(f"ahead_months must be 0 or more, not {ahead_months}.")
    if not is_partitioned(connection):
        raise ValueError(
            "irradiation_event is not a partitioned table: partitions are a PostgreSQL "
            "feature of revision 0019_event_partitions (kerma db upgrade)."
        )
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITION_LOCK_KEY})
    connection.execute(text(f"SET LOCAL lock_timeout = {int(lock_timeout_s * 1000)}"))
    existing = set(list_partitions(connection))
    this_month = study_month(today or dt.datetime.now(dt.UTC).date())
    first = min(study_month(since), this_month) if since is not None else this_month
    months: set[dt.date] = set()
    month = first
    while month <= add_months(this_month, ahead_months):
        months.add(month)
        month = add_months(month, 1)
    months |= set(
        connection.execute(
            text(
                f"SELECT DISTINCT study_month FROM {DEFAULT_PARTITION} "
                "WHERE study_month <> :undated"
            ),
            {"undated": UNDATED_STUDY_MONTH},
        ).scalars()
    )
    report = PartitionReport()
    for month in sorted(months):
        name = partition_name(month)
        if name in existing:
            continue
        report.moved_rows += _create_partition(connection, month=month)
        report.created.append(name)
        existing.add(name)
    report.partitions = len(existing - {DEFAULT_PARTITION})
    return report


def _create_partition(connection: Connection, *, month: dt.date) -> int:
    """Create the partition of ``month``, moving its rows out of DEFAULT; return how many."""
    bounds = {"lo": month, "hi": add_months(month, 1)}
    in_default = connection.execute(
        text(
            f"SELECT count(*) FROM {DEFAULT_PARTITION} "
            "WHERE study_month >= :lo AND study_month < :hi"
        ),
        bounds,
    ).scalar_one()
    create = (
        f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF {PARENT_TABLE} "
        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{bounds['hi'].isoformat()}')"
    )
    if not in_default:
        connection.execute(text(create))
        return 0
    columns = ", ".join(f'"{c.name}"' for c in IrradiationEvent.__table__.columns)
    connection.execute(
        text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")  # no new rows now
    )
    connection.execute(
        text(f"CREATE TEMPORARY TABLE kerma_moving_events (LIKE {PARENT_TABLE}) ON COMMIT DROP")
    )
    connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "
            f"WHERE study_month >= :lo AND study_month < :hi RETURNING {columns}) "
            f"INSERT INTO kerma_moving_events ({columns}) SELECT {columns} FROM moved"
        ),
        bounds,
    )
    connection.execute(text(create))
    connection.execute(
        text(f"INSERT INTO {PARENT_TABLE} ({columns}) SELECT {columns} FROM kerma_moving_events")
    )
    connection.execute(text("DROP TABLE kerma_moving_events"))
    return int(in_default)
