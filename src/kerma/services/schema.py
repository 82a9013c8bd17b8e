"""The registry's schema: Alembic migrations for ``kerma db``, then the derived columns.

:func:`upgrade_schema` migrates the database of a configuration to a revision and,
at the newest revision, fills the study summary columns once
(:func:`kerma.services.derive.ensure_derived`); :func:`schema_revisions` says where a
database is and what the package ships. SQL and Alembic live in :mod:`kerma.db.migrate`.

May import ``kerma.db``, ``kerma.config`` and ``kerma.services``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kerma.config import Settings

__all__ = ["SchemaRevisions", "SchemaUpgrade", "schema_revisions", "upgrade_schema"]


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
    """

    url: str
    revision: str | None
    derived_studies: int


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
        columns are derived once if the registry needs it).

    Returns
    -------
    SchemaUpgrade
        The database, its revision afterwards and how many studies were derived.
    """
    from kerma.db.migrate import current_revision, upgrade
    from kerma.db.session import make_engine, make_session_factory
    from kerma.services.derive import ensure_derived, make_context

    engine = make_engine(settings.database_url)
    try:
        upgrade(engine, revision)
        derived = 0
        if revision == "head":  # fill the study summary columns once after an upgrade
            factory = make_session_factory(engine, write=True)
            derived = ensure_derived(factory, context=lambda: make_context(settings, factory))
        return SchemaUpgrade(
            url=engine.url.render_as_string(hide_password=True),
            revision=current_revision(engine),
            derived_studies=derived,
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
