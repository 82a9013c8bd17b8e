"""``kerma db``: manage the registry database schema (Alembic migrations)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer

from kerma.cli.console import make_console
from kerma.config import get_settings

if TYPE_CHECKING:
    from rich.console import Console

    from kerma.services.schema import PartitionReport

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
    if result.partitions is not None:
        _print_partitions(console, result.partitions)


@db_app.command("partitions")
def partitions(
    ahead: Annotated[int, typer.Option(min=0, help="Months after the current one to create.")] = 12,
    since: Annotated[
        str | None,
        typer.Option(help="Also every month from this one (YYYY-MM), e.g. before a history load."),
    ] = None,
) -> None:
    """Create the monthly partitions of the irradiation events (PostgreSQL).

    Idempotent and safe on every node at once; run it from cron (e.g. monthly).
    """
    from kerma.services.schema import PartitionsNotSupportedError, make_partitions

    console = make_console()
    first = None
    if since is not None:
        try:
            first = dt.datetime.strptime(since, "%Y-%m").date()
        except ValueError as exc:
            raise typer.BadParameter(
                f"{since!r} is not a month (YYYY-MM).", param_hint="--since"
            ) from exc
    try:
        report = make_partitions(settings=get_settings(), ahead_months=ahead, since=first)
    except PartitionsNotSupportedError as exc:
        console.print(str(exc))
        return
    _print_partitions(console, report)


def _print_partitions(console: Console, report: PartitionReport) -> None:
    """Print what the partition maintenance did."""
    made = ", ".join(report.created) if report.created else "none"
    console.print(f"partitions created: {made}; {report.partitions} monthly partitions")
    if report.moved_rows:
        console.print(f"moved {report.moved_rows} events out of the DEFAULT partition")


@db_app.command("current")
def current() -> None:
    """Print the revision the database is at and the newest one shipped."""
    from kerma.services.schema import schema_revisions

    revisions = schema_revisions(settings=get_settings())
    make_console().print(f"current: {revisions.current}  newest: {revisions.head}")


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to the root app."""
    app.add_typer(db_app, name="db")
