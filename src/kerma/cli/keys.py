"""``kerma key``: the pseudonym key of the registry (status, rotate).

May import ``kerma.services``, ``kerma.config``, ``kerma.errors`` and ``kerma.cli``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kerma.cli.console import make_console
from kerma.config import get_settings

key_app = typer.Typer(
    name="key", help="Show or rotate the pseudonym key of the registry.", no_args_is_help=True
)


@key_app.command("status")
def status() -> None:
    """Show where the pseudonym key is and whether it is the registry's key.

    Prints the key's fingerprint (a keyed hash of a fixed label, not the key) and the
    one recorded in the registry; creates nothing.
    """
    from kerma.services.keys import key_status
    from kerma.services.registry import Registry

    settings = get_settings()
    console = make_console()
    with Registry(settings=settings) as reg:
        found = key_status(settings, reg.session_factory)
    console.print(f"key: {escape(found.location)}" + ("" if found.exists else " (missing)"))
    if found.exists:
        console.print(f"keys in the chain: {found.generations}")
        console.print(f"fingerprint: {found.fingerprint}")
    recorded = found.recorded_fingerprint or "(none yet)"
    console.print(f"fingerprint recorded in the registry: {recorded}")
    for column, count in found.keyed_hashes.items():
        console.print(f"{column}: {count} keyed hashes")
    if found.exists and not found.matches:
        console.print("[red]the key is NOT the registry's key[/red]; restore it from backup")
        raise typer.Exit(1)


@key_app.command("rotate")
def rotate(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            help="File holding the new key (one line, at least 32 bytes); default: a new "
            "random key.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Re-key every pseudonym of the registry with a new key, in one transaction.

    Stop `kerma listen` and `kerma serve` first. Each stored keyed hash `h` becomes
    `HMAC-SHA-256(new key, h)` and the new key is added as the last line of the key
    file (KERMA_KEY_FILE); back the key file up afterwards (docs/privacy.md).
    """
    from kerma.services.keys import rotate_key
    from kerma.services.registry import Registry

    if not yes:
        typer.confirm(
            "Re-key every pseudonym with a new key? Backups of the key file made before "
            "will no longer open the registry",
            abort=True,
        )
    settings = get_settings()
    with Registry(settings=settings) as reg:
        result = rotate_key(settings, reg.session_factory, new_key_file=new_key_file)
    console = make_console()
    total = sum(result.rekeyed.values())
    console.print(
        f"rotated: {total} keyed hashes re-keyed in one transaction "
        f"({', '.join(f'{c} {n}' for c, n in result.rekeyed.items())})"
    )
    console.print(
        f"key file {escape(str(result.key_file))} now holds {result.generations} keys; "
        "back it up now (the old backup no longer opens the registry)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``key`` command group to the root app."""
    app.add_typer(key_app, name="key")
