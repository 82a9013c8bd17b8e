"""The registry's schema: Alembic migrations for ``kerma db``, then the derived columns.

:func:`upgrade_schema` migrates the database of a configuration to a revision and,
at the newest revision, fills the study summary columns once
(:func:`kerma.services.derive.ensure_derived`); :func:`schema_revisions` says where a
database is and what the package ships; :func:`make_partitions` creates the monthly
partitions of ``irradiation_event`` on PostgreSQL (``kerma db partitions``). SQL and
Alembic live in :mod:`kerma.db.migrate` and :mod:`kerma.db.partitions`.

May import ``kerma.db``, ``kerma.config`` and ``kerma.services``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from kerma.config import Settings
from kerma.db.partitions import LOCK_TIMEOUT_S, PartitionReport
from kerma.errors import KermaError

__all__ = [
    "PartitionReport",
    "PartitionsBusyError",
    "PartitionsNotSupportedError",
    "SchemaRevisions",
    "SchemaUpgrade",
    "make_partitions",
    "schema_revisions",
    "upgrade_schema",
]


class PartitionsNotSupportedError(KermaError):
    """The registry's database has no partitions (SQLite, or PostgreSQL before 0019)."""


class PartitionsBusyError(KermaError):
    """Creating a partition waited for the table lock longer than its lock timeout."""


#: SQLSTATE of ``lock_timeout`` expiring (PostgreSQL appendix A, ``lock_not_available``).
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class SchemaUpgrade:
    """What :func:`upgrade_schema` did.

    Attributes
    ----------
    url : str
        The database, password hidden.
    revision : str or None
        The revision the database is at afterwards.
    derived_studies : int
        Studies whose summary columns were derived (0 unless needed after an upgrade).
    partitions : PartitionReport or None
        The monthly event partitions made (PostgreSQL at the newest revision), or None.
    """

    url: str
    revision: str | None
    derived_studies: int
    partitions: PartitionReport | None = None


@dataclass(frozen=True)
class SchemaRevisions:
    """Where a database is (``current``) and the newest revision shipped (``head``)."""

    current: str | None
    head: str | None


def upgrade_schema(*, settings: Settings, revision: str = "head") -> SchemaUpgrade:
    """Apply the migrations to ``settings.database_url`` up to ``revision``.

    Parameters
    ----------
    settings : Settings
        The configuration (database URL; derive rules for the summary columns).
    revision : str, optional
        The target revision (default ``"head"``: the newest; then the study summary
        columns are derived once if the registry needs it and, on PostgreSQL, the event
        partitions of the next 12 months are made, as :func:`make_partitions` does).

    Returns
    -------
    SchemaUpgrade
        The database, its revision afterwards and how many studies were derived.
    """
    from kerma.db.migrate import current_revision, upgrade
    from kerma.db.partitions import ensure_partitions, is_partitioned
    from kerma.db.session import make_engine, make_session_factory
    from kerma.services.derive import ensure_derived, make_context

    engine = make_engine(settings.database_url)
    try:
        upgrade(engine, revision)
        derived = 0
        partitions = None
        if revision == "head":  # fill the study summary columns once after an upgrade
            factory = make_session_factory(engine, write=True)
            derived = ensure_derived(factory, context=lambda: make_context(settings, factory))
            with engine.begin() as conn:
                if is_partitioned(conn):
                    partitions = ensure_partitions(conn)
        return SchemaUpgrade(
            url=engine.url.render_as_string(hide_password=True),
            revision=current_revision(engine),
            derived_studies=derived,
            partitions=partitions,
        )
    finally:
        engine.dispose()


def schema_revisions(*, settings: Settings) -> SchemaRevisions:
    """Return the revision ``settings.database_url`` is at and the newest one shipped."""
    from kerma.db.migrate import current_revision, head_revision
    from kerma.db.session import make_engine

    engine = make_engine(settings.database_url)
    try:
        return SchemaRevisions(current=current_revision(engine), head=head_revision())
    finally:
        engine.dispose()


def make_partitions(
    *,
    settings: Settings,
    ahead_months: int = 12,
    since: dt.date | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> PartitionReport:
    """Create the monthly partitions of ``irradiation_event`` that are missing.

    The current month's and the ``ahead_months`` after it, every month from ``since``,
    and one for each dated month found in the DEFAULT partition (its rows are moved
    in); idempotent and safe on every node at once
    (:func:`kerma.db.partitions.ensure_partitions`).

    Parameters
    ----------
    settings : Settings
        The configuration (``database_url``).
    ahead_months : int, optional
        Months after the current one (default 12).
    since : datetime.date, optional
        Also every month from this one to the current one.
    lock_timeout_s : float, optional
        Seconds to wait for the table lock (default 30).

    Returns
    -------
    PartitionReport
        The partitions created, rows moved out of DEFAULT, monthly partitions now.

    Raises
    ------
    PartitionsNotSupportedError
        On SQLite, or on PostgreSQL before revision ``0019_event_partitions``.
    PartitionsBusyError
        When a long query held the table past the lock timeout (nothing changed).
    """
    from kerma.db.partitions import ensure_partitions, is_partitioned
    from kerma.db.session import make_engine

    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            if not is_partitioned(conn):
                where = (
                    "a PostgreSQL feature; SQLite keeps one irradiation_event table"
                    if engine.dialect.name != "postgresql"
                    else "made by revision 0019_event_partitions: run 'kerma db upgrade'"
                )
                raise PartitionsNotSupportedError(
                    f"No partitions to make: event partitions are {where}."
                )
            return ensure_partitions(
                conn, ahead_months=ahead_months, since=since, lock_timeout_s=lock_timeout_s
            )
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise PartitionsBusyError(
            "Unable to create the event partitions: a long query or transaction held "
            f"irradiation_event for {lock_timeout_s:g} s. Nothing was changed; run the "
            "command again."
        ) from exc
    finally:
        engine.dispose()
