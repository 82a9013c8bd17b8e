"""``kerma sites list|assign``: the sites (institutions) of a multi-site registry (#15).

Thin wrappers around :mod:`kerma.services.sites` through :class:`kerma.Registry`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import fmt, open_registry

sites_app = typer.Typer(
    help="List the sites (institutions) and restrict users to sites.", no_args_is_help=True
)


@sites_app.command("list")
def list_sites() -> None:
    """List the sites with their numbers of devices and studies."""
    registry = open_registry()
    try:
        frame = registry.sites()
    finally:
        registry.close()
    console = make_console()
    if frame.empty:
        console.print(
            "No sites: a site is made at import from the object's Institution Name, "
            "KERMA_SITE_MAP, or the node's KERMA_SITE (`kerma import --site NAME`)."
        )
        return
    table = Table(title=f"Sites ({len(frame)})", show_header=True, header_style="bold")
    for heading in ("id", "site", "devices", "studies"):
        table.add_column(heading)
    for row in frame.to_dict("records"):
        table.add_row(
            *(escape(fmt(row[name])) for name in ("site_id", "name", "devices", "studies"))
        )
    console.print(table)


@sites_app.command("assign")
def assign(
    username: Annotated[str, typer.Argument(help="User name (as the web login knows it).")],
    sites: Annotated[
        list[str] | None,
        typer.Argument(help="Sites the user may see; none: every site (no restriction)."),
    ] = None,
) -> None:
    """Restrict a user to some sites: their studies only, in every listing and detail."""
    from kerma.errors import NotFoundError

    registry = open_registry()
    try:
        ids = registry.assign_user_sites(username, sites or [])
        known = registry.is_user_account(username)
    except NotFoundError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        registry.close()
    console = make_console()
    if not known:
        make_console(stderr=True).print(
            f"note: '{escape(username)}' is not a user yet (kerma users list); the sites "
            "apply when that user is added or first logs in through the directory. "
            "Check the spelling: user names are case-sensitive.",
            soft_wrap=True,
        )
    if ids:
        console.print(f"{escape(username)} sees the studies of: {escape(', '.join(sites or []))}")
    else:
        console.print(f"{escape(username)} sees every site")


def register(app: typer.Typer) -> None:
    """Add the ``sites`` group to the root app."""
    app.add_typer(sites_app, name="sites")
