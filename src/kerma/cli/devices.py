"""``kerma devices list|rename|merge``: rooms and devices and their display names.

Thin wrappers around :mod:`kerma.services.devices` through :class:`kerma.Registry`.
Names and merges are kept across ``kerma reprocess`` (stored by device identity).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kerma.cli.console import make_console
from kerma.cli.registry import fmt, open_registry

devices_app = typer.Typer(
    help="List, rename and merge devices (rooms); names and merges survive `kerma reprocess`.",
    no_args_is_help=True,
)

DeviceArg = Annotated[str, typer.Argument(help="Device id or display name (`kerma devices list`).")]


@devices_app.command("list")
def list_devices() -> None:
    """List the devices with their unique display names and study counts."""
    registry = open_registry()
    try:
        frame = registry.devices()
    finally:
        registry.close()
    console = make_console()
    if frame.empty:
        console.print("No devices: import dose objects first (`kerma import FOLDER`).")
        return
    table = Table(title=f"Devices ({len(frame)})", show_header=True, header_style="bold")
    columns = (
        ("device_id", "id"),
        ("device_name", "display name"),
        ("station_name", "station"),
        ("manufacturer", "manufacturer"),
        ("manufacturer_model_name", "model"),
        ("device_serial_number", "serial"),
        ("number_of_studies", "studies"),
        ("first_study_date", "first study"),
        ("last_study_date", "last study"),
        ("is_user_named", "named by user"),
        ("number_of_merged", "merged"),
    )
    for _, heading in columns:
        table.add_column(heading, overflow="fold")
    for row in frame.to_dict("records"):
        table.add_row(*(escape(fmt(row.get(name))) for name, _ in columns))
    console.print(table)


@devices_app.command("rename")
def rename(
    device: DeviceArg,
    name: Annotated[
        str | None,
        typer.Argument(help="New display name; leave out with --reset for the automatic one."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Return to the automatic name (station name).")
    ] = False,
) -> None:
    """Give a device a display name (unique), used by studies, statistics and DRL per room."""
    if not reset and not (name or "").strip():
        raise typer.BadParameter("give a NAME, or --reset for the automatic name.")
    registry = open_registry()
    try:
        shown = registry.rename_device(device, None if reset else name)
    finally:
        registry.close()
    make_console().print(f"device {escape(device)} is now called {escape(shown)!r}")


@devices_app.command("merge")
def merge(
    source: Annotated[str, typer.Argument(help="Device to merge (id or name); it disappears.")],
    target: Annotated[str, typer.Argument(help="Device to keep (id or name).")],
) -> None:
    """Merge two device records that are one machine (e.g. after a software upgrade)."""
    registry = open_registry()
    try:
        result = registry.merge_devices(source, target)
    finally:
        registry.close()
    make_console().print(
        f"merged {escape(source)} into {escape(result.device_name)!r}: "
        f"{result.studies_moved} studies moved ({result.studies_joined} joined with a study "
        "of the same UID)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``devices`` group to the root app."""
    app.add_typer(devices_app, name="devices")
