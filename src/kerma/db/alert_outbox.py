"""Keyword-only reads and writes of the alert e-mail outbox (table ``alert_outbox``).

A row is one alert e-mail to one recipient; :func:`add_outbox_rows` inserts with ``ON
CONFLICT DO NOTHING`` on ``(alert_id, recipient)``, so queueing an alert twice is a
no-op. Delivery claims a row with a conditional ``UPDATE`` (:func:`claim_rows`), so two
processes delivering at once never both send it. Nothing here commits.

May import ``kerma.db`` only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from kerma.db.models import AlertOutbox

#: ``status`` of a row the server has not accepted yet.
STATUS_PENDING = "pending"
#: ``status`` of a row the server accepted.
STATUS_SENT = "sent"

#: Columns of :func:`list_rows` and :func:`claim_rows`.
OUTBOX_COLUMNS: tuple[str, ...] = (
    "id",
    "alert_id",
    "recipient",
    "subject",
    "message",
    "digest_day",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "created_at",
    "sent_at",
)


def add_outbox_rows(
    session: Session,
    *,
    alert_id: int,
    recipients: Sequence[str],
    subject: str,
    message: dict[str, Any],
    digest_day: dt.date,
    now: dt.datetime,
) -> int:
    """Queue one row per recipient, skipping ``(alert_id, recipient)`` pairs already queued.

    Returns
    -------
    int
        The number of rows inserted (0 when the alert was queued before).
    """
    if not recipients:
        return 0
    values = [
        {
            "alert_id": alert_id,
            "recipient": recipient,
            "subject": subject,
            "message": message,
            "digest_day": digest_day,
            "status": STATUS_PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for recipient in recipients
    ]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(AlertOutbox).values(values)
    stmt = stmt.on_conflict_do_nothing(index_elements=["alert_id", "recipient"])
    return len(session.execute(stmt.returning(AlertOutbox.id)).all())


def claim_rows(
    session: Session,
    *,
    now: dt.datetime,
    lease_until: dt.datetime,
    before_day: dt.date | None = None,
    limit: int | None = None,
) -> list[Row[Any]]:
    """Claim the pending rows due at ``now``: move them to ``lease_until`` and return them.

    A row is claimed with ``UPDATE ... WHERE id = :id AND next_attempt_at <= :now``;
    only the process whose update hit the row gets it, so concurrent deliveries do not
    send one row twice. A process that dies while sending leaves the row to be retried
    at ``lease_until``.

    Parameters
    ----------
    before_day : datetime.date, optional
        Claim only rows of alerts from days before this one (daily digest: a day is
        sent when it is over).
    limit : int, optional
        At most this many rows (oldest first).

    Returns
    -------
    list of Row
        The claimed rows (:data:`OUTBOX_COLUMNS`), by recipient, day and alert.
    """
    o = AlertOutbox
    stmt = select(o.id).where(o.status == STATUS_PENDING, o.next_attempt_at <= now)
    if before_day is not None:
        stmt = stmt.where(o.digest_day < before_day)
    stmt = stmt.order_by(o.next_attempt_at, o.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    claimed = []
    for (row_id,) in session.execute(stmt).all():
        hit = session.execute(
            update(o)
            .where(o.id == row_id, o.status == STATUS_PENDING, o.next_attempt_at <= now)
            .values(next_attempt_at=lease_until)
        )
        if getattr(hit, "rowcount", 0) == 1:
            claimed.append(row_id)
    if not claimed:
        return []
    columns = [getattr(o, c) for c in OUTBOX_COLUMNS]
    rows = session.execute(
        select(*columns).where(o.id.in_(claimed)).order_by(o.recipient, o.digest_day, o.alert_id)
    )
    return list(rows.all())


def mark_sent(session: Session, *, row_ids: Sequence[int], now: dt.datetime) -> None:
    """Record that the server accepted the e-mail of these rows."""
    if row_ids:
        session.execute(
            update(AlertOutbox)
            .where(AlertOutbox.id.in_(list(row_ids)))
            .values(
                status=STATUS_SENT,
                sent_at=now,
                attempts=AlertOutbox.attempts + 1,
                last_error=None,
            )
        )


def mark_failed(session: Session, *, row_id: int, error: str, next_attempt_at: dt.datetime) -> None:
    """Record a failed attempt: count it, keep the error, schedule the next attempt."""
    session.execute(
        update(AlertOutbox)
        .where(AlertOutbox.id == row_id)
        .values(
            attempts=AlertOutbox.attempts + 1,
            last_error=error,
            next_attempt_at=next_attempt_at,
        )
    )


def attempts_of(session: Session, *, row_ids: Sequence[int]) -> dict[int, int]:
    """Return ``{row id: attempts}`` of these rows."""
    stmt = select(AlertOutbox.id, AlertOutbox.attempts).where(AlertOutbox.id.in_(list(row_ids)))
    return {int(i): int(n) for i, n in session.execute(stmt)}


def make_due(session: Session, *, now: dt.datetime) -> int:
    """Make every pending row due at ``now`` (``kerma alerts outbox --retry``).

    Returns
    -------
    int
        The number of pending rows.
    """
    result = session.execute(
        update(AlertOutbox).where(AlertOutbox.status == STATUS_PENDING).values(next_attempt_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_rows(
    session: Session, *, status: str | None = None, limit: int | None = None
) -> list[Row[Any]]:
    """Return outbox rows (:data:`OUTBOX_COLUMNS`), pending first, newest first."""
    o = AlertOutbox
    stmt = select(*(getattr(o, c) for c in OUTBOX_COLUMNS))
    if status is not None:
        stmt = stmt.where(o.status == status)
    stmt = stmt.order_by((o.status == STATUS_SENT).asc(), o.created_at.desc(), o.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).all())


def count_by_status(session: Session) -> dict[str, int]:
    """Return ``{status: number of rows}``."""
    stmt = select(AlertOutbox.status, func.count()).group_by(AlertOutbox.status)
    return {str(s): int(n) for s, n in session.execute(stmt)}
