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
    from kerma.services.schema import upgrade_schema

    console = make_console()
    result = upgrade_schema(settings=get_settings(), revision=revision)
    console.print(f"{result.url} is at revision {result.revision}")
    if result.derived_studies:
        console.print(f"derived the summary columns of {result.derived_studies} studies")


@db_app.command("current")
def current() -> None:
    """Print the revision the database is at and the newest one shipped."""
    from kerma.services.schema import schema_revisions

    revisions = schema_revisions(settings=get_settings())
    make_console().print(f"current: {revisions.current}  newest: {revisions.head}")


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to the root app."""
    app.add_typer(db_app, name="db")
