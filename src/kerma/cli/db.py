"""``kerma db``: manage the registry database schema (Alembic migrations)."""

from __future__ import annotations

from typing import Annotated

import typer

from kerma.cli.console import make_console
from kerma.config import get_settings

db_app = typer.Typer(name="db", help="Manage the registry database.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the database migrations (KERMA_DATABASE_URL) up to the newest revision."""
    from kerma.db.migrate import current_revision
    from kerma.db.migrate import upgrade as run_upgrade
    from kerma.db.session import make_engine, make_session_factory
    from kerma.services.derive import ensure_derived, make_context

    settings = get_settings()
    engine = make_engine(settings.database_url)
    try:
        run_upgrade(engine, revision)
        url = engine.url.render_as_string(hide_password=True)
        make_console().print(f"{url} is at revision {current_revision(engine)}")
        if revision == "head":  # fill the study summary columns once after an upgrade
            factory = make_session_factory(engine, write=True)
            derived = ensure_derived(factory, context=lambda: make_context(settings))
            if derived:
                make_console().print(f"derived the summary columns of {derived} studies")
    finally:
        engine.dispose()


@db_app.command("current")
def current() -> None:
    """Print the revision the database is at and the newest one shipped."""
    from kerma.db.migrate import current_revision, head_revision
    from kerma.db.session import make_engine

    engine = make_engine(get_settings().database_url)
    try:
        make_console().print(f"current: {current_revision(engine)}  newest: {head_revision()}")
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to the root app."""
    app.add_typer(db_app, name="db")
