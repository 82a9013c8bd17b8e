"""Apply the Alembic migrations shipped inside the package.

The Alembic configuration is built in code (no ``alembic.ini`` needed), with
``script_location`` pointing at ``kerma/db/migrations``, so ``kerma db upgrade`` works
from an installed package. Upgrades take a lock first (``BEGIN IMMEDIATE`` on SQLite,
an advisory lock on PostgreSQL), so several processes starting at once upgrade once.

May import ``kerma.db`` only.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from kerma.db.session import WRITE_OPTION

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Any constant: the PostgreSQL advisory lock key held while migrating.
PG_MIGRATION_LOCK_KEY = 0x6B65726D61  # "kerma"

#: ``revision`` and ``down_revision`` assignments of a migration file.
_REVISION_RE = re.compile(r'^(down_revision|revision)\b[^=]*=\s*["\']?([\w-]+|None)["\']?', re.M)

_checked: set[str] = set()
_checked_lock = threading.Lock()


def alembic_config(connection: Connection | None = None) -> Config:
    """Return the Alembic configuration of the registry.

    Parameters
    ----------
    connection : sqlalchemy.Connection, optional
        The connection ``env.py`` migrates; required for upgrade, downgrade and check.
    """
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str | None:
    """Return the head revision of the shipped migrations.

    Read from the migration files' ``revision`` / ``down_revision`` lines (the
    revision that no other revises), without importing Alembic: every command checks
    the schema on start, and Alembic's import costs more than the check.
    ``tests/db`` checks it against Alembic's own ``ScriptDirectory``.
    """
    revisions: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found = dict(_REVISION_RE.findall(path.read_text(encoding="utf-8")))
        if "revision" in found:
            down = found.get("down_revision")
            revisions[found["revision"]] = None if down in (None, "None") else down
    heads = set(revisions) - {d for d in revisions.values() if d}
    return heads.pop() if len(heads) == 1 else None


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at (``None`` when empty)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _locked_run(engine: Engine, action: str, revision: str) -> None:
    """Run an Alembic command inside one locked transaction.

    On SQLite, foreign keys are off while migrating: batch mode recreates a table (copy,
    drop, rename), and dropping a referenced table with enforcement on would delete the
    referring rows through ``ON DELETE CASCADE`` (e.g. skin dose estimates of studies).
    The pragma only works outside a transaction, so it is set on the driver connection
    before BEGIN and restored afterwards.
    """
    from alembic import command

    is_sqlite = engine.dialect.name == "sqlite"
    with engine.execution_options(**{WRITE_OPTION: True}).connect() as conn:
        driver = conn.connection.driver_connection
        if is_sqlite:
            driver.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK_KEY}
                    )
                cfg = alembic_config(conn)
                if action == "upgrade":
                    command.upgrade(cfg, revision)
                else:
                    command.downgrade(cfg, revision)
        finally:
            if is_sqlite:
                driver.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (default: the newest).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The registry database.
    revision : str, optional
        Target revision, default ``"head"``.
    """
    _locked_run(engine, "upgrade", revision)
    with _checked_lock:
        _checked.discard(str(engine.url))


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (default: an empty database)."""
    _locked_run(engine, "downgrade", revision)
    with _checked_lock:
        _checked.discard(str(engine.url))


def ensure_schema(engine: Engine) -> None:
    """Upgrade the database to the newest revision unless it is there already.

    A server database is checked once per URL and process; cheap afterwards. SQLite is
    checked every time (one query on ``alembic_version``): an in-memory database is new
    for every engine although its URL is the same, and a file named by a relative path,
    or deleted and created again (``kerma demo``), is another database under the same
    URL.
    """
    key = str(engine.url)
    if engine.url.get_backend_name() == "sqlite":
        key = ""  # never cached
    with _checked_lock:
        if key in _checked:
            return
    if current_revision(engine) != head_revision():
        logger.info("upgrading the registry database schema")
        _locked_run(engine, "upgrade", "head")
    if key:
        with _checked_lock:
            _checked.add(key)
