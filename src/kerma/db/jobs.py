"""Reads and writes of the job queue's tables (PostgreSQL only; issue #15).

The queue is procrastinate's (``procrastinate_jobs``, ``procrastinate_events`` …), made
by migration ``0020_job_queue`` from procrastinate's own schema; they are not Kerma
models (the drift check leaves them out, :data:`QUEUE_TABLE_PREFIX`). Kerma adds one
table, ``job_failure``: procrastinate keeps a failed job's status but not its error, so
the task wrapper of :mod:`kerma.services.jobs` records the error here for ``kerma jobs``.

Functions never commit (the caller's ``session_scope`` does). May import ``kerma.db``
only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

#: Tables whose name starts so belong to procrastinate's schema (not Kerma models).
QUEUE_TABLE_PREFIX = "procrastinate_"

#: Kerma's table beside procrastinate's; made by ``0020_job_queue`` on PostgreSQL only.
JOB_FAILURE_TABLE = "job_failure"

#: Table names of the queue, left out of the model/migration comparison.
QUEUE_TABLES = frozenset({JOB_FAILURE_TABLE})

_metadata = MetaData()

#: The error of each failed job (one row per procrastinate job id; the last attempt's).
job_failure = Table(
    JOB_FAILURE_TABLE,
    _metadata,
    Column("job_id", BigInteger, primary_key=True),
    Column("task_name", String(128), nullable=False),
    Column("error", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
)


def is_queue_table(name: str) -> bool:
    """Return whether a table belongs to the job queue (procrastinate's or ``job_failure``)."""
    return name.startswith(QUEUE_TABLE_PREFIX) or name in QUEUE_TABLES


def has_queue(session: Session) -> bool:
    """Return whether the database holds the queue's tables (migration ``0020_job_queue``)."""
    return bool(inspect(session.connection()).has_table("procrastinate_jobs"))


def id_ranges(session: Session, *, table: Any, size: int) -> list[tuple[int, int]]:
    """Return consecutive ``(first_id, last_id)`` ranges of ``size`` rows of a table.

    Computed in the database (``row_number()`` over the ids, grouped by ``size``); only
    the ranges come back, one per chunk, in id order.

    Parameters
    ----------
    table : sqlalchemy.Table or ORM class
        A table with an integer ``id`` column.
    size : int
        Rows per range (>= 1).
    """
    ids = table.id if hasattr(table, "id") else table.c.id
    numbered = select(
        ids.label("id"), ((func.row_number().over(order_by=ids) - 1) // size).label("chunk")
    ).subquery()
    stmt = (
        select(func.min(numbered.c.id), func.max(numbered.c.id))
        .group_by(numbered.c.chunk)
        .order_by(numbered.c.chunk)
    )
    return [(int(a), int(b)) for a, b in session.execute(stmt)]


@dataclass(frozen=True)
class FailedJob:
    """A failed job of the queue and the error its task raised."""

    job_id: int
    task_name: str
    args: dict[str, Any]
    attempts: int
    error: str | None
    failed_at: dt.datetime | None


def record_failure(session: Session, *, job_id: int, task_name: str, error: str) -> None:
    """Insert or replace the error of a job (its last failed attempt)."""
    values = {
        "job_id": job_id,
        "task_name": task_name,
        "error": error,
        "failed_at": dt.datetime.now(dt.UTC),
    }
    stmt = insert(job_failure).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[job_failure.c.job_id],
            set_={k: stmt.excluded[k] for k in ("task_name", "error", "failed_at")},
        )
    )


def status_counts(session: Session) -> list[tuple[str, str, int]]:
    """Return ``(task_name, status, jobs)`` for every task and status present (aggregated)."""
    rows = session.execute(
        text(
            "SELECT task_name, status::text, count(*) FROM procrastinate_jobs "
            "GROUP BY task_name, status ORDER BY task_name, status"
        )
    )
    return [(str(t), str(s), int(n)) for t, s, n in rows]


def failed_jobs(session: Session, *, limit: int = 50) -> list[FailedJob]:
    """Return the newest failed jobs (up to ``limit``) with their recorded error."""
    rows = session.execute(
        text(
            "SELECT j.id, j.task_name, j.args, j.attempts, f.error, f.failed_at "
            "FROM procrastinate_jobs j LEFT JOIN job_failure f ON f.job_id = j.id "
            "WHERE j.status = 'failed' ORDER BY j.id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [
        FailedJob(
            job_id=int(r[0]),
            task_name=str(r[1]),
            args=dict(r[2] or {}),
            attempts=int(r[3]),
            error=r[4],
            failed_at=r[5],
        )
        for r in rows
    ]


def finished_job_ids(session: Session, *, queue: str, statuses: Sequence[str]) -> set[int]:
    """Return the ids of a queue's jobs in one of ``statuses`` (e.g. ``succeeded``).

    Parameters
    ----------
    queue : str
        ``procrastinate_jobs.queue_name``.
    statuses : sequence of str
        procrastinate job statuses (``todo``, ``doing``, ``succeeded``, ``failed`` …).
    """
    rows = session.execute(
        text(
            "SELECT id FROM procrastinate_jobs "
            "WHERE queue_name = :queue AND status::text = ANY(:statuses)"
        ),
        {"queue": queue, "statuses": list(statuses)},
    )
    return {int(r[0]) for r in rows}


#: procrastinate versions whose schema migration ``0020_job_queue`` applies (pyproject
#: pins the same range).
PROCRASTINATE_VERSIONS = ">=3.10,<3.11"

#: The (major, minor) release of :data:`PROCRASTINATE_VERSIONS`.
PROCRASTINATE_RELEASE = (3, 10)

#: The newest of procrastinate's own schema migrations included in the schema that
#: ``0020_job_queue`` applies (``procrastinate/sql/migrations`` of 3.10.0).
PROCRASTINATE_LAST_MIGRATION = "03.04.00_50_post_add_retry_failed_job_procedure.sql"


def check_procrastinate_version() -> None:
    """Refuse a procrastinate version other than the pinned one (its schema may differ).

    Raises
    ------
    kerma.errors.JobQueueError
        Naming the installed and the expected versions.
    """
    from importlib.metadata import version

    from kerma.errors import JobQueueError

    installed = version("procrastinate")
    release = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
    if release != PROCRASTINATE_RELEASE:
        raise JobQueueError(
            f"Unable to set up the job queue: procrastinate {installed} is installed, "
            f"Kerma's migrations apply the schema of procrastinate{PROCRASTINATE_VERSIONS}. "
            f"Install that version (pip install 'procrastinate{PROCRASTINATE_VERSIONS}')."
        )
