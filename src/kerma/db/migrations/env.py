"""Alembic environment of the Kerma registry (batch mode, so SQLite can alter tables).

Run through :mod:`kerma.db.migrate`, which passes the connection in
``config.attributes["connection"]``; with none, the URL comes from ``KERMA_DATABASE_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from kerma.db import models  # noqa: F401  (registers the tables on Base.metadata)
from kerma.db.base import Base
from kerma.db.partitions import PARTITION_NAME_RE

config = context.config
target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, _parents: dict[str, str | None]) -> bool:
    """Leave out the monthly partitions of ``irradiation_event``: Kerma makes them at run
    time (``kerma db partitions``), the models hold only the partitioned parent."""
    return not (type_ == "table" and name is not None and PARTITION_NAME_RE.match(name))


def _run(connection: Connection) -> None:
    """Configure the context on ``connection`` and run the migrations."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on the given connection, or on ``KERMA_DATABASE_URL``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from kerma.config import get_settings
    from kerma.db.session import make_engine

    engine = make_engine(get_settings().database_url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Kerma migrations run online only (kerma db upgrade).")
run_migrations_online()
